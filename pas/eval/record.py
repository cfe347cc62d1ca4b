"""The run record: one method on one subject, written and read by the same class.

A :class:`RunRecord` is what :func:`pas.eval.run.run_subject` makes, what ``pas eval --out``
keeps as ``OUT/per_subject/<method>/<case>.json`` and what :mod:`pas.eval.report` summarises.
Its JSON keys are the ones records had before this class existed, so old record folders and
``--json`` outputs stay readable; ``fingerprint`` (what the record depended on, see
:mod:`pas.eval.fingerprint`) was added and is absent from records made before it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


def _f(value: Any) -> float:
    """A stored number; None (how strict JSON writes NaN) reads back as NaN."""
    return math.nan if value is None else float(value)


@dataclass
class Reversed:
    """The same method scored with the options listed in reverse (nothing refitted)."""

    composite: float
    domains: dict[str, float] = field(default_factory=dict)
    expected_composite: float = math.nan
    letter_mass: float | None = None
    answers: list[int] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"composite": self.composite, "domains": self.domains, "expected_composite": self.expected_composite,
                "letter_mass": self.letter_mass, "answers": self.answers}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Reversed:
        return cls(_f(d["composite"]), dict(d.get("domains") or {}), _f(d.get("expected_composite")),
                   d.get("letter_mass"), list(d.get("answers") or []))


@dataclass
class RunRecord:
    """One method's result on one subject. A subject the method could not score has ``error`` set and no
    scores (:attr:`skipped`). ``items``: one dict per scored item (see :class:`pas.score.metric.SubjectErrors`);
    ``info``: facts the method reports (strength, best epoch, letter mass...)."""

    case: str
    composite: float = math.nan
    domains: dict[str, float] = field(default_factory=dict)
    expected_composite: float = math.nan
    expected_domains: dict[str, float] = field(default_factory=dict)
    papi_published: float = math.nan
    n_items: int = 0
    fit_seconds: float = 0.0
    eval_seconds: float = 0.0
    peak_rss_mb: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)
    items: list[dict[str, Any]] = field(default_factory=list)
    reversed: Reversed | None = None
    transfer: dict[str, Any] = field(default_factory=dict)  # pas.eval.transfer.transfer_results
    error: str | None = None
    fingerprint: Mapping[str, Any] | None = None  # what the record depended on (pas.eval.fingerprint)

    @property
    def skipped(self) -> bool:
        return self.error is not None

    def to_json(self) -> dict[str, Any]:
        """The record as a JSON object (the keys records have always had, ``fingerprint`` added)."""
        if self.skipped:
            d: dict[str, Any] = {"case": self.case, "error": self.error}
        else:
            d = {"case": self.case, "composite": self.composite, "domains": self.domains,
                 "expected_composite": self.expected_composite, "expected_domains": self.expected_domains,
                 "papi_published": self.papi_published, "n_items": self.n_items, "fit_seconds": self.fit_seconds,
                 "eval_seconds": self.eval_seconds, "peak_rss_mb": self.peak_rss_mb, "info": self.info,
                 "items": self.items}
            if self.reversed is not None:
                d["reversed"] = self.reversed.to_json()
            if self.transfer:
                d["transfer"] = self.transfer
        if self.fingerprint is not None:
            d["fingerprint"] = self.fingerprint
        return d

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> RunRecord:
        """A record from :meth:`to_json`'s object (or an older record, which may lack the optional keys).

        Raises ``KeyError``/``TypeError``/``ValueError`` when a required key is missing or malformed.
        """
        if not isinstance(d, Mapping):
            raise TypeError(f"a record is a JSON object, not {type(d).__name__}")
        fingerprint = d.get("fingerprint")
        if fingerprint is not None and not isinstance(fingerprint, Mapping):
            raise TypeError("fingerprint is not an object")
        if "error" in d:
            return cls(str(d["case"]), error=str(d["error"]), fingerprint=fingerprint)
        items = list(d.get("items") or [])
        rev = d.get("reversed")
        return cls(case=str(d["case"]), composite=_f(d["composite"]), domains=dict(d["domains"]),
                   expected_composite=_f(d["expected_composite"]),
                   expected_domains=dict(d.get("expected_domains") or {}),
                   papi_published=_f(d["papi_published"]), n_items=int(d.get("n_items", len(items))),
                   fit_seconds=_f(d["fit_seconds"]), eval_seconds=_f(d["eval_seconds"]),
                   peak_rss_mb=_f(d.get("peak_rss_mb", 0.0)), info=dict(d.get("info") or {}), items=items,
                   reversed=None if rev is None else Reversed.from_json(rev), transfer=dict(d.get("transfer") or {}),
                   fingerprint=fingerprint)
