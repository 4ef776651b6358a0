"""Synthetic clips, clip-consistent augmentation and batching to fixed-shape targets."""

from __future__ import annotations

import time

import numpy as np
import pytest

from videomt_jax.data.augment import AugmentConfig, AugmentParams, apply_params, augment_clip, sample_params
from videomt_jax.data.batching import (
    Clip,
    add_stuff_instances,
    collate,
    validate_clip,
)
from videomt_jax.data.synthetic import THING_CLASSES, SyntheticConfig, iterate_batches, make_clip
from videomt_jax.ops.labels import IGNORE_INDEX, LABEL_DIVISOR, VOID_ID

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


def test_flip_is_the_mirror_image():
    clip = make_clip(CFG, "train", 1)
    out = augment_clip(clip, AugmentConfig(flip_prob=1.0, scale_range=(1.0, 1.0)), 0)
    np.testing.assert_array_equal(out.frames, clip.frames[:, :, ::-1])
    np.testing.assert_array_equal(out.masks, clip.masks[..., ::-1])
    np.testing.assert_array_equal(out.semantic, clip.semantic[..., ::-1])
    np.testing.assert_array_equal(out.panoptic, clip.panoptic[..., ::-1])
    same = augment_clip(clip, AugmentConfig(flip_prob=0.0, scale_range=(1.0, 1.0)), 0)
    np.testing.assert_array_equal(same.frames, clip.frames)


def test_upscale_by_two_repeats_pixels_in_every_frame():
    clip = make_clip(CFG, "train", 2)
    params = AugmentParams(flip=False, scaled_hw=(96, 96), offset=(0, 0), output_hw=(96, 96))
    out = apply_params(clip, params)
    np.testing.assert_array_equal(out.masks, clip.masks.repeat(2, axis=2).repeat(2, axis=3))
    np.testing.assert_array_equal(out.semantic, clip.semantic.repeat(2, axis=1).repeat(2, axis=2))


def test_crop_is_the_same_window_for_all_frames():
    clip = make_clip(CFG, "train", 5)
    cfg = AugmentConfig(output_size=(24, 24), flip_prob=0.0, scale_range=(2.0, 2.0))  # fit 0.5 x 2 = scale 1
    params = sample_params(clip.image_hw, cfg, np.random.default_rng(7))
    assert params.scaled_hw == (48, 48)
    out = augment_clip(clip, cfg, np.random.default_rng(7))
    (oy, ox) = params.offset
    np.testing.assert_array_equal(out.frames, clip.frames[:, oy : oy + 24, ox : ox + 24])
    np.testing.assert_array_equal(out.masks, clip.masks[:, :, oy : oy + 24, ox : ox + 24])
    np.testing.assert_array_equal(out.present, clip.masks[:, :, oy : oy + 24, ox : ox + 24].any(axis=(2, 3)))


def test_downscale_pads_bottom_right():
    clip = make_clip(CFG, "train", 6)
    out = augment_clip(clip, AugmentConfig(flip_prob=0.0, scale_range=(0.5, 0.5)), 0)
    assert out.frames.shape == clip.frames.shape
    np.testing.assert_array_equal(out.masks[..., :24, :24], clip.masks[..., 1::2, 1::2])
    assert not out.masks[..., 24:, :].any() and not out.masks[..., :, 24:].any()
    assert (out.semantic[:, 24:] == IGNORE_INDEX).all() and (out.panoptic[:, :, 24:] == VOID_ID).all()
    np.testing.assert_array_equal(out.frames[0, 30, 30], [124, 116, 104])  # ImageNet mean, rounded


def test_random_augment_is_deterministic_and_consistent():
    clip = make_clip(CFG, "train", 8)
    cfg = AugmentConfig(output_size=(40, 40), scale_range=(0.6, 1.8))
    a, b = augment_clip(clip, cfg, 11), augment_clip(clip, cfg, 11)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    for m in range(a.num_instances):
        assert (a.semantic[a.masks[:, m]] == a.classes[m]).all()
    labeled = a.panoptic != VOID_ID
    np.testing.assert_array_equal(a.panoptic[labeled] // LABEL_DIVISOR, a.semantic[labeled])
    with pytest.raises(ValueError, match="flip_prob"):
        AugmentConfig(flip_prob=1.5)


# ----------------------------------------------------------------------------- batching


def _hand_clip(classes=(0, 2), size=4):
    masks = np.zeros((2, len(classes), size, size), bool)
    masks[0, 0, 0, 0] = masks[1, 0, 1, 1] = True
    if len(classes) > 1:
        masks[1, 1, 2:, 2:] = True  # instance 1 absent from frame 0
    frames = np.zeros((2, size, size, 3), np.uint8)
    frames[0, 0, 0] = (255, 255, 255)
    return Clip(frames, masks, np.array(classes, np.int32), np.arange(1, len(classes) + 1, dtype=np.int32))


def test_collate_hand_case():
    batch = collate([_hand_clip()], num_labels=3, max_instances=3)
    expected_valid = np.array([[[True, False, False], [True, True, False]]])
    np.testing.assert_array_equal(batch.valid, expected_valid)
    np.testing.assert_array_equal(batch.class_labels, [[[0, 3, 3], [0, 2, 3]]])
    np.testing.assert_array_equal(batch.track_ids, [[1, 2, -1]])
    assert batch.mask_labels[0, 1, 1, 2:, 2:].all() and batch.mask_labels[0, 1, 1].sum() == 4
    mean = np.array([0.485, 0.456, 0.406]) * 255
    std = np.array([0.229, 0.224, 0.225]) * 255
    np.testing.assert_allclose(batch.pixel_values[0, 0, 1, 1], -mean / std, rtol=1e-6)
    np.testing.assert_allclose(batch.pixel_values[0, 0, 0, 0], (255 - mean) / std, rtol=1e-6)
    assert batch.semantic is None


def test_collate_drops_never_present_instances():
    clip = _hand_clip(classes=(0, 1))
    clip = clip._replace(masks=clip.masks.copy())
    clip.masks[:, 1] = False
    batch = collate([clip], num_labels=2, max_instances=1)
    np.testing.assert_array_equal(batch.track_ids, [[1]])


def test_collate_errors():
    with pytest.raises(ValueError, match=r"class ids \[5\] are outside \[0, 3\)"):
        collate([_hand_clip(classes=(0, 5))], num_labels=3, max_instances=4)
    with pytest.raises(ValueError, match=r"clip 1 has \(T, H, W\)"):
        collate([_hand_clip(), _hand_clip(size=6)], num_labels=3, max_instances=2)
    bad = _hand_clip()._replace(masks=_hand_clip().masks.astype(np.uint8))
    with pytest.raises(TypeError, match="clip 0: Clip.masks must have dtype bool"):
        collate([bad], num_labels=3, max_instances=2)
    with pytest.raises(ValueError, match="Clip.masks has shape"):
        validate_clip(_hand_clip()._replace(masks=np.zeros((2, 2, 5, 4), bool)))


def test_add_stuff_instances():
    cfg = SyntheticConfig(image_size=32, num_frames=2)
    clip = make_clip(cfg, "train", 0)
    full = add_stuff_instances(clip, cfg.stuff_ids)
    seen = sorted(set(np.unique(clip.semantic).tolist()) & set(cfg.stuff_ids))
    assert full.num_instances == clip.num_instances + len(seen)
    np.testing.assert_array_equal(full.masks.sum(axis=1), np.ones((2, 32, 32)))  # things + stuff tile the frame
    for s, cls in enumerate(seen):
        np.testing.assert_array_equal(full.masks[:, clip.num_instances + s], clip.semantic == cls)
