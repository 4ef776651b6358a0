"""Resizing with PyTorch's numbers: the filter weights, written once, and the helpers that apply them.

Every resize here is separable (width pass first, then height, as torch) and each output sample is
a weighted sum of K input taps. The taps (indices and weights) depend only on static sizes, so they
are computed on the host (numpy, cached); under `jit` a pass is K gathers and a weighted sum.

Taps of one axis:
- `linear_taps`: `F.interpolate(mode="bilinear", align_corners=False)` without antialiasing (K = 2):
  post-processing (mask logits to the target size), EoMT's masked attention (mask logits to the
  patch grid), FlexiViT's patch-kernel resize.
- `antialias_taps`: `F.interpolate(..., antialias=True)` (PIL's filters): the triangle (bilinear) or
  Keys cubic with a = -0.5 (bicubic), widened by the downscale factor, taps renormalised at the
  borders. torchvision resizes video frames with it (processing.py); timm resamples position
  embeddings and DINOv2's patch-14 kernel with the bicubic one. `dtype` is the precision torch
  computes the weights in: float32 for its float kernel, float64 for its uint8 kernel. The float32
  weights equal torch's bit for bit (its x86 build fuses the cubic's multiply-adds; so do we); its
  float kernel then sums the taps with fused multiply-adds that XLA places differently: outputs
  differ by an ulp or two.
- `fixed_point_taps`: torch's CPU uint8 kernel (PIL-SIMD arithmetic, used by torchvision on x86 CPUs
  with AVX2 for bilinear and on every CPU for bicubic): the float64 antialias weights quantised to
  int16 with a per-axis precision, integer accumulation, rounding shift and clamp after each pass.
  Its float alternative (`mode="float"`: GPU, CPUs without AVX2) is the float32 kernel, then clamp
  and round to uint8; the two differ by one grey level on some pixels.

Bilinear without antialias: PyTorch's x86 CPU kernel (`cpu_upsample_linear`, output height + width
> 128) computes the source coordinate `scale * (i + 0.5) - 0.5` with one fused multiply-add (the host
weights reproduce it: float64 holds the float32 product exactly) and combines two taps as
`fma(a, wa, b * wb)`; XLA's CPU and GPU backends contract `a * wa + b * wb` the same way, so the
output is bit-identical to torch's. Its other kernel (height + width <= 128) sums the four corners
in another order: there we differ by an ulp or two. `jax.image.resize` is no substitute: it
antialiases when shrinking, and its antialiased cubic differs from torch's by up to 0.01 grey levels.

`resample_patch_kernel`: FlexiViT's pseudo-inverse resize ("PI-resize") of a patch-embedding kernel.
A patch x of size (o_h, o_w) resized to (n_h, n_w) is B x, with B the [n_h*n_w, o_h*o_w] matrix of
the image resize; the new kernel w' = pinv(B^T) w solves min ||B^T w' - w|| per (input channel,
output feature) pair, and when upsampling <B x, w'> = <x, w> exactly. timm does this when a
checkpoint is loaded at another patch size (`resample_patch_embed`): bicubic with antialias by
default (the authors' patch-16 DINOv2 from the patch-14 weights), bilinear without for FlexiViT.
timm builds B and the pseudo-inverse in float32; here both are float64 and the result float32.

Array layouts (channels last): `resize_bilinear` resizes the two leading axes ([h, w, ...]: each tap
gathers whole rows of channels; resizing trailing axes makes XLA transpose around every gather, ~4x
slower); `resize_images` / `resize_images_uint8` resize [..., h, w, C].

Letters: n_in/n_out samples of one axis (in, out), K taps, h/w input size, H/W output size,
C channels, o_h/o_w old patch size, n_h/n_w new patch size, D output features.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import lru_cache

import jax
import jax.numpy as jnp
import numpy as np

Size = tuple[int, int]
Taps = tuple[np.ndarray, np.ndarray]  # indices [n_out, K] int32, weights [n_out, K]
Filter = Callable[[np.ndarray], np.ndarray]

KEYS_A = -0.5  # Keys' cubic parameter in PIL and torch antialias (torch's plain bicubic uses -0.75)
UINT8_MODES: tuple[str, ...] = ("fixed", "float")  # torch's CPU uint8 kernel; its float32 kernel + round


def as_size(value: Sequence[int], name: str) -> Size:
    """Validate a (height, width) pair of positive ints: TypeError for non-ints, ValueError otherwise."""
    try:
        pair = tuple(value)
        ints = tuple(int(v) for v in pair)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a (height, width) pair of ints, got {value!r}") from None
    if len(ints) != 2 or min(ints) < 1 or ints != pair:
        raise ValueError(f"{name} must be two positive ints (height, width), got {value!r}")
    return ints[0], ints[1]


def _check_lengths(n_in: int, n_out: int) -> None:
    if n_in < 1 or n_out < 1:
        raise ValueError(f"resize lengths must be positive, got {n_in} -> {n_out}")


# ------------------------------------------------------------------------------------ filters
def triangle(x: np.ndarray) -> np.ndarray:
    """The bilinear (tent) filter, in x's dtype."""
    x = np.abs(x)
    return np.where(x < 1, 1 - x, 0).astype(x.dtype)


