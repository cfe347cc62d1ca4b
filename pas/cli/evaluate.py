"""``pas eval``: score methods on subjects' 180 held-out items (a table, or JSON per method)."""

from __future__ import annotations

import argparse
import functools
import shlex
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from pas.cli.args import (
    Subparsers,
    add_data_args,
    add_fit_args,
    add_model_args,
    add_threads_arg,
    config_from,
    subjects,
)
from pas.eval.methods import METHODS
from pas.fit.config import GatedConfig, PASConfig

if TYPE_CHECKING:
    from pas.core.data import Subject
    from pas.eval.record import RunRecord
    from pas.steer.vector import SteeringVector

TABLES = ("compact", "wide")
INTERRUPTED = 130  # the shell's exit status for Ctrl-C


def add_parser(sub: Subparsers) -> None:
    p = sub.add_parser("eval", help="score methods on subjects' 180 held-out items")
    add_data_args(p)
    add_model_args(p)
    p.add_argument("--method", action="append", required=True,
                   help=", ".join(METHODS) + " (repeatable)")
    p.add_argument("--store", help="a population vector store: score its people's pas-gated vectors, no refitting")
    p.add_argument("--vector", action="append", default=[],
                   help="saved steering vector per subject, used instead of fitting one (pas methods)")
    p.add_argument("--json", action="store_true",
                   help="one JSON object per method (per subject: scores and per-item answers) instead of a table")
    p.add_argument("--table", choices=TABLES,
                   help="the printed table: compact (default: composite, Δ vs always-3, fit seconds) or wide "
                        "(domains, paired p-values, published-way composite, seconds, memory)")
    p.add_argument("--out", help="keep per-subject records in this folder and resume from it (with the wide table "
                                 "in results.md)")
    p.add_argument("--reverse-options", action="store_true",
                   help="also score every LLM method with the options listed in reverse (A = Very Inaccurate), "
                        "nothing refitted: a letter bias flips, a personality does not")
    p.add_argument("--transfer", action="store_true",
                   help="also score every LLM method (and readout) on statements never fitted: paraphrases and "
                        "negations of 60 test items, and the IPIP-100 markers not among the 300 (table of its own)")
    p.add_argument("--markers-dir", help="the IPIP-100 markers folder (items.csv) for --transfer (default: "
                                         "$IPIP100_DATA_DIR, else ./ipip100 or ../shared/ipip100)")
    p.add_argument("--prefill", default="(", help="text that starts the assistant turn before the letter (default '(')")
    p.add_argument("--dpo-epochs", type=int, default=2, help="dpo: most epochs (best chosen on validation items)")
    p.add_argument("--dpo-lr", type=float, default=5e-4, help="dpo: learning rate (LoRA)")
    p.add_argument("--adapter-dir", help="dpo: save each subject's adapter under this folder")
    add_fit_args(p)
    add_threads_arg(p)
    p.set_defaults(func=functools.partial(cmd_eval, parser=p))


def load_vectors(args: argparse.Namespace, chosen: Sequence[Subject]) -> dict[str, SteeringVector]:
    """``--vector`` files, one per subject; only for PAS methods, and only the kind of PAS that made them."""
    from pas.steer.vector import SteeringVector

    if args.store:
        return _stored_vectors(args, chosen)
    if not args.vector:
        return {}
    takers = _takers(args, "--vector")
    if len(args.vector) != len(chosen):
        raise SystemExit(f"{len(args.vector)} --vector files for {len(chosen)} subjects; give one per subject")
    folders = [p for p in args.vector if Path(p).is_dir()]
    if folders:
        raise ValueError(f"--vector {folders[0]} is a folder; give a vector file (.safetensors)")
    # checked on the model at use
    vectors = {s.case: SteeringVector.load(p) for s, p in zip(chosen, args.vector, strict=True)}
    for s, path in zip(chosen, args.vector, strict=True):
        v = vectors[s.case]
        made_by = v.provenance.method  # None: made by arithmetic or by hand
        wrong = [m for m in args.method if METHODS[m].vector_kind != made_by]
        if made_by is not None and wrong:
            fix = f": use --method {made_by}" if made_by in takers else ""
            raise SystemExit(f"{path} was made by {made_by} (kind={v.kind}); scoring it as {wrong} would "
                             f"mislabel it{fix}")
        if v.subject not in (None, s.case):
            raise SystemExit(f"{path}: vector for subject {v.subject} given for subject {s.case}")
    return vectors


