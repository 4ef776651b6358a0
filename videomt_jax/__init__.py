"""videomt-jax: VidEoMT (encoder-only online video segmentation) in JAX/Flax.

Public names are resolved lazily, so `import videomt_jax` stays light (no torch, no training code).
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS: dict[str, str] = {
    "VideomtConfig": "videomt_jax.config",
    "PRESETS": "videomt_jax.config",
    "VideomtModel": "videomt_jax.modeling.videomt",
    "init_params": "videomt_jax.modeling.videomt",
    "init_state": "videomt_jax.modeling.videomt",
    "VideomtOutput": "videomt_jax.modeling.outputs",
    "StreamState": "videomt_jax.modeling.outputs",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'videomt_jax' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
