"""PAS vs DPO (and every other method) on real PAPI subjects: alignment score and wall-clock, side by side.

    python benchmarks/pas_vs_dpo.py                      # default: 3 subjects, all methods, ./results/pas_vs_dpo
    python benchmarks/pas_vs_dpo.py --subjects all       # every subject of the data dir
    python benchmarks/pas_vs_dpo.py --subjects 156978,17895 --methods pas,dpo

Writes results.json, results.md and pas_vs_dpo.png to --out; an interrupted run resumes from --out.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from pas import GatedConfig, ItemScorer, PASConfig, load_model, load_papi
from pas.core.data import select_subjects
from pas.eval.dpo import DPOSettings
from pas.eval.methods import METHODS, MethodContext
from pas.eval.report import DEFAULT_REFERENCES, dumps, machine_info, markdown_table, plot, summarize
from pas.eval.run import context_settings, run_methods, run_settings
from pas.fit.activations import answer_states, head_activations
from pas.fit.gated import calibrations

from common import apply_threads

DEFAULT_METHODS = ("always-3", "population-median", "ridge", "readout", "base", "few-shot", "description", "pas",
                   "pas-learned", "pas+few-shot", "pas-gated", "dpo")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", help="PAPI data directory (default: $PAPI_DATA_DIR, else ./papi or ../shared/papi)")
    p.add_argument("--subjects", default="3", help="N >= 1 (the first N), 'all', or comma-separated ids (default 3)")
    p.add_argument("--methods", default=",".join(DEFAULT_METHODS),
                   help="comma-separated methods (default: the paper's comparison with DPO, plus readout and "
                        "pas-gated)")
    p.add_argument("--references", default=",".join(DEFAULT_REFERENCES),
                   help="methods every other is compared with, paired (default: always-3,base)")
    p.add_argument("--model", help="HF id or folder (default: embedded SmolLM2-135M-Instruct)")
    p.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"], help="model dtype (default fp32)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--dpo-epochs", type=int, default=DPOSettings.epochs,
                   help="max DPO epochs (best chosen on validation)")
    p.add_argument("--out", default="results/pas_vs_dpo", help="output folder (resumes from what is there)")
    p.add_argument("--no-reverse-options", dest="reverse_options", action="store_false",
                   help="skip scoring every LLM method again with the options listed in reverse")
    return p.parse_args(argv)


def choose_subjects(data, spec: str) -> list:
    """``N``, ``all`` or comma-separated ids; says so when N is more than there are."""
    if spec == "all":
        return list(data.subjects)
    if spec.lstrip("-").isdigit():
        n = int(spec)
        if n < 1:
            raise SystemExit(f"--subjects {spec}: give N >= 1, 'all', or ids")
        if n > len(data.subjects):
            print(f"note: --subjects {n} is more than the {len(data.subjects)} subjects; running all", file=sys.stderr)
        return select_subjects(data.subjects, first=n)
    return select_subjects(data.subjects, [c.strip() for c in spec.split(",") if c.strip()])


def main(argv=None) -> int:
    args = parse_args(argv)
    apply_threads(args)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise SystemExit(f"unknown methods {unknown}; choose from {list(METHODS)}")
    data = load_papi(args.data_dir)
    subjects = choose_subjects(data, args.subjects)
    out = Path(args.out)
    ctx = MethodContext(data.bank, data.subjects, pas_config=PASConfig(), gated_config=GatedConfig(),
                        dpo_settings=DPOSettings(epochs=args.dpo_epochs),
                        adapter_dir=str(out / "adapters"), reverse_options=args.reverse_options)
    one_time = {}
    if any(METHODS[m].needs_model for m in methods):
        t = time.perf_counter()
        model, tok = load_model(args.model, dtype=args.dtype)
        one_time["model_load_seconds"] = time.perf_counter() - t
        ctx.scorer = ItemScorer(model, tok, data.bank)
    if any(METHODS[m].vector_kind in ("pas", "pas-learned") for m in methods):  # constant PAS's one-time cost
        t = time.perf_counter()
        head_activations(model, tok, data.bank, data.bank.train_ids, refresh=True, progress=True)
        one_time["pas_activations_seconds"] = time.perf_counter() - t
    if any(m in ("readout", "pas-gated") for m in methods):  # states at the answer position (+ the letter Jacobian)
        t = time.perf_counter()
        answer_states(ctx.scorer, data.bank.train_ids + data.bank.test_ids)
        one_time["answer_states_seconds"] = time.perf_counter() - t
    if "pas-gated" in methods:
        t = time.perf_counter()
        calibrations(ctx.scorer, data.bank.train_ids, ctx.gated_config.gate_both_orders)
        one_time["letter_jacobian_seconds"] = time.perf_counter() - t
    settings = run_settings(args.model, args.dtype, "(", ctx, data)
    records = run_methods(ctx, subjects, methods, out=out, settings=settings)
    references = [r.strip() for r in args.references.split(",") if r.strip()]
    summary = summarize(records, references)
    run = {**settings, **context_settings(ctx), "subjects": [s.case for s in subjects], "methods": methods,
           "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
           "command": " ".join(["python benchmarks/pas_vs_dpo.py", *(sys.argv[1:] if argv is None else argv)])}
    report = {"settings": run, "machine": machine_info(), "one_time_seconds": one_time, "methods": summary}
    ratios = {pas: summary["dpo"]["fit_seconds_per_subject"] / summary[pas]["fit_seconds_per_subject"]
              for pas, m in METHODS.items() if m.takes_vector and pas in summary and "dpo" in summary
              and pas != "pas+few-shot"}
    report.update({f"dpo_over_{pas.replace('-', '_')}_fit_time": r for pas, r in ratios.items()})
    (out / "results.json").write_text(dumps(report, indent=1))
    table = markdown_table(summary, references)
    ratio_text = "".join(f"; DPO fit time / {pas} fit time = {r:.1f}x" for pas, r in ratios.items())
    header = (f"{len(subjects)} subjects, {run['model']} ({args.dtype}), {run['threads']} threads, "
              f"{run['date']}; one-time: {json.dumps({k: round(v, 1) for k, v in one_time.items()})}{ratio_text}")
    (out / "results.md").write_text(f"{header}\n\n{table}\n")
    plot(summary, out / "pas_vs_dpo.png", f"PAPI alignment vs fit time ({len(subjects)} subjects, {run['model']})",
         llm_methods=[name for name, m in METHODS.items() if m.is_llm])
    print(header)
    print(table)
    print(f"written: {out / 'results.json'}, {out / 'results.md'}, {out / 'pas_vs_dpo.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