def _fma(a: np.ndarray, b: np.ndarray, c: np.ndarray | float) -> np.ndarray:
    """a * b + c in a's dtype: fused (one rounding) for float32, as torch's x86 build contracts it;
    float64 rounds the product and the sum, as numpy (and torch's uint8 weights, within its quantisation)."""
    return (a.astype(np.float64) * b + c).astype(a.dtype)


def keys_cubic(x: np.ndarray) -> np.ndarray:
    """Keys' cubic convolution filter with a = KEYS_A, in x's dtype, in the order of torch's C++."""
    a = x.dtype.type(KEYS_A)
    x = np.abs(x)
    near = _fma(_fma(np.full_like(x, a + 2), x, -(a + 3)) * x, x, 1)  # ((a + 2) x - (a + 3)) x x + 1
    far = _fma(_fma(_fma(np.full_like(x, a), x, -5 * a), x, 8 * a), x, -4 * a)  # ((a x - 5a) x + 8a) x - 4a
    return np.where(x < 1, near, np.where(x < 2, far, 0)).astype(x.dtype)


# antialias filter name (HF's `resample`: "bilinear", "bicubic") -> (filter, support at scale 1)
ANTIALIAS_FILTERS: dict[str, tuple[Filter, float]] = {
    "bilinear": (triangle, 1.0),
    "bicubic": (keys_cubic, 2.0),
}


# --------------------------------------------------------------------------------------- taps
@lru_cache(maxsize=256)
def linear_taps(n_in: int, n_out: int, dtype: str = "float32") -> Taps:
    """torch bilinear, align_corners=False, no antialias: indices [n_out, 2], weights [n_out, 2].

    float32 is torch's float kernel (fused coordinate); float64 rounds the coordinate twice, as a
    float64 `scale * (i + 0.5) - 0.5` does.
    """
    _check_lengths(n_in, n_out)
    dt = np.dtype(dtype).type
    scale = dt(n_in) / dt(n_out)  # as area_pixel_compute_scale
    centre = np.arange(n_out, dtype=dt) + dt(0.5)  # [n_out]
    # float32: fma(scale, centre, -0.5), exact in float64 (a float32 product has 48 bits), one rounding.
    source = np.maximum((np.float64(scale) * centre.astype(np.float64) - 0.5).astype(dt), dt(0))
    index0 = np.minimum(np.floor(source).astype(np.int64), n_in - 1)  # [n_out]
    weight1 = np.clip(source - index0.astype(dt), dt(0), dt(1)).astype(dt)
    weight0 = (dt(1) - weight1).astype(dt)
    index1 = index0 + (index0 < n_in - 1)
    return np.stack([index0, index1], 1).astype(np.int32), np.stack([weight0, weight1], 1)


