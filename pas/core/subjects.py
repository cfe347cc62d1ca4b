"""Subjects: a person's responses, parsed and checked from raw records (``case`` plus ``i<N>`` values).

A record is refused, naming it (its index and case) and the fix, when its ``case`` is not an
id, when a key looks like an item key but is not ``i<N>`` of an item of the bank (``i007``
would silently stand in for ``i7``), or when an answer is not a whole number 0..5 (0 = missing).

:func:`parse_subjects` raises the first bad record; :func:`parse_rows` and :func:`parse_columns`
parse one chunk of a larger input and report each bad record as a :class:`BadRow`. All three
share one set of checks: records whose keys and values are plain (known ``i<N>`` keys, ints
0..5) are checked a chunk at a time with numpy, any other record key by key, with the same
result and the same error.
"""

from __future__ import annotations

import math
import numbers
import operator
import re
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from pas.core.encoding import CHECK_SAMPLE, DEFAULT_ENCODING, ENCODINGS, as_response, check_encoding
from pas.core.items import N_OPTIONS, ItemBank, PapiDataError, keyed_score

# what a person may have meant as an item key: "i7", "i007", "I7", "item 7", "i_7" (fullmatch, any case)
LOOKS_LIKE_ITEM_KEY = re.compile(r"\s*(?:item|i)[\s_.\-]*\+?(\d+)\s*", re.IGNORECASE)


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


@dataclass(frozen=True)
class BadRow:
    """A record refused: its ``row`` (0-based position in the whole input), its ``case`` id (None when it has
    none that is an id) and the ``reason`` (the error :func:`parse_subjects` raises for it)."""

    row: int
    case: str | None
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"row": self.row, "case": self.case, "reason": self.reason}


class Parsed(NamedTuple):
    """A chunk of records parsed: its good ``subjects``, its ``bad`` rows (in order) and how many ``rows`` it had."""

    subjects: list[Subject]
    bad: list[BadRow]
    rows: int


def parse_subjects(records: Sequence[Mapping], bank: ItemBank, origin: str = "<records>", *,
                   encoding: str = DEFAULT_ENCODING) -> list[Subject]:
    """Validate raw records (``case`` plus ``i<N>`` values) into :class:`Subject` objects holding responses.

    ``encoding`` says what the stored values are (``keyed`` scores or ``responses``); with
    enough subjects it is checked against the data (:func:`pas.core.encoding.check_encoding`).
    The first bad record is raised; :func:`parse_rows` reports every bad record instead.
    """
    parsed, stored = _parse(_records_table(records, bank), bank, origin, encoding, 0, set())
    if parsed.bad:
        raise PapiDataError(parsed.bad[0].reason)
    if not parsed.subjects:
        raise PapiDataError(f"{origin}: no subjects")
    check_encoding(bank, stored, encoding, origin)
    return parsed.subjects


def parse_rows(records: Sequence[Mapping], bank: ItemBank, origin: str = "<records>", *,
               encoding: str = DEFAULT_ENCODING, first_row: int = 0, seen: set[str] | None = None,
               check: bool = True, build: bool = True) -> Parsed:
    """:func:`parse_subjects` for one chunk of a larger input, a bad record reported (:class:`BadRow`), not raised.

    ``first_row``: the chunk's first row number in the input (errors and bad rows name input rows);
    ``seen``: case ids of earlier chunks (updated), so a duplicate across the input is a bad row.
    ``check``: check the encoding on this chunk's good subjects (raises for the chunk; check one chunk).
    ``build=False`` only checks the records (``subjects`` stays empty): a validation pass, several times faster.
    """
    return _checked(_records_table(records, bank), bank, origin, encoding, first_row, seen, check, build)


def parse_columns(columns: Mapping[str, Sequence[Any]], bank: ItemBank, origin: str = "<records>", *,
                  encoding: str = DEFAULT_ENCODING, first_row: int = 0, seen: set[str] | None = None,
                  check: bool = True, build: bool = True) -> Parsed:
    """:func:`parse_rows` for records given column by column (name -> values, e.g. a parquet batch).

    Integer columns may be numpy arrays (read without Python objects: the fast path); row ``n`` is the
    record ``{name: column[n]}``, with the same checks and errors as :func:`parse_subjects`.
    """
    return _checked(_columns_table(columns, bank, origin), bank, origin, encoding, first_row, seen, check, build)