def _takers(args: argparse.Namespace, flag: str) -> list[str]:
    """The methods that take a vector; every method asked for must be one of them."""
    takers = [name for name, m in METHODS.items() if m.takes_vector]
    others = [m for m in args.method if not METHODS[m].takes_vector]
    if others:
        raise SystemExit(f"{flag} is used only by {', '.join(takers)}; it would be ignored by {others}")
    return takers


def _stored_vectors(args: argparse.Namespace, chosen: Sequence[Subject]) -> dict[str, SteeringVector]:
    """``--store``: each chosen subject's vector from a population store (all must be in it)."""
    from pas.population.store import PopulationStore

    if args.vector:
        raise SystemExit("give --vector files or --store, not both")
    _takers(args, "--store")
    store = PopulationStore(args.store)
    missing = [s.case for s in chosen if s.case not in store]
    if missing:
        raise SystemExit(f"--store {args.store} has no vector for {len(missing)} of the subjects (e.g. "
                         f"{', '.join(missing[:5])}); fit them with pas align-population --out {args.store}")
    made = {s.case: store[s.case] for s in chosen}
    wrong = [m for m in args.method if METHODS[m].vector_kind != "pas-gated"]
    if wrong:
        raise SystemExit(f"the store's vectors were made by pas-gated; scoring them as {wrong} would mislabel them")
    label = "SYNTHETIC" if store.provenance.synthetic else "real"
    print(f"note: scoring {len(made)} vectors of the store {args.store} ({label} people)", file=sys.stderr)
    return made


def vector_digest(vector: SteeringVector) -> str:
    """sha256 of what a vector applies (offsets, gates, positions): a stored person's identity in records."""
    import hashlib

    h = hashlib.sha256(vector.positions.encode())
    tensors = [vector.offsets] + ([] if vector.gates is None else
                                  [vector.gates.weights, vector.gates.bias, vector.gates.limits()])
    for t in tensors:
        h.update(t.contiguous().numpy().tobytes())
    return h.hexdigest()


def command_line(args: argparse.Namespace, parser: argparse.ArgumentParser) -> str:
    """The ``pas eval`` command that gives ``args`` (flags left at their defaults left out), shell-quoted."""
    words = ["pas", "eval"]
    for dest, value in vars(args).items():
        if dest in ("func", "command") or value is None or value == parser.get_default(dest):
            continue
        flag = "--" + dest.replace("_", "-")
        if value is True and parser.get_default(dest) is False:  # a switch
            words.append(flag)
        elif isinstance(value, list):
            for v in value:
                words += [flag, str(v)]
        else:
            text = (str(value).lower() if isinstance(value, bool)
                    else ",".join(map(str, value)) if isinstance(value, tuple) else str(value))
            words += [flag, text]
    return shlex.join(words)


def _interrupted(args: argparse.Namespace, parser: argparse.ArgumentParser | None) -> int:
    """One line for Ctrl-C: what was kept, and the command that resumes."""
    if not args.out:
        print("pas eval: interrupted; nothing was kept (no --out): run with --out DIR to keep each record as it "
              "finishes and resume from it", file=sys.stderr)
        return INTERRUPTED
    from pas.eval.run import RECORDS_DIR

    folder = Path(args.out) / RECORDS_DIR
    kept = sum(len(list((folder / m).glob("*.json"))) for m in dict.fromkeys(args.method))
    again = command_line(args, parser) if parser is not None else "the same command"
    print(f"pas eval: interrupted; {kept} record(s) of {', '.join(dict.fromkeys(args.method))} kept in {folder}; "
          f"resume with: {again}", file=sys.stderr)
    return INTERRUPTED


def cmd_eval(args: argparse.Namespace, parser: argparse.ArgumentParser | None = None) -> int:
    unknown = [m for m in args.method if m not in METHODS]
    if unknown:
        raise SystemExit(f"unknown method(s) {unknown}; choose from {list(METHODS)}")
    if args.kind is not None:
        raise SystemExit("--kind does not apply to pas eval: the method names the kind (pas, pas-learned: constant; "
                         "pas-gated: gated)")
    if args.json and args.table is not None:
        raise ValueError("--table chooses the printed table; --json prints every column as JSON instead: give one")
    if args.out and Path(args.out).exists() and not Path(args.out).is_dir():
        raise ValueError(f"--out {args.out} is a file; give a folder")
    try:
        return _evaluate(args)
    except KeyboardInterrupt:
        return _interrupted(args, parser)


