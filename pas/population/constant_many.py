"""Constant PAS for many people at once: :func:`pas.fit.align.fit_subject` with a :class:`pas.fit.config.PASConfig`,
batched across people.

:class:`ConstantPlan` does the person-independent work once per model and scorer: the contrastive head
activations of the 120 short-form items (:func:`pas.fit.activations.head_activations`) and those items'
encoding (their prompt caches). :meth:`ConstantPlan.fit_many` then fits a chunk of people as fit_subject
does, with every stage that fit_subject runs per person batched across them:

- the probes of every head of every person (:func:`pas.fit.directions.find_directions_many`);
- the strength searches of all people in lockstep (:func:`pas.fit.optimize.search_alpha_many`): each step's
  strengths of every person (the grid, then each golden-section step) are the rows of one
  :func:`pas.score.many.offset_logits_many` call per group of people who share their validation items, the
  offsets riding as answer positions that share each item's cache; strength 0 (no offset, the same for
  everyone) runs once per group;
- ``learn=True`` (pas-learned): the offsets are then learned person by person with fit_subject's own
  :func:`pas.fit.optimize.learn_offsets`, not batched: correct, but that part (most of a pas-learned fit's
  time) is no faster than fit_subject.

The vectors equal fit_subject's, provenance included, up to float rounding (tested): the items are taken
from one shared encoding and the offsets ride side by side, which changes only the rounding of the same sums.
The report fit_subject returns beside its vector is not made (no known-item answers are scored).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch

from pas.core.arch import layout
from pas.core.data import Subject
from pas.fit.activations import head_activations
from pas.fit.config import PASConfig
from pas.fit.directions import PROBES, Directions, ProbeProblem, find_directions_many, probe_problem
from pas.fit.optimize import AlphaTrace, SteeredItems, learn_offsets, search_alpha_many, split_known
from pas.fit.readout import PointScores
from pas.population.plan import PersonFit, SharedPlan
from pas.score.many import offset_logits_many
from pas.score.metric import Objective, objective
from pas.score.scorer import EncodedPrompts, ItemScorer, keep_trunk, to_distribution
from pas.steer.hooks import dense_offsets
from pas.steer.signature import ModelSignature
from pas.steer.vector import Provenance, SteeringVector, item_hash


@dataclass(frozen=True)
class _Person:
    """One person ready to fit: their known answers, fit_subject's split of them, and their probe problem."""

    subject: Subject
    known: dict[int, int]
    fit_ids: tuple[int, ...]
    val_ids: tuple[int, ...]
    problem: ProbeProblem


def _lowest(dirs: Directions) -> int:
    """The lowest layer a person's offsets touch (fit_subject's ``lowest``): the layers below run once."""
    return min((layer for layer, _ in dirs.heads), default=0)


class ConstantPlan:
    """The person-independent part of a constant PAS fit (``config.learn``: pas-learned) for ``scorer``'s model,
    built once (see the module docstring); :meth:`fit_many` fits people with it. ``max_rows``: prompts x
    strengths per forward pass (memory: the pass's logits over the vocabulary)."""

    def __init__(self, scorer: ItemScorer, config: PASConfig | None = None, *, max_rows: int = 512) -> None:
        config = config or PASConfig()
        if not isinstance(config, PASConfig):
            raise ValueError(f"ConstantPlan fits PASConfig(...), got {type(config).__name__}")
        if config.positions != "last" or config.few_shot:
            raise ValueError("the batched constant fit steers the answer position without a personal prompt "
                             "(positions='last', few_shot=False); fit other settings person by person with fit_subject")
        if max_rows < 1:
            raise ValueError(f"max_rows must be >= 1, got {max_rows}")
        model, lay = scorer.model, layout(scorer.model)
        self.scorer, self.config, self.max_rows = scorer, config, max_rows
        self.method = "pas-learned" if config.learn else "pas"
        self.shape = (lay.n_layers, lay.n_heads, lay.head_dim)
        self.signature = ModelSignature.of(model)
        self.bank_fingerprint = scorer.bank.fingerprint()
        self.items = tuple(scorer.bank.train_ids)
        self.where = {item: j for j, item in enumerate(self.items)}
        self.acts = head_activations(model, scorer.tokenizer, scorer.bank, self.items, template=scorer.template)
        self.full = scorer.encode(self.items)

    def shared(self) -> SharedPlan:
        """This plan without its model, to send to worker processes (:class:`pas.population.plan.SharedPlan`)."""
        return SharedPlan.of(self)

    def prepare(self) -> None:
        """Nothing to prepare: constant PAS runs no compiled kernel of its own."""

    def fit_many(self, people: Sequence[Subject]) -> tuple[list[PersonFit], list[tuple[str, str]]]:
        """Fit ``people``: ``(fits, skipped)``, ``skipped`` holding ``(case, reason)`` for each person fit_subject
        refuses (too few non-neutral answers to probe, a domain without validation items), in its words."""
        ready, skipped = self._prepare(people)
        cfg = self.config
        dirs = find_directions_many([p.problem for p in ready], k=cfg.k, seed=cfg.seed, probe=PROBES[cfg.probe])
        trials = _Trials(self, ready, dirs)
        searched = search_alpha_many(trials, len(ready), cfg.alpha_grid, cfg.refine_steps)
        fits = [self._fit(p, d, alpha, trace) for p, d, (alpha, trace) in zip(ready, dirs, searched, strict=True)]
        return fits, skipped

    def _prepare(self, people: Sequence[Subject]) -> tuple[list[_Person], list[tuple[str, str]]]:
        """Each person's fit/validation split and probe problem, or the reason fit_subject would refuse them."""
        cfg, bank = self.config, self.scorer.bank
        ready: list[_Person] = []
        skipped: list[tuple[str, str]] = []
        for s in people:
            known = s.responses_to(self.items)
            fit_ids, val_ids = split_known(bank, known, cfg.val_fraction, cfg.seed)
            try:
                problem = probe_problem(self.acts.subset(fit_ids), known, val_fraction=cfg.probe_val_fraction,
                                        seed=cfg.seed, case=s.case)
                # the search's objective refuses a domain without validation items whatever the answers: ask it now
                objective(bank, s, val_ids, PointScores.of(np.full(len(val_ids), 3.0)))
            except ValueError as e:
                skipped.append((s.case, str(e)))
                continue
            ready.append(_Person(s, known, tuple(fit_ids), tuple(val_ids), problem))
        return ready, skipped

    def encoding(self, ids: Sequence[int], from_layer: int) -> EncodedPrompts:
        """Items ``ids`` selected from the shared encoding, with their input to ``from_layer`` kept."""
        full = keep_trunk(self.scorer.model, self.full, self.scorer.letter_ids, from_layer)
        return full.select([self.where[i] for i in ids])

    def _fit(self, person: _Person, dirs: Directions, alpha: float, trace: AlphaTrace) -> PersonFit:
        """fit_subject's vector from the searched strength (then learned offsets, with ``learn``)."""
        vectors = alpha * (dirs.vectors * dirs.sigmas[:, None])
        if self.config.learn:
            vectors = self._learn(person, dirs, vectors)
        s = person.subject
        provenance = Provenance(subject=s.case, method=self.method, item_hash=item_hash(person.known),
                                bank=self.bank_fingerprint, config=asdict(self.config))
        vector = SteeringVector.for_model(self.scorer.model, dense_offsets(dirs.heads, vectors, *self.shape),
                                          positions=self.config.positions, provenance=provenance,
                                          signature=self.signature)
        return PersonFit(vector, (float(alpha),), trace[alpha][0])

    def _learn(self, person: _Person, dirs: Directions, init: torch.Tensor) -> torch.Tensor:
        """fit_subject's learned offsets ``[K, D]`` for one person (not batched)."""
        cfg, scorer, lowest = self.config, self.scorer, _lowest(dirs)
        fit, val = (SteeredItems(scorer.model, scorer.bank, person.subject, ids, self.encoding(ids, lowest),
                                 scorer.letter_ids, lowest) for ids in (person.fit_ids, person.val_ids))
        return learn_offsets(fit, val, dirs.heads, init, dirs.sigmas, steps=cfg.steps, lr=cfg.lr,
                             penalty=cfg.penalty, patience=cfg.patience, eval_every=cfg.eval_every,
                             seed=cfg.seed).vectors


