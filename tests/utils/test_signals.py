"""utils/signals.py: the first SIGTERM / SIGINT is recorded, a second one raises, handlers come back;
a child started while they are held back keeps them pending until it ignores them."""

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


CHILD = """
import os, signal, sys, time
from videomt_jax.utils.signals import ignore_stop_signals
print(open("/proc/self/status").read().split("SigBlk:")[1].split()[0], flush=True)
sys.stdin.readline()                      # the parent has signalled us meanwhile: still pending
ignore_stop_signals()                     # dropped, then let through
os.kill(os.getpid(), signal.SIGINT)       # ignored now
print(open("/proc/self/status").read().split("SigBlk:")[1].split()[0], "alive", flush=True)
"""


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads the signal mask from Linux /proc")
def test_a_child_started_while_held_keeps_the_signals_pending_until_it_ignores_them():
    import subprocess
    import sys

    from videomt_jax.utils.signals import STOP_SIGNALS, stop_signals_held

    before = signal.pthread_sigmask(signal.SIG_BLOCK, [])
    with stop_signals_held():
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert set(STOP_SIGNALS) <= signal.pthread_sigmask(signal.SIG_BLOCK, [])
    assert signal.pthread_sigmask(signal.SIG_BLOCK, []) == before  # this thread's mask as it was
    held = int(child.stdout.readline(), 16)
    assert all(held & (1 << (s - 1)) for s in STOP_SIGNALS)  # inherited
    for s in STOP_SIGNALS:
        os.kill(child.pid, s)  # would end a child that does not hold them back
    out, _ = child.communicate("go\n", timeout=60)
    assert child.returncode == 0 and out.split()[1] == "alive"
    assert not int(out.split()[0], 16) & sum(1 << (s - 1) for s in STOP_SIGNALS)
