"""`videomt-jax segment`: outputs on a small video, and clear errors for bad input."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest

import videomt_jax as vm
from videomt_jax.apps.pipeline import Segmenter
from videomt_jax.cli import main
from videomt_jax.data.synthetic import SyntheticConfig, make_clip

SYN = SyntheticConfig(image_size=32, num_frames=5)
CFG = vm.VideomtConfig(
    hidden_size=32, num_hidden_layers=2, num_attention_heads=2, num_blocks=1, image_size=32, patch_size=8,
    num_queries=6, id2label=SYN.id2label,
)


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("segment")
    clip = make_clip(SYN, "heldout", 0)
    vm.write_video(root / "clip.gif", clip.frames, fps=5)
    params = vm.init_params(CFG, jax.random.key(0))
    vm.save_pretrained(root / "model", CFG, params)
    return root, clip, params


def test_segment_writes_overlay_and_json(assets, capsys):
    root, clip, _ = assets
    out = root / "out"
    rc = main(["segment", str(root / "clip.gif"), "--model", str(root / "model"), "--task", "instance",
               "--out", str(out), "--chunk", "2", "--video-level", "--format", "gif", "--threshold", "0.0"])
    assert rc == 0
    assert "segmented 5 frames" in capsys.readouterr().out
    overlay = vm.read_video(out / "overlay.gif").frames
    assert overlay.shape == clip.frames.shape
    doc = json.loads((out / "results.json").read_text())
    assert doc["num_frames"] == 5 and len(doc["frames"]) == 5
    assert doc["id2label"] == {str(k): v for k, v in SYN.id2label.items()}
    assert len(doc["tracks"]) == 20  # top-k video instances (k = 20)


def test_chunked_pipeline_equals_single_chunk(assets):
    """Chunking (with the padded last chunk) changes nothing in the per-frame results."""
    root, clip, params = assets
    seg = Segmenter(CFG, params, task="semantic")
    whole = seg.run([clip.frames]).segmentation
    chunked = seg.run([clip.frames[:2], clip.frames[2:4], clip.frames[4:]]).segmentation
    assert whole.shape == (5, 32, 32)
    assert np.array_equal(whole, chunked)
    with pytest.raises(ValueError, match="last chunk"):
        seg.run([clip.frames[:2], clip.frames[2:3], clip.frames[3:5]])


@pytest.mark.parametrize(
    "make_bad, message",
    [
        (lambda root: root / "missing.mp4", "cannot read video"),
        (lambda root: (root / "corrupt.mp4").write_bytes(b"not a video") and root / "corrupt.mp4", "cannot read video"),
        (lambda root: (root / "empty").mkdir(exist_ok=True) or root / "empty", "cannot read video"),
    ],
)
def test_bad_video(assets, capsys, make_bad, message):
    root, _, _ = assets
    rc = main(["segment", str(make_bad(root)), "--model", str(root / "model"), "--out", str(root / "bad")])
    assert rc == 1
    assert message in capsys.readouterr().err


def test_bad_model(assets, capsys):
    root, _, _ = assets
    rc = main(["segment", str(root / "clip.gif"), "--model", str(root / "no_such_model"), "--out", str(root / "bad")])
    assert rc == 1
    assert "cannot load model" in capsys.readouterr().err
