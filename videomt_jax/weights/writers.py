"""Write checkpoint directories atomically, replacing only what is a checkpoint's own.

Every writer goes through `utils.io.atomic_directory`: the files land in a temporary sibling that
replaces the target in one rename, so an interrupted write leaves the old checkpoint or none, never
half of one; an existing target is replaced only with overwrite=True and only when each of its
entries is a checkpoint file (`is_checkpoint_entry`).
"""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import save_file

from videomt_jax.processing import VideoProcessor
from videomt_jax.utils.io import atomic_directory
from videomt_jax.weights.readers import CONFIG_NAME, PARAMS_DIR, SAFETENSORS_NAME

# Names in a checkpoint directory (native, Hugging Face, sharded) that overwrite=True may replace;
# "data.json" is the training data config `evaluation.synthetic.save_data_config` adds to a model.
CHECKPOINT_ENTRIES: tuple[str, ...] = (
    CONFIG_NAME,
    PARAMS_DIR,
    "*.safetensors",
    "*.safetensors.index.json",
    "pytorch_model*.bin",
    "pytorch_model.bin.index.json",
    "*preprocessor_config.json",
    "data.json",
)


def is_checkpoint_entry(entry: Path) -> bool:
    """A file or folder of a checkpoint this package reads or writes (`CHECKPOINT_ENTRIES`): what
    `save_pretrained` / `export_hf` may replace in an existing directory (with overwrite=True)."""
    return any(fnmatch.fnmatchcase(entry.name, pattern) for pattern in CHECKPOINT_ENTRIES)


def write_hf_directory(
    path: str | Path,
    config: Mapping[str, Any],
    state_dict: Mapping[str, np.ndarray],
    processor: VideoProcessor,
    *,
    overwrite: bool,
) -> Path:
    """An HF directory: `config` as config.json, `state_dict` as model.safetensors, the processor's
    video_preprocessor_config.json (HF fields only)."""
    path = Path(path)
    with atomic_directory(path, overwrite=overwrite, replaceable=is_checkpoint_entry) as tmp:
        (tmp / CONFIG_NAME).write_text(json.dumps(dict(config), indent=2, sort_keys=True) + "\n")
        save_file(dict(state_dict), str(tmp / SAFETENSORS_NAME), metadata={"format": "pt"})
        processor.save_pretrained(tmp, hf_only=True)
    return path
