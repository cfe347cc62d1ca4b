"""Transfer sets: statements no method is fitted on, to tell a personality from a lookup of the 300 statements.

- **Reworded test statements** (``reworded.csv``, this project's own writing): for 60 of the 180 test
  items (12 a domain, one plus- and one minus-keyed item a facet) a *paraphrase* (same meaning: the
  expected answer is the person's response to the original) and a *negation* (opposite meaning: the
  expected answer is ``6 - response``, :func:`pas.core.items.keyed_score`'s reversal).
- **Another inventory**: Goldberg's IPIP-100 Big-Five factor markers (public domain), read from a data
  directory like PAPI (``--markers-dir``, ``$IPIP100_DATA_DIR``, ``./ipip100`` or ``../shared/ipip100``),
  minus the 54 statements already among the 300. Nobody answered them, so they are scored per domain:
  the model's keyed domain mean against the person's keyed domain mean over their 300 answers.

Transfer statements get ids from :data:`FIRST_TRANSFER_ID` up, so they never collide with the 300.
Nothing here is used to fit anything.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pas.core.items import DOMAINS, N_OPTIONS, Item, ItemBank, PapiDataError, keyed_score
from pas.core.subjects import Subject

REWORDED_FILE = Path(__file__).with_name("reworded.csv")
REWORDED_KINDS = ("paraphrase", "negation")
FIRST_TRANSFER_ID = 10_001  # transfer statements' ids: far from the 300
MARKERS_DIR_ENV = "IPIP100_DATA_DIR"
DEFAULT_MARKERS_DIRS = ("ipip100", "../shared/ipip100")
MARKER_COLUMNS = ("marker", "domain", "keyed", "text", "ipip_neo_item")


@dataclass(frozen=True)
class RewordedSet:
    """Reworded test statements of one kind: ``bank`` holds them (new ids, the original's domain and facet,
    the key flipped for a negation), ``source`` maps each new id to its original item."""

    kind: str
    bank: ItemBank
    source: Mapping[int, int]

    @property
    def ids(self) -> tuple[int, ...]:
        return tuple(it.id for it in self.bank.items)

    @property
    def flips(self) -> bool:
        return self.kind == "negation"

    def expected(self, subject: Subject) -> dict[int, int]:
        """What the person would answer to each statement: their response to the original, reversed for a
        negation; statements whose original they skipped are left out."""
        out = {}
        for new, old in self.source.items():
            if old in subject.responses:
                r = subject.responses[old]
                out[new] = N_OPTIONS + 1 - r if self.flips else r
        return out


@dataclass(frozen=True)
class MarkerSet:
    """The IPIP-100 markers not among the 300 (``bank``: their domains and keys), scored per domain."""

    bank: ItemBank
    source_dir: Path

    @property
    def ids(self) -> tuple[int, ...]:
        return tuple(it.id for it in self.bank.items)

    def domain_scores(self, answers: Mapping[int, float]) -> dict[str, float]:
        """Keyed mean per domain of answers (responses or expected answers) to these statements."""
        return keyed_domain_means(self.bank, answers)


@dataclass(frozen=True)
class TransferSets:
    """Every transfer set a run scores: the reworded sets by kind, and the markers (None: not asked)."""

    reworded: Mapping[str, RewordedSet]
    markers: MarkerSet | None = None

    def banks(self) -> dict[str, ItemBank]:
        out = {kind: s.bank for kind, s in self.reworded.items()}
        if self.markers is not None:
            out["markers"] = self.markers.bank
        return out


def keyed_domain_means(bank: ItemBank, answers: Mapping[int, float]) -> dict[str, float]:
    """Per domain, the mean keyed score of ``answers`` (item -> response or expected answer) on ``bank``'s items;
    NaN for a domain with none."""
    by_id = bank.by_id
    per: dict[str, list[float]] = {d: [] for d in DOMAINS}
    for i, value in answers.items():
        item = by_id[i]
        per[item.domain].append(float(keyed_score(item, value)))
    return {d: float(np.mean(v)) if v else float("nan") for d, v in per.items()}


def load_reworded(bank: ItemBank, path: Path = REWORDED_FILE) -> dict[str, RewordedSet]:
    """The reworded sets of ``bank``'s test items, checked: every original a test item, each text new."""
    rows = _read_csv(path, ("item", "kind", "text"))
    by_id = bank.by_id
    test, known_texts = set(bank.test_ids), {_norm(it.text) for it in bank.items}
    items: dict[str, list[Item]] = {k: [] for k in REWORDED_KINDS}
    source: dict[str, dict[int, int]] = {k: {} for k in REWORDED_KINDS}
    seen: set[str] = set()
    for n, r in enumerate(rows, start=2):
        where = f"{path}: line {n}"
        kind, text = r["kind"].strip(), r["text"].strip()
        original = _int(r["item"], where)
        if kind not in REWORDED_KINDS:
            raise PapiDataError(f"{where}: kind {kind!r}, expected one of {REWORDED_KINDS}")
        if original not in test:
            raise PapiDataError(f"{where}: item {original} is not a test item of this bank; reworded statements "
                                "rephrase the 180 held-out items only")
        if _norm(text) in known_texts or _norm(text) in seen:
            raise PapiDataError(f"{where}: {text!r} repeats a statement; a transfer statement must be new")
        seen.add(_norm(text))
        it = by_id[original]
        new_id = FIRST_TRANSFER_ID + len(rows) * REWORDED_KINDS.index(kind) + len(items[kind])
        keyed = it.keyed if kind == "paraphrase" else ("-" if it.keyed == "+" else "+")
        items[kind].append(Item(new_id, None, it.domain, it.facet, it.facet_name, keyed, text))
        source[kind][new_id] = original
    return {k: RewordedSet(k, ItemBank(tuple(items[k])), source[k]) for k in REWORDED_KINDS if items[k]}


