"""PAPI data: the IPIP-NEO item bank and subjects' answers.

Stage 1 of the pipeline. Everything downstream works on :class:`ItemBank` and
:class:`Subject`; nothing else reads files. PAPI's protocol: the 120 items of the
short IPIP-NEO-120 form are what is known about a person (training items), the
other 180 are held out (test items). An answer of 0 means the person skipped the
item: it is *missing*, recorded in ``Subject.missing`` and never scored.

What a stored value means is this module's business alone. PAPI (Johnson's IPIP-NEO
data) stores **keyed scores**: on a reverse-keyed item (``keyed == "-"``) the stored
value is ``6 - response``. Everything downstream asks a :class:`Subject` for its
**responses** (what the person would choose for the item as worded, 1 = Very
Inaccurate ... 5 = Very Accurate); :func:`keyed_score` is the one conversion. A data
dir declares its encoding in ``papi.json`` (``{"encoding": "keyed"}`` or
``"responses"``; PAPI's layout defaults to keyed), and the loader checks the
declaration against the data (:func:`opposite_key_correlation`).

Data directory resolution: explicit argument, else ``$PAPI_DATA_DIR``, else the
first of ``./papi`` and ``../shared/papi`` that exists (see ``papi_data/README.md``).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

DOMAINS: tuple[str, ...] = ("O", "C", "E", "A", "N")
N_OPTIONS = 5  # 1 Very Inaccurate .. 5 Very Accurate
DEFAULT_DATA_DIRS = ("papi", "../shared/papi")  # tried in order when nothing else is set
DATA_DIR_ENV = "PAPI_DATA_DIR"
ENCODINGS = ("keyed", "responses")
DEFAULT_ENCODING = "keyed"  # PAPI and Johnson's IPIP-NEO data store keyed scores
DECLARATION_FILE = "papi.json"
MIN_SUBJECTS_FOR_CHECK = 30  # fewer subjects give too noisy a correlation to check the encoding
CLEAR_CORRELATION = 0.1  # |mean opposite-key correlation| above this is clearly one encoding


class PapiDataError(ValueError):
    """Malformed PAPI input; the message names the file, subject and item."""


@dataclass(frozen=True)
class Item:
    """One IPIP-NEO item. ``id`` is 1..300; ``ipip120`` its short-form number or None."""

    id: int
    ipip120: int | None
    domain: str
    facet: str
    facet_name: str
    keyed: str
    text: str


@dataclass(frozen=True)
class ItemBank:
    """The inventory: items in id order, and PAPI's train (short form) / test split."""

    items: tuple[Item, ...]

    def __post_init__(self) -> None:
        ids = [it.id for it in self.items]
        if len(set(ids)) != len(ids):
            raise PapiDataError(f"duplicate item ids in item bank: {sorted(i for i in ids if ids.count(i) > 1)[:5]}")

    @property
    def by_id(self) -> dict[int, Item]:
        return {it.id: it for it in self.items}

    @property
    def train_ids(self) -> tuple[int, ...]:
        """The IPIP-NEO-120 items: a subject's known answers."""
        return tuple(it.id for it in self.items if it.ipip120 is not None)

    @property
    def test_ids(self) -> tuple[int, ...]:
        """The other items: held out, predicted by the model."""
        return tuple(it.id for it in self.items if it.ipip120 is None)

    def domains_of(self, ids: Iterable[int]) -> list[str]:
        by_id = self.by_id
        return [by_id[i].domain for i in ids]


def keyed_score(item: Item, value: int) -> int:
    """The one conversion between a response and its keyed score: ``6 - value`` on reverse-keyed items.

    It is its own inverse: a response gives the keyed score and a keyed score gives the response.
    """
    return N_OPTIONS + 1 - value if item.keyed == "-" else value


