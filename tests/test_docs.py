"""Every fenced ```python block of README.md and docs/*.md runs, as written.

Convention: a block runs unless the line just above its opening fence (blank lines skipped) is
`<!-- no-run: REASON -->`, and REASON may not be empty. The blocks of one page run in order in one
namespace, like notebook cells (a later block uses what an earlier one defined), in a scratch
folder that holds what the pages name: the shipped tiny model at the paths the pages use for "your
model" (`PLACEHOLDERS`), a short video, and the deployment artifacts of the shipped model. A failure
names the page and the line of the block. Blocks in other languages (bash, json, plain) are not run.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # run first under xdist (conftest.py)

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
MODEL = ROOT / "videomt_jax" / "assets" / "synthetic-tiny"
# what the pages write for "a model" -> the shipped one stands in (a symlink in the scratch folder)
PLACEHOLDERS = ("path/to/hf_dir_or_authors.pth_or_hub_id", "path/to/model")
VIDEO = "video.mp4"  # 2 frames of a held-out synthetic clip (the blocks run the model eagerly)
SERVING_DIR = "serving"  # `videomt-jax export-serving MODEL serving/` (cpu)
ONNX_FILE = "step.onnx"  # `videomt-jax export-onnx MODEL step.onnx`
NO_RUN = re.compile(r"^<!--\s*no-run:(.*)-->$")
FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})\s*([^`\s]*)")


@dataclass(frozen=True)
class Block:
    page: str
    line: int  # of the opening fence, 1-based
    language: str
    code: str
    no_run: str | None  # the reason, when marked
    closed: bool = True  # False: the fence runs to the end of the page


def blocks(path: Path) -> list[Block]:
    """The fenced blocks of a Markdown page (CommonMark fences: a closing fence has no info string)."""
    lines = path.read_text().splitlines()
    out: list[Block] = []
    i = 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        fence, language = opening.group(1), opening.group(2).lower()
        end = next(
            (j for j in range(i + 1, len(lines)) if re.fullmatch(rf" {{0,3}}{fence[0]}{{{len(fence)},}}\s*", lines[j])),
            len(lines),
        )
        before = next((lines[j].strip() for j in range(i - 1, -1, -1) if lines[j].strip()), "")
        marker = NO_RUN.match(before)
        reason = marker.group(1).strip() if marker else None
        out.append(Block(path.name, i + 1, language, "\n".join(lines[i + 1 : end]), reason, end < len(lines)))
        i = end + 1
    return out


def python_blocks(path: Path) -> list[Block]:
    return [b for b in blocks(path) if b.language in ("python", "py")]


RUNNABLE = [p for p in PAGES if any(b.no_run is None for b in python_blocks(p))]


def test_pages_have_python_blocks_and_every_skip_says_why():
    found = {p.name: python_blocks(p) for p in PAGES}
    assert len(found["README.md"]) >= 5 and len(found["deploy.md"]) >= 2
    unexplained = [f"{b.page}:{b.line}" for bs in found.values() for b in bs if b.no_run == ""]
    assert not unexplained, f"no-run markers without a reason: {unexplained}"


def test_fences_pair_up():
    """An unclosed fence swallows the rest of a page (its blocks would silently not run)."""
    unclosed = [f"{b.page}:{b.line}" for page in PAGES for b in blocks(page) if not b.closed]
    assert not unclosed, f"fences never closed: {unclosed}"
    # a lone fence in prose opens a block that swallows the next block's opening fence
    found = [b for page in PAGES for b in blocks(page)]
    nested = [f"{b.page}:{b.line}" for b in found if any(map(FENCE.match, b.code.splitlines()))]
    assert not nested, f"blocks holding a fence line (a stray fence before them?): {nested}"


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """The scratch folder the blocks run in (module doc)."""
    import dataclasses

    from videomt_jax.data.synthetic import make_clip
    from videomt_jax.evaluation.synthetic import load_data_config
    from videomt_jax.io.video import write_video
    from videomt_jax.serving.export import export_serving
    from videomt_jax.serving.onnx_export import export_onnx
    from videomt_jax.weights.api import load_pretrained

    root = tmp_path_factory.mktemp("docs")
    for name in PLACEHOLDERS:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).symlink_to(MODEL, target_is_directory=True)
    data = load_data_config(MODEL)
    clip = make_clip(dataclasses.replace(data, num_frames=2), "heldout", 0)
    write_video(root / VIDEO, clip.frames, fps=2)
    config, params = load_pretrained(MODEL)
    export_serving(root / SERVING_DIR, config, params, platforms=("cpu",))
    export_onnx(root / ONNX_FILE, config, params)
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.mark.parametrize("page", RUNNABLE, ids=lambda p: p.name)
def test_page_blocks_run(page: Path, workspace: Path, monkeypatch):
    monkeypatch.chdir(workspace)
    namespace: dict = {"__name__": f"docs_{page.stem}"}
    for block in python_blocks(page):
        if block.no_run is not None:
            continue
        try:
            exec(compile(block.code, f"{page.name}:{block.line}", "exec"), namespace)
        except Exception as e:
            raise AssertionError(f"{page.name}, block at line {block.line}: {type(e).__name__}: {e}") from e
