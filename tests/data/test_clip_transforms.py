"""The authors' clip augmentation (data/clip_transforms.py): detectron2's sizes, one draw per clip,
padding to a multiple of 32."""

from __future__ import annotations

import numpy as np

from videomt_jax.data.batching import Clip, validate_clip
from videomt_jax.data.clip_transforms import ClipAugment, augment_video_clip, eval_input_size, shortest_edge_size
from videomt_jax.ops.labels import IGNORE_INDEX

FILL = (123.675, 116.28, 103.53)


def _toy_clip(t=3, h=20, w=30) -> Clip:
    frames = np.zeros((t, h, w, 3), np.uint8)
    frames[:, :, : w // 3] = 200  # left third bright
    masks = np.zeros((t, 1, h, w), bool)
    masks[:, 0, :, : w // 3] = True
    sem = np.where(masks[:, 0], 1, 0).astype(np.int32)
    return Clip(frames, masks, np.array([1], np.int32), np.array([7], np.int32), semantic=sem)


def test_shortest_edge_size_follows_detectron2():
    # 720x1280 at short 640: 640x1137.8 -> capped at 768: 432x768 (by hand)
    assert shortest_edge_size((720, 1280), 640, 768) == (432, 768)
    assert shortest_edge_size((480, 640), 320, 768) == (320, 427)  # 426.67 rounds half up
    assert shortest_edge_size((1280, 720), 448, 1333) == (796, 448)  # portrait: 796.4
    assert eval_input_size((720, 1280), 448, 1333, 32) == ((448, 796), (448, 800))


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
