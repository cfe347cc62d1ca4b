"""PAPI data: the IPIP-NEO item bank and subjects' answers, loaded from a data dir.

Stage 1 of the pipeline. Everything downstream works on :class:`ItemBank` and
:class:`Subject`; nothing else reads files. PAPI's protocol: the 120 items of the
short IPIP-NEO-120 form are what is known about a person (training items), the
other 180 are held out (test items). An answer of 0 means the person skipped the
item: it is *missing*, recorded in ``Subject.missing`` and never scored.

What a stored value means is the data layer's business alone. PAPI (Johnson's IPIP-NEO
data) stores **keyed scores**: on a reverse-keyed item (``keyed == "-"``) the stored
value is ``6 - response``. Everything downstream asks a :class:`Subject` for its
**responses** (what the person would choose for the item as worded, 1 = Very
Inaccurate ... 5 = Very Accurate); :func:`keyed_score` is the one conversion. A data
dir declares its encoding in ``papi.json`` (``{"encoding": "keyed"}`` or
``"responses"``; PAPI's layout defaults to keyed), and the loader checks the
declaration against the data (:func:`opposite_key_correlation`).

This module reads the files; the pieces live beside it and are re-exported here:
:mod:`pas.core.items` (the bank and its tables), :mod:`pas.core.subjects` (records
parsed and checked into subjects, selection), :mod:`pas.core.encoding` (the declared
and checked encoding).

Data directory resolution: explicit argument, else ``$PAPI_DATA_DIR``, else the
first of ``./papi`` and ``../shared/papi`` that exists (see ``papi_data/README.md``).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from pas.core.encoding import (
    CLEAR_CORRELATION,
    DECLARATION_FILE,
    DEFAULT_ENCODING,
    ENCODINGS,
    MIN_SUBJECTS_FOR_CHECK,
    as_response,
    check_encoding,
    declared_encoding,
    opposite_key_correlation,
)
from pas.core.items import (
    DOMAINS,
    ITEM_COLUMNS,
    N_OPTIONS,
    Item,
    ItemBank,
    PapiDataError,
    items_from_csv,
    items_from_xls,
    keyed_score,
)
from pas.core.subjects import (
    LOOKS_LIKE_ITEM_KEY,
    BadRow,
    Parsed,
    Subject,
    parse_columns,
    parse_rows,
    parse_subjects,
    select_subjects,
)

__all__ = [
    "CLEAR_CORRELATION", "DATA_DIR_ENV", "DECLARATION_FILE", "DEFAULT_DATA_DIRS", "DEFAULT_ENCODING", "DOMAINS",
    "ENCODINGS", "HUB_PREFIX", "ITEM_COLUMNS", "LOOKS_LIKE_ITEM_KEY", "MIN_SUBJECTS_FOR_CHECK", "N_OPTIONS",
    "BadRow", "Item", "ItemBank", "PapiData", "PapiDataError", "Parsed", "Subject", "SubjectSource", "as_response",
    "check_encoding", "declared_encoding", "find_subject_source", "items_from_csv", "items_from_xls", "keyed_score",
    "load_descriptions", "load_items", "load_papi", "load_subjects", "opposite_key_correlation", "parse_columns",
    "parse_rows", "parse_subjects", "read_json_records", "resolve_data_dir", "select_subjects",
]

DEFAULT_DATA_DIRS = ("papi", "../shared/papi")  # tried in order when nothing else is set
DATA_DIR_ENV = "PAPI_DATA_DIR"
HUB_PREFIX = "hf:"  # a people source "hf:<id>" is loaded with datasets.load_dataset (a hub id needs network)


def resolve_data_dir(data_dir: str | os.PathLike[str] | None = None) -> Path:
    """Explicit argument, else ``$PAPI_DATA_DIR`` (empty = unset), else ``./papi`` or ``../shared/papi``.

    The chosen path must be an existing directory.
    """
    env = os.environ.get(DATA_DIR_ENV) or None
    chosen = data_dir if data_dir is not None else env
    if chosen is None:
        found = [Path(d) for d in DEFAULT_DATA_DIRS if Path(d).is_dir()]
        if not found:
            raise PapiDataError(f"no PAPI data directory: pass --data-dir or set {DATA_DIR_ENV} "
                                f"(looked for {', '.join(DEFAULT_DATA_DIRS)})")
        return found[0]
    path = Path(chosen).expanduser()
    how = "argument" if data_dir is not None else f"${DATA_DIR_ENV}"
    if path.exists() and not path.is_dir():
        raise PapiDataError(f"PAPI data directory {str(path)!r} (from {how}) is a file, not a directory; "
                            f"pass the folder that holds items.csv and subjects.json")
    if not path.is_dir():
        raise PapiDataError(
            f"PAPI data directory {str(path)!r} (from {how}) does not exist; pass --data-dir or set {DATA_DIR_ENV}"
        )
    return path


def load_items(data_dir: str | os.PathLike[str] | None = None) -> ItemBank:
    """Load the item bank from ``items.csv`` or PAPI's ``original/IPIP-NEO-ItemKey.xls``."""
    root = resolve_data_dir(data_dir)
    csv_path = root / "items.csv"
    if csv_path.exists():
        return items_from_csv(csv_path)
    for xls in (root / "IPIP-NEO-ItemKey.xls", root / "original" / "IPIP-NEO-ItemKey.xls"):
        if xls.exists():
            return items_from_xls(xls)
    raise PapiDataError(f"no items.csv or IPIP-NEO-ItemKey.xls in {root}")


