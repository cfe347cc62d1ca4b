"""A realistic synthetic stand-in for a PAPI population: a Gaussian copula over the items, fitted to real people.

The real PAPI-300K cannot be downloaded here, so population-scale runs use people sampled
from the joint distribution of the real people of a data dir. The model (:class:`ItemCopula`)
keeps, per item, the empirical distribution of its **stored** values (what the data dir
stores: PAPI stores keyed scores) and its missing rate; and, between items, one latent
correlation matrix. A person is ``z ~ N(0, R)``; item ``j`` takes the value its empirical
marginal's quantile function gives at ``Phi(z_j)``, and is then skipped (0) independently
at the item's missing rate. Simulating stored values keeps the data dir's declared encoding
and the loader's encoding check meaningful for the output; :func:`pas.core.data.as_response`
stays the one conversion between stored values and responses.

The latent correlation comes from one of two estimators (``dependence=``):

- ``"normal-scores"``: each item's observed values ranked (ties get mid-ranks), mapped to
  normal quantiles ``Phi^-1(rank / (n + 1))``, correlated pairwise-complete. Cutting a latent
  normal back into five answers attenuates its correlation, so synthetic answers correlate
  less than the real ones (about 0.9 times).
- ``"matched"`` (default): per item pair, the latent correlation whose five-answer cut has
  exactly the real answers' Pearson correlation (through the Hermite expansion of the two
  step functions; NORTA). This undoes that attenuation.

Either matrix is replaced by the nearest correlation matrix with eigenvalues >= ``floor``
(:func:`nearest_correlation`): 200 people cannot pin down 300 items, so the estimate is not
positive definite.
Sampling is seeded and deterministic: people are drawn in fixed blocks of :data:`BLOCK`, each
from its own stream (``SeedSequence(seed, spawn_key=(block,))``), so the people do not depend on
the chunk size and ``n`` people are the first ``n`` of any larger sample with the same seed.

:func:`pas.population.synth_write.write_synthetic` writes a PAPI-format data dir (``items.csv``,
``subjects.json`` and/or ``subjects.parquet``, ``papi.json``), every data file labelled synthetic, and checks the sample
against its source (:func:`pas.population.synth_write.compare`).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy.special import ndtri
from scipy.stats import rankdata

from pas.core.data import (
    N_OPTIONS,
    ItemBank,
    PapiData,
    PapiDataError,
    Subject,
    as_response,
)

GENERATOR = "gaussian copula over items (pas.population.synth)"
DEPENDENCES = ("matched", "normal-scores")
FORMATS = ("json", "parquet")
BLOCK = 4096  # people per random stream: the unit that makes output independent of the chunk size
CHECK_PEOPLE = 20_000  # synthetic people compared with the real ones
MAX_MEAN_ABS_DR = 0.05  # target: mean |synthetic r - real r| over item pairs
MAX_OPPOSITE_KEY_GAP = 0.05  # target: |synthetic - real| opposite-keyed within-facet correlation
SUBJECTS_JSON, SUBJECTS_PARQUET, ITEMS_CSV = "subjects.json", "subjects.parquet", "items.csv"
HERMITE_TERMS = 60  # of the latent-correlation series; 0.9**60 < 2e-3
BISECTIONS = 30  # latent correlations to 2e-9


# ---- stored values as matrices (people x items, bank order, 0 = skipped) ----

def stored_matrix(subjects: Sequence[Subject], bank: ItemBank, encoding: str) -> np.ndarray:
    """People's stored values, ``uint8 (people, items)`` in bank order, 0 = skipped.

    :func:`as_response` is its own inverse (a keyed score of a response is the stored value), so
    it maps responses back to what the data dir stores.
    """
    items = bank.items
    out = np.zeros((len(subjects), len(items)), dtype=np.uint8)
    for n, s in enumerate(subjects):
        out[n] = [as_response(it, s.responses[it.id], encoding) if it.id in s.responses else 0 for it in items]
    return out


def _as_float(stored: np.ndarray, table: np.ndarray | None = None) -> np.ndarray:
    """Stored values (or ``table[item, value]``) as float, NaN where skipped."""
    x = stored.astype(np.float64) if table is None else table[np.arange(stored.shape[1]), stored]
    return np.where(stored == 0, np.nan, x)


def response_matrix(stored: np.ndarray, bank: ItemBank, encoding: str) -> np.ndarray:
    """Responses as float ``(people, items)``, NaN where skipped; each value through :func:`as_response`."""
    table = np.array([[0] + [as_response(it, v, encoding) for v in range(1, N_OPTIONS + 1)] for it in bank.items],
                     dtype=np.float64)
    return _as_float(stored, table)


def pairwise_corr(x: np.ndarray) -> np.ndarray:
    """Pearson correlation of every column pair over the rows where both are present (NaN = missing).

    NaN where fewer than 3 rows have both or either is constant there (as
    :func:`pas.core.data.opposite_key_correlation` skips such pairs).
    """
    present = ~np.isnan(x)
    m = present.astype(np.float64)
    v = np.where(present, x, 0.0)
    n = m.T @ m  # rows with both a and b
    s = v.T @ m  # s[a, b]: sum of a over the rows with both
    ss = (v * v).T @ m
    with np.errstate(divide="ignore", invalid="ignore"):
        cov = v.T @ v - s * s.T / n
        var = ss - s * s / n  # var[a, b]: of a over the rows with both
        r = cov / np.sqrt(var * var.T)
    tiny = 1e-9 * np.maximum(n, 1)
    r[(n < 3) | (var <= tiny) | (var.T <= tiny)] = np.nan
    return r


def _opposite_key_pairs(bank: ItemBank) -> tuple[np.ndarray, np.ndarray]:
    col = {it.id: n for n, it in enumerate(bank.items)}
    a, b = [], []
    for facet in dict.fromkeys(it.facet for it in bank.items):
        items = [it for it in bank.items if it.facet == facet]
        for p in (it for it in items if it.keyed == "+"):
            for q in (it for it in items if it.keyed == "-"):
                a.append(col[p.id])
                b.append(col[q.id])
    return np.array(a, dtype=np.intp), np.array(b, dtype=np.intp)


def opposite_key_corr(bank: ItemBank, stored: np.ndarray) -> float:
    """:func:`pas.core.data.opposite_key_correlation` on a stored matrix, in matrix form (fast for many people)."""
    a, b = _opposite_key_pairs(bank)
    r = pairwise_corr(_as_float(stored))[a, b]
    r = r[np.isfinite(r)]
    return float(r.mean()) if r.size else math.nan


# ---- the model ----

@dataclass(frozen=True)
class ItemCopula:
    """A Gaussian copula over a bank's items, in the stored encoding of its source.

    ``thresholds[j, k]``: item ``j`` takes a value above ``k + 1`` where ``z_j > thresholds[j, k]``
    (``Phi^-1`` of the empirical CDF; +-inf for values never seen). ``missing_rate[j]``: share skipped.
    ``correlation``: the latent correlation (positive definite); ``lower`` its Cholesky factor.
    """

    bank: ItemBank
    encoding: str
    source: str
    thresholds: np.ndarray = field(repr=False)  # (items, N_OPTIONS - 1)
    missing_rate: np.ndarray = field(repr=False)  # (items,)
    correlation: np.ndarray = field(repr=False)  # (items, items)
    lower: np.ndarray = field(repr=False)  # (items, items)
    dependence: str = "matched"
    people: int = 0  # real people it was fitted to


def fit_copula(data: PapiData, *, dependence: str = "matched", floor: float = 1e-3) -> ItemCopula:
    """Fit the copula to the real people of ``data`` (see the module docstring for ``dependence``)."""
    if dependence not in DEPENDENCES:
        raise ValueError(f"dependence {dependence!r}: expected one of {DEPENDENCES}")
    bank, stored = data.bank, stored_matrix(data.subjects, data.bank, data.encoding)
    seen = stored != 0
    empty = [it.id for it, n in zip(bank.items, seen.sum(0), strict=True) if n == 0]
    if empty:
        raise PapiDataError(f"{data.root}: items {empty[:10]} are skipped by everyone; a copula needs at least one "
                            f"answer per item (use a data dir with more people)")
    counts = np.stack([(stored == v).sum(0) for v in range(1, N_OPTIONS + 1)], axis=1).astype(np.float64)
    probs = counts / counts.sum(1, keepdims=True)
    thresholds = ndtri(np.clip(np.cumsum(probs, 1)[:, :-1], 0.0, 1.0))  # ndtri(0) = -inf, ndtri(1) = inf
    if dependence == "normal-scores":
        target = pairwise_corr(_normal_scores(stored))
    else:
        target = _matched_latent(pairwise_corr(_as_float(stored)), thresholds, probs)
    target = np.where(np.isfinite(target), target, 0.0)
    np.fill_diagonal(target, 1.0)
    corr = nearest_correlation(target, floor)
    return ItemCopula(bank, data.encoding, str(Path(data.root).resolve()), thresholds, 1.0 - seen.mean(0), corr,
                      np.linalg.cholesky(corr), dependence, len(data.subjects))


def _normal_scores(stored: np.ndarray) -> np.ndarray:
    """Per item: observed values -> mid-ranks -> ``Phi^-1(rank / (n + 1))``; NaN where skipped."""
    z = np.full(stored.shape, np.nan)
    for j in range(stored.shape[1]):
        seen = stored[:, j] != 0
        z[seen, j] = ndtri(rankdata(stored[seen, j]) / (seen.sum() + 1))
    return z


def _matched_latent(r: np.ndarray, thresholds: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Per pair, the latent correlation whose cut at the items' thresholds has Pearson correlation ``r``.

    A step function ``f(z) = 1 + sum_k [z > t_k]`` has Hermite coefficients
    ``c_j = sum_k phi(t_k) He_{j-1}(t_k) / sqrt(j!)`` (normalised), so
    ``corr(f_a(Z_a), f_b(Z_b)) = sum_j rho^j c_aj c_bj / (sd_a sd_b)``: increasing in rho, solved by bisection.
    """
    t = np.where(np.isfinite(thresholds), thresholds, 0.0)
    dens = np.where(np.isfinite(thresholds), np.exp(-t * t / 2) / math.sqrt(2 * math.pi), 0.0)
    h_prev, h = np.zeros_like(t), np.ones_like(t)  # normalised He_{j-1}(t), He_j / sqrt(j!)
    coef = np.empty((t.shape[0], HERMITE_TERMS))
    for j in range(1, HERMITE_TERMS + 1):
        coef[:, j - 1] = (dens * h).sum(1) / math.sqrt(j)
        h_prev, h = h, (t * h - math.sqrt(j - 1) * h_prev) / math.sqrt(j)
    values = np.arange(1, N_OPTIONS + 1)
    sd = np.sqrt(probs @ values**2 - (probs @ values) ** 2)
    coef /= np.where(sd > 0, sd, np.inf)[:, None]
    a, b = np.triu_indices(len(r), 1)
    want = r[a, b]
    solve = np.isfinite(want)
    a, b, want = a[solve], b[solve], want[solve]
    terms = coef[a].T * coef[b].T  # (terms, pairs)
    lo, hi = np.full(want.shape, -0.999), np.full(want.shape, 0.999)
    for _ in range(BISECTIONS):
        mid = (lo + hi) / 2
        got = np.zeros_like(mid)
        for j in range(HERMITE_TERMS - 1, -1, -1):  # Horner: rho * (c_1 + rho * (c_2 + ...))
            got = mid * (terms[j] + got)
        below = got < want
        lo, hi = np.where(below, mid, lo), np.where(below, hi, mid)
    out = np.full(r.shape, np.nan)
    out[a, b] = out[b, a] = (lo + hi) / 2
    return out


