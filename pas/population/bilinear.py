"""The population map's mathematics: statement bases, the people's answer sums, the closed-form bilinear ridge.

``response[p, j] - 3 ~ a_p^T B z_j`` with ``a_p = [1, known responses - 3]`` and ``z_j`` a statement's
standardised principal components; see :mod:`pas.population.informed` for how it aligns a person.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from pas.core.data import ItemBank, Subject

SETTINGS = ("short", "full")  # which answers of the population the map learns from
ITEM_FOLDS = 5
NEUTRAL = 3.0


@dataclass(frozen=True)
class StatementBasis:
    """``z = ((x - mean) / scale) @ components``: standardised principal components of statement states
    ``x [N, F]`` (the components scaled to unit variance over the statements they were fitted on)."""

    mean: np.ndarray
    scale: np.ndarray
    components: np.ndarray  # [F, k]

    @classmethod
    def fit(cls, x: np.ndarray, k: int) -> StatementBasis:
        x = np.asarray(x, dtype=np.float64)
        mean, scale = x.mean(0), x.std(0) + 1e-6
        xs = (x - mean) / scale
        k = min(k, *xs.shape)
        _, s, vt = np.linalg.svd(xs, full_matrices=False)
        sd = s[:k] / np.sqrt(len(x))
        return cls(mean, scale, vt[:k].T / np.maximum(sd, 1e-12))

    def project(self, x: np.ndarray) -> np.ndarray:
        return ((np.asarray(x, dtype=np.float64) - self.mean) / self.scale) @ self.components


def design(people: Iterable[Subject], known_ids: Sequence[int], target_ids: Sequence[int]
           ) -> tuple[np.ndarray, np.ndarray]:
    """``(A [P, 1 + known], Y [P, targets])``: ``[1, responses - 3]`` and target responses - 3 (skipped: 0)."""
    rows_a, rows_y = [], []
    for s in people:
        r = s.responses
        rows_a.append([1.0] + [r[i] - NEUTRAL if i in r else 0.0 for i in known_ids])
        rows_y.append([r[i] - NEUTRAL if i in r else 0.0 for i in target_ids])
    a = np.array(rows_a, dtype=np.float64).reshape(-1, 1 + len(known_ids))
    return a, np.array(rows_y, dtype=np.float64).reshape(len(a), len(target_ids))


@dataclass
class AnswerStats:
    """The sums over people the map needs: ``A^T A`` and ``A^T Y`` (:func:`design`), added chunk by chunk."""

    known_ids: tuple[int, ...]
    target_ids: tuple[int, ...]
    ata: np.ndarray
    aty: np.ndarray
    people: int = 0

    @classmethod
    def empty(cls, known_ids: Sequence[int], target_ids: Sequence[int]) -> AnswerStats:
        m = 1 + len(known_ids)
        return cls(tuple(known_ids), tuple(target_ids), np.zeros((m, m)), np.zeros((m, len(target_ids))))

    def only(self, targets: Sequence[int]) -> AnswerStats:
        """The same sums with only ``targets`` as targets (a subset of these)."""
        where = {i: n for n, i in enumerate(self.target_ids)}
        return AnswerStats(self.known_ids, tuple(targets), self.ata, self.aty[:, [where[i] for i in targets]],
                           self.people)

    def add(self, people: Iterable[Subject]) -> AnswerStats:
        a, y = design(people, self.known_ids, self.target_ids)
        self.ata += a.T @ a
        self.aty += a.T @ y
        self.people += len(a)
        return self


def target_ids(bank: ItemBank, setting: str) -> tuple[int, ...]:
    """What the map learns to predict: the known items (``short``) or all statements (``full``)."""
    if setting not in SETTINGS:
        raise ValueError(f"population setting must be one of {SETTINGS}, not {setting!r}")
    return tuple(bank.train_ids) if setting == "short" else tuple(it.id for it in bank.items)


def item_folds(known_ids: Sequence[int]) -> np.ndarray:
    """The fold of each known item (by position): a fold's targets are learned with the fold's answers zeroed."""
    return np.arange(len(known_ids)) % ITEM_FOLDS


def solve_map(stats: AnswerStats, z: np.ndarray, ridge: float, *, tol: float = 1e-10, max_iter: int = 1000
              ) -> np.ndarray:
    """``B [1 + known, k]`` minimising ``sum (y_pj - a_p(-fold j)^T B z_j)^2 + ridge |B|^2`` (``z [targets, k]``).

    Targets that are known items are grouped by item fold, each group seen through ``a_p`` with its fold
    zeroed; other targets see all of ``a_p``. Each group ``g`` adds ``(D_g A^T A D_g) kron (Z_g^T Z_g)`` to the
    normal equations, so only the two sums over people enter. Solved by conjugate gradients on ``B`` itself
    (each step a few small matrix products), preconditioned by the same system without the zeroing, which the
    eigenvectors of ``A^T A`` and ``sum_g Z_g^T Z_g`` solve exactly.
    """
    known = {i: n for n, i in enumerate(stats.known_ids)}
    folds = item_folds(stats.known_ids)
    m = stats.ata.shape[0]
    group_of = np.array([folds[known[i]] if i in known else -1 for i in stats.target_ids])
    lefts, rights, rhs = [], [], np.zeros((m, z.shape[1]))
    for g in np.unique(group_of):
        cols = np.flatnonzero(group_of == g)
        keep = np.ones(m)
        if g >= 0:
            keep[1 + np.flatnonzero(folds == g)] = 0.0
        lefts.append(stats.ata * keep[:, None] * keep[None, :])
        rights.append(z[cols].T @ z[cols])
        rhs += (keep[:, None] * stats.aty[:, cols]) @ z[cols]
    s, u = np.linalg.eigh(stats.ata)
    t, v = np.linalg.eigh(sum(rights))
    scale = np.outer(np.maximum(s, 0), np.maximum(t, 0)) + ridge

    def apply(b: np.ndarray) -> np.ndarray:
        return sum(left @ b @ right for left, right in zip(lefts, rights, strict=True)) + ridge * b

    def precondition(r: np.ndarray) -> np.ndarray:
        return u @ ((u.T @ r @ v) / scale) @ v.T

    b = precondition(rhs)
    r = rhs - apply(b)
    p = precondition(r)
    rz = float((r * p).sum())
    limit = tol * float(np.sqrt((rhs * rhs).sum()))
    for _ in range(max_iter):
        if float(np.sqrt((r * r).sum())) <= limit:
            break
        q = apply(p)
        step = rz / float((p * q).sum())
        b, r = b + step * p, r - step * q
        zr = precondition(r)
        rz, old = float((r * zr).sum()), rz
        p = zr + (rz / old) * p
    return b


@dataclass(frozen=True)
class HeadMaps:
    """One map per head of the gated layer: head ``h`` predicts ``3 + a_p^T B_h z_h(x_h)`` from its own output
    ``x_h`` alone (``coefs [H, 1 + known, k]``), so each head's gate carries the whole prediction, as
    pas-gated's per-head readouts do, and the gates stay alike in size."""

    bases: tuple[StatementBasis, ...]
    coefs: np.ndarray

    @classmethod
    def fit(cls, stats: AnswerStats, x: np.ndarray, target_rows: Sequence[int], components: int,
            ridge: float) -> HeadMaps:
        """``x [statements, H, D]``: every statement's head outputs (the bases are fitted on all of them);
        ``target_rows``: the rows of ``stats.target_ids`` in ``x``."""
        bases = tuple(StatementBasis.fit(x[:, h], components) for h in range(x.shape[1]))
        rows = np.asarray(target_rows)
        coefs = np.stack([solve_map(stats, b.project(x[rows, h]), ridge) for h, b in enumerate(bases)])
        return cls(bases, coefs)

    def readouts(self, a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(w [H, D], b [H])`` for one person's ``a`` ``[1 + known]``: head ``h`` predicts ``x_h @ w_h + b_h``."""
        ws, bs = [], []
        for basis, coef in zip(self.bases, self.coefs, strict=True):
            w = (basis.components @ (coef.T @ a)) / basis.scale
            ws.append(w)
            bs.append(NEUTRAL - basis.mean @ w)
        return np.stack(ws), np.array(bs)

    def predict(self, a: np.ndarray, x: np.ndarray) -> np.ndarray:
        """``[P, N]``: the heads' mean prediction for people ``a [P, 1 + known]`` and statements ``x [N, H, D]``."""
        out = np.zeros((len(a), len(x)))
        for h, (basis, coef) in enumerate(zip(self.bases, self.coefs, strict=True)):
            out += (a @ coef) @ basis.project(x[:, h]).T
        return NEUTRAL + out / len(self.bases)


def masked_predictions(maps: HeadMaps, a: np.ndarray, x_known: np.ndarray) -> np.ndarray:
    """``[P, known]``: each known item predicted with its item fold of answers zeroed in ``a`` (as fitted)."""
    folds = item_folds(range(x_known.shape[0]))
    out = np.empty((len(a), len(folds)))
    for g in np.unique(folds):
        cols = np.flatnonzero(folds == g)
        masked = a.copy()
        masked[:, 1 + cols] = 0.0
        out[:, cols] = maps.predict(masked, x_known[cols])
    return out


def domain_error(pred: np.ndarray, truth: np.ndarray, domains: Sequence[str]) -> float:
    """The composite of rounded predictions, averaged over people: per domain the mean |answer - response|,
    summed over domains (``truth`` NaN where skipped)."""
    answers = np.clip(np.rint(pred), 1, 5)
    err = np.abs(answers - truth)
    dom = np.asarray(domains)
    return float(np.mean(sum(np.nanmean(err[:, dom == d], axis=1) for d in np.unique(dom))))


COMPONENTS_GRID: tuple[int, ...] = (32, 64)
RIDGE_GRID: tuple[float, ...] = (1e4, 3e4, 1e5)
SHAPE_FOLDS = 3


def select_shape(people: Sequence[Subject], x: np.ndarray, bank: ItemBank, setting: str,
                 components: Sequence[int] = COMPONENTS_GRID, ridges: Sequence[float] = RIDGE_GRID,
                 folds: int = SHAPE_FOLDS) -> tuple[int, float, dict[str, float]]:
    """``(components, ridge, errors)`` chosen by cross-validation across ``people`` (the map's own people),
    predicting held-out people's answers as the map will be used: with ``short``, statements the map never
    learned (each fold of known items left out of its targets in turn);
    with ``full``, known items out of item fold and the other statements from all known answers.
    ``x [statements, H, D]`` in ``bank``'s item order."""
    if setting == "short":
        return _select_on_unseen_statements(people, x, bank, components, ridges, folds)
    targets = target_ids(bank, setting)
    where = {it.id: n for n, it in enumerate(bank.items)}
    known = list(bank.train_ids)
    others = [i for i in targets if i not in set(known)]
    a_all, _ = design(people, known, ())
    truth = np.array([[s.responses.get(i, np.nan) for i in known + others] for s in people], dtype=np.float64)
    domains = [bank.by_id[i].domain for i in known + others]
    part = np.arange(len(people)) % folds
    errors: dict[tuple[int, float], float] = {}
    for k in components:
        for ridge in ridges:
            total = 0.0
            for f in range(folds):
                train = [s for s, g in zip(people, part, strict=True) if g != f]
                stats = AnswerStats.empty(known, targets).add(train)
                maps = HeadMaps.fit(stats, x, [where[i] for i in targets], k, ridge)
                a = a_all[part == f]
                pred = masked_predictions(maps, a, x[[where[i] for i in known]])
                if others:
                    pred = np.hstack([pred, maps.predict(a, x[[where[i] for i in others]])])
                total += domain_error(pred, truth[part == f], domains) * len(a)
            errors[(k, ridge)] = total / len(people)
    return _best(errors)


def _select_on_unseen_statements(people: Sequence[Subject], x: np.ndarray, bank: ItemBank,
                                 components: Sequence[int], ridges: Sequence[float],
                                 folds: int) -> tuple[int, float, dict[str, float]]:
    """The short-form choice: fitted on two thirds of ``people`` with one fold of known statements left out of
    the targets, the held-out people's answers to those statements predicted (their own answers to that fold
    zeroed), for every fold: how well the map carries to statements it never learned."""
    where = {it.id: n for n, it in enumerate(bank.items)}
    known = list(bank.train_ids)
    held = np.arange(len(people)) % folds == 0
    train = [s for s, h in zip(people, held, strict=True) if not h]
    stats = AnswerStats.empty(known, known).add(train)
    a_all, _ = design(people, known, ())
    a_held = a_all[held]
    truth = np.array([[s.responses.get(i, np.nan) for i in known] for s, h in zip(people, held, strict=True) if h],
                     dtype=np.float64)
    domains = [bank.by_id[i].domain for i in known]
    item_fold = item_folds(known)
    errors: dict[tuple[int, float], float] = {}
    for k in components:
        for ridge in ridges:
            pred = np.empty((int(held.sum()), len(known)))
            for g, maps in enumerate(unseen_fold_maps(stats, x, where, k, ridge)):
                cols = np.flatnonzero(item_fold == g)
                a = a_held.copy()
                a[:, 1 + cols] = 0.0
                pred[:, cols] = maps.predict(a, x[[where[known[c]] for c in cols]])
            errors[(k, ridge)] = domain_error(pred, truth, domains)
    return _best(errors)


def unseen_fold_maps(stats: AnswerStats, x: np.ndarray, rows: Mapping[int, int], components: int,
                     ridge: float) -> list[HeadMaps]:
    """Per item fold ``g`` of the known statements (:func:`item_folds`), at index ``g``: the maps fitted on
    ``stats`` without that fold's statements among the targets, i.e. maps that never learned them (``rows``:
    statement id -> its row of ``x``)."""
    folds = item_folds(stats.known_ids)
    out = []
    for g in np.unique(folds):
        left_out = {stats.known_ids[c] for c in np.flatnonzero(folds == g)}
        kept = [t for t in stats.target_ids if t not in left_out]
        out.append(HeadMaps.fit(stats.only(kept), x, [rows[i] for i in kept], components, ridge))
    return out


def _best(errors: Mapping[tuple[int, float], float]) -> tuple[int, float, dict[str, float]]:
    """The (components, ridge) of least error (ties: fewer components, less ridge), and every error by name."""
    best = min(errors, key=lambda key: (errors[key], key))
    return best[0], best[1], {f"{k}/{ridge:g}": e for (k, ridge), e in errors.items()}
