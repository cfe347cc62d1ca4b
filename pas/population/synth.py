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

:func:`write_synthetic` writes a PAPI-format data dir (``items.csv``, ``subjects.json`` and/or
``subjects.parquet``, ``papi.json``), every data file labelled synthetic, and checks the sample
against its source (:func:`compare`).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy.special import ndtri
from scipy.stats import rankdata

from pas.core.data import (
    DECLARATION_FILE,
    ITEM_COLUMNS,
    N_OPTIONS,
    ItemBank,
    PapiData,
    PapiDataError,
    Subject,
    as_response,
    load_papi,
)
from pas.eval.report import dumps

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
    _check_count("people", people)
    _check_count("chunk", chunk)
    _check_seed(seed)
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


def _check_seed(seed: object) -> None:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a whole number >= 0, got {seed!r}")


def _check_count(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a whole number >= 1, got {value!r}")


# ---- resemblance to the source ----

@dataclass(frozen=True)
class Resemblance:
    """How a synthetic sample resembles the real people (see :func:`compare`)."""

    people_real: int
    people_synthetic: int
    mean_abs_dr: float  # mean |r_syn - r_real| over item pairs (Pearson on responses, pairwise complete)
    max_abs_dr: float
    opposite_key_real: float  # mean within-facet correlation of opposite-keyed pairs, on stored values
    opposite_key_synthetic: float
    mean_abs_dmean: float  # per item: |mean response syn - real|
    max_abs_dmean: float
    mean_abs_dmissing: float  # per item: |missing rate syn - real|
    max_abs_dmissing: float

    @property
    def opposite_key_gap(self) -> float:
        return abs(self.opposite_key_synthetic - self.opposite_key_real)

    @property
    def ok(self) -> bool:
        """Both targets met: mean |dr| <= 0.05 and the opposite-key correlation within 0.05."""
        return self.mean_abs_dr <= MAX_MEAN_ABS_DR and self.opposite_key_gap <= MAX_OPPOSITE_KEY_GAP

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "opposite_key_gap": self.opposite_key_gap, "ok": self.ok}


def compare(real: Sequence[Subject] | np.ndarray, synthetic: Sequence[Subject] | np.ndarray, bank: ItemBank,
            encoding: str = "keyed") -> Resemblance:
    """Compare people given as Subjects or stored matrices (``(people, items)``, bank order, 0 = skipped)."""
    real, synthetic = (p if isinstance(p, np.ndarray) else stored_matrix(p, bank, encoding) for p in (real, synthetic))
    x, y = response_matrix(real, bank, encoding), response_matrix(synthetic, bank, encoding)
    pairs = np.triu_indices(len(bank.items), 1)
    dr = np.abs(pairwise_corr(y)[pairs] - pairwise_corr(x)[pairs])
    dr = dr[np.isfinite(dr)]
    dmean = np.abs(np.nanmean(y, 0) - np.nanmean(x, 0))
    dmiss = np.abs((synthetic == 0).mean(0) - (real == 0).mean(0))
    return Resemblance(len(real), len(synthetic), float(dr.mean()), float(dr.max()), opposite_key_corr(bank, real),
                       opposite_key_corr(bank, synthetic), float(np.nanmean(dmean)), float(np.nanmax(dmean)),
                       float(dmiss.mean()), float(dmiss.max()))


# ---- writing a data dir ----

@dataclass(frozen=True)
class SynthReport:
    """What :func:`write_synthetic` did: the people, the time, the files (name -> bytes), the resemblance check."""

    out_dir: Path
    people: int
    seed: int
    seconds: float
    files: dict[str, int]
    resemblance: Resemblance
    source: str
    synthetic: bool = True

    @property
    def people_per_second(self) -> float:
        return self.people / self.seconds if self.seconds > 0 else math.inf


