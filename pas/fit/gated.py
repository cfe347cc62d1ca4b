"""Gated per-head offsets (stage 5, kind "gated"): steering that follows what each statement says.

Each head ``h`` of the gated layer (default: the last) adds ``(w_h . x_h + b_h) * v_h`` to its
own output ``x_h`` at the answer position. From the person's known answers only:

- gates: per head, a ridge readout of that head's own output predicts the person's response
  (:func:`pas.fit.readout.fit_readout`); the gate is ``(gain * (prediction_h - 3) + shift) / H``,
  so the heads' gates add up to ``gain * (mean prediction - 3) + shift``;
- push ``v_h``: the least-norm change of head ``h``'s output that tilts the five answers'
  logits by their values (+2 .. -2), from the model's mean Jacobian at the answer position.
  By default it is solved for the standard option order, i.e. it is a push toward letters
  (it flips under reversed options); ``both_orders`` solves it for A..E and E..A at once,
  aiming at what an answer *means* (on the embedded model that leaves every answer at C);
- a constant correction on the layer below (gate ``w = 0, b = 1``) that replaces the model's
  own average answer preference by a symmetric one, ``-(value - 3)^2`` in logits (again for
  both option orders): a tilt ``t`` then answers about ``3 + t / 2``, so "Moderately" answers
  are reachable, not only "Neither" or the extremes;
- gain and shift: chosen on the known items *out of fold* (each fold gated by readouts fitted
  without it) with the one validation objective, so the steered model leaves "Neither" only
  where the readout's evidence is strong.

The Jacobians and answer preferences are person-independent (computed once per model and
prompt, on the known items' prompts; no answers involved). Everything fitted to the person uses
the standard option order only. The 180 test items are never read.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from pas.core.arch import layout
from pas.core.data import ItemBank, Subject
from pas.fit.activations import answer_states
from pas.fit.readout import fit_readout
from pas.score.cache import ScorerCache
from pas.score.metric import Objective, Prediction, objective
from pas.score.prompts import LETTER_VALUES
from pas.score.scorer import ItemScorer, final_logits, keep_trunk, to_distribution
from pas.steer.hooks import add_offsets

if TYPE_CHECKING:
    from pas.steer.vector import SteeringVector

GAINS: tuple[float, ...] = (0.0, 2.0, 3.0, 4.0, 6.0, 8.0)  # logits of tilt per answer point the readouts predict
SHIFTS: tuple[float, ...] = (-1.0, -0.5, 0.0, 0.5, 1.0)
HEAD_RIDGE: tuple[float, ...] = (100.0,)  # per-head ridge strength on standardised head outputs
NEUTRAL = 3.0  # the middle answer, "Neither Accurate Nor Inaccurate": a gate of 0
CURVATURE = 1.0  # logits: the corrected letter preference is -CURVATURE * (value - 3)^2


@dataclass(frozen=True)
class GatedFit:
    """The learned tables ``[L, H, D]``, ``[L, H]``, ``[L, H, D]`` and how they were chosen."""

    weights: torch.Tensor
    bias: torch.Tensor
    offsets: torch.Tensor
    layer: int
    gain: float
    shift: float
    readout_cv: float  # composite of the mean head readout, out of fold, on the known items (gain 1, no shift)
    calibration: dict[tuple[float, float], tuple[float, float, float]]


LETTER_JACOBIANS: ScorerCache[tuple[int, ...], tuple[torch.Tensor, torch.Tensor]] = ScorerCache("letter jacobians")


def letter_jacobian(scorer: ItemScorer, ids: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean over items ``ids`` of d(centred letter logits)/d(head output) at the answer position, and the mean
    centred letter logits themselves: ``([5, L, H, D], [5])``. Person-independent, remembered by the scorer."""
    return LETTER_JACOBIANS.get(scorer, tuple(ids), lambda: _letter_jacobian(scorer, ids))


