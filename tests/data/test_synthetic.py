"""Synthetic clips, clip-consistent augmentation and batching to fixed-shape targets."""

from __future__ import annotations

import time

import numpy as np
import pytest

from videomt_jax.data.augment import AugmentConfig
from videomt_jax.data.batching import (
    validate_clip,
)
from videomt_jax.data.synthetic import THING_CLASSES, SyntheticConfig, iterate_batches, make_clip
from videomt_jax.ops.labels import LABEL_DIVISOR

CFG = SyntheticConfig(image_size=48, num_frames=4, max_objects=5)


def test_label_set_is_contiguous_things_first():
    cfg = SyntheticConfig()
    assert cfg.id2label == {0: "circle", 1: "square", 2: "triangle", 3: "sky", 4: "grass", 5: "water"}
    assert cfg.thing_ids == (0, 1, 2) and cfg.stuff_ids == (3, 4, 5) and cfg.num_classes == 6


def test_same_seed_same_clip_and_splits_differ():
    a, b = make_clip(CFG, "train", 3), make_clip(CFG, "train", 3)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a.frames, make_clip(CFG, "heldout", 3).frames)
    assert not np.array_equal(a.frames, make_clip(CFG, "train", 4).frames)
    other_seed = SyntheticConfig(image_size=48, num_frames=4, max_objects=5, seed=1)
    assert not np.array_equal(a.frames, make_clip(other_seed, "train", 3).frames)


def test_shapes_and_dtypes():
    clip = validate_clip(make_clip(CFG, "train", 0))
    t, m = 4, clip.num_instances
    assert clip.frames.shape == (t, 48, 48, 3) and clip.frames.dtype == np.uint8
    assert clip.masks.shape == (t, m, 48, 48) and clip.masks.dtype == bool
    assert clip.classes.dtype == np.int32 and clip.track_ids.dtype == np.int32
    assert clip.semantic.shape == clip.panoptic.shape == (t, 48, 48)
    assert clip.present.shape == (t, m)
    rect = make_clip(SyntheticConfig(image_size=(32, 64)), "train", 0)
    assert rect.frames.shape[1:3] == (32, 64)


