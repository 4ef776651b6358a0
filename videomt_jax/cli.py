"""`videomt-jax` command line: each subcommand lives in its own module and registers itself.

A module in `SUBCOMMANDS` exposes `add_parsers(subparsers)`, which adds its subcommands and sets
`func(args) -> int` on each. Modules are imported only to build the parser, and each keeps its
heavy imports (jax, torch) inside the command functions.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Sequence

SUBCOMMANDS: tuple[str, ...] = (
    "videomt_jax.cli_convert",  # convert, export
    "videomt_jax.apps.segment",  # segment
    "videomt_jax.apps.demo",  # demo
    "videomt_jax.training.cli",  # train, eval
    "videomt_jax.bench",  # bench
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="videomt-jax", description="VidEoMT video segmentation in JAX: convert, segment, train, evaluate, benchmark."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in SUBCOMMANDS:
        mod = importlib.import_module(module)
        register = getattr(mod, "add_parsers", None) or getattr(mod, "add_convert_parsers")
        register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
