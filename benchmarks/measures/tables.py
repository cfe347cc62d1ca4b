"""Tables and figures of the measurement-only benchmarks (``benchmarks/traits.py``, ``keying.py``, ``consistency.py``).

Moved out of the library (:mod:`pas.eval.report` keeps only what ``pas eval`` reports); importable
as ``benchmarks.measures.tables`` from the tests and as ``measures.tables`` from the scripts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from pas.core.data import DOMAINS

# ---------------------------------------------------------------- personality space (benchmarks/traits.py)

def _f(x: float | None, fmt: str = "+.2f") -> str:
    return "—" if x is None else format(x, fmt)


def poles_table(result: Mapping, strengths: Sequence[float]) -> str:
    """Markdown: per pole, on-target shift (intended direction) and mean |off-target| shift per strength,
    perplexity ratio per strength, the chat strength and its shift, and the prompting baseline."""
    from .poles import on_off_target

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
    (:func:`benchmarks.measures.poles.keying_accuracy`)."""
    lines = ["| features | layer | " + " | ".join(DOMAINS) + " |", "|" + "---|" * (len(DOMAINS) + 2)]
    for features, by_layer in accuracy.items():
        for layer, acc in by_layer.items():
            lines.append(f"| {features} | {layer} | " + " | ".join(f"{acc[d]:.2f}" for d in DOMAINS) + " |")
    return "\n".join(lines)


def types_table(result: Mapping) -> str:
    """Markdown: per type, assessed shift of each domain and how many of the four mapped domains moved the
    intended way (steered, and prompted where measured)."""
    prompted = any("prompted" in r for r in result["types"].values())
    head = (["type", "O", "C", "E", "A", "N", "intended sign (steered)"]
            + (["intended sign (prompt)"] if prompted else []))
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
    for ax, (name, m) in zip(axes[0], panels.items(), strict=True):
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
