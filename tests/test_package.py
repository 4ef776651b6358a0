"""The package face: every public name of `videomt_jax` resolves, lazily, and the layers hold."""

from __future__ import annotations

import ast
import importlib
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import videomt_jax as vm

PACKAGE = Path(vm.__file__).parent


@pytest.mark.parametrize("name", vm.__all__)
def test_every_public_name_resolves(name):
    value = getattr(vm, name)
    assert value is not None
    assert name in dir(vm)


def test_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'not_a_name'"):
        vm.not_a_name  # noqa: B018  (the attribute access is the test)


def test_every_module_imports():
    for module in pkgutil.walk_packages(vm.__path__, "videomt_jax."):
        importlib.import_module(module.name)


def test_import_stays_light():
    heavy = "('torch', 'transformers', 'videomt_jax.training')"
    code = f"import sys, videomt_jax; print(sorted(m for m in {heavy} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def _imports(path: Path) -> set[str]:
    """The videomt_jax modules that `path` imports (absolute imports only: the package uses no relative ones)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            raise AssertionError(f"{path}: relative import")
        names = [node.module] if isinstance(node, ast.ImportFrom) else [a.name for a in getattr(node, "names", [])]
        found |= {
            n for n in names if isinstance(node, (ast.Import, ast.ImportFrom)) and n and n.startswith("videomt_jax")
        }
    return found


# Rooms by pipeline stage, lowest first; a room may import only rooms on its own floor or below.
FLOORS: dict[str, int] = {
    "ops": 0,
    "utils": 0,
    "config": 1,
    "processing": 1,
    "io": 1,
    "modeling": 2,
    "metrics": 2,
    "postprocess": 3,
    "weights": 3,
    "streaming": 3,
    "data": 3,
    "serving": 4,
    "evaluation": 4,
    "training": 5,
    "apps": 6,
    "cli": 7,
}


def _room(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def test_no_import_runs_up_a_floor():
    upward = []
    for path in PACKAGE.rglob("*.py"):
        room = _room(".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts))
        if room not in FLOORS:
            continue
        for target in _imports(path):
            other = _room(target)
            if other in FLOORS and FLOORS[other] > FLOORS[room]:
                upward.append(f"{path.relative_to(PACKAGE.parent)} -> {target}")
    assert not upward, upward


def test_inference_never_imports_training():
    inference = ("modeling", "postprocess", "streaming", "serving", "weights", "processing", "evaluation", "io", "apps")
    for path in PACKAGE.rglob("*.py"):
        if _room(".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)) in inference:
            assert not any(t.startswith("videomt_jax.training") for t in _imports(path)), path
