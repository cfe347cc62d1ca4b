"""Reporting: summaries over subjects, paired comparisons, the one results table, the plot, strict JSON.

Everything here reads *records* (one dict per method and subject, made by
:func:`pas.eval.run.run_subject`); nothing here is needed while fitting.
"""

from __future__ import annotations

import json
import math
import os
import platform
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from pas.core.data import DOMAINS

YARDSTICK_FLOOR_S = 0.01  # where zero-fit-time methods sit on the log x axis
DEFAULT_REFERENCES = ("always-3", "base")


def mean_ci(values: Sequence[float], level: float = 0.95) -> tuple[float, float, float]:
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


def paired_difference(a: Sequence[float], b: Sequence[float]) -> dict:
    """Mean of a - b over the same subjects with a 95% CI, and a Wilcoxon signed-rank p-value (nan if all equal)."""
    diff = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    m, lo, hi = mean_ci(diff)
    p = math.nan
    if len(diff) > 1 and np.any(diff != 0):
        from scipy import stats

        p = float(stats.wilcoxon(diff).pvalue)
    return {"mean": m, "ci": [lo, hi], "wilcoxon_p": p, "n": int(len(diff))}


def summarize_method(records: Sequence[dict]) -> dict:
    """One method's records (skipped subjects included) -> means with 95% CIs, seconds, memory."""
    done = [r for r in records if "error" not in r]
    comp, lo, hi = mean_ci([r["composite"] for r in done])
    exp, elo, ehi = mean_ci([r["expected_composite"] for r in done])
    pub, plo, phi = mean_ci([r["papi_published"] for r in done])
    masses = [r["info"]["letter_mass"] for r in done if "letter_mass" in r.get("info", {})]
    rev = [r["reversed"]["composite"] for r in done if "reversed" in r]
    rcomp, rlo, rhi = mean_ci(rev) if rev and len(rev) == len(done) else (None, math.nan, math.nan)

    def mean(key: str) -> float:
        return float(np.mean([r[key] for r in done])) if done else math.nan

    return {
        "composite": comp, "composite_ci": [lo, hi],
        "domains": {d: float(np.mean([r["domains"][d] for r in done])) if done else math.nan for d in DOMAINS},
        "expected_composite": exp, "expected_composite_ci": [elo, ehi],
        "papi_published": pub, "papi_published_ci": [plo, phi],
        "reversed_composite": rcomp, "reversed_composite_ci": [rlo, rhi],
        "letter_mass": float(np.mean(masses)) if masses and len(masses) == len(done) else None,
        "fit_seconds_per_subject": mean("fit_seconds"), "eval_seconds_per_subject": mean("eval_seconds"),
        "seconds": float(sum(r["fit_seconds"] + r["eval_seconds"] for r in done)),
        "peak_rss_mb": float(max((r.get("peak_rss_mb", 0.0) for r in done), default=0.0)),
        "subjects": [r["case"] for r in done],
        "skipped": [{"case": r["case"], "error": r["error"]} for r in records if "error" in r],
        "per_subject": list(done),
    }


def summarize(records: Mapping[str, Sequence[dict]], references: Sequence[str] = DEFAULT_REFERENCES) -> dict:
    """Per method: :func:`summarize_method`, plus paired differences ``vs_<ref>`` over the subjects both scored."""
    out = {}
    for method, recs in records.items():
        entry = summarize_method(recs)
        mine = {r["case"]: r["composite"] for r in recs if "error" not in r}
        for ref in references:
            if ref == method or ref not in records:
                continue
            theirs = {r["case"]: r["composite"] for r in records[ref] if "error" not in r}
            shared = [c for c in mine if c in theirs]
            if len(shared) > 1:
                entry[f"vs_{ref}"] = paired_difference([mine[c] for c in shared], [theirs[c] for c in shared])
        if entry["reversed_composite"] is not None and "always-3" in records:
            entry["reversed_gain_kept"] = reversed_gain_kept(recs, records["always-3"])
        out[method] = entry
    return out


def reversed_gain_kept(records: Sequence[dict], always3: Sequence[dict]) -> float | None:
    """Share of a method's mean gain over always-3 that survives reversed options (1 = all, <0 = worse than always-3).

    None when the method has no gain to keep (its standard composite is not below always-3's).
    """
    a3 = {r["case"]: r["composite"] for r in always3 if "error" not in r}
    shared = [r for r in records if "error" not in r and "reversed" in r and r["case"] in a3]
    gain = float(np.mean([a3[r["case"]] - r["composite"] for r in shared])) if shared else math.nan
    if not shared or gain <= 0:
        return None
    return float(np.mean([a3[r["case"]] - r["reversed"]["composite"] for r in shared])) / gain


def _p(p: float) -> str:
    return "n/a" if p is None or math.isnan(p) else f"{p:.2g}"


