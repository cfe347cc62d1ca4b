"""``pas`` command line: ``pas eval``, ``pas align``, ``pas chat``."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time

from .align import PASConfig
from .methods import METHODS


def _add_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", help="PAPI data directory (default: $PAPI_DATA_DIR, else ./papi or ../shared/papi)")
    p.add_argument("--subject", action="append", default=[], metavar="CASE", help="subject id (repeatable)")
    p.add_argument("--first", type=int, help="use the first N subjects of the data dir")


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", help="Hugging Face id or folder (default: embedded SmolLM2-135M-Instruct)")
    p.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"], help="model dtype (default fp32)")


def _add_pas_args(p: argparse.ArgumentParser) -> None:
    """One flag per PASConfig field."""
    for f in dataclasses.fields(PASConfig):
        flag = "--" + f.name.replace("_", "-")
        if f.type in ("bool", bool):
            p.add_argument(flag, type=lambda s: s.lower() in ("1", "true", "yes"), default=None,
                           help=f"PAS {f.name} (true/false; default {f.default})")
        elif f.name == "alpha_grid":
            p.add_argument(flag, type=lambda s: tuple(float(x) for x in s.split(",")), default=None,
                           help=f"comma-separated strength grid (default {','.join(map(str, f.default))})")
        else:
            typ = {"int": int, "float": float, "str": str}.get(str(f.type), str)
            p.add_argument(flag, type=typ, default=None, help=f"PAS {f.name} (default {f.default})")


def _pas_config(args) -> PASConfig:
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(PASConfig) if getattr(args, f.name, None) is not None}
    return PASConfig(**given)


def _subjects(args, data):
    from .data import select_subjects

    if not args.subject and not args.first:
        raise SystemExit("name subjects with --subject CASE (repeatable) or --first N")
    return select_subjects(data.subjects, args.subject, args.first)


def cmd_eval(args) -> int:
    from .data import load_papi
    from .evaluate import format_table, summarize
    from .methods import LLM_METHODS, MethodContext, run_method
    from .steering import SteeringVector

    unknown = [m for m in args.method if m not in METHODS]
    if unknown:
        raise SystemExit(f"unknown method(s) {unknown}; choose from {list(METHODS)}")
    data = load_papi(args.data_dir)
    subjects = _subjects(args, data)
    from .dpo import DPOSettings

    ctx = MethodContext(data.bank, data.subjects, pas_config=_pas_config(args),
                        dpo_settings=DPOSettings(epochs=args.dpo_epochs, lr=args.dpo_lr), adapter_dir=args.adapter_dir)
    if args.vector:
        if len(args.vector) != len(subjects):
            raise SystemExit(f"{len(args.vector)} --vector files for {len(subjects)} subjects; give one per subject")
        ctx.vectors = {s.case: SteeringVector.load(p) for s, p in zip(subjects, args.vector)}
        for s in subjects:
            if ctx.vectors[s.case].subject not in (None, s.case):
                raise SystemExit(f"vector for subject {ctx.vectors[s.case].subject} given for subject {s.case}")
    if any(m in LLM_METHODS for m in args.method):
        from .models import load_model
        from .scoring import ItemScorer

        model, tok = load_model(args.model, dtype=args.dtype)
        from .prompts import PromptTemplate

        ctx.scorer = ItemScorer(model, tok, data.bank, PromptTemplate(prefill=args.prefill), progress=not args.json)
    reports = []
    for name in args.method:
        t = time.perf_counter()
        scores = run_method(name, ctx, subjects, progress=not args.json)
        report = summarize(name, scores, wall_seconds=time.perf_counter() - t)
        reports.append(report)
        if args.json:
            print(json.dumps(report), flush=True)
    if not args.json:
        print(f"{len(subjects)} subject(s); composite = sum over O C E A N of mean |answer - subject's answer| "
              f"on the 180 test items (lower is better, 0..20)")
        print(format_table(reports))
    return 0


def cmd_align(args) -> int:
    from .align import align_to_subject
    from .data import load_papi, select_subjects
    from .models import load_model
    from .scoring import ItemScorer

    data = load_papi(args.data_dir)
    (subject,) = select_subjects(data.subjects, [args.subject])
    model, tok = load_model(args.model, dtype=args.dtype)
    t = time.perf_counter()
    vector = align_to_subject(model, subject, _pas_config(args), tokenizer=tok, bank=data.bank,
                              scorer=ItemScorer(model, tok, data.bank), progress=True)
    path = vector.save(args.out, overwrite=args.overwrite)
    print(f"{vector}\nsaved to {path} in {time.perf_counter() - t:.1f} s (alpha {vector.alpha:.3g}, "
          f"heads {len(vector.heads)}, learned best step {vector.extra['learn'].get('best_step')})")
    return 0


def cmd_chat(args) -> int:
    from .chat import chat_loop, generate
    from .models import load_model
    from .steering import SteeringVector

    model, tok = load_model(args.model, dtype=args.dtype)
    if args.adapter:
        from .dpo import load_adapter

        model = load_adapter(model, args.adapter)
    vector = SteeringVector.load(args.vector) if args.vector else None
    if vector is not None and args.strength != 1.0:
        vector = vector * args.strength
    if args.prompt is not None:
        print(generate(model, tok, args.prompt, vector, max_new_tokens=args.max_new_tokens))
        return 0
    chat_loop(model, tok, vector, max_new_tokens=args.max_new_tokens)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pas", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("eval", help="score methods on subjects' 180 held-out items")
    _add_data_args(p)
    _add_model_args(p)
    p.add_argument("--method", action="append", required=True,
                   help=", ".join(METHODS) + " (repeatable)")
    p.add_argument("--vector", action="append", default=[],
                   help="saved steering vector per subject, used instead of fitting one (pas methods)")
    p.add_argument("--json", action="store_true", help="one JSON object per method instead of a table")
    p.add_argument("--prefill", default="(", help="text that starts the assistant turn before the letter (default '(')")
    p.add_argument("--dpo-epochs", type=int, default=2, help="dpo: most epochs (best chosen on validation items)")
    p.add_argument("--dpo-lr", type=float, default=5e-4, help="dpo: learning rate (LoRA)")
    p.add_argument("--adapter-dir", help="dpo: save each subject's adapter under this folder")
    _add_pas_args(p)
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("align", help="learn a subject's steering vector and save it")
    p.add_argument("--data-dir", help="PAPI data directory (default: $PAPI_DATA_DIR, else ./papi or ../shared/papi)")
    p.add_argument("--subject", required=True, metavar="CASE", help="subject id")
    p.add_argument("--out", required=True, help="output .safetensors file")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    _add_model_args(p)
    _add_pas_args(p)
    p.set_defaults(func=cmd_align)

    p = sub.add_parser("chat", help="chat with the model, steered by a saved vector")
    _add_model_args(p)
    p.add_argument("--vector", help="steering vector file (.safetensors); none = unsteered")
    p.add_argument("--adapter", help="a subject's saved DPO adapter folder (pas eval --method dpo --adapter-dir)")
    p.add_argument("--strength", type=float, default=1.0, help="multiply the vector by this (default 1)")
    p.add_argument("--prompt", help="one-shot: answer this and exit")
    p.add_argument("--max-new-tokens", type=int, default=128, help="tokens to generate per reply (default 128)")
    p.set_defaults(func=cmd_chat)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, FileExistsError) as e:
        print(f"pas {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
