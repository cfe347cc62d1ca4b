"""The exact pas-gated fit for many people at once (:func:`pas.fit.gated.fit_gated`, batched across people).

:class:`GatedPlan` does the person-independent work once per model and scorer: the head outputs at the
answer position of the 120 short-form items, the letter Jacobians and the pushes, the shared encoding
with its kept trunk, the steered logits of the gain-0 settings (the same vector for everyone), and for
the people who answered all 120 items their fold split, one encoding per fold and the ridge readouts as
linear maps of the answers. :meth:`GatedPlan.fit_many` then fits a chunk of people:

- people are grouped by the items they answered; a group shares the folds and the standardisation, so
  every head's ridge readout (per fold and on all items) is one matrix product with the answers of the
  whole group (the ridge map is linear in ``y``: :mod:`pas.population.readout_maps`);
- each fold calibrates the group's people together: with ``calibration="exact"``, people x (gain, shift)
  vectors as rows of :func:`pas.score.many.encoded_logits_many` calls, each call one pass per batch; with
  ``"fast"`` (Llama family, gates on the last layer), the last layer computed in the gates' own span
  (:mod:`pas.population.subspace`), no forward pass per person; ``"auto"`` takes fast where it applies;
- the one validation objective picks each person's (gain, shift) with the same key and tie-breaks as
  :func:`pas.fit.gated.calibrate` (its composites computed for the whole grid at once).

The vectors equal ``fit_subject(model, person, GatedConfig(...))`` up to float rounding (tested).
With ``letters_only`` the calibration passes narrow the model's output layer to the five letters
(:func:`letter_head`; the answers and expected answers calibration reads need no other logit); a check
at start-up compares both heads and falls back to the full one if they disagree.
"""

from __future__ import annotations

import itertools
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict
from typing import TYPE_CHECKING

import numpy as np
import torch

from pas.core.arch import layout
from pas.core.data import DOMAINS, Subject
from pas.fit.activations import answer_states
from pas.fit.config import GatedConfig
from pas.fit.gated import GAINS, HEAD_RIDGE, NEUTRAL, SHIFTS, calibrations, gate_tables, pushes
from pas.fit.readout import PointScores, check_known_items
from pas.population.plan import PersonFit, SharedPlan
from pas.population.readout_maps import Group, readout_maps
from pas.population.subspace import GateSubspace, gate_subspace, supports
from pas.score.many import encoded_logits_many
from pas.score.prompts import LETTER_VALUES
from pas.score.scorer import EncodedPrompts, ItemScorer, encode_prompts, keep_trunk, to_distribution
from pas.steer.signature import ModelSignature
from pas.steer.vector import Provenance, SteeringVector, item_hash
from pas_kernels import compile_enabled

if TYPE_CHECKING:
    from transformers import PreTrainedModel

GRID: tuple[tuple[float, float], ...] = tuple(itertools.product(GAINS, SHIFTS))  # calibrate's order
CALIBRATIONS = ("auto", "exact", "fast")  # see the module docstring and pas.population.subspace
FAST_PEOPLE = 32  # people per fast-path block, compiled kernel (memory: people x 24 items x the MLP width)
PLAIN_PEOPLE = 8  # the same in plain torch (PAS_COMPILE=0), which stores people x 25 settings x 24 items x the width
KEPT_GROUPS = 16  # readout maps of groups with unusual missing items kept at a time (the complete group always)


@contextmanager
def letter_head(model: PreTrainedModel, letter_ids: Sequence[int]) -> Iterator[tuple[int, ...] | None]:
    """While open, the model's output layer computes only the logits of ``letter_ids`` (in that order); yields
    their new ids ``(0, 1, ...)``, or None (nothing changed) where the output layer is not a plain linear one.
    Mutates ``model`` until exit; the vocabulary's log-partition becomes the letters' own."""
    head = model.get_output_embeddings()
    if not isinstance(head, torch.nn.Linear) or hasattr(head, "_hf_hook"):
        yield None
        return
    weight, bias = head.weight, head.bias
    idx = torch.tensor(list(letter_ids), device=weight.device)
    head.weight = torch.nn.Parameter(weight.detach()[idx].clone(), requires_grad=False)
    if bias is not None:
        head.bias = torch.nn.Parameter(bias.detach()[idx].clone(), requires_grad=False)
    try:
        yield tuple(range(len(idx)))
    finally:
        head.weight = weight
        if bias is not None:
            head.bias = bias


