"""Shared command-line plumbing: user errors become one line on stderr and exit code 1."""

from __future__ import annotations

import argparse
import sys
from typing import Callable

USER_ERRORS = (ValueError, TypeError, FileNotFoundError, FileExistsError)


def guarded(run: Callable[[argparse.Namespace], int], name: str) -> Callable[[argparse.Namespace], int]:
    """Wrap a subcommand: a user error prints `videomt-jax NAME: error: ...` and returns 1."""

    def main(args: argparse.Namespace) -> int:
        try:
            return run(args)
        except USER_ERRORS as e:
            print(f"videomt-jax {name}: error: {e}", file=sys.stderr)
            return 1

    return main
