"""The ``pas`` command line: argument parsing and commands only."""

from pas.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