def markdown_table(summary: Mapping[str, dict], references: Sequence[str] = DEFAULT_REFERENCES) -> str:
    """The one results table: composite with CI, domains, paired Δ vs each reference, published-way composite, cost."""
    refs = [r for r in references if r in summary]
    head = (["method", "n", "composite (95% CI)", *DOMAINS]
            + [f"Δ vs {r} (95% CI, Wilcoxon p)" for r in refs]
            + ["reversed options (gain kept)", "papi_published", "letter mass", "fit s/subject", "eval s/subject",
               "peak RSS MB"])
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for method, s in summary.items():
        lo, hi = s["composite_ci"]
        ci = f" ({lo:.2f}–{hi:.2f})" if not math.isnan(lo) else ""
        cells = [method, str(len(s["subjects"])), f"{s['composite']:.2f}{ci}",
                 *(f"{s['domains'][d]:.2f}" for d in DOMAINS)]
        for r in refs:
            vs = s.get(f"vs_{r}")
            cells.append("—" if vs is None else
                         f"{vs['mean']:+.2f} ({vs['ci'][0]:+.2f}…{vs['ci'][1]:+.2f}, p={_p(vs['wilcoxon_p'])})")
        mass, rev, kept = s.get("letter_mass"), s.get("reversed_composite"), s.get("reversed_gain_kept")
        cells.append("—" if rev is None else f"{rev:.2f}" + ("" if kept is None else f" ({kept:.0%})"))
        cells += [f"{s['papi_published']:.2f}", "—" if mass is None else f"{mass:.3f}",
                  f"{s['fit_seconds_per_subject']:.1f}", f"{s['eval_seconds_per_subject']:.1f}",
                  f"{s['peak_rss_mb']:.0f}"]
        rows.append("| " + " | ".join(cells) + " |")
    notes = [f"- {m}: subject {k['case']} skipped: {k['error']}" for m, s in summary.items() for k in s["skipped"]]
    return "\n".join(rows + ([""] + notes if notes else []))


def json_safe(value):
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


def dumps(value, **kw) -> str:
    """Strict JSON (no NaN): what every pas JSON output goes through."""
    return json.dumps(json_safe(value), allow_nan=False, **kw)


def machine_info() -> dict:
    import torch

    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def plot(summary: Mapping[str, dict], path: Path, title: str, llm_methods: Sequence[str] = ()) -> Path:
    """Composite vs fit seconds per subject (log x), one point per method with its 95% CI."""
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
        err = None if math.isnan(lo) else [[r["composite"] - lo], [hi - r["composite"]]]
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


# ---------------------------------------------------------------- personality space (benchmarks/traits.py)

def _f(x: float | None, fmt: str = "+.2f") -> str:
    return "—" if x is None else format(x, fmt)


