"""Side-by-side comparison of methods (PAS vs DPO and the rest), resumable, with a table and a plot.

Every method runs on the same subjects, model, dtype and thread count in one process,
through the same scorer. Per subject and method the result is written to
``OUT/per_subject/<method>/<case>.json`` as soon as it exists, so an interrupted run
resumes where it stopped.
"""

from __future__ import annotations

import json
import math
import os
import platform
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .data import DOMAINS, PapiData, Subject
from .evaluate import mean_ci, paired_difference, score_subject
from .methods import LLM_METHODS, METHODS, MethodContext

DEFAULT_METHODS = ("always-3", "population-median", "ridge", "base", "few-shot", "description", "pas",
                   "pas-learned", "pas+few-shot", "dpo")
YARDSTICK_FLOOR_S = 0.01  # where zero-fit-time methods sit on the log x axis


class PeakRSS:
    """Peak resident memory of this process while the block runs (sampled every 20 ms)."""

    def __enter__(self) -> PeakRSS:
        import psutil

        self._proc, self.peak, self._stop = psutil.Process(), 0, threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._proc.memory_info().rss)
            self._stop.wait(0.02)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._proc.memory_info().rss)


def _record_path(out: Path, method: str, case: str) -> Path:
    return out / "per_subject" / method / f"{case}.json"


def run_subject(method: str, ctx: MethodContext, subject: Subject) -> dict:
    """One method on one subject: scores, fit and evaluation seconds, peak memory."""
    with PeakRSS() as mem:
        t = time.perf_counter()
        pred = METHODS[method](ctx, subject)
        seconds = time.perf_counter() - t
    s = score_subject(ctx.bank, subject, pred)
    return {"case": subject.case, "composite": s.composite, "expected_composite": s.expected_composite,
            "domains": s.domains, "fit_seconds": pred.fit_seconds, "eval_seconds": seconds - pred.fit_seconds,
            "peak_rss_mb": mem.peak / 2**20, "info": pred.info}


def run_comparison(data: PapiData, subjects: Sequence[Subject], methods: Sequence[str], out: Path,
                   ctx: MethodContext, progress: bool = True) -> dict[str, list[dict]]:
    """Run (or resume) every method on every subject; returns per-method lists of subject records."""
    from tqdm.auto import tqdm

    records: dict[str, list[dict]] = {}
    for method in methods:
        recs = []
        for subject in tqdm(subjects, desc=method, disable=not progress):
            path = _record_path(out, method, subject.case)
            if path.exists():
                recs.append(json.loads(path.read_text()))
                continue
            rec = run_subject(method, ctx, subject)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(rec, default=float))
            tmp.replace(path)
            recs.append(rec)
        records[method] = recs
    return records


def summarize_records(records: dict[str, list[dict]], reference: str = "pas") -> dict:
    """Per method: composite with CI, domains, seconds per subject, peak memory, paired difference vs ``reference``."""
    out = {}
    ref = {r["case"]: r["composite"] for r in records.get(reference, [])}
    for method, recs in records.items():
        comp, lo, hi = mean_ci([r["composite"] for r in recs])
        exp, elo, ehi = mean_ci([r["expected_composite"] for r in recs])
        doms = {d: mean_ci([r["domains"][d] for r in recs]) for d in DOMAINS}
        entry = {
            "composite": comp, "composite_ci": [lo, hi],
            "expected_composite": exp, "expected_composite_ci": [elo, ehi],
            "domains": {d: v[0] for d, v in doms.items()},
            "domains_ci": {d: [v[1], v[2]] for d, v in doms.items()},
            "fit_seconds_per_subject": float(np.mean([r["fit_seconds"] for r in recs])),
            "eval_seconds_per_subject": float(np.mean([r["eval_seconds"] for r in recs])),
            "peak_rss_mb": float(max(r["peak_rss_mb"] for r in recs)),
            "per_subject": recs,
        }
        shared = [r["case"] for r in recs if r["case"] in ref]
        if method != reference and len(shared) > 1:
            mine = {r["case"]: r["composite"] for r in recs}
            entry[f"vs_{reference}"] = paired_difference([mine[c] for c in shared], [ref[c] for c in shared])
        out[method] = entry
    return out


def machine_info() -> dict:
    import torch

    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def markdown_table(summary: dict, reference: str = "pas") -> str:
    head = ("| method | composite (95% CI) | " + " | ".join(DOMAINS) + f" | Δ vs {reference} (95% CI, Wilcoxon p) | "
            "fit s/subject | eval s/subject | peak RSS MB |")
    rows = [head, "|" + "---|" * (len(DOMAINS) + 6)]
    for method, r in summary.items():
        lo, hi = r["composite_ci"]
        ci = f" ({lo:.2f}–{hi:.2f})" if not math.isnan(lo) else ""
        vs = r.get(f"vs_{reference}")
        vs_text = (f"{vs['mean']:+.2f} ({vs['ci'][0]:+.2f}…{vs['ci'][1]:+.2f}, p={vs['wilcoxon_p']:.2g})"
                   if vs else "—")
        doms = " | ".join(f"{r['domains'][d]:.2f}" for d in DOMAINS)
        rows.append(f"| {method} | {r['composite']:.2f}{ci} | {doms} | {vs_text} | {r['fit_seconds_per_subject']:.1f} "
                    f"| {r['eval_seconds_per_subject']:.1f} | {r['peak_rss_mb']:.0f} |")
    return "\n".join(rows)


def plot(summary: dict, path: Path, title: str) -> Path:
    """Composite vs fit seconds per subject (log x), one point per method with its 95% CI."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    labels: dict[tuple[float, float], list[str]] = {}  # methods drawn at the same place share one label
    for method, r in summary.items():
        x = max(r["fit_seconds_per_subject"], YARDSTICK_FLOOR_S)
        lo, hi = r["composite_ci"]
        err = None if math.isnan(lo) else [[r["composite"] - lo], [hi - r["composite"]]]
        marker = "s" if method not in LLM_METHODS else "o"
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
