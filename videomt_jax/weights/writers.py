"""Write checkpoint directories atomically, replacing only what is a checkpoint's own.

Every writer goes through `utils.io.atomic_directory`: the files land in a temporary sibling that
replaces the target in one rename, so an interrupted write leaves the old checkpoint or none, never
half of one; the directory gets a manifest (sizes and sha256 of its files, written last), and an
existing target is replaced only with overwrite=True and only when it holds exactly the files its
manifest lists, at any depth (an earlier output of this package, unchanged).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import save_file

from videomt_jax.processing import VideoProcessor
from videomt_jax.utils.io import atomic_directory
from videomt_jax.weights.readers import CONFIG_NAME, SAFETENSORS_NAME


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
    with atomic_directory(path, overwrite=overwrite) as tmp:
        (tmp / CONFIG_NAME).write_text(json.dumps(dict(config), indent=2, sort_keys=True) + "\n")
        save_file(dict(state_dict), str(tmp / SAFETENSORS_NAME), metadata={"format": "pt"})
        processor.save_pretrained(tmp, hf_only=True)
    return path