def poles_table(result: Mapping, strengths: Sequence[float]) -> str:
    """Markdown: per pole, on-target shift (intended direction) and mean |off-target| shift per strength,
    perplexity ratio per strength, the chat strength and its shift, and the prompting baseline."""
    from pas.space.poles import on_off_target

    head = (["pole"] + [f"on / off @ {s:g}" for s in strengths] + [f"ppl @ {s:g}" for s in strengths]
            + ["chat strength: on / off", "prompt: on / off", "steering > prompt"])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for pole, row in result["poles"].items():
        cells = [pole]
        for s in strengths:
            on, off = on_off_target(row["strengths"][s]["shift"], pole)
            cells.append(f"{on:+.2f} / {off:.2f}")
        cells += [_f(row["strengths"][s]["perplexity"], ".3g") + "×" for s in strengths]
        if "chat" in row:
            on, off = on_off_target(row["chat"]["shift"], pole)
            cells.append(f"{row['chat']['strength']:g}: {on:+.2f} / {off:.2f}")
        else:
            cells.append("—")
        if "prompted" in row:
            on_p, off_p = on_off_target(row["prompted"], pole)
            best = max(on_off_target(row["strengths"][s]["shift"], pole)[0] for s in strengths)
            cells += [f"{on_p:+.2f} / {off_p:.2f}", "yes" if best > on_p else "no"]
        else:
            cells += ["—", "—"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def keying_table(accuracy: Mapping[str, Mapping[int, Mapping[str, float]]]) -> str:
    """Markdown: per feature set and layer, each domain's held-out keying accuracy
    (:func:`pas.space.poles.keying_accuracy`)."""
    from pas.core.data import DOMAINS

    lines = ["| features | layer | " + " | ".join(DOMAINS) + " |", "|" + "---|" * (len(DOMAINS) + 2)]
    for features, by_layer in accuracy.items():
        for layer, acc in by_layer.items():
            lines.append(f"| {features} | {layer} | " + " | ".join(f"{acc[d]:.2f}" for d in DOMAINS) + " |")
    return "\n".join(lines)


def types_table(result: Mapping) -> str:
    """Markdown: per type, assessed shift of each domain and how many of the four mapped domains moved the
    intended way (steered, and prompted where measured)."""
    prompted = any("prompted" in r for r in result["types"].values())
    head = ["type", "O", "C", "E", "A", "N", "intended sign (steered)"] + (["intended sign (prompt)"] if prompted else [])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for mbti, r in result["types"].items():
        cells = [mbti] + [f"{r['shift'][d]:+.2f}" for d in "OCEAN"] + [f"{sum(r['signs'].values())}/4"]
        if prompted:
            cells.append(f"{sum(r['prompted_signs'].values())}/4")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def heatmap(panels: Mapping[str, np.ndarray], rows: Sequence[str], cols: Sequence[str], path: Path,
            title: str) -> Path:
    """Side-by-side heatmaps (rows x cols, shared colour scale centred at 0), e.g. pole x assessed domain shift."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    vmax = max(float(np.nanmax(np.abs(m))) for m in panels.values()) or 1.0
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels) + 1, 4.6), squeeze=False)
    for ax, (name, m) in zip(axes[0], panels.items()):
        im = ax.imshow(m, cmap="RdBu_r", vmin=-vmax, vmax=vmax)
        ax.set_xticks(range(len(cols)), cols)
        ax.set_yticks(range(len(rows)), rows)
        ax.set_title(name, fontsize=9)
        for i in range(m.shape[0]):
            for j in range(m.shape[1]):
                ax.text(j, i, f"{m[i, j]:+.1f}", ha="center", va="center", fontsize=7)
    fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8, label="assessed domain shift from base (1..5 scale)")
    fig.suptitle(title, fontsize=10)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


# ---------------------------------------------------------------- consistency (benchmarks/consistency.py)

def consistency_tables(stability: Mapping, pushed: Mapping, grown: Mapping) -> str:
    """Markdown: template stability per vector, movement under induction (vector vs prompt), development."""
    from pas.space.poles import parse_pole

    style = next(k for k in next(iter(stability.values())) if k not in ("papi", "difference"))
    lines = [f"Template stability ({style} wording − PAPI wording, domain scores):", "",
             "| vector | O | C | E | A | N | max abs |", "|---|---|---|---|---|---|---|"]
    for name, r in stability.items():
        diff = r["difference"]
        lines.append(f"| {name} | " + " | ".join(f"{diff[d]:+.2f}" for d in DOMAINS)
                     + f" | {max(abs(v) for v in diff.values()):.2f} |")
    lines += ["", "Induction (an opposing user turn before every item): the pole's own domain shift from the "
                  "unsteered model, without → with pressure, and how far it moved:", "",
              "| pole | vector: shift → under pressure (moved) | prompt: shift → under pressure (moved) "
              "| vector moved < half the prompt's |", "|---|---|---|---|"]
    for pole, r in pushed.items():
        d, sign = parse_pole(pole)
        cells = []
        for how in ("vector", "prompt"):
            if how in r:
                x = r[how]
                cells.append(f"{sign * x['shift'][d]:+.2f} → {sign * x['shift_under_pressure'][d]:+.2f} "
                             f"({sign * x['moved'][d]:+.2f})")
            else:
                cells.append("—")
        verdict = "—"
        if "prompt" in r:
            verdict = "yes" if abs(r["vector"]["moved"][d]) < abs(r["prompt"]["moved"][d]) / 2 else "no"
        lines.append(f"| {pole} | {cells[0]} | {cells[1]} | {verdict} |")
    lines += ["", f"Development (person + f · {grown['pole']}, domain scores):", "",
              "| f | O | C | E | A | N |", "|---|---|---|---|---|---|"]
    for f, dom in grown["domains"].items():
        lines.append(f"| {f:g} | " + " | ".join(f"{dom[d]:.2f}" for d in DOMAINS) + " |")
    return "\n".join(lines)


def induction_plot(pushed: Mapping, path: Path) -> Path:
    """Bars: per pole, how far its own domain moved under an opposing user turn, vector vs system prompt."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pas.space.poles import parse_pole

    poles = list(pushed)
    x = np.arange(len(poles))
    fig, ax = plt.subplots(figsize=(9, 4))
    for k, how in enumerate(("vector", "prompt")):
        vals = [parse_pole(p)[1] * pushed[p][how]["moved"][parse_pole(p)[0]] if how in pushed[p] else np.nan
                for p in poles]
        ax.bar(x + (k - 0.5) * 0.38, vals, 0.38, label=f"{how} (shift under pressure − shift without)")
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xticks(x, poles)
    ax.set_ylabel("own-domain movement (intended direction, 1..5 scale)")
    ax.set_title("Resistance to induction: 'Actually, you are …' (the opposite pole) before every item", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