def _letter_jacobian(scorer: ItemScorer, ids: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    model = scorer.model
    lay = layout(model)
    enc = scorer.encode(ids)
    rows: list[torch.Tensor] = []
    mean: torch.Tensor | None = None
    requires = [p.requires_grad for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        for k in range(len(LETTER_VALUES)):
            z = torch.zeros(lay.n_layers, lay.attn_width, device=model.device, dtype=model.dtype, requires_grad=True)
            with add_offsets(model, z):
                letters = final_logits(model, enc, scorer.letter_ids)[:, :5]
            (letters[:, k] - letters.mean(1)).sum().backward()
            assert z.grad is not None  # backward() has just filled it
            rows.append(z.grad.float().cpu() / len(ids))
            if mean is None:  # zero offsets: the unsteered letter logits
                mean = letters.detach().float().cpu().mean(0)
    finally:
        for p, r in zip(model.parameters(), requires, strict=True):
            p.requires_grad_(r)
    jac = torch.stack(rows).reshape(5, lay.n_layers, lay.n_heads, lay.head_dim)
    assert mean is not None  # set at the first letter
    return jac, mean - mean.mean()


def calibrations(scorer: ItemScorer, ids: Sequence[int],
                 both_orders: bool) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """:func:`letter_jacobian` of the scorer's option order (and of the reversed one with ``both_orders``)."""
    return [letter_jacobian(sc, ids) for sc in ([scorer, scorer.reversed()] if both_orders else [scorer])]


def _least_norm(jac: torch.Tensor, layer: int, target: torch.Tensor) -> torch.Tensor:
    """Per head of ``layer``, the least-norm output change whose (linearised) letter-logit change is ``target``."""
    return torch.stack([torch.linalg.pinv(jac[:, layer, h]) @ target for h in range(jac.shape[2])])


def pushes(calibrations: Sequence[tuple[torch.Tensor, torch.Tensor]], layer: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(tilt [H, D] on layer, correction [H, D] on layer - 1)`` met by every ``(jacobian, letters)`` at once.

    Each calibration is :func:`letter_jacobian` of one option order (rows in answer-value order).
    """
    values = torch.tensor(LETTER_VALUES, dtype=torch.float32) - NEUTRAL
    preference = -CURVATURE * (values**2 - (values**2).mean())
    jac = torch.cat([j for j, _ in calibrations])  # [5 * orders, L, H, D]
    tilt = _least_norm(jac, layer, values.repeat(len(calibrations)))
    correction = _least_norm(jac, layer - 1, torch.cat([preference - letters for _, letters in calibrations]))
    return tilt, correction / jac.shape[2]


@dataclass(frozen=True)
class HeadReadouts:
    """One ridge readout per head of a layer: raw weights ``[H, D]``, intercepts ``[H]``, and per fold the same."""

    weights: torch.Tensor
    intercepts: torch.Tensor
    folds: tuple[np.ndarray, ...]
    fold_weights: tuple[torch.Tensor, ...]
    fold_intercepts: tuple[torch.Tensor, ...]
    cv_mean: np.ndarray  # out-of-fold mean prediction of the heads, per known item


def fit_head_readouts(heads: torch.Tensor, y: np.ndarray, bank: ItemBank, subject: Subject, ids: Sequence[int],
                      seed: int = 0) -> HeadReadouts:
    """Per head, :func:`pas.fit.readout.fit_readout` of its own output ``heads [N, H, D]`` (same folds for all
    heads)."""
    fits = [fit_readout({h: heads[:, h].numpy()}, y, bank, subject, ids, ridge_lambdas=HEAD_RIDGE, seed=seed)
            for h in range(heads.shape[1])]
    raw = [f.raw() for f in fits]
    folds = fits[0].folds
    fold_raw = [[f.raw(*f.fold_models[k]) for f in fits] for k in range(len(folds))]
    cv = np.empty(len(ids))
    for k, part in enumerate(folds):
        cv[part] = np.mean([heads[part, h].numpy() @ w + b for h, (w, b) in enumerate(fold_raw[k])], axis=0)
    as_t = lambda pairs: (torch.tensor(np.stack([w for w, _ in pairs]), dtype=torch.float32),  # noqa: E731
                          torch.tensor([b for _, b in pairs], dtype=torch.float32))
    w, b = as_t(raw)
    per_fold = [as_t(r) for r in fold_raw]
    return HeadReadouts(w, b, folds, tuple(p[0] for p in per_fold), tuple(p[1] for p in per_fold), cv)


def readout_gates(weights: torch.Tensor, intercepts: torch.Tensor, gain: float, shift: float = 0.0
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """The one gate formula: per-head readouts ``weights [H, D]``, ``intercepts [H]`` become gate weights and
    bias whose gate is ``(gain * (readout_h - NEUTRAL) + shift) / H``, so the heads' gates add up to
    ``gain * (mean readout - NEUTRAL) + shift``."""
    n_heads = weights.shape[0]
    return gain * weights / n_heads, (gain * (intercepts - NEUTRAL) + shift) / n_heads


def gate_tables(weights: torch.Tensor, intercepts: torch.Tensor, layer: int, tilt: torch.Tensor,
                correction: torch.Tensor, shape: tuple[int, int, int], gain: float,
                shift: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Dense ``(weights, bias, offsets)``: :func:`readout_gates` on ``layer``, the constant correction on
    ``layer - 1``."""
    n_layers, n_heads, head_dim = shape
    w, b, v = torch.zeros(shape), torch.zeros(n_layers, n_heads), torch.zeros(shape)
    w[layer], b[layer] = readout_gates(weights, intercepts, gain, shift)
    v[layer] = tilt
    b[layer - 1] = 1.0
    v[layer - 1] = correction
    return w, b, v


def gate_range(heads: torch.Tensor, weights: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """``[H]``: the largest |gate| each head takes on the answer-position outputs ``heads [N, H, D]``.

    Used as the vector's ``gate_limit``: nothing changes on those questionnaire items, and on
    other text (chat) a gate cannot run past the range its readout was fitted on.
    """
    return ((heads * weights).sum(-1) + bias).abs().amax(0)


def recentre(vector: SteeringVector, reference: ItemScorer, context: ItemScorer,
             ids: Sequence[int] | None = None) -> SteeringVector:
    """``vector`` with each gate re-centred for another prompt context (wording, extra turns): the gate reads
    a head's output relative to its mean over items ``ids`` (default the short form) *in that context*
    instead of in the ``reference`` context it was fitted in. Uses prompts only, no answers:
    ``b' = b - w . (mean_context - mean_reference)``."""
    import dataclasses

    if vector.kind != "gated":
        return vector
    ids = tuple(reference.bank.train_ids if ids is None else ids)
    shift = answer_states(context, ids).heads.mean(0) - answer_states(reference, ids).heads.mean(0)  # [L, H, D]
    gates = vector.as_gated().gates
    assert gates is not None  # a gated vector has gates
    return dataclasses.replace(vector, gates=gates.recentred(shift)).relabel(
        derived=f"re-centred for another context of ({vector.provenance.derived})")


def calibrate(scorer: ItemScorer, subject: Subject, ids: Sequence[int], reads: HeadReadouts, layer: int,
              tilt: torch.Tensor, correction: torch.Tensor, gains: Sequence[float] = GAINS,
              shifts: Sequence[float] = SHIFTS
              ) -> tuple[tuple[float, float], dict[tuple[float, float], tuple[float, float, float]]]:
    """Choose (gain, shift) by the objective on the known items, each fold gated by readouts fitted without it.

    Every (gain, shift) of a fold runs in one batch (:func:`pas.score.many.encoded_logits_many`) from the
    correction's layer up, on rows picked from the one shared encoding of the short form.
    """
    from pas.score.many import encoded_logits_many
    from pas.steer.signature import ModelSignature
    from pas.steer.vector import SteeringVector

    model = scorer.model
    lay = layout(model)
    shape = (lay.n_layers, lay.n_heads, lay.head_dim)
    signature = ModelSignature.of(model)
    everything = tuple(scorer.bank.train_ids)  # one encoding shared by every person; folds are picked from it
    where = {item: j for j, item in enumerate(everything)}
    full = keep_trunk(model, scorer.encode(everything), scorer.letter_ids, layer - 1)
    grid = list(itertools.product(gains, shifts))
    logits = torch.empty(len(grid), len(ids), 6)
    for part, w, b in zip(reads.folds, reads.fold_weights, reads.fold_intercepts, strict=False):
        vectors = []
        for gain, shift in grid:
            gw, gb, v = gate_tables(w, b, layer, tilt, correction, shape, gain, shift)
            vectors.append(SteeringVector.for_model(model, v, gate_weights=gw, gate_bias=gb, signature=signature))
        enc = full.select([where[ids[j]] for j in part])
        logits[:, torch.as_tensor(part)] = encoded_logits_many(model, enc, scorer.letter_ids, vectors)
    seen: dict[tuple[float, float], Objective] = {}
    for k, key in enumerate(grid):
        s = to_distribution(logits[k])
        seen[key] = objective(scorer.bank, subject, ids, Prediction(tuple(ids), s.answers, s.expected))
    best = min(seen, key=lambda k: (seen[k].key, abs(k[0]), abs(k[1])))
    return best, {k: (o.composite, o.expected, o.letter_mass) for k, o in seen.items()}


def fit_gated(scorer: ItemScorer, subject: Subject, layer: int = -1, *, seed: int = 0,
              both_orders: bool = False) -> GatedFit:
    """Learn one person's gated offsets on the heads of ``layer`` (negative: from the end), from known answers only.

    ``both_orders`` solves the pushes for both option orders at once (the default, False: the
    scorer's order only, a letter push).
    """
    from pas.fit.readout import PointScores

    bank = scorer.bank
    lay = layout(scorer.model)
    layer = layer % lay.n_layers
    if layer < 1:
        raise ValueError("the gated layer needs a layer below it for the letter correction; choose layer >= 1")
    known = subject.responses_to(bank.train_ids)
    ids = sorted(known)
    y = np.array([known[i] for i in ids], dtype=np.float64)
    states = answer_states(scorer, bank.train_ids).rows(ids)
    reads = fit_head_readouts(states.heads[:, layer], y, bank, subject, ids, seed=seed)
    tilt, correction = pushes(calibrations(scorer, bank.train_ids, both_orders), layer)
    (gain, shift), trace = calibrate(scorer, subject, ids, reads, layer, tilt, correction)
    w, b, v = gate_tables(reads.weights, reads.intercepts, layer, tilt, correction,
                          (lay.n_layers, lay.n_heads, lay.head_dim), gain, shift)
    cv = objective(bank, subject, ids, PointScores.of(reads.cv_mean)).composite
    return GatedFit(w, b, v, layer, gain, shift, cv, trace)
