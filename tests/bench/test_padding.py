"""bench/padding.py: the clips' own frames hold far less padding than the old fixed canvas."""

from __future__ import annotations

import json


def test_own_frames_pad_less_than_the_fixed_canvas(capsys):
    from padding import main  # bench/ (pytest pythonpath)

    assert main(["--clips", "400", "--bucket", "128"]) == 0
    rows = {r["frame"].split(" (")[0]: r for r in map(json.loads, capsys.readouterr().out.splitlines())}
    fixed, own = rows["fixed canvas 768x768"], rows["own, multiple of 32"]
    assert own["worst"] < 0.2 < fixed["median"]  # at most 31 pixels a side vs a 768x768 square
    one = rows["bucket 128, 1 clips a step"]
    assert own["median"] <= one["median"] <= fixed["median"]
