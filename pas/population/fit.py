"""``align_population``: every person of a population fitted (pas-gated, pas or pas-learned), into a vector store.

The person-independent work runs once (a :class:`pas.population.plan.PopulationPlan`: GatedPlan or
ConstantPlan, :func:`population_plan`); people then go through in chunks, each chunk fitted together
(``plan.fit_many``, here or on Ray workers) and written to the store (resume: people already in the
store are not fitted again). A person the fit refuses is skipped with the reason, never dropped silently;
the run goes on. Memory is bounded by the chunk: the report keeps counts, not people (except the vectors
themselves when there is no store).
"""

from __future__ import annotations

import itertools
import sys
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sized
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pas.core.data import Subject
from pas.fit.config import FitConfig, GatedConfig, PASConfig
from pas.population.constant_many import ConstantPlan
from pas.population.gated_many import GatedPlan
from pas.population.plan import Executor, PopulationPlan, fit_here
from pas.score.scorer import ItemScorer
from pas.steer.vector import SteeringVector

if TYPE_CHECKING:
    from pas.population.store import PopulationStore

PROGRESS_SECONDS = 5.0  # at most one progress line per this many seconds (and one at the end)


@dataclass(frozen=True)
class Skipped:
    """A person not fitted, and why (the gated fit's own error message, or a duplicate case id)."""

    case: str
    reason: str


@dataclass
class PopulationReport:
    """How a population fit went. ``fitted``: people fitted in this run; ``already_stored``: people found in
    the store and not fitted again (a resumed run); ``skipped``: people not fitted, with reasons.
    ``one_time_seconds``: the person-independent work; ``seconds``: everything after it. ``choices``: how
    many people got each choice (:attr:`PersonFit.choice`; gated: (gain, shift), where (0, 0) leaves every gate
    at 0, only the shared letter correction).
    ``vectors``: the fitted vectors, only when no store was given."""

    fitted: int = 0
    already_stored: int = 0
    skipped: list[Skipped] = field(default_factory=list)
    one_time_seconds: float = 0.0
    seconds: float = 0.0
    choices: Counter[tuple[float, ...]] = field(default_factory=Counter)
    known_composite_sum: float = 0.0
    vectors: dict[str, SteeringVector] = field(default_factory=dict)

    @property
    def people_per_second(self) -> float:
        """People fitted per second of per-person work (the one-time work left out)."""
        return self.fitted / self.seconds if self.seconds > 0 else 0.0

    @property
    def mean_known_composite(self) -> float:
        """The fitted people's mean known-item composite (:attr:`PersonFit.known_composite`; lower is better)."""
        return self.known_composite_sum / self.fitted if self.fitted else float("nan")

    def summary(self) -> dict[str, Any]:
        """The scalar facts, for reports and the command line."""
        return {"fitted": self.fitted, "already_stored": self.already_stored, "skipped": len(self.skipped),
                "one_time_seconds": round(self.one_time_seconds, 3), "seconds": round(self.seconds, 3),
                "people_per_second": round(self.people_per_second, 3),
                "mean_known_composite": round(self.mean_known_composite, 4) if self.fitted else None,
                "correction_only_share": round(self.choices[(0.0, 0.0)] / self.fitted, 4) if self.fitted else None}

    def line(self, total: int | None = None) -> str:
        """One progress line: counts, people/s, and (with ``total``) an ETA."""
        done = self.fitted + self.already_stored + len(self.skipped)
        rate = self.people_per_second
        eta = ""
        if total is not None and rate > 0:
            eta = f", ETA {max(0, total - done) / rate:.0f} s"
        of = f"/{total}" if total is not None else ""
        return (f"pas: align-population: {done}{of} people: {self.fitted} fitted, {len(self.skipped)} skipped, "
                f"{self.already_stored} already stored ({rate:.2f} people/s{eta}; one-time work "
                f"{self.one_time_seconds:.1f} s)")


def _chunks(people: Iterable[Subject], size: int) -> Iterator[list[Subject]]:
    it = iter(people)
    while batch := list(itertools.islice(it, size)):
        yield batch


def _todo(people: Iterable[Subject], size: int, store: PopulationStore | None, report: PopulationReport,
          in_flight: set[str]) -> Iterator[list[Subject]]:
    """Each chunk's people still to fit (not stored, not already sent, not twice), counted in ``report``; those
    sent are added to ``in_flight``, and the caller removes them when their chunk comes back."""
    for batch in _chunks(people, size):
        todo: dict[str, Subject] = {}
        for s in batch:
            if s.case in todo or s.case in in_flight or (store is None and s.case in report.vectors):
                report.skipped.append(Skipped(s.case, f"case {s.case!r} appears twice in the input; fitted once"))
            elif store is not None and s.case in store:
                report.already_stored += 1
            else:
                todo[s.case] = s
        in_flight.update(todo)
        yield list(todo.values())


