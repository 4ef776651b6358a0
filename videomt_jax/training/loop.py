"""The training loop: resumable, deterministic by step, with progress (loss, steps/s, ETA).

A batch is a pure function of its step number (`batches(step)`), and the PRNG key of a step is
folded from the seed and the step, so a run killed and resumed from its last checkpoint ends with
the same parameters as one that never stopped.
"""

from __future__ import annotations

import functools
import sys
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, TextIO

import jax
import numpy as np
import optax
from jax.sharding import Mesh

from videomt_jax.config import VideomtConfig
from videomt_jax.modeling.videomt import init_params
from videomt_jax.training.checkpoint import Checkpointer
from videomt_jax.training.config import TrainConfig
from videomt_jax.training.optim import make_optimizer
from videomt_jax.training.step import (
    TrainState,
    batch_arrays,
    check_batch,
    create_train_state,
    data_mesh,
    make_train_step,
    replicate,
    shard_batch,
)


# TrainConfig fields that never enter the compiled step (logging, checkpoint policy, the seed,
# which lives in the state): runs that differ only there share one jitted step.
HOST_ONLY_FIELDS = {"log_every": 1, "checkpoint_every": 1, "keep_checkpoints": 1, "seed": 0}
_PROGRAMS: OrderedDict[Any, tuple[optax.GradientTransformation, Callable]] = OrderedDict()
_MAX_PROGRAMS = 4


def train_program(
    config: VideomtConfig, tc: TrainConfig, params: Any, mesh: Mesh | None
) -> tuple[optax.GradientTransformation, Callable]:
    """(optimizer, jitted step) for this model, train config, parameter shapes and mesh.

    Cached per process, so repeated `fit` calls (resumes, notebooks, tests) trace and compile once.
    """
    shapes = tuple((tuple(x.shape), str(x.dtype)) for x in jax.tree.leaves(params))
    program_tc = tc.replace(**HOST_ONLY_FIELDS)
    key = (config, program_tc, mesh, jax.tree.structure(params), shapes)
    if key not in _PROGRAMS:
        tx = make_optimizer(params, config, program_tc)
        _PROGRAMS[key] = (tx, make_train_step(config, program_tc, tx, mesh))
        while len(_PROGRAMS) > _MAX_PROGRAMS:
            _PROGRAMS.popitem(last=False)
    _PROGRAMS.move_to_end(key)
    return _PROGRAMS[key]


@functools.lru_cache(maxsize=4)
def _init_fn(config: VideomtConfig, image_hw: tuple[int, int]) -> Callable[[jax.Array], Any]:
    return jax.jit(lambda key: init_params(config, key, image_hw=image_hw))


@dataclass
class FitResult:
    state: TrainState
    history: list[dict[str, float]] = field(default_factory=list)  # logged steps
    seconds: float = 0.0
    resumed_from: int | None = None


def _format_eta(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h:d}:{m:02d}:{s:02d}"


def fit(
    config: VideomtConfig,
    tc: TrainConfig,
    batches: Callable[[int], Any],
    out_dir: str | Path | None = None,
    *,
    params: Any = None,
    num_devices: int | None = 1,
    stop_after: int | None = None,
    log: TextIO | None | str = "stdout",
) -> FitResult:
    """Train `config` with `tc` on `batches(step)`; checkpoints in `out_dir/checkpoints`.

    batches(step): this process's batch for `step` (a `Batch` or a dict). With several processes
        (`jax.distributed.initialize`), each returns its own slice of the global batch
        (global / process count clips) and the mesh spans every device of every process.
    params: initial parameters (default: random init from `tc.seed`).
    num_devices: data-parallel over this many devices (None: all; 1: no mesh).
    stop_after: stop after this many steps of this call (a planned interruption; resume later).
    log: where progress lines go: a stream, None for silence, "stdout" for the current sys.stdout.
    """
    if stop_after is not None and stop_after < 1:
        raise ValueError(f"stop_after must be >= 1, got {stop_after}")
    first = batch_arrays(batches(0))
    check_batch(first, config)
    image_hw = tuple(first["pixel_values"].shape[2:4])
    if params is None:
        params = _init_fn(config, image_hw)(jax.random.key(tc.seed))
    mesh = None if num_devices == 1 and jax.process_count() == 1 else data_mesh(num_devices)
    tx, step_fn = train_program(config, tc, params, mesh)
    state, _ = create_train_state(params, config, tc, tx)
    # Committed to devices either way, like a restored state: a resumed run then hits the same
    # (persistent) compilation cache entry as a fresh one instead of compiling again.
    state = jax.device_put(state, jax.local_devices()[0]) if mesh is None else replicate(state, mesh)
    log = (sys.stdout if log == "stdout" else log) if jax.process_index() == 0 else None

    ckpt = None
    resumed = None
    if out_dir is not None:
        meta = {"model": config.to_dict(), "train": tc.to_dict()}
        ckpt = Checkpointer(Path(out_dir) / "checkpoints", tc.checkpoint_every, tc.keep_checkpoints, meta)
        if ckpt.latest_step() is not None:
            state = ckpt.restore(state)
            resumed = int(state.step)
            if log:
                print(f"resumed from step {resumed} ({ckpt.directory})", file=log, flush=True)

    result = FitResult(state=state, resumed_from=resumed)
    start_step = int(state.step)
    end_step = tc.steps if stop_after is None else min(tc.steps, start_step + stop_after)
    if log and mesh is not None:
        global_batch = first["pixel_values"].shape[0] * jax.process_count()
        print(
            f"data parallel over {mesh.devices.size} devices ({jax.process_count()} processes), "
            f"global batch {global_batch}",
            file=log,
            flush=True,
        )
    t0 = time.perf_counter()
    window_t, window_n = t0, 0
    for step in range(start_step, end_step):
        batch = first if step == 0 else batch_arrays(batches(step))
        if step:
            check_batch(batch, config)
        batch = shard_batch(batch, mesh) if mesh is not None else jax.tree.map(np.asarray, batch)
        state, metrics = step_fn(state, batch)
        window_n += 1
        done = step + 1
        if ckpt is not None:
            ckpt.save(state, step=done)
        if done % tc.log_every == 0 or done == end_step:
            metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
            now = time.perf_counter()
            rate = window_n / max(now - window_t, 1e-9)
            window_t, window_n = now, 0
            metrics.update(step=done, steps_per_s=rate)
            result.history.append(metrics)
            if log:
                eta = _format_eta((tc.steps - done) / max(rate, 1e-9))
                print(
                    f"step {done}/{tc.steps}  loss {metrics['loss']:.4f}  "
                    f"ce {metrics['loss_cross_entropy']:.3f} bce {metrics['loss_mask']:.3f} "
                    f"dice {metrics['loss_dice']:.3f}  {rate:.2f} steps/s  ETA {eta}",
                    file=log,
                    flush=True,
                )
    if ckpt is not None:
        if ckpt.latest_step() != int(state.step):
            ckpt.save(state, step=int(state.step), force=True)  # also on a planned stop, so a resume starts here
        ckpt.close()
    result.state = state
    result.seconds = time.perf_counter() - t0
    return result
