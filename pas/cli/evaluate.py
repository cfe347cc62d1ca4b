"""``pas eval``: score methods on subjects' 180 held-out items (a table, or JSON per method)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pas.cli.args import add_data_args, add_fit_args, add_model_args, add_threads_arg, config_from, subjects
from pas.eval.methods import METHODS, PAS_METHODS
from pas.fit.config import GatedConfig, PASConfig


def add_parser(sub) -> None:
    p = sub.add_parser("eval", help="score methods on subjects' 180 held-out items")
    add_data_args(p)
    add_model_args(p)
    p.add_argument("--method", action="append", required=True,
                   help=", ".join(METHODS) + " (repeatable)")
    p.add_argument("--vector", action="append", default=[],
                   help="saved steering vector per subject, used instead of fitting one (pas methods)")
    p.add_argument("--json", action="store_true",
                   help="one JSON object per method (per subject: scores and per-item answers) instead of a table")
    p.add_argument("--out", help="keep per-subject records in this folder and resume from it")
    p.add_argument("--reverse-options", action="store_true",
                   help="also score every LLM method with the options listed in reverse (A = Very Inaccurate), "
                        "nothing refitted: a letter bias flips, a personality does not")
    p.add_argument("--prefill", default="(", help="text that starts the assistant turn before the letter (default '(')")
    p.add_argument("--dpo-epochs", type=int, default=2, help="dpo: most epochs (best chosen on validation items)")
    p.add_argument("--dpo-lr", type=float, default=5e-4, help="dpo: learning rate (LoRA)")
    p.add_argument("--adapter-dir", help="dpo: save each subject's adapter under this folder")
    add_fit_args(p)
    add_threads_arg(p)
    p.set_defaults(func=cmd_eval)


def load_vectors(args: argparse.Namespace, chosen) -> dict:
    """``--vector`` files, one per subject; only for PAS methods, and only the kind of PAS that made them."""
    from pas.steer.vector import SteeringVector

    if not args.vector:
        return {}
    others = [m for m in args.method if m not in PAS_METHODS]
    if others:
        raise SystemExit(f"--vector is used only by {', '.join(PAS_METHODS)}; it would be ignored by {others}")
    if len(args.vector) != len(chosen):
        raise SystemExit(f"{len(args.vector)} --vector files for {len(chosen)} subjects; give one per subject")
    vectors = {s.case: SteeringVector.load(p) for s, p in zip(chosen, args.vector)}  # checked on the model at use
    for s, path in zip(chosen, args.vector):
        v = vectors[s.case]
        if v.subject not in (None, s.case):
            raise SystemExit(f"{path}: vector for subject {v.subject} given for subject {s.case}")
        kind = "pas-gated" if v.kind == "gated" else "pas-learned" if v.config.get("learn") else "pas"
        wrong = [m for m in args.method if m.replace("+few-shot", "") != kind]
        if v.config and wrong:
            raise SystemExit(f"{path} was made by {kind} (kind={v.kind}, learn={v.config.get('learn')}); "
                             f"scoring it as {wrong} would mislabel it: use --method {kind}")
    return vectors


def cmd_eval(args: argparse.Namespace) -> int:
    from pas.core.data import load_papi
    from pas.eval.dpo import DPOSettings
    from pas.eval.methods import NEEDS_MODEL, MethodContext
    from pas.eval.report import dumps, markdown_table, summarize, summarize_method
    from pas.eval.run import run_methods, run_settings

    unknown = [m for m in args.method if m not in METHODS]
    if unknown:
        raise SystemExit(f"unknown method(s) {unknown}; choose from {list(METHODS)}")
    if args.kind is not None:
        raise SystemExit("--kind does not apply to pas eval: the method names the kind (pas, pas-learned: constant; "
                         "pas-gated: gated)")
    data = load_papi(args.data_dir, encoding=args.encoding)
    chosen = subjects(args, data)
    pas_config, gated_config = config_from(args, PASConfig), config_from(args, GatedConfig)  # each method uses its own
    ctx = MethodContext(data.bank, data.subjects, pas_config=pas_config, gated_config=gated_config,
                        dpo_settings=DPOSettings(epochs=args.dpo_epochs, lr=args.dpo_lr), adapter_dir=args.adapter_dir,
                        reverse_options=args.reverse_options)
    ctx.vectors = load_vectors(args, chosen)
    if any(m in NEEDS_MODEL for m in args.method):
        from pas.core.models import load_model
        from pas.score.prompts import PromptTemplate
        from pas.score.scorer import ItemScorer

        model, tok = load_model(args.model, dtype=args.dtype)
        ctx.scorer = ItemScorer(model, tok, data.bank, PromptTemplate(prefill=args.prefill), progress=not args.json)
        for case, v in ctx.vectors.items():  # fail before any work if a vector was made for another model
            ctx.vectors[case] = v.for_weights_of(model) if args.allow_other_weights else v
            ctx.vectors[case].check_model(model)

    def done(method: str, records: list[dict]) -> None:  # print each method as it finishes: nothing is lost
        if args.json:
            print(dumps({"method": method, **summarize_method(records)}), flush=True)
        else:
            for r in records:
                if "error" in r:
                    print(f"note: {method} skipped subject {r['case']}: {r['error']}", file=sys.stderr)

    settings = run_settings(args.model, args.dtype, args.prefill, ctx, data)
    records = run_methods(ctx, chosen, args.method, out=Path(args.out) if args.out else None, settings=settings,
                          progress=not args.json, on_method_done=done)
    if not args.json:
        print(f"{len(chosen)} subject(s); composite = sum over O C E A N of mean |answer - person's response| "
              f"on the 180 held-out items (lower is better, 0..20); papi_published = the paper's way "
              f"(answer vs stored keyed score), for comparison with its tables only"
              + ("; reversed options: the same methods, nothing refitted, options listed E..A "
                 "(gain kept = share of the gain over always-3 that survives)" if args.reverse_options else ""))
        print(markdown_table(summarize(records)))
    return 0