def write_synthetic(source_dir: str | os.PathLike | PapiData | None, out_dir: str | os.PathLike, people: int,
                    seed: int = 0, formats: Sequence[str] = FORMATS, overwrite: bool = False, *,
                    chunk: int = 10_000, check_people: int = CHECK_PEOPLE, dependence: str = "matched") -> SynthReport:
    """Write ``people`` synthetic people fitted to ``source_dir`` (a data dir, None = the default one, or loaded
    data) as a PAPI data dir at ``out_dir``; prints nothing.

    ``formats``: ``json`` (``subjects.json``, written chunk by chunk) and/or ``parquet`` (``subjects.parquet``,
    one row group per chunk). The check compares the first ``check_people`` people of the same seed (the
    written people are a prefix of them, or they of the written people) with the real ones.
    """
    t0 = time.perf_counter()
    _check_count("people", people)
    _check_count("check_people", check_people)
    _check_count("chunk", chunk)
    _check_seed(seed)
    formats = _check_formats(formats)
    out = Path(out_dir)
    _check_out(out, overwrite)  # refuse before any work
    data = source_dir if isinstance(source_dir, PapiData) else load_papi(source_dir)
    model = fit_copula(data, dependence=dependence)
    meta = {"encoding": data.encoding, "synthetic": True, "source": model.source, "seed": int(seed),
            "people": int(people), "generator": GENERATOR, "dependence": dependence}
    created = not out.exists()
    for name in (ITEMS_CSV, SUBJECTS_JSON, SUBJECTS_PARQUET, DECLARATION_FILE):
        (out / name).unlink(missing_ok=True)  # an earlier synthetic data dir (_check_out allowed only that)
    out.mkdir(parents=True, exist_ok=True)
    try:
        names, check = _write_people(out, model, people, seed, formats, chunk, check_people, meta)
    except BaseException:
        if created and not any(out.iterdir()):
            out.rmdir()  # no empty folder left by a failed run
        raise
    resemblance = compare(stored_matrix(data.subjects, data.bank, data.encoding), check, data.bank, data.encoding)
    meta["check"] = {**resemblance.to_dict(), "targets": {"mean_abs_dr": MAX_MEAN_ABS_DR,
                                                          "opposite_key_gap": MAX_OPPOSITE_KEY_GAP}}
    (out / DECLARATION_FILE).write_text(dumps(meta, indent=1) + "\n", encoding="utf-8")
    names.append(DECLARATION_FILE)
    return SynthReport(out, people, int(seed), time.perf_counter() - t0,
                       {n: (out / n).stat().st_size for n in names}, resemblance, model.source)


def _write_people(out: Path, model: ItemCopula, people: int, seed: int, formats: tuple[str, ...], chunk: int,
                  check_people: int, meta: dict) -> tuple[list[str], np.ndarray]:
    """The people in each format (``.partial`` files, renamed when complete) and ``items.csv``; returns the
    names written and the first ``check_people`` people of the seed (for the check)."""
    writers = [w(out, model.bank, meta) for w in (_JsonWriter, _ParquetWriter) if w.format in formats]
    check, have = [], 0
    try:
        for part in synthesize(model, people, seed, chunk):
            for w in writers:
                w.write(part)
            if have < check_people:
                check.append(part.stored[: check_people - have])
                have += len(check[-1])
    except BaseException:
        for w in writers:
            w.abort()
        raise
    for w in writers:
        w.close()
    _write_items(model.bank, out / ITEMS_CSV)
    if have < check_people:  # the written people are the first of these: same seed, same stream
        check = [p.stored for p in synthesize(model, check_people, seed, chunk)]
    return [ITEMS_CSV, *(w.name for w in writers)], np.concatenate(check)


def _check_formats(formats: Sequence[str]) -> tuple[str, ...]:
    formats = (formats,) if isinstance(formats, str) else tuple(formats)
    bad = [f for f in formats if f not in FORMATS]
    if bad or not formats:
        raise ValueError(f"formats {list(formats)}: give one or more of {list(FORMATS)}")
    if "parquet" in formats:
        try:
            import pyarrow  # noqa: F401
        except ImportError as e:
            raise ValueError("parquet output needs pyarrow (pip install pyarrow), or write formats=('json',)") from e
    return formats


