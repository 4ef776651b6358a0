"""Small clips and a tiny model for the batching and train-step tests (tests/data, tests/training).

Letters: T frames, M slots, H/W frame size (W = 12: not a multiple of 8, so the last byte of every
packed row is half padding).
"""

from __future__ import annotations

import numpy as np

from videomt_jax.config import VideomtConfig
from videomt_jax.data.batching import Clip
from videomt_jax.processing import VideoProcessor

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


def toy_clip(seed: int) -> Clip:
    """Two instances: a random blob present in both frames, a row segment absent from frame 0."""
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 256, (T, H, W, 3), dtype=np.uint8)
    masks = np.zeros((T, 2, H, W), bool)
    masks[:, 0] = rng.random((T, H, W)) < 0.4
    masks[1, 1, 2, 7:12] = True  # crosses the byte boundary at column 8, ends in the padded byte
    return Clip(frames, masks, np.array([1, 0], np.int32), np.array([5, 9], np.int32))


def sized_clip(seed: int, hw: tuple[int, int]) -> Clip:
    rng = np.random.default_rng(seed)
    masks = rng.random((T, 2, *hw)) < 0.4
    semantic = rng.integers(0, 2, (T, *hw)).astype(np.int32)
    frames = rng.integers(0, 256, (T, *hw, 3), dtype=np.uint8)
    return Clip(frames, masks, np.array([1, 0], np.int32), np.array([5, 9], np.int32), semantic=semantic)