def load_subjects(
    data_dir: str | os.PathLike[str] | None = None,
    bank: ItemBank | None = None,
    *,
    source: str | os.PathLike[str] | None = None,
    with_descriptions: bool = True,
    encoding: str | None = None,
) -> list[Subject]:
    """Load and validate subjects; their values become responses (see the module docstring).

    ``source`` defaults to ``subjects.json`` (PAPI test-set JSON) in the data dir, else
    every ``*.parquet`` there (the Hugging Face PAPI-300K layout, read with ``datasets``),
    else a ``datasets.save_to_disk`` folder ``subjects/`` (:func:`find_subject_source`). A hub id
    such as ``WestlakeNLP/PAPI-300K`` is passed to ``datasets.load_dataset`` (needs network).
    Everything is read at once; :mod:`pas.population.source` reads the same sources a chunk at a time.
    ``encoding`` (``keyed``/``responses``) overrides the data dir's ``papi.json``.
    Descriptions from ``personality_descriptions.json`` are attached when present.
    """
    root = resolve_data_dir(data_dir)
    bank = bank or load_items(root)
    records, origin = _read_subject_records(root, source)
    subjects = parse_subjects(records, bank, origin, encoding=declared_encoding(root, encoding))
    desc_path = root / "personality_descriptions.json"
    if with_descriptions and desc_path.exists():
        descriptions = load_descriptions(desc_path)
        subjects = [dataclasses.replace(s, description=descriptions.get(s.case)) for s in subjects]
    return subjects


def _read_subject_records(root: Path, source: str | os.PathLike[str] | None) -> tuple[list[Mapping], str]:
    """All records of the people source :func:`find_subject_source` finds, read whole."""
    where = find_subject_source(root, source)
    if where.kind == "json":
        return read_json_records(where.paths[0]), where.origin
    import datasets

    try:
        if where.kind == "hub":
            ds = datasets.load_dataset(where.name, split="train")
        elif where.kind == "parquet":
            ds = datasets.load_dataset("parquet", data_files=[str(p) for p in where.paths], split="train")
        else:
            ds = datasets.load_from_disk(str(where.paths[0]))
            if isinstance(ds, datasets.DatasetDict):
                ds = ds["train"]
    except Exception as e:
        raise PapiDataError(f"{where.origin}: cannot read subjects dataset: {e}") from e
    return list(ds), where.origin


@dataclass(frozen=True)
class SubjectSource:
    """Where a data dir's people are. ``kind``: ``json`` (a JSON list of records), ``parquet`` (``paths``:
    one or more files, read in order), ``disk`` (a ``datasets.save_to_disk`` folder) or ``hub`` (``name``:
    a ``datasets`` hub id, or a dataset folder, for ``datasets.load_dataset``)."""

    kind: str
    paths: tuple[Path, ...] = ()
    name: str = ""

    @property
    def origin(self) -> str:
        """How errors name the source: the file, the folder's parquet files or the hub id."""
        if self.kind == "hub":
            return HUB_PREFIX + self.name
        if len(self.paths) > 1:
            return f"{self.paths[0].parent}/*.parquet ({len(self.paths)} files)"
        return str(self.paths[0])


