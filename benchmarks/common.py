"""Command-line pieces the benchmark scripts share: thread count and JSON output."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path


def add_run_args(parser: argparse.ArgumentParser) -> None:
    """``--threads`` and ``--json``."""
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    parser.add_argument("--json", help="also write the results here")


def add_data_model_args(parser: argparse.ArgumentParser) -> None:
    """``--data-dir`` and ``--model``: the people and the model a benchmark runs on."""
    parser.add_argument("--data-dir", help="PAPI data directory (default: $PAPI_DATA_DIR, ./papi, ../shared/papi)")
    parser.add_argument("--model", help="model (default: embedded SmolLM2-135M-Instruct)")


def run_and_finish(parser: argparse.ArgumentParser, run: Callable[[argparse.Namespace], dict]) -> None:
    """``--threads`` and ``--json`` added, the arguments parsed, threads set, ``run(args)`` printed (and written)."""
    add_run_args(parser)
    args = parser.parse_args()
    apply_threads(args)
    finish(args, run(args))


def apply_threads(args: argparse.Namespace) -> None:
    """``--threads`` as every ``pas`` command applies it (:func:`pas.core.models.set_threads`)."""
    from pas.core.models import set_threads

    set_threads(args.threads)


def finish(args: argparse.Namespace, result: dict, omit_from_print: tuple[str, ...] = ()) -> None:
    """Write ``result`` to ``--json`` (if given) and print it, less the ``omit_from_print`` keys, as one line."""
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    print(json.dumps({k: v for k, v in result.items() if k not in omit_from_print}))


def add_assessment_args(parser: argparse.ArgumentParser, out: str, png: str) -> None:
    """What the personality-space benchmarks share: data dir, model, output folder, figure, threads."""
    parser.add_argument("--data-dir",
                        help="PAPI data directory (default: $PAPI_DATA_DIR, else ./papi or ../shared/papi)")
    parser.add_argument("--model", help="model (default: embedded SmolLM2-135M-Instruct)")
    parser.add_argument("--out", default=out, help=f"folder for results.json and tables.md (default {out})")
    parser.add_argument("--png", default=png, help=f"figure path (default {png})")
    parser.add_argument("--threads", type=int, help="torch threads")


def load_assessment(args: argparse.Namespace):
    """Threads set, then ``(data, scorer, held-out ids)``: the data dir, an ItemScorer on the model, and the
    180 items not used to build any pole vector."""
    from pas import load_model
    from pas.core.data import load_papi
    from pas.score.assess import inventory_ids
    from pas.score.scorer import ItemScorer

    apply_threads(args)
    data = load_papi(args.data_dir)
    model, tok = load_model(args.model)
    return data, ItemScorer(model, tok, data.bank), inventory_ids(data.bank, "180")


def write_outputs(args: argparse.Namespace, result: dict, tables: str) -> Path:
    """results.json and tables.md under ``--out``; makes the figure's folder; returns the figure path."""
    from pas.eval.report import dumps

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(dumps(result, indent=1))
    (out / "tables.md").write_text(tables + "\n")
    png = Path(args.png)
    png.parent.mkdir(parents=True, exist_ok=True)
    return png