def _checked(table: _Table, bank: ItemBank, origin: str, encoding: str, first_row: int,
             seen: set[str] | None, check: bool, build: bool) -> Parsed:
    """A chunk parsed, its encoding checked when ``check``."""
    parsed, stored = _parse(table, bank, origin, encoding, first_row, set() if seen is None else seen,
                            sample=CHECK_SAMPLE if check else 0, build=build)
    if check:
        check_encoding(bank, stored, encoding, origin)
    return parsed


@dataclass(frozen=True)
class _Table:
    """Records as the fast path reads them. ``values``: (rows, items of the bank, bank order) stored values (int8);
    ``fast[n]``: record n's keys are all good, every item has a column and its values are ints in 0..5
    (such a record passes every check but its case id's, so only that is checked); ``cases[n]``: its case
    value; ``record(n)``: the record as given, for the full check (:func:`_case_of`, :func:`_answers`)."""

    rows: int
    values: np.ndarray
    fast: np.ndarray
    cases: list[Any]
    record: Callable[[int], Any]


_INT = frozenset({int})  # the one type of answer the fast path takes (bool and numpy ints: the full check)


def _records_table(records: Sequence[Mapping], bank: ItemBank) -> _Table:
    """Records (e.g. a JSON list): those with the same keys share one check of the keys."""
    ids = [it.id for it in bank.items]
    getter = operator.itemgetter(*(f"i{i}" for i in ids))
    good_keys: dict[tuple, bool] = {}
    rows, vals, cases = [], [], [None] * len(records)
    for n, rec in enumerate(records):
        if not isinstance(rec, Mapping):
            continue
        keys = tuple(rec)
        ok = good_keys.get(keys)
        if ok is None:
            ok = good_keys[keys] = _keys_are_good(keys, set(ids))
        if not ok:
            continue
        v = getter(rec)
        if _INT.issuperset(map(type, v)) and min(v) >= 0 and max(v) <= N_OPTIONS:
            rows.append(n)
            vals.append(v)
            cases[n] = rec["case"]
    values = np.zeros((len(records), len(ids)), dtype=np.int8)
    fast = np.zeros(len(records), dtype=bool)
    if rows:
        values[rows] = np.array(vals, dtype=np.int8)
        fast[rows] = True
    return _Table(len(records), values, fast, cases, records.__getitem__)


def _columns_table(columns: Mapping[str, Sequence[Any]], bank: ItemBank, origin: str) -> _Table:
    """Columns: their names checked once; a numpy number column is read whole, any other value by value."""
    lengths = {len(c) for c in columns.values()}
    if len(lengths) != 1:
        raise PapiDataError(f"{origin}: columns of different lengths ({sorted(lengths)}) or no columns")
    (rows,) = lengths
    ids = [it.id for it in bank.items]
    good = _keys_are_good(tuple(columns), set(ids))
    values = np.empty((rows, len(ids)), dtype=np.int8, order="F") if good else np.full((rows, len(ids)), -1, np.int8)
    for j, i in enumerate(ids if good else ()):
        values[:, j] = _column_values(columns[f"i{i}"], rows)
    fast = np.asarray(((values >= 0) & (values <= N_OPTIONS)).all(axis=1))
    cases = [_plain(x) for x in columns["case"]] if good else [None] * rows

    def record(n: int) -> dict[Any, Any]:
        return {k: _plain(c[n]) for k, c in columns.items()}

    return _Table(rows, values, fast, cases, record)


