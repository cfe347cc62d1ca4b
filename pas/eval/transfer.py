"""Transfer checks in the run loop: each method's answers to statements it was never fitted on, and their table.

A method's :class:`pas.score.metric.Prediction` carries ``transfer[name]``, its answers to each set of
:class:`pas.core.transfer.TransferSets` (the same prompt, system prompt and steering as the test items).
:func:`transfer_results` turns them into what a record keeps; :func:`summarize_transfer` and
:func:`transfer_table` read the records:

- reworded sets (paraphrase, negation): per person the mean absolute error of the answers (1..5) against
  what the person would answer, beside always-3 on the same statements, with a paired Wilcoxon test
  across people. A letter or domain push fails the negations; a lookup of the 300 fails both.
- markers (IPIP-100, not among the 300): per domain, the correlation across people between the person's
  keyed domain mean over their 300 answers and the model's keyed domain mean on the markers (expected
  answers), and the mean absolute difference of the two.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from pas.core.data import DOMAINS, ItemBank, Subject
from pas.core.transfer import TransferSets, keyed_domain_means
from pas.eval.record import RunRecord
from pas.eval.report import p_text, paired_difference
from pas.score.metric import Prediction

NEUTRAL = 3


def transfer_settings(sets: TransferSets | None) -> dict[str, str] | None:
    """What a record scored on transfer sets depends on: each set's statements (their bank's fingerprint)."""
    return None if sets is None else {name: bank.fingerprint() for name, bank in sets.banks().items()}


def transfer_results(sets: TransferSets, bank: ItemBank, subject: Subject, pred: Prediction) -> dict[str, Any]:
    """What a record keeps of ``pred.transfer``: per reworded set the statements, the person's expected answers
    and the method's, and their MAE beside always-3's; for the markers the model's and the person's domain means."""
    out: dict[str, Any] = {}
    for kind, reworded in sets.reworded.items():
        if kind not in pred.transfer:
            continue
        p = pred.transfer[kind]
        truth = reworded.expected(subject)
        rows = [(i, truth[i], int(a)) for i, a in zip(p.ids, p.answers, strict=True) if i in truth]
        if not rows:
            continue
        t = np.array([r[1] for r in rows], dtype=np.float64)
        a = np.array([r[2] for r in rows], dtype=np.float64)
        out[kind] = {"ids": [r[0] for r in rows], "truth": [r[1] for r in rows], "answers": [r[2] for r in rows],
                     "mae": float(np.abs(a - t).mean()), "always3_mae": float(np.abs(NEUTRAL - t).mean())}
    if sets.markers is not None and "markers" in pred.transfer:
        p = pred.transfer["markers"]
        model = sets.markers.domain_scores(dict(zip(p.ids, (float(e) for e in p.expected), strict=True)))
        out["markers"] = {"domains": model, "person": keyed_domain_means(bank, subject.responses)}
    return out


def summarize_transfer(records: Mapping[str, Sequence[RunRecord]]) -> dict[str, dict[str, Any]]:
    """Per method with transfer results: per reworded set the mean MAE, always-3's on the same statements and the
    paired test; for the markers the per-domain correlation and MAE across people."""
    out: dict[str, dict[str, Any]] = {}
    for method, recs in records.items():
        done = [r for r in recs if not r.skipped and r.transfer]
        if not done:
            continue
        entry: dict[str, Any] = {}
        for kind in ("paraphrase", "negation"):
            rows = [r.transfer[kind] for r in done if kind in r.transfer]
            if rows:
                mine, a3 = [x["mae"] for x in rows], [x["always3_mae"] for x in rows]
                entry[kind] = {"mae": float(np.mean(mine)), "always3_mae": float(np.mean(a3)),
                               "vs_always3": paired_difference(mine, a3), "n": len(rows)}
        marks = [r.transfer["markers"] for r in done if "markers" in r.transfer]
        if marks:
            entry["markers"] = _markers_summary(marks)
        out[method] = entry
    return out


def _markers_summary(marks: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    corr, mae, a3 = {}, {}, {}
    for d in DOMAINS:
        model = np.array([m["domains"][d] for m in marks], dtype=np.float64)
        person = np.array([m["person"][d] for m in marks], dtype=np.float64)
        ok = np.isfinite(model) & np.isfinite(person)
        model, person = model[ok], person[ok]
        corr[d] = (float(np.corrcoef(model, person)[0, 1])
                   if len(model) > 2 and model.std() > 0 and person.std() > 0 else math.nan)
        mae[d] = float(np.abs(model - person).mean()) if len(model) else math.nan
        a3[d] = float(np.abs(NEUTRAL - person).mean()) if len(person) else math.nan
    return {"correlation": corr, "mae": mae, "always3_mae": a3, "n": len(marks)}


def _mae_cell(s: Mapping[str, Any] | None) -> str:
    if s is None:
        return "—"
    vs = s["vs_always3"]
    return f"{s['mae']:.2f} vs {s['always3_mae']:.2f} ({vs['mean']:+.2f}, p={p_text(vs['wilcoxon_p'])})"


def transfer_table(summary: Mapping[str, Mapping[str, Any]]) -> str:
    """Markdown: per method the paraphrase and negation MAE vs always-3 (paired), and the markers' per-domain
    correlation (and mean domain MAE)."""
    head = ["method", "n", "paraphrase MAE vs always-3 (Δ, p)", "negation MAE vs always-3 (Δ, p)",
            *(f"markers r {d}" for d in DOMAINS), "markers domain MAE (always-3)"]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for method, s in summary.items():
        n = max((v["n"] for v in s.values() if isinstance(v, Mapping) and "n" in v), default=0)
        cells = [method, str(n), _mae_cell(s.get("paraphrase")), _mae_cell(s.get("negation"))]
        m = s.get("markers")
        if m is None:
            cells += ["—"] * (len(DOMAINS) + 1)
        else:
            cells += ["n/a" if not math.isfinite(m["correlation"][d]) else f"{m['correlation'][d]:+.2f}"
                      for d in DOMAINS]
            mae, a3 = np.nanmean(list(m["mae"].values())), np.nanmean(list(m["always3_mae"].values()))
            cells.append(f"{mae:.2f} ({a3:.2f})")
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)
