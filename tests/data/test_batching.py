"""The lean training batch: uint8 frames normalised in the step, masks bit-packed along W.

Letters: B clips, T frames, M slots, H/W frame size (W = 12: not a multiple of 8, so the last
byte of every packed row is half padding).
"""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest

from videomt_jax.config import VideomtConfig
from videomt_jax.data.batching import Clip, ClipNumbering, collate, pixel_table
from videomt_jax.modeling.family import init_params
from videomt_jax.processing import VideoProcessor
from videomt_jax.training.config import TrainConfig
from videomt_jax.training.loop import check_normalization
from videomt_jax.training.memory import abstract_batch
from videomt_jax.training.step import (
    batch_arrays,
    check_batch,
    create_train_state,
    make_train_step,
    step_inputs,
)

T, H, W, SLOTS = 2, 8, 12, 3
CFG = VideomtConfig(
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    num_blocks=1,
    image_size=(H, W),
    patch_size=4,
    num_queries=4,
    num_register_tokens=1,
    num_upscale_blocks=1,
    train_num_points=24,
    dtype="float32",
    id2label={0: "a", 1: "b"},
)
# a processor that is not the model's default: the step must use the one it is given
PROCESSOR = VideoProcessor(mean=(0.3, 0.5, 0.7), std=(0.2, 0.25, 0.3))


def _clip(seed: int) -> Clip:
    """Two instances: a random blob present in both frames, a row segment absent from frame 0."""
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 256, (T, H, W, 3), dtype=np.uint8)
    masks = np.zeros((T, 2, H, W), bool)
    masks[:, 0] = rng.random((T, H, W)) < 0.4
    masks[1, 1, 2, 7:12] = True  # crosses the byte boundary at column 8, ends in the padded byte
    return Clip(frames, masks, np.array([1, 0], np.int32), np.array([5, 9], np.int32))


def test_crowded_clip_keeps_its_largest_objects_and_counts_the_rest():
    """A clip with more objects than slots never stops training: the largest stay (in their order)."""
    crowded = _clip(0)
    areas = (9, 3, 12, 1, 6)  # pixels of each object in frame 1; object 3 also in frame 0
    masks = np.zeros((T, len(areas), H, W), bool)
    for m, area in enumerate(areas):
        masks[1, m].flat[:area] = True
    masks[0, 3, 0, 0] = True
    crowded = crowded._replace(
        masks=masks, classes=np.array([0, 1, 0, 1, 1], np.int32), track_ids=np.arange(10, 15, dtype=np.int32)
    )
    batch = collate([_clip(1), crowded], num_labels=2, max_instances=SLOTS, processor=PROCESSOR)
    assert batch.dropped.tolist() == [0, 2]
    kept = [0, 2, 4]  # areas 9, 12, 6 (object 3 has 2 pixels over the clip)
    assert batch.track_ids[1].tolist() == [10 + m for m in kept]
    np.testing.assert_array_equal(batch.mask_labels[1], masks[:, kept])
    assert batch.class_labels[1, 1].tolist() == crowded.classes[kept].tolist()


def test_clip_numbering_gives_each_process_its_block_of_the_step():
    # 3 processes x 2 clips: step s, process p, clip j is run-wide clip 6 s + 2 p + j (by hand)
    seen = [ClipNumbering(6, p, 3).number(s, j) for s in range(3) for p in range(3) for j in range(2)]
    assert seen == list(range(18)) and ClipNumbering(6, 1, 3).local == 2
    assert [ClipNumbering(6).number(2, j) for j in range(6)] == list(range(12, 18))  # one process: the same clips
    for bad in ((6, 0, 4), (6, 3, 3), (0, 0, 1)):
        with pytest.raises(ValueError, match=f"batch size {bad[0]} cannot be split over {bad[2]} processes"):
            ClipNumbering(*bad)


def test_collate_packs_the_masks_exactly():
    clips = [_clip(0), _clip(1)]
    batch = collate(clips, num_labels=2, max_instances=SLOTS, processor=PROCESSOR)
    assert batch.mask_bits.shape == (2, T, SLOTS, H, 2) and batch.mask_bits.dtype == np.uint8
    assert batch.frames.dtype == np.uint8 and np.array_equal(batch.frames, np.stack([c.frames for c in clips]))
    # hand-computed bytes of the row segment (columns 7..11): 0b00000001, then 0b11110000
    assert batch.mask_bits[0, 1, 1, 2].tolist() == [1, 0xF0]
    assert not batch.mask_bits[0, 0, 1].any()  # instance 1 is absent from frame 0
    for b, clip in enumerate(clips):
        unpacked = np.zeros((T, SLOTS, H, 16), bool)
        for t in range(T):
            for m in range(SLOTS):
                for y in range(H):
                    for byte in range(2):
                        bits = int(batch.mask_bits[b, t, m, y, byte])
                        unpacked[t, m, y, 8 * byte : 8 * byte + 8] = [(bits >> (7 - k)) & 1 for k in range(8)]
        assert not unpacked[..., W:].any()  # the padding bits of the last byte are zero
        np.testing.assert_array_equal(unpacked[:, :2, :, :W], clip.masks)
        assert not unpacked[:, 2:].any()  # the empty slot
        np.testing.assert_array_equal(batch.mask_labels[b, :, :2], clip.masks)
    assert batch.mask_labels.dtype == np.bool_ and batch.mask_labels.shape == (2, T, SLOTS, H, W)