@pytest.mark.parametrize("index", range(12))
def test_masks_agree_with_semantic_and_panoptic(index):
    cfg = SyntheticConfig(image_size=40, num_frames=3)
    clip = make_clip(cfg, "train", index)
    assert (clip.masks.sum(axis=1) <= 1).all(), "visible instance masks overlap"
    assert clip.present.any(axis=0).all(), "an instance never visible was kept"
    for m in range(clip.num_instances):
        assert (clip.semantic[clip.masks[:, m]] == clip.classes[m]).all()
        assert (clip.panoptic[clip.masks[:, m]] == clip.classes[m] * LABEL_DIVISOR + clip.track_ids[m]).all()
    thing_pixels = np.isin(clip.semantic, cfg.thing_ids)
    np.testing.assert_array_equal(thing_pixels, clip.masks.any(axis=1))
    assert np.isin(clip.semantic[~thing_pixels], cfg.stuff_ids).all()
    np.testing.assert_array_equal(clip.panoptic // LABEL_DIVISOR, clip.semantic)
    np.testing.assert_array_equal(clip.panoptic[~thing_pixels] % LABEL_DIVISOR, 0)
    assert len(set(clip.track_ids.tolist())) == clip.num_instances


def _centroids(mask):  # [T, H, W] -> [T, 2]
    ys, xs = np.mgrid[: mask.shape[1], : mask.shape[2]]
    area = mask.sum(axis=(1, 2))
    return np.stack([(mask * ys).sum((1, 2)) / area, (mask * xs).sum((1, 2)) / area], axis=1)


def test_objects_move_and_enter_or_leave():
    cfg = SyntheticConfig(image_size=64, num_frames=5, max_objects=4, min_objects=2)
    shifts, partial_presence = [], 0
    for index in range(30):
        clip = make_clip(cfg, "train", index)
        present = clip.present
        partial_presence += int((present.any(axis=0) & ~present.all(axis=0)).sum())
        for m in range(clip.num_instances):
            mask = clip.masks[:, m]
            touches_border = mask[:, 0].any() or mask[:, -1].any() or mask[:, :, 0].any() or mask[:, :, -1].any()
            if present[:, m].all() and not touches_border:
                c = _centroids(mask)
                shifts.append(np.linalg.norm(c[-1] - c[0]))
                assert not np.array_equal(mask[0], mask[-1])
    assert len(shifts) > 10
    assert np.median(shifts) > 4.0  # at least 1.28 px per frame by construction, 4 frames apart
    assert partial_presence > 0, "no object ever entered, left or was fully hidden"


def test_thing_classes_have_their_own_colour():
    cfg = SyntheticConfig(image_size=64, thing_classes=("circle", "square", "triangle", "diamond", "cross"))
    palette = np.array([THING_CLASSES[n][1] for n in cfg.thing_classes], np.float32)
    hits = total = 0
    for index in range(20):
        clip = make_clip(cfg, "heldout", index)
        for m in range(clip.num_instances):
            pixels = clip.frames[clip.masks[:, m]].astype(np.float32)
            if len(pixels) < 30:
                continue
            nearest = np.argmin(np.linalg.norm(palette - pixels.mean(0), axis=1))
            hits += int(nearest == clip.classes[m])
            total += 1
    assert total > 20 and hits / total > 0.9


def test_generation_speed_96px_5_frames():
    cfg = SyntheticConfig(image_size=96, num_frames=5)
    make_clip(cfg, "train", 0)
    times = []
    for index in range(30):  # CPU time of this process: robust to other jobs sharing the cores
        start = time.process_time()
        make_clip(cfg, "train", index)
        times.append(time.process_time() - start)
    assert np.median(times) < 0.010, f"median of 30: {np.median(times) * 1e3:.1f} ms CPU"


def test_config_and_split_errors():
    with pytest.raises(ValueError, match="unknown synthetic classes"):
        SyntheticConfig(thing_classes=("circle", "hexagon"))
    with pytest.raises(ValueError, match="unknown split"):
        make_clip(CFG, "test", 0)
    with pytest.raises(ValueError, match="min_objects"):
        SyntheticConfig(min_objects=4, max_objects=2)


def test_iterate_batches_pads_per_frame_targets():
    batches = list(iterate_batches(CFG, "train", 3, num_batches=2, max_instances=6))
    assert len(batches) == 2
    b = batches[1]
    assert b.pixel_values.shape == (3, 4, 48, 48, 3) and b.pixel_values.dtype == np.float32
    assert b.mask_labels.shape == (3, 4, 6, 48, 48) and b.class_labels.shape == b.valid.shape == (3, 4, 6)
    for j in range(3):
        clip = make_clip(CFG, "train", 3 + j)  # batch 1 holds clips 3, 4, 5
        m = clip.num_instances
        np.testing.assert_array_equal(b.mask_labels[j, :, :m], clip.masks)
        np.testing.assert_array_equal(b.valid[j, :, :m], clip.present)
        np.testing.assert_array_equal(b.semantic[j], clip.semantic)
        assert not b.valid[j, :, m:].any() and not b.mask_labels[j, :, m:].any()
    assert (b.class_labels[~b.valid] == CFG.num_classes).all()
    again = next(iterate_batches(CFG, "train", 3, start=3, num_batches=1, max_instances=6))
    np.testing.assert_array_equal(again.pixel_values, b.pixel_values)
    aug = next(iterate_batches(CFG, "train", 2, num_batches=1, augment=AugmentConfig(output_size=(32, 32))))
    assert aug.pixel_values.shape == (2, 4, 32, 32, 3)


# ----------------------------------------------------------------------------- augmentation


# ----------------------------------------------------------------------------- batching
