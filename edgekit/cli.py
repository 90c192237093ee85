"""The `edgekit` command line: info, run, bench, demo. Exit codes: 0 ok, 1 failure, 2 usage."""
from __future__ import annotations

import argparse
import sys

from . import __version__
from .errors import EdgekitError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edgekit", description="Run ONNX models fast on small CPUs.")
    parser.add_argument("--version", action="version", version=f"edgekit {__version__}")
    parser.add_subparsers(dest="verb", metavar="VERB")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.verb is None:
        parser.print_help()
        return 2
    try:
        return args.func(args)
    except EdgekitError as exc:
        print(f"edgekit: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
