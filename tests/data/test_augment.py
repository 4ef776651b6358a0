"""The synthetic data's augmentation (data/augment.py): flips, rescales and crops move every frame and label alike."""

from __future__ import annotations

import numpy as np
import pytest

from videomt_jax.data.augment import AugmentConfig, AugmentParams, apply_params, augment_clip, sample_params
from videomt_jax.data.synthetic import SyntheticConfig, make_clip
from videomt_jax.ops.labels import IGNORE_INDEX, LABEL_DIVISOR, VOID_ID

CFG = SyntheticConfig(image_size=48, num_frames=4, max_objects=5)


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
