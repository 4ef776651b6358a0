"""Build the notebooks in this directory from their sources in `src/` (percent format).

Each `src/NAME.py` becomes `NAME.ipynb`: a line `# %%` starts a code cell, `# %% [markdown]` a
markdown cell whose lines are comments (`# text`); anything before the first marker is a note for
readers of the source and is not copied. The notebooks are written without outputs, with stable
cell ids, so they diff cleanly; `pytest tests/test_notebooks.py` executes them.

    python notebooks/build_notebooks.py           # (re)write every NAME.ipynb
    python notebooks/build_notebooks.py --check   # exit 1 if a notebook is stale or has outputs
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import nbformat

HERE = Path(__file__).resolve().parent
SOURCES = HERE / "src"
MARKER = re.compile(r"^# %%(?P<markdown> \[markdown\])?\s*$")
KERNELSPEC = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}


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


def content(nb: nbformat.NotebookNode) -> tuple:
    """What a reviewer reads: the kernel and every cell's id, type, source and outputs (if any).

    Compared instead of the raw JSON, so another nbformat version's formatting is not staleness."""
    cells = tuple(
        (c.get("id"), c.cell_type, c.source, len(c.get("outputs", ())), c.get("execution_count")) for c in nb.cells
    )
    return nb.metadata.get("kernelspec", {}).get("name"), cells


def stale() -> list[str]:
    """Notebooks that are missing, differ from what their source builds, or hold outputs."""
    return [
        path.name
        for src, path in targets().items()
        if not path.is_file() or content(nbformat.read(path, as_version=4)) != content(build(src))
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check that the notebooks are up to date")
    args = parser.parse_args(argv)
    if args.check:
        bad = stale()
        for name in bad:
            print(f"stale or has outputs: {name} (run python notebooks/build_notebooks.py)")
        return 1 if bad else 0
    for src, path in targets().items():
        nb = build(src)
        path.write_text(render(nb))
        print(f"wrote {path.relative_to(HERE.parent)} ({len(nb.cells)} cells)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
