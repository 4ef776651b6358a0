"""`videomt-jax segment`: outputs on a small video, and clear errors for bad input."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
from typing import Any

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


# ------------------------------------------------------------------------------- issues 24 / 25
def run_cli(root, out, *flags: str) -> int:
    return main(["segment", str(root / "clip.gif"), "--model", str(root / "model"), "--out", str(out), *flags])


def test_segment_video_api_equals_the_command_line(assets, capsys):
    """Issue 25.5: `vm.segment_video` is the one implementation; the CLI writes what it returns. Issue
    25.2: per-frame segments carry their track id (the query index) in memory and in results.json."""
    root, clip, _ = assets
    out = root / "api"
    result = vm.segment_video(root / "clip.gif", root / "model", task="instance", out=out, chunk=2, threshold=0.0)
    assert result.num_frames == 5 and result.size == clip.frames.shape[1:3] and len(result.frames) == 5
    assert result.tracks is None and not result.image_model and result.results_path == out / "results.json"
    assert run_cli(root, root / "cli", "--task", "instance", "--chunk", "2", "--threshold", "0.0") == 0
    assert "segmented 5 frames" in capsys.readouterr().out
    api_doc, cli_doc = (json.loads((d / "results.json").read_text()) for d in (out, root / "cli"))
    assert api_doc["frames"] == cli_doc["frames"]
    segments = [(f, s) for f in result.frames for s in f["segments_info"]]
    assert segments and all(0 <= s["track_id"] < CFG.num_queries for _, s in segments)
    for t, frame in enumerate(result.frames):
        assert [s["track_id"] for s in frame["segments_info"]] == [
            s["track_id"] for s in api_doc["frames"][t]["segments"]
        ]


def test_video_level_threshold_and_timing(assets, capsys):
    """Issue 25.6: --video-level honours --threshold; the summary counts both passes."""
    root, _, _ = assets
    everything = vm.segment_video(root / "clip.gif", root / "model", "instance", video_level=True, keep_frames=False)
    scores = sorted(t["score"] for t in everything.tracks)
    threshold = scores[len(scores) // 2]
    out = root / "vl_threshold"
    assert (
        run_cli(root, out, "--task", "instance", "--video-level", "--threshold", str(threshold), "--format", "gif") == 0
    )
    doc = read_results_json(out / "results.json", decode=True)
    assert [t["id"] for t in doc["tracks"]] == [t["id"] for t in everything.tracks if t["score"] >= threshold]
    assert 0 < len(doc["tracks"]) < len(everything.tracks)
    painted = np.unique(np.concatenate([t["masks"] for t in doc["tracks"]]).any())  # something drawn
    assert painted.tolist() == [True]
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert "first pass" in line and "video-level pass" in line
    e = everything
    assert e.seconds >= e.model_seconds + e.video_level_seconds and e.video_level_seconds > 0 and e.model_seconds > 0
    assert "video-level pass" in e.summary()


@pytest.fixture(scope="module")
def eomt_model(assets):
    root = assets[0]
    config = dataclasses.replace(CFG, model_type="eomt")
    vm.save_pretrained(root / "eomt", config, vm.init_params(config, jax.random.key(1)))
    return root / "eomt"


def test_image_model_segments_frame_by_frame(assets, eomt_model, capsys):
    """Issue 25.1: an EoMT checkpoint runs (per-frame ids, no tracks) and says so first."""
    root, _, _ = assets
    out = root / "eomt_out"
    flags = ["--task", "instance", "--threshold", "0.0"]
    rc = main(["segment", str(root / "clip.gif"), "--model", str(eomt_model), "--out", str(out), *flags])
    assert rc == 0, capsys.readouterr().err
    lines = capsys.readouterr().out.splitlines()
    assert "image model" in lines[0] and "per frame" in lines[0]
    doc = json.loads((out / "results.json").read_text())
    assert doc["num_frames"] == 5 and "tracks" not in doc
    segments = [s for f in doc["frames"] for s in f["segments"]]
    assert segments and all("track_id" not in s for s in segments)
    assert all([s["id"] for s in f["segments"]] == list(range(len(f["segments"]))) for f in doc["frames"])


def test_image_model_refuses_video_level_before_creating_anything(assets, eomt_model, capsys):
    root, _, _ = assets
    out = root / "new" / "eomt_vl"
    rc = main(["segment", str(root / "clip.gif"), "--model", str(eomt_model), "--out", str(out), "--video-level"])
    assert rc == 1
    err = capsys.readouterr().err
    assert "image model" in err and "--video-level" in err and len(err.strip().splitlines()) == 1
    assert not (root / "new").exists()


@pytest.mark.parametrize("bad", ["model", "video"])
def test_failed_start_creates_nothing(assets, capsys, bad):
    """Issue 24.11: an input error leaves no --out behind (nor the folders above it)."""
    root, _, _ = assets
    model = root / ("no_such_model" if bad == "model" else "model")
    video = root / ("missing.mp4" if bad == "video" else "clip.gif")
    out = root / f"fresh_{bad}" / "deeper" / "out"
    assert main(["segment", str(video), "--model", str(model), "--out", str(out)]) == 1
    assert f"cannot {'load model' if bad == 'model' else 'read video'}" in capsys.readouterr().err
    assert not (root / f"fresh_{bad}").exists()


def test_second_run_into_a_claimed_out_is_refused(assets, capsys):
    """Issue 24.6: a run into an --out another live run holds stops with one line; nothing is replaced."""
    root, _, _ = assets
    out = root / "claimed"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        assert run_cli(root, out, "--task", "semantic", "--format", "gif") == 1
        err = capsys.readouterr().err
        assert "another process" in err and str(holder.pid) in err and len(err.strip().splitlines()) == 1
        assert not out.exists()
    finally:
        holder.kill()
        holder.wait()
    assert run_cli(root, out, "--task", "semantic", "--format", "gif") == 0  # free again (the dead holder's lock)
    assert run_cli(root, out, "--task", "semantic", "--format", "gif") == 1  # done once: needs --overwrite
    assert "--overwrite" in capsys.readouterr().err


HOLD_LOCK = """
import sys, time
from videomt_jax.utils.io import output_lock
with output_lock(sys.argv[1]):
    print("held", flush=True)
    time.sleep(120)