def nearest_correlation(c: np.ndarray, floor: float = 1e-3, iters: int = 200, tol: float = 1e-7) -> np.ndarray:
    """The correlation matrix nearest ``c`` (Frobenius) with eigenvalues >= ``floor``: Higham's (2002) alternating
    projections with Dykstra's correction.

    Plain eigenvalue clipping followed by a reset of the diagonal shrinks every correlation by the clipped mass
    (about 8% on the matched PAPI matrix, whose 200 people cannot pin down 300 items); this keeps them.
    """
    y, correction = (c + c.T) / 2, np.zeros_like(c)
    for _ in range(iters):
        r = y - correction
        w, v = np.linalg.eigh(r)
        x = (v * np.maximum(w, floor)) @ v.T
        correction = x - r
        y_next = x.copy()
        np.fill_diagonal(y_next, 1.0)
        done = np.linalg.norm(y_next - y) <= tol * np.linalg.norm(y)
        y = y_next
        if done:
            break
    w, v = np.linalg.eigh((y + y.T) / 2)  # the last step reset the diagonal: clip once more, rescale to 1
    a = (v * np.maximum(w, floor)) @ v.T
    d = 1.0 / np.sqrt(np.diag(a))
    a = a * d[:, None] * d[None, :]
    np.fill_diagonal(a, 1.0)
    return (a + a.T) / 2


