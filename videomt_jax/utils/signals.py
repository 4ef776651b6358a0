"""A graceful stop: SIGTERM / SIGINT ask a long job (training) to finish its unit of work and stop.

    with GracefulStop() as stop:
        for step in ...:
            ...                          # one whole step
            if stop.signum is not None:  # save, clean up, leave with 128 + stop.signum
                break

The first signal is only recorded; a second one raises `Interrupted` (the user insists: finally blocks
still run, nothing waits for the unit of work).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator, Sequence
from types import FrameType, TracebackType

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Interrupted(BaseException):
    """A stop signal acted on: the first one where a command stops at once (`cli.common.guarded`),
    a second one under `GracefulStop` (the user insists), or `GracefulStop.check()` after the first.
    A BaseException, like KeyboardInterrupt, so `except Exception` blocks let it pass while `finally`
    blocks and the atomic writers clean up."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


@contextlib.contextmanager
def stop_signals_held() -> Iterator[None]:
    """Within the block this thread holds SIGTERM / SIGINT back (its signal mask). A process started
    meanwhile inherits the mask, so a signal to the whole process group stays pending in it until it
    installs its own handling (`ignore_stop_signals`); this process loses nothing either: another
    thread takes the signal, or it waits here until the block ends, and its handler runs."""
    held = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)


def ignore_stop_signals() -> None:
    """For a child started under `stop_signals_held`: ignore SIGTERM / SIGINT (those pending are
    dropped), then stop holding them back."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)


class GracefulStop:
    """While active (a context manager; main thread only, elsewhere it never fires), the first of
    `signals` sets `signum` instead of stopping the process, and `notify(signum)` runs (e.g. to pass
    the request on); a second one raises `Interrupted` (with `insist`; else it is ignored). The
    previous handlers come back on exit."""

    def __init__(
        self,
        signals: Sequence[int] = STOP_SIGNALS,
        notify: Callable[[int], None] | None = None,
        *,
        insist: bool = True,
    ):
        self.signals, self.notify, self.insist = tuple(signals), notify, insist
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is not None:
            if self.insist:
                raise Interrupted(signum)
            return
        self.signum = signum
        if self.notify is not None:
            self.notify(signum)

    def check(self) -> None:
        """Raise `Interrupted` once a stop was asked for (call it between units of work)."""
        if self.signum is not None:
            raise Interrupted(self.signum)

    def __enter__(self) -> GracefulStop:
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in self.signals}
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None) -> None:
        for s, handler in self._previous.items():
            if handler is not None:  # None: a handler installed outside Python, which cannot be put back
                signal.signal(s, handler)  # type: ignore[arg-type]
        self._previous = {}
