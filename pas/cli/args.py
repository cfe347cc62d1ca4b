"""Arguments shared by the ``pas`` commands: data, model, threads, fit settings, steering source.

A bad flag value or combination raises :class:`UsageError`; ``pas`` prints it as
``pas <cmd>: error: <message>`` and exits 2 (:func:`pas.cli.main.main`).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar, cast

from pas.core.data import PapiData, Subject, select_subjects
from pas.fit.config import KINDS, FitConfig, GatedConfig, PASConfig, field_docs
from pas.space.spec import SteeringSpec, read_cases

ConfigT = TypeVar("ConfigT", PASConfig, GatedConfig)
Subparsers = argparse._SubParsersAction  # what ArgumentParser.add_subparsers gives: each command adds its parser
TRUE_WORDS, FALSE_WORDS = ("true", "yes", "1"), ("false", "no", "0")


class UsageError(ValueError):
    """A bad flag value, flag combination or input file: exit status 2, message prefixed ``pas <cmd>: error:``."""


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
    p.add_argument("--allow-other-items", action="store_true",
                   help="accept --vector files fitted on another item bank than the data dir's (with a warning)")


def add_threads_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threads", type=int, help="torch threads (default: $OMP_NUM_THREADS or torch's choice)")


def _boolean(text: str) -> bool:
    """true/false, yes/no or 1/0 in any case; any other word is an error naming the flag (argparse adds it)."""
    word = text.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, yes/no or 1/0, got {text!r}")


def add_fit_args(p: argparse.ArgumentParser, more_kinds: Mapping[str, str] | None = None) -> None:
    """``--kind`` and one flag per field of :class:`PASConfig` and :class:`GatedConfig` (help from their docs);
    ``more_kinds``: kinds a command adds (name -> help)."""
    more = dict(more_kinds or {})
    p.add_argument("--kind", choices=[*KINDS, *more], default=None,
                   help="constant: PAS offsets (default); gated: offsets that follow each statement"
                        + "".join(f"; {k}: {h}" for k, h in more.items()))
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
                                    f"{','.join(map(str, cast('tuple[float, ...]', f.default)))})")
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
        raise UsageError(f"{flags} do not apply to --kind {kind}")
    return config_from(args, config)


def config_from(args: argparse.Namespace, config: type[ConfigT]) -> ConfigT:
    """A ``config`` (PASConfig or GatedConfig) from the flags of its fields that were given."""
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(config)
             if getattr(args, f.name, None) is not None}
    return config(**given)


def subjects(args: argparse.Namespace, data: PapiData) -> list[Subject]:
    """The subjects ``--subject`` / ``--first`` name; a repeated ``--subject`` counts once (with a note)."""
    if not args.subject and args.first is None:
        raise UsageError("name subjects with --subject CASE (repeatable) or --first N")
    if args.subject and args.first is not None:
        raise UsageError("give --subject or --first, not both")
    unique = list(dict.fromkeys(args.subject))
    if len(unique) < len(args.subject):
        repeated = [c for c in unique if args.subject.count(c) > 1]
        print(f"note: --subject {', '.join(repeated)} given more than once; each subject is scored once "
              f"({len(unique)} subject{'s' if len(unique) > 1 else ''})", file=sys.stderr)
        args.subject = unique
    chosen = select_subjects(data.subjects, args.subject, args.first)
    if args.first is not None and args.first > len(data.subjects):
        print(f"note: --first {args.first} is more than the {len(data.subjects)} subjects of {data.root}; "
              f"running all {len(data.subjects)}", file=sys.stderr)
    return chosen


SOURCE_FLAGS = ("vector", "store", "trait", "type", "cases", "persona")  # the flags that name a steering vector


def add_source_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--vector", help="steering vector file (.safetensors)")
    p.add_argument("--trait", metavar="POLE", help="steer to a trait pole: O+ O- C+ C- E+ E- A+ A- N+ N-")
    p.add_argument("--type", metavar="MBTI", help="steer to an MBTI type (e.g. INFP): the sum of its four poles")
    p.add_argument("--cases", metavar="FILE", help="steer to a group: a file of subject ids (one per line) "
                                                   "whose mean short-form answers become one vector")
    p.add_argument("--persona", metavar="TEXT", help="steer to a written persona, distilled into a vector "
                                                     "(pas.space.persona; no prompt at use)")
    p.add_argument("--store", metavar="STORE", help="a population vector store (pas align-population --out); "
                                                   "with --person CASE")
    p.add_argument("--person", metavar="CASE", help="the person of --store to steer to")
    p.add_argument("--system", metavar="TEXT", help="a system prompt instead of steering (e.g. a persona)")


EMPTY_HINTS = {  # what to give instead of an empty value: an empty source never means "unsteered"
    "vector": "give a .safetensors file (pas align --out), or leave --vector out to run unsteered",
    "store": "give a population store folder (pas align-population --out) with --person CASE",
    "trait": "give a pole: O+ O- C+ C- E+ E- A+ A- N+ N-",
    "type": "give an MBTI type such as INFP",
    "cases": "give a file of subject ids, one per line",
    "persona": "give the persona's text",
    "system": "give the system prompt's text, or leave --system out",
}


def steering_spec(args: argparse.Namespace) -> SteeringSpec:
    """The steering source the flags name, checked before any model work (``--system`` is not a vector).

    An empty value (``--vector ""``) is an error naming the flag, never a silent unsteered run.
    """
    for n in (*SOURCE_FLAGS, "system"):
        value = getattr(args, n, None)
        if value is not None and not str(value).strip():
            raise UsageError(f"--{n} is empty: {EMPTY_HINTS[n]}")
    given = [f"--{n}" for n in (*SOURCE_FLAGS, "system") if getattr(args, n, None) is not None]
    if len(given) > 1:
        raise UsageError(f"give one of {', '.join(given)}, not several")
    if getattr(args, "strength", None) is not None and not any(getattr(args, n, None) is not None
                                                                for n in SOURCE_FLAGS):
        raise UsageError("--strength needs --vector, --store, --trait, --type, --cases or --persona")
    if (getattr(args, "store", None) is None) != (getattr(args, "person", None) is None):
        raise UsageError("--store and --person go together: the store's folder and the person's case id")
    cases: tuple[str, ...] | None = None
    try:
        if getattr(args, "cases", None) is not None:
            read_text_arg(args.cases, "--cases", "subject ids, one per line")  # a clear message for a bad file
            cases = read_cases(args.cases)
        return SteeringSpec(vector=args.vector, trait=args.trait, type=args.type, cases=cases, persona=args.persona)
    except (ValueError, OSError) as e:
        raise UsageError(str(e)) from None


def read_text_arg(path: str, flag: str, holds: str) -> str:
    """The text of the file ``flag`` names; a missing file, a folder or a file that is not UTF-8 is a
    :class:`UsageError` naming the flag and the fix (``holds``: what the file should hold)."""
    p = Path(path).expanduser()
    fix = f"give the path of a UTF-8 text file holding {holds}"
    if not p.exists():
        raise UsageError(f"{flag} {path}: no such file; {fix}")
    if p.is_dir():
        raise UsageError(f"{flag} {path} is a directory, not a file; {fix}")
    try:
        data = p.read_bytes()
    except OSError as e:
        raise UsageError(f"{flag} {path}: cannot read it ({e.strerror or e}); {fix}") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise UsageError(f"{flag} {path} is not UTF-8 text (byte 0x{data[e.start:e.start + 1].hex()} at offset "
                         f"{e.start}); save it as UTF-8 (e.g. iconv -f latin1 -t utf-8 {path} > "
                         f"{p.stem}.utf8{p.suffix}) and pass that file") from None


def writable_out(path: str | Path, overwrite: bool, flag: str = "--out") -> Path:
    """:func:`pas.steer.vector.check_writable` in the command line's words (``--overwrite``); creates the
    missing folders, so call it inside :func:`created_dirs`."""
    from pas.steer.vector import check_writable

    try:
        return check_writable(path, overwrite=overwrite)
    except FileExistsError:
        raise UsageError(f"{flag} {path} exists; pass --overwrite to replace it") from None


@contextmanager
def created_dirs(path: str | Path, *, is_dir: bool = False) -> Iterator[None]:
    """Folders made for ``path`` (a file, or with ``is_dir`` a folder) inside the block are removed again if the
    block fails: only folders that did not exist before it, and only those left empty, deepest first."""
    folder = Path(path).expanduser().absolute()
    folder = folder if is_dir else folder.parent
    new = [d for d in (folder, *folder.parents) if not d.exists()]
    try:
        yield
    except BaseException:
        for d in new:
            try:
                d.rmdir()
            except OSError:
                pass  # not empty (or gone): keep it
        raise


def apply_threads(threads: int | None) -> None:
    """``--threads``: torch's intra-op threads, set before any model work (:func:`pas.core.models.set_threads`)."""
    from pas.core.models import set_threads

    try:
        set_threads(threads)
    except ValueError as e:
        raise UsageError(str(e)) from None

