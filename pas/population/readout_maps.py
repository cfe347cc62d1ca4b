"""A pas-gated fit's per-head ridge readouts as linear maps of a person's answers, for every person at once.

:func:`pas.fit.gated.fit_head_readouts` fits, per head of the gated layer, a ridge readout of that
head's output on the person's known items (:func:`pas.fit.readout.fit_readout`: one ridge strength,
K folds drawn from the number of items and the seed, features standardised over the known items).
Everything there but the answers ``y`` depends only on *which* items a person answered, and the
ridge solution is linear in ``y``: so people who answered the same items share one map per fold,
and a whole group's readouts are one matrix product (:meth:`Group.readouts`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from pas.fit.gated import HEAD_RIDGE
from pas.fit.readout import FOLDS
from pas.score.scorer import EncodedPrompts


@dataclass(frozen=True)
class Group:
    """People who answered the same items ``ids``: their folds, readout maps and one encoding per fold.

    ``weights [F + 1, H, D, N]`` and ``intercepts [F + 1, H, N]`` map a person's answers ``y [N]`` to each
    head's raw ridge readout (``x @ w + b``), without fold ``k`` (``k < F``) or on all items (``k = F``);
    ``out_of_fold [N, N]`` maps them to the heads' mean out-of-fold prediction.
    """

    ids: tuple[int, ...]
    folds: tuple[np.ndarray, ...]
    weights: np.ndarray
    intercepts: np.ndarray
    out_of_fold: np.ndarray
    domains: tuple[np.ndarray, ...]  # positions of each domain's items, in DOMAINS order
    encodings: tuple[EncodedPrompts, ...]

    def readouts(self, y: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Answers ``y [P, N]`` -> raw weights ``[F + 1, P, H, D]`` and intercepts ``[F + 1, P, H]`` (float32)."""
        w = np.einsum("khdn,pn->kphd", self.weights, y)
        b = np.einsum("khn,pn->kph", self.intercepts, y)
        return torch.tensor(w, dtype=torch.float32), torch.tensor(b, dtype=torch.float32)


def readout_maps(heads: np.ndarray, seed: int) -> tuple[tuple[np.ndarray, ...], np.ndarray, np.ndarray, np.ndarray]:
    """:func:`pas.fit.gated.fit_head_readouts` as linear maps of the answers: ``(folds, weights, intercepts,
    out_of_fold)`` for head outputs ``heads [N, H, D]`` (float64), the folds and ridge of
    :func:`pas.fit.readout.fit_readout`."""
    n, n_heads, dim = heads.shape
    order = np.random.default_rng(seed).permutation(n)
    folds = tuple(np.sort(p) for p in np.array_split(order, FOLDS))
    rests = [np.setdiff1d(np.arange(n), part) for part in folds] + [np.arange(n)]
    lam = HEAD_RIDGE[0]
    weights, intercepts = np.zeros((len(rests), n_heads, dim, n)), np.zeros((len(rests), n_heads, n))
    for h in range(n_heads):
        x = heads[:, h]
        mean, scale = x.mean(0), x.std(0) + 1e-6
        xs = (x - mean) / scale
        for k, rest in enumerate(rests):
            xc = xs[rest] - xs[rest].mean(0)
            m = len(rest)
            a = xc.T @ np.linalg.solve(xc @ xc.T + lam * np.eye(m), np.eye(m) - 1.0 / m)  # coef = a @ y[rest]
            weights[k, h][:, rest] = a / scale[:, None]
            intercepts[k, h, rest] = 1.0 / m - xs[rest].mean(0) @ a - (mean / scale) @ a
    out_of_fold = np.zeros((n, n))
    for k, part in enumerate(folds):
        out_of_fold[part] = np.mean([heads[part, h] @ weights[k, h] + intercepts[k, h] for h in range(n_heads)], 0)
    return folds, weights, intercepts, out_of_fold
