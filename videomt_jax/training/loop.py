"""The training loop: resumable, deterministic by step, with progress (loss, steps/s, ETA).

A batch is a pure function of its step number (`batches(step)`), and the PRNG key of a step is
folded from the seed and the step, so a run killed and resumed from its last checkpoint ends with
the same parameters as one that never stopped. A stop request (`utils.signals.GracefulStop`: SIGTERM
or SIGINT) ends the current step, saves a checkpoint there and returns; with several processes JAX's
preemption sync point makes every process stop, and save, at the same step.
"""

from __future__ import annotations

import functools
import json
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO, cast

import jax
import numpy as np
import optax
from jax.sharding import Mesh

from videomt_jax.config import VideomtConfig
from videomt_jax.data.batching import pixel_table
from videomt_jax.modeling.family import init_params
from videomt_jax.processing import VideoProcessor
from videomt_jax.training.checkpoint import Checkpointer, process_barrier, stored_metadata
from videomt_jax.training.config import TrainConfig
from videomt_jax.training.memory import check_step_fits
from videomt_jax.training.optim import make_optimizer
from videomt_jax.training.step import (
    BATCH_FIELDS,
    FSDP_AXIS,
    TrainState,
    TrainStep,
    batch_arrays,
    batch_field,
    check_batch,
    create_train_state,
    make_train_step,
    place_state,
    shard_batch,
    state_shardings,
    train_mesh,
    train_processor,
)
from videomt_jax.utils.signals import GracefulStop

# TrainConfig fields that never enter the compiled step (logging, checkpoint policy, the seed,
# which lives in the state): runs that differ only there can share one `TrainProgram`.
HOST_ONLY_FIELDS = {"log_every": 1, "checkpoint_every": 1, "keep_checkpoints": 1, "seed": 0}
# TrainConfig fields a resumed run may change: the schedule length, logging, checkpoint policy.
RESUMABLE_TRAIN_FIELDS = ("steps", "log_every", "checkpoint_every", "keep_checkpoints")
CHECKPOINTS_DIR = "checkpoints"  # fit's checkpoints: out_dir/checkpoints/<step>/


def _shapes(params: Any) -> tuple[Any, tuple[tuple[tuple[int, ...], str], ...]]:
    """(tree structure, leaf shapes and dtypes) of params or of their `jax.ShapeDtypeStruct`s."""
    leaves = jax.tree.leaves(params)
    return jax.tree.structure(params), tuple((tuple(x.shape), str(np.dtype(x.dtype))) for x in leaves)


@dataclass(frozen=True, eq=False)
class TrainProgram:
    """The optimizer and the jitted train step for one model config, train config (host-only fields
    aside), parameter shapes and mesh: an explicit value, built once by `make_program` and passed to
    every `fit` that should reuse it (resumes, notebooks, tests): the step then traces and compiles
    once. `fit` checks that the program fits its arguments. `processor` normalises uint8 frames in
    the step (the recipe's: `Recipe.processor`)."""

    config: VideomtConfig
    train_config: TrainConfig  # HOST_ONLY_FIELDS reset: what the compiled step depends on
    mesh: Mesh | None
    param_shapes: tuple[Any, tuple[tuple[tuple[int, ...], str], ...]]
    tx: optax.GradientTransformation
    step: TrainStep  # (TrainState, batch) -> (TrainState, metrics), jitted, state donated
    processor: VideoProcessor  # normalises uint8 batch frames in `step`

    def check(self, config: VideomtConfig, tc: TrainConfig, params: Any, mesh: Mesh | None) -> None:
        """Raise a ValueError naming what differs when this program cannot train (config, tc, params, mesh)."""
        problems = []
        if config != self.config:
            problems.append("the model config differs")
        if tc.replace(**HOST_ONLY_FIELDS) != self.train_config:
            changed = sorted(
                k for k, v in tc.replace(**HOST_ONLY_FIELDS).to_dict().items() if self.train_config.to_dict()[k] != v
            )
            problems.append(f"the train config differs in {changed}")
        if _shapes(params) != self.param_shapes:
            problems.append("the parameter shapes differ")
        if mesh != self.mesh:
            problems.append(f"the mesh differs ({mesh} vs the program's {self.mesh})")
        if problems:
            raise ValueError("this TrainProgram was built for another run: " + "; ".join(problems))


