"""Reporting: summaries over subjects, paired comparisons, the results tables, the plot, strict JSON.

Everything here reads run records (:class:`pas.eval.record.RunRecord`, made by
:func:`pas.eval.run.run_subject`; a plain record dict is read through
:meth:`RunRecord.from_json`); nothing here is needed while fitting.

Intervals: a summary's 95% intervals are bootstrap percentile intervals (2000 seeded resamples),
clipped to the metric's range 0..20, and only from :data:`MIN_N_FOR_INTERVAL` subjects on: on fewer
people an interval says more than the data do (a t-interval on 3 people reaches below 0).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pas.core.data import DOMAINS
from pas.core.version import machine_info  # noqa: F401  (re-exported: reports import it from here)
from pas.eval.record import RunRecord

YARDSTICK_FLOOR_S = 0.01  # where zero-fit-time methods sit on the log x axis
DEFAULT_REFERENCES = ("always-3", "base")
MIN_N_FOR_INTERVAL = 10  # fewer subjects: no interval is shown
BOOTSTRAP_RESAMPLES = 2000
COMPOSITE_RANGE = (0.0, 20.0)  # the composite (and each of its variants) lies in 0..20

Values = Sequence[float] | np.ndarray
Interval = Callable[[Values], "tuple[float, float, float]"]  # values -> (mean, lo, hi)
Records = Sequence["RunRecord | Mapping[str, Any]"]


def mean_ci(values: Values, level: float = 0.95) -> tuple[float, float, float]:
    """Mean and two-sided t confidence interval (lo, hi); fewer than two values have no interval (nan)."""
    x = np.asarray(values, dtype=np.float64)
    if len(x) == 0:
        return math.nan, math.nan, math.nan
    m = float(x.mean())
    if len(x) < 2:
        return m, math.nan, math.nan
    from scipy import stats

    half = float(stats.t.ppf(0.5 + level / 2, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x)))
    return m, m - half, m + half


def bootstrap_ci(values: Values, *, bounds: tuple[float, float] | None = None, level: float = 0.95,
                 min_n: int = MIN_N_FOR_INTERVAL, resamples: int = BOOTSTRAP_RESAMPLES,
                 seed: int = 0) -> tuple[float, float, float]:
    """Mean and a bootstrap percentile interval of the mean (seeded: the same values give the same interval),
    clipped to ``bounds``; fewer than ``min_n`` values have no interval (nan)."""
    x = np.asarray(values, dtype=np.float64)
    if len(x) == 0:
        return math.nan, math.nan, math.nan
    m = float(x.mean())
    if len(x) < max(min_n, 2):
        return m, math.nan, math.nan
    means = x[np.random.default_rng(seed).integers(0, len(x), size=(resamples, len(x)))].mean(axis=1)
    lo, hi = (float(q) for q in np.quantile(means, [(1 - level) / 2, (1 + level) / 2]))
    if bounds is not None:
        lo, hi = max(lo, bounds[0]), min(hi, bounds[1])
    return m, lo, hi


def composite_ci(values: Values) -> tuple[float, float, float]:
    """The summaries' interval for a mean composite: bootstrap, clipped to 0..20, none below 10 subjects."""
    return bootstrap_ci(values, bounds=COMPOSITE_RANGE)


def difference_ci(values: Values) -> tuple[float, float, float]:
    """The summaries' interval for a mean paired difference: bootstrap (a difference needs no clipping)."""
    return bootstrap_ci(values)


def paired_difference(a: Sequence[float], b: Sequence[float], interval: Interval = mean_ci) -> dict:
    """Mean of a - b over the same subjects with a 95% ``interval`` (summaries use :func:`difference_ci`),
    and a Wilcoxon signed-rank p-value (nan if all equal)."""
    diff = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    m, lo, hi = interval(diff)
    p = math.nan
    if len(diff) > 1 and np.any(diff != 0):
        from scipy import stats

        p = float(stats.wilcoxon(diff).pvalue)
    return {"mean": m, "ci": [lo, hi], "wilcoxon_p": p, "n": int(len(diff))}


def as_records(records: Records) -> list[RunRecord]:
    """Run records, reading any plain record dict (an old record file, a test's hand-made one)."""
    return [r if isinstance(r, RunRecord) else RunRecord.from_json(r) for r in records]


