"""PAPI's alignment metric (the last pipeline stage), and the validation objective built on it.

Per domain O C E A N: the mean |model's answer - person's response| over the person's
non-missing items; composite = sum of the five (0..20, lower is better). Both sides are
on the scale of the item as worded (1 = Very Inaccurate .. 5 = Very Accurate). The same
numbers are also computed from the expected answer of the 5-way distribution.

``papi_published`` is the composite the paper's released code computes: the raw option
value against PAPI's *stored* value, which on reverse-keyed items is the keyed score
``6 - response``. It is reported for comparability with the paper's tables only.

Reporting statistics (confidence intervals, paired tests, tables) live in
:mod:`pas.eval.report`; fitting code needs only this module.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from pas.core.data import DOMAINS, ItemBank, Subject, keyed_score


class UnscorableSubject(ValueError):
    """A method cannot score this subject (e.g. no non-neutral known answers); the message names the subject."""


@dataclass
class Prediction:
    """A method's answers to items ``ids``: ``answers`` 1..5 (option value), ``expected`` its expected value."""

    ids: tuple[int, ...]
    answers: np.ndarray
    expected: np.ndarray
    probs: np.ndarray | None = None  # [N, 5] over A..E, for LLM methods
    fit_seconds: float = 0.0  # time spent learning from the subject (PAS, DPO), part of the method's seconds
    info: dict = field(default_factory=dict)  # method-specific facts worth reporting (alpha, best epoch, ...)
    reversed: Prediction | None = None  # the same method with the options listed in reverse (nothing refitted)
    transfer: dict[str, Prediction] = field(default_factory=dict)  # answers to each transfer set (pas.core.transfer)


@dataclass
class SubjectErrors:
    """The PAPI metric of one prediction against one person: mean absolute errors per domain and their sum
    (``composite``); ``items`` has one record per scored (non-missing) item."""

    case: str
    domains: dict[str, float]
    composite: float
    expected_domains: dict[str, float]
    expected_composite: float
    papi_published: float
    items: list[dict]

    @property
    def n_items(self) -> int:
        return len(self.items)


def _composite(errors: dict[str, list[float]], case: str) -> tuple[dict[str, float], float]:
    empty = [d for d in DOMAINS if not errors[d]]
    if empty:
        raise UnscorableSubject(f"subject {case}: no answered items in domain(s) {empty}")
    domains = {d: float(np.mean(errors[d])) for d in DOMAINS}
    return domains, float(sum(domains.values()))


def subject_errors(bank: ItemBank, subject: Subject, pred: Prediction) -> SubjectErrors:
    """PAPI's alignment score of one prediction against the person's responses; missing items are left out."""
    by_id = bank.by_id
    err: dict[str, list[float]] = {d: [] for d in DOMAINS}
    err_exp: dict[str, list[float]] = {d: [] for d in DOMAINS}
    err_pub: dict[str, list[float]] = {d: [] for d in DOMAINS}
    items = []
    for item_id, ans, exp in zip(pred.ids, pred.answers, pred.expected, strict=False):
        response = subject.responses.get(item_id)
        if response is None:
            continue
        item = by_id[item_id]
        err[item.domain].append(abs(float(ans) - response))
        err_exp[item.domain].append(abs(float(exp) - response))
        err_pub[item.domain].append(abs(float(ans) - keyed_score(item, response)))
        items.append({"item": item_id, "domain": item.domain, "keyed": item.keyed, "response": int(response),
                      "answer": int(ans), "expected": float(exp)})
    domains, composite = _composite(err, subject.case)
    exp_domains, exp_composite = _composite(err_exp, subject.case)
    _, published = _composite(err_pub, subject.case)
    return SubjectErrors(subject.case, domains, composite, exp_domains, exp_composite, published, items)


MIN_LETTER_MASS = 0.5  # below this share of next-token mass on A..E the model is no longer answering


@dataclass(frozen=True)
class Objective:
    """Validation objective: composite of argmax answers, ties broken by the expected-answer composite.

    A model that puts less than :data:`MIN_LETTER_MASS` of its next-token probability on
    the option letters is not answering the questionnaire any more (a strong steering
    offset can do that, and the argmax among five near-zero letters is then noise): such
    a setting ranks after every setting that still answers, whatever its composite.
    """

    composite: float
    expected: float
    letter_mass: float = 1.0

    @property
    def answering(self) -> bool:
        return self.letter_mass >= MIN_LETTER_MASS

    @property
    def key(self) -> tuple[bool, float, float]:
        return (not self.answering, round(self.composite, 9), self.expected)


class Scores(Protocol):
    """What :func:`objective` reads: answers 1..5 and expected answers per item (and ``letter_mass`` where known),
    e.g. an :class:`pas.score.scorer.OptionDistribution` or a readout's point scores."""

    @property
    def answers(self) -> np.ndarray: ...

    @property
    def expected(self) -> np.ndarray: ...


def objective(bank: ItemBank, subject: Subject, ids: Sequence[int], scores: Scores) -> Objective:
    """The one validation objective: ``scores`` (``answers``, ``expected``, optionally ``letter_mass``) on ``ids``.

    PAS's strength search, its learned offsets' early stopping and DPO's epoch choice all
    minimise this on the person's validation items.
    """
    s = subject_errors(bank, subject, Prediction(tuple(ids), scores.answers, scores.expected))
    mass = getattr(scores, "letter_mass", None)
    return Objective(s.composite, s.expected_composite, 1.0 if mass is None else float(np.mean(mass)))
