"""`videomt_jax.ops.resize` against torch's `F.interpolate` (align_corners=False).

- bilinear without antialias (post-processing, masked attention): bit-exact on torch's x86 kernel;
- antialias (bilinear / bicubic): the float32 weights bit-exact, the float kernel within a few ulps,
  the uint8 kernel bit-exact;
- the PI-resize of a patch-embedding kernel: its resize matrix is torch's (bicubic with antialias, timm's
  default, and bilinear without, FlexiViT); when upsampling <resize(x), w'> = <x, w> for every patch x.

Letters: N patches / samples, o/n old/new patch side, C channels, D features, h/w input, H/W output.
"""

from __future__ import annotations

import ast
import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from videomt_jax.ops import resize
from videomt_jax.ops.resize import (
    antialias_taps,
    as_size,
    fixed_point_taps,
    linear_taps,
    resample_patch_kernel,
    resize_bilinear,
    resize_images,
    resize_images_uint8,
    resize_matrix,
    taps_matrix,
)

TORCH_MODES = {"bicubic_antialias": ("bicubic", True), "bilinear": ("bilinear", False)}


def torch_resize(x: np.ndarray, new: tuple[int, int], method: str) -> np.ndarray:
    """x [N, o_h, o_w, C] -> [N, n_h, n_w, C] through torch (float64)."""
    mode, antialias = TORCH_MODES[method]
    t = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2), np.float64))
    out = F.interpolate(t, size=new, mode=mode, antialias=antialias, align_corners=False)
    return out.numpy().transpose(0, 2, 3, 1)


def torch_matrix(old: tuple[int, int], new: tuple[int, int], method: str) -> np.ndarray:
    n = old[0] * old[1]
    basis = np.eye(n).reshape(n, *old, 1)
    return torch_resize(basis, new, method).reshape(n, -1).T  # [n_h*n_w, o_h*o_w]


def torch_channels_last(x: np.ndarray, size: tuple[int, int], mode: str, antialias: bool) -> np.ndarray:
    """[h, w, C] -> [H, W, C] through torch in x's dtype."""
    t = torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))[None]
    out = F.interpolate(t, size=size, mode=mode, antialias=antialias, align_corners=False)
    return out[0].numpy().transpose(1, 2, 0)


# ------------------------------------------------------------------------ bilinear, no antialias
@pytest.mark.parametrize(
    "h,w,size", [(16, 16, (150, 170)), (40, 48, (90, 50)), (160, 160, (37, 300)), (20, 20, (20, 500))]
)
def test_resize_bit_exact_vs_torch(h, w, size):
    x = torch.randn(5, h, w, generator=torch.Generator().manual_seed(h + w)) * 5
    want = F.interpolate(x[None], size=size, mode="bilinear", align_corners=False)[0].numpy()
    channels_last = jnp.asarray(x.numpy().transpose(1, 2, 0))  # [h, w, C]
    got = np.asarray(jax.jit(resize_bilinear, static_argnums=1)(channels_last, size)).transpose(2, 0, 1)
    np.testing.assert_array_equal(got, want)


def test_resize_small_output_within_rounding():
    # H + W <= 128: torch sums the four corners in another order (and by its CPU vector width):
    # a few roundings of terms no larger than the largest input
    x = torch.randn(7, 16, 16, generator=torch.Generator().manual_seed(0)) * 5
    want = F.interpolate(x[None], size=(40, 56), mode="bilinear", align_corners=False)[0].numpy()
    got = np.asarray(resize_bilinear(jnp.asarray(x.numpy().transpose(1, 2, 0)), (40, 56))).transpose(2, 0, 1)
    assert np.abs(got - want).max() <= 4 * np.spacing(np.abs(x.numpy()).max())
    assert np.mean(got == want) > 0.3


def test_linear_taps_row_sums_and_clamping():
    index, weights = linear_taps(3, 8)  # upsampling: the last outputs lean on the last input only
    np.testing.assert_array_equal(weights.sum(1), np.ones(8, np.float32))
    assert index.min() == 0 and index.max() == 2 and (index[-1] == 2).all()


