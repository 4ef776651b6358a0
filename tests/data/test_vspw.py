"""The VSPW reader (data/vspw.py): raw PNG values to labels, errors naming file and record."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from tests.helpers.datasets import write_vspw
from videomt_jax.data.sources import VSPWDataConfig
from videomt_jax.ops.labels import IGNORE_INDEX


def test_vspw_reader_maps_raw_values(tmp_path):
    info = write_vspw(tmp_path)
    reader = VSPWDataConfig("vspw", root=str(tmp_path / "VSPW_480p")).open("train")
    clip = reader.load_clip(1)
    raw = info["truth"]["train_2"]
    # raw 1 = category 0 (wall, first stuff) -> label 58; raw 3 = category 2 (door, first thing) -> 0
    expected = np.select([raw == 1, raw == 3], [58, 0], IGNORE_INDEX)
    assert np.array_equal(clip.semantic, expected)
    assert clip.classes.tolist() == [0, 58] and np.array_equal(clip.masks[:, 1], raw == 1)


def test_vspw_errors_name_the_file_and_the_record(tmp_path):
    info = write_vspw(tmp_path)
    bad = info["base"] / "data" / "train_1" / "mask" / "00000002.png"
    Image.fromarray(np.full((24, 32), 200, np.uint8)).save(bad)
    reader = VSPWDataConfig("vspw", root=str(tmp_path)).open("train")
    with pytest.raises(
        ValueError, match=r"train.txt: video 'train_1': label map .*00000002.png holds unknown category values \[200\]"
    ):
        reader.load_clip(0)
    for f in (info["base"] / "data" / "train_2" / "origin").iterdir():
        f.unlink()
    with pytest.raises(ValueError, match=r"train.txt: video 'train_2': frame folder .* is empty"):
        VSPWDataConfig("vspw", root=str(tmp_path)).open("train")
    with pytest.raises(ValueError, match=r"needs a dataset root: pass --data-root"):
        VSPWDataConfig("vspw").open("train")
