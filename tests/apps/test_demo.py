"""`videomt-jax demo` says what it is doing before each step (the scoring is stubbed: it is
`videomt-jax eval`'s, tested in tests/evaluation)."""

from __future__ import annotations

import argparse
import json
import math

from videomt_jax.apps import demo
from videomt_jax.evaluation import synthetic

LONG = {"num_clips": 1, "num_frames": 8, "chunk": 8, "window": 4, "miou": 0.5, "first_accuracy": 0.5}
LONG |= {"last_accuracy": 0.5, "video": {"vpq": 0.5, "stq": 0.5, "mvc_8": math.nan}}
SHORT = {"semantic": {"miou": 0.25}, "video_instance": {"AP": 0.25}, "panoptic": {"pq": 0.25}}


def test_demo_prints_each_step_before_it_runs(monkeypatch, capsys, tmp_path):
    seen: dict[str, str] = {}

    def evaluate_model(*args, long_clips, **kw):
        seen["model"] = capsys.readouterr().out  # what the user has read when the scoring starts
        assert long_clips == 0
        return dict(SHORT)

    def evaluate_long(*args, **kw):
        seen["long"] = capsys.readouterr().out
        return dict(LONG)

    monkeypatch.setattr(synthetic, "evaluate_model", evaluate_model)
    monkeypatch.setattr(synthetic, "evaluate_long", evaluate_long)
    monkeypatch.setattr(synthetic, "format_results", lambda metrics: "scores")
    args = argparse.Namespace(out=str(tmp_path / "out"), model=demo_model(), clip=0, frames=4, clips=2)
    assert demo.run_demo(args) == 0
    before = seen["model"].splitlines()
    assert before[0] == "demo: importing jax ..." and before[1].startswith("demo: loading the model ")
    assert before[2].startswith("demo: segmenting held-out clip 0: 4 frames")
    assert before[3].startswith(f"demo: wrote {tmp_path / 'out' / 'overlay.gif'}")
    assert before[4] == "demo: scoring 2 held-out clips of 5 frames (mIoU, video AP, PQ) ..."
    assert seen["long"].startswith("demo: streaming 4 held-out clips of 64 frames")
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["miou"] == 0.25 and results["long_miou"] == 0.5 and results["heldout_clips"] == 2


def demo_model() -> str:
    from videomt_jax.apps.pipeline import DEFAULT_MODEL_DIR

    return str(DEFAULT_MODEL_DIR)
