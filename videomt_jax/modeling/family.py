"""The model family by config: `model_for(config)` gives the linen module a config describes.

`config.model_type` picks VidEoMT (queries propagate from frame to frame) or EoMT (image model,
every frame on its own); `config.backbone` (DINOv2 / DINOv3) is handled inside the shared blocks.
Both modules take normalised pixels [B, T, H, W, C] and return a `VideomtOutput`.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from videomt_jax.config import VideomtConfig
from videomt_jax.modeling.eomt import EomtModel
from videomt_jax.modeling.videomt import VideomtModel

MODELS: dict[str, type[EomtModel]] = {cls.model_type: cls for cls in (VideomtModel, EomtModel)}


def model_for(config: VideomtConfig, deterministic: bool = True, remat: str = "none") -> nn.Module:
    """The linen module for `config` (VideomtModel or EomtModel); `remat` is a training setting."""
    return MODELS[config.model_type](config, deterministic, remat)


def init_params(config: VideomtConfig, key: jax.Array, image_hw: tuple[int, int] | None = None) -> Any:
    """Fresh float32 parameters of `model_for(config)` (random), e.g. for training from scratch or tests."""
    h, w = image_hw or config.image_hw
    dummy = jnp.zeros((1, 1, h, w, config.num_channels), jnp.float32)
    model = model_for(config)
    return jax.jit(lambda k: model.init(k, dummy, interpolate_pos_encoding=True)["params"])(key)
