"""The `ia2` command: thin over the library. Each sub-command lives in its own module with a
`register(subparsers)` function that adds its parser and sets `func`."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from ..errors import IA2Error

# Sub-command modules, in the order `ia2 --help` lists them.
COMMANDS = ("models", "tasks", "data", "teach", "train", "eval", "run", "report", "merge")


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser; with `only`, just that sub-command's module is imported (some import torch
    and transformers, which take seconds: `ia2 tasks` should not wait for them)."""
    parser = argparse.ArgumentParser(prog="ia2", description="ICL Activation Alignment (IA2)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS if only is None else (only,):
        try:
            module = importlib.import_module(f".{name}", __name__)
        except ModuleNotFoundError as e:
            if e.name == f"{__name__}.{name}":
                continue  # not built yet
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    first = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(first if first in COMMANDS else None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="ia2: %(levelname)s: %(message)s")
    try:
        return args.func(args) or 0
    except IA2Error as e:
        print(f"ia2: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ia2: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
