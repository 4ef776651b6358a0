"""A paper recipe shrunk to a test-sized model (the `small_recipe` fixture of tests/conftest.py)."""

from __future__ import annotations

import json
from pathlib import Path

SMALL = {
    "model": {
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "num_blocks": 1,
        "num_queries": 6,
        "image_size": 32,
        "dtype": "float32",
        "num_register_tokens": 1,
        "train_num_points": 32,
    },
    "train": {
        "steps": 3,
        "batch_size": 1,
        "num_frames": 2,
        "warmup_head": 1,
        "warmup_encoder": 1,
        "checkpoint_every": 1,
        "log_every": 1,
        "deep_supervision": False,
    },
    "data": {"min_size_train": [24], "max_size_train": 32, "canvas": [32, 32], "frame_range": 1},
}


def small_recipe_file(tmp_path: Path, base: str) -> str:
    """A recipe file: `base` (a paper recipe) with the SMALL model and training overrides."""
    path = tmp_path / f"{base}.json"
    path.write_text(json.dumps({"base": base, **SMALL}))
    return str(path)
