"""orbax checkpoints of the whole train state: every N steps, keep K, atomic, resumable."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp

from videomt_jax.training.step import TrainState


def _storable(tree: Any) -> Any:
    """orbax refuses zero-size arrays (e.g. register tokens [1, 0, D] with no registers): a scalar
    zero of the same dtype stands in for each; `restore` puts the empty array back."""
    return jax.tree.map(lambda x: jnp.zeros((), x.dtype) if x.size == 0 else x, tree)


class Checkpointer:
    """Thin wrapper over `ocp.CheckpointManager` holding the run's directory and policy.

    orbax writes each step into a temporary directory and renames it when complete, so a run
    killed mid-save leaves the previous checkpoints intact.
    """

    def __init__(self, directory: str | Path, every: int, keep: int, metadata: dict[str, Any] | None = None):
        self.directory = Path(directory).absolute()
        self.directory.mkdir(parents=True, exist_ok=True)
        options = ocp.CheckpointManagerOptions(
            save_interval_steps=every, max_to_keep=keep, create=True, enable_async_checkpointing=False
        )
        self.manager = ocp.CheckpointManager(self.directory, options=options)
        if metadata is not None and jax.process_index() == 0:
            (self.directory / "run.json").write_text(json.dumps(metadata, indent=2, sort_keys=True) + "\n")

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, state: TrainState, *, step: int | None = None, force: bool = False) -> bool:
        """Save when `step` is due (every N) or `force`. Pass `step` (the state's step) to avoid
        reading it back from the device, which would wait for the step to finish."""
        step = int(jax.device_get(state.step)) if step is None else int(step)
        return self.manager.save(step, args=ocp.args.StandardSave(_storable(state)), force=force)

    def restore(self, like: TrainState, step: int | None = None) -> TrainState:
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {self.directory}")
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, _storable(like))
        restored = self.manager.restore(step, args=ocp.args.StandardRestore(abstract))
        return jax.tree.map(lambda got, want: jnp.zeros_like(want) if want.size == 0 else got, restored, like)

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()
