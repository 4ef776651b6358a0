"""JAX-native checkpoints: `config.json` (HF fields + a "videomt_jax" section) and an orbax `params/`.

Writes are atomic: everything goes to a temporary sibling directory that replaces the target in one
rename, so an interrupted save leaves either the old checkpoint or none, never half of one.
"""

from __future__ import annotations

import fnmatch
import json
import math
from pathlib import Path
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from flax import traverse_util

from videomt_jax.config import VideomtConfig
from videomt_jax.utils.io import atomic_directory
from videomt_jax.weights.readers import CheckpointReadError
from videomt_jax.weights.tables import check_params, expected_shapes, flatten

CONFIG_NAME = "config.json"
PARAMS_DIR = "params"
JAX_SECTION = "videomt_jax"  # the config.json key VideomtConfig.to_json_file writes for JAX settings
# Names in a checkpoint directory (native, Hugging Face, sharded) that overwrite=True may replace;
# "data.json" is the training data config `training.evaluate.save_data_config` adds to a model.
CHECKPOINT_ENTRIES: tuple[str, ...] = (
    CONFIG_NAME, PARAMS_DIR, "*.safetensors", "*.safetensors.index.json", "pytorch_model*.bin",
    "pytorch_model.bin.index.json", "*preprocessor_config.json", "data.json",
)


def is_native_dir(path: Path) -> bool:
    """A directory written by `save_native` (config.json with a JAX section and an orbax params/)."""
    config = path / CONFIG_NAME
    if not (path.is_dir() and config.is_file() and (path / PARAMS_DIR).is_dir()):
        return False
    try:
        return JAX_SECTION in json.loads(config.read_text())
    except (OSError, json.JSONDecodeError):
        return False


def write_params(directory: Path, params: Mapping) -> None:
    """Orbax-save `params` (as float32 jax arrays) into `directory`, which must not exist.

    Orbax refuses zero-size arrays (register tokens [1, 0, D] when there are none): they are left
    out here and recreated from the config by `read_params`.
    """
    flat = {k: jnp.asarray(v, jnp.float32) for k, v in flatten(params).items() if np.size(v)}
    tree = traverse_util.unflatten_dict(flat, sep="/")
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(directory.absolute(), tree)
        checkpointer.wait_until_finished()


def read_params(directory: Path, config: VideomtConfig) -> dict:
    """Restore the params of `config` from an orbax directory, as float32 jax arrays.

    They land on this process's first device, whatever devices they were saved from (a checkpoint
    written on a CPU loads on a GPU and the other way round).
    """
    shapes = expected_shapes(config)
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    flat = {k: jax.ShapeDtypeStruct(s, jnp.float32, sharding=device) for k, s in shapes.items() if math.prod(s)}
    try:
        with ocp.StandardCheckpointer() as checkpointer:
            restored = checkpointer.restore(directory.absolute(), traverse_util.unflatten_dict(flat, sep="/"))
    except (ValueError, KeyError, FileNotFoundError) as e:
        raise CheckpointReadError(f"cannot restore params from {directory} for this config: {e}") from e
    empty = {k: jnp.zeros(s, jnp.float32) for k, s in shapes.items() if not math.prod(s)}
    return traverse_util.unflatten_dict({**flatten(restored), **empty}, sep="/")


def is_checkpoint_entry(entry: Path) -> bool:
    """A file or folder of a checkpoint this package reads or writes (`CHECKPOINT_ENTRIES`): what
    `save_native` / `export_hf` may replace in an existing directory (with overwrite=True)."""
    return any(fnmatch.fnmatchcase(entry.name, pattern) for pattern in CHECKPOINT_ENTRIES)


def save_native(
    path: str | Path, config: VideomtConfig, params: Mapping, *, overwrite: bool = False, processor: Any = None
) -> Path:
    """Atomically write config.json + orbax params (+ the processor's config, when given) to `path`.

    An existing non-empty `path` is replaced only with overwrite=True and only when it holds
    checkpoint entries alone (`is_checkpoint_entry`)."""
    check_params(config, params)
    path = Path(path)
    with atomic_directory(path, overwrite=overwrite, replaceable=is_checkpoint_entry) as tmp:
        config.to_json_file(str(tmp / CONFIG_NAME))
        if processor is not None:
            processor.save_pretrained(tmp)
        write_params(tmp / PARAMS_DIR, params)
    return path


def load_native(path: str | Path, **config_overrides) -> tuple[VideomtConfig, dict]:
    path = Path(path)
    config = VideomtConfig.from_json_file(str(path / CONFIG_NAME), **config_overrides)
    return config, read_params(path / PARAMS_DIR, config)


def param_bytes(params: Mapping) -> tuple[int, int]:
    """(number of parameters, bytes) of a parameter tree."""
    leaves = jax.tree.leaves(params)
    sizes = [(math.prod(np.shape(x)), np.dtype(x.dtype).itemsize) for x in leaves]
    return sum(n for n, _ in sizes), sum(n * itemsize for n, itemsize in sizes)
