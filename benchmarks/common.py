"""Command-line pieces the benchmark scripts share: thread count and JSON output."""

from __future__ import annotations

import argparse
import json

import torch


def add_run_args(parser: argparse.ArgumentParser) -> None:
    """``--threads`` and ``--json``."""
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    parser.add_argument("--json", help="also write the results here")


def apply_threads(args: argparse.Namespace) -> None:
    if args.threads:
        torch.set_num_threads(args.threads)


def finish(args: argparse.Namespace, result: dict, omit_from_print: tuple[str, ...] = ()) -> None:
    """Write ``result`` to ``--json`` (if given) and print it, less the ``omit_from_print`` keys, as one line."""
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    print(json.dumps({k: v for k, v in result.items() if k not in omit_from_print}))
