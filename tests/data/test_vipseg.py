"""The VIPSeg reader (data/vipseg.py): things first, panoptic maps, errors naming file and record."""

from __future__ import annotations

import os

import numpy as np
import pytest

from tests.helpers.datasets import rewrite_json, write_vipseg
from videomt_jax.data.sources import VIPSegDataConfig
from videomt_jax.ops.labels import IGNORE_INDEX, LABEL_DIVISOR, VOID_ID


def test_vipseg_reader_things_first_and_panoptic_map(tmp_path):
    info = write_vipseg(tmp_path)
    reader = VIPSegDataConfig("vipseg", root=str(tmp_path)).open("train")
    clip = reader.load_clip(0)
    ids = info["truth"]["train_1"]  # [T, H, W] segment ids as written
    # door (category 2) is the first thing -> label 0; wall (category 0) the first stuff -> label 58
    assert dict(zip(clip.track_ids.tolist(), clip.classes.tolist())) == {1: 58, 201: 0, 202: 0}
    for m, s in enumerate(clip.track_ids):
        assert np.array_equal(clip.masks[:, m], ids == s)
    expected = np.full(ids.shape, VOID_ID)
    expected[ids == 1] = 58 * LABEL_DIVISOR
    expected[ids == 201] = 0 * LABEL_DIVISOR + 1
    expected[ids == 202] = 0 * LABEL_DIVISOR + 2
    assert np.array_equal(clip.panoptic, expected)  # crowd (300) and unlabeled (0) are void
    assert np.array_equal(clip.semantic, np.where(expected == VOID_ID, IGNORE_INDEX, expected // LABEL_DIVISOR))


def test_vipseg_errors_name_the_file_and_the_record(tmp_path):
    info = write_vipseg(tmp_path)
    rewrite_json(
        info["annotation_file"],
        lambda d: d["annotations"][1]["annotations"][2]["segments_info"][0].update(category_id=500),
    )
    with pytest.raises(
        ValueError,
        match=r"panoptic_gt_VIPSeg_train.json: video 'train_2' frame '00000002.png' segment 1 "
        r"has unknown category id 500",
    ):
        VIPSegDataConfig("vipseg", root=str(tmp_path)).open("train")
    info = write_vipseg(tmp_path)
    os.remove(info["base"] / "panomasksRGB" / "train_1" / "00000001.png")
    reader = VIPSegDataConfig("vipseg", root=str(tmp_path)).open("train")
    with pytest.raises(FileNotFoundError, match=r"video 'train_1': file .*train_1/00000001.png not found"):
        reader.load_clip(0)
    rewrite_json(info["annotation_file"], lambda d: d["annotations"][0].update(annotations=[]))
    with pytest.raises(ValueError, match=r"panoptic_gt_VIPSeg_train.json: video 'train_1' has no frames"):
        VIPSegDataConfig("vipseg", root=str(tmp_path)).open("train")


@pytest.mark.parametrize(
    "edit, message",
    [
        (
            lambda d: d["videos"][0]["images"][0].update(height=-4),
            r"video 'train_1' image '00000000': height must be a",
        ),
        (lambda d: d["annotations"][0].pop("video_id"), r"annotations entry 0 lacks the keys \['video_id'\]"),
        (lambda d: d["annotations"][0]["annotations"][0].update(segments_info=5), r"'segments_info' must be a list"),
        (lambda d: d["categories"][0].pop("id"), r"category \{.*\} lacks the keys \['id'\]"),
    ],
)
def test_vipseg_hostile_records_name_the_file_and_the_record(tmp_path, edit, message):
    info = write_vipseg(tmp_path)
    rewrite_json(info["annotation_file"], edit)
    with pytest.raises(ValueError, match=r"panoptic_gt_VIPSeg_train.json: .*" + message):
        VIPSegDataConfig("vipseg", root=str(tmp_path)).open("train")
