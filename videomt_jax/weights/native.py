"""JAX-native checkpoints (`save_pretrained`): `config.json` (HF fields + a "videomt_jax" section)
and an orbax `params/`; recognised, read and written here.

Writes are atomic (`utils.io.atomic_directory`): an interrupted save leaves the old checkpoint or
none, never half of one; orbax's background write finishes before a stop signal is acted on. The
directory's manifest (sizes and sha256 of its files) is checked at load: a changed, truncated or
missing file is named in one line (checkpoints written before manifests load unchecked).
Parameters come back bit-identical, as float32 jax arrays.
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
from videomt_jax.utils.io import ManifestError, atomic_directory, signals_deferred, verify_manifest
from videomt_jax.weights.readers import CONFIG_NAME, PARAMS_DIR, CheckpointReadError, Loaded, LoadReport
from videomt_jax.weights.shapes import check_params, expected_shapes
from videomt_jax.weights.tables import flatten

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
    out here and recreated from the config by `read_params`. Orbax writes from background threads:
    SIGTERM / SIGINT wait until it is done (`signals_deferred`), so the cleanup of an interrupted
    save never races a write still under way.
    """
    flat = {k: jnp.asarray(v, jnp.float32) for k, v in flatten(params).items() if np.size(v)}
    tree = traverse_util.unflatten_dict(flat, sep="/")
    with signals_deferred(), ocp.StandardCheckpointer() as checkpointer:
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
    except Exception as e:  # orbax / tensorstore raise many types for missing, corrupt or foreign data
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise CheckpointReadError(
            f"cannot restore params from {directory} for this config: {type(e).__name__}: {first}"
        ) from None
    empty = {k: jnp.zeros(s, jnp.float32) for k, s in shapes.items() if not math.prod(s)}
    return traverse_util.unflatten_dict({**flatten(restored), **empty}, sep="/")


def save_native(
    path: str | Path, config: VideomtConfig, params: Mapping, *, overwrite: bool = False, processor: Any = None
) -> Path:
    """Atomically write config.json + orbax params (+ the processor's config, when given) to `path`.

    An existing non-empty `path` is replaced only with overwrite=True and only when it holds
    exactly the files its manifest lists (an earlier output, unchanged: `utils.io.check_replaceable`)."""
    check_params(config, params)
    path = Path(path)
    with atomic_directory(path, overwrite=overwrite) as tmp:
        config.to_json_file(str(tmp / CONFIG_NAME))
        if processor is not None:
            processor.save_pretrained(tmp)
        write_params(tmp / PARAMS_DIR, params)
    return path


def verify_files(path: Path) -> None:
    """Check `path`'s files against its manifest (when it has one): CheckpointReadError naming the
    first file that changed, is truncated, missing or added."""
    try:
        verify_manifest(path)
    except ManifestError as e:
        raise CheckpointReadError(f"{path} is damaged: {e}") from None


def load_native(path: str | Path, **config_overrides: Any) -> tuple[VideomtConfig, dict]:
    path = Path(path)
    verify_files(path)
    config = VideomtConfig.from_json_file(str(path / CONFIG_NAME), **config_overrides)
    return config, read_params(path / PARAMS_DIR, config)


def load(path: Path, overrides: Mapping[str, Any]) -> Loaded:
    """`load_pretrained`'s loader for this format."""
    config, params = load_native(path, **overrides)
    return config, params, LoadReport(NAME, [str(path / CONFIG_NAME), str(path / PARAMS_DIR)], 0, [])
