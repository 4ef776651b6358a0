"""orbax checkpoints of the whole train state: every N steps, keep K, atomic, asynchronous, resumable.

Each checkpoint carries the run it belongs to (`metadata`: the model and train configs, and the
recipe when `train` wrote it) in orbax's step metadata, so a resume under another recipe is refused
before anything is written (`stored_metadata`, readable without JAX). A checkpoint restores onto any
mesh: the arrays take the layout of the state they are restored into (8 devices -> 4, 2 processes -> 1).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from videomt_jax.training.step import TrainState

STEP_METADATA = "_CHECKPOINT_METADATA"  # orbax's per-step metadata file (JSON; holds `custom_metadata`)


# How far apart processes may reach a `process_barrier` (one compiles slower, one writes the model).
BARRIER_TIMEOUT_MS = 30 * 60 * 1000


def process_barrier(name: str) -> None:
    """Wait until every process gets here, through JAX's coordination service (not a collective on
    the devices: XLA:CPU's gloo collectives give up when processes arrive more than 30 s apart).
    One process: returns at once."""
    if jax.process_count() == 1:
        return
    from jax._src import distributed

    client = distributed.global_state.client
    if client is None:
        raise RuntimeError(
            "several JAX processes without jax.distributed.initialize: no coordination service to meet at"
        )
    client.wait_at_barrier(name, BARRIER_TIMEOUT_MS)


def host_copy(tree: Any) -> Any:
    """Numpy copies of a state's arrays, whole on every process (a collective with several processes:
    each must call it). With FSDP over several processes no process holds every shard itself."""
    if jax.process_count() == 1:
        return jax.device_get(tree)
    if all(x.is_fully_replicated for x in jax.tree.leaves(tree)):  # data parallel: a local copy is whole
        return jax.tree.map(lambda x: np.asarray(x.addressable_data(0)), tree)
    from jax.experimental import multihost_utils

    # meet first: XLA:CPU's gloo collectives give up when processes arrive far apart (`process_barrier`)
    process_barrier("videomt-jax: gather the state")
    return multihost_utils.process_allgather(tree, tiled=True)


def _storable(tree: Any) -> Any:
    """orbax refuses zero-size arrays (e.g. register tokens [1, 0, D] with no registers): a scalar
    zero of the same dtype stands in for each; `restore` puts the empty array back."""
    return jax.tree.map(lambda x: jnp.zeros((), x.dtype) if x.size == 0 else x, tree)


def checkpoint_steps(directory: str | Path) -> list[int]:
    """The steps of the finished checkpoints in `directory` (orbax renames a step folder into place
    when it is complete; temporary folders carry other names), ascending."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    return sorted(int(p.name) for p in directory.iterdir() if p.is_dir() and p.name.isdigit())


def stored_metadata(directory: str | Path, step: int | None = None) -> dict[str, Any] | None:
    """The run metadata saved with checkpoint `step` (default: the latest) in `directory`; None when
    there is no checkpoint or it carries none (written before checkpoints carried their run)."""
    steps = checkpoint_steps(directory)
    if not steps:
        return None
    path = Path(directory) / str(steps[-1] if step is None else step) / STEP_METADATA
    if not path.exists():
        return None
    try:
        custom = json.loads(path.read_text()).get("custom_metadata")
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: the checkpoint's metadata cannot be read ({e})") from None
    return custom if isinstance(custom, dict) and custom else None


class Checkpointer:
    """Thin wrapper over `ocp.CheckpointManager` holding the run's directory, policy and metadata.

    orbax writes each step into a temporary directory and renames it when complete, so a run
    killed mid-save leaves the previous checkpoints intact. Saving is asynchronous: `save` returns
    once the state is copied off the devices, the files are written in the background (the next
    save, `wait` and `close` wait for them). The folder is created by the first save.
    """

    def __init__(self, directory: str | Path, every: int, keep: int, metadata: dict[str, Any] | None = None):
        self.directory = Path(directory).absolute()
        self.every, self.metadata = every, metadata
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=False, enable_async_checkpointing=True)
        self.manager = ocp.CheckpointManager(self.directory, options=options)

    def latest_step(self) -> int | None:
        """The latest checkpoint's step, a save still being written included."""
        return self.manager.latest_step()

    def due(self, step: int) -> bool:
        """A periodic checkpoint falls on `step` (every `every` steps)."""
        return step % self.every == 0

    def save(self, state: TrainState, *, step: int | None = None, force: bool = False) -> bool:
        """Save when `step` is due (every N) or `force`; True when a save started. Pass `step` (the
        state's step) to avoid reading it back from the device, which would wait for the step.
        With several processes every process must call it with the same arguments."""
        step = int(jax.device_get(state.step)) if step is None else int(step)
        if not (force or self.due(step)) or step == self.latest_step():
            return False
        if jax.process_index() == 0:
            self.directory.mkdir(parents=True, exist_ok=True)
        process_barrier(f"videomt-jax checkpoint folder {step}")
        self.manager.save(step, args=ocp.args.StandardSave(_storable(state)), custom_metadata=self.metadata, force=True)
        return True

    def restore(self, like: TrainState, step: int | None = None) -> TrainState:
        """The checkpoint of `step` (default: the latest) laid out as `like` (its mesh and shardings,
        whatever the mesh it was saved from)."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {self.directory}")
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, _storable(like))
        restored = self.manager.restore(step, args=ocp.args.StandardRestore(abstract))
        return jax.tree.map(lambda got, want: jnp.zeros_like(want) if want.size == 0 else got, restored, like)

    def wait(self) -> None:
        """Wait for the background write of the last save."""
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()
