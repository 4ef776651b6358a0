"""training/memory.py: the abstract batch is what collate feeds."""

from __future__ import annotations

import numpy as np

from tests.helpers.batches import SLOTS, H, T, W, toy_clip
from videomt_jax.data.batching import collate
from videomt_jax.training.memory import abstract_batch
from videomt_jax.training.step import (
    batch_arrays,
)


def test_abstract_batch_is_what_collate_feeds():
    lean = batch_arrays(collate([toy_clip(0), toy_clip(1)], num_labels=2, max_instances=SLOTS))
    spec = abstract_batch(2, T, (H, W), SLOTS)
    assert {k: (v.shape, np.dtype(v.dtype)) for k, v in spec.items()} == {
        k: (v.shape, v.dtype) for k, v in lean.items()
    }
