"""The notebooks in notebooks/: stored executed and in step with their sources; they still run.

The stored `.ipynb` files carry their outputs (built by `python notebooks/build_notebooks.py
--execute`); a notebook whose cells differ from its `notebooks/src/NAME.py` is stale and fails
here. The slow test re-executes each notebook top to bottom (nbclient, CPU, this interpreter's
kernel, through the builder's `execute`). The notebooks assert their own numbers (parity bounds,
streaming equality, mIoU gains), so a notebook that runs to the end has passed them; a failing
cell fails the test with its traceback.

Letters: none (no arrays here).
"""

from __future__ import annotations

import importlib.util
import re
import time
from pathlib import Path

import nbformat
import pytest

NOTEBOOKS_DIR = Path(__file__).resolve().parents[2] / "notebooks"
NOTEBOOKS = sorted(p.name for p in NOTEBOOKS_DIR.glob("*.ipynb"))
MAX_BYTES = 1_000_000  # stored notebooks (outputs and figures included) stay well under this
# A machine's own paths must not leak into stored outputs (scratch dirs, the venv, home).
MACHINE_PATH = re.compile(r"(/tmp/|/home/|/work/|/Users/|site-packages)")


def _builder():
    spec = importlib.util.spec_from_file_location("build_notebooks", NOTEBOOKS_DIR / "build_notebooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _text(output: dict) -> str:
    return output.get("text", "") + "".join(str(v) for k, v in output.get("data", {}).items() if k.startswith("text/"))


def test_notebooks_found():
    assert set(NOTEBOOKS) == {"finetune.ipynb", "parity.ipynb", "quickstart.ipynb"}


def test_stored_notebooks_match_their_sources_and_are_executed():
    builder = _builder()
    assert builder.stale() == [], "run: python notebooks/build_notebooks.py --execute"
    for name in NOTEBOOKS:
        path = NOTEBOOKS_DIR / name
        nb = nbformat.read(path, as_version=4)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert code and all(c.execution_count is not None for c in code), name
        assert any("image/png" in o.get("data", {}) for c in code for o in c.outputs), f"{name} stores no figure"
        assert not [o for c in code for o in c.outputs if o.output_type == "error"], f"{name} stores an error"
        assert path.stat().st_size < MAX_BYTES, f"{name}: {path.stat().st_size} bytes"
        leaks = [m.group(0) for c in code for o in c.outputs for m in [MACHINE_PATH.search(_text(o))] if m]
        assert not leaks, f"{name} prints machine paths: {leaks[:3]}"
        assert sum(c.cell_type == "markdown" for c in nb.cells) >= len(code) // 2, f"{name}: too little prose"


def test_a_changed_source_makes_the_notebook_stale(tmp_path, monkeypatch):
    builder = _builder()
    src = tmp_path / "src"
    src.mkdir()
    (src / "demo.py").write_text("# %% [markdown]\n# Hello\n\n# %%\nprint(1)\n")
    monkeypatch.setattr(builder, "SOURCES", src)
    monkeypatch.setattr(builder, "HERE", tmp_path)
    assert builder.stale() == ["demo.ipynb"]  # missing
    nb = builder.build(src / "demo.py")
    (tmp_path / "demo.ipynb").write_text(builder.render(nb))
    assert builder.stale() == ["demo.ipynb"]  # not executed
    nb.cells[1].execution_count = 1
    nb.cells[1].outputs = [nbformat.v4.new_output("stream", name="stdout", text="1\n")]
    (tmp_path / "demo.ipynb").write_text(builder.render(nb))
    assert builder.stale() == []
    (src / "demo.py").write_text("# %% [markdown]\n# Hello\n\n# %%\nprint(2)\n")
    assert builder.stale() == ["demo.ipynb"]  # the source moved on
    assert builder.main(["--check"]) == 1


@pytest.mark.slow
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs(name: str, tmp_path, capsys):
    builder = _builder()
    nb = builder.build(builder.SOURCES / name.replace(".ipynb", ".py"))
    start = time.perf_counter()
    nb = builder.execute(nb, tmp_path)  # raises CellExecutionError if a cell fails (pytest prunes tmp_path)
    with capsys.disabled():
        print(f"\n{name}: executed in {time.perf_counter() - start:.1f} s", flush=True)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.execution_count is not None for c in code)
    images = [o for c in code for o in c.outputs if "image/png" in o.get("data", {})]
    assert images, f"{name} showed no figure"
