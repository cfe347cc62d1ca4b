"""``align_to_subject``: the PAS pipeline, chaining the stages and nothing more.

activations (cached, subject-independent) -> directions (probes on the subject's fit
items) -> strength search on validation items -> learned offsets -> SteeringVector.
:func:`fit_subject` returns the vector and a typed :class:`FitReport` beside it (how the
fit went: timings, traces); the vector file keeps only provenance.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from pas.core.data import ItemBank, Subject
from pas.fit.activations import head_activations
from pas.fit.config import FitConfig, GatedConfig, PASConfig
from pas.fit.directions import PROBES, find_directions
from pas.fit.optimize import SteeredItems, learn_offsets, search_alpha, split_known
from pas.score.metric import Objective, objective
from pas.score.prompts import few_shot_system
from pas.score.scorer import ItemScorer
from pas.steer.hooks import dense_offsets
from pas.steer.vector import Provenance, SteeringVector, item_hash

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


@dataclass(frozen=True)
class GatedFacts:
    """How a gated fit went: the gated layer, the chosen gain and shift, and the readout's out-of-fold composite."""

    layer: int
    gain: float
    shift: float
    readout_cv: float


@dataclass(frozen=True)
class FitReport:
    """How one alignment went; returned beside the vector, never stored in it.

    alpha: the searched strength (for a gated fit, the chosen gain); alpha_trace: {alpha: (validation
    composite, expected composite, letter mass)} of the strength search. learn_trace: (step, fit loss,
    validation composite, validation expected) of the learned offsets; best_step 0 means the searched
    offsets were kept. heads / probe_accuracies / sigmas: the heads PAS chose (best probe first), their
    probes' validation accuracies and their activations' spread. known_answers: the steered model's
    answers to the known items; :attr:`adds_nothing` says when they are all "Neither" (what always-3
    answers: the vector adds nothing over always-3 on the known items).
    """

    subject: str
    alpha: float
    alpha_trace: dict[float, tuple[float, float, float]]
    fit_items: int
    val_items: int
    search_seconds: float
    fit_seconds: float
    best_step: int | None = None
    fit_loss_start: float | None = None
    fit_loss_end: float | None = None
    learn_trace: list[tuple[int, float, float, float]] = field(default_factory=list)
    heads: tuple[tuple[int, int], ...] = ()
    probe_accuracies: tuple[float, ...] = ()
    sigmas: tuple[float, ...] = ()
    gated: GatedFacts | None = None
    known_answers: dict[int, int] = field(default_factory=dict)

    @property
    def adds_nothing(self) -> bool:
        """True when the steered model answers "Neither" (3) to every known item, as always-3 does."""
        return bool(self.known_answers) and all(a == 3 for a in self.known_answers.values())

    def summary(self) -> dict:
        """The scalar facts, for reports (traces left out)."""
        facts = {"alpha": self.alpha, "fit_items": self.fit_items, "val_items": self.val_items,
                 "search_seconds": self.search_seconds, "best_step": self.best_step,
                 "fit_loss_start": self.fit_loss_start, "fit_loss_end": self.fit_loss_end,
                 "adds_nothing": self.adds_nothing}
        return {**facts, **(asdict(self.gated) if self.gated else {})}


def align_to_subject(model: PreTrainedModel, subject: Subject, config: FitConfig | None = None,
                     **kw: Any) -> SteeringVector:
    """Learn a steering vector that makes ``model`` answer like ``subject``, from known answers only.

    See :func:`fit_subject` for the keyword arguments; this returns only the vector.
    """
    return fit_subject(model, subject, config, **kw)[0]


