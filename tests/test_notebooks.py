"""Execute every notebook in notebooks/ top to bottom (nbclient, CPU) and check they are clean.

The notebooks assert their own numbers (parity bounds, streaming equality, mIoU gains), so a
notebook that runs to the end has passed them; a failing cell fails the test with its traceback.
The kernel is this interpreter (`sys.executable`, the venv's python), through a kernelspec written
to a temporary directory, whatever other `python3` kernels the machine has.

Letters: none (no arrays here).
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import time
from pathlib import Path

import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient

NOTEBOOKS_DIR = Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOKS = sorted(p.name for p in NOTEBOOKS_DIR.glob("*.ipynb"))
CELL_TIMEOUT_S = 300
KERNEL_NAME = "python3"
TIMES: dict[str, float] = {}


def _builder():
    spec = importlib.util.spec_from_file_location("build_notebooks", NOTEBOOKS_DIR / "build_notebooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def kernel_specs(tmp_path_factory) -> KernelSpecManager:
    """A kernelspec manager that knows one kernel: `python3` = this interpreter."""
    directory = tmp_path_factory.mktemp("kernels")
    (directory / KERNEL_NAME).mkdir()
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (videomt-jax tests)",
        "language": "python",
    }
    (directory / KERNEL_NAME / "kernel.json").write_text(json.dumps(spec))
    manager = KernelSpecManager(kernel_dirs=[str(directory)])
    assert manager.get_kernel_spec(KERNEL_NAME).argv[0] == sys.executable
    return manager


def test_notebooks_found():
    assert set(NOTEBOOKS) == {"finetune.ipynb", "parity.ipynb", "quickstart.ipynb"}


def test_notebooks_built_from_sources_without_outputs():
    assert _builder().stale() == []
    for name in NOTEBOOKS:
        nb = nbformat.read(NOTEBOOKS_DIR / name, as_version=4)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert code and all(not c.outputs and c.execution_count is None for c in code), name
        assert sum(c.cell_type == "markdown" for c in nb.cells) >= len(code) // 2, f"{name}: too little prose"


@pytest.mark.slow
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs(name: str, kernel_specs: KernelSpecManager, tmp_path, capsys):
    nb = nbformat.read(NOTEBOOKS_DIR / name, as_version=4)
    km = KernelManager(kernel_name=KERNEL_NAME, kernel_spec_manager=kernel_specs)
    client = NotebookClient(
        nb, km=km, timeout=CELL_TIMEOUT_S, kernel_name=KERNEL_NAME, resources={"metadata": {"path": str(NOTEBOOKS_DIR)}}
    )
    start = time.perf_counter()
    # the notebooks' scratch directories (tempfile) go under pytest's tmp_path, which pytest prunes
    client.execute(env={**os.environ, "TMPDIR": str(tmp_path)})  # raises CellExecutionError if a cell fails
    TIMES[name] = time.perf_counter() - start
    with capsys.disabled():
        print(f"\n{name}: executed in {TIMES[name]:.1f} s", flush=True)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.execution_count is not None for c in code)
    images = [o for c in code for o in c.outputs if "image/png" in o.get("data", {})]
    assert images, f"{name} showed no figure"