def _column_values(col: Sequence[Any], rows: int) -> np.ndarray:
    """An item column as int8: its answers where they are whole numbers, clipped to -1..6 (outside 0..5: the
    full check of the record names the value); -1 for any value that is not a plain number."""
    if isinstance(col, np.ndarray) and col.dtype.kind == "u":
        return np.minimum(col, N_OPTIONS + 1).astype(np.int8)
    if isinstance(col, np.ndarray) and col.dtype.kind == "i":
        return np.clip(col, -1, N_OPTIONS + 1).astype(np.int8)
    if isinstance(col, np.ndarray) and col.dtype.kind == "f":
        whole = np.isfinite(col) & (np.floor(col) == col)
        return np.where(whole, np.clip(col, -1, N_OPTIONS + 1), -1).astype(np.int8)
    return np.fromiter((x if type(x) is int and 0 <= x <= N_OPTIONS else -1 for x in col), dtype=np.int8, count=rows)


def _plain(x: Any) -> Any:
    """A numpy scalar as the Python value a JSON or dataset record would hold (so errors show ``7``)."""
    return x.item() if isinstance(x, np.generic) else x


def _keys_are_good(keys: tuple, known_ids: set[int]) -> bool:
    """Every key is ``case``, an item of the bank or no item key at all, and every item has one."""
    if "case" not in keys:
        return False
    have = set(keys)
    try:
        items = {_item_of(k, have, known_ids, "") for k in keys}
    except PapiDataError:
        return False
    return known_ids <= items


def _parse(table: _Table, bank: ItemBank, origin: str, encoding: str, first_row: int, seen: set[str], *,
           sample: int = CHECK_SAMPLE, build: bool = True) -> tuple[Parsed, list[dict[int, int]]]:
    """Every record of ``table`` into a subject (``build=False``: only checked) or a bad row; with the stored
    values of the first ``sample`` subjects (for the encoding check)."""
    if encoding not in ENCODINGS:
        raise PapiDataError(f"{origin}: encoding {encoding!r}, expected one of {ENCODINGS}")
    ids = [it.id for it in bank.items]
    train_ids = set(bank.train_ids)
    train = [j for j, i in enumerate(ids) if i in train_ids]
    fast = (table.fast & (table.values[:, train] != 0).any(axis=1)).tolist()  # no known answer: the full check
    responses = _responses(table.values, bank, encoding) if build else None
    template = dict.fromkeys(ids, 0)
    gaps: dict[int, list[int]] = {}  # row -> its missing items (0), found for the whole chunk at once
    for n, j in zip(*(a.tolist() for a in np.nonzero(table.values == 0)), strict=True) if build else ():
        gaps.setdefault(n, []).append(ids[j])
    subjects: list[Subject] = []
    bad: list[BadRow] = []
    stored: list[dict[int, int]] = []
    for n in range(table.rows):
        row, case = first_row + n, None
        try:
            if fast[n]:  # passes every check but the case id's
                case = _case_id(table.cases[n], row, origin)
                _claim(case, seen, origin)
                if responses is not None:
                    subjects.append(_subject(case, template, responses[n].tolist(), gaps.get(n, []), bank))
                if len(stored) < sample:
                    stored.append({i: v for i, v in zip(ids, table.values[n].tolist(), strict=True) if v})
            else:
                rec = table.record(n)
                case = _case_of(rec, row, origin)
                _claim(case, seen, origin)  # before the answers: a bad record's id still counts as taken
                values, missing = _answers(rec, row, case, bank, origin)
                if build:
                    subjects.append(Subject(case, {i: as_response(bank.by_id[i], v, encoding)
                                                   for i, v in values.items()}, missing, bank=bank))
                if len(stored) < sample:
                    stored.append(values)
        except PapiDataError as e:
            bad.append(BadRow(row, case, str(e)))
    return Parsed(subjects, bad, table.rows), stored


def _responses(values: np.ndarray, bank: ItemBank, encoding: str) -> np.ndarray:
    """Stored values (rows, bank items) as responses, 0 staying 0: :func:`as_response` tabled per item and value."""
    table = np.array([[0] + [as_response(it, v, encoding) for v in range(1, N_OPTIONS + 1)] for it in bank.items])
    return table[np.arange(len(bank.items)), np.clip(values, 0, N_OPTIONS)]


