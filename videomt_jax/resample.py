"""Antialiased image resampling that reproduces torch `interpolate(..., antialias=True)` exactly.

Hugging Face's video processor resizes uint8 frames with torchvision, which takes one of two
torch kernels (both separable, width pass first, then height):

- "fixed": torch's CPU uint8 kernel (PIL-SIMD arithmetic), used by torchvision on x86 CPUs with
  AVX2 for bilinear and on every CPU for bicubic: float64 filter weights quantised to int16 with a
  per-axis precision, integer accumulation, rounding shift and clamp to uint8 after each pass.
- "float": torch's float32 kernel, used on GPU and on CPUs without AVX2, followed by torchvision's
  clamp and round to uint8. Weights are computed in float32 in the order of torch's kernel.

For each output row/column the K input taps and their weights (triangle filter for bilinear, Keys
cubic a = -0.5 for bicubic; support widened by the downscale factor) are computed on the host from
the static shapes; under `jit` a pass is K gathers and a weighted sum. Both modes match torch bit
for bit in our tests (float up to float32 summation order). `jax.image.resize(antialias=True)`
differs from torch by up to 0.01 grey levels, hence this module.

Letters: H/W input size, h/w output size, C channels, K taps, out = output length of one axis.
"""

from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np


def _triangle(x: np.ndarray) -> np.ndarray:
    x = np.abs(x)
    return np.where(x < 1, 1 - x, 0).astype(x.dtype)


def _keys_cubic(x: np.ndarray) -> np.ndarray:
    a = x.dtype.type(-0.5)  # Keys' a, as PIL and torch antialias use
    x = np.abs(x)
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    far = ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
    return np.where(x < 1, near, np.where(x < 2, far, 0)).astype(x.dtype)


# name -> (filter, support at scale 1)
KERNELS: dict[str, tuple[Callable[[np.ndarray], np.ndarray], float]] = {
    "bilinear": (_triangle, 1.0),
    "bicubic": (_keys_cubic, 2.0),
}
MODES: tuple[str, ...] = ("fixed", "float")


@functools.lru_cache(maxsize=128)
def resample_taps(
    in_size: int, out_size: int, kernel: str = "bilinear", dtype: str = "float32"
) -> tuple[np.ndarray, np.ndarray]:
    """Input indices [out, K] (int32) and normalised weights [out, K] for one axis.

    `dtype` is the precision torch computes them in: float32 for its float kernel, float64 for
    its uint8 kernel. Casts follow torch's C++ (float64 where it promotes).
    """
    if kernel not in KERNELS:
        raise ValueError(f"unknown resample kernel {kernel!r}; choose one of {sorted(KERNELS)}")
    if in_size < 1 or out_size < 1:
        raise ValueError(f"resample sizes must be positive, got {in_size} -> {out_size}")
    dt = np.dtype(dtype).type
    fn, base_support = KERNELS[kernel]
    scale = dt(in_size) / dt(out_size)
    support = dt(base_support) * scale if scale >= 1 else dt(base_support)
    invscale = dt(1.0 / np.float64(scale)) if scale >= 1 else dt(1.0)
    centers = (np.float64(scale) * (np.arange(out_size) + 0.5)).astype(dt)  # [out]
    lo = np.maximum(np.trunc((centers - support).astype(np.float64) + 0.5), 0).astype(np.int64)
    hi = np.minimum(np.trunc((centers + support).astype(np.float64) + 0.5), in_size).astype(np.int64)
    taps = int((hi - lo).max())
    j = np.arange(taps)
    offsets = (j[None] + lo[:, None]).astype(dt) - centers[:, None]  # [out, K]
    weights = fn(((offsets.astype(np.float64) + 0.5) * np.float64(invscale)).astype(dt))
    weights = np.where(j[None] < (hi - lo)[:, None], weights, dt(0))
    total = np.zeros(out_size, dt)
    for k in range(taps):  # sequential sum, as torch
        total = total + weights[:, k]
    weights = weights / total[:, None]
    index = np.minimum(lo[:, None] + j[None], in_size - 1)
    return index.astype(np.int32), weights.astype(dt)


@functools.lru_cache(maxsize=128)
def fixed_point_taps(in_size: int, out_size: int, kernel: str = "bilinear") -> tuple[np.ndarray, np.ndarray, int]:
    """torch's uint8 weights: indices [out, K], int16-range weights [out, K] (int32), precision bits."""
    index, weights = resample_taps(in_size, out_size, kernel, "float64")
    w_max = float(weights.max())
    precision = 0
    while precision < 22 and int(0.5 + w_max * (1 << (precision + 1))) < (1 << 15):
        precision += 1
    scaled = weights * (1 << precision)
    quantised = np.trunc(np.where(weights < 0, scaled - 0.5, scaled + 0.5))
    return index, quantised.astype(np.int32), precision


def _weighted_taps(x: jax.Array, index: np.ndarray, weights: np.ndarray, axis: int, init: jax.Array | float) -> jax.Array:
    """init + sum_k weights[:, k] * x[index[:, k]] along `axis` (K small; XLA fuses it)."""
    shape = [1] * x.ndim
    shape[axis] = index.shape[0]
    total = init
    for k in range(index.shape[1]):
        total = total + jnp.take(x, jnp.asarray(index[:, k]), axis=axis) * jnp.asarray(weights[:, k]).reshape(shape)
    return total


def resize_axis(x: jax.Array, out_size: int, axis: int, kernel: str = "bilinear") -> jax.Array:
    """torch's float32 antialiased resize of one axis of a float array."""
    axis = axis % x.ndim
    if x.shape[axis] == out_size:
        return x
    index, weights = resample_taps(x.shape[axis], out_size, kernel, "float32")
    return _weighted_taps(x.astype(jnp.float32), index, weights, axis, 0.0)


def resize_axis_uint8(x: jax.Array, out_size: int, axis: int, kernel: str = "bilinear") -> jax.Array:
    """torch's CPU uint8 antialiased resize of one axis (integer arithmetic); returns uint8."""
    axis = axis % x.ndim
    if x.shape[axis] == out_size:
        return x
    index, weights, precision = fixed_point_taps(x.shape[axis], out_size, kernel)
    acc = _weighted_taps(x.astype(jnp.int32), index, weights, axis, jnp.int32(1 << (precision - 1)))
    return jnp.clip(jnp.right_shift(acc, precision), 0, 255).astype(jnp.uint8)


def resize_images(x: jax.Array, out_hw: tuple[int, int], kernel: str = "bilinear") -> jax.Array:
    """[..., H, W, C] float -> [..., h, w, C] float32, torch's float kernel (width first)."""
    x = resize_axis(x, out_hw[1], x.ndim - 2, kernel)
    return resize_axis(x, out_hw[0], x.ndim - 3, kernel)


def resize_images_uint8(x: jax.Array, out_hw: tuple[int, int], kernel: str = "bilinear", mode: str = "fixed") -> jax.Array:
    """[..., H, W, C] uint8 -> [..., h, w, C] uint8 as torchvision resizes uint8 frames.

    mode "fixed": torch's CPU uint8 kernel; "float": float32 kernel, clamp, round half to even.
    """
    if mode == "float":
        resized = resize_images(x.astype(jnp.float32), out_hw, kernel)
        return jnp.round(jnp.clip(resized, 0.0, 255.0)).astype(jnp.uint8)
    if mode != "fixed":
        raise ValueError(f"uint8 resize mode must be one of {MODES}, got {mode!r}")
    x = resize_axis_uint8(x, out_hw[1], x.ndim - 2, kernel)
    return resize_axis_uint8(x, out_hw[0], x.ndim - 3, kernel)