@lru_cache(maxsize=256)
def antialias_taps(n_in: int, n_out: int, filter_name: str = "bilinear", dtype: str = "float32") -> Taps:
    """torch antialias=True: indices [n_out, K] int32, normalised weights [n_out, K] in `dtype`.

    Casts follow torch's C++ (float64 where it promotes); the K taps of a row past its support have
    weight 0 (and a clamped index).
    """
    if filter_name not in ANTIALIAS_FILTERS:
        raise ValueError(f"unknown antialias filter {filter_name!r}; choose one of {sorted(ANTIALIAS_FILTERS)}")
    _check_lengths(n_in, n_out)
    dt = np.dtype(dtype).type
    fn, base_support = ANTIALIAS_FILTERS[filter_name]
    scale = dt(n_in) / dt(n_out)
    support = dt(base_support) * scale if scale >= 1 else dt(base_support)  # widened when shrinking
    invscale = dt(1.0 / np.float64(scale)) if scale >= 1 else dt(1.0)
    centres = (np.float64(scale) * (np.arange(n_out) + 0.5)).astype(dt)  # [n_out]
    lo = np.maximum(np.trunc((centres - support).astype(np.float64) + 0.5), 0).astype(np.int64)
    hi = np.minimum(np.trunc((centres + support).astype(np.float64) + 0.5), n_in).astype(np.int64)
    j = np.arange(int((hi - lo).max()))  # [K]
    offsets = (j[None] + lo[:, None]).astype(dt) - centres[:, None]  # [n_out, K]
    weights = fn(((offsets.astype(np.float64) + 0.5) * np.float64(invscale)).astype(dt))
    weights = np.where(j[None] < (hi - lo)[:, None], weights, dt(0))
    total = np.zeros(n_out, dt)
    for k in range(j.size):  # sequential sum, as torch
        total = total + weights[:, k]
    index = np.minimum(lo[:, None] + j[None], n_in - 1)
    return index.astype(np.int32), (weights / total[:, None]).astype(dt)


@lru_cache(maxsize=128)
def fixed_point_taps(n_in: int, n_out: int, filter_name: str = "bilinear") -> tuple[np.ndarray, np.ndarray, int]:
    """torch's uint8 weights: indices [n_out, K], int16-range weights [n_out, K] (int32), precision bits."""
    index, weights = antialias_taps(n_in, n_out, filter_name, "float64")
    w_max = float(weights.max())
    precision = 0
    while precision < 22 and int(0.5 + w_max * (1 << (precision + 1))) < (1 << 15):
        precision += 1
    scaled = weights * (1 << precision)
    quantised = np.trunc(np.where(weights < 0, scaled - 0.5, scaled + 0.5))
    return index, quantised.astype(np.int32), precision


def antialias_matrix_traced(n_in: int, n_out: jax.Array, rows: int, filter_name: str = "bicubic") -> jax.Array:
    """torch antialias=True as a dense [rows, n_in] float32 matrix for a *traced* output length.

    For sizes known only on the device (each training clip's own content grid, `n_out` <= `rows`):
    row o < n_out holds output o's normalised weights, as `taps_matrix(antialias_taps(n_in, n_out))`
    (up to float32 rounding: computed on the device, not in torch's cast order); rows >= n_out are 0.
    """
    fn, base_support = ANTIALIAS_FILTERS[filter_name]
    n = jnp.asarray(n_out, jnp.float32)
    scale = n_in / n
    shrink = scale >= 1.0
    support = jnp.where(shrink, base_support * scale, base_support)  # widened when shrinking
    invscale = jnp.where(shrink, 1.0 / scale, 1.0)
    centres = scale * (jnp.arange(rows, dtype=jnp.float32) + 0.5)  # [rows]
    lo = jnp.maximum(jnp.trunc(centres - support + 0.5), 0.0)
    hi = jnp.minimum(jnp.trunc(centres + support + 0.5), n_in)
    i = jnp.arange(n_in, dtype=jnp.float32)  # [n_in]
    x = (i[None] - centres[:, None] + 0.5) * invscale  # [rows, n_in] filter arguments
    inside = (i[None] >= lo[:, None]) & (i[None] < hi[:, None])  # [rows, n_in]
    weights = jnp.where(inside, _filter_traced(fn, x), 0.0)
    total = weights.sum(axis=1, keepdims=True)
    live = jnp.arange(rows)[:, None] < n_out
    return jnp.where(live, weights / jnp.where(total == 0, 1.0, total), 0.0)


def _filter_traced(fn: Filter, x: jax.Array) -> jax.Array:
    """The host filter `fn` (written for numpy) as jnp operations."""
    return TRACED_FILTERS[fn](x)


def _triangle_traced(x: jax.Array) -> jax.Array:
    return jnp.maximum(1.0 - jnp.abs(x), 0.0)