# ------------------------------------------------------------------------------------ antialias
@pytest.mark.parametrize("kernel", ["bilinear", "bicubic"])
@pytest.mark.parametrize("n_in,n_out", [(37, 40), (40, 28), (5, 9), (640, 37), (1080, 640), (14, 16)])
def test_float32_antialias_weights_are_torchs(kernel, n_in, n_out):
    """torch's weights read off a one-hot basis: channel c of the input is 1 at sample c."""
    basis = torch.eye(n_in, dtype=torch.float32).reshape(1, n_in, 1, n_in)
    want = F.interpolate(basis, size=(1, n_out), mode=kernel, antialias=True)[0, :, 0, :].numpy().T  # [n_out, n_in]
    got = taps_matrix(antialias_taps(n_in, n_out, kernel, "float32"), n_in).astype(np.float32)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("kernel", ["bilinear", "bicubic"])
@pytest.mark.parametrize("hw,size", [((40, 40), (28, 50)), ((97, 143), (64, 200)), ((9, 30), (40, 7))])
def test_float_kernel_within_ulps_of_torch(kernel, hw, size):
    """Same weights; torch's x86 kernel sums the taps with fused multiply-adds that XLA places differently."""
    x = np.random.default_rng(sum(hw)).normal(size=(*hw, 16)).astype(np.float32)
    want = torch_channels_last(x, size, kernel, antialias=True)
    got = np.asarray(jax.jit(resize_images, static_argnums=(1, 2))(jnp.asarray(x), size, kernel))
    assert np.abs(got - want).max() <= 4 * np.spacing(np.float32(np.abs(want).max()))
    assert np.mean(got == want) > 0.4


@pytest.mark.parametrize("kernel", ["bilinear", "bicubic"])
def test_uint8_kernel_bit_exact(kernel):
    x = np.random.default_rng(4).integers(0, 256, (61, 83, 3)).astype(np.uint8)
    for size in [(32, 120), (100, 40)]:
        want = torch_channels_last(x, size, kernel, antialias=True)  # torch's CPU uint8 kernel
        np.testing.assert_array_equal(np.asarray(resize_images_uint8(jnp.asarray(x), size, kernel)), want)


def test_taps_match_hand_computed_bilinear():
    # 4 -> 2: scale 2, support 2; output 0 centre 1.0: taps x=0..2 at distances .5, .5, 1.5 (/2)
    index, weights = antialias_taps(4, 2, "bilinear", "float64")
    np.testing.assert_array_equal(index[0, :3], [0, 1, 2])
    np.testing.assert_allclose(weights[0, :3], np.array([0.75, 0.75, 0.25]) / 1.75)
    # 2 -> 4 upsampling: output 1 centre 0.75 -> 0.75 * x0 + 0.25 * x1
    index, weights = antialias_taps(2, 4, "bilinear", "float64")
    np.testing.assert_allclose(weights[1, : index.shape[1]] @ np.eye(2)[index[1]], [0.75, 0.25])
    _, q, precision = fixed_point_taps(2, 4, "bilinear")  # max weight 1: largest p with 2^(p+1) < 2^15
    assert precision == 14 and q[1, 0] == 12288 and q[1, 1] == 4096


def test_bad_resize_arguments_raise():
    with pytest.raises(ValueError, match="lanczos"):
        antialias_taps(4, 2, "lanczos")
    with pytest.raises(ValueError, match="positive"):
        linear_taps(0, 3)
    with pytest.raises(ValueError, match="exact"):
        resize_images_uint8(jnp.zeros((4, 4, 3), jnp.uint8), (2, 2), mode="exact")
    with pytest.raises(ValueError, match="target_size"):
        as_size((4, 0), "target_size")
    with pytest.raises(TypeError, match="target_size"):
        as_size(("a", 4), "target_size")


