"""`videomt-jax segment` memory is flat in the video's length (issue 18: 600 frames peaked at 5.75 GB).

Each length runs in a fresh process, which reports its peak resident set size (ru_maxrss). At
240x320 every kept frame costs ~1 MB (frame, overlay, label map, per-frame results), so 170 more
frames held in memory would add ~170 MB to a ~550-700 MB process; the bound is 12%.
"""

from __future__ import annotations

import json
import subprocess
import sys

import jax
import numpy as np
import pytest

import videomt_jax as vm
from videomt_jax.data.synthetic import SyntheticConfig, make_clip
from videomt_jax.io.results_json import read_results_json

pytestmark = pytest.mark.slow  # run first under xdist (conftest.py)

SHORT, LONG = 30, 200
HEIGHT, WIDTH = 240, 320
BOUND = 1.12
CFG = vm.VideomtConfig(
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    num_blocks=1,
    image_size=32,
    patch_size=8,
    num_queries=6,
    id2label=SyntheticConfig().id2label,
)
CHILD = """
import json, resource, sys
from videomt_jax.cli import main
rc = main(sys.argv[1:])
print(json.dumps({"rc": rc, "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def write_long_video(path, frames: int) -> None:
    """A looped synthetic clip scaled up 4x (this process may hold it: it is not measured)."""
    clip = make_clip(SyntheticConfig(image_size=(HEIGHT // 4, WIDTH // 4), num_frames=20, bounce=True), "heldout", 0)
    big = clip.frames.repeat(4, axis=1).repeat(4, axis=2)  # [20, H, W, 3]
    vm.write_video(path, np.resize(big, (frames, *big.shape[1:])), fps=25)


def peak_mib(video, model, out, *flags: str) -> float:
    argv = ["segment", str(video), "--model", str(model), "--out", str(out), "--chunk", "8", *flags]
    done = subprocess.run([sys.executable, "-c", CHILD, *argv], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["rc"] == 0
    return result["peak_mib"]


@pytest.mark.parametrize("flags", [(), ("--video-level", "--task", "instance")], ids=["per-frame", "video-level"])
def test_peak_memory_is_flat_in_video_length(tmp_path, flags):
    vm.save_pretrained(tmp_path / "model", CFG, vm.init_params(CFG, jax.random.key(0)))
    peaks = {}
    for frames in (SHORT, LONG):
        write_long_video(tmp_path / f"v{frames}.mp4", frames)
        peaks[frames] = peak_mib(tmp_path / f"v{frames}.mp4", tmp_path / "model", tmp_path / f"out{frames}", *flags)
        assert read_results_json(tmp_path / f"out{frames}" / "results.json")["num_frames"] == frames
    print(f"peak RSS {flags}: {peaks}")
    assert peaks[LONG] <= BOUND * peaks[SHORT], peaks
    assert np.isfinite(list(peaks.values())).all()
