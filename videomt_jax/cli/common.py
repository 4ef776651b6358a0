"""Shared command-line plumbing: user errors become one line on stderr and exit code 1; for
commands that write atomically, SIGTERM and SIGINT (Ctrl-C) become one line and exit code 128 + N
after the temporary files are removed (the atomic writers clean up on any exception; writes that
run in the background, like orbax's, finish first: `utils.io.signals_deferred`). A second signal
during that cleanup is ignored, so the cleanup is never cut short. Also the argparse types the
commands share (`positive_int`, `probability`)."""

from __future__ import annotations

import argparse
import contextlib
import math
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from typing import TypeVar

from videomt_jax.utils.signals import STOP_SIGNALS, Interrupted

T = TypeVar("T")

USER_ERRORS = (ValueError, TypeError, FileNotFoundError, FileExistsError)


def _raise(signum: int, frame: object) -> None:
    for s in STOP_SIGNALS:  # the first signal stops the command; later ones must not cut its cleanup
        signal.signal(s, signal.SIG_IGN)
    raise Interrupted(signum)


@contextlib.contextmanager
def stop_signals_raise() -> Iterator[None]:
    """Within the block, SIGTERM and SIGINT raise `Interrupted` (main thread only; else no change)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, _raise) for s in STOP_SIGNALS}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def guarded(
    run: Callable[[argparse.Namespace], int], name: str, *, interruptible: bool = False
) -> Callable[[argparse.Namespace], int]:
    """Wrap a subcommand: a user error prints `videomt-jax NAME: error: ...` and returns 1.

    interruptible: SIGTERM / SIGINT stop the command with `videomt-jax NAME: interrupted by SIG...`
    and exit code 128 + the signal number, after the atomic writers removed their temporary files
    (outputs are whole or absent: finished ones stay, unfinished ones leave nothing).
    """

    def main(args: argparse.Namespace) -> int:
        try:
            with stop_signals_raise() if interruptible else contextlib.nullcontext():
                return run(args)
        except USER_ERRORS as e:
            print(f"videomt-jax {name}: error: {e}", file=sys.stderr)
            return 1
        except (Interrupted, KeyboardInterrupt) as e:
            if not interruptible:
                raise
            signum = e.signum if isinstance(e, Interrupted) else int(signal.SIGINT)
            print(
                f"videomt-jax {name}: interrupted by {signal.Signals(signum).name}; nothing half-written left",
                file=sys.stderr,
            )
            return 128 + signum

    return main


def _checked(text: str, convert: Callable[[str], T], ok: Callable[[T], bool], what: str) -> T:
    """An argparse type's value: `convert(text)` when it parses and passes `ok`, else an error saying
    what was expected (argparse names the option)."""
    try:
        value = convert(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}") from None
    if not ok(value):
        raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """argparse type: an int >= 1."""
    return _checked(text, int, lambda v: v >= 1, "a positive int")


def probability(text: str) -> float:
    """argparse type: a finite float in [0, 1] (a score threshold)."""
    return _checked(text, float, lambda v: math.isfinite(v) and 0.0 <= v <= 1.0, "a number in [0, 1]")