class GatedPlan:
    """The person-independent part of a pas-gated fit for ``scorer``'s model (built once, see the module
    docstring); :meth:`fit_many` fits people with it. ``max_rows``: rows per forward pass."""

    method = "pas-gated"

    def __init__(self, scorer: ItemScorer, config: GatedConfig, *, letters_only: bool = True,
                 max_rows: int = 1024, calibration: str = "auto") -> None:
        if calibration not in CALIBRATIONS:
            raise ValueError(f"calibration must be one of {CALIBRATIONS}, got {calibration!r}")
        if len(HEAD_RIDGE) != 1:
            raise ValueError(f"batched readouts need one ridge strength (pas.fit.gated.HEAD_RIDGE = {HEAD_RIDGE}); "
                             f"with several, fit people one by one with fit_subject")
        model, lay = scorer.model, layout(scorer.model)
        self.scorer, self.config, self.max_rows = scorer, config, max_rows
        self.layer = config.gate_layer % lay.n_layers
        if self.layer < 1:
            raise ValueError("the gated layer needs a layer below it for the letter correction; choose layer >= 1")
        self.shape = (lay.n_layers, lay.n_heads, lay.head_dim)
        self.signature = ModelSignature.of(model)
        self.bank_fingerprint = scorer.bank.fingerprint()
        self.items = tuple(scorer.bank.train_ids)
        self.where = {item: j for j, item in enumerate(self.items)}
        self.heads = answer_states(scorer, self.items).heads[:, self.layer].double().numpy()  # [120, H, D]
        self.tilt, self.correction = pushes(calibrations(scorer, self.items, config.gate_both_orders), self.layer)
        self.full: EncodedPrompts | None = keep_trunk(model, scorer.encode(self.items), scorer.letter_ids,
                                                      self.layer - 1)
        self.neutral = self._neutral_logits(scorer.letter_ids)  # [shifts, 120, 6]
        self.letters_only = letters_only and self._letter_head_agrees()
        if calibration == "auto":
            calibration = "fast" if self.letters_only and supports(model, self.layer) is None else "exact"
        self.calibration = calibration
        self.subspace = self._subspace() if calibration == "fast" else None
        if self.subspace is not None:  # the fast path reads no encoding: less memory, less to send to workers
            self.full = None
        self._groups: OrderedDict[tuple[int, ...], Group] = OrderedDict()
        self.complete = self.group(tuple(sorted(self.items)))
        self.prepare()

    def prepare(self) -> None:
        """The fast path's fused kernel compiled, in this process, for every shape class a fit meets (one person
        or several in a block, one held-out item or several: compiled code is specialised on sizes 1), so that
        no compilation (seconds each) lands in the middle of a run; nothing for the exact calibration."""
        if self.subspace is None or not compile_enabled():
            return
        gains, shifts = _moving_axes()
        n_heads = self.shape[1]
        for people, n in itertools.product((1, 2), (1, 2)):
            self.subspace.raw_letters_grid(torch.arange(n), torch.full((people, n, n_heads), NEUTRAL), gains, shifts)

    # ------------------------------------------------------------ person-independent

    def _vector(self, w: torch.Tensor, b: torch.Tensor, gain: float, shift: float,
                provenance: Provenance | None = None) -> SteeringVector:
        gw, gb, v = gate_tables(w, b, self.layer, self.tilt, self.correction, self.shape, gain, shift)
        return SteeringVector.for_model(self.scorer.model, v, gate_weights=gw, gate_bias=gb, positions="last",
                                        provenance=provenance, signature=self.signature)

    def _neutral_logits(self, letters: Sequence[int]) -> torch.Tensor:
        """Logits of the 120 items under the gain-0 settings, one per shift: the same vector for everyone (the
        readouts are multiplied by 0), so computed once."""
        n_heads, dim = self.shape[1:]
        assert self.full is not None  # kept until the plan is built, and for the exact calibration
        return self._logits(self.full, len(SHIFTS), lambda i: self._vector(
            torch.zeros(n_heads, dim), torch.full((n_heads,), NEUTRAL), 0.0, SHIFTS[i]), letters)

    def _subspace(self) -> GateSubspace:
        return gate_subspace(self.scorer, self.items, self.layer, self.tilt, self.correction)

    def _letter_head_agrees(self) -> bool:
        with letter_head(self.scorer.model, self.scorer.letter_ids) as letters:
            if letters is None:
                return False
            narrow = self._neutral_logits(letters)
        full, narrow = self.neutral[..., :5], narrow[..., :5]
        if torch.allclose(narrow, full, rtol=1e-3, atol=1e-3 * float(full.abs().max())):
            return True
        warnings.warn("the letters-only output layer disagrees with the full one on this model; calibrating "
                      "with the full output layer (slower)", stacklevel=2)
        return False

    def _logits(self, enc: EncodedPrompts, count: int, make: Callable[[int], SteeringVector],
                letters: Sequence[int]) -> torch.Tensor:
        """``[count, N, 6]`` under vectors ``make(0..count-1)``, made call by call (memory bounded by a call);
        each call holds as many vectors as one pass per batch takes (a call re-checks every vector it is
        given on each of its passes, so more vectors per call would cost more, not less)."""
        per_call = max(1, self.max_rows // max(len(b.index) for b in enc.batches))
        return torch.cat([encoded_logits_many(self.scorer.model, enc, letters,
                                              [make(i) for i in range(a, min(a + per_call, count))], self.max_rows)
                          for a in range(0, count, per_call)])

    def group(self, ids: tuple[int, ...]) -> Group:
        """The :class:`Group` of people who answered exactly the items ``ids`` (sorted), made once and kept."""
        if ids in self._groups:
            self._groups.move_to_end(ids)
            return self._groups[ids]
        folds, weights, intercepts, out_of_fold = readout_maps(self.heads[[self.where[i] for i in ids]],
                                                               self.config.seed)
        by_id = self.scorer.bank.by_id
        domains = tuple(np.flatnonzero([by_id[i].domain == d for i in ids]) for d in DOMAINS)
        encodings = self._fold_encodings(ids, folds) if self.calibration == "exact" else ()
        g = Group(ids, folds, weights, intercepts, out_of_fold, domains, encodings)
        self._groups[ids] = g
        others = [key for key in self._groups if len(key) != len(self.items)]
        if len(others) > KEPT_GROUPS:
            del self._groups[others[0]]
        return g

    def _fold_encodings(self, ids: tuple[int, ...], folds: Sequence[np.ndarray]) -> tuple[EncodedPrompts, ...]:
        """The complete group gets one encoding of its own per fold (one batch each: one pass per call); other
        groups select their folds' rows from the shared encoding."""
        scorer = self.scorer
        assert self.full is not None  # the exact calibration keeps it
        if len(ids) < len(self.items):
            return tuple(self.full.select([self.where[ids[j]] for j in part]) for part in folds)
        encs = []
        for part in folds:
            texts = scorer.texts([ids[j] for j in part])
            enc = encode_prompts(scorer.model, scorer.tokenizer, texts, batch_size=len(texts), prefix_cache=False)
            encs.append(keep_trunk(scorer.model, enc, scorer.letter_ids, self.layer - 1))
        return tuple(encs)

    def shared(self) -> SharedPlan:
        """This plan without its model, made once and sent to worker processes, which rebuild it on their own copy
        of the model with :meth:`SharedPlan.attach` (exact calibration: about 1 GB on SmolLM2-135M, mostly
        the short form's encodings)."""
        return SharedPlan.of(self)

    # ------------------------------------------------------------ per person, batched

    def fit_many(self, people: Sequence[Subject]) -> tuple[list[PersonFit], list[tuple[str, str]]]:
        """Fit ``people``: ``(fits, skipped)``, ``skipped`` holding ``(case, reason)`` for each person the gated
        fit refuses (too few known items, a domain without answers, non-finite readouts)."""
        groups: dict[tuple[int, ...], list[tuple[Subject, dict[int, int]]]] = {}
        for s in people:
            known = s.responses_to(self.items)
            groups.setdefault(tuple(sorted(known)), []).append((s, known))
        fits: list[PersonFit] = []
        skipped: list[tuple[str, str]] = []
        for ids, members in groups.items():
            try:
                check_known_items(len(ids))  # pas.fit.readout.fit_readout's rule and words
                g = self.group(ids)
            except ValueError as e:
                skipped += [(s.case, str(e)) for s, _ in members]
                continue
            fits += self._fit_group(g, members, skipped)
        return fits, skipped

    def _fit_group(self, g: Group, members: list[tuple[Subject, dict[int, int]]],
                   skipped: list[tuple[str, str]]) -> list[PersonFit]:
        y = np.array([[known[i] for i in g.ids] for _, known in members], dtype=np.float64)  # [P, N]
        empty = [d for d, pos in zip(DOMAINS, g.domains, strict=True) if not len(pos)]
        if empty:  # the objective's refusal (pas.score.metric), the same for everyone in the group
            skipped += [(s.case, f"subject {s.case}: no answered items in domain(s) {empty}") for s, _ in members]
            return []
        w, b = g.readouts(y)
        cv = PointScores.of(y @ g.out_of_fold.T)  # the readouts' own known-item scores, as objective() takes them
        known_composites = _domain_composites(g, np.abs(cv.answers - y))  # [P]
        finite = (torch.isfinite(w).flatten(2).all(-1).all(0) & torch.isfinite(b).all(-1).all(0)).numpy()
        skipped += [(s.case, "its readouts are not finite (non-finite head outputs?)")
                    for (s, _), ok in zip(members, finite, strict=True) if not ok]
        keep = np.flatnonzero(finite)
        if not len(keep):
            return []
        y, w, b, members = y[keep], w[:, keep], b[:, keep], [members[p] for p in keep]
        choices = self._calibrate(g, y, w, b)
        fits = []
        for p, ((s, known), (gain, shift)) in enumerate(zip(members, choices, strict=True)):
            prov = Provenance(subject=s.case, method=self.method, item_hash=item_hash(known),
                              bank=self.bank_fingerprint, config=asdict(self.config))
            fits.append(PersonFit(self._vector(w[-1, p], b[-1, p], gain, shift, prov), (gain, shift),
                                  float(known_composites[keep[p]])))
        return fits

    def _calibrate(self, g: Group, y: np.ndarray, w: torch.Tensor, b: torch.Tensor) -> list[tuple[float, float]]:
        """Each person's (gain, shift), as :func:`pas.fit.gated.calibrate` chooses it: from the answers and expected
        answers of every setting on the held-out items of each fold (steered passes, or the fast path)."""
        people, n = y.shape
        answers, expected = np.empty((people, len(GRID), n)), np.full((people, len(GRID), n), np.nan)
        rows = [self.where[i] for i in g.ids]
        for j, (gain, shift) in enumerate(GRID):
            if gain == 0:  # the same vector for everyone: computed once
                s = to_distribution(self.neutral[SHIFTS.index(shift), rows])
                answers[:, j], expected[:, j] = s.answers, s.expected
        moving = [j for j, (gain, _) in enumerate(GRID) if gain != 0]
        if self.subspace is None:
            s = to_distribution(self.calibration_logits(g, w, b, moving).reshape(-1, 6))
            answers[:, moving] = s.answers.reshape(people, len(moving), n)
            expected[:, moving] = s.expected.reshape(people, len(moving), n)
        else:
            self._fast(self.subspace, g, y, w, b, moving, answers, expected)
        return self._choose(g, y, answers, expected)

    def calibration_logits(self, g: Group, w: torch.Tensor, b: torch.Tensor, settings: Sequence[int]) -> torch.Tensor:
        """``[P, S, n, 6]``: the group's people's letter logits (and log-partition) on their held-out items under
        the fold readouts ``w [F + 1, P, H, D]``, ``b [F + 1, P, H]`` at the grid's ``settings``, by steered
        passes (the exact calibration)."""
        people, n = w.shape[1], len(g.ids)
        out = torch.empty(people, len(settings), n, 6)
        with self._letters() as letters:
            for k, (part, enc) in enumerate(zip(g.folds, g.encodings, strict=True)):
                def make(i: int, k: int = k) -> SteeringVector:  # person i // len(settings), setting i % len(...)
                    p, j = divmod(i, len(settings))
                    return self._vector(w[k, p], b[k, p], *GRID[settings[j]])

                logits = self._logits(enc, people * len(settings), make, letters)
                out[:, :, torch.as_tensor(part)] = logits.reshape(people, len(settings), len(part), 6)
        return out

    def _fast(self, sub: GateSubspace, g: Group, y: np.ndarray, w: torch.Tensor, b: torch.Tensor,
              moving: list[int], answers: np.ndarray, expected: np.ndarray) -> None:
        """The fast path (:mod:`pas.population.subspace`): every moving setting's answers, then the expected
        answers of just the settings tied at a person's least composite (all that the choice reads of them;
        NaN elsewhere, which the choice never reaches)."""
        values = torch.tensor(LETTER_VALUES, dtype=torch.float64)
        gains = torch.tensor([GRID[j][0] for j in moving])
        shifts = torch.tensor([GRID[j][1] for j in moving])
        folds = [(torch.tensor([self.where[g.ids[i]] for i in part]), part) for part in g.folds]

        grid_gains, grid_shifts = _moving_axes()  # moving = grid_gains x SHIFTS, in order
        assert len(moving) == len(grid_gains) * len(grid_shifts)
        block = FAST_PEOPLE if compile_enabled() else PLAIN_PEOPLE
        for k, (at, part) in enumerate(folds):
            for p0 in range(0, len(y), block):
                people = slice(p0, p0 + block)
                reads = sub.readouts(at, w[k, people], b[k, people])
                raw = sub.raw_letters_grid(at, reads, grid_gains, grid_shifts)  # [p, G, S, m, 5]
                picked = values[raw.argmax(-1)].reshape(len(reads), len(moving), len(part)).numpy()
                for s_i, j in enumerate(moving):  # argmax needs no final norm
                    answers[people, j, part] = picked[:, s_i]
        least = self._composites(g, y, answers)
        least[least.sum(1) < 2] = False  # a single least composite decides without the expected answers
        pairs = [(p, j) for p, j in zip(*np.nonzero(least), strict=True) if GRID[j][0] != 0]
        if not pairs:
            return
        who = torch.tensor([p for p, _ in pairs])
        which = torch.tensor([moving.index(j) for _, j in pairs])
        gain, shift = gains[which][:, None, None], shifts[which][:, None, None]
        for k, (at, part) in enumerate(folds):  # the tied settings' expected answers, all pairs at once per fold
            reads = sub.readouts(at, w[k, who], b[k, who])  # [Q, m, H]
            gates = (gain * (reads - NEUTRAL) + shift) / reads.shape[-1]  # readout_gates' formula
            logits = sub.letters(at, gates)  # [Q, m, 5]
            mean = (torch.softmax(logits.double(), -1) @ values).numpy()
            for q, (p, j) in enumerate(pairs):
                expected[p, j, part] = mean[q]

    @staticmethod
    def _composites(g: Group, y: np.ndarray, answers: np.ndarray) -> np.ndarray:
        """``[P, G]`` bool: the settings whose composite (rounded as the objective's key rounds it) is the
        person's least."""
        rounded = np.round(_domain_composites(g, np.abs(answers - y[:, None, :])), 9)
        return rounded == rounded.min(1, keepdims=True)

    @contextmanager
    def _letters(self) -> Iterator[Sequence[int]]:
        if not self.letters_only:
            yield self.scorer.letter_ids
            return
        with letter_head(self.scorer.model, self.scorer.letter_ids) as letters:
            yield self.scorer.letter_ids if letters is None else letters

    @staticmethod
    def _choose(g: Group, y: np.ndarray, answers: np.ndarray, expected: np.ndarray) -> list[tuple[float, float]]:
        """Each person's (gain, shift) of least :class:`pas.score.metric.Objective` key over the grid, ties to the
        smaller |gain| then |shift| (calibrate's rule): the key's parts as arrays ``[P, G]``, sorted together."""
        composite = np.round(_domain_composites(g, np.abs(answers - y[:, None, :])), 9)
        expected_composite = _domain_composites(g, np.abs(expected - y[:, None, :]))
        gain, shift = (np.broadcast_to(np.abs(np.array([key[k] for key in GRID])), composite.shape) for k in (0, 1))
        best = np.lexsort((shift, gain, expected_composite, composite), axis=-1)[:, 0]  # stable: GRID order last
        return [GRID[j] for j in best]


def _moving_axes() -> tuple[torch.Tensor, torch.Tensor]:
    """The calibration grid's settings whose vector differs by person, as the fast path's two axes: the non-zero
    gains and every shift (in :data:`GRID`'s order, gain major)."""
    return torch.tensor([gain for gain in GAINS if gain != 0]), torch.tensor(SHIFTS)


def _domain_composites(g: Group, err: np.ndarray) -> np.ndarray:
    """PAPI's composite of absolute errors ``err [..., N]`` on the group's items: the sum over domains (in
    :data:`DOMAINS` order, as :func:`pas.score.metric.subject_errors` sums them) of each domain's mean."""
    return sum(err[..., pos].mean(-1) for pos in g.domains)
