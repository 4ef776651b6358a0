"""bench/train_step.py: one real train step timed on the batch format `train` feeds."""

from __future__ import annotations

import math

import numpy as np
from train_step import random_batch, time_step, training_flops_per_clip

from videomt_bench.flops import flops_breakdown
from videomt_jax.training.memory import abstract_batch
from videomt_jax.training.recipes import load_recipe


def test_random_batch_leaves_invalid_slots_empty():
    shapes = abstract_batch(2, 3, (16, 20), 4)
    batch = random_batch(shapes, num_labels=5)
    assert {k: (v.shape, v.dtype) for k, v in batch.items()} == {k: (s.shape, s.dtype) for k, s in shapes.items()}
    assert batch["class_labels"].min() >= 0 and batch["class_labels"].max() < 5
    empty = ~batch["mask_bits"].any(axis=(-2, -1))  # [B, T, M]
    assert empty[~batch["valid"]].all() and not empty[batch["valid"]].all()


def test_training_flops_add_the_heads_of_each_aux_prediction():
    config = load_recipe("synthetic-tiny").model
    parts = flops_breakdown(config, 64, 64, 3)
    heads = parts["heads"] + parts["upscale"] + parts["mask_einsum"]
    assert training_flops_per_clip(config, (64, 64), 3, 0) == 3 * sum(parts.values())
    assert (
        training_flops_per_clip(config, (64, 64), 3, 2) - training_flops_per_clip(config, (64, 64), 3, 0) == 6 * heads
    )


def test_time_step_runs_the_recipe_step():
    row = time_step("synthetic-tiny", clips=2, remat="full", dtype=None, steps=1)
    assert row["clips"] == 2 and row["hw"] == [64, 64] and row["remat"] == "full"
    assert math.isfinite(row["loss"]) and row["loss"] > 0
    assert len(row["step_s_all"]) == 2 and row["step_s"] == row["step_s_all"][1]
    np.testing.assert_allclose(row["clips_per_s"], 2 / row["step_s"], rtol=0.1)  # step_s is rounded
    assert 0 < row["peak_gib"] < 1