def _evaluate(args: argparse.Namespace) -> int:
    from pas.core.data import load_papi
    from pas.eval.dpo import DPOSettings
    from pas.eval.fingerprint import file_digest
    from pas.eval.methods import MethodContext
    from pas.eval.report import compact_table, dumps, markdown_table, summarize, summarize_method
    from pas.eval.run import run_methods, run_settings

    data = load_papi(args.data_dir, encoding=args.encoding)
    chosen = subjects(args, data)
    pas_config, gated_config = config_from(args, PASConfig), config_from(args, GatedConfig)  # each method uses its own
    ctx = MethodContext(data.bank, data.subjects, pas_config=pas_config, gated_config=gated_config,
                        dpo_settings=DPOSettings(epochs=args.dpo_epochs, lr=args.dpo_lr), adapter_dir=args.adapter_dir,
                        reverse_options=args.reverse_options)
    if args.transfer:
        from pas.core.transfer import load_transfer

        ctx.transfer = load_transfer(data.bank, args.markers_dir)
    ctx.vectors = load_vectors(args, chosen)
    for v in ctx.vectors.values():  # fitted on these statements? (before any model work)
        v.check_bank(data.bank, allow_other=args.allow_other_items)
    # records keep which file (no --vector: none)
    ctx.vector_digests = ({case: vector_digest(v) for case, v in ctx.vectors.items()} if args.store else
                          {s.case: file_digest(p) for s, p in zip(chosen, args.vector, strict=False)})
    if any(METHODS[m].needs_model for m in args.method):
        from pas.core.models import load_model
        from pas.score.prompts import PromptTemplate
        from pas.score.scorer import ItemScorer

        model, tok = load_model(args.model, dtype=args.dtype)
        ctx.scorer = ItemScorer(model, tok, data.bank, PromptTemplate(prefill=args.prefill), progress=not args.json)
        for case, v in ctx.vectors.items():  # fail before any work if a vector was made for another model
            ctx.vectors[case] = v.for_weights_of(model) if args.allow_other_weights else v
            ctx.vectors[case].check_model(model)

    def done(method: str, records: list[RunRecord]) -> None:  # print each method as it finishes: nothing is lost
        if args.json:
            print(dumps({"method": method, **summarize_method(records)}), flush=True)
        else:
            for r in records:
                if r.skipped:
                    print(f"note: {method} skipped subject {r.case}: {r.error}", file=sys.stderr)

    settings = run_settings(args.model, args.dtype, args.prefill, ctx, data)
    out = Path(args.out) if args.out else None
    records = run_methods(ctx, chosen, args.method, out=out, settings=settings, progress=not args.json,
                          on_method_done=done)
    summary = summarize(records)
    wide = (f"{len(chosen)} subject(s); composite = sum over O C E A N of mean |answer - person's response| "
            f"on the 180 held-out items (lower is better, 0..20); papi_published = the paper's way "
            f"(answer vs stored keyed score), for comparison with its tables only"
            + ("; reversed options: the same methods, nothing refitted, options listed E..A "
               "(gain kept = share of the gain over always-3 that survives)" if args.reverse_options else "")
            + "\n" + markdown_table(summary) + _transfer_text(records))
    if out is not None:
        (out / "results.md").write_text(wide + "\n")
    if args.json:
        return 0
    if args.table == "wide":
        print(wide)
    else:
        print(f"{len(chosen)} subject(s); composite = sum over O C E A N of mean |answer - the person's response| "
              f"on the 180 held-out items (0..20)")
        print(compact_table(summary) + _transfer_text(records))
        print("(--table wide: each domain, paired p-values, the paper's composite, seconds and memory)")
    return 0


def _transfer_text(records: Mapping[str, Sequence[RunRecord]]) -> str:
    """The transfer table under the results, when the run scored transfer sets."""
    from pas.eval.transfer import summarize_transfer, transfer_table

    summary = summarize_transfer(records)
    if not summary:
        return ""
    return ("\n\nTransfer to statements never fitted (MAE of answers 1..5 against what the person would answer: "
            "a paraphrase as the original, a negation 6 - response; paired Wilcoxon vs always-3 on the same "
            "statements; markers r: per domain, correlation across people of the person's domain mean over "
            "the 300 and the model's on the IPIP-100 markers):\n" + transfer_table(summary))