def make_program(
    config: VideomtConfig,
    tc: TrainConfig,
    params_shape: Any,
    mesh: Mesh | None = None,
    processor: VideoProcessor | None = None,
) -> TrainProgram:
    """Optimizer + jitted step for `config`, `tc`, the parameter tree `params_shape` (arrays or
    `jax.ShapeDtypeStruct`s, e.g. `jax.eval_shape(init_params ...)`) and `mesh` (None: one device;
    `step.data_mesh(n)` for data parallel, as `fit(num_devices=n)` builds it). `processor` (default:
    the model's, `step.train_processor`) normalises the batches' uint8 frames on the device."""
    processor = train_processor(config, processor)
    program_tc = tc.replace(**HOST_ONLY_FIELDS)
    tx = make_optimizer(params_shape, config, program_tc)
    step = make_train_step(config, program_tc, tx, mesh, processor)
    return TrainProgram(config, program_tc, mesh, _shapes(params_shape), tx, step, processor)


def check_normalization(batch: Any, processor: VideoProcessor) -> None:
    """A `Batch` records the processor `collate` used (`pixel_table`); it must be the step's."""
    table = batch.get("pixel_table") if isinstance(batch, dict) else getattr(batch, "pixel_table", None)
    if table is not None and not np.array_equal(np.asarray(table), pixel_table(processor)):
        raise ValueError(
            "the batches were collated with another VideoProcessor (mean/std) than the train step "
            f"normalises with ({processor.mean}, {processor.std}): pass the recipe's processor "
            "(fit(..., processor=recipe.processor) or make_program(..., processor=recipe.processor))"
        )


def fit_mesh(num_devices: int | None, fsdp: int = 1) -> Mesh | None:
    """The mesh `fit(num_devices=...)` trains on with `TrainConfig.fsdp`: None for one device in one
    process, else `step.train_mesh(num_devices, fsdp)` (the state split over `fsdp` devices)."""
    if num_devices == 1 and fsdp == 1 and jax.process_count() == 1:
        return None
    return train_mesh(num_devices, fsdp)


@functools.lru_cache(maxsize=4)
def _init_fn(config: VideomtConfig, image_hw: tuple[int, int]) -> Callable[[jax.Array], Any]:
    return jax.jit(lambda key: init_params(config, key, image_hw=image_hw))


def sharded_fresh_state(
    config: VideomtConfig, tc: TrainConfig, tx: optax.GradientTransformation, image_hw: tuple[int, int], mesh: Mesh
) -> TrainState:
    """Step 0 of a run from random init, created split over the mesh (`state_shardings`): each device
    computes only its own slice, so a state larger than one device (a giant backbone with FSDP) never
    exists whole. The values are those of `init_params` + `create_train_state` (JAX's partitionable
    random bits do not depend on the sharding)."""

    def fresh(key: jax.Array) -> TrainState:
        return create_train_state(init_params(config, key, image_hw=image_hw), config, tc, tx)[0]

    key = jax.random.key(tc.seed)
    shardings = state_shardings(jax.eval_shape(fresh, key), mesh)
    return cast(TrainState, jax.jit(fresh, out_shardings=shardings)(key))


@dataclass
class DroppedObjects:
    """Objects `collate` left out of crowded clips (more than `max_instances`; `Batch.dropped`), over a run."""

    objects: int = 0
    clips: int = 0

    def add(self, batch: Any) -> None:
        dropped = batch.get("dropped") if isinstance(batch, dict) else getattr(batch, "dropped", None)
        if dropped is not None:
            dropped = np.asarray(dropped)  # [B] per clip
            self.objects += int(dropped.sum())
            self.clips += int((dropped > 0).sum())

    def report(self) -> str:
        """'' when nothing was dropped, else what was (this process's clips)."""
        if not self.objects:
            return ""
        return f"  dropped {self.objects} objects from {self.clips} crowded clips (over max_instances)"


@dataclass
class FitResult:
    state: TrainState
    history: list[dict[str, float]] = field(default_factory=list)  # logged steps
    seconds: float = 0.0
    resumed_from: int | None = None
    stopped_by: int | None = None  # the signal that stopped the run early (a checkpoint was saved there)


