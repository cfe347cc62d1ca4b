"""``pas align``, ``pas chat``, ``pas assess``, ``pas traits``, ``pas persona``: parsing and running each."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from pas.cli.args import (
    Subparsers,
    UsageError,
    add_data_args,
    add_fit_args,
    add_model_args,
    add_source_args,
    add_threads_arg,
    created_dirs,
    fit_config,
    read_text_arg,
    steering_spec,
    writable_out,
)
from pas.cli.sources import check_system_fits, vector_from_args
from pas.space.persona import CONSTRUCTIONS
from pas.space.poles import POLE_SOURCES

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase



def add_parsers(sub: Subparsers) -> None:
    """The sub-commands of this module."""
    _add_align(sub)
    _add_chat(sub)
    _add_assess(sub)
    _add_traits(sub)
    _add_persona(sub)


def _add_align(sub: Subparsers) -> None:
    p = sub.add_parser("align", help="learn a subject's steering vector and save it")
    add_data_args(p, subjects=False)
    p.add_argument("--subject", required=True, metavar="CASE", help="subject id")
    p.add_argument("--out", required=True, help="output .safetensors file")
    p.add_argument("--overwrite", "--force", action="store_true", help="replace --out if it exists")
    add_model_args(p)
    add_fit_args(p, {"population": "the vector made in closed form from the subject's known answers by a "
                                   "population map (--map; pas population-map), no fitting"})
    p.add_argument("--map", metavar="MAP", help="--kind population: the population map file")
    add_threads_arg(p)
    p.set_defaults(func=cmd_align)


def _add_chat(sub: Subparsers) -> None:
    p = sub.add_parser("chat", help="chat with the model, steered by a saved vector, a trait pole, a type, a group or "
                                    "a persona, or prompted by a system prompt")
    add_model_args(p)
    add_data_args(p, subjects=False)
    add_source_args(p)
    p.add_argument("--adapter", help="a subject's saved DPO adapter folder (pas eval --method dpo --adapter-dir)")
    p.add_argument("--strength", type=float, default=None,
                   help="multiply the vector by this (1 = as learned for questionnaires, which is too strong for "
                        "free text; default: the largest strength whose perplexity on neutral replies stays "
                        "within 1.3x base, measured at start)")
    p.add_argument("--prompt", help="one-shot: answer this and exit")
    p.add_argument("--max-new-tokens", type=int, default=128, help="tokens to generate per reply (default 128)")
    add_threads_arg(p)
    p.set_defaults(func=cmd_chat)


def _add_assess(sub: Subparsers) -> None:
    p = sub.add_parser("assess", help="give the model the IPIP-NEO inventory and score it like a person")
    add_data_args(p, subjects=False)
    add_model_args(p)
    add_source_args(p)
    p.add_argument("--strength", type=float, default=None, help="multiply the steering vector by this")
    p.add_argument("--items", choices=["120", "180", "300"], default="300",
                   help="which items: the short form (120), the other 180 (vectors built from the short form "
                        "are assessed on these), or all 300 (default)")
    p.add_argument("--prefill", default="(", help="text that starts the assistant turn before the letter (default '(')")
    p.add_argument("--json", action="store_true", help="JSON with domains, facets, percentiles and per-item answers")
    add_threads_arg(p)
    p.set_defaults(func=cmd_assess)


def _add_traits(sub: Subparsers) -> None:
    p = sub.add_parser("traits", help="build the ten trait-pole vectors (and the 16 types) and save them")
    add_data_args(p, subjects=False)
    add_model_args(p)
    p.add_argument("--out", required=True, help="folder for O+.safetensors ... N-.safetensors")
    p.add_argument("--types", action="store_true", help="also save the 16 MBTI type vectors (ENFP.safetensors...)")
    p.add_argument("--source", choices=POLE_SOURCES, default="statements",
                   help="build each pole from the keying of its domain's statements (default) or from how the "
                        "data dir's top and bottom quartile on the domain answer them")
    p.add_argument("--overwrite", "--force", action="store_true", help="replace existing files")
    add_threads_arg(p)
    p.set_defaults(func=cmd_traits)


def _add_persona(sub: Subparsers) -> None:
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
    add_data_args(p, subjects=False)
    add_model_args(p)
    add_threads_arg(p)
    p.set_defaults(func=cmd_persona)


def _interactive() -> bool:
    """Progress bars only on a terminal: in a log file they are a wall of carriage returns."""
    return sys.stderr.isatty()


def _check_chat_fits(args: argparse.Namespace, model: PreTrainedModel, tok: PreTrainedTokenizerBase) -> None:
    """``--system`` and ``--prompt`` with room for ``--max-new-tokens``, counted before any other work."""
    from pas.steer.chat import check_fits

    system, prompt = getattr(args, "system", None), args.prompt
    given = {flag: len(text) for flag, text in (("--system", system), ("--prompt", prompt)) if text}
    if not given:
        return
    messages = ([{"role": "system", "content": system}] if system else []) + (
        [{"role": "user", "content": prompt}] if prompt else [])
    longest = max(given, key=given.__getitem__)  # named alone when it is nearly all of the text
    what = longest if given[longest] >= 0.9 * sum(given.values()) else "--system and --prompt together"
    check_fits(tok, model, messages, reserve=args.max_new_tokens, what=what,
               reserve_for=f"the reply (--max-new-tokens {args.max_new_tokens})")


def cmd_align(args: argparse.Namespace) -> int:
    from pas.core.data import load_papi, select_subjects
    from pas.core.models import load_model
    from pas.fit.align import fit_subject
    from pas.score.scorer import ItemScorer

    if args.kind == "population" or args.map is not None:
        return _align_from_map(args)
    config = fit_config(args)
    data = load_papi(args.data_dir, encoding=args.encoding)
    (subject,) = select_subjects(data.subjects, [args.subject])  # an unknown subject creates no --out folders
    with created_dirs(args.out):  # a failure from here on removes the folders made for --out
        out = writable_out(args.out, args.overwrite)  # before any model work
        model, tok = load_model(args.model, dtype=args.dtype)
        t = time.perf_counter()
        progress = _interactive()
        if not progress:
            print(f"pas align: fitting subject {subject.case} ({type(config).__name__}); this takes minutes on a CPU "
                  f"(progress bars show when stderr is a terminal)", file=sys.stderr, flush=True)
        vector, report = fit_subject(model, subject, config, tokenizer=tok, bank=data.bank,
                                     scorer=ItemScorer(model, tok, data.bank), progress=progress)
        path = vector.save(out, overwrite=args.overwrite)
    how = (f"gated layer {report.gated.layer}, gain {report.gated.gain:g}, shift {report.gated.shift:g}"
           if report.gated else f"alpha {report.alpha:.3g}, learned best step {report.best_step}")
    print(f"{vector}\nsaved to {path} in {time.perf_counter() - t:.1f} s ({how}, heads {len(vector.heads)})")
    if report.adds_nothing:
        hint = "; try --kind gated (offsets that follow each statement)" if report.gated is None else ""
        print(f"note: steered by this vector the model answers 'Neither' to all {len(report.known_answers)} known "
              f"items, as always-3 does: it adds nothing over always-3 on the known items{hint}", file=sys.stderr)
    return 0


def _align_from_map(args: argparse.Namespace) -> int:
    """``pas align --kind population --map MAP``: the subject's vector from a population map, in closed form."""
    from pas.core.data import load_papi, select_subjects
    from pas.core.models import load_model
    from pas.population.informed import PopulationMap

    if args.kind != "population" or args.map is None:
        raise UsageError("a population vector needs both --kind population and --map MAP (pas population-map)")
    data = load_papi(args.data_dir, encoding=args.encoding)
    (subject,) = select_subjects(data.subjects, [args.subject])
    pmap = PopulationMap.load(args.map)
    if pmap.bank is not None and pmap.bank != data.bank.fingerprint():
        raise UsageError(f"{args.map} was fitted on another item bank ({pmap.bank}, this data dir's is "
                         f"{data.bank.fingerprint()}); fit a map on this data dir's items")
    with created_dirs(args.out):
        out = writable_out(args.out, args.overwrite)
        model, _ = load_model(args.model, dtype=args.dtype)
        pmap.signature.check(model)  # a map for another model: a clear error before anything is written
        t = time.perf_counter()
        vector = pmap.vector(subject)
        seconds = time.perf_counter() - t
        path = vector.save(out, overwrite=args.overwrite)
    print(f"{vector}\nsaved to {path}: made from the map ({pmap.setting}, {pmap.people} people) in "
          f"{seconds * 1000:.1f} ms (gated layer {pmap.layer}, gain {pmap.gain:g}, shift {pmap.shift:g})")
    return 0


