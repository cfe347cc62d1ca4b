"""``pas`` command line: ``pas eval``, ``pas align``, ``pas chat``, ``pas assess``, ``pas traits``, ``pas persona``,
the population commands, ``pas export`` / ``pas import`` and ``pas serve``.

Every command takes ``--threads N`` (torch threads, set before any model work; on a
busy 2-core machine 1 thread can be many times faster than 2).

Exit status: 0 done; 2 a usage or input error (a bad flag, a missing or malformed file, an
unknown subject), printed as ``pas <cmd>: error: <message>``; 1 a failure during the work
(out of memory, a failed write), printed the same way.
"""

from __future__ import annotations

import argparse
import sys
import traceback

from pas.cli import commands, evaluate, export, population, serve
from pas.cli.args import apply_threads

USAGE, FAILURE = 2, 1
# OS errors that mean the input named a wrong path, not that the work failed
INPUT_OS_ERRORS = (FileNotFoundError, FileExistsError, IsADirectoryError, NotADirectoryError, PermissionError)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pas", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    evaluate.add_parser(sub)
    commands.add_parsers(sub)
    population.add_parsers(sub)
    export.add_parsers(sub)
    serve.add_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one ``pas`` command and return its exit status (argparse's own errors exit 2 as they always do).

    Input errors (``ValueError`` and its kin, a path that does not exist or cannot be written, a
    ``SystemExit`` with a message) return 2; a failure during the work returns 1; both print
    ``pas <cmd>: error: <message>`` on stderr.
    """
    args = build_parser().parse_args(argv)
    prefix = f"pas {args.command}: error:"
    try:
        apply_threads(args.threads)
        return args.func(args)
    except SystemExit as e:  # a command's ``raise SystemExit("message")``: an input error
        if e.code is None or isinstance(e.code, int):
            raise
        print(f"{prefix} {e.code}", file=sys.stderr)
        return USAGE
    except (ValueError, *INPUT_OS_ERRORS) as e:
        print(f"{prefix} {e}", file=sys.stderr)
        return USAGE
    except (RuntimeError, MemoryError, OSError) as e:
        print(f"{prefix} {type(e).__name__}: {e}", file=sys.stderr)
        return FAILURE
    except Exception as e:  # noqa: BLE001 - a bug: keep the traceback for the report
        traceback.print_exc()
        print(f"{prefix} internal error ({type(e).__name__}: {e}); please report it with the traceback above",
              file=sys.stderr)
        return FAILURE


if __name__ == "__main__":
    sys.exit(main())