def _keys_cubic_traced(x: jax.Array) -> jax.Array:
    a, x = KEYS_A, jnp.abs(x)
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    far = ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
    return jnp.where(x < 1, near, jnp.where(x < 2, far, 0.0))


TRACED_FILTERS: dict[Filter, Callable[[jax.Array], jax.Array]] = {
    triangle: _triangle_traced,
    keys_cubic: _keys_cubic_traced,
}


def taps_matrix(taps: Taps, n_in: int) -> np.ndarray:
    """The dense [n_out, n_in] float64 matrix of one axis' taps (repeated indices add up)."""
    index, weights = taps
    matrix = np.zeros((index.shape[0], n_in), np.float64)
    rows = np.broadcast_to(np.arange(index.shape[0])[:, None], index.shape)
    np.add.at(matrix, (rows, index), weights.astype(np.float64))
    return matrix


# ------------------------------------------------------------------------------ apply (jax)
def _weighted_taps(x: jax.Array, taps: tuple[np.ndarray, np.ndarray], axis: int) -> jax.Array:
    """sum_k weights[:, k] * x[index[:, k]] along `axis`, first tap first (torch's order; XLA fuses it)."""
    index, weights = taps
    shape = [1] * x.ndim
    shape[axis] = index.shape[0]
    total = jnp.take(x, index[:, 0], axis=axis) * jnp.asarray(weights[:, 0]).reshape(shape)
    for k in range(1, index.shape[1]):
        total = total + jnp.take(x, index[:, k], axis=axis) * jnp.asarray(weights[:, k]).reshape(shape)
    return total


def resize_bilinear(x: jax.Array, size: Size) -> jax.Array:
    """[h, w, ...] -> [H, W, ...]: the two leading axes, as torch bilinear (align_corners=False, no antialias)."""
    height, width = size
    if x.shape[1] != width:
        x = _weighted_taps(x, linear_taps(x.shape[1], width), 1)  # [h, W, ...]
    if x.shape[0] != height:
        x = _weighted_taps(x, linear_taps(x.shape[0], height), 0)  # [H, W, ...]
    return x


def _antialias_axis(x: jax.Array, n_out: int, axis: int, filter_name: str) -> jax.Array:
    """torch's float32 antialiased resize of one axis of a float array."""
    if x.shape[axis] == n_out:
        return x
    return _weighted_taps(x.astype(jnp.float32), antialias_taps(x.shape[axis], n_out, filter_name, "float32"), axis)


def _antialias_axis_uint8(x: jax.Array, n_out: int, axis: int, filter_name: str) -> jax.Array:
    """torch's CPU uint8 antialiased resize of one axis (integer arithmetic); returns uint8."""
    if x.shape[axis] == n_out:
        return x
    index, weights, precision = fixed_point_taps(x.shape[axis], n_out, filter_name)
    acc = _weighted_taps(x.astype(jnp.int32), (index, weights), axis) + jnp.int32(1 << (precision - 1))
    return jnp.clip(jnp.right_shift(acc, precision), 0, 255).astype(jnp.uint8)


def resize_images(x: jax.Array, size: Size, filter_name: str = "bilinear") -> jax.Array:
    """[..., h, w, C] float -> [..., H, W, C] float32, torch's antialiased float kernel (width first)."""
    x = _antialias_axis(x, size[1], x.ndim - 2, filter_name)
    return _antialias_axis(x, size[0], x.ndim - 3, filter_name)


def resize_images_uint8(x: jax.Array, size: Size, filter_name: str = "bilinear", mode: str = "fixed") -> jax.Array:
    """[..., h, w, C] uint8 -> [..., H, W, C] uint8 as torchvision resizes uint8 frames.

    mode "fixed": torch's CPU uint8 kernel; "float": float32 kernel, clamp, round half to even.
    """
    if mode not in UINT8_MODES:
        raise ValueError(f"uint8 resize mode must be one of {UINT8_MODES}, got {mode!r}")
    if mode == "float":
        resized = resize_images(x.astype(jnp.float32), size, filter_name)
        return jnp.round(jnp.clip(resized, 0.0, 255.0)).astype(jnp.uint8)
    x = _antialias_axis_uint8(x, size[1], x.ndim - 2, filter_name)
    return _antialias_axis_uint8(x, size[0], x.ndim - 3, filter_name)