def run_metadata(config: VideomtConfig, tc: TrainConfig, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """What each checkpoint records about its run (JSON values): the model and train configs, and `extra`."""
    return json.loads(json.dumps({"model": config.to_dict(), "train": tc.to_dict(), **(extra or {})}))


def check_resume(stored: dict[str, Any] | None, config: VideomtConfig, tc: TrainConfig, where: Path) -> None:
    """Refuse to continue checkpoints of another run: the model config must be the one they were
    trained with, the train config too but for `RESUMABLE_TRAIN_FIELDS`. `stored`: their
    `run_metadata` (None: checkpoints written before they carried it, not checked)."""
    if stored is None:
        return
    now = run_metadata(config, tc)
    may_change = {"model": (), "train": RESUMABLE_TRAIN_FIELDS}
    differ = []
    for part, free in may_change.items():
        old, new = stored.get(part, {}), now[part]
        differ += sorted(f"{part}.{k}" for k in old.keys() | new.keys() if k not in free and old.get(k) != new.get(k))
    if differ:
        raise ValueError(
            f"the checkpoints in {where} were trained with another model or train config ({', '.join(differ[:8])}"
            f"{', ...' if len(differ) > 8 else ''} differ); nothing was changed: resume with their settings "
            "or train into another directory"
        )


def _preemption_check() -> Callable[[int], bool]:
    """`reached(step)`: with several processes, JAX's preemption sync point (every process gets True
    at the same step once any of them received SIGTERM); with one process, never."""
    if jax.process_count() == 1:
        return lambda step: False
    from jax.experimental import multihost_utils

    return multihost_utils.reached_preemption_sync_point


def _format_eta(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h:d}:{m:02d}:{s:02d}"


def _log_stream(log: TextIO | None | str) -> TextIO | None:
    """`fit`'s `log` as a stream: "stdout" is the current sys.stdout."""
    if isinstance(log, str):
        if log != "stdout":
            raise ValueError(f'log must be a stream, None or "stdout", got {log!r}')
        return sys.stdout
    return log


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
    program: TrainProgram | None = None,
    processor: VideoProcessor | None = None,
    stop: GracefulStop | None = None,
    metadata: dict[str, Any] | None = None,
) -> FitResult:
    """Train `config` with `tc` on `batches(step)`; checkpoints in `out_dir/checkpoints`.

    batches(step): this process's batch for `step` (a `Batch` or a dict). With several processes
        (`jax.distributed.initialize`), each returns its own slice of the global batch
        (global / process count clips) and the mesh spans every device of every process.
    params: initial parameters (default: random init from `tc.seed`).
    num_devices: data-parallel over this many devices (None: all; 1: no mesh).
    stop_after: stop after this many steps of this call (a planned interruption; resume later).
    log: where progress lines go: a stream, None for silence, "stdout" for the current sys.stdout.
    program: the compiled step to use (`make_program`; its mesh must be `fit_mesh(num_devices, tc.fsdp)`);
        None builds one for this call. Pass the same program to several calls (a resume, another
        run with other logging) and the step compiles once.
    processor: normalises uint8 `frames` in the step (default: the model's, `step.train_processor`;
        the program's when a program is given); it must be the one the batches were collated with.
    stop: a stop request checked after every step (`GracefulStop`, active around the call): the step
        ends, a checkpoint is saved there and `fit` returns with `stopped_by` set. With several
        processes JAX's preemption sync point decides instead (SIGTERM to any process: all stop at
        the same step); a SIGINT recorded in `stop` then only names the cause.
    metadata: JSON values saved with every checkpoint next to `run_metadata` (e.g. the recipe).
        Checkpoints of another model or train config are refused before anything runs (`check_resume`).
    """
    if stop_after is not None and stop_after < 1:
        raise ValueError(f"stop_after must be >= 1, got {stop_after}")
    if out_dir is not None:
        check_resume(stored_metadata(Path(out_dir) / CHECKPOINTS_DIR), config, tc, Path(out_dir) / CHECKPOINTS_DIR)
    first_batch = batches(0)
    first = batch_arrays(first_batch)
    check_batch(first, config)
    image_hw = tuple(first[batch_field(first, BATCH_FIELDS[0])].shape[2:4])
    mesh = fit_mesh(num_devices, tc.fsdp)
    # with FSDP a fresh state is created already split (`sharded_fresh_state`); here only its shapes
    sharded_init = params is None and mesh is not None and tc.fsdp > 1
    if params is None:
        init = _init_fn(config, image_hw)
        params = jax.eval_shape(init, jax.random.key(tc.seed)) if sharded_init else init(jax.random.key(tc.seed))
    if program is None:
        program = make_program(config, tc, params, mesh, processor)
    elif processor is not None and processor != program.processor:
        raise ValueError(f"processor {processor} differs from the program's {program.processor}")
    program.check(config, tc, params, mesh)
    check_normalization(first_batch, program.processor)
    step_fn = program.step
    if sharded_init:
        assert mesh is not None
        state = sharded_fresh_state(config, tc, program.tx, image_hw, mesh)
    else:
        state, _ = create_train_state(params, config, tc, program.tx)
        # Committed to devices either way, like a restored state: a resumed run then hits the same
        # (persistent) compilation cache entry as a fresh one instead of compiling again.
        state = place_state(state, mesh)  # replicated, or split over the mesh's "fsdp" axis (TrainConfig.fsdp)
    log = _log_stream(log) if jax.process_index() == 0 else None

    ckpt = None
    resumed = None
    if out_dir is not None:
        meta = run_metadata(config, tc, metadata)
        ckpt = Checkpointer(Path(out_dir) / CHECKPOINTS_DIR, tc.checkpoint_every, tc.keep_checkpoints, meta)
        if ckpt.latest_step() is not None:
            state = ckpt.restore(state)
            resumed = int(state.step)
            if log:
                print(f"resumed from step {resumed} ({ckpt.directory})", file=log, flush=True)

    result = FitResult(state=state, resumed_from=resumed)
    start_step = int(state.step)
    end_step = tc.steps if stop_after is None else min(tc.steps, start_step + stop_after)
    if log and mesh is not None:
        global_batch = first["class_labels"].shape[0] * jax.process_count()
        fsdp = mesh.shape.get(FSDP_AXIS, 1)
        split = f"; parameters, gradients and Adam moments split over {fsdp} devices (fsdp)" if fsdp > 1 else ""
        print(
            f"data parallel over {mesh.devices.size} devices ({jax.process_count()} processes), "
            f"global batch {global_batch}{split}",
            file=log,
            flush=True,
        )
    if start_step < end_step:  # pre-flight: compile the step, refuse (one line) one the devices cannot hold
        fits = check_step_fits(step_fn, state, first, mesh, tc)
        if log:
            print(fits, file=log, flush=True)
    t0 = time.perf_counter()
    window_t, window_n = t0, 0
    timed: tuple[float, int] | None = None  # (time, step) after the first step: the ETA leaves compilation out
    dropped = DroppedObjects()
    preempted = _preemption_check()
    for step in range(start_step, end_step):
        raw = first_batch if step == 0 else batches(step)
        batch = first if step == 0 else batch_arrays(raw)
        dropped.add(raw)
        if step:
            check_batch(batch, config)
        on_device = shard_batch(batch, mesh) if mesh is not None else jax.tree.map(np.asarray, batch)
        if timed is None and jax.process_count() > 1:  # compile, then start the first step together
            step_fn.lower(state, on_device).compile()
            process_barrier(f"videomt-jax fit: step {step + 1} compiled")
        state, metrics = step_fn(state, on_device)
        window_n += 1
        done = step + 1
        if timed is None:  # the first step of this call compiled: time the rest
            jax.block_until_ready(metrics)
            timed = (time.perf_counter(), done)
        # every process asks the sync point at every step (JAX's protocol); one process: the local flag
        if preempted(done):
            result.stopped_by = stop.signum if stop is not None and stop.signum else int(signal.SIGTERM)
        elif jax.process_count() == 1 and stop is not None and stop.signum is not None:
            result.stopped_by = stop.signum
        stopping = result.stopped_by is not None
        if ckpt is not None:
            ckpt.save(state, step=done, force=stopping)
        if done % tc.log_every == 0 or done == end_step or stopping:
            logged = {k: float(v) for k, v in jax.device_get(metrics).items()}
            now = time.perf_counter()
            rate = window_n / max(now - window_t, 1e-9)
            window_t, window_n = now, 0
            logged.update(step=done, steps_per_s=rate, dropped_objects=dropped.objects, dropped_clips=dropped.clips)
            result.history.append(logged)
            if log:
                print(
                    f"step {done}/{tc.steps}  loss {logged['loss']:.4f}  "
                    f"ce {logged['loss_cross_entropy']:.3f} bce {logged['loss_mask']:.3f} "
                    f"dice {logged['loss_dice']:.3f}  {rate:.2f} steps/s  ETA {_eta(timed, now, done, tc.steps)}"
                    f"{dropped.report()}",
                    file=log,
                    flush=True,
                )
        if stopping:
            break
    if ckpt is not None:
        ckpt.save(state, step=int(state.step), force=True)  # also on a planned stop, so a resume starts here
        ckpt.close()
    result.state = state
    result.seconds = time.perf_counter() - t0
    return result


def _eta(timed: tuple[float, int] | None, now: float, done: int, steps: int) -> str:
    """Time left at the rate since the first (compiling) step of this call; "--" before it is known."""
    if timed is None or done <= timed[1]:
        return "--" if done < steps else _format_eta(0)
    return _format_eta((steps - done) * (now - timed[0]) / (done - timed[1]))