@dataclass(frozen=True)
class Subject:
    """One person: ``responses`` item -> what they chose for the item as worded (1 Very Inaccurate .. 5 Very Accurate).

    Skipped items are in ``missing``, never in ``responses``. ``bank`` is the item bank the
    subject was loaded with (``align_to_subject`` and the keyed scores use it).
    """

    case: str
    responses: Mapping[int, int]
    missing: frozenset[int] = frozenset()
    description: str | None = field(default=None, compare=False)
    bank: ItemBank | None = field(default=None, compare=False, repr=False)

    def responses_to(self, ids: Iterable[int]) -> dict[int, int]:
        """The subject's responses to ``ids``, missing ones left out."""
        return {i: self.responses[i] for i in ids if i in self.responses}

    def known(self) -> dict[int, int]:
        """Responses to the bank's known (IPIP-NEO-120) items: all a method may learn from."""
        return self.responses_to(self._bank().train_ids)

    def keyed_scores(self, ids: Iterable[int] | None = None) -> dict[int, int]:
        """Keyed scores (reverse-keyed items count 6 - response), as PAPI stores them and as scales are scored."""
        by_id = self._bank().by_id
        ids = self.responses if ids is None else ids
        return {i: keyed_score(by_id[i], self.responses[i]) for i in ids if i in self.responses}

    def _bank(self) -> ItemBank:
        if self.bank is None:
            raise ValueError(f"subject {self.case} carries no item bank; load it with load_papi/load_subjects "
                             "or pass bank= to the function that needs it")
        return self.bank


# ---------------------------------------------------------------- data dir


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """Explicit argument, else ``$PAPI_DATA_DIR`` (empty = unset), else ``./papi`` or ``../shared/papi``.

    The chosen path must be an existing directory.
    """
    env = os.environ.get(DATA_DIR_ENV) or None
    if data_dir is None and env is None:
        found = [Path(d) for d in DEFAULT_DATA_DIRS if Path(d).is_dir()]
        if not found:
            raise PapiDataError(f"no PAPI data directory: pass --data-dir or set {DATA_DIR_ENV} "
                                f"(looked for {', '.join(DEFAULT_DATA_DIRS)})")
        return found[0]
    chosen = data_dir if data_dir is not None else env
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


def declared_encoding(root: Path, encoding: str | None = None) -> str:
    """The encoding of a data dir's stored values: ``encoding`` if given, else ``papi.json``, else keyed."""
    if encoding is None:
        path = root / DECLARATION_FILE
        if path.exists():
            try:
                encoding = json.loads(path.read_text(encoding="utf-8")).get("encoding", DEFAULT_ENCODING)
            except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError) as e:
                raise PapiDataError(f"{path}: cannot read the data declaration (expected {{\"encoding\": "
                                    f"\"keyed\" or \"responses\"}}): {e}") from e
        else:
            encoding = DEFAULT_ENCODING
    if encoding not in ENCODINGS:
        raise PapiDataError(f"encoding {encoding!r} of {root}: expected one of {ENCODINGS}")
    return encoding


# ---------------------------------------------------------------- items


_ITEM_COLUMNS = ("item", "ipip120", "domain", "facet", "facet_name", "keyed", "text")


def load_items(data_dir: str | os.PathLike | None = None) -> ItemBank:
    """Load the item bank from ``items.csv`` or PAPI's ``original/IPIP-NEO-ItemKey.xls``."""
    root = resolve_data_dir(data_dir)
    csv_path = root / "items.csv"
    if csv_path.exists():
        return _items_from_csv(csv_path)
    for xls in (root / "IPIP-NEO-ItemKey.xls", root / "original" / "IPIP-NEO-ItemKey.xls"):
        if xls.exists():
            return _items_from_xls(xls)
    raise PapiDataError(f"no items.csv or IPIP-NEO-ItemKey.xls in {root}")


