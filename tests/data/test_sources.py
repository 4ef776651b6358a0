"""Real-format dataset readers (YouTube-VIS / OVIS, VIPSeg, VSPW), the authors' clip augmentation and
the training clip sampler, on tiny fixture datasets written by `dataset_fixtures`."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
from PIL import Image

from tests.helpers.datasets import rewrite_json, write_vipseg, write_vspw, write_ytvis
from videomt_jax.data.batching import Clip, validate_clip
from videomt_jax.data.clip_transforms import ClipAugment, augment_video_clip, eval_input_size, shortest_edge_size
from videomt_jax.data.sources import VIPSegDataConfig, VSPWDataConfig, YTVISDataConfig
from videomt_jax.ops.labels import IGNORE_INDEX, LABEL_DIVISOR, VOID_ID

FILL = (123.675, 116.28, 103.53)


def test_shortest_edge_size_follows_detectron2():
    # 720x1280 at short 640: 640x1137.8 -> capped at 768: 432x768 (by hand)
    assert shortest_edge_size((720, 1280), 640, 768) == (432, 768)
    assert shortest_edge_size((480, 640), 320, 768) == (320, 427)  # 426.67 rounds half up
    assert shortest_edge_size((1280, 720), 448, 1333) == (796, 448)  # portrait: 796.4
    assert eval_input_size((720, 1280), 448, 1333, 32) == ((448, 796), (448, 800))


def _toy_clip(t=3, h=20, w=30) -> Clip:
    frames = np.zeros((t, h, w, 3), np.uint8)
    frames[:, :, : w // 3] = 200  # left third bright
    masks = np.zeros((t, 1, h, w), bool)
    masks[:, 0, :, : w // 3] = True
    sem = np.where(masks[:, 0], 1, 0).astype(np.int32)
    return Clip(frames, masks, np.array([1], np.int32), np.array([7], np.int32), semantic=sem)


def test_augment_resizes_flips_and_pads_every_frame_alike():
    cfg = ClipAugment(min_sizes=(40,), max_size=1000, canvas=(64, 96), flip_prob=1.0)
    out = augment_video_clip(_toy_clip(), cfg, np.random.default_rng(0), FILL)
    validate_clip(out)
    assert out.frames.shape == (3, 64, 64, 3)  # 40x60 padded to multiples of 32 (not to the 64x96 canvas)
    # short edge 20 -> 40: 40x60, flipped: the bright third is now the right third of the 60 columns
    assert (out.frames[:, :40, 41:60] == 200).all() and (out.frames[:, :40, :39] == 0).all()
    assert out.masks[:, 0, :40, 41:60].all() and not out.masks[:, 0, :, :39].any()
    assert (out.frames[:, 40:] == np.round(FILL).astype(np.uint8)).all()  # padding: the pixel mean
    assert (out.semantic[:, 40:] == IGNORE_INDEX).all() and not out.masks[:, :, 40:].any()
    assert all((out.frames[0] == f).all() for f in out.frames)  # one draw for the whole clip


def test_augment_crops_what_exceeds_the_canvas():
    cfg = ClipAugment(min_sizes=(64,), max_size=1000, canvas=(32, 64), flip_prob=0.0)
    out = augment_video_clip(_toy_clip(), cfg, np.random.default_rng(1), FILL)
    assert out.frames.shape == (3, 32, 64, 3) and out.semantic.shape == (3, 32, 64)


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
