"""Subjects: a person's responses, parsed and checked from raw records (``case`` plus ``i<N>`` values).

A record is refused, naming it (its index and case) and the fix, when its ``case`` is not an
id, when a key looks like an item key but is not ``i<N>`` of an item of the bank (``i007``
would silently stand in for ``i7``), or when an answer is not a whole number 0..5 (0 = missing).
"""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pas.core.encoding import DEFAULT_ENCODING, ENCODINGS, as_response, check_encoding
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


def parse_subjects(records: Sequence[Mapping], bank: ItemBank, origin: str = "<records>", *,
                   encoding: str = DEFAULT_ENCODING) -> list[Subject]:
    """Validate raw records (``case`` plus ``i<N>`` values) into :class:`Subject` objects holding responses.

    ``encoding`` says what the stored values are (``keyed`` scores or ``responses``); with
    enough subjects it is checked against the data (:func:`pas.core.encoding.check_encoding`).
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
        case = _case_of(rec, n, origin)
        if case in seen:
            raise PapiDataError(f"{origin}: duplicate subject id {case!r}")
        seen.add(case)
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
        if not any(i in stored for i in train_ids):
            raise PapiDataError(f"{origin}: subject {case}: no known (IPIP-NEO-120) answers, all missing")
        stored_by_subject.append((case, stored, frozenset(missing)))
    if not stored_by_subject:
        raise PapiDataError(f"{origin}: no subjects")
    check_encoding(bank, [stored for _, stored, _ in stored_by_subject], encoding, origin)
    by_id = bank.by_id
    return [
        Subject(case, {i: as_response(by_id[i], v, encoding) for i, v in stored.items()}, missing, bank=bank)
        for case, stored, missing in stored_by_subject
    ]


def _case_of(rec: Mapping, n: int, origin: str) -> str:
    """The record's subject id as text; null, empty, true/false, NaN or a nested value is no id."""
    if "case" not in rec:
        raise PapiDataError(f"{origin}: record {n} has no 'case' (subject id) field")
    case = rec["case"]
    ok = (isinstance(case, str) and case.strip()) or (
        isinstance(case, numbers.Real) and not isinstance(case, bool) and math.isfinite(case))
    if not ok:
        raise PapiDataError(f"{origin}: record {n} has 'case' {case!r}, which is not a subject id; give every "
                            f"record a unique id (a number or a non-empty string) or remove the record")
    return str(case)


def _item_of(key: object, rec: Mapping, known_ids: set[int], where: str) -> int | None:
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
