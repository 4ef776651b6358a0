"""Real-format dataset readers (YouTube-VIS / OVIS, VIPSeg, VSPW), the authors' clip augmentation and
the training clip sampler, on tiny fixture datasets written by `dataset_fixtures`."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest

from tests.helpers.datasets import rewrite_json, write_ytvis
from videomt_jax.data.batching import Clip
from videomt_jax.data.sources import YTVISDataConfig

FILL = (123.675, 116.28, 103.53)


def _toy_clip(t=3, h=20, w=30) -> Clip:
    frames = np.zeros((t, h, w, 3), np.uint8)
    frames[:, :, : w // 3] = 200  # left third bright
    masks = np.zeros((t, 1, h, w), bool)
    masks[:, 0, :, : w // 3] = True
    sem = np.where(masks[:, 0], 1, 0).astype(np.int32)
    return Clip(frames, masks, np.array([1], np.int32), np.array([7], np.int32), semantic=sem)


def test_ytvis_train_clips_are_a_pure_function_of_the_index(tmp_path):
    write_ytvis(tmp_path)
    cfg = YTVISDataConfig(
        "ytvis_2019",
        root=str(tmp_path),
        num_frames=3,
        frame_range=1,
        min_size_train=(32,),
        max_size_train=64,
        canvas=(64, 64),
    )
    clips = cfg.train_clips(FILL)
    a, b = clips(5), pickle.loads(pickle.dumps(clips))(5)  # a fresh copy (as in a worker process) agrees
    h, w = a.frames.shape[1:3]  # padded to multiples of 32 of the clip's own size, at most the canvas
    assert a.frames.shape == (3, h, w, 3) and h % 32 == 0 and w % 32 == 0 and max(h, w) <= 64
    assert a.masks.shape[:2] == (3, 2)
    assert all(np.array_equal(x, y) for x, y in zip(a[:4], b[:4]))
    assert sorted(a.classes.tolist()) == [0, 2]  # category ids 1 and 3 -> labels 0 and 2
    picked = {tuple(clips(i).frame_indices.tolist()) for i in range(8)}
    assert len(picked) > 1


def test_ytvis_reader_matches_the_written_masks(tmp_path):
    info = write_ytvis(tmp_path, dataset="ovis", split="valid")
    cfg = YTVISDataConfig("ovis", root=str(tmp_path))
    reader = cfg.open("valid")
    clip = reader.load_clip(0)
    for m, (category, masks) in enumerate(info["truth"][1]):
        assert clip.classes[m] == category - 1
        for t, mask in enumerate(masks):
            assert np.array_equal(clip.masks[t, m], np.zeros_like(clip.masks[t, m]) if mask is None else mask)


@pytest.mark.parametrize(
    "break_it, message",
    [
        (
            lambda info: os.remove(info["image_root"] / "vid2/00001.jpg"),
            r"train.json: video 2: frame 1 file .*00001.jpg not found",
        ),
        (
            lambda info: rewrite_json(info["annotation_file"], lambda d: d["annotations"][0].update(category_id=99)),
            r"train.json: annotation 10 has unknown category 99",
        ),
        (
            lambda info: rewrite_json(
                info["annotation_file"], lambda d: d["videos"][0].update(file_names=[], length=0)
            ),
            r"train.json: video 1 has no frames",
        ),
        (
            lambda info: rewrite_json(info["annotation_file"], lambda d: d["annotations"][0]["segmentations"].pop()),
            r"train.json: video 1 annotation 10 has 3 segmentations for 4 frames",
        ),
        (
            lambda info: (info["image_root"] / "vid1/00000.jpg").write_bytes(b"not a jpeg"),
            r"train.json: video 1: cannot read frame 0 file .*00000.jpg",
        ),
    ],
)
def test_ytvis_errors_name_the_file_and_the_record(tmp_path, break_it, message):
    info = write_ytvis(tmp_path)
    break_it(info)
    cfg = YTVISDataConfig(
        "ytvis_2019",
        root=str(tmp_path / "ytvis_2019"),
        num_frames=4,
        frame_range=1,
        min_size_train=(32,),
        max_size_train=64,
        canvas=(64, 64),
    )
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        reader = cfg.open()
        for v in range(len(reader)):
            reader.load_clip(v)
