"""Build the notebooks in this directory from their sources in `src/` (percent format), executed.

Each `src/NAME.py` becomes `NAME.ipynb`: a line `# %%` starts a code cell, `# %% [markdown]` a
markdown cell whose lines are comments (`# text`); anything before the first marker is a note for
readers of the source and is not copied. Cells get stable ids (NAME-00, NAME-01, ...). The stored
notebooks are executed (outputs and figures included, so they read on GitHub), top to bottom, on
this interpreter's kernel; `pytest tests/test_notebooks.py` checks that they match their sources
and re-executes them (slow).

    python notebooks/build_notebooks.py --execute             # rebuild and execute every notebook
    python notebooks/build_notebooks.py --execute parity      # only parity.ipynb
    python notebooks/build_notebooks.py                       # rebuild without outputs (quick, for editing)
    python notebooks/build_notebooks.py --check               # exit 1 if a notebook is stale or unexecuted
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path

import nbformat

HERE = Path(__file__).resolve().parent
SOURCES = HERE / "src"
MARKER = re.compile(r"^# %%(?P<markdown> \[markdown\])?\s*$")
KERNELSPEC = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
CELL_TIMEOUT_S = 300
FIGURE_DPI = 72  # inline figures: small PNGs keep each stored notebook well under 1 MB


def _markdown_line(line: str, where: str) -> str:
    if line == "#":
        return ""
    if not line.startswith("# "):
        raise ValueError(f"{where}: a markdown cell line must start with '# ', got {line!r}")
    return line[2:]


def parse_cells(text: str, source_name: str) -> list[tuple[str, str]]:
    """Percent-format text -> [(cell type, source)], empty cells dropped."""
    cells: list[tuple[str, list[str]]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        marker = MARKER.match(line)
        if marker:
            cells.append(("markdown" if marker.group("markdown") else "code", []))
        elif cells:
            kind, lines = cells[-1]
            lines.append(_markdown_line(line, f"{source_name}:{number}") if kind == "markdown" and line else line)
    out = []
    for kind, lines in cells:
        body = "\n".join(lines).strip("\n")
        if body:
            out.append((kind, body))
    if not out:
        raise ValueError(f"{source_name} has no '# %%' cells")
    return out


def build(source: Path) -> nbformat.NotebookNode:
    """The notebook for one source file, with ids NAME-00, NAME-01, ... and no outputs."""
    nb = nbformat.v4.new_notebook()
    nb.metadata = {"kernelspec": dict(KERNELSPEC), "language_info": {"name": "python"}}
    makers = {"code": nbformat.v4.new_code_cell, "markdown": nbformat.v4.new_markdown_cell}
    for index, (kind, body) in enumerate(parse_cells(source.read_text(), source.name)):
        cell = makers[kind](body)
        cell.id = f"{source.stem}-{index:02d}"
        nb.cells.append(cell)
    nbformat.validate(nb)
    return nb


def render(nb: nbformat.NotebookNode) -> str:
    return nbformat.writes(nb) + "\n"


def targets() -> dict[Path, Path]:
    """source -> notebook path, for every source."""
    sources = sorted(SOURCES.glob("*.py"))
    if not sources:
        raise FileNotFoundError(f"no notebook sources in {SOURCES}")
    return {src: HERE / f"{src.stem}.ipynb" for src in sources}


def source_cells(nb: nbformat.NotebookNode) -> tuple:
    """What the source decides: the kernel and every cell's id, type and source (not outputs).

    Compared instead of the raw JSON, so outputs and another nbformat version's formatting are not
    staleness."""
    cells = tuple((c.get("id"), c.cell_type, c.source) for c in nb.cells)
    return nb.metadata.get("kernelspec", {}).get("name"), cells


def executed(nb: nbformat.NotebookNode) -> bool:
    """Every code cell ran (has an execution count)."""
    return all(c.execution_count is not None for c in nb.cells if c.cell_type == "code")


def stale() -> list[str]:
    """Notebooks that are missing, whose cells differ from what their source builds, or unexecuted."""
    bad = []
    for src, path in targets().items():
        stored = nbformat.read(path, as_version=4) if path.is_file() else None
        if stored is None or source_cells(stored) != source_cells(build(src)) or not executed(stored):
            bad.append(path.name)
    return bad


def kernel_manager(directory: Path):
    """A kernel manager whose `python3` kernel is this interpreter (whatever kernels the machine has)."""
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager

    name = KERNELSPEC["name"]
    (directory / name).mkdir(parents=True, exist_ok=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (videomt-jax)",
        "language": "python",
    }
    (directory / name / "kernel.json").write_text(json.dumps(spec))
    specs = KernelSpecManager(kernel_dirs=[str(directory)])
    return KernelManager(kernel_name=name, kernel_spec_manager=specs)


def execute(nb: nbformat.NotebookNode, scratch: Path) -> nbformat.NotebookNode:
    """Run `nb` top to bottom with notebooks/ as working directory and scratch files (tempfile,
    kernelspec, matplotlibrc) under `scratch`. Raises nbclient's CellExecutionError on the first
    failing cell; returns the notebook with its outputs."""
    from nbclient import NotebookClient

    (scratch / "matplotlibrc").write_text(f"figure.dpi: {FIGURE_DPI}\n")  # small figures
    env = {
        **os.environ,
        "TMPDIR": str(scratch),
        "MATPLOTLIBRC": str(scratch),
        "PYTHONWARNINGS": "ignore:IProgress not found",  # tqdm without ipywidgets: noise (and a path)
    }
    client = NotebookClient(
        nb, km=kernel_manager(scratch / "kernels"), timeout=CELL_TIMEOUT_S,
        kernel_name=KERNELSPEC["name"], resources={"metadata": {"path": str(HERE)}},
    )
    client.execute(env=env)
    nb.metadata = {"kernelspec": dict(KERNELSPEC), "language_info": {"name": "python"}}  # no machine details
    return nb


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="notebooks to build (default: all), e.g. parity")
    parser.add_argument("--execute", action="store_true", help="execute the notebooks and store their outputs")
    parser.add_argument("--check", action="store_true", help="only check that the notebooks are up to date")
    args = parser.parse_args(argv)
    if args.check:
        bad = stale()
        for name in bad:
            print(f"stale or not executed: {name} (run python notebooks/build_notebooks.py --execute)")
        return 1 if bad else 0
    unknown = set(args.names) - {src.stem for src in targets()}
    if unknown:
        parser.error(f"no notebook source for {sorted(unknown)}; sources: {sorted(s.stem for s in targets())}")
    for src, path in targets().items():
        if args.names and src.stem not in args.names:
            continue
        nb = build(src)
        start = time.perf_counter()
        if args.execute:
            with tempfile.TemporaryDirectory(prefix="videomt-notebook-") as scratch:
                nb = execute(nb, Path(scratch))
        path.write_text(render(nb))
        done = f", executed in {time.perf_counter() - start:.0f} s" if args.execute else ""
        print(f"wrote {path.relative_to(HERE.parent)} ({len(nb.cells)} cells, {path.stat().st_size / 1024:.0f} KiB{done})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
