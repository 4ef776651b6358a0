"""cli/__init__.py: the command line shows our warnings in one line and hands others on unchanged."""

from __future__ import annotations

import io
import warnings

import pytest

from videomt_jax.cli import one_line_warnings
from videomt_jax.weights.original_dinov2 import CheckpointConfigWarning


@pytest.mark.parametrize("positional", [True, False])
def test_warnings_are_shown_however_the_caller_passes_file(positional: bool):
    """`warnings.showwarning(message, category, filename, lineno, file, line)` is also called with
    `file` and `line` positionally (libraries re-emitting warnings do): both forms must work."""
    handed_on: list[tuple] = []
    show = one_line_warnings(lambda *a: handed_on.append(a))
    ours, theirs = io.StringIO(), io.StringIO()
    for category, out in ((CheckpointConfigWarning, ours), (DeprecationWarning, theirs)):
        if positional:
            show("guessed 2 heads", category, "x.py", 7, out, "src")
        else:
            show("guessed 2 heads", category, "x.py", 7, file=out, line="src")
    assert ours.getvalue() == "videomt-jax: warning: guessed 2 heads\n"
    assert handed_on == [("guessed 2 heads", DeprecationWarning, "x.py", 7, theirs, "src")]


def test_python_warnings_module_uses_it():
    """Python's `warnings` calls a replaced `showwarning` with all six arguments positionally: any
    warning of another package used to stop a command ("got multiple values for argument 'file'")."""
    shown, handed_on = io.StringIO(), []
    with warnings.catch_warnings(), pytest.MonkeyPatch.context() as mp:
        mp.setattr("sys.stderr", shown)
        warnings.simplefilter("always")
        warnings.showwarning = one_line_warnings(lambda *a: handed_on.append(a))
        warnings.warn("no released size", CheckpointConfigWarning, stacklevel=1)
        warnings.warn("an old keyword", DeprecationWarning, stacklevel=1)
    assert shown.getvalue() == "videomt-jax: warning: no released size\n"
    [(message, category, filename, *_)] = handed_on
    assert (str(message), category, filename) == ("an old keyword", DeprecationWarning, __file__)
