"""utils/signals.py: the first SIGTERM / SIGINT is recorded, a second one raises, handlers come back."""

from __future__ import annotations

import os
import signal

import pytest

from videomt_jax.utils.signals import GracefulStop, Interrupted


def test_first_signal_is_recorded_second_raises_handlers_restored():
    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    told = []
    with GracefulStop(notify=told.append) as stop:
        assert stop.signum is None
        os.kill(os.getpid(), signal.SIGTERM)  # the handler runs before the next line
        assert stop.signum == signal.SIGTERM and told == [signal.SIGTERM]
        with pytest.raises(Interrupted) as raised:
            os.kill(os.getpid(), signal.SIGINT)
        assert raised.value.signum == signal.SIGINT
    assert {s: signal.getsignal(s) for s in before} == before


def test_only_the_named_signals_are_taken():
    with GracefulStop((signal.SIGINT,)) as stop:
        assert signal.getsignal(signal.SIGTERM) != stop._handle and signal.getsignal(signal.SIGINT) == stop._handle
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.signum == signal.SIGINT