# ---- sampling ----

@dataclass(frozen=True)
class SynthChunk:
    """People ``start .. start + len`` of a sample: their case ids and stored values ``uint8 (people, items)``."""

    start: int
    cases: tuple[str, ...]
    stored: np.ndarray


def case_id(index: int, people: int) -> str:
    """``synthetic-000001`` for the first person (0-based ``index``); wider when there are over 999,999."""
    return f"synthetic-{index + 1:0{max(6, len(str(people)))}d}"


def synthesize(model: ItemCopula, people: int, seed: int = 0, chunk: int = 10_000) -> Iterator[SynthChunk]:
    """``people`` synthetic people, ``chunk`` at a time (never all in memory). Same seed, same people."""
    check_count("people", people)
    check_count("chunk", chunk)
    check_seed(seed)
    train = np.array([n for n, it in enumerate(model.bank.items) if it.ipip120 is not None], dtype=np.intp)
    last = -(-people // BLOCK) - 1
    pending: list[np.ndarray] = []
    have = start = 0  # people drawn but not yet yielded; people yielded
    for block in range(last + 1):
        pending.append(_block(model, seed, block, train))
        have += BLOCK
        while start < people and (have >= chunk or block == last):
            rows = np.concatenate(pending) if len(pending) > 1 else pending[0]
            take = min(chunk, people - start)
            yield SynthChunk(start, tuple(case_id(i, people) for i in range(start, start + take)), rows[:take])
            pending, have, start = [rows[take:]], have - take, start + take


def _block(model: ItemCopula, seed: int, block: int, train: np.ndarray) -> np.ndarray:
    """Block ``block`` of the seed's people (always :data:`BLOCK` of them, so a sample is a prefix of a larger one)."""
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(int(seed), spawn_key=(block,))))
    z = rng.standard_normal((BLOCK, model.lower.shape[0])) @ model.lower.T  # (BLOCK, items) ~ N(0, R)
    values = np.ones(z.shape, dtype=np.uint8)
    for k in range(model.thresholds.shape[1]):
        values += z > model.thresholds[:, k]
    keep = rng.random(z.shape) >= model.missing_rate
    nothing_known = ~keep[:, train].any(1)  # the loader refuses a person with no known answer: keep their
    keep[nothing_known, train[np.argmin(model.missing_rate[train])]] = True  # most-answered known item
    return values * keep


def records(part: SynthChunk, bank: ItemBank) -> list[dict]:
    """The chunk as PAPI test-set records: ``case``, ``synthetic: true``, ``i1`` .. (stored values, 0 = skipped)."""
    keys = [f"i{it.id}" for it in bank.items]
    return [{"case": c, "synthetic": True, **dict(zip(keys, row, strict=True))}
            for c, row in zip(part.cases, part.stored.tolist(), strict=True)]


def check_seed(seed: object) -> None:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a whole number >= 0, got {seed!r}")


def check_count(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a whole number >= 1, got {value!r}")