def resolve_markers_dir(markers_dir: str | os.PathLike[str] | None = None) -> Path:
    """Explicit argument, else ``$IPIP100_DATA_DIR``, else ``./ipip100`` or ``../shared/ipip100``; the folder
    must hold ``items.csv``."""
    chosen = markers_dir if markers_dir is not None else (os.environ.get(MARKERS_DIR_ENV) or None)
    if chosen is None:
        found = [Path(d) for d in DEFAULT_MARKERS_DIRS if (Path(d) / "items.csv").is_file()]
        if not found:
            raise PapiDataError(f"no IPIP-100 markers directory: pass --markers-dir or set {MARKERS_DIR_ENV} "
                                f"(looked for {', '.join(DEFAULT_MARKERS_DIRS)})")
        return found[0]
    path = Path(chosen).expanduser()
    if not (path / "items.csv").is_file():
        raise PapiDataError(f"IPIP-100 markers directory {str(path)!r} has no items.csv; pass the folder of the "
                            f"markers (columns {', '.join(MARKER_COLUMNS)})")
    return path


def load_markers(bank: ItemBank, markers_dir: str | os.PathLike[str] | None = None) -> MarkerSet:
    """The IPIP-100 markers that are not among ``bank``'s statements (by ``ipip_neo_item`` and by text)."""
    root = resolve_markers_dir(markers_dir)
    path = root / "items.csv"
    known_texts = {_norm(it.text) for it in bank.items}
    items = []
    for n, r in enumerate(_read_csv(path, MARKER_COLUMNS), start=2):
        where = f"{path}: line {n}"
        marker, domain, keyed, text = _int(r["marker"], where), r["domain"].strip(), r["keyed"].strip(), r["text"]
        if domain not in DOMAINS or keyed not in ("+", "-"):
            raise PapiDataError(f"{where}: domain {domain!r} / keyed {keyed!r}; expected one of {DOMAINS} and + or -")
        if r["ipip_neo_item"].strip() or _norm(text) in known_texts:
            continue  # already among the 300: not a transfer statement
        items.append(Item(FIRST_TRANSFER_ID + 1000 + marker, None, domain, domain, "marker", keyed, text.strip()))
    if not items:
        raise PapiDataError(f"{path}: no marker outside the 300 IPIP-NEO statements")
    return MarkerSet(ItemBank(tuple(items)), root)


def load_transfer(bank: ItemBank, markers_dir: str | os.PathLike[str] | None = None, *,
                  markers: bool = True) -> TransferSets:
    """Every transfer set of ``bank``: the reworded sets, and the markers when ``markers``."""
    return TransferSets(load_reworded(bank), load_markers(bank, markers_dir) if markers else None)


def _norm(text: str) -> str:
    return " ".join(text.lower().strip().rstrip(".!").split())


def _int(value: str, where: str) -> int:
    try:
        return int(str(value).strip())
    except ValueError:
        raise PapiDataError(f"{where}: {value!r} is not an item number") from None


def _read_csv(path: Path, columns: Sequence[str]) -> list[dict[str, str]]:
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise PapiDataError(f"{path}: cannot read: {e}") from e
    if not rows or any(c not in rows[0] for c in columns):
        raise PapiDataError(f"{path}: expected a table with the columns {', '.join(columns)}")
    return rows
