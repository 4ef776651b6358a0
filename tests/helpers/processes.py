"""Real processes for the tests of signals, locks and leftovers of killed writers."""

from __future__ import annotations

import subprocess
import sys


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(child.stdout)


def start_python(code: str, *args: str, ready: str = "ready") -> subprocess.Popen[str]:
    """`python -c code args...`, returned once it printed the line `ready` (its stdout, stderr piped)."""
    child = subprocess.Popen(
        [sys.executable, "-c", code, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert child.stdout is not None
    for line in child.stdout:
        if line.strip() == ready:
            return child
    child.wait()
    raise AssertionError(f"the child exited ({child.returncode}) before printing {ready!r}: {child.stderr.read()}")
