"""Input checks shared by the video metrics (vpq.py, stq.py, consistency.py).

Letters: T frames, H/W size, C classes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def check_videos(videos: Any, metric: str) -> list[tuple[np.ndarray, np.ndarray]]:
    """A list of (pred, gt) pairs of integer maps [T, H, W] -> the same pairs as int64 arrays."""
    if isinstance(videos, np.ndarray) or not hasattr(videos, "__iter__"):
        raise TypeError(f"{metric}: videos must be a list of (pred, gt) pairs, got {type(videos).__name__}")
    pairs = []
    for index, pair in enumerate(videos):
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise TypeError(f"{metric}: video {index} must be a (pred, gt) pair, got {type(pair).__name__}")
        pred, gt = np.asarray(pair[0]), np.asarray(pair[1])
        for name, a in (("prediction", pred), ("ground truth", gt)):
            if a.ndim != 3 or 0 in a.shape:
                raise ValueError(f"{metric}: video {index} {name} must be a non-empty [T, H, W] map, got {a.shape}")
            if not np.issubdtype(a.dtype, np.integer):
                raise TypeError(f"{metric}: video {index} {name} must be integer, got {a.dtype}")
        if pred.shape != gt.shape:
            raise ValueError(f"{metric}: video {index} prediction {pred.shape} and ground truth {gt.shape} differ")
        pairs.append((pred.astype(np.int64), gt.astype(np.int64)))
    if not pairs:
        raise ValueError(f"{metric}: no videos given")
    return pairs


class ClassTable:
    """Thing / stuff classes of panoptic ids `class * label_divisor + instance`; `void_id` = no segment."""

    def __init__(self, thing_ids: Sequence[int], stuff_ids: Sequence[int], label_divisor: int, void_id: int):
        things, stuff = [int(c) for c in thing_ids], [int(c) for c in stuff_ids]
        overlap = set(things) & set(stuff)
        if overlap:
            raise ValueError(f"classes {sorted(overlap)} are listed as both thing and stuff")
        if not things and not stuff:
            raise ValueError("need at least one thing or stuff class")
        if min(things + stuff) < 0:
            raise ValueError(f"class ids must be >= 0, got {sorted(c for c in things + stuff if c < 0)}")
        if int(label_divisor) < 1:
            raise ValueError(f"label_divisor must be >= 1, got {label_divisor}")
        self.thing_ids, self.stuff_ids = tuple(things), tuple(stuff)
        self.classes = tuple(sorted(things + stuff))  # [C]
        self.label_divisor, self.void_id = int(label_divisor), int(void_id)
        self.size = max(self.classes) + 1
        self.is_known = np.zeros(self.size, bool)
        self.is_known[list(self.classes)] = True
        self.is_thing = np.zeros(self.size, bool)
        self.is_thing[list(things)] = True

    def classes_of(self, ids: np.ndarray, name: str) -> np.ndarray:
        """Class of each id (ids must not hold void); raises for ids of unknown classes."""
        cls = ids // self.label_divisor
        bad = (ids < 0) | (cls >= self.size) | ~self.is_known[np.clip(cls, 0, self.size - 1)]
        if bad.any():
            raise ValueError(
                f"{name} segment ids {ids[bad][:10].tolist()} map to classes {cls[bad][:10].tolist()}, which are "
                f"neither thing nor stuff classes (label_divisor={self.label_divisor}, void_id={self.void_id})"
            )
        return cls
