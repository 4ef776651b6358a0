"""`videomt-jax` command line: one module per command in this package.

Each module in `COMMANDS` defines `add_parser(subparsers)`, which adds its command and sets
`func(args) -> exit code` on it (wrapped in `common.guarded`, the one place where user errors
become a one-line message). Modules keep their heavy imports (jax, torch) inside the command
functions, so building the parser and `videomt-jax --help` stay quick.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import warnings
from collections.abc import Callable, Sequence
from typing import TextIO

# command modules, in the order `--help` lists them
COMMANDS: tuple[str, ...] = (
    "convert",
    "export",
    "export_serving",
    "export_onnx",
    "segment",
    "demo",
    "train",
    "eval",
    "bench",
)


def build_parser(commands: Sequence[str] = COMMANDS) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="videomt-jax",
        description="VidEoMT video segmentation in JAX: convert, segment, train, evaluate, benchmark.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in commands:
        importlib.import_module(f"videomt_jax.cli.{name}").add_parser(sub)
    return parser


def one_line_warnings(default: Callable[..., None]) -> Callable[..., None]:
    """A `warnings.showwarning` for the command line: our own warnings (what a command assumed, e.g. an
    authors' checkpoint's head count) as one line `videomt-jax: warning: ...`; others through `default`."""

    def show(
        message: Warning | str,
        category: type[Warning],
        filename: str,
        lineno: int,
        file: TextIO | None = None,
        line: str | None = None,
    ) -> None:  # the signature of `warnings.showwarning`: callers pass `file` and `line` either way
        if category.__module__.startswith("videomt_jax."):
            print(f"videomt-jax: warning: {message}", file=file or sys.stderr, flush=True)
        else:
            default(message, category, filename, lineno, file, line)

    return show


def main(argv: Sequence[str] | None = None, commands: Sequence[str] = COMMANDS) -> int:
    parser = build_parser(commands)
    args, rest = parser.parse_known_args(argv)
    if getattr(args, "forward_args", False):  # a thin entry (bench) hands every further argument on
        args.forwarded = rest
    elif rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    with warnings.catch_warnings():  # restores Python's display when the command returns
        warnings.showwarning = one_line_warnings(warnings.showwarning)
        return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
