"""Bilinear resizing that reproduces PyTorch's `F.interpolate(mode="bilinear", align_corners=False)`.

`jax.image.resize` is not a drop-in: it antialiases when shrinking and places samples slightly
differently. This module computes PyTorch's source indices and weights on the host (they depend only
on static sizes) and applies them separably, width first, then height, in the order PyTorch's CPU
kernel (`cpu_upsample_linear`, used when output height + width > 128) combines them:

    row   = x[i, j0] * wj0 + x[i, j1] * wj1          # width pass
    value = row[i0] * wi0 + row[i1] * wi1            # height pass

PyTorch's x86 build compiles that kernel with fused multiply-adds (`a * wa + b * wb` becomes
`fma(a, wa, b * wb)`; the source coordinate `scale * (i + 0.5) - 0.5` becomes one fma too). The host
weights below reproduce the fused coordinate exactly (float64 holds the exact product). XLA's CPU and
GPU backends contract `a * wa + b * wb` the same way, which makes the output bit-identical to
PyTorch's on CPU (checked in tests/test_postprocess.py). PyTorch's other kernel (output height +
width <= 128) sums the four corners in another order; there we differ by at most an ulp or two.

Arrays are channels-last, [h, w, ...]: the resized axes lead, so each tap gathers whole rows of
channels (resizing the last two axes instead makes XLA transpose around every gather, ~4x slower).

`crop_then_resize` is the per-frame path (optional crop in mask cells, one resize, as HF);
`resize_to_input` is the first step of the authors' video path (resize to the padded model input,
crop the valid pixels), followed by `resize_bilinear` to the target size.

Letters: h/w input grid, H/W output size, ... trailing channel axes.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

Size = tuple[int, int]


def as_size(value: Sequence[int], name: str) -> Size:
    """Validate a (height, width) pair of positive ints."""
    try:
        height, width = (int(v) for v in value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a (height, width) pair of ints, got {value!r}") from None
    if height < 1 or width < 1 or (height, width) != tuple(value):
        raise ValueError(f"{name} must be two positive ints (height, width), got {value!r}")
    return height, width


@lru_cache(maxsize=256)
def axis_weights(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """PyTorch's taps for one axis: (index0, index1, weight0, weight1), each [n_out]."""
    f32 = np.float32
    if n_in == n_out:  # PyTorch copies: weights exactly 1 and 0
        index = np.arange(n_out, dtype=np.int32)
        return index, index, np.ones(n_out, f32), np.zeros(n_out, f32)
    scale = f32(n_in) / f32(n_out)  # float32, as area_pixel_compute_scale<float>
    centre = np.arange(n_out, dtype=f32) + f32(0.5)
    # fma(scale, centre, -0.5): exact in float64 (a float32 product has 48 significant bits), one rounding.
    source = (scale.astype(np.float64) * centre.astype(np.float64) - 0.5).astype(f32)
    source = np.maximum(source, f32(0))
    index0 = np.minimum(np.floor(source).astype(np.int64), n_in - 1)
    weight1 = np.clip(source - index0.astype(f32), f32(0), f32(1)).astype(f32)
    weight0 = (f32(1) - weight1).astype(f32)
    index1 = index0 + (index0 < n_in - 1)
    return index0.astype(np.int32), index1.astype(np.int32), weight0, weight1


def _resize_axis(x: jax.Array, n_out: int, axis: int) -> jax.Array:
    n_in = x.shape[axis]
    if n_in == n_out:
        return x
    index0, index1, weight0, weight1 = axis_weights(n_in, n_out)
    shape = [1] * x.ndim
    shape[axis] = n_out
    w0 = jnp.asarray(weight0).reshape(shape)
    w1 = jnp.asarray(weight1).reshape(shape)
    return jnp.take(x, index0, axis=axis) * w0 + jnp.take(x, index1, axis=axis) * w1


def resize_bilinear(x: jax.Array, size: Size) -> jax.Array:
    """Resize the two leading axes of `x` ([h, w, ...] -> [H, W, ...]) like torch bilinear, align_corners=False."""
    height, width = size
    x = _resize_axis(x, width, 1)  # [h, W, ...]
    return _resize_axis(x, height, 0)  # [H, W, ...]


def crop_grid(valid_size: Optional[Size], grid: Size, stride: int) -> Size:
    """Mask-grid cells covering the un-padded input region `valid_size` (input pixels, rounded up)."""
    if valid_size is None:
        return grid
    valid_h, valid_w = as_size(valid_size, "valid_size")
    input_h, input_w = grid[0] * stride, grid[1] * stride
    if valid_h > input_h or valid_w > input_w:
        raise ValueError(
            f"valid_size {valid_size} exceeds the model input {input_h}x{input_w} "
            f"(mask grid {grid[0]}x{grid[1]} x stride {stride})"
        )
    return math.ceil(valid_h / stride), math.ceil(valid_w / stride)


def crop_then_resize(x: jax.Array, target_size: Size, valid_size: Optional[Size], stride: int) -> jax.Array:
    """Per-frame path: crop [h, w, ...] mask logits to the valid cells, then one resize to target_size."""
    ch, cw = crop_grid(valid_size, (x.shape[0], x.shape[1]), stride)
    return resize_bilinear(x[:ch, :cw], target_size)


def resize_to_input(x: jax.Array, valid_size: Optional[Size], stride: int) -> jax.Array:
    """The authors' first video step: resize [h, w, ...] to the (padded) model input
    (h * stride, w * stride), then keep its un-padded top-left `valid_size` pixels."""
    input_size = (x.shape[0] * stride, x.shape[1] * stride)
    valid_h, valid_w = input_size if valid_size is None else as_size(valid_size, "valid_size")
    if valid_h > input_size[0] or valid_w > input_size[1]:
        raise ValueError(f"valid_size {valid_size} exceeds the model input {input_size[0]}x{input_size[1]}")
    return resize_bilinear(x, input_size)[:valid_h, :valid_w]
