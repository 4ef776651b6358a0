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
from videomt_jax.io.results_json import read_results_json

SYN = SyntheticConfig(image_size=32, num_frames=5)
CFG = vm.VideomtConfig(
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    num_blocks=1,
    image_size=32,
    patch_size=8,
    num_queries=6,
    id2label=SYN.id2label,
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
    rc = main(
        [
            "segment",
            str(root / "clip.gif"),
            "--model",
            str(root / "model"),
            "--task",
            "instance",
            "--out",
            str(out),
            "--chunk",
            "2",
            "--video-level",
            "--format",
            "gif",
            "--threshold",
            "0.0",
        ]
    )
    assert rc == 0
    assert "segmented 5 frames" in capsys.readouterr().out
    overlay = vm.read_video(out / "overlay.gif").frames
    assert overlay.shape[:2] == clip.frames.shape[:2] and overlay.shape[2] > clip.frames.shape[2]  # legend beside
    doc = json.loads((out / "results.json").read_text())
    assert doc["num_frames"] == 5 and len(doc["frames"]) == 5
    assert doc["id2label"] == {str(k): v for k, v in SYN.id2label.items()}
    ids = [t["id"] for t in doc["tracks"]]
    assert len(ids) == CFG.num_queries and len(set(ids)) == len(ids)  # one track per query, unique ids
    assert sorted(ids) == list(range(CFG.num_queries))
    assert all(len(t["segmentations"]) == 5 for t in doc["tracks"])
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]  # no spill or temporary files left


def test_video_level_semantic_differs_and_matches_the_video_map(assets):
    """--video-level semantic writes the authors' video map as one track per class (it used to
    write the same file as without the flag)."""
    root, clip, params = assets
    outs = {}
    for flag in ([], ["--video-level"]):
        out = root / f"sem{len(flag)}"
        assert (
            main(
                [
                    "segment",
                    str(root / "clip.gif"),
                    "--model",
                    str(root / "model"),
                    "--task",
                    "semantic",
                    "--out",
                    str(out),
                    "--chunk",
                    "2",
                    *flag,
                ]
            )
            == 0
        )
        outs[bool(flag)] = read_results_json(out / "results.json", decode=True)
    assert "tracks" not in outs[False] and outs[True]["tracks"]
    seg = Segmenter(CFG, params, task="semantic")
    videos, geos = seg.processor.preprocess(vm.read_video(root / "clip.gif").frames[None])  # what segment read
    model_out = vm.VideomtModel(CFG).apply({"params": params}, videos, interpolate_pos_encoding=True)
    video_map = np.asarray(vm.video_semantic(model_out, geos[0].original_size))[0]  # [T, H, W], one call
    classes = np.unique(video_map).tolist()
    tracks = outs[True]["tracks"]
    assert [t["id"] for t in tracks] == classes and [t["label_id"] for t in tracks] == classes
    for t in tracks:
        np.testing.assert_array_equal(t["masks"], video_map == t["id"])
    assert abs(sum(t["score"] for t in tracks) - 1.0) < 1e-9  # shares of the video's pixels


def test_out_is_checked_before_any_work(assets, capsys):
    root, _, _ = assets
    base = ["segment", str(root / "clip.gif"), "--model", str(root / "model"), "--task", "semantic", "--format", "gif"]
    (root / "a_file").write_text("mine")
    assert main([*base, "--out", str(root / "a_file")]) == 1
    assert "is a file" in capsys.readouterr().err
    assert (root / "a_file").read_text() == "mine"
    out = root / "existing"
    out.mkdir()
    (out / "results.json").write_text("old results")
    (out / "notes.txt").write_text("unrelated")
    assert main([*base, "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "--overwrite" in err and "results.json" in err and "segment (" not in err  # refused before segmenting
    assert (out / "results.json").read_text() == "old results"
    assert main([*base, "--out", str(out), "--overwrite", "--max-frames", "2"]) == 0
    assert json.loads((out / "results.json").read_text())["num_frames"] == 2
    assert (out / "notes.txt").read_text() == "unrelated"  # never touched


@pytest.mark.parametrize(
    "option, value",
    [("--chunk", "0"), ("--stride", "-1"), ("--max-frames", "0"), ("--threshold", "5"), ("--threshold", "nan")],
)
def test_bad_option_is_named(assets, capsys, option, value):
    root, _, _ = assets
    with pytest.raises(SystemExit) as exit_info:
        main(
            ["segment", str(root / "clip.gif"), "--model", str(root / "model"), "--out", str(root / "x"), option, value]
        )
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {option}" in err and "cannot read video" not in err
    assert not (root / "x").exists()


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