"""


def test_stop_signal_is_taken_between_chunks(assets, monkeypatch, capsys):
    """Issue 24.4: SIGTERM during the work ends with one line and 143, no traceback, no debris
    (spill file included); the handler only sets a flag, checked between chunks."""
    root, _, _ = assets
    from videomt_jax.postprocess import streamed

    real_add = streamed.VideoLevel.add
    spills: list[Any] = []

    def add_then_signal(self, out):
        real_add(self, out)
        spills.append(self._spill)
        os.kill(os.getpid(), signal.SIGTERM)  # arrives in the middle of the chunk's work

    monkeypatch.setattr(streamed.VideoLevel, "add", add_then_signal)
    before = signal.getsignal(signal.SIGTERM)
    out = root / "stopped" / "out"
    rc = run_cli(root, out, "--task", "instance", "--video-level", "--chunk", "2")
    assert rc == 143
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("videomt-jax segment: interrupted by SIGTERM") and "Traceback" not in "".join(err)
    assert len(spills) == 1 and spills[0].closed  # stopped at the first check; the spill file is gone
    assert not (root / "stopped").exists()
    assert signal.getsignal(signal.SIGTERM) == before  # handlers put back


def test_chunk_is_checked_against_the_memory_there_is(assets, monkeypatch, capsys):
    """Issue 24.7: a --chunk the machine cannot hold is refused before any work, saying what it needs."""
    root, _, _ = assets
    from videomt_jax.apps import memory
    from videomt_jax.utils import memory as machine

    monkeypatch.setattr(machine, "host_available_bytes", lambda: 500 * 2**20)
    out = root / "too_big"
    assert run_cli(root, out, "--chunk", "100000") == 1
    err = capsys.readouterr().err
    assert "needs about" in err and "GiB available" in err and "--chunk" in err and "segment (" not in err
    assert not out.exists()
    fp = memory.Footprint(fixed=100, per_frame=10)
    assert fp.max_chunk(fp.total(7)) == 7 and fp.max_chunk(50) == 0


def test_legend_labels_are_each_frames_own(assets):
    """Issue 25.9: a query can change class between frames; each frame's legend gets that frame's
    classes (a chunk-wide table gave earlier frames later classes: "grass" beside another's colour)."""
    _, clip, params = assets
    seg = Segmenter(CFG, params, task="instance", task_kwargs={"threshold": 0.0})
    (chunk,) = seg.stream([clip.frames])
    assert chunk.frame_labels is not None and len(chunk.frame_labels) == 5
    for t, frame in enumerate(chunk.frames_hf):
        assert chunk.frame_labels[t] == {s["track_id"]: s["label_id"] for s in frame["segments_info"]}
        ids = np.unique(chunk.segmentation[t][chunk.segmentation[t] >= 0]).tolist()
        assert set(ids) <= set(chunk.frame_labels[t])  # every painted id has its own frame's class