class _Trials:
    """The strength trials of a chunk's searches: called each round with every person's strengths (as
    :func:`pas.fit.optimize.search_alpha_many` asks), answers their validation objectives, one
    :func:`pas.score.many.offset_logits_many` call per group of people with the same validation items."""

    def __init__(self, plan: ConstantPlan, ready: Sequence[_Person], dirs: Sequence[Directions]) -> None:
        self.plan, self.ready, self.dirs = plan, ready, dirs
        self.bases = [d.vectors * d.sigmas[:, None] for d in dirs]  # strength 1
        self.groups: dict[tuple[int, ...], list[int]] = {}
        for n, p in enumerate(ready):
            self.groups.setdefault(p.val_ids, []).append(n)
        self.layers = {ids: min(_lowest(dirs[n]) for n in members) for ids, members in self.groups.items()}
        self.encodings: dict[tuple[int, ...], EncodedPrompts] = {}
        self.unsteered: dict[tuple[int, ...], torch.Tensor] = {}  # strength 0: no offset, the same for everyone

    def __call__(self, asked: list[list[float]]) -> list[list[Objective]]:
        answers: list[list[Objective]] = [[] for _ in asked]
        for ids, members in self.groups.items():
            logits = self._logits(ids, [(n, a) for n in members for a in asked[n]])
            for n in members:
                answers[n] = [self._objective(n, logits(n, a)) for a in asked[n]]
        return answers

    def _logits(self, ids: tuple[int, ...],
                trials: list[tuple[int, float]]) -> Callable[[int, float], torch.Tensor]:
        """One pass over the group's validation items for its trials ``(person, strength)``: their ``[N, 6]``."""
        steered = [(n, a) for n, a in trials if a != 0]
        table = [dense_offsets(self.dirs[n].heads, a * self.bases[n], *self.plan.shape) for n, a in steered]
        zero = ids not in self.unsteered and len(steered) < len(trials)
        if zero:
            table.append(torch.zeros(self.plan.shape[0], self.plan.shape[1] * self.plan.shape[2]))
        out = torch.empty(0)
        if table:
            if ids not in self.encodings:
                self.encodings[ids] = self.plan.encoding(ids, self.layers[ids])
            out = offset_logits_many(self.plan.scorer.model, self.encodings[ids], self.plan.scorer.letter_ids,
                                     torch.stack(table), self.layers[ids], self.plan.max_rows)
        if zero:
            self.unsteered[ids] = out[-1]
        row = {trial: r for r, trial in enumerate(steered)}
        return lambda n, a: out[row[(n, a)]] if a != 0 else self.unsteered[ids]

    def _objective(self, n: int, logits: torch.Tensor) -> Objective:
        """fit_subject's validation objective (:meth:`pas.fit.optimize.SteeredItems.objective`) of one trial."""
        p = self.ready[n]
        return objective(self.plan.scorer.bank, p.subject, p.val_ids, to_distribution(logits))
