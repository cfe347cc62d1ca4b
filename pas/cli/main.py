"""``pas`` command line: ``pas eval``, ``pas align``, ``pas chat``, ``pas assess``, ``pas traits``, ``pas persona``.

Every command takes ``--threads N`` (torch threads, set before any model work; on a
busy 2-core machine 1 thread can be many times faster than 2).
"""

from __future__ import annotations

import argparse
import sys

from pas.cli import commands, evaluate
from pas.cli.args import apply_threads


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pas", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    evaluate.add_parser(sub)
    commands.add_parsers(sub)
    return parser


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
