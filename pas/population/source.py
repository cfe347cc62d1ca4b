"""People as input at any size: a data dir's people read a chunk at a time, checked, bad rows refused or
skipped and reported.

Where the people are is :func:`pas.core.data.find_subject_source`'s decision (``subjects.json``, the
``*.parquet`` files ``pas synth`` writes and Hugging Face PAPI-300K ships, a ``datasets`` folder, or
``hf:<hub id>``). How they are read here: parquet with pyarrow's ``ParquetFile.iter_batches``; a
``datasets`` folder or hub id as a dataset iterated in arrow batches (a hub id streamed,
``load_dataset(..., streaming=True)``); JSON whole (one JSON list: the standard library reads no part of
one, and JSON is the small-data format), then in chunks. Every chunk goes through the data layer's one
parser (:func:`pas.core.data.parse_columns` / :func:`pas.core.data.parse_rows`): the checks and errors
of :func:`pas.core.data.load_papi`, case ids unique across the whole input, the declared encoding
checked on the first chunk with enough people.

Two passes. :meth:`PeopleSource.check` reads everything without building people (several times faster
than building them) and stops at the first bad row, naming it and the fix, or with ``skip_bad`` lists
every bad row; nothing is fitted before it is done. Iterating the :class:`CheckedPeople` it returns reads
again, a chunk at a time, and yields :class:`~pas.core.data.Subject` objects, skipping exactly the rows
the check listed. Memory: one chunk, the case ids (to find duplicates) and the bad rows.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pas.core.data import (
    MIN_SUBJECTS_FOR_CHECK,
    BadRow,
    ItemBank,
    PapiDataError,
    Parsed,
    Subject,
    SubjectSource,
    declared_encoding,
    find_subject_source,
    load_items,
    parse_columns,
    parse_rows,
    read_json_records,
    resolve_data_dir,
    select_subjects,
)
from pas.core.encoding import declared_synthetic

CHUNK = 10_000  # rows read and parsed together (>= the encoding check's sample, so the first chunk is checked)
BAD_ROWS_FILE = "bad_rows.jsonl"  # align-population's report of skipped rows, in its store folder
SKIP_HINT = "fix the row, or pass --skip-bad (skip_bad=True in Python) to skip bad rows and list them in a report"

Chunk = list[Mapping] | dict[str, Sequence[Any]]  # records (JSON) or columns (arrow batches)


@dataclass(frozen=True)
class PeopleSource:
    """The people of a data dir (``root``: its items, its declared encoding), read from ``where`` a chunk
    of ``chunk`` rows at a time. Make one with :func:`open_people`."""

    root: Path
    bank: ItemBank
    encoding: str
    where: SubjectSource
    chunk: int = CHUNK

    @property
    def origin(self) -> str:
        """How errors name the input."""
        return self.where.origin

    @property
    def synthetic(self) -> bool:
        """Whether the data dir declares its people synthetic (:func:`pas.core.encoding.declared_synthetic`)."""
        return declared_synthetic(self.root)

    def rows(self) -> int | None:
        """Rows in the input, known without reading it: parquet files' metadata, a ``datasets`` folder's
        count; None for JSON and a hub id (:meth:`check` counts them)."""
        if self.where.kind == "parquet":
            import pyarrow.parquet as pq

            with _read_errors(self.origin):
                return sum(pq.ParquetFile(p).metadata.num_rows for p in self.where.paths)
        if self.where.kind == "disk":
            return int(_dataset(self.where).num_rows)
        return None

    def chunks(self, *, build: bool = True, check: bool = True) -> Iterator[Parsed]:
        """Every chunk parsed: its subjects (``build=False``: none built, only checked) and bad rows, rows
        numbered and case ids checked across the whole input; ``check``: the encoding, on the first chunk
        with enough people."""
        seen: set[str] = set()
        row = 0
        for raw in _raw_chunks(self.where, self.chunk):
            if isinstance(raw, list):
                parsed = parse_rows(raw, self.bank, self.origin, encoding=self.encoding, first_row=row, seen=seen,
                                    check=check, build=build)
            else:
                parsed = parse_columns(raw, self.bank, self.origin, encoding=self.encoding, first_row=row,
                                       seen=seen, check=check, build=build)
            check = check and parsed.rows - len(parsed.bad) < MIN_SUBJECTS_FOR_CHECK
            row += parsed.rows
            yield parsed

    def check(self, skip_bad: bool = False) -> CheckedPeople:
        """Read the whole input once, building no one: the first bad row raises :class:`PapiDataError` naming
        its row, case id, problem and the fix; with ``skip_bad`` every bad row is kept in the result."""
        rows, bad = 0, []
        for parsed in self.chunks(build=False):
            if parsed.bad and not skip_bad:
                raise PapiDataError(f"{_name(parsed.bad[0])}: {parsed.bad[0].reason}; {SKIP_HINT}")
            rows += parsed.rows
            bad += parsed.bad
        if rows == len(bad):
            raise PapiDataError(f"{self.origin}: no subjects" + (f" ({len(bad)} rows, all bad)" if bad else ""))
        return CheckedPeople(self, rows, rows - len(bad), tuple(bad))


def open_people(data_dir: str | os.PathLike[str] | None = None, source: str | os.PathLike[str] | None = None, *,
                encoding: str | None = None, chunk: int = CHUNK) -> PeopleSource:
    """The people of ``data_dir`` (resolved as :func:`pas.core.data.resolve_data_dir` does), or of ``source``
    (a file, a folder, ``hf:<hub id>``; :func:`pas.core.data.find_subject_source`) with the data dir's items
    and declared encoding (``encoding`` overrides it). Reads nothing but the items yet."""
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"chunk must be a whole number >= 1, got {chunk!r}")
    root = resolve_data_dir(data_dir)
    return PeopleSource(root, load_items(root), declared_encoding(root, encoding), find_subject_source(root, source),
                        chunk)


@dataclass(frozen=True)
class CheckedPeople:
    """A checked input (:meth:`PeopleSource.check`): ``rows`` read, ``people`` good, the ``bad`` rows skipped.

    Iterating reads the input again and yields its people, a chunk at a time (at most ``limit``);
    ``len()`` is how many it yields, known before reading (a progress line's ETA)."""

    source: PeopleSource
    rows: int
    people: int
    bad: tuple[BadRow, ...] = ()
    limit: int | None = None

    def __len__(self) -> int:
        return self.people if self.limit is None else min(self.people, self.limit)

    def __iter__(self) -> Iterator[Subject]:
        skipped = {b.row for b in self.bad}
        left = len(self)
        if not left:
            return
        for parsed in self.source.chunks(check=False):
            new = [b for b in parsed.bad if b.row not in skipped]
            if new:
                raise PapiDataError(f"{_name(new[0])}: {new[0].reason}; the input changed since it was checked")
            yield from parsed.subjects[:left]
            left -= min(left, len(parsed.subjects))
            if not left:
                return

    def select(self, cases: Sequence[str] | None = None, first: int | None = None) -> CheckedPeople | list[Subject]:
        """:func:`pas.core.data.select_subjects` over these people: the first ``first`` (read lazily), or the
        people ``cases`` names (read into a list, in the order given; an unknown id raises)."""
        if cases and first is not None:
            return select_subjects((), cases, first)  # raises: ids or a count, not both
        if cases:
            wanted = {str(c) for c in cases}
            return select_subjects([s for s in self if s.case in wanted], cases)
        if first is None:
            return self
        select_subjects((), first=first)  # the same check of the count (a whole number >= 1)
        return dataclasses.replace(self, limit=first)

    def write_bad_rows(self, path: str | os.PathLike[str]) -> Path:
        """The bad rows as JSON lines (``row``: 0-based row of the input, ``case``: its id or null,
        ``reason``); an empty file when there are none. Returns the path."""
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        with open(out, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(b.to_dict(), ensure_ascii=False) + "\n" for b in self.bad)
        return out


def _name(bad: BadRow) -> str:
    """How an error names a bad row: its row number and, when it has one, its case id."""
    return f"bad row {bad.row}" + (f" (case {bad.case})" if bad.case is not None else "")


def _raw_chunks(where: SubjectSource, size: int) -> Iterator[Chunk]:
    """The input's rows, ``size`` at a time: records for JSON, columns for everything read through arrow."""
    if where.kind == "json":
        records = read_json_records(where.paths[0])
        for start in range(0, len(records), size):
            yield records[start:start + size]
        return
    if where.kind == "parquet":
        import pyarrow.parquet as pq

        for path in where.paths:
            with _read_errors(str(path)):
                for batch in pq.ParquetFile(path).iter_batches(batch_size=size):
                    yield _columns(batch, str(path))
        return
    with _read_errors(where.origin):
        for table in _dataset(where).with_format("arrow").iter(batch_size=size):
            yield _columns(table, where.origin)


def _dataset(where: SubjectSource) -> Any:
    """A ``datasets`` folder (memory-mapped) or a hub id / dataset folder (streamed), its ``train`` split."""
    import datasets

    try:
        if where.kind == "hub":
            return datasets.load_dataset(where.name, split="train", streaming=True)
        ds = datasets.load_from_disk(str(where.paths[0]))
        return ds["train"] if isinstance(ds, datasets.DatasetDict) else ds
    except Exception as e:
        raise PapiDataError(f"{where.origin}: cannot read subjects dataset: {e}") from e


def _columns(batch: Any, origin: str) -> dict[str, Sequence[Any]]:
    """An arrow batch or table as columns: numbers and booleans without nulls as numpy arrays (no Python
    objects), any other column as Python values (as a dataset record holds them, so errors name them the same)."""
    import pyarrow as pa

    names = list(batch.schema.names)
    if len(set(names)) < len(names):
        twice = sorted({n for n in names if names.count(n) > 1})
        raise PapiDataError(f"{origin}: columns {twice} appear more than once; one would hide the other")
    out: dict[str, Sequence[Any]] = {}
    for name, col in zip(names, batch.columns, strict=True):
        plain = pa.types.is_integer(col.type) or pa.types.is_floating(col.type) or pa.types.is_boolean(col.type)
        out[name] = col.to_numpy(zero_copy_only=False) if plain and col.null_count == 0 else col.to_pylist()
    return out


@contextmanager
def _read_errors(origin: str) -> Iterator[None]:
    """Arrow and OS read errors (a corrupt or truncated file) as :class:`PapiDataError` naming the input."""
    import pyarrow as pa

    try:
        yield
    except (OSError, pa.ArrowException) as e:
        raise PapiDataError(f"{origin}: cannot read subjects: {e}") from e