def test_pixels_normalise_like_the_host_and_the_hand_formula():
    frames = np.random.default_rng(3).integers(0, 256, (2, T, H, W, 3), dtype=np.uint8)
    table = pixel_table(PROCESSOR)
    mean, std = np.array(PROCESSOR.mean), np.array(PROCESSOR.std)
    np.testing.assert_allclose(table, (np.arange(256)[:, None] / 255 - mean) / std, rtol=0, atol=1e-6)
    host = PROCESSOR.normalize(frames)
    batch = collate([_clip(0)], num_labels=2, max_instances=SLOTS, processor=PROCESSOR)
    np.testing.assert_array_equal(batch.pixel_values, PROCESSOR.normalize(batch.frames))
    device, _ = jax.jit(step_inputs)({"frames": frames, "mask_labels": np.zeros(1)}, table)
    assert device.dtype == np.float32
    np.testing.assert_array_equal(np.asarray(device), host)  # bit for bit (the bound asked: 1e-6)
    bits = np.packbits(np.random.default_rng(4).random((2, T, SLOTS, H, W)) < 0.5, axis=-1)
    _, masks = jax.jit(step_inputs)({"pixel_values": host, "mask_bits": bits}, table)
    np.testing.assert_array_equal(np.asarray(masks), np.unpackbits(bits, axis=-1, count=W).astype(bool))


def test_one_train_step_is_bit_identical_in_both_formats():
    clips = [_clip(10), _clip(11)]
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
    lean = batch_arrays(collate([_clip(0), _clip(1)], num_labels=2, max_instances=SLOTS))
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
    other = collate([_clip(0)], num_labels=2, max_instances=SLOTS, processor=PROCESSOR)
    check_normalization(other, PROCESSOR)
    with pytest.raises(ValueError, match="another VideoProcessor"):
        check_normalization(other, VideoProcessor())


def test_abstract_batch_is_what_collate_feeds():
    lean = batch_arrays(collate([_clip(0), _clip(1)], num_labels=2, max_instances=SLOTS))
    spec = abstract_batch(2, T, (H, W), SLOTS)
    assert {k: (v.shape, np.dtype(v.dtype)) for k, v in spec.items()} == {
        k: (v.shape, v.dtype) for k, v in lean.items()
    }


def test_input_pipeline_bench_reports_the_lean_batch_size(capsys):
    from input_pipeline import main  # bench/ (pytest pythonpath)

    assert main(["--workers", "0", "--batches", "1", "--videos", "2", "--frames", "6", "--size", "72", "128"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    timed = rows[-1]
    # ytvis19-vits: 8 clips x 5 frames on a bucket canvas (multiples of 128, at most 768x768), 32 slots:
    # uint8 frames + masks at 1 bit a pixel (+ labels, content sizes)
    h, w = timed["first_canvas"]
    assert h % 128 == 0 and w % 128 == 0 and max(h, w) <= 768
    frames_mb, bits_mb = 8 * 5 * h * w * 3 / 1e6, 8 * 5 * 32 * h * -(-w // 8) / 1e6
    assert timed["workers"] == 0 and timed["clips_per_s"] > 0
    assert abs(timed["batch_mb"] - (frames_mb + bits_mb)) < 0.1


def _small_clip(seed: int, hw: tuple[int, int]) -> Clip:
    rng = np.random.default_rng(seed)
    masks = rng.random((T, 2, *hw)) < 0.4
    semantic = rng.integers(0, 2, (T, *hw)).astype(np.int32)
    frames = rng.integers(0, 256, (T, *hw, 3), dtype=np.uint8)
    return Clip(frames, masks, np.array([1, 0], np.int32), np.array([5, 9], np.int32), semantic=semantic)


def test_clips_of_their_own_sizes_share_a_bucket_canvas():
    from videomt_jax.data.batching import batch_canvas
    from videomt_jax.ops.labels import IGNORE_INDEX

    assert batch_canvas([(8, 12), (4, 20)], bucket=8, cap=(32, 32)) == (8, 24)
    assert batch_canvas([(8, 12), (4, 20)], bucket=16, cap=(32, 16)) == (16, 20)  # a clip is never cut
    assert batch_canvas([(8, 12)], bucket=None, cap=(16, 16)) == (16, 16)  # no bucket: one canvas
    clips = [_small_clip(1, (8, 12)), _small_clip(2, (4, 20))]
    batch = collate(clips, num_labels=2, max_instances=SLOTS, processor=PROCESSOR, bucket=8, cap=(32, 32))
    assert batch.frames.shape[2:4] == (8, 24) and batch.content_hw.tolist() == [[8, 12], [4, 20]]
    fill = np.round(np.asarray(PROCESSOR.pixel_mean)).astype(np.uint8)
    for i, clip in enumerate(clips):
        h, w = clip.frames.shape[1:3]
        assert np.array_equal(batch.frames[i, :, :h, :w], clip.frames)
        assert (batch.frames[i, :, h:] == fill).all() and (batch.frames[i, :, :, w:] == fill).all()
        assert np.array_equal(batch.mask_labels[i, :, :2, :h, :w], clip.masks)
        assert not batch.mask_labels[i, :, :, h:].any() and not batch.mask_labels[i, :, :, :, w:].any()
        assert np.array_equal(batch.semantic[i, :, :h, :w], clip.semantic)
        assert (batch.semantic[i, :, h:] == IGNORE_INDEX).all()
    same = collate([clips[0], clips[0]], num_labels=2, max_instances=SLOTS, bucket=None, cap=None)
    assert same.content_hw is None  # every clip fills the canvas: the step runs without regions
    check_batch(batch_arrays(batch), CFG.replace(image_size=(8, 24)))
    with pytest.raises(ValueError, match="content_hw must be multiples of the patch size"):
        check_batch({**batch_arrays(batch), "content_hw": np.array([[8, 12], [4, 18]], np.int32)}, CFG)


def test_a_train_step_on_a_bucket_canvas_runs_and_keeps_to_the_regions():
    clips = [_small_clip(1, (8, 12)), _small_clip(2, (4, 20))]
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