def fit_subject(model: PreTrainedModel, subject: Subject, config: FitConfig | None = None, *,
                tokenizer: PreTrainedTokenizerBase | None = None,
                bank: ItemBank | None = None, scorer: ItemScorer | None = None,
                progress: bool = True) -> tuple[SteeringVector, FitReport]:
    """The PAS pipeline on one subject's known responses: ``(vector, report)``.

    ``tokenizer`` defaults to the one :func:`pas.load_model` attached; ``bank`` to the
    item bank the subject was loaded with. Deterministic for a given ``config.seed``.
    The 180 test items are never read. ``progress`` shows bars for the activation pass,
    the strength search and the offset learning on a terminal, and one line per stage on stderr
    otherwise (a fit takes minutes on a CPU); ``progress=False`` is silent.
    """
    t0 = time.perf_counter()
    config = config or PASConfig()
    tokenizer = tokenizer or getattr(model, "pas_tokenizer", None)
    if tokenizer is None:
        raise ValueError("pass tokenizer=... (or load the model with pas.load_model)")
    bank = bank or (scorer.bank if scorer else subject.bank)
    if bank is None:
        raise ValueError(f"subject {subject.case} carries no item bank; pass bank= (or load it with pas.load_papi)")
    scorer = scorer or ItemScorer(model, tokenizer, bank)
    known = subject.responses_to(bank.train_ids)
    if isinstance(config, GatedConfig):
        _stage(progress, subject, t0, "fitting gated offsets")
        return _fit_gated(model, subject, config, scorer, known, t0)
    fit_ids, val_ids = split_known(bank, known, config.val_fraction, config.seed)
    _stage(progress, subject, t0, "reading head activations, ranking probes")
    acts = head_activations(model, tokenizer, bank, bank.train_ids, template=scorer.template, progress=progress)
    dirs = find_directions(acts.subset(fit_ids), known, k=config.k, val_fraction=config.probe_val_fraction,
                           seed=config.seed, probe=PROBES[config.probe], case=subject.case)
    base = dirs.vectors * dirs.sigmas[:, None]  # alpha = 1
    shape = _shape(model)
    system = few_shot_system(bank, {i: known[i] for i in fit_ids}) if config.few_shot else None

    def offsets_for(vectors: torch.Tensor) -> torch.Tensor:
        return dense_offsets(dirs.heads, vectors, *shape)

    t_search = time.perf_counter()
    _stage(progress, subject, t0, f"searching the strength ({len(config.alpha_grid)} + {config.refine_steps} trials)")
    if config.positions == "last":
        lowest = min((layer for layer, _ in dirs.heads), default=0)  # layers below it run once per item, not per trial
        fit = SteeredItems(model, bank, subject, tuple(fit_ids), scorer.encode(fit_ids, system), scorer.letter_ids,
                           lowest)
        val = SteeredItems(model, bank, subject, tuple(val_ids), scorer.encode(val_ids, system), scorer.letter_ids,
                           lowest)
        alpha, trace = search_alpha(lambda a: val.objective(offsets_for(a * base)), config.alpha_grid,
                                    config.refine_steps, progress=progress)
    else:
        def objective_all(a: float) -> Objective:
            vector = SteeringVector.for_model(model, offsets_for(a * base), positions="all")
            return objective(bank, subject, val_ids, scorer.score(val_ids, system, steering=vector))

        alpha, trace = search_alpha(objective_all, config.alpha_grid, config.refine_steps, progress=progress)
    search_seconds = time.perf_counter() - t_search
    vectors = alpha * base
    learned: dict[str, Any] = {}  # FitReport's fields of the learned offsets
    if config.learn:
        _stage(progress, subject, t0, f"learning offsets (at most {config.steps} steps)")
        res = learn_offsets(fit, val, dirs.heads, vectors, dirs.sigmas, steps=config.steps, lr=config.lr,
                            penalty=config.penalty, patience=config.patience, eval_every=config.eval_every,
                            seed=config.seed, progress=progress)
        vectors = res.vectors
        learned = {"best_step": res.best_step, "fit_loss_start": res.fit_loss_start,
                   "fit_loss_end": res.fit_loss_end, "learn_trace": res.trace}
    method = "pas-learned" if config.learn else "pas"
    provenance = Provenance(subject=subject.case, method=method, item_hash=item_hash(known),
                            bank=bank.fingerprint(), config=asdict(config))
    vector = SteeringVector.for_model(model, offsets_for(vectors), positions=config.positions, provenance=provenance)
    answers = known_answers(scorer, known, vector, system)
    report = FitReport(subject.case, float(alpha), trace, len(fit_ids), len(val_ids), search_seconds,
                       time.perf_counter() - t0, heads=tuple(dirs.heads), probe_accuracies=tuple(dirs.accuracies),
                       sigmas=tuple(float(s) for s in dirs.sigmas), known_answers=answers, **learned)
    return vector, report


def _fit_gated(model: PreTrainedModel, subject: Subject, config: GatedConfig, scorer: ItemScorer,
               known: Mapping[int, int], t0: float) -> tuple[SteeringVector, FitReport]:
    from pas.fit.gated import fit_gated

    g = fit_gated(scorer, subject, config.gate_layer, seed=config.seed, both_orders=config.gate_both_orders)
    heads = tuple((layer, h) for layer in (g.layer - 1, g.layer) for h in range(g.offsets.shape[1]))
    provenance = Provenance(subject=subject.case, method="pas-gated", item_hash=item_hash(known),
                            bank=scorer.bank.fingerprint(), config=asdict(config))
    vector = SteeringVector.for_model(model, g.offsets, gate_weights=g.weights, gate_bias=g.bias, positions="last",
                                      provenance=provenance)
    trace = {gain: v for (gain, shift), v in g.calibration.items() if shift == g.shift}
    answers = known_answers(scorer, known, vector)
    report = FitReport(subject.case, g.gain, trace, len(known), len(known), 0.0, time.perf_counter() - t0,
                       heads=heads, gated=GatedFacts(g.layer, g.gain, g.shift, g.readout_cv), known_answers=answers)
    return vector, report


def _stage(progress: bool, subject: Subject, t0: float, what: str) -> None:
    """Without a terminal (where the bars do not show): one line per stage on stderr."""
    if progress and not sys.stderr.isatty():
        print(f"pas: subject {subject.case}: {what} ({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)


def known_answers(scorer: ItemScorer, known: Mapping[int, int], vector: SteeringVector,
                  system: str | None = None) -> dict[int, int]:
    """The steered model's answers to the known items (to tell a vector that adds nothing over always-3)."""
    ids = sorted(known)
    return {i: int(a) for i, a in zip(ids, scorer.score(ids, system, steering=vector).answers, strict=True)}


def _shape(model: PreTrainedModel) -> tuple[int, int, int]:
    from pas.core.arch import layout

    lay = layout(model)
    return lay.n_layers, lay.n_heads, lay.head_dim
