"""The lean training batch: uint8 frames normalised in the step, masks bit-packed along W.

Letters: B clips, T frames, M slots, H/W frame size (W = 12: not a multiple of 8, so the last
byte of every packed row is half padding).
"""

from __future__ import annotations

import jax
import numpy as np
import pytest

from tests.helpers.batches import CFG, PROCESSOR, SLOTS, H, T, W, sized_clip, toy_clip
from videomt_jax.data.batching import (
    Clip,
    ClipNumbering,
    add_stuff_instances,
    collate,
    pixel_table,
    validate_clip,
)
from videomt_jax.data.synthetic import SyntheticConfig, make_clip
from videomt_jax.ops.labels import IGNORE_INDEX
from videomt_jax.training.step import (
    batch_arrays,
    check_batch,
    step_inputs,
)


def test_crowded_clip_keeps_its_largest_objects_and_counts_the_rest():
    """A clip with more objects than slots never stops training: the largest stay (in their order)."""
    crowded = toy_clip(0)
    areas = (9, 3, 12, 1, 6)  # pixels of each object in frame 1; object 3 also in frame 0
    masks = np.zeros((T, len(areas), H, W), bool)
    for m, area in enumerate(areas):
        masks[1, m].flat[:area] = True
    masks[0, 3, 0, 0] = True
    crowded = crowded._replace(
        masks=masks, classes=np.array([0, 1, 0, 1, 1], np.int32), track_ids=np.arange(10, 15, dtype=np.int32)
    )
    batch = collate([toy_clip(1), crowded], num_labels=2, max_instances=SLOTS, processor=PROCESSOR)
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
    clips = [toy_clip(0), toy_clip(1)]
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
    batch = collate([toy_clip(0)], num_labels=2, max_instances=SLOTS, processor=PROCESSOR)
    np.testing.assert_array_equal(batch.pixel_values, PROCESSOR.normalize(batch.frames))
    device, _ = jax.jit(step_inputs)({"frames": frames, "mask_labels": np.zeros(1)}, table)
    assert device.dtype == np.float32
    np.testing.assert_array_equal(np.asarray(device), host)  # bit for bit (the bound asked: 1e-6)
    bits = np.packbits(np.random.default_rng(4).random((2, T, SLOTS, H, W)) < 0.5, axis=-1)
    _, masks = jax.jit(step_inputs)({"pixel_values": host, "mask_bits": bits}, table)
    np.testing.assert_array_equal(np.asarray(masks), np.unpackbits(bits, axis=-1, count=W).astype(bool))


def test_clips_of_their_own_sizes_share_a_bucket_canvas():
    from videomt_jax.data.batching import batch_canvas

    assert batch_canvas([(8, 12), (4, 20)], bucket=8, cap=(32, 32)) == (8, 24)
    assert batch_canvas([(8, 12), (4, 20)], bucket=16, cap=(32, 16)) == (16, 20)  # a clip is never cut
    assert batch_canvas([(8, 12)], bucket=None, cap=(16, 16)) == (16, 16)  # no bucket: one canvas
    clips = [sized_clip(1, (8, 12)), sized_clip(2, (4, 20))]
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
    one_frame = _hand_clip()._replace(frames=_hand_clip().frames[:1], masks=_hand_clip().masks[:1])
    with pytest.raises(ValueError, match="clip 1 has 1 frames, clip 0 has 2: a batch needs one T"):
        collate([_hand_clip(), one_frame], num_labels=3, max_instances=2)
    sizes = collate([_hand_clip(), _hand_clip(size=6)], num_labels=3, max_instances=2)  # sizes may differ
    assert sizes.frames.shape[2:4] == (6, 6) and sizes.content_hw.tolist() == [[4, 4], [6, 6]]
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