def _items_from_csv(path: Path) -> ItemBank:
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise PapiDataError(f"{path}: cannot read items table: {e}") from e
    if not rows:
        raise PapiDataError(f"{path}: items table is empty")
    absent = [c for c in _ITEM_COLUMNS if c not in rows[0]]
    if absent:
        raise PapiDataError(f"{path}: missing columns {absent} (need {list(_ITEM_COLUMNS)})")
    items = []
    for n, r in enumerate(rows, start=2):
        where = f"{path}: line {n}"
        items.append(
            _make_item(where, r["item"], r["ipip120"], r["domain"], r["facet"], r["facet_name"], r["keyed"], r["text"])
        )
    return ItemBank(tuple(sorted(items, key=lambda it: it.id)))


def _items_from_xls(path: Path) -> ItemBank:
    import pandas as pd

    try:
        df = pd.read_excel(path)
    except Exception as e:  # xlrd raises many kinds
        raise PapiDataError(f"{path}: cannot read item key spreadsheet: {e}") from e
    need = ["Full#", "Short#", "Sign", "Key", "Facet", "Item"]
    absent = [c for c in need if c not in df.columns]
    if absent:
        raise PapiDataError(f"{path}: missing columns {absent} (need {need})")
    items = []
    for n, r in df.iterrows():
        short = r["Short#"]
        short = "" if (isinstance(short, float) and math.isnan(short)) else str(int(short))
        key = str(r["Key"])
        sign = str(r["Sign"])[:1]
        items.append(_make_item(f"{path}: row {n + 2}", r["Full#"], short, key[:1], key, r["Facet"], sign, r["Item"]))
    return ItemBank(tuple(sorted(items, key=lambda it: it.id)))


def _make_item(where: str, item, ipip120, domain, facet, facet_name, keyed, text) -> Item:
    try:
        item_id = int(item)
        short = int(ipip120) if str(ipip120).strip() not in ("", "nan") else None
    except (TypeError, ValueError) as e:
        raise PapiDataError(f"{where}: item number {item!r} / ipip120 {ipip120!r} is not an integer") from e
    domain = str(domain).strip()
    if domain not in DOMAINS:
        raise PapiDataError(f"{where}: item {item_id} has domain {domain!r}, expected one of {DOMAINS}")
    if str(keyed).strip() not in ("+", "-"):
        raise PapiDataError(f"{where}: item {item_id} has keyed {keyed!r}, expected '+' or '-'")
    if not str(text).strip():
        raise PapiDataError(f"{where}: item {item_id} has no text")
    return Item(item_id, short, domain, str(facet).strip(), str(facet_name).strip(), str(keyed).strip(), str(text).strip())


# ---------------------------------------------------------------- subjects


