"""Shared by serving/test_export.py and serving/test_onnx_export.py: a model small enough to compile in about a second,
and random parameters for it filled from numpy (no init pass to compile).

Letters: D hidden, Q queries.
"""

from __future__ import annotations

import jax
import numpy as np

from videomt_jax.config import VideomtConfig
from videomt_jax.modeling.family import init_params

FRAMES = 2  # frames per call; the test videos hold 3 calls' worth
# 4 labels, Q = 6 queries, D = 32, 4x4 patch grid -> 16x16 mask grid
CONFIG = VideomtConfig(
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    num_blocks=1,
    num_queries=6,
    num_register_tokens=1,
    image_size=32,
    patch_size=8,
    id2label={i: f"c{i}" for i in range(4)},
)


def random_params(config: VideomtConfig, seed: int = 0) -> dict:
    """float32 params of `config`: kernels N(0, 1/fan_in), embeddings and queries N(0, 1), norm and
    layer scales near 1, biases N(0, 0.1): activations of order one all the way through."""
    rng = np.random.default_rng(seed)
    shapes = jax.eval_shape(lambda: init_params(config, jax.random.PRNGKey(0)))

    def fill(path: tuple, leaf: jax.ShapeDtypeStruct) -> np.ndarray:
        name = str(getattr(path[-1], "key", path[-1]))
        normal = rng.standard_normal(leaf.shape).astype(np.float32)
        if name == "scale" or name.startswith("lambda"):
            return 1.0 + 0.1 * normal
        if name == "bias":
            return 0.1 * normal
        if name == "kernel":
            fan_in = int(np.prod(leaf.shape[-4:-1])) if len(leaf.shape) >= 4 else leaf.shape[-2]
            return normal / np.sqrt(fan_in)
        return normal

    return jax.tree_util.tree_map_with_path(fill, shapes)