def crop_grid(valid_size: Size | None, grid: Size, stride: int) -> Size:
    """Cells of a `stride`-pixel grid covering the top-left `valid_size` pixels (rounded up)."""
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


def crop_then_resize(x: jax.Array, target_size: Size, valid_size: Size | None, stride: int) -> jax.Array:
    """Hugging Face's per-frame path: crop [h, w, ...] mask logits to the valid cells, one resize to target_size."""
    ch, cw = crop_grid(valid_size, (x.shape[0], x.shape[1]), stride)
    return resize_bilinear(x[:ch, :cw], target_size)


def resize_to_input(x: jax.Array, valid_size: Size | None, stride: int) -> jax.Array:
    """The authors' first video step: resize [h, w, ...] to the (padded) model input (h * stride,
    w * stride), then keep its un-padded top-left `valid_size` pixels."""
    input_size = (x.shape[0] * stride, x.shape[1] * stride)
    valid_h, valid_w = input_size if valid_size is None else as_size(valid_size, "valid_size")
    if valid_h > input_size[0] or valid_w > input_size[1]:
        raise ValueError(f"valid_size {valid_size} exceeds the model input {input_size[0]}x{input_size[1]}")
    return resize_bilinear(x, input_size)[:valid_h, :valid_w]


# ---------------------------------------------------------------------- PI-resize (numpy)
# method -> (n_in, n_out) -> [n_out, n_in] float64 matrix of one axis; the 2-D resize is separable.
PI_RESIZE_METHODS: dict[str, Callable[[int, int], np.ndarray]] = {
    "bicubic_antialias": lambda n_in, n_out: taps_matrix(antialias_taps(n_in, n_out, "bicubic", "float64"), n_in),
    "bilinear": lambda n_in, n_out: taps_matrix(linear_taps(n_in, n_out, "float64"), n_in),
}
PI_RESIZE_DEFAULT = "bicubic_antialias"  # timm's `checkpoint_filter_fn` default, used for DINOv2


def _axis_matrix(method: str) -> Callable[[int, int], np.ndarray]:
    if method not in PI_RESIZE_METHODS:
        raise ValueError(f"unknown resize method {method!r}; choose from {sorted(PI_RESIZE_METHODS)}")
    return PI_RESIZE_METHODS[method]


def resize_matrix(old: Size, new: Size, method: str = PI_RESIZE_DEFAULT) -> np.ndarray:
    """The [n_h*n_w, o_h*o_w] float64 matrix B of the image resize old -> new (row-major pixels)."""
    axis_matrix = _axis_matrix(method)
    (oh, ow), (nh, nw) = as_size(old, "old patch size"), as_size(new, "new patch size")
    return np.kron(axis_matrix(oh, nh), axis_matrix(ow, nw))


def resample_patch_kernel(kernel: np.ndarray, new_size: Size, method: str = PI_RESIZE_DEFAULT) -> np.ndarray:
    """PI-resize a channels-last patch-embedding kernel [o_h, o_w, C, D] to [n_h, n_w, C, D] (float32).

    The identity (as float32) when the size is unchanged.
    """
    axis_matrix, kernel = _axis_matrix(method), np.asarray(kernel)
    if kernel.ndim != 4 or not np.issubdtype(kernel.dtype, np.floating):
        raise ValueError(
            f"patch-embedding kernel must be a float [p_h, p_w, C, D] array, got shape "
            f"{kernel.shape} dtype {kernel.dtype}"
        )
    old, new = (kernel.shape[0], kernel.shape[1]), as_size(new_size, "new patch size")
    if old == new:
        return kernel.astype(np.float32)
    # B = B_h (x) B_w, so pinv(B^T) = pinv(B_h^T) (x) pinv(B_w^T): two small pseudo-inverses.
    inv_h = np.linalg.pinv(axis_matrix(old[0], new[0]).T)  # [n_h, o_h]
    inv_w = np.linalg.pinv(axis_matrix(old[1], new[1]).T)  # [n_w, o_w]
    resampled = np.einsum("ah,bw,hwcd->abcd", inv_h, inv_w, kernel.astype(np.float64), optimize=True)
    return resampled.astype(np.float32)