def summarize_method(records: Records) -> dict:
    """One method's records (skipped subjects included) -> means with 95% intervals, seconds, memory."""
    recs = as_records(records)
    done = [r for r in recs if not r.skipped]
    comp, lo, hi = composite_ci([r.composite for r in done])
    exp, elo, ehi = composite_ci([r.expected_composite for r in done])
    pub, plo, phi = composite_ci([r.papi_published for r in done])
    masses = [r.info["letter_mass"] for r in done if "letter_mass" in r.info]
    rev = [r.reversed.composite for r in done if r.reversed is not None]
    rcomp, rlo, rhi = composite_ci(rev) if rev and len(rev) == len(done) else (None, math.nan, math.nan)

    def mean(values: Sequence[float]) -> float:
        return float(np.mean(values)) if done else math.nan

    return {
        "composite": comp, "composite_ci": [lo, hi],
        "domains": {d: mean([r.domains[d] for r in done]) for d in DOMAINS},
        "expected_composite": exp, "expected_composite_ci": [elo, ehi],
        "papi_published": pub, "papi_published_ci": [plo, phi],
        "reversed_composite": rcomp, "reversed_composite_ci": [rlo, rhi],
        "letter_mass": float(np.mean(masses)) if masses and len(masses) == len(done) else None,
        "fit_seconds_per_subject": mean([r.fit_seconds for r in done]),
        "eval_seconds_per_subject": mean([r.eval_seconds for r in done]),
        "seconds": float(sum(r.fit_seconds + r.eval_seconds for r in done)),
        "peak_rss_mb": float(max((r.peak_rss_mb for r in done), default=0.0)),
        "subjects": [r.case for r in done],
        "skipped": [{"case": r.case, "error": r.error} for r in recs if r.skipped],
        "per_subject": [r.to_json() for r in done],
    }


def summarize(records: Mapping[str, Records], references: Sequence[str] = DEFAULT_REFERENCES) -> dict:
    """Per method: :func:`summarize_method`, plus paired differences ``vs_<ref>`` over the subjects both scored."""
    by_method = {method: as_records(recs) for method, recs in records.items()}
    out = {}
    for method, recs in by_method.items():
        entry = summarize_method(recs)
        mine = {r.case: r.composite for r in recs if not r.skipped}
        for ref in references:
            if ref == method or ref not in by_method:
                continue
            theirs = {r.case: r.composite for r in by_method[ref] if not r.skipped}
            shared = [c for c in mine if c in theirs]
            if len(shared) > 1:
                entry[f"vs_{ref}"] = paired_difference([mine[c] for c in shared], [theirs[c] for c in shared],
                                                       difference_ci)
        if entry["reversed_composite"] is not None and "always-3" in by_method:
            entry["reversed_gain_kept"] = reversed_gain_kept(recs, by_method["always-3"])
        out[method] = entry
    return out


def reversed_gain_kept(records: Records, always3: Records) -> float | None:
    """Share of a method's mean gain over always-3 that survives reversed options (1 = all, <0 = worse than always-3).

    None when the method has no gain to keep (its standard composite is not below always-3's).
    """
    a3 = {r.case: r.composite for r in as_records(always3) if not r.skipped}
    shared = [r for r in as_records(records) if not r.skipped and r.reversed is not None and r.case in a3]
    gain = float(np.mean([a3[r.case] - r.composite for r in shared])) if shared else math.nan
    if not shared or gain <= 0:
        return None
    return float(np.mean([a3[r.case] - r.reversed.composite for r in shared if r.reversed is not None])) / gain


def p_text(p: float | None) -> str:
    """A p-value as tables show it (n/a when there is none)."""
    return "n/a" if p is None or math.isnan(p) else f"{p:.2g}"


def _finite(x: float | None) -> bool:
    return x is not None and math.isfinite(x)


def _composite_cell(s: Mapping) -> str:
    if not _finite(s["composite"]):
        return "—"
    lo, hi = s["composite_ci"]
    return f"{s['composite']:.2f}" + (f" ({lo:.2f}–{hi:.2f})" if _finite(lo) else "")


def _difference_cell(vs: Mapping | None, p: bool = True) -> str:
    if vs is None:
        return "—"
    lo, hi = vs["ci"]
    inside = ([f"{lo:+.2f}…{hi:+.2f}"] if _finite(lo) else []) + ([f"p={p_text(vs['wilcoxon_p'])}"] if p else [])
    return f"{vs['mean']:+.2f}" + (f" ({', '.join(inside)})" if inside else "")


def _skipped_notes(summary: Mapping[str, dict]) -> list[str]:
    return [f"- {m}: subject {k['case']} skipped: {k['error']}" for m, s in summary.items() for k in s["skipped"]]


