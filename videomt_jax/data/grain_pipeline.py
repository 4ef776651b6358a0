"""The parallel input pipeline: `grain` worker processes load, decode and augment clips while the
device trains, with prefetch, in the order of the steps.

    batches = GrainBatches(recipe.clip_fn("train"), recipe.collate, ...)   # a `batches(step)` for fit
    try:
        fit(config, tc, batches, out_dir)
    finally:
        batches.close()                                                    # also on Ctrl-C

Element k of the pipeline is clip j = k mod b of step k // b of this process (b clips per process
and step), numbered by `ClipNumbering` as in `Recipe.batches`, so the pipeline yields exactly
`Recipe.batches(...)(step)`: batches stay a pure function of (seed, step) and a resumed run is
bit-identical. `GrainBatches(step)` hands out
the next batch when `step` follows the previous call, and restarts the pipeline at `step` otherwise
(the first call of a resumed `fit` asks for step 0, then for the resume step). Worker processes are
spawned (fresh interpreters: they never inherit the parent's JAX runtime) and ignore SIGINT and
SIGTERM, so a signal sent to the whole process group (Ctrl-C, a scheduler's SIGTERM) never cuts a
worker mid-write: the parent handles it and `close()` stops and joins them, releasing their shared
memory. The pipeline never runs dry (it reaches past the last step further than the workers read
ahead): grain leaves the shared memory of an exhausted multiprocess pipeline behind. Workers hand over the lean
`Batch` (uint8 frames, bit-packed masks: `data/batching.py`), ~6x smaller than float pixels and
bool masks, through shared memory.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Sequence
from multiprocessing import resource_tracker
from typing import Any

import numpy as np

from videomt_jax.data.batching import Batch, Clip, ClipNumbering
from videomt_jax.utils.signals import ignore_stop_signals, stop_signals_held  # stopping is the parent's

# A GPU consumes ViT-S clips at 768x768 far faster than one core decodes them (~7 clips/s here):
# docs/training.md, "Input pipeline". The cap only keeps a many-core host from spawning hundreds.
MAX_AUTO_WORKERS = 32
PREFETCH_BATCHES = 2  # batches buffered per worker


def auto_workers() -> int:
    """One worker per core but one (the main process runs the train step), 1 to MAX_AUTO_WORKERS."""
    return max(1, min(MAX_AUTO_WORKERS, (os.cpu_count() or 2) - 1))


def _grain() -> Any:
    import grain
    from absl import flags

    if not flags.FLAGS.is_parsed():  # grain reads absl flags; a library must not parse argv for them
        flags.FLAGS.mark_as_parsed()
    return grain


class _ClipAt:
    """Pipeline element k -> clip (picklable; sent to every worker)."""

    def __init__(self, clip_fn: Callable[[int], Clip], numbering: ClipNumbering):
        self.clip_fn, self.numbering = clip_fn, numbering

    def __call__(self, k: int) -> Clip:
        return self.clip_fn(self.numbering.number(*divmod(int(k), self.numbering.local)))


def _ignore_stop_signals(worker_index: int, worker_count: int) -> None:
    """Workers leave stopping to the parent (`GrainBatches.close`), which joins them."""
    ignore_stop_signals()


class GrainBatches:
    """`batches(step) -> Batch` fed by a grain pipeline (module docstring)."""

    def __init__(
        self,
        clip_fn: Callable[[int], Clip],
        collate: Callable[[Sequence[Clip]], Batch],
        *,
        batch_size: int,
        steps: int,
        process_index: int = 0,
        process_count: int = 1,
        workers: int | None = None,
        prefetch: int = PREFETCH_BATCHES,
    ):
        numbering = ClipNumbering(batch_size, process_index, process_count)
        if prefetch < 1 or (workers is not None and workers < 0):
            raise ValueError(f"need prefetch >= 1 and workers >= 0, got {prefetch}, {workers}")
        self.local = numbering.local
        self.element = _ClipAt(clip_fn, numbering)
        self.collate, self.steps = collate, steps
        self.workers = auto_workers() if workers is None else workers
        self.prefetch = prefetch
        self._iter: Any = None
        self._next = -1

    def _start(self, step: int) -> None:
        self.close()
        grain = _grain()
        # Past the end by more than the workers read ahead: the pipeline is closed, never exhausted
        # (grain leaves the shared memory of an exhausted multiprocess pipeline behind).
        last = max(self.steps, step + 1) + (self.workers + 1) * (2 * self.prefetch + 2)
        ds = grain.MapDataset.range(step * self.local, last * self.local).map(self.element)
        ds = ds.batch(self.local, batch_fn=self.collate)
        # in-worker read-ahead: one batch at a time per worker (decoding is CPU-bound)
        ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=1, prefetch_buffer_size=self.prefetch))
        if self.workers > 0:
            options = grain.MultiprocessingOptions(num_workers=self.workers, per_worker_buffer_size=self.prefetch)
            ds = ds.mp_prefetch(options, worker_init_fn=_ignore_stop_signals)
        self._iter, self._next = iter(ds), step

    def __call__(self, step: int) -> Batch:
        restart = self._iter is None or step != self._next
        batch: Any = self._restart(step) if restart else next(self._iter)  # grain's: in shared memory
        self._next += 1
        # Own copies: the shared-memory blocks the workers filled are released (unlinked) right away.
        return type(batch)(*(None if a is None else np.array(a) for a in batch))

    def _restart(self, step: int) -> Any:
        """The pipeline (re)started at `step` and its first batch. Worker processes start meanwhile with
        SIGINT / SIGTERM held back, which they inherit: a signal to the whole process group stays
        pending in a worker still starting up until `_ignore_stop_signals` drops it, while the parent's
        handler still sees it (it is never lost)."""
        if self.workers > 0:  # multiprocessing's resource tracker unblocks both signals as it starts
            resource_tracker.ensure_running()
        with stop_signals_held() if self.workers > 0 else contextlib.nullcontext():
            self._start(step)
            return next(self._iter)

    def close(self) -> None:
        """Stop the workers (idempotent)."""
        it, self._iter = self._iter, None
        close = getattr(it, "close", None)
        if close is not None:
            close()
