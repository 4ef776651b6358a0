"""cli/common.py: `guarded` turns user errors and stop signals into one line and an exit code."""

from __future__ import annotations

import argparse
import signal
import time

import pytest

from tests.helpers.processes import start_python
from videomt_jax.cli.common import guarded, positive_int, probability

WRITER = """
import sys, time
from videomt_jax.cli.common import guarded, positive_int, probability
from videomt_jax.utils.io import atomic_directory

def run(args):
    with atomic_directory(sys.argv[1]) as tmp:
        (tmp / "part").write_bytes(bytes(1000))
        print("ready", flush=True)
        time.sleep(30)
    return 0

sys.exit(guarded(run, "demo", interruptible=True)(None))
"""


@pytest.mark.parametrize("first, second", [(signal.SIGTERM, signal.SIGINT), (signal.SIGINT, signal.SIGINT)])
def test_stop_signal_is_one_line_and_a_second_one_does_not_cut_the_cleanup(tmp_path, first, second):
    child = start_python(WRITER, str(tmp_path / "out"))
    child.send_signal(first)
    time.sleep(0.05)  # the first is handled first; the second lands during the cleanup or after the exit
    child.send_signal(second)
    _, stderr = child.communicate(timeout=60)
    assert child.returncode == 128 + first, stderr
    name = signal.Signals(first).name
    assert stderr.splitlines() == [f"videomt-jax demo: interrupted by {name}; nothing half-written left"]
    assert list(tmp_path.iterdir()) == []  # no temporary folder, no lock


def test_user_error_is_one_line(capsys):
    def run(args: argparse.Namespace) -> int:
        raise FileExistsError("out exists; pass --overwrite to replace it")

    assert guarded(run, "demo")(argparse.Namespace()) == 1
    assert capsys.readouterr().err == "videomt-jax demo: error: out exists; pass --overwrite to replace it\n"


@pytest.mark.parametrize(
    "kind, text, want",
    [(positive_int, "3", 3), (positive_int, "1", 1), (probability, "0", 0.0), (probability, "0.25", 0.25)],
)
def test_argument_types_accept(kind, text, want):
    assert kind(text) == want


@pytest.mark.parametrize(
    "kind, text, message",
    [
        (positive_int, "0", "must be a positive int, got '0'"),
        (positive_int, "-2", "must be a positive int, got '-2'"),
        (positive_int, "2.5", "must be a positive int, got '2.5'"),
        (probability, "1.5", "must be a number in [0, 1], got '1.5'"),
        (probability, "nan", "must be a number in [0, 1], got 'nan'"),
        (probability, "high", "must be a number in [0, 1], got 'high'"),
    ],
)
def test_argument_types_refuse_in_one_line(kind, text, message):
    with pytest.raises(argparse.ArgumentTypeError) as refused:
        kind(text)
    assert str(refused.value) == message
