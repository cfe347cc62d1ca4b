"""The IPIP-NEO item bank: :class:`Item`, :class:`ItemBank`, the one keyed-score conversion, the item tables.

PAPI's protocol: the 120 items of the short IPIP-NEO-120 form are what is known about a
person (training items), the other 180 are held out (test items). The tables are read
from ``items.csv`` or PAPI's ``IPIP-NEO-ItemKey.xls`` (:func:`pas.core.data.load_items`
finds them in a data dir).
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

DOMAINS: tuple[str, ...] = ("O", "C", "E", "A", "N")
N_OPTIONS = 5  # 1 Very Inaccurate .. 5 Very Accurate
ITEM_COLUMNS = ("item", "ipip120", "domain", "facet", "facet_name", "keyed", "text")


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

    def fingerprint(self) -> str:
        """sha256 (first 16 hex digits) of every item's fields: which inventory, worded how, keyed how."""
        blob = json.dumps([dataclasses.astuple(item) for item in self.items], sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def domains_of(self, ids: Iterable[int]) -> list[str]:
        by_id = self.by_id
        return [by_id[i].domain for i in ids]


AnswerValue = TypeVar("AnswerValue", int, float)  # a response (int) or an expected answer (float)


def keyed_score(item: Item, value: AnswerValue) -> AnswerValue:
    """The one conversion between a response and its keyed score: ``6 - value`` on reverse-keyed items.

    It is its own inverse: a response gives the keyed score and a keyed score gives the response.
    """
    return N_OPTIONS + 1 - value if item.keyed == "-" else value


def items_from_csv(path: Path) -> ItemBank:
    """The bank from an ``items.csv`` with the columns :data:`ITEM_COLUMNS`."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise PapiDataError(f"{path}: cannot read items table: {e}") from e
    if not rows:
        raise PapiDataError(f"{path}: items table is empty")
    absent = [c for c in ITEM_COLUMNS if c not in rows[0]]
    if absent:
        raise PapiDataError(f"{path}: missing columns {absent} (need {list(ITEM_COLUMNS)})")
    items = []
    for n, r in enumerate(rows, start=2):
        where = f"{path}: line {n}"
        items.append(
            _make_item(where, r["item"], r["ipip120"], r["domain"], r["facet"], r["facet_name"], r["keyed"], r["text"])
        )
    return ItemBank(tuple(sorted(items, key=lambda it: it.id)))


def items_from_xls(path: Path) -> ItemBank:
    """The bank from PAPI's item key spreadsheet ``IPIP-NEO-ItemKey.xls``."""
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


def _make_item(where: str, item: Any, ipip120: Any, domain: Any, facet: Any, facet_name: Any, keyed: Any,
               text: Any) -> Item:  # raw cells: text from the CSV, numbers or NaN from the spreadsheet
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
    return Item(item_id, short, domain, str(facet).strip(), str(facet_name).strip(), str(keyed).strip(),
                str(text).strip())
