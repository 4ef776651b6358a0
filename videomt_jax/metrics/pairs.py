"""The one loop that feeds paired ground truth and predictions into an accumulator's `update`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np


def feed_pairs(update: Callable[[Any, Any], None], gt: Any, pred: Any, what: str) -> None:
    """`update(g, p)` for two arrays (one pair) or for each pair of two equally long sequences.

    what: the plural noun for the error message ("maps", "videos")."""
    if isinstance(gt, np.ndarray) and isinstance(pred, np.ndarray):
        update(gt, pred)
        return
    gt, pred = list(gt), list(pred)
    if len(gt) != len(pred):
        raise ValueError(f"{len(gt)} ground-truth {what} but {len(pred)} predictions")
    for g, p in zip(gt, pred):
        update(g, p)
