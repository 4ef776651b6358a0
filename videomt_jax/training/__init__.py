"""Training: set-prediction matcher and loss (`matcher`, `losses`, `points`); optimizer and train step live beside them.

`videomt_loss`, `LossTargets` and `PointDraws` (the public training contract) are imported on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "videomt_loss": "videomt_jax.training.losses",
    "LossTargets": "videomt_jax.training.matcher",
    "PointDraws": "videomt_jax.training.points",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'videomt_jax.training' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