def load_subjects(
    data_dir: str | os.PathLike | None = None,
    bank: ItemBank | None = None,
    *,
    source: str | os.PathLike | None = None,
    with_descriptions: bool = True,
    encoding: str | None = None,
) -> list[Subject]:
    """Load and validate subjects; their values become responses (see the module docstring).

    ``source`` defaults to ``subjects.json`` (PAPI test-set JSON) in the data dir, else
    any ``*.parquet`` there (the Hugging Face PAPI-300K layout, read with ``datasets``),
    else a ``datasets.save_to_disk`` folder ``subjects/``. A hub id such as
    ``WestlakeNLP/PAPI-300K`` is passed to ``datasets.load_dataset`` (needs network).
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


def _read_subject_records(root: Path, source) -> tuple[list[Mapping], str]:
    if source is not None and not Path(source).exists() and "/" in str(source) and not str(source).startswith((".", "/")):
        import datasets

        ds = datasets.load_dataset(str(source), split="train")
        return list(ds), str(source)
    path = Path(source) if source is not None else None
    if path is None:
        for cand in (root / "subjects.json", *sorted(root.glob("*.parquet")), root / "subjects"):
            if cand.exists():
                path = cand
                break
        else:
            raise PapiDataError(f"no subjects.json, *.parquet or subjects/ dataset folder in {root}")
    if path.suffix == ".json":
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise PapiDataError(f"{path}: cannot read subjects JSON: {e}") from e
        if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
            raise PapiDataError(f"{path}: expected a JSON list of subject objects")
        return data, str(path)
    import datasets

    try:
        if path.suffix == ".parquet":
            ds = datasets.load_dataset("parquet", data_files=str(path), split="train")
        else:
            ds = datasets.load_from_disk(str(path))
            if isinstance(ds, datasets.DatasetDict):
                ds = ds["train"]
    except Exception as e:
        raise PapiDataError(f"{path}: cannot read subjects dataset: {e}") from e
    return list(ds), str(path)


def parse_subjects(records: Sequence[Mapping], bank: ItemBank, origin: str = "<records>", *,
                   encoding: str = DEFAULT_ENCODING) -> list[Subject]:
    """Validate raw records (``case`` plus ``i<N>`` values) into :class:`Subject` objects holding responses.

    ``encoding`` says what the stored values are (``keyed`` scores or ``responses``); with
    enough subjects it is checked against the data (:func:`check_encoding`).
    """
    if encoding not in ENCODINGS:
        raise PapiDataError(f"{origin}: encoding {encoding!r}, expected one of {ENCODINGS}")
    known_ids = set(bank.by_id)
    train_ids = bank.train_ids
    seen: set[str] = set()
    stored_by_subject = []
    for n, rec in enumerate(records):
        if not isinstance(rec, Mapping):
            raise PapiDataError(f"{origin}: record {n} is a {type(rec).__name__}, not an object")
        if "case" not in rec:
            raise PapiDataError(f"{origin}: record {n} has no 'case' (subject id) field")
        case = str(rec["case"])
        if case in seen:
            raise PapiDataError(f"{origin}: duplicate subject id {case!r}")
        seen.add(case)
        stored, missing = {}, set()
        for key, value in rec.items():
            if not (isinstance(key, str) and key[:1] == "i" and key[1:].isdigit()):
                continue
            item = int(key[1:])
            if item not in known_ids:
                raise PapiDataError(f"{origin}: subject {case}: unknown item {key!r} (not in the item bank)")
            value = _answer_value(value, origin, case, key)
            if value == 0:
                missing.add(item)
            else:
                stored[item] = value
        absent = known_ids - stored.keys() - missing
        if absent:
            raise PapiDataError(f"{origin}: subject {case}: no column for items {sorted(absent)[:10]}")
        if not any(i in stored for i in train_ids):
            raise PapiDataError(f"{origin}: subject {case}: no known (IPIP-NEO-120) answers, all missing")
        stored_by_subject.append((case, stored, frozenset(missing)))
    if not stored_by_subject:
        raise PapiDataError(f"{origin}: no subjects")
    check_encoding(bank, [stored for _, stored, _ in stored_by_subject], encoding, origin)
    by_id = bank.by_id
    return [
        Subject(case, {i: _as_response(by_id[i], v, encoding) for i, v in stored.items()}, missing, bank=bank)
        for case, stored, missing in stored_by_subject
    ]


def _as_response(item: Item, stored: int, encoding: str) -> int:
    return keyed_score(item, stored) if encoding == "keyed" else stored


def opposite_key_correlation(bank: ItemBank, stored: Sequence[Mapping[int, int]]) -> float:
    """Mean within-facet correlation of item pairs with opposite keys, over people (missing left out).

    On keyed scores such pairs measure the same thing in the same direction (PAPI: +0.43);
    on responses they point opposite ways, so the mean is clearly negative.
    """
    import numpy as np

    ids = [it.id for it in bank.items]
    col = {i: n for n, i in enumerate(ids)}
    x = np.array([[rec.get(i, np.nan) for i in ids] for rec in stored], dtype=np.float64)
    by_facet: dict[str, list[Item]] = {}
    for it in bank.items:
        by_facet.setdefault(it.facet, []).append(it)
    rs = []
    for items in by_facet.values():
        plus = [col[it.id] for it in items if it.keyed == "+"]
        minus = [col[it.id] for it in items if it.keyed == "-"]
        for a in plus:
            for b in minus:
                ok = ~np.isnan(x[:, a]) & ~np.isnan(x[:, b])
                if ok.sum() < 3 or x[ok, a].std() == 0 or x[ok, b].std() == 0:
                    continue
                rs.append(float(np.corrcoef(x[ok, a], x[ok, b])[0, 1]))
    return float(np.mean(rs)) if rs else math.nan


def check_encoding(bank: ItemBank, stored: Sequence[Mapping[int, int]], encoding: str, origin: str) -> float | None:
    """Fail if the data contradict the declared encoding; returns the correlation (None: too few subjects)."""
    if len(stored) < MIN_SUBJECTS_FOR_CHECK:
        return None
    r = opposite_key_correlation(bank, stored[:5000])
    looks = "keyed" if r > CLEAR_CORRELATION else "responses" if r < -CLEAR_CORRELATION else None
    if looks is not None and looks != encoding:
        raise PapiDataError(
            f"{origin}: declared encoding {encoding!r}, but the data look like {looks}: opposite-keyed items of a "
            f"facet correlate {r:+.2f} on average over {min(len(stored), 5000)} subjects (keyed scores give clearly "
            f"positive, responses clearly negative values). Fix: declare the encoding in {DECLARATION_FILE} in the "
            f'data dir, e.g. {{"encoding": "{looks}"}}, or pass encoding="{looks}" to the loader'
        )
    return r


def _answer_value(value, origin: str, case: str, key: str) -> int:
    """A stored value: a whole number 0..5 (0 = missing). Numeric strings such as "4" count as numbers."""
    where = f"{origin}: subject {case}: item {key}: answer {value!r}"
    if isinstance(value, bool) or value is None:
        raise PapiDataError(f"{where} is not an integer 0..5")
    try:
        as_float = float(value)
    except (TypeError, ValueError):
        raise PapiDataError(f"{where} is not an integer 0..5") from None
    if not math.isfinite(as_float) or not as_float.is_integer():
        raise PapiDataError(f"{where} is not a whole number (answers are integers 0..5, 0 = missing)")
    if not 0 <= as_float <= N_OPTIONS:
        raise PapiDataError(f"{where} is outside 0..5")
    return int(as_float)


def load_descriptions(path: str | os.PathLike) -> dict[str, str]:
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


def select_subjects(subjects: Sequence[Subject], cases: Sequence[str] | None = None,
                    first: int | None = None) -> list[Subject]:
    """Pick subjects by id (in the order given) or the first ``first`` (at least 1; more than there are = all).

    Giving both, unknown ids or a ``first`` below 1 raise :class:`PapiDataError`.
    """
    if cases and first is not None:
        raise PapiDataError(f"give subject ids or a count of first subjects, not both (ids {list(cases)}, first {first})")
    if cases:
        by_case = {s.case: s for s in subjects}
        unknown = [c for c in cases if str(c) not in by_case]
        if unknown:
            raise PapiDataError(f"unknown subject ids {unknown}; e.g. {[s.case for s in subjects[:5]]}")
        return [by_case[str(c)] for c in cases]
    if first is None:
        return list(subjects)
    if isinstance(first, bool) or not isinstance(first, int) or first < 1:
        raise PapiDataError(f"the number of first subjects must be a whole number >= 1, got {first!r}")
    return list(subjects[:first])


@dataclass(frozen=True)
class PapiData:
    """Items and subjects of one data dir; ``encoding`` is what its stored values were."""

    bank: ItemBank
    subjects: tuple[Subject, ...]
    root: Path
    encoding: str = DEFAULT_ENCODING


def load_papi(data_dir: str | os.PathLike | None = None, *, encoding: str | None = None) -> PapiData:
    """Load the item bank and all subjects of a data dir (responses; see the module docstring)."""
    root = resolve_data_dir(data_dir)
    bank = load_items(root)
    enc = declared_encoding(root, encoding)
    return PapiData(bank, tuple(load_subjects(root, bank, encoding=enc)), root, enc)
