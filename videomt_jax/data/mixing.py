"""Clip sources mixed at fixed ratios, as the authors' `CombinedDataLoader`, as a pure function of the clip number.

Letters: S sources, K = `BLOCK` clips per block.

The authors fill every batch slot independently: source s with probability w_s / sum(w) (their
DATASET_RATIO, 1:1 for COCO + YouTube-VIS / OVIS), each source stepping through its own shuffled
stream. Here global clip g comes from source s_g, drawn from a generator seeded by (seed, g // K), and
is that source's clip number #{g' < g : s_g' = s_g}: each source sees its own clips 0, 1, 2, ... in
order, so its epochs and augmentation seeds work as when it trains alone, and a batch stays a pure
function of the step. Counting is per block, cached per process: clip g costs O(g / K) draws the
first time a process reaches it, O(1) after.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from videomt_jax.data.batching import Clip

BLOCK = 4096


class MixedClips:
    """`clips(g) -> Clip` drawn from `sources` with probabilities proportional to `weights` (picklable)."""

    def __init__(self, sources: Sequence[Callable[[int], Clip]], weights: Sequence[float], seed: int = 0):
        if len(sources) != len(weights) or not sources:
            raise ValueError(f"need one weight per source, got {len(sources)} sources and {len(weights)} weights")
        if min(weights) < 0 or sum(weights) <= 0:
            raise ValueError(f"weights must be >= 0 with a positive sum, got {list(weights)}")
        self.sources, self.seed = tuple(sources), int(seed)
        self.weights = tuple(float(w) for w in weights)
        self._starts: list[np.ndarray] = []  # [S] per block: clips of each source before the block
        self._last: tuple[int, np.ndarray] | None = None  # the latest block's draws

    def __getstate__(self) -> dict[str, Any]:
        return {"sources": self.sources, "weights": self.weights, "seed": self.seed}

    def __setstate__(self, state: dict[str, Any]) -> None:
        MixedClips.__init__(self, state["sources"], state["weights"], state["seed"])

    def _block(self, block: int) -> np.ndarray:  # [K] source of each clip of the block
        if self._last is not None and self._last[0] == block:  # consecutive clips share their block
            return self._last[1]
        p = np.asarray(self.weights) / sum(self.weights)
        draws = np.random.default_rng([self.seed, block, 41]).choice(len(p), BLOCK, p=p)
        self._last = (block, draws)
        return draws

    def locate(self, index: int) -> tuple[int, int]:
        """(source, that source's clip number) of global clip `index`."""
        if index < 0:
            raise IndexError(f"clip index must be >= 0, got {index}")
        block, offset = divmod(int(index), BLOCK)
        if not self._starts:
            self._starts.append(np.zeros(len(self.sources), np.int64))
        while len(self._starts) <= block:
            counts = np.bincount(self._block(len(self._starts) - 1), minlength=len(self.sources))
            self._starts.append(self._starts[-1] + counts)
        draws = self._block(block)[: offset + 1]
        source = int(draws[-1])
        return source, int(self._starts[block][source] + np.count_nonzero(draws[:-1] == source))

    def __call__(self, index: int) -> Clip:
        source, number = self.locate(index)
        return self.sources[source](number)