def _check_out(out: Path, overwrite: bool) -> None:
    """``out`` must be absent, an empty folder or, with ``overwrite``, an earlier synthetic data dir."""
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"output {str(out)!r} is a file; give a folder (it is created if absent)")
    if not out.is_dir() or not any(out.iterdir()):
        return
    if not overwrite:
        raise FileExistsError(f"output folder {str(out)!r} is not empty; choose a new folder, or pass "
                              f"overwrite=True (--overwrite) to replace a synthetic data dir there")
    ours = {ITEMS_CSV, SUBJECTS_JSON, SUBJECTS_PARQUET, DECLARATION_FILE}
    other = sorted(p.name for p in out.iterdir() if p.name not in ours and not p.name.endswith(".partial"))
    if other:
        raise FileExistsError(f"output folder {str(out)!r} holds files this writer did not make ({other[:5]}); "
                              f"they could be read as part of the data dir: choose a new folder")
    declared = out / DECLARATION_FILE
    if declared.exists():
        try:
            synthetic = json.loads(declared.read_text(encoding="utf-8")).get("synthetic") is True
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
            synthetic = False
        if not synthetic:
            raise FileExistsError(f"output folder {str(out)!r} holds a data dir that is not synthetic "
                                  f"({DECLARATION_FILE} does not say synthetic: true); choose a new folder")


def _write_items(bank: ItemBank, path: Path) -> None:
    """``items.csv`` from the bank, with the source's columns (:data:`ITEM_COLUMNS`)."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(ITEM_COLUMNS)
        for it in bank.items:
            w.writerow([it.id, "" if it.ipip120 is None else it.ipip120, it.domain, it.facet, it.facet_name,
                        it.keyed, it.text])


class _JsonWriter:
    """``subjects.json`` as a JSON list, one compact record per line (about 2.6 kB a person), written chunk by
    chunk to a ``.partial`` file."""

    format, name = "json", SUBJECTS_JSON

    def __init__(self, out: Path, bank: ItemBank, meta: dict) -> None:
        self.path, self.tmp = out / self.name, out / (self.name + ".partial")
        self.template = '{"case":"%s","synthetic":true,' + ",".join(f'"i{it.id}":%d' for it in bank.items) + "}"
        self.f = open(self.tmp, "w", encoding="utf-8")
        self.f.write("[")
        self.first = True

    def write(self, part: SynthChunk) -> None:
        lines = [self.template % (c, *row) for c, row in zip(part.cases, part.stored.tolist(), strict=True)]
        self.f.write(("\n" if self.first else ",\n") + ",\n".join(lines))
        self.first = False

    def close(self) -> None:
        self.f.write("\n]\n")
        self.f.close()
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        self.f.close()
        self.tmp.unlink(missing_ok=True)


class _ParquetWriter:
    """``subjects.parquet``: columns ``case``, ``synthetic``, ``i1`` .. (uint8), one row group per chunk;
    the file's metadata carries ``papi.json``'s declaration (``synthetic: true``...)."""

    format, name = "parquet", SUBJECTS_PARQUET

    def __init__(self, out: Path, bank: ItemBank, meta: dict) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        self.pa = pa
        self.path, self.tmp = out / self.name, out / (self.name + ".partial")
        fields = [pa.field("case", pa.string()), pa.field("synthetic", pa.bool_())]
        fields += [pa.field(f"i{it.id}", pa.uint8()) for it in bank.items]
        self.schema = pa.schema(fields, metadata={"papi": dumps(meta)})
        self.writer = pq.ParquetWriter(self.tmp, self.schema, compression="zstd")

    def write(self, part: SynthChunk) -> None:
        cols = np.asfortranarray(part.stored)
        arrays = [self.pa.array(part.cases, self.pa.string()), self.pa.array(np.ones(len(cols), dtype=bool))]
        arrays += [self.pa.array(cols[:, j]) for j in range(cols.shape[1])]
        self.writer.write_table(self.pa.Table.from_arrays(arrays, schema=self.schema))

    def close(self) -> None:
        self.writer.close()
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        self.writer.close()
        self.tmp.unlink(missing_ok=True)
