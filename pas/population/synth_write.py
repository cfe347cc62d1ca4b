"""Writing a synthetic data dir and checking it against its source (:mod:`pas.population.synth` samples).

:func:`write_synthetic` writes a PAPI-format data dir (``items.csv``, ``subjects.json`` and/or
``subjects.parquet``, ``papi.json``), every data file labelled synthetic; :func:`compare` measures how
closely a sample resembles the real people (item-pair correlations, the opposite-keyed correlation the
encoding check reads, item means, missing rates).
"""


from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pas.core.data import (
    DECLARATION_FILE,
    ITEM_COLUMNS,
    ItemBank,
    PapiData,
    Subject,
    load_papi,
)
from pas.population.synth import (
    CHECK_PEOPLE,
    FORMATS,
    GENERATOR,
    ITEMS_CSV,
    MAX_MEAN_ABS_DR,
    MAX_OPPOSITE_KEY_GAP,
    SUBJECTS_JSON,
    SUBJECTS_PARQUET,
    ItemCopula,
    SynthChunk,
    check_count,
    check_seed,
    fit_copula,
    opposite_key_corr,
    pairwise_corr,
    response_matrix,
    stored_matrix,
    synthesize,
)

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
    check_count("people", people)
    check_count("check_people", check_people)
    check_count("chunk", chunk)
    check_seed(seed)
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
    (out / DECLARATION_FILE).write_text(json.dumps(meta, indent=1, allow_nan=False) + "\n", encoding="utf-8")
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
        self.schema = pa.schema(fields, metadata={"papi": json.dumps(meta, allow_nan=False)})
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
