"""Arguments shared by the ``pas`` commands: data, model, threads, fit settings, steering source."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from pas.core.data import PapiData, Subject, select_subjects
from pas.fit.config import KINDS, FitConfig, GatedConfig, PASConfig, field_docs
from pas.space.spec import SteeringSpec, read_cases


def add_data_args(p: argparse.ArgumentParser, subjects: bool = True) -> None:
    """``--data-dir``, ``--encoding``, and with ``subjects`` also ``--subject`` / ``--first``."""
    p.add_argument("--data-dir", help="PAPI data directory (default: $PAPI_DATA_DIR, else ./papi or ../shared/papi)")
    p.add_argument("--encoding", choices=["keyed", "responses"],
                   help="what the data dir's stored values are (default: its papi.json, else keyed as in PAPI)")
    if subjects:
        p.add_argument("--subject", action="append", default=[], metavar="CASE", help="subject id (repeatable)")
        p.add_argument("--first", type=int, help="use the first N subjects of the data dir (N >= 1)")


def add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", help="Hugging Face id or folder (default: embedded SmolLM2-135M-Instruct)")
    p.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"], help="model dtype (default fp32)")
    p.add_argument("--allow-other-weights", action="store_true",
                   help="accept --vector files made on other weights of the same architecture (a fine-tuned variant)")


def add_threads_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threads", type=int, help="torch threads (default: $OMP_NUM_THREADS or torch's choice)")


def _boolean(text: str) -> bool:
    return text.lower() in ("1", "true", "yes")


def add_fit_args(p: argparse.ArgumentParser) -> None:
    """``--kind`` and one flag per field of :class:`PASConfig` and :class:`GatedConfig` (help from their docs)."""
    p.add_argument("--kind", choices=list(KINDS), default=None,
                   help="constant: PAS offsets (default); gated: offsets that follow each statement")
    seen: set[str] = set()
    for config in (PASConfig, GatedConfig):
        docs = field_docs(config)
        for f in dataclasses.fields(config):
            if f.name in seen:
                continue
            seen.add(f.name)
            flag = "--" + f.name.replace("_", "-")
            which = "" if f.name == "seed" else f"{'gated' if config is GatedConfig else 'constant'}: "
            if f.type in ("bool", bool):
                p.add_argument(flag, type=_boolean, default=None,
                               help=f"{which}{docs[f.name]} (true/false; default {f.default})")
            elif f.name == "alpha_grid":
                p.add_argument(flag, type=lambda s: tuple(float(x) for x in s.split(",")), default=None,
                               help=f"{which}{docs[f.name]}, comma-separated (default "
                                    f"{','.join(map(str, f.default))})")
            else:
                typ = {"int": int, "float": float, "str": str}.get(str(f.type), str)
                p.add_argument(flag, type=typ, default=None, help=f"{which}{docs[f.name]} (default {f.default})")


def fit_config(args: argparse.Namespace, kind: str | None = None) -> FitConfig:
    """The config ``--kind`` names (``kind`` overrides it), from the flags given; a flag of the other kind is
    refused rather than ignored."""
    kind = kind or getattr(args, "kind", None) or "constant"
    config = KINDS[kind]
    mine = {f.name for f in dataclasses.fields(config)}
    other = [f.name for c in KINDS.values() if c is not config for f in dataclasses.fields(c) if f.name not in mine]
    stray = [n for n in other if getattr(args, n, None) is not None]
    if stray:
        flags = ", ".join("--" + n.replace("_", "-") for n in stray)
        raise SystemExit(f"{flags} do not apply to --kind {kind}")
    return config_from(args, config)


def config_from(args: argparse.Namespace, config: type) -> FitConfig:
    """A ``config`` (PASConfig or GatedConfig) from the flags of its fields that were given."""
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(config) if getattr(args, f.name, None) is not None}
    return config(**given)


def subjects(args: argparse.Namespace, data: PapiData) -> list[Subject]:
    """The subjects ``--subject`` / ``--first`` name."""
    if not args.subject and args.first is None:
        raise SystemExit("name subjects with --subject CASE (repeatable) or --first N")
    if args.subject and args.first is not None:
        raise SystemExit("give --subject or --first, not both")
    chosen = select_subjects(data.subjects, args.subject, args.first)
    if args.first is not None and args.first > len(data.subjects):
        print(f"note: --first {args.first} is more than the {len(data.subjects)} subjects of {data.root}; "
              f"running all {len(data.subjects)}", file=sys.stderr)
    return chosen


SOURCE_FLAGS = ("vector", "trait", "type", "cases", "persona")  # the flags that name a steering vector


def add_source_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--vector", help="steering vector file (.safetensors)")
    p.add_argument("--trait", metavar="POLE", help="steer to a trait pole: O+ O- C+ C- E+ E- A+ A- N+ N-")
    p.add_argument("--type", metavar="MBTI", help="steer to an MBTI type (e.g. INFP): the sum of its four poles")
    p.add_argument("--cases", metavar="FILE", help="steer to a group: a file of subject ids (one per line) "
                                                   "whose mean short-form answers become one vector")
    p.add_argument("--persona", metavar="TEXT", help="steer to a written persona, distilled into a vector "
                                                     "(pas.space.persona; no prompt at use)")
    p.add_argument("--system", metavar="TEXT", help="a system prompt instead of steering (e.g. a persona)")


def steering_spec(args: argparse.Namespace) -> SteeringSpec:
    """The steering source the flags name, checked before any model work (``--system`` is not a vector)."""
    given = [f"--{n}" for n in (*SOURCE_FLAGS, "system") if getattr(args, n, None) is not None]
    if len(given) > 1:
        raise SystemExit(f"give one of {', '.join(given)}, not several")
    if getattr(args, "strength", None) is not None and not any(getattr(args, n, None) for n in SOURCE_FLAGS):
        raise SystemExit("--strength needs --vector, --trait, --type, --cases or --persona")
    cases: tuple[str, ...] | None = None
    if getattr(args, "persona", None) is not None and not args.persona.strip():
        raise SystemExit("--persona is empty: give the persona's text")
    try:
        if getattr(args, "cases", None) is not None:
            if not Path(args.cases).is_file():
                raise SystemExit(f"--cases {args.cases}: no such file (one subject id per line)")
            cases = read_cases(args.cases)
        return SteeringSpec(vector=args.vector, trait=args.trait, type=args.type, cases=cases, persona=args.persona)
    except (ValueError, OSError) as e:
        raise SystemExit(str(e)) from None


def apply_threads(threads: int | None) -> None:
    """``--threads``: torch's intra-op threads, set before any model work."""
    if threads is None:
        return
    if threads < 1:
        raise SystemExit(f"--threads must be >= 1, got {threads}")
    import torch

    torch.set_num_threads(threads)

