"""What a run record depended on, so that ``pas eval --out`` never resumes from a record made on other inputs.

A fingerprint is a small JSON object stored in each record:

- ``subject``: digest of the person's answers (responses and skipped items);
- ``items``: digest of the item bank;
- ``population``: digest of the *other* people's answers, for methods that learn from them
  (:attr:`pas.eval.methods.Method.uses_population`);
- ``vector``: sha256 of the ``--vector`` file, for methods that were given one;
- ``settings``: the run's shared settings (model, dtype, threads, prompt, data dir, encoding, version);
- what else the method reads (:attr:`pas.eval.methods.Method.settings`): its fitting config
  (``pas_config``, ``gated_config``, ``dpo_settings``), ``reverse_options`` for LLM methods, a
  description's digest. Nothing else: a yardstick's record survives a change of PAS settings.

:func:`changes` says, in words, why an old record no longer fits.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pas.core.data import ItemBank, Subject
from pas.eval.report import dumps
from pas.eval.transfer import transfer_settings

if TYPE_CHECKING:
    from pas.eval.methods import Method, MethodContext

UNKNOWN = "unknown"  # a dependency whose content could not be digested: it never matches, so it is recomputed
_MISSING = object()
REASONS = {  # top-level digests: what a difference means
    "subject": "the subject's answers changed",
    "items": "the item bank changed",
    "population": "the other subjects' answers changed",
    "vector": "another --vector file (or a vector only one of the times)",
    "description": "the subject's description changed",
}


def digest(value: Any) -> str:
    """sha256 (first 16 hex digits) of ``value``'s canonical JSON."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


def file_digest(path: str | Path) -> str:
    """sha256 of a file's bytes (e.g. a ``--vector`` file)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def subject_digest(subject: Subject) -> str:
    return digest({"case": subject.case, "responses": sorted(subject.responses.items()),
                   "missing": sorted(subject.missing)})


def bank_digest(bank: ItemBank) -> str:
    return bank.fingerprint()


class DataDigests:
    """Digests of the item bank and of each person's answers, each computed once per run."""

    def __init__(self, bank: ItemBank, population: Sequence[Subject]) -> None:
        self.items = bank_digest(bank)
        self._population = population
        self._each: list[tuple[str, str]] | None = None

    def subject(self, subject: Subject) -> str:
        return subject_digest(subject)

    def population(self, subject: Subject) -> str:
        """The other people's answers (everyone in the population but ``subject``'s case)."""
        if self._each is None:
            self._each = [(s.case, subject_digest(s)) for s in self._population]
        return digest([d for case, d in self._each if case != subject.case])


def fingerprint(method: Method, ctx: MethodContext, subject: Subject, digests: DataDigests,
                settings: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """What a record of ``method`` on ``subject`` depends on, as it reads back from JSON."""
    fp: dict[str, Any] = {"subject": digests.subject(subject), "items": digests.items}
    if method.uses_population:
        fp["population"] = digests.population(subject)
    if method.takes_vector and subject.case in ctx.vectors:
        fp["vector"] = ctx.vector_digests.get(subject.case, UNKNOWN)
    if settings:
        fp["settings"] = dict(settings)
    if method.is_llm:
        fp["reverse_options"] = ctx.reverse_options
    if method.is_llm or method.name == "readout":
        fp["transfer"] = transfer_settings(ctx.transfer)
    fp.update(method.settings(ctx, subject))
    return json.loads(dumps(fp))  # tuples become lists, as they read back


def _shown(value: Any) -> str:
    return "(none)" if value is _MISSING or value is None else repr(value)


def differences(had: Mapping[str, Any], now: Mapping[str, Any], keys: Sequence[str] | None = None,
                prefix: str = "") -> list[str]:
    """``"name: there X, now Y"`` for each field that differs (nested objects field by field)."""
    out = []
    for k in keys if keys is not None else sorted(set(had) | set(now)):
        a, b = had.get(k, _MISSING), now.get(k, _MISSING)
        if a == b:
            continue
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            out += differences(a, b, prefix=f"{prefix}{k}.")
        else:
            out.append(f"{prefix}{k}: there {_shown(a)}, now {_shown(b)}")
    return out


def changes(had: Mapping[str, Any] | None, now: Mapping[str, Any]) -> list[str]:
    """Why a record with fingerprint ``had`` cannot stand for one made now (empty: it can)."""
    if had is None:
        return ["the record was made before records kept what they depended on"]
    why = []
    for k in sorted(set(had) | set(now)):
        a, b = had.get(k, _MISSING), now.get(k, _MISSING)
        if a == b and a != UNKNOWN:
            continue
        if k in REASONS and not (isinstance(a, Mapping) or isinstance(b, Mapping)):
            why.append(REASONS[k] if UNKNOWN not in (a, b) else f"{k}: its content is unknown")
        else:
            why += differences({k: a} if a is not _MISSING else {}, {k: b} if b is not _MISSING else {})
    return why
