"""Patch embedding, CLS and register tokens, absolute position embeddings (resampled on demand).

A DINOv3 backbone has no position embeddings (nor mask token): its rotary embeddings act inside
attention (`modeling/dinov3.py`).

Letters: B batch (frames), H/W pixels, C channels, g grid, D hidden, R registers.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from videomt_jax.config import VideomtConfig
from videomt_jax.modeling.content import resample_pos_embed_traced
from videomt_jax.modeling.layers import compute_dtype
from videomt_jax.ops.resize import resize_images


def resample_pos_embed(pos: jax.Array, src_hw: tuple[int, int], dst_hw: tuple[int, int]) -> jax.Array:
    """Resample a [g_h*g_w, D] grid of position embeddings to another grid.

    timm's `resample_abs_pos_embed`: `F.interpolate(mode="bicubic", antialias=True)` (Keys a = -0.5,
    half-pixel centres), with torch's float32 taps; the identity at the native size.
    """
    if tuple(src_hw) == tuple(dst_hw):
        return pos
    d = pos.shape[-1]
    grid = jnp.asarray(pos).reshape(*src_hw, d)  # [g_h, g_w, D]
    out = resize_images(grid, (dst_hw[0], dst_hw[1]), "bicubic")  # [g_h', g_w', D] float32
    return out.reshape(dst_hw[0] * dst_hw[1], d).astype(pos.dtype)


class PatchEmbed(nn.Module):
    """Non-overlapping p_h x p_w patches -> D features: the stride-p convolution written as one matmul.

    Same parameters as `nn.Conv` (kernel [p_h, p_w, C, D], bias [D]) and the same numbers up to
    float summation order; a patchify reshape and a GEMM run faster than a strided convolution
    (on the H100 the cuDNN kernel took 70-100 us per 640x640 frame).
    """

    config: VideomtConfig

    @nn.compact
    def __call__(self, pixels: jax.Array) -> jax.Array:
        """pixels [B, H, W, C] -> [B, g_h, g_w, D] in the compute dtype."""
        cfg = self.config
        (ph, pw), c, d = cfg.patch_hw, pixels.shape[-1], cfg.hidden_size
        kernel = self.param("kernel", nn.initializers.lecun_normal(), (ph, pw, c, d), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, (d,), jnp.float32)
        cdt = compute_dtype(cfg)
        b, h, w = pixels.shape[:3]
        gh, gw = h // ph, w // pw
        x = pixels.astype(cdt).reshape(b, gh, ph, gw, pw, c).transpose(0, 1, 3, 2, 4, 5)  # [B, g_h, g_w, p_h, p_w, C]
        x = x.reshape(b, gh, gw, ph * pw * c) @ kernel.reshape(ph * pw * c, d).astype(cdt)
        return x + bias.astype(cdt)


class Embeddings(nn.Module):
    config: VideomtConfig
    deterministic: bool = True

    @nn.compact
    def __call__(self, pixels: jax.Array, content: jax.Array | None = None) -> jax.Array:
        """pixels [B, H, W, C] -> tokens [B, 1+R+g_h*g_w, D] (float32).

        `content` [B, 2]: each example's own patch grid (`modeling/content.py`); its position
        embeddings are resampled to that grid, top-left on the input's."""
        cfg = self.config
        d = cfg.hidden_size
        ph, pw = cfg.patch_hw
        grid_hw = (pixels.shape[1] // ph, pixels.shape[2] // pw)
        patches = PatchEmbed(cfg, name="patch_embeddings")(pixels)  # [B, g_h, g_w, D]
        patches = patches.reshape(patches.shape[0], -1, d).astype(jnp.float32)
        init = nn.initializers.truncated_normal(cfg.initializer_range)
        cls = self.param("cls_token", init, (1, 1, d), jnp.float32)
        registers = self.param("register_tokens", nn.initializers.zeros, (1, cfg.num_register_tokens, d), jnp.float32)
        if cfg.backbone == "dinov2":  # absolute position embeddings (DINOv3 rotates q, k in attention instead)
            pos = self.param("position_embeddings", nn.initializers.normal(1.0), (cfg.grid_hw[0] * cfg.grid_hw[1], d))
            # Kept for a lossless round trip with HF checkpoints (masked image modelling; unused here).
            self.param("mask_token", nn.initializers.zeros, (1, 1, d), jnp.float32)
            if content is not None:
                pos = resample_pos_embed_traced(pos, cfg.grid_hw, content, grid_hw)  # [B, g_h*g_w, D]
            elif grid_hw != cfg.grid_hw:
                pos = resample_pos_embed(pos, cfg.grid_hw, grid_hw)
            patches = patches + pos
        b = patches.shape[0]
        tokens = jnp.concatenate(
            [jnp.broadcast_to(cls, (b, 1, d)), jnp.broadcast_to(registers, (b, cfg.num_register_tokens, d)), patches],
            axis=1,
        )
        return nn.Dropout(cfg.hidden_dropout_prob)(tokens, deterministic=self.deterministic)
