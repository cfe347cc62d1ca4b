"""``pas`` command line: ``pas eval``, ``pas align``, ``pas chat``, ``pas assess``, ``pas traits``, ``pas persona``.

Every command takes ``--threads N`` (torch threads, set before any model work; on a
busy 2-core machine 1 thread can be many times faster than 2).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

from pas.fit.align import PASConfig
from pas.eval.methods import METHODS, PAS_METHODS
from pas.space.persona import CONSTRUCTIONS
from pas.space.poles import POLE_SOURCES


def _add_data_args(p: argparse.ArgumentParser) -> None:
    _add_data_args_no_subjects(p)
    p.add_argument("--subject", action="append", default=[], metavar="CASE", help="subject id (repeatable)")
    p.add_argument("--first", type=int, help="use the first N subjects of the data dir (N >= 1)")


def _add_data_args_no_subjects(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", help="PAPI data directory (default: $PAPI_DATA_DIR, else ./papi or ../shared/papi)")
    p.add_argument("--encoding", choices=["keyed", "responses"],
                   help="what the data dir's stored values are (default: its papi.json, else keyed as in PAPI)")


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", help="Hugging Face id or folder (default: embedded SmolLM2-135M-Instruct)")
    p.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"], help="model dtype (default fp32)")
    p.add_argument("--allow-other-weights", action="store_true",
                   help="accept --vector files made on other weights of the same architecture (a fine-tuned variant)")


def _add_threads_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threads", type=int, help="torch threads (default: $OMP_NUM_THREADS or torch's choice)")


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
    from pas.core.data import select_subjects

    if not args.subject and args.first is None:
        raise SystemExit("name subjects with --subject CASE (repeatable) or --first N")
    if args.subject and args.first is not None:
        raise SystemExit("give --subject or --first, not both")
    chosen = select_subjects(data.subjects, args.subject, args.first)
    if args.first is not None and args.first > len(data.subjects):
        print(f"note: --first {args.first} is more than the {len(data.subjects)} subjects of {data.root}; "
              f"running all {len(data.subjects)}", file=sys.stderr)
    return chosen


def _load_vectors(args, subjects) -> dict:
    """``--vector`` files, one per subject; only for PAS methods, and only the kind of PAS that made them."""
    from pas.steer.vector import SteeringVector

    if not args.vector:
        return {}
    others = [m for m in args.method if m not in PAS_METHODS]
    if others:
        raise SystemExit(f"--vector is used only by {', '.join(PAS_METHODS)}; it would be ignored by {others}")
    if len(args.vector) != len(subjects):
        raise SystemExit(f"{len(args.vector)} --vector files for {len(subjects)} subjects; give one per subject")
    vectors = {s.case: SteeringVector.load(p) for s, p in zip(subjects, args.vector)}  # checked on the model at use
    for s, path in zip(subjects, args.vector):
        v = vectors[s.case]
        if v.subject not in (None, s.case):
            raise SystemExit(f"{path}: vector for subject {v.subject} given for subject {s.case}")
        kind = "pas-gated" if v.kind == "gated" else "pas-learned" if v.config.get("learn") else "pas"
        wrong = [m for m in args.method if m.replace("+few-shot", "") != kind]
        if v.config and wrong:
            raise SystemExit(f"{path} was made by {kind} (kind={v.kind}, learn={v.config.get('learn')}); "
                             f"scoring it as {wrong} would mislabel it: use --method {kind}")
    return vectors

SOURCES = ("vector", "trait", "type", "cases", "persona", "system")
_BUILT = ("vector", "trait", "type", "cases", "persona")  # the sources that are steering vectors


def _check_source(args) -> None:
    """At most one of --vector/--trait/--type/--cases/--persona/--system, each well-formed; before any model work."""
    from pas.space.poles import parse_pole, type_poles

    given = [f"--{name}" for name in SOURCES if getattr(args, name, None)]
    if len(given) > 1:
        raise SystemExit(f"give one of {', '.join(given)}, not several")
    try:
        if getattr(args, "trait", None):
            parse_pole(args.trait)
        if getattr(args, "type", None):
            type_poles(args.type)
    except ValueError as e:
        raise SystemExit(str(e)) from None
    if getattr(args, "cases", None) and not Path(args.cases).is_file():
        raise SystemExit(f"--cases {args.cases}: no such file (one subject id per line)")
    if getattr(args, "persona", None) is not None and not args.persona.strip():
        raise SystemExit("--persona is empty: give the persona's text")
    if getattr(args, "strength", None) is not None and not any(getattr(args, n, None) for n in _BUILT):
        raise SystemExit("--strength needs --vector, --trait, --type, --cases or --persona")


def _read_cases(path: str) -> list[str]:
    cases = [line.split("#")[0].strip() for line in Path(path).read_text().splitlines()]
    cases = [c for c in cases if c]
    if not cases:
        raise SystemExit(f"--cases {path}: no subject ids in it (one per line)")
    return cases


def _steering_source(args, model, tok, scorer=None, data=None):
    """``(vector, system)`` from --vector/--trait/--type/--cases/--persona/--system (a trait, type, group or
    persona is built on the short-form questionnaire prompts here, in seconds); checked against ``model``."""
    from pas.steer.vector import SteeringVector

    if args.vector:
        vector = SteeringVector.load(args.vector)
        vector = vector.for_weights_of(model) if args.allow_other_weights else vector
        vector.check_model(model)
        return vector, None
    if not (args.trait or args.type or args.cases or args.persona):
        return None, getattr(args, "system", None)
    from pas.space import poles as traits
    from pas.core.data import load_papi, select_subjects
    from pas.score.scorer import ItemScorer

    data = data or load_papi(args.data_dir, encoding=args.encoding)
    scorer = scorer or ItemScorer(model, tok, data.bank)
    if args.trait:
        return traits.pole_vectors(scorer, [args.trait])[traits.pole_name(args.trait)], None
    if args.type:
        return traits.type_vector(scorer, args.type), None
    if args.persona:
        from pas.space.persona import persona_vector

        return persona_vector(scorer, args.persona), None
    people = select_subjects(data.subjects, _read_cases(args.cases))
    return traits.group_vector(scorer, people, name=f"group of {len(people)} ({Path(args.cases).name})"), None


def cmd_eval(args) -> int:
    from pas.core.data import load_papi
    from pas.eval.dpo import DPOSettings
    from pas.eval.methods import NEEDS_MODEL, MethodContext
    from pas.eval.report import dumps, markdown_table, summarize, summarize_method
    from pas.eval.run import run_methods, run_settings

    unknown = [m for m in args.method if m not in METHODS]
    if unknown:
        raise SystemExit(f"unknown method(s) {unknown}; choose from {list(METHODS)}")
    data = load_papi(args.data_dir, encoding=args.encoding)
    subjects = _subjects(args, data)
    ctx = MethodContext(data.bank, data.subjects, pas_config=_pas_config(args),
                        dpo_settings=DPOSettings(epochs=args.dpo_epochs, lr=args.dpo_lr), adapter_dir=args.adapter_dir,
                        reverse_options=args.reverse_options)
    ctx.vectors = _load_vectors(args, subjects)
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
    records = run_methods(ctx, subjects, args.method, out=Path(args.out) if args.out else None, settings=settings,
                          progress=not args.json, on_method_done=done)
    if not args.json:
        print(f"{len(subjects)} subject(s); composite = sum over O C E A N of mean |answer - person's response| "
              f"on the 180 held-out items (lower is better, 0..20); papi_published = the paper's way "
              f"(answer vs stored keyed score), for comparison with its tables only"
              + ("; reversed options: the same methods, nothing refitted, options listed E..A "
                 "(gain kept = share of the gain over always-3 that survives)" if args.reverse_options else ""))
        print(markdown_table(summarize(records)))
    return 0


def cmd_align(args) -> int:
    from pas.fit.align import fit_subject
    from pas.core.data import load_papi, select_subjects
    from pas.core.models import load_model
    from pas.score.scorer import ItemScorer
    from pas.steer.vector import check_writable

    out = check_writable(args.out, overwrite=args.overwrite)  # before any model work
    data = load_papi(args.data_dir, encoding=args.encoding)
    (subject,) = select_subjects(data.subjects, [args.subject])
    model, tok = load_model(args.model, dtype=args.dtype)
    t = time.perf_counter()
    vector, report = fit_subject(model, subject, _pas_config(args), tokenizer=tok, bank=data.bank,
                                 scorer=ItemScorer(model, tok, data.bank), progress=True)
    path = vector.save(out, overwrite=args.overwrite)
    how = (f"gated layer {report.gated['layer']}, gain {report.gated['gain']:g}, shift {report.gated['shift']:g}"
           if report.gated else f"alpha {report.alpha:.3g}, learned best step {report.best_step}")
    print(f"{vector}\nsaved to {path} in {time.perf_counter() - t:.1f} s ({how}, heads {len(vector.heads)})")
    return 0


def cmd_chat(args) -> int:
    from pas.steer.chat import chat_loop, generate
    from pas.steer.fluency import PERPLEXITY_BOUND, chat_strength, check_strength
    from pas.core.models import load_model

    strength = None if args.strength is None else check_strength(args.strength)  # before any model work
    _check_source(args)
    model, tok = load_model(args.model, dtype=args.dtype)
    if args.adapter:
        from pas.eval.dpo import load_adapter

        model = load_adapter(model, args.adapter)
    vector, system = _steering_source(args, model, tok)
    if vector is not None:
        if strength is None:
            strength, ratios = chat_strength(model, tok, vector)
            tried = ", ".join(f"{s:g}: {r:.2f}x" for s, r in ratios.items())
            print(f"chat strength {strength:g}: the largest whose perplexity on neutral replies stays within "
                  f"{PERPLEXITY_BOUND}x base (tried {tried}); set --strength to override", file=sys.stderr)
        vector = vector * strength
    if args.prompt is not None:
        print(generate(model, tok, args.prompt, vector, max_new_tokens=args.max_new_tokens, system=system))
        return 0
    chat_loop(model, tok, vector, max_new_tokens=args.max_new_tokens, system=system)
    return 0


def cmd_assess(args) -> int:
    from pas.score.assess import assess, inventory_ids, keyed_means
    from pas.core.data import load_papi
    from pas.steer.fluency import check_strength
    from pas.core.models import load_model
    from pas.score.prompts import PromptTemplate
    from pas.eval.report import dumps
    from pas.score.scorer import ItemScorer

    _check_source(args)
    strength = None if args.strength is None else check_strength(args.strength)
    data = load_papi(args.data_dir, encoding=args.encoding)
    model, tok = load_model(args.model, dtype=args.dtype)
    scorer = ItemScorer(model, tok, data.bank, PromptTemplate(prefill=args.prefill), progress=not args.json)
    vector, system = _steering_source(args, model, tok, scorer, data)
    if vector is not None and strength is not None:
        vector = vector * strength
    result = assess(scorer, inventory_ids(data.bank, args.items), steering=vector, system=system,
                    people=data.subjects)
    what = (f"vector {args.vector}" if args.vector else f"trait {args.trait}" if args.trait
            else f"type {args.type}" if args.type else f"group {args.cases}" if args.cases
            else "persona vector" if args.persona else "system prompt" if system else "unsteered")
    what += f", strength {strength:g}" if strength is not None else ""
    # a saved person's vector: show that person's own scores on the same items beside the model's
    owner = next((p for p in data.subjects if vector is not None and p.case == vector.subject), None)
    own = keyed_means(data.bank, owner.responses_to(result.items))[0] if owner else {}
    if args.json:
        print(dumps({"model": args.model or "SmolLM2-135M-Instruct", "source": what, "items": args.items,
                     **result.to_json(), "person": ({"case": owner.case, "domains": own} if owner else None)}))
        return 0
    print(f"IPIP-NEO assessment ({what}; {len(result.items)} items; keyed mean 1..5, percentile among the "
          f"{len(data.subjects)} people of {data.root} on the same items)")
    extra = f" person {owner.case} |" if owner else ""
    print(f"| domain | score | expected-answer score | percentile |{extra}\n|---|---|---|---|{'---|' if owner else ''}")
    for d, v in result.domains.items():
        pct = result.percentiles.get(d) if result.percentiles else None
        mine = f" {own[d]:.2f} |" if owner and d in own else (" — |" if owner else "")
        print(f"| {d} | {v:.2f} | {result.domains_expected[d]:.2f} | {'' if pct is None else f'{pct:.0f}'} |{mine}")
    print("facets: " + ", ".join(f"{f} {v:.2f}" for f, v in result.facets.items()))
    print(f"letter mass {result.letter_mass:.3f}")
    return 0


def cmd_traits(args) -> int:
    from pas.core.data import load_papi
    from pas.core.models import load_model
    from pas.score.scorer import ItemScorer
    from pas.steer.vector import check_writable
    from pas.space.poles import POLES, TYPES, pole_vectors, type_vector

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise SystemExit(f"--out {out} is a file, not a directory")
    names = list(POLES) + (list(TYPES) if args.types else [])
    paths = {n: check_writable(out / f"{n}.safetensors", overwrite=args.overwrite) for n in names}  # before work
    data = load_papi(args.data_dir, encoding=args.encoding)
    model, tok = load_model(args.model, dtype=args.dtype)
    t = time.perf_counter()
    poles = pole_vectors(ItemScorer(model, tok, data.bank), source=args.source, people=data.subjects)
    built = dict(poles)
    if args.types:
        built.update({m: type_vector(None, m, poles) for m in TYPES})
    seconds = time.perf_counter() - t
    for n in names:
        built[n].save(paths[n], overwrite=args.overwrite)
    source = ("the short-form statements" if args.source == "statements"
              else f"the short-form answers of {len(data.subjects)} people (top vs bottom quartile)")
    print(f"{len(names)} vectors ({', '.join(names)}) built in {seconds:.1f} s from {source}; saved under {out}")
    return 0


def cmd_persona(args) -> int:
    from pas.core.data import load_papi
    from pas.core.models import load_model
    from pas.space.persona import context_tokens, persona_vector
    from pas.score.scorer import ItemScorer
    from pas.steer.vector import check_writable

    if sum(bool(x) for x in (args.text, args.file, args.describe)) != 1:
        raise SystemExit("give the persona's text, or --file FILE, or --describe CASE (one of them)")
    out = check_writable(args.out, overwrite=args.overwrite)  # before any model work
    data = load_papi(args.data_dir, encoding=args.encoding)
    if args.describe:
        from pas.core.data import select_subjects
        from pas.eval.methods import description_text

        text = description_text(data.bank, select_subjects(data.subjects, [args.describe])[0], "template")
        print(text)
    else:
        text = Path(args.file).read_text() if args.file else args.text
    if not text or not text.strip():
        raise SystemExit("the persona's text is empty")
    model, tok = load_model(args.model, dtype=args.dtype)
    t = time.perf_counter()
    vector = persona_vector(ItemScorer(model, tok, data.bank), text, construction=args.construction)
    path = vector.save(out, overwrite=args.overwrite)
    print(f"{vector}\nsaved to {path} in {time.perf_counter() - t:.1f} s ({args.construction}"
          + (f", strength {vector.config['strength']:g}" if "strength" in vector.config else "")
          + f"); as a system prompt it would cost {context_tokens(tok, text)} tokens per call")
    if vector.config.get("strength") == 0:
        print("note: with this persona as system prompt the model answers the questionnaire prompts as it does "
              "without it, so there is nothing to distil: the vector is zero", file=sys.stderr)
    return 0


def _add_source_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--vector", help="steering vector file (.safetensors)")
    p.add_argument("--trait", metavar="POLE", help="steer to a trait pole: O+ O- C+ C- E+ E- A+ A- N+ N-")
    p.add_argument("--type", metavar="MBTI", help="steer to an MBTI type (e.g. INFP): the sum of its four poles")
    p.add_argument("--cases", metavar="FILE", help="steer to a group: a file of subject ids (one per line) "
                                                   "whose mean short-form answers become one vector")
    p.add_argument("--persona", metavar="TEXT", help="steer to a written persona, distilled into a vector "
                                                     "(pas.space.persona; no prompt at use)")
    p.add_argument("--system", metavar="TEXT", help="a system prompt instead of steering (e.g. a persona)")


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
    _add_pas_args(p)
    _add_threads_arg(p)
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("align", help="learn a subject's steering vector and save it")
    _add_data_args_no_subjects(p)
    p.add_argument("--subject", required=True, metavar="CASE", help="subject id")
    p.add_argument("--out", required=True, help="output .safetensors file")
    p.add_argument("--overwrite", "--force", action="store_true", help="replace --out if it exists")
    _add_model_args(p)
    _add_pas_args(p)
    _add_threads_arg(p)
    p.set_defaults(func=cmd_align)

    p = sub.add_parser("chat", help="chat with the model, steered by a saved vector, a trait pole, a type, a group or "
                                    "a persona, or prompted by a system prompt")
    _add_model_args(p)
    _add_data_args_no_subjects(p)
    _add_source_args(p)
    p.add_argument("--adapter", help="a subject's saved DPO adapter folder (pas eval --method dpo --adapter-dir)")
    p.add_argument("--strength", type=float, default=None,
                   help="multiply the vector by this (1 = as learned for questionnaires, which is too strong for "
                        "free text; default: the largest strength whose perplexity on neutral replies stays "
                        "within 1.3x base, measured at start)")
    p.add_argument("--prompt", help="one-shot: answer this and exit")
    p.add_argument("--max-new-tokens", type=int, default=128, help="tokens to generate per reply (default 128)")
    _add_threads_arg(p)
    p.set_defaults(func=cmd_chat)

    p = sub.add_parser("assess", help="give the model the IPIP-NEO inventory and score it like a person")
    _add_data_args_no_subjects(p)
    _add_model_args(p)
    _add_source_args(p)
    p.add_argument("--strength", type=float, default=None, help="multiply the steering vector by this")
    p.add_argument("--items", choices=["120", "180", "300"], default="300",
                   help="which items: the short form (120), the other 180 (vectors built from the short form "
                        "are assessed on these), or all 300 (default)")
    p.add_argument("--prefill", default="(", help="text that starts the assistant turn before the letter (default '(')")
    p.add_argument("--json", action="store_true", help="JSON with domains, facets, percentiles and per-item answers")
    _add_threads_arg(p)
    p.set_defaults(func=cmd_assess)

    p = sub.add_parser("traits", help="build the ten trait-pole vectors (and the 16 types) and save them")
    _add_data_args_no_subjects(p)
    _add_model_args(p)
    p.add_argument("--out", required=True, help="folder for O+.safetensors ... N-.safetensors")
    p.add_argument("--types", action="store_true", help="also save the 16 MBTI type vectors (ENFP.safetensors...)")
    p.add_argument("--source", choices=POLE_SOURCES, default="statements",
                   help="build each pole from the keying of its domain's statements (default) or from how the "
                        "data dir's top and bottom quartile on the domain answer them")
    p.add_argument("--overwrite", "--force", action="store_true", help="replace existing files")
    _add_threads_arg(p)
    p.set_defaults(func=cmd_traits)

    p = sub.add_parser("persona", help="distil a written persona into a steering vector and save it")
    p.add_argument("text", nargs="?", help="the persona, e.g. \"a retired nurse who volunteers at the library\"")
    p.add_argument("--file", help="read the persona from this text file instead")
    p.add_argument("--describe", metavar="CASE", help="use PAPI subject CASE's description written by a fixed "
                                                      "template from their 120 known answers (printed)")
    p.add_argument("--out", required=True, help="output .safetensors file")
    p.add_argument("--construction", choices=CONSTRUCTIONS, default="contrast",
                   help="contrast: mean head-output change the persona prompt makes (default); profile: the "
                        "prompted model's answers as a gated profile; poles: the prompted model's domain shifts "
                        "as trait-pole coefficients")
    p.add_argument("--overwrite", "--force", action="store_true", help="replace --out if it exists")
    _add_data_args_no_subjects(p)
    _add_model_args(p)
    _add_threads_arg(p)
    p.set_defaults(func=cmd_persona)
    return parser


def apply_threads(threads: int | None) -> None:
    """``--threads``: torch's intra-op threads, set before any model work."""
    if threads is None:
        return
    if threads < 1:
        raise SystemExit(f"--threads must be >= 1, got {threads}")
    import torch

    torch.set_num_threads(threads)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    apply_threads(args.threads)
    try:
        return args.func(args)
    except (ValueError, OSError) as e:
        print(f"pas {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