# ------------------------------------------------------------------------- PI-resize (patch kernel)
@pytest.mark.parametrize("method", list(TORCH_MODES))
@pytest.mark.parametrize("old,new", [((14, 14), (16, 16)), ((5, 7), (9, 8)), ((16, 16), (14, 14)), ((14, 14), (8, 8))])
def test_resize_matrix_is_torchs(method: str, old, new):
    np.testing.assert_allclose(resize_matrix(old, new, method), torch_matrix(old, new, method), atol=1e-12)


@pytest.mark.parametrize("method", list(TORCH_MODES))
@pytest.mark.parametrize("old,new", [((14, 14), (16, 16)), ((5, 7), (9, 8))])
def test_upsampled_kernel_sees_resized_patches_as_the_old_one(method: str, old, new):
    rng = np.random.default_rng(0)
    w = rng.standard_normal((*old, 3, 6)).astype(np.float32)  # [o_h, o_w, C, D]
    x = rng.standard_normal((10, *old, 3))  # [N, o_h, o_w, C]
    w_new = resample_patch_kernel(w, new, method)
    assert w_new.shape == (*new, 3, 6) and w_new.dtype == np.float32
    want = np.einsum("nhwc,hwcd->nd", x, w.astype(np.float64))
    got = np.einsum("nhwc,hwcd->nd", torch_resize(x, new, method), w_new.astype(np.float64))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


@pytest.mark.parametrize("new", [(16, 16), (8, 8)])
def test_matches_timms_full_pseudo_inverse(new):
    """timm's procedure on the whole [n_h*n_w, o_h*o_w] matrix: w' = w @ pinv(B) per channel pair, in
    float32 (timm) and float64; 14 -> 8 has no exact inverse (least squares)."""
    rng = np.random.default_rng(1)
    w = rng.standard_normal((14, 14, 3, 4)).astype(np.float32)
    b = torch_matrix((14, 14), new, "bicubic_antialias")  # [n_h*n_w, 196]
    flat = w.reshape(196, 12).T.astype(np.float64)  # [C*D, 196]
    ours = resample_patch_kernel(w, new)
    want64 = (flat @ np.linalg.pinv(b)).T.reshape(*new, 3, 4)
    np.testing.assert_allclose(ours, want64, rtol=1e-5, atol=1e-5 * np.abs(want64).max())
    b32, flat32 = torch.from_numpy(b.astype(np.float32)), torch.from_numpy(flat.astype(np.float32))
    want32 = (flat32 @ torch.linalg.pinv(b32)).numpy().T.reshape(*new, 3, 4)
    np.testing.assert_allclose(ours, want32, atol=2e-4 * np.abs(want32).max())


def test_same_size_is_identity():
    w = np.random.default_rng(2).standard_normal((14, 14, 3, 5)).astype(np.float32)
    np.testing.assert_array_equal(resample_patch_kernel(w, (14, 14)), w)
    np.testing.assert_array_equal(resize_matrix((6, 6), (6, 6)), np.eye(36))


@pytest.mark.parametrize(
    "kernel_shape,new,match",
    [
        ((14, 14, 3), (16, 16), r"\(14, 14, 3\)"),
        ((14, 14, 3, 4), (0, 16), "new patch size"),
        ((14, 14, 3, 4), (16, 16, 16), "new patch size"),
    ],
)
def test_unresamplable_shapes_raise(kernel_shape, new, match: str):
    with pytest.raises(ValueError, match=match):
        resample_patch_kernel(np.zeros(kernel_shape, np.float32), new)


def test_unknown_method_and_integer_kernel_raise():
    with pytest.raises(ValueError, match="nearest"):
        resample_patch_kernel(np.zeros((2, 2, 1, 1), np.float32), (3, 3), method="nearest")
    with pytest.raises(ValueError, match="int64"):
        resample_patch_kernel(np.zeros((2, 2, 1, 1), np.int64), (3, 3))


def test_ground_floor_imports_nothing_of_the_package():
    tree = ast.parse(inspect.getsource(resize))
    imported = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    imported += [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    assert imported and not [m for m in imported if m.split(".")[0] == "videomt_jax"]
