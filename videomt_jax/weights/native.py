"""JAX-native checkpoints (`save_pretrained`): `config.json` (HF fields + a "videomt_jax" section)
and an orbax `params/`; recognised, read and written here.

Writes are atomic (`writers.py`): an interrupted save leaves the old checkpoint or none, never half
of one. Parameters come back bit-identical, as float32 jax arrays.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from flax import traverse_util

from videomt_jax.config import VideomtConfig
from videomt_jax.utils.io import atomic_directory
from videomt_jax.weights.readers import CONFIG_NAME, PARAMS_DIR, CheckpointReadError, Loaded, LoadReport
from videomt_jax.weights.shapes import check_params, expected_shapes
from videomt_jax.weights.tables import flatten
from videomt_jax.weights.writers import is_checkpoint_entry

NAME = "videomt-jax (orbax)"  # the LoadReport's source
JAX_SECTION = "videomt_jax"  # the config.json key VideomtConfig.to_json_file writes for JAX settings


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


def load_native(path: str | Path, **config_overrides: Any) -> tuple[VideomtConfig, dict]:
    path = Path(path)
    config = VideomtConfig.from_json_file(str(path / CONFIG_NAME), **config_overrides)
    return config, read_params(path / PARAMS_DIR, config)


def load(path: Path, overrides: Mapping[str, Any]) -> Loaded:
    """`load_pretrained`'s loader for this format."""
    config, params = load_native(path, **overrides)
    return config, params, LoadReport(NAME, [str(path / CONFIG_NAME), str(path / PARAMS_DIR)], 0, [])
