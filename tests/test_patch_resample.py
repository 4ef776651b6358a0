"""Patch-size resampling of the patch-embedding kernel (PI-resize) and its use by `init_videomt_from`.

The reference resize is torch's `F.interpolate` (align_corners=False) on basis images: bicubic with
antialias (timm's default, used for the authors' DINOv2) and bilinear without (FlexiViT). The
defining property: when upsampling, <resize(x), w'> = <x, w> for every patch x.

Letters: N patches, o/n old/new patch side, C channels, D features, B videos, T frames.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F
import transformers

from videomt_jax.config import VideomtConfig
from videomt_jax.modeling.embeddings import PatchEmbed
from videomt_jax.modeling.family import model_for
from videomt_jax.weights.init_from import init_videomt_from
from videomt_jax.weights.patch_resample import resample_patch_kernel, resize_matrix

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


@pytest.mark.parametrize("kernel_shape,new,match", [
    ((14, 14, 3), (16, 16), r"\(14, 14, 3\)"),
    ((14, 14, 3, 4), (0, 16), "new patch size"),
    ((14, 14, 3, 4), (16, 16, 16), "new patch size"),
])
def test_unresamplable_shapes_raise(kernel_shape, new, match: str):
    with pytest.raises(ValueError, match=match):
        resample_patch_kernel(np.zeros(kernel_shape, np.float32), new)


def test_unknown_method_and_integer_kernel_raise():
    with pytest.raises(ValueError, match="nearest"):
        resample_patch_kernel(np.zeros((2, 2, 1, 1), np.float32), (3, 3), method="nearest")
    with pytest.raises(ValueError, match="int64"):
        resample_patch_kernel(np.zeros((2, 2, 1, 1), np.int64), (3, 3))


def test_init_patch16_videomt_from_patch14_dinov2(tmp_path):
    hf = transformers.Dinov2WithRegistersConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, patch_size=14,
                                                image_size=56)
    torch.manual_seed(0)
    backbone = transformers.Dinov2WithRegistersModel(hf)
    backbone.save_pretrained(tmp_path / "bb")
    config = VideomtConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, num_blocks=1, image_size=64,
                           patch_size=16, num_queries=3)
    params, report = init_videomt_from(tmp_path / "bb", config, jax.random.key(0))
    kernel_path = "embeddings/patch_embeddings/kernel"
    assert kernel_path in report.from_checkpoint and kernel_path not in report.fresh
    assert "(14, 14) -> (16, 16)" in report.resampled[kernel_path]
    assert "query" in report.fresh and "layernorm/scale" in report.from_checkpoint
    embed = params["embeddings"]["patch_embeddings"]
    assert embed["kernel"].shape == (16, 16, 3, 32)

    # A 64x64 image made of 16x16 upsampled copies of a 56x56 image's 14x14 patches: our patch
    # embedding of it equals HF's patch-14 convolution of the original image.
    rng = np.random.default_rng(3)
    image = rng.standard_normal((1, 56, 56, 3)).astype(np.float32)
    patches = image.reshape(4, 14, 4, 14, 3).transpose(0, 2, 1, 3, 4).reshape(16, 14, 14, 3)
    big = torch_resize(patches, (16, 16), "bicubic_antialias").reshape(4, 4, 16, 16, 3)
    big = big.transpose(0, 2, 1, 3, 4).reshape(1, 64, 64, 3).astype(np.float32)
    ours = PatchEmbed(config).apply({"params": embed}, jnp.asarray(big))  # [1, 4, 4, D]
    with torch.no_grad():
        ref = backbone.embeddings.patch_embeddings.projection(torch.from_numpy(image.transpose(0, 3, 1, 2)))
    np.testing.assert_allclose(np.asarray(ours), ref.numpy().transpose(0, 2, 3, 1), atol=1e-4)

    video = jnp.asarray(rng.standard_normal((1, 2, 64, 64, 3)), jnp.float32)  # [B, T, H, W, C]
    out = jax.jit(lambda p, x: model_for(config).apply({"params": p}, x))(params, video)
    assert out.class_logits.shape == (1, 2, 3, config.num_labels + 1)
    assert bool(jnp.isfinite(out.class_logits).all()) and bool(jnp.isfinite(out.mask_logits).all())