def find_subject_source(root: Path, source: str | os.PathLike[str] | None = None) -> SubjectSource:
    """Where the people of data dir ``root`` are (the one place that decides; every reader asks it).

    ``source``, when given: ``hf:<id>`` (a hub id such as ``hf:WestlakeNLP/PAPI-300K``, or a local dataset
    folder), a bare hub id that is no local path, a ``.json`` or ``.parquet`` file, a folder of ``*.parquet``
    files, or a ``datasets.save_to_disk`` folder. Otherwise ``subjects.json`` in ``root``, else every
    ``*.parquet`` there (the Hugging Face PAPI-300K layout: one or more files), else a ``subjects/`` folder.
    """
    if source is None:
        return _source_in(root)
    text, path = str(source), Path(source)
    if text.startswith(HUB_PREFIX):
        return SubjectSource("hub", name=text[len(HUB_PREFIX):])
    if not path.exists() and "/" in text and not text.startswith((".", "/")):
        return SubjectSource("hub", name=text)
    if not path.exists():
        raise PapiDataError(f"people source {text!r} does not exist; give a subjects .json or .parquet file, a "
                            f"folder of .parquet files, a datasets folder or {HUB_PREFIX}<hub id>")
    parquet = tuple(sorted(path.glob("*.parquet"))) if path.is_dir() else ()
    if parquet:
        return SubjectSource("parquet", parquet)
    return SubjectSource({".json": "json", ".parquet": "parquet"}.get(path.suffix, "disk"), (path,))


def _source_in(root: Path) -> SubjectSource:
    """A data dir's own people: ``subjects.json``, else every ``*.parquet``, else ``subjects/``."""
    parquet = tuple(sorted(root.glob("*.parquet")))
    if (root / "subjects.json").exists():
        return SubjectSource("json", (root / "subjects.json",))
    if parquet:
        return SubjectSource("parquet", parquet)
    if (root / "subjects").exists():
        return SubjectSource("disk", (root / "subjects",))
    raise PapiDataError(f"no subjects.json, *.parquet or subjects/ dataset folder in {root}")


def read_json_records(path: Path) -> list[Mapping]:
    """A subjects JSON file: one JSON list of objects, read whole (the standard library reads no part of a
    JSON value; JSON is the small-data format, parquet the large one)."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise PapiDataError(f"{path}: cannot read subjects JSON: {e}") from e
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise PapiDataError(f"{path}: expected a JSON list of subject objects")
    return data


def load_descriptions(path: str | os.PathLike[str]) -> dict[str, str]:
    """``personality_descriptions.json``: a list of {case, description}."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise PapiDataError(f"{path}: cannot read descriptions: {e}") from e
    if not isinstance(data, list):
        raise PapiDataError(f"{path}: expected a JSON list of {{case, description}} objects")
    out = {}
    for n, rec in enumerate(data):
        if not isinstance(rec, dict) or "case" not in rec or not isinstance(rec.get("description"), str):
            raise PapiDataError(f"{path}: record {n} needs 'case' and a string 'description'")
        case = str(rec["case"])
        if case in out:
            raise PapiDataError(f"{path}: duplicate description for subject {case!r}")
        out[case] = rec["description"]
    return out


@dataclass(frozen=True)
class PapiData:
    """Items and subjects of one data dir; ``encoding`` is what its stored values were."""

    bank: ItemBank
    subjects: tuple[Subject, ...]
    root: Path
    encoding: str = DEFAULT_ENCODING


def load_papi(data_dir: str | os.PathLike[str] | None = None, *, encoding: str | None = None) -> PapiData:
    """Load the item bank and all subjects of a data dir (responses; see the module docstring)."""
    root = resolve_data_dir(data_dir)
    bank = load_items(root)
    enc = declared_encoding(root, encoding)
    return PapiData(bank, tuple(load_subjects(root, bank, encoding=enc)), root, enc)
