"""``pas export`` and ``pas import``: llama.cpp control vectors out of pas vectors, and back (:mod:`pas.export`)."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from typing import TYPE_CHECKING

from pas.cli.args import (
    Subparsers,
    UsageError,
    add_data_args,
    add_model_args,
    add_source_args,
    add_threads_arg,
    created_dirs,
    steering_spec,
    writable_out,
)
from pas.cli.sources import vector_from_args
from pas.export.llamacpp import DEFAULT_MAPPING, MAPPINGS

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from pas.steer.vector import SteeringVector

FORMATS = ("llama.cpp",)


def add_parsers(sub: Subparsers) -> None:
    """``pas export`` and ``pas import``."""
    p = sub.add_parser("export", help="write a constant vector (a file, or a person of a store) as a llama.cpp "
                                      "control vector (GGUF); gated vectors (pas-gated, poles, types) are refused")
    p.add_argument("source", nargs="?", metavar="VECTOR", help="a vector file (.safetensors); or --store/--person")
    add_source_args(p)
    p.add_argument("--format", default="llama.cpp", choices=FORMATS, help="the file format (default llama.cpp)")
    p.add_argument("--out", required=True, help="the .gguf file to write")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    _add_mapping(p)
    p.add_argument("--scale", type=float, default=1.0,
                   help="multiply the offsets by this before writing (default 1: as the vector was learned; "
                        "llama.cpp's --control-vector-scaled scales again at load)")
    p.add_argument("--calibrate", action="store_true",
                   help="choose the scale by measurement instead: the one at which llama.cpp's placement (every "
                        "position, after the block; emulated in torch) moves the answers to 40 short-form "
                        "statements as pas's own steering does (reads the data dir's statements, no answers; "
                        "about 1.5 minutes on a 2-core CPU). Needed for vectors fitted for the answer position only")
    add_model_args(p)
    add_data_args(p, subjects=False)
    add_threads_arg(p)
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("import", help="read a llama.cpp / repeng control vector (GGUF) as a pas vector file")
    p.add_argument("file", metavar="FILE.gguf", help="the control vector")
    p.add_argument("--out", required=True, help="the .safetensors vector file to write")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    _add_mapping(p)
    add_model_args(p)
    add_threads_arg(p)
    p.set_defaults(func=cmd_import)


def _add_mapping(p: argparse.ArgumentParser) -> None:
    p.add_argument("--mapping", default=DEFAULT_MAPPING, choices=sorted(MAPPINGS),
                   help="which llama.cpp block a pas layer's offset goes to: 'output' (block N's output, after its "
                        "MLP) or 'input' (block N-1's output, block N's input); default %(default)s, chosen by "
                        "measurement (docs/export.md)")


def cmd_export(args: argparse.Namespace) -> int:
    from pas.core.models import load_model
    from pas.export.llamacpp import to_control_vector, write_control_vector

    if args.source is not None:
        if args.vector is not None:
            raise UsageError("give the vector file once: as VECTOR or as --vector, not both")
        args.vector = args.source
    if getattr(args, "system", None) is not None:
        raise UsageError("--system is a prompt, not a vector: a control vector can only hold steering")
    spec = steering_spec(args)
    if not spec.given() and args.store is None:
        raise UsageError("nothing to export: give VECTOR, --store STORE --person CASE, --trait, --type, --cases or "
                         "--persona")
    model, tok = load_model(args.model, dtype=args.dtype)
    vector, _ = vector_from_args(args, spec, model, tok)
    assert vector is not None  # a source was given
    scale, chosen = args.scale, None
    if args.calibrate:
        scale, chosen = _calibrated_scale(args, vector, model, tok)
    cv = to_control_vector(vector, model, mapping=args.mapping, scale=scale)  # refuses a gated vector
    if chosen is not None:
        cv = dataclasses.replace(cv, metadata={**cv.metadata, "pas.scale_choice": chosen})
    with created_dirs(args.out):
        out = write_control_vector(cv, writable_out(args.out, args.overwrite), overwrite=args.overwrite)
    if vector.positions == "last" and chosen is None:
        print("note: this vector was fitted for the answer position only; llama.cpp adds it at every position, "
              "where at its fitted size it can push every answer to one end (docs/export.md). --calibrate picks a "
              "scale by measurement; a vector fitted for every position (pas align --positions all --learn false) "
              "needs none.", file=sys.stderr)
    layers = sorted(cv.directions)
    print(f"wrote {out}: a llama.cpp control vector for {cv.model_hint} ({len(layers)} layer(s): "
          f"{', '.join(map(str, layers))}; width {cv.width}; mapping {args.mapping!r}: {cv.metadata['pas.placement']})."
          f"\nUse: llama-cli -m MODEL.gguf --control-vector {out}", file=sys.stderr)
    return 0


def _calibrated_scale(args: argparse.Namespace, vector: SteeringVector, model: PreTrainedModel,
                      tok: PreTrainedTokenizerBase) -> tuple[float, str]:
    """``--calibrate``: the scale :func:`pas.export.calibrate.choose_export_scale` picks, and its account."""
    from pas.core.data import load_papi
    from pas.export.calibrate import choose_export_scale
    from pas.export.llamacpp import to_control_vector
    from pas.score.scorer import ItemScorer

    if args.scale != 1.0:
        raise UsageError("give --scale or --calibrate, not both")
    to_control_vector(vector, model)  # a gated vector is refused before a minute of scoring
    bank = load_papi(args.data_dir, encoding=args.encoding).bank
    choice = choose_export_scale(vector, ItemScorer(model, tok, bank), mapping=args.mapping)
    print(f"calibrated: {choice.describe()}", file=sys.stderr)
    return choice.scale, choice.describe()


def cmd_import(args: argparse.Namespace) -> int:
    from pas.core.models import load_model
    from pas.export.llamacpp import from_control_vector, read_control_vector

    cv = read_control_vector(args.file)  # a clear error for a missing or foreign file, before the model loads
    model, _ = load_model(args.model, dtype=args.dtype)
    vector = from_control_vector(cv, model, mapping=args.mapping, source=args.file)
    with created_dirs(args.out):
        out = vector.save(writable_out(args.out, args.overwrite), overwrite=args.overwrite)
    print(f"wrote {out}: a constant pas vector (positions 'all', as llama.cpp applies it) on layer(s) "
          f"{', '.join(str(n - MAPPINGS[args.mapping]) for n in sorted(cv.directions))} of "
          f"{vector.signature.model_name}", file=sys.stderr)
    return 0
