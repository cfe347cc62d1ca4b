"""What a data dir's stored values mean: keyed scores or responses, declared in ``papi.json`` and checked.

PAPI (Johnson's IPIP-NEO data) stores **keyed scores**: on a reverse-keyed item the stored
value is ``6 - response``. A data dir declares its encoding in ``papi.json``
(``{"encoding": "keyed"}`` or ``"responses"``; PAPI's layout defaults to keyed) and the
declaration is checked against the data (:func:`opposite_key_correlation`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pas.core.items import Item, ItemBank, PapiDataError, keyed_score

ENCODINGS = ("keyed", "responses")
DEFAULT_ENCODING = "keyed"  # PAPI and Johnson's IPIP-NEO data store keyed scores
DECLARATION_FILE = "papi.json"
MIN_SUBJECTS_FOR_CHECK = 30  # fewer subjects give too noisy a correlation to check the encoding
CLEAR_CORRELATION = 0.1  # |mean opposite-key correlation| above this is clearly one encoding
CHECK_SAMPLE = 5000  # the check reads the first this many subjects


def _declaration(root: Path) -> dict[str, Any]:
    """A data dir's ``papi.json`` (empty when there is none); a clear error when it cannot be read."""
    path = root / DECLARATION_FILE
    if not path.exists():
        return {}
    try:
        declared = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        declared = e
    if not isinstance(declared, dict):
        raise PapiDataError(f"{path}: cannot read the data declaration (expected {{\"encoding\": "
                            f"\"keyed\" or \"responses\"}}): {declared}")
    return declared


def declared_encoding(root: Path, encoding: str | None = None) -> str:
    """The encoding of a data dir's stored values: ``encoding`` if given, else ``papi.json``, else keyed."""
    if encoding is None:
        encoding = _declaration(root).get("encoding", DEFAULT_ENCODING)
    if encoding not in ENCODINGS:
        raise PapiDataError(f"encoding {encoding!r} of {root}: expected one of {ENCODINGS}")
    return encoding


def declared_synthetic(root: Path) -> bool:
    """Whether a data dir declares its people synthetic (``"synthetic": true`` in ``papi.json``, as ``pas synth``
    writes it): every store and report made from it says so."""
    return bool(_declaration(root).get("synthetic"))


def as_response(item: Item, stored: int, encoding: str) -> int:
    """What the person chose for ``item`` as worded, from the value stored in ``encoding``."""
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
    sample = stored[:CHECK_SAMPLE]
    r = opposite_key_correlation(bank, sample)
    looks = "keyed" if r > CLEAR_CORRELATION else "responses" if r < -CLEAR_CORRELATION else None
    if looks is not None and looks != encoding:
        raise PapiDataError(
            f"{origin}: declared encoding {encoding!r}, but the data look like {looks}: opposite-keyed items of a "
            f"facet correlate {r:+.2f} on average over {len(sample)} subjects (keyed scores give clearly "
            f"positive, responses clearly negative values). Fix: declare the encoding in {DECLARATION_FILE} in the "
            f'data dir, e.g. {{"encoding": "{looks}"}}, or pass --encoding {looks} on the command line '
            f'(encoding="{looks}" to the loader in Python)'
        )
    return r