def markdown_table(summary: Mapping[str, dict], references: Sequence[str] = DEFAULT_REFERENCES) -> str:
    """The wide results table: composite with interval, domains, paired Δ vs each reference, published-way
    composite, cost. Intervals appear from :data:`MIN_N_FOR_INTERVAL` subjects on."""
    refs = [r for r in references if r in summary]
    head = (["method", "n", "composite (95% CI)", *DOMAINS]
            + [f"Δ vs {r} (95% CI, Wilcoxon p)" for r in refs]
            + ["reversed options (gain kept)", "papi_published", "letter mass", "fit s/subject", "eval s/subject",
               "peak RSS MB"])
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for method, s in summary.items():
        cells = [method, str(len(s["subjects"])), _composite_cell(s), *(f"{s['domains'][d]:.2f}" for d in DOMAINS)]
        cells += [_difference_cell(s.get(f"vs_{r}")) for r in refs]
        mass, rev, kept = s.get("letter_mass"), s.get("reversed_composite"), s.get("reversed_gain_kept")
        cells.append("—" if rev is None else f"{rev:.2f}" + ("" if kept is None else f" ({kept:.0%})"))
        cells += [f"{s['papi_published']:.2f}", "—" if mass is None else f"{mass:.3f}",
                  f"{s['fit_seconds_per_subject']:.1f}", f"{s['eval_seconds_per_subject']:.1f}",
                  f"{s['peak_rss_mb']:.0f}"]
        rows.append("| " + " | ".join(cells) + " |")
    notes = _skipped_notes(summary)
    return "\n".join(rows + ([""] + notes if notes else []))


def compact_table(summary: Mapping[str, dict], reference: str = "always-3") -> str:
    """The table a newcomer reads: method, composite, Δ vs ``reference``, fit seconds per person, and a legend."""
    ref = reference if reference in summary else None
    head = ["method", "composite"] + ([f"Δ vs {ref}"] if ref else []) + ["fit s/person"]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for method, s in summary.items():
        cells = [method, _composite_cell(s)]
        if ref:
            cells.append(_difference_cell(s.get(f"vs_{ref}"), p=False))
        cells.append("—" if not _finite(s["fit_seconds_per_subject"]) else f"{s['fit_seconds_per_subject']:.1f}")
        rows.append("| " + " | ".join(cells) + " |")
    legend = "lower is better" + (f"; Δ < 0 means better than {ref}" if ref else "")
    fewest = min((len(s["subjects"]) for s in summary.values()), default=0)
    if fewest < MIN_N_FOR_INTERVAL:
        legend += f"; 95% intervals are shown from {MIN_N_FOR_INTERVAL} people on (n too small here)"
    else:
        legend += "; (lo–hi): 95% bootstrap interval"
    notes = _skipped_notes(summary)
    return "\n".join(rows + ["", legend] + notes)


def json_safe(value: Any) -> Any:
    """``value`` with NaN/inf turned into None and numpy scalars into Python numbers (strict JSON)."""
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def dumps(value: Any, **kw: Any) -> str:
    """Strict JSON (no NaN): what every pas JSON output goes through."""
    return json.dumps(json_safe(value), allow_nan=False, **kw)


def plot(summary: Mapping[str, dict], path: Path, title: str, llm_methods: Sequence[str] = ()) -> Path:
    """Composite vs fit seconds per subject (log x), one point per method with its 95% interval (where shown)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    labels: dict[tuple[float, float], list[str]] = {}  # methods drawn at the same place share one label
    for method, r in summary.items():
        if not r["subjects"]:
            continue
        x = max(r["fit_seconds_per_subject"], YARDSTICK_FLOOR_S)
        lo, hi = r["composite_ci"]
        err = None if not _finite(lo) else [[r["composite"] - lo], [hi - r["composite"]]]
        marker = "o" if method in llm_methods else "s"
        ax.errorbar([x], [r["composite"]], yerr=err, fmt=marker, capsize=4, label=method)
        labels.setdefault((round(math.log10(x), 1), round(r["composite"], 2)), []).append(method)
    for n, ((lx, y), names) in enumerate(sorted(labels.items())):
        ax.annotate(" = ".join(names), (10**lx, y), textcoords="offset points", xytext=(6, 4 if n % 2 else -10),
                    fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel(f"fit seconds per subject (log; methods with no fitting drawn at {YARDSTICK_FLOOR_S} s)")
    ax.set_ylabel("alignment composite (sum of 5 domain MAEs, lower is better)")
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
