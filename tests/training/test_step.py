"""The train step (training/step.py): both batch formats, batch checks, content regions."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from tests.helpers.batches import CFG, PROCESSOR, SLOTS, H, T, W, sized_clip, toy_clip
from videomt_jax.data.batching import collate
from videomt_jax.modeling.family import init_params
from videomt_jax.processing import VideoProcessor
from videomt_jax.training.config import TrainConfig
from videomt_jax.training.loop import check_normalization
from videomt_jax.training.step import (
    batch_arrays,
    check_batch,
    create_train_state,
    make_train_step,
)


def test_one_train_step_is_bit_identical_in_both_formats():
    clips = [toy_clip(10), toy_clip(11)]
    lean = collate(clips, num_labels=2, max_instances=SLOTS, processor=PROCESSOR)
    plain = {
        "pixel_values": PROCESSOR.normalize(lean.frames),
        "mask_labels": np.zeros((2, T, SLOTS, H, W), bool),
        "class_labels": lean.class_labels,
        "valid": lean.valid,
    }
    for b, clip in enumerate(clips):  # the bool masks, built here from the clips (both instances present)
        plain["mask_labels"][b, :, :2] = clip.masks
    tc = TrainConfig(
        steps=1, batch_size=2, num_frames=T, learning_rate=1e-2, warmup_head=0, warmup_encoder=0, deep_supervision=False
    )
    params = init_params(CFG, jax.random.key(0), image_hw=(H, W))
    results = []
    for batch in (batch_arrays(lean), plain):
        check_batch(batch, CFG)
        state, tx = create_train_state(params, CFG, tc)
        step = make_train_step(CFG, tc, tx, processor=PROCESSOR)
        state, metrics = step(state, {k: np.asarray(v) for k, v in batch.items()})
        results.append((jax.device_get(metrics), jax.device_get(state.params)))
    (m_lean, p_lean), (m_plain, p_plain) = results
    assert set(batch_arrays(lean)) == {"frames", "mask_bits", "class_labels", "valid"}
    assert np.isfinite(m_lean["loss"]) and m_lean["loss_mask"] > 0
    for k in m_plain:
        assert np.array_equal(m_lean[k], m_plain[k]), k
    for a, b in zip(jax.tree.leaves(p_lean), jax.tree.leaves(p_plain)):
        np.testing.assert_array_equal(a, b)


def test_bad_batches_name_the_field_and_shape():
    lean = batch_arrays(collate([toy_clip(0), toy_clip(1)], num_labels=2, max_instances=SLOTS))
    masks = np.unpackbits(lean["mask_bits"], axis=-1, count=W).astype(bool)
    cases = [
        ({**lean, "mask_labels": masks}, ValueError, r"exactly one of \['mask_bits', 'mask_labels'\]"),
        ({k: v for k, v in lean.items() if k != "mask_bits"}, ValueError, r"exactly one of .*got none"),
        ({**lean, "pixel_values": lean["frames"] / 1.0}, ValueError, r"exactly one of \['frames', 'pixel_values'\]"),
        (
            {**lean, "mask_bits": lean["mask_bits"].astype(bool)},
            TypeError,
            r"mask_bits must be uint8.*\(2, 2, 3, 8, 2\)",
        ),
        (
            {**lean, "mask_bits": np.packbits(np.pad(masks, [(0, 0)] * 4 + [(0, 5)]), axis=-1)},
            ValueError,
            r"mask_bits must be \[B, T, M, H, ceil\(W/8\)\] = \[B, T, M, 8, 2\] for 8x12 frames, "
            r"got shape \(2, 2, 3, 8, 3\)",
        ),
        ({**lean, "frames": lean["frames"].astype(np.float32)}, TypeError, r"frames must be uint8"),
    ]
    for batch, error, message in cases:
        with pytest.raises(error, match=message):
            check_batch(batch, CFG)
    with pytest.raises(ValueError, match=r"exactly one of \['mask_bits', 'mask_labels'\], got none"):
        batch_arrays({k: v for k, v in lean.items() if k != "mask_bits"})
    other = collate([toy_clip(0)], num_labels=2, max_instances=SLOTS, processor=PROCESSOR)
    check_normalization(other, PROCESSOR)
    with pytest.raises(ValueError, match="another VideoProcessor"):
        check_normalization(other, VideoProcessor())


def test_a_train_step_on_a_bucket_canvas_runs_and_keeps_to_the_regions():
    clips = [sized_clip(1, (8, 12)), sized_clip(2, (4, 20))]
    batch = batch_arrays(collate(clips, num_labels=2, max_instances=SLOTS, processor=PROCESSOR, bucket=8, cap=(32, 32)))
    tc = TrainConfig(steps=1, batch_size=2, num_frames=T, learning_rate=1e-2, warmup_head=0, warmup_encoder=0)
    params = init_params(CFG, jax.random.key(0), image_hw=(H, W))
    losses = []
    for frames in (batch["frames"], np.where(batch["frames"] > 0, 255 - batch["frames"], 7).astype(np.uint8)):
        outside = frames.copy()
        for i, clip in enumerate(clips):  # change only the pixels outside each clip's own region
            h, w = clip.frames.shape[1:3]
            outside[i, :, :h, :w] = batch["frames"][i, :, :h, :w]
        state, tx = create_train_state(params, CFG, tc)
        _, metrics = make_train_step(CFG, tc, tx, processor=PROCESSOR)(state, {**batch, "frames": outside})
        losses.append(float(metrics["loss"]))
    assert np.isfinite(losses[0]) and losses[0] == pytest.approx(losses[1], rel=1e-5)
