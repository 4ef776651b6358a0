"""bench/input_pipeline.py: the lean batch's size on a bucket canvas."""

from __future__ import annotations

import json


def test_input_pipeline_bench_reports_the_lean_batch_size(capsys):
    from input_pipeline import main  # bench/ (pytest pythonpath)

    assert main(["--workers", "0", "--batches", "1", "--videos", "2", "--frames", "6", "--size", "72", "128"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    timed = rows[-1]
    # ytvis19-vits: 8 clips x 5 frames on a bucket canvas (multiples of 128, at most 768x768), 32 slots:
    # uint8 frames + masks at 1 bit a pixel (+ labels, content sizes)
    h, w = timed["first_canvas"]
    assert h % 128 == 0 and w % 128 == 0 and max(h, w) <= 768
    frames_mb, bits_mb = 8 * 5 * h * w * 3 / 1e6, 8 * 5 * 32 * h * -(-w // 8) / 1e6
    assert timed["workers"] == 0 and timed["clips_per_s"] > 0
    assert abs(timed["batch_mb"] - (frames_mb + bits_mb)) < 0.1
