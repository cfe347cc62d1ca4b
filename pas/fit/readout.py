"""A per-person linear readout of the model's own hidden states (the ``readout`` yardstick).

For every item the model reads the questionnaire prompt; at the answer position its
hidden state (the residual stream of a layer, or the concatenated head outputs of a
layer) is a feature vector. A ridge regression per person maps those features to the
person's known responses. Layer and ridge strength are chosen by K-fold cross-validation
on the known items, with the one validation objective (:func:`pas.score.metric.objective`).

This says how much of a person's answer pattern the model's states carry for each
statement: the ceiling a content-following steering method on that model should approach,
and a cheap answer to "can this model be personalised at all?". The gated steering kind
(:mod:`pas.fit.gated`) uses the same selection on head outputs as its gates.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from pas.core.data import ItemBank, Subject
from pas.score.metric import Objective, objective

RIDGE_LAMBDAS: tuple[float, ...] = (100.0, 300.0, 1000.0, 3000.0, 10000.0)  # ridge strengths on standardised features
FOLDS = 5


@dataclass(frozen=True)
class PointScores:
    """Continuous predictions as the objective takes them: ``expected`` clipped to 1..5, ``answers`` rounded."""

    expected: np.ndarray

    @classmethod
    def of(cls, values: np.ndarray) -> PointScores:
        return cls(np.clip(np.asarray(values, dtype=np.float64), 1, 5))

    @property
    def answers(self) -> np.ndarray:
        return np.rint(self.expected).astype(int)


@dataclass(frozen=True)
class Readout:
    """A fitted ridge readout of one feature set: ``predict(x) = ((x - mean) / scale) @ coef + intercept``.

    ``fold_models`` are the K cross-validation fits (each without its fold), kept so callers can
    score the known items out of fold; ``folds`` holds each fold's positions in the known items.
    """

    key: object  # which feature set (e.g. a layer index)
    ridge_lambda: float
    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: float
    cv: Objective
    folds: tuple[np.ndarray, ...] = ()
    fold_models: tuple[tuple[np.ndarray, float], ...] = ()

    def predict(self, x: np.ndarray) -> np.ndarray:
        return ((np.asarray(x, dtype=np.float64) - self.mean) / self.scale) @ self.coef + self.intercept

    def raw(self, coef: np.ndarray | None = None, intercept: float | None = None) -> tuple[np.ndarray, float]:
        """Weights and intercept on unstandardised features: ``x @ w + b`` (the fitted ones by default)."""
        coef = self.coef if coef is None else coef
        intercept = self.intercept if intercept is None else intercept
        w = coef / self.scale
        return w, float(intercept - (self.mean * w).sum())


def _ridge(x: np.ndarray, y: np.ndarray, lam: float) -> tuple[np.ndarray, float]:
    """Ridge on standardised ``x`` with an unpenalised intercept (dual form: few rows, many features)."""
    xm, ym = x.mean(0), y.mean()
    xc = x - xm
    gram = xc @ xc.T
    coef = xc.T @ np.linalg.solve(gram + lam * np.eye(len(x)), y - ym)
    return coef, float(ym - xm @ coef)


def check_known_items(n: int, folds: int = FOLDS) -> None:
    """A K-fold readout needs at least two known items per fold; fewer is a ValueError saying how many."""
    if n < 2 * folds:
        raise ValueError(f"a readout needs at least {2 * folds} known items, got {n}")


def fit_readout(features: Mapping[object, np.ndarray], y: np.ndarray, bank: ItemBank, subject: Subject,
                ids: Sequence[int], *, ridge_lambdas: Sequence[float] = RIDGE_LAMBDAS, folds: int = FOLDS,
                seed: int = 0) -> Readout:
    """Choose the feature set and ridge strength by K-fold CV on the known items ``ids``, then fit on all of them.

    features: ``{key: [len(ids), F]}`` (e.g. one entry per layer); y: the responses to ``ids``.
    """
    y = np.asarray(y, dtype=np.float64)
    check_known_items(len(ids), folds)
    order = np.random.default_rng(seed).permutation(len(ids))
    parts = tuple(np.sort(p) for p in np.array_split(order, folds))
    best: tuple[Objective, object, float, np.ndarray, np.ndarray, np.ndarray,
                tuple[tuple[np.ndarray, float], ...]] | None = None
    for key, x in features.items():
        x = np.asarray(x, dtype=np.float64)
        mean, scale = x.mean(0), x.std(0) + 1e-6
        xs = (x - mean) / scale
        for lam in ridge_lambdas:
            pred, models = np.empty(len(ids)), []
            for part in parts:
                rest = np.setdiff1d(np.arange(len(ids)), part)
                coef, icpt = _ridge(xs[rest], y[rest], lam)
                pred[part] = xs[part] @ coef + icpt
                models.append((coef, icpt))
            cv = objective(bank, subject, ids, PointScores.of(pred))
            if best is None or cv.key < best[0].key:
                best = (cv, key, lam, mean, scale, xs, tuple(models))
    if best is None:
        raise ValueError("a readout needs at least one feature set")
    cv, key, lam, mean, scale, xs, fold_models = best
    coef, icpt = _ridge(xs, y, lam)
    return Readout(key, float(lam), mean, scale, coef, icpt, cv, parts, fold_models)


def readout_layers(n_layers: int) -> tuple[int, ...]:
    """Candidate layers: every other one from a quarter of the depth to the last (e.g. 8, 10, ..., 30 of 30)."""
    first = max(1, n_layers // 4)
    return tuple(range(n_layers, first - 1, -2))[::-1]
