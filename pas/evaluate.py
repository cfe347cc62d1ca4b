"""Alignment scoring (the last pipeline stage): PAPI's metric and its summary over subjects.

Per domain O C E A N: the mean |model answer - subject answer| over the subject's
non-missing test items; composite = sum of the five (0..20, lower is better). The
same numbers are also computed from the expected answer of the 5-way distribution.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from .data import DOMAINS, ItemBank, PapiDataError, Subject


@dataclass
class Prediction:
    """A method's answers to items ``ids``: ``answers`` 1..5, ``expected`` its expected value."""

    ids: tuple[int, ...]
    answers: np.ndarray
    expected: np.ndarray
    probs: np.ndarray | None = None  # [N, 5] over A..E, for LLM methods
    fit_seconds: float = 0.0  # time spent learning from the subject (PAS, DPO), part of the method's seconds
    info: dict = field(default_factory=dict)  # method-specific facts worth reporting (alpha, best epoch, ...)


@dataclass
class SubjectScore:
    case: str
    domains: dict[str, float]
    composite: float
    expected_domains: dict[str, float]
    expected_composite: float
    n_items: int
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)


def score_subject(bank: ItemBank, subject: Subject, pred: Prediction) -> SubjectScore:
    """PAPI's alignment score of one prediction; missing answers are excluded, never scored."""
    by_id = bank.by_id
    err: dict[str, list[float]] = {d: [] for d in DOMAINS}
    err_exp: dict[str, list[float]] = {d: [] for d in DOMAINS}
    for item, ans, exp in zip(pred.ids, pred.answers, pred.expected):
        truth = subject.answers.get(item)
        if truth is None:
            continue
        dom = by_id[item].domain
        err[dom].append(abs(float(ans) - truth))
        err_exp[dom].append(abs(float(exp) - truth))
    empty = [d for d in DOMAINS if not err[d]]
    if empty:
        raise PapiDataError(f"subject {subject.case}: no answered test items in domain(s) {empty}")
    domains = {d: float(np.mean(err[d])) for d in DOMAINS}
    exp_domains = {d: float(np.mean(err_exp[d])) for d in DOMAINS}
    return SubjectScore(
        subject.case, domains, sum(domains.values()), exp_domains, sum(exp_domains.values()),
        n_items=sum(len(v) for v in err.values()),
    )


def mean_ci(values: Sequence[float], level: float = 0.95) -> tuple[float, float, float]:
    """Mean and two-sided t confidence interval (lo, hi); a single value has no interval (nan)."""
    x = np.asarray(values, dtype=np.float64)
    m = float(x.mean())
    if len(x) < 2:
        return m, math.nan, math.nan
    from scipy import stats

    half = float(stats.t.ppf(0.5 + level / 2, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x)))
    return m, m - half, m + half


def summarize(method: str, scores: Sequence[SubjectScore], **extra) -> dict:
    """One method's report: composite and domains averaged over subjects, with 95% CIs."""
    comp, lo, hi = mean_ci([s.composite for s in scores])
    ecomp, elo, ehi = mean_ci([s.expected_composite for s in scores])
    return {
        "method": method,
        "composite": comp,
        "composite_ci": [lo, hi],
        "domains": {d: float(np.mean([s.domains[d] for s in scores])) for d in DOMAINS},
        "expected_composite": ecomp,
        "expected_composite_ci": [elo, ehi],
        "subjects": [s.case for s in scores],
        "seconds": float(sum(s.seconds for s in scores)),
        "letter_mass": (float(np.mean([s.extra["letter_mass"] for s in scores]))
                        if all("letter_mass" in s.extra for s in scores) else None),
        "per_subject": [
            {"case": s.case, "composite": s.composite, "expected_composite": s.expected_composite,
             "domains": s.domains, "seconds": s.seconds, **s.extra}
            for s in scores
        ],
        **extra,
    }


def paired_difference(a: Sequence[float], b: Sequence[float]) -> dict:
    """Mean of a - b over the same subjects with a 95% CI, and a Wilcoxon signed-rank p-value."""
    diff = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    m, lo, hi = mean_ci(diff)
    p = math.nan
    if len(diff) > 1 and np.any(diff != 0):
        from scipy import stats

        p = float(stats.wilcoxon(diff).pvalue)
    return {"mean": m, "ci": [lo, hi], "wilcoxon_p": p}


def format_table(reports: Sequence[dict]) -> str:
    """A markdown table of method reports."""
    head = "| method | composite (95% CI) | " + " | ".join(DOMAINS) + " | expected-answer composite | seconds |"
    rows = [head, "|" + "---|" * (len(DOMAINS) + 4)]
    for r in reports:
        lo, hi = r["composite_ci"]
        ci = f" ({lo:.2f}-{hi:.2f})" if not math.isnan(lo) else ""
        doms = " | ".join(f"{r['domains'][d]:.2f}" for d in DOMAINS)
        rows.append(f"| {r['method']} | {r['composite']:.2f}{ci} | {doms} | {r['expected_composite']:.2f} | {r['seconds']:.1f} |")
    return "\n".join(rows)