def cmd_chat(args: argparse.Namespace) -> int:
    from pas.core.models import load_model
    from pas.steer.chat import chat_loop, generate
    from pas.steer.fluency import PERPLEXITY_BOUND, chat_strength, check_strength

    strength = None if args.strength is None else check_strength(args.strength)  # before any model work
    spec = steering_spec(args)
    if args.prompt is not None and not args.prompt.strip():
        raise UsageError("--prompt is empty: give a message, or leave --prompt out to chat interactively")
    if args.max_new_tokens < 1:
        raise UsageError(f"--max-new-tokens must be >= 1, got {args.max_new_tokens}")
    model, tok = load_model(args.model, dtype=args.dtype)
    _check_chat_fits(args, model, tok)  # before building a vector or measuring its strength
    if args.adapter:
        from pas.eval.dpo import load_adapter

        model = load_adapter(model, args.adapter)
    vector, system = vector_from_args(args, spec, model, tok)
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


def cmd_assess(args: argparse.Namespace) -> int:
    from pas.core.data import load_papi
    from pas.core.models import load_model
    from pas.eval.report import dumps
    from pas.score.assess import assess, inventory_ids, keyed_means
    from pas.score.prompts import PromptTemplate
    from pas.score.scorer import ItemScorer
    from pas.steer.fluency import check_strength

    spec = steering_spec(args)
    strength = None if args.strength is None else check_strength(args.strength)
    data = load_papi(args.data_dir, encoding=args.encoding)
    model, tok = load_model(args.model, dtype=args.dtype)
    scorer = ItemScorer(model, tok, data.bank, PromptTemplate(prefill=args.prefill),
                        progress=not args.json and _interactive())
    if args.system:
        check_system_fits(scorer, args.system, "--system")
    vector, system = vector_from_args(args, spec, model, tok, scorer, data)
    if vector is not None and strength is not None:
        vector = vector * strength
    result = assess(scorer, inventory_ids(data.bank, args.items), steering=vector, system=system,
                    people=data.subjects)
    what = (f"vector {args.vector}" if args.vector
            else f"person {args.person} of store {args.store}" if args.store
            else f"trait {args.trait}" if args.trait else f"type {args.type}" if args.type
            else f"group {args.cases}" if args.cases
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


def cmd_traits(args: argparse.Namespace) -> int:
    from pas.core.data import load_papi
    from pas.core.models import load_model
    from pas.score.scorer import ItemScorer
    from pas.space.poles import POLES, TYPES, pole_vectors, type_vector

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file, not a directory; give a folder for the vector files")
    names = list(POLES) + (list(TYPES) if args.types else [])
    data = load_papi(args.data_dir, encoding=args.encoding)
    with created_dirs(out, is_dir=True):  # a failure from here on removes the folders made for --out
        paths = {n: writable_out(out / f"{n}.safetensors", args.overwrite) for n in names}  # before any model work
        model, tok = load_model(args.model, dtype=args.dtype)
        t = time.perf_counter()
        print(f"pas traits: building {len(names)} vectors from {args.source}", file=sys.stderr, flush=True)
        poles = pole_vectors(ItemScorer(model, tok, data.bank, progress=_interactive()), source=args.source,
                             people=data.subjects)
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


def cmd_persona(args: argparse.Namespace) -> int:
    from pas.core.data import load_papi
    from pas.core.models import load_model
    from pas.score.scorer import ItemScorer
    from pas.space.persona import context_tokens, fit_persona

    if sum(bool(x) for x in (args.text, args.file, args.describe)) != 1:
        raise UsageError("give the persona's text, or --file FILE, or --describe CASE (one of them)")
    text = read_text_arg(args.file, "--file", "the persona") if args.file else args.text
    if text is not None and not text.strip():
        raise UsageError(f"the persona's text is empty{f' (--file {args.file})' if args.file else ''}")
    data = load_papi(args.data_dir, encoding=args.encoding)
    if args.describe:
        from pas.core.data import select_subjects
        from pas.eval.methods import description_text

        text = description_text(data.bank, select_subjects(data.subjects, [args.describe])[0], "template")
        print(text)
    with created_dirs(args.out):  # a failure from here on removes the folders made for --out
        out = writable_out(args.out, args.overwrite)  # before any model work
        model, tok = load_model(args.model, dtype=args.dtype)
        scorer = ItemScorer(model, tok, data.bank, progress=_interactive())
        check_system_fits(scorer, text, "--file" if args.file else f"the description of {args.describe}"
                           if args.describe else "the persona's text")
        t = time.perf_counter()
        print(f"pas persona: distilling the persona ({args.construction}) on the short-form questionnaire prompts",
              file=sys.stderr, flush=True)
        vector, facts = fit_persona(scorer, text, construction=args.construction)
        path = vector.save(out, overwrite=args.overwrite)
    print(f"{vector}\nsaved to {path} in {time.perf_counter() - t:.1f} s ({args.construction}"
          + (f", strength {facts.strength:g}" if facts.strength is not None else "")
          + f"); as a system prompt it would cost {context_tokens(tok, text)} tokens per call")
    if facts.strength == 0:
        print("note: with this persona as system prompt the model answers the questionnaire prompts as it does "
              "without it, so there is nothing to distil: the vector is zero", file=sys.stderr)
    return 0