def population_plan(scorer: ItemScorer, config: FitConfig, *, letters_only: bool = True, max_rows: int = 1024,
                    calibration: str = "auto") -> PopulationPlan:
    """The plan of ``config``'s kind: :class:`GatedPlan` for a GatedConfig (``letters_only``, ``calibration``),
    :class:`pas.population.constant_many.ConstantPlan` for a PASConfig (pas, or pas-learned)."""
    if isinstance(config, GatedConfig):
        return GatedPlan(scorer, config, letters_only=letters_only, max_rows=max_rows, calibration=calibration)
    return ConstantPlan(scorer, config, max_rows=max_rows)


def align_population(scorer: ItemScorer, people: Iterable[Subject], config: FitConfig | None = None, *,
                     store: PopulationStore | None = None, chunk: int = 64, progress: bool = True,
                     max_rows: int = 1024, letters_only: bool = True, calibration: str = "auto",
                     executor: Executor = fit_here, flush_seconds: float = 30.0) -> PopulationReport:
    """Fit every person's vector of ``config``'s kind (default pas-gated): the same vector as
    ``fit_subject(scorer.model, person, config)`` (up to float rounding), with the person-independent work
    done once and people fitted ``chunk`` at a time.

    ``people`` is read lazily, a chunk at a time. With ``store``, each chunk's vectors are added (a full
    shard is committed at once) and the rest is committed at least every ``flush_seconds`` and at the end,
    so a killed run loses at most that much work (people not committed are fitted again on resume, never
    twice in the store); people already in it are not fitted again; the store is left open. Without one
    the vectors come back in ``report.vectors`` (all in memory). ``progress`` prints a line (people/s,
    ETA) on stderr every few seconds.

    ``max_rows``: rows per forward pass (memory per pass). ``letters_only``: calibrate with the output
    layer narrowed to the five letters (see :mod:`pas.population.gated_many`; the model is restored after
    each chunk). ``calibration``: "exact" (every person's (gain, shift) chosen from steered passes, as
    fit_subject does), "fast" (the same choice from the last layer computed in the gates' span,
    :mod:`pas.population.subspace`: no forward pass per person; Llama family, gates on the last layer) or
    "auto" (fast where it applies). ``executor``: where chunks are fitted
    (:func:`pas.population.plan.fit_here`: here, in order; :class:`pas.population.distributed.RayExecutor`:
    on Ray workers, as they finish); this process alone writes the store either way.
    """
    config = config or GatedConfig()
    if not isinstance(config, (GatedConfig, PASConfig)):
        raise ValueError(f"align_population fits with a GatedConfig (pas-gated) or a PASConfig (pas, pas-learned), "
                         f"got {type(config).__name__}")
    if chunk < 1 or max_rows < 1:
        raise ValueError(f"chunk and max_rows must be >= 1, got {chunk} and {max_rows}")
    if store is not None:
        store.check_model(scorer.model)  # before any work: a store of another model refuses every vector
    total = len(people) if isinstance(people, Sized) else None
    t0 = time.perf_counter()
    plan = population_plan(scorer, config, letters_only=letters_only, max_rows=max_rows, calibration=calibration)
    report = PopulationReport(one_time_seconds=time.perf_counter() - t0)
    if progress:
        print(report.line(total), file=sys.stderr, flush=True)
    t1 = time.perf_counter()
    in_flight: set[str] = set()
    flushed = shown = time.perf_counter()
    for cases, fits, skipped in executor(plan, _todo(people, chunk, store, report, in_flight)):
        in_flight.difference_update(cases)
        report.skipped += [Skipped(case, reason) for case, reason in skipped]
        if store is not None and fits:
            store.add_many([f.vector for f in fits])  # a full shard is committed at once
            if time.perf_counter() - flushed >= flush_seconds:
                store.flush()
                flushed = time.perf_counter()
        for f in fits:
            report.choices[f.choice] += 1
            report.known_composite_sum += f.known_composite
            if store is None:
                report.vectors[f.vector.provenance.subject or ""] = f.vector
        report.fitted += len(fits)
        report.seconds = time.perf_counter() - t1
        if progress and time.perf_counter() - shown >= PROGRESS_SECONDS:
            print(report.line(total), file=sys.stderr, flush=True)
            shown = time.perf_counter()
    if store is not None:
        store.flush()
    if progress:
        print(report.line(total), file=sys.stderr, flush=True)
    return report