def _subject(case: str, template: dict[int, int], responses: list[int], missing: list[int],
             bank: ItemBank) -> Subject:
    """A subject from its responses in bank order and its missing items (whose responses are 0); ``template``
    holds every item in bank order (copying it and filling it in is 2-3 times faster than building a dict)."""
    answered = template.copy()
    answered.update(zip(template, responses, strict=True))
    for i in missing:
        del answered[i]
    return Subject(case, answered, frozenset(missing), bank=bank)


def _claim(case: str, seen: set[str], origin: str) -> None:
    """A case id is taken by the first record that has it; a later one is a duplicate."""
    if case in seen:
        raise PapiDataError(f"{origin}: duplicate subject id {case!r}")
    seen.add(case)


def _answers(rec: Mapping, n: int, case: str, bank: ItemBank, origin: str) -> tuple[dict[int, int], frozenset[int]]:
    """A record's stored values (item -> 1..5) and missing items, every key and value checked."""
    known_ids = set(bank.by_id)
    stored, missing = {}, set()
    for key, value in rec.items():
        item = _item_of(key, rec, known_ids, f"{origin}: record {n} (case {case})")
        if item is None:
            continue
        value = _answer_value(value, origin, case, key)
        if value == 0:
            missing.add(item)
        else:
            stored[item] = value
    absent = known_ids - stored.keys() - missing
    if absent:
        raise PapiDataError(f"{origin}: subject {case}: no column for items {sorted(absent)[:10]}")
    if not any(i in stored for i in bank.train_ids):
        raise PapiDataError(f"{origin}: subject {case}: no known (IPIP-NEO-120) answers, all missing")
    return stored, frozenset(missing)


def _case_of(rec: Any, n: int, origin: str) -> str:
    """The record's subject id as text (see :func:`_case_id`)."""
    if not isinstance(rec, Mapping):
        raise PapiDataError(f"{origin}: record {n} is a {type(rec).__name__}, not an object")
    if "case" not in rec:
        raise PapiDataError(f"{origin}: record {n} has no 'case' (subject id) field")
    return _case_id(rec["case"], n, origin)


def _case_id(case: Any, n: int, origin: str) -> str:
    """A case value as text; null, empty, true/false, NaN or a nested value is no id."""
    ok = (isinstance(case, str) and case.strip()) or (
        isinstance(case, numbers.Real) and not isinstance(case, bool) and math.isfinite(case))
    if not ok:
        raise PapiDataError(f"{origin}: record {n} has 'case' {case!r}, which is not a subject id; give every "
                            f"record a unique id (a number or a non-empty string) or remove the record")
    return str(case)


def _item_of(key: object, rec: Collection, known_ids: set[int], where: str) -> int | None:
    """The item ``key`` holds the answer to; None for a key that is not an item key (``case``, ``age``...)."""
    m = LOOKS_LIKE_ITEM_KEY.fullmatch(key) if isinstance(key, str) else None
    if m is None:
        return None
    item = int(m.group(1))
    canonical = f"i{item}"
    if key == canonical:
        if item not in known_ids:
            raise PapiDataError(f"{where}: unknown item {key!r} (not in the item bank of {len(known_ids)} items); "
                                f"remove the key or use the items.csv the answers belong to")
        return item
    clash = f" (the record also has {canonical!r}: one would silently replace the other)" if canonical in rec else ""
    fix = (f"if it holds item {item}'s answer, rename it {canonical!r}" if item in known_ids
           else f"item {item} is not in the item bank of {len(known_ids)} items: remove the key")
    raise PapiDataError(f"{where}: key {key!r} looks like an item key but is not one; item keys are 'i<N>' "
                        f"(lower-case i, no leading zeros, no spaces){clash}; {fix}")


def _answer_value(value: Any, origin: str, case: str, key: str) -> int:  # a raw JSON or dataset value
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


def select_subjects(subjects: Sequence[Subject], cases: Sequence[str] | None = None,
                    first: int | None = None) -> list[Subject]:
    """Pick subjects by id (in the order given) or the first ``first`` (at least 1; more than there are = all).

    Giving both, unknown ids or a ``first`` below 1 raise :class:`PapiDataError`.
    """
    if cases and first is not None:
        raise PapiDataError(f"give subject ids or a count of first subjects, not both (ids {list(cases)}, "
                            f"first {first})")
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
