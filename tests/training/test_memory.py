"""training/memory.py: the abstract batch is what collate feeds; the pre-flight memory check."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from tests.helpers.batches import CFG, PROCESSOR, SLOTS, H, T, W, toy_clip
from videomt_jax.data.batching import collate
from videomt_jax.modeling.family import init_params
from videomt_jax.training.config import TrainConfig
from videomt_jax.training.memory import abstract_batch, check_step_fits
from videomt_jax.training.step import (
    batch_arrays,
    create_train_state,
    make_train_step,
    place_state,
)
from videomt_jax.utils import memory


def test_abstract_batch_is_what_collate_feeds():
    lean = batch_arrays(collate([toy_clip(0), toy_clip(1)], num_labels=2, max_instances=SLOTS))
    spec = abstract_batch(2, T, (H, W), SLOTS)
    assert {k: (v.shape, np.dtype(v.dtype)) for k, v in spec.items()} == {
        k: (v.shape, v.dtype) for k, v in lean.items()
    }


def test_a_step_larger_than_the_memory_is_refused_in_one_line_before_it_runs(monkeypatch):
    batch = batch_arrays(collate([toy_clip(0), toy_clip(1)], num_labels=2, max_instances=SLOTS, processor=PROCESSOR))
    tc = TrainConfig(steps=1, batch_size=2, num_frames=T, deep_supervision=False)
    state, tx = create_train_state(init_params(CFG, jax.random.key(0), image_hw=(H, W)), CFG, tc)
    state = place_state(state, None)
    step = make_train_step(CFG, tc, tx, processor=PROCESSOR)
    line = check_step_fits(step, state, batch, None, tc)
    assert line.startswith("memory (mesh one device, remat 'none'): the train step needs 0.0 GiB per device of the")
    assert line.endswith("GiB RAM available on this host (with the train state it holds), by XLA's memory analysis")
    monkeypatch.setattr(memory, "host_available_bytes", lambda: 0)
    refusal = (
        r"^the train step needs .* more than the 0\.0 GiB RAM available on this host \(with the train state it "
        r"holds\): lower train\.batch_size \(now 2; 2 per device\), set train\.remat \(now 'none'; 'full' keeps the "
        r"least\), or split the state over more devices \(train\.fsdp, now 1, with --devices\)$"
    )
    with pytest.raises(ValueError, match=refusal):
        check_step_fits(step, state, batch, None, tc)
    _, metrics = step(state, {k: np.asarray(v) for k, v in batch.items()})
    assert np.isfinite(float(metrics["loss"]))
    assert step._cache_size() == 1  # the check compiled the very step that then ran
