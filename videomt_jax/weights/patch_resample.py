"""Patch-size resampling of a patch-embedding kernel (FlexiViT's pseudo-inverse resize, "PI-resize").

A patch x of size (o_h, o_w) resized to (n_h, n_w) is B x, with B the [n_h*n_w, o_h*o_w] matrix of the
image resize. The new kernel w' solves min ||B^T w' - w||, i.e. w' = pinv(B^T) w, for every
(input channel, output feature) pair; when upsampling B has full column rank and <B x, w'> = <x, w>
exactly: the resized model sees a resized patch as the old model saw the original.

timm does this when a checkpoint is loaded at another patch size (the authors build their DINOv2
backbone at patch 16 from the patch-14 weights): `resample_patch_embed` with the
`checkpoint_filter_fn` defaults, bicubic with antialiasing (PIL-style Keys a = -0.5 filter,
half-pixel centres, taps renormalised at the borders); bilinear without antialiasing only for
FlexiViT checkpoints. timm builds B and the pseudo-inverse in float32; here both are float64 and
the result is float32.

Letters: o_h/o_w old patch size, n_h/n_w new patch size, C input channels, D output features,
i/o samples of a 1-D resize.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

Kernel1d = Callable[[np.ndarray], np.ndarray]


def _keys_cubic(x: np.ndarray, a: float = -0.5) -> np.ndarray:
    x = np.abs(x)
    near = ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
    far = ((a * x - 5.0 * a) * x + 8.0 * a) * x - 4.0 * a
    return np.where(x < 1.0, near, np.where(x < 2.0, far, 0.0))


def _triangle(x: np.ndarray) -> np.ndarray:
    return np.maximum(0.0, 1.0 - np.abs(x))


def _antialiased(kernel: Kernel1d, radius: float) -> Callable[[int, int], np.ndarray]:
    """1-D resize matrix of an antialiased (PIL / torch `antialias=True`) resize with `kernel`."""

    def matrix(n_in: int, n_out: int) -> np.ndarray:  # [o, i]
        scale = n_in / n_out
        stretch = max(scale, 1.0)  # the filter widens only when downsampling
        support = radius * stretch
        out = np.zeros((n_out, n_in), np.float64)
        for o in range(n_out):
            centre = scale * (o + 0.5)
            lo = max(int(centre - support + 0.5), 0)
            hi = min(int(centre + support + 0.5), n_in)
            taps = np.arange(lo, hi)
            weights = kernel((taps - centre + 0.5) / stretch)
            out[o, lo:hi] = weights / weights.sum()
        return out

    return matrix


def _linear(n_in: int, n_out: int) -> np.ndarray:  # [o, i]
    """1-D matrix of torch's bilinear resize without antialiasing (align_corners=False)."""
    scale = n_in / n_out
    out = np.zeros((n_out, n_in), np.float64)
    for o in range(n_out):
        src = max(scale * (o + 0.5) - 0.5, 0.0)
        left = min(int(src), n_in - 1)
        right = min(left + 1, n_in - 1)
        frac = src - left
        out[o, left] += 1.0 - frac
        out[o, right] += frac
    return out


# method -> (n_in, n_out) -> [n_out, n_in] 1-D resize matrix; the 2-D resize is separable.
RESIZE_1D: dict[str, Callable[[int, int], np.ndarray]] = {
    "bicubic_antialias": _antialiased(_keys_cubic, 2.0),
    "bilinear": _linear,
}
DEFAULT_METHOD = "bicubic_antialias"  # timm's `checkpoint_filter_fn` default, used for DINOv2


def _size(value: tuple[int, int], what: str) -> tuple[int, int]:
    size = tuple(int(v) for v in value)
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"{what} must be two positive ints (height, width), got {value!r}")
    return size  # type: ignore[return-value]


def _resize_1d(method: str) -> Callable[[int, int], np.ndarray]:
    if method not in RESIZE_1D:
        raise ValueError(f"unknown resize method {method!r}; choose from {sorted(RESIZE_1D)}")
    return RESIZE_1D[method]


def resize_matrix(old: tuple[int, int], new: tuple[int, int], method: str = DEFAULT_METHOD) -> np.ndarray:
    """The [n_h*n_w, o_h*o_w] float64 matrix B of the image resize old -> new (row-major pixels)."""
    resize = _resize_1d(method)
    (oh, ow), (nh, nw) = _size(old, "old patch size"), _size(new, "new patch size")
    return np.kron(resize(oh, nh), resize(ow, nw))


def resample_patch_kernel(kernel: np.ndarray, new_size: tuple[int, int], method: str = DEFAULT_METHOD) -> np.ndarray:
    """PI-resize a channels-last patch-embedding kernel [o_h, o_w, C, D] to [n_h, n_w, C, D] (float32).

    The identity (as float32) when the size is unchanged.
    """
    resize, kernel = _resize_1d(method), np.asarray(kernel)
    if kernel.ndim != 4 or not np.issubdtype(kernel.dtype, np.floating):
        raise ValueError(f"patch-embedding kernel must be a float [p_h, p_w, C, D] array, got shape "
                         f"{kernel.shape} dtype {kernel.dtype}")
    old, new = (kernel.shape[0], kernel.shape[1]), _size(new_size, "new patch size")
    if old == new:
        return kernel.astype(np.float32)
    # B = B_h (x) B_w, so pinv(B^T) = pinv(B_h^T) (x) pinv(B_w^T): two small pseudo-inverses.
    inv_h = np.linalg.pinv(resize(old[0], new[0]).T)  # [n_h, o_h]
    inv_w = np.linalg.pinv(resize(old[1], new[1]).T)  # [n_w, o_w]
    resampled = np.einsum("ah,bw,hwcd->abcd", inv_h, inv_w, kernel.astype(np.float64), optimize=True)
    return resampled.astype(np.float32)
