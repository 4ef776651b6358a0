"""Prediction heads: class head, mask MLP and the upscaling blocks over patch features.

Letters: B batch (frames), Q queries, D hidden, K+1 classes, g/G grid before/after upscaling
(G = g * 2^num_upscale_blocks), P prefix tokens (CLS + registers).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from videomt_jax.config import VideomtConfig
from videomt_jax.modeling.layers import ACTIVATIONS, compute_dtype, dense, layer_norm


class ConvTranspose2x2(nn.Module):
    """Transposed conv, kernel 2 stride 2: each input pixel paints its own 2x2 output block."""

    config: VideomtConfig

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        d = self.config.hidden_size
        kernel = self.param("kernel", nn.initializers.lecun_normal(), (2, 2, d, d), jnp.float32)  # [a, b, in, out]
        bias = self.param("bias", nn.initializers.zeros, (d,), jnp.float32)
        b, h, w, _ = x.shape
        y = jnp.einsum("bhwc,xycd->bhxwyd", x, kernel.astype(x.dtype))  # [B, g, 2, g, 2, D]
        return y.reshape(b, 2 * h, 2 * w, d) + bias.astype(x.dtype)


class ScaleLayer(nn.Module):
    """ConvTranspose 2x2/2 -> activation -> depthwise 3x3 (no bias) -> LayerNorm over channels."""

    config: VideomtConfig

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        cfg = self.config
        x = ACTIVATIONS[cfg.hidden_act](ConvTranspose2x2(cfg, name="conv1")(x))
        x = nn.Conv(
            cfg.hidden_size,
            (3, 3),
            padding=1,
            feature_group_count=cfg.hidden_size,
            use_bias=False,
            dtype=compute_dtype(cfg),
            param_dtype=jnp.float32,
            name="conv2",
        )(x)
        return layer_norm(cfg, "layernorm2d", eps=1e-6)(x).astype(x.dtype)


class MaskHead(nn.Module):
    config: VideomtConfig

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        cfg = self.config
        act = ACTIVATIONS[cfg.hidden_act]
        x = act(dense(cfg, cfg.hidden_size, "fc1")(x))
        x = act(dense(cfg, cfg.hidden_size, "fc2")(x))
        return dense(cfg, cfg.hidden_size, "fc3")(x)


class Heads(nn.Module):
    """Tokens of one frame -> (class logits [B, Q, K+1], mask logits [B, Q, G_h, G_w]), float32."""

    config: VideomtConfig

    @nn.compact
    def __call__(self, tokens: jax.Array, grid_hw: tuple[int, int]) -> tuple[jax.Array, jax.Array]:
        cfg = self.config
        cdt = compute_dtype(cfg)
        tokens = tokens.astype(cdt)  # [B, Q+P+g*g, D]
        queries = tokens[:, : cfg.num_queries]  # [B, Q, D]
        patches = tokens[:, cfg.num_queries + cfg.num_prefix_tokens :]  # [B, g*g, D]
        class_logits = dense(cfg, cfg.num_labels + 1, "class_predictor")(queries)
        feats = patches.reshape(patches.shape[0], *grid_hw, cfg.hidden_size)  # [B, g, g, D]
        for i in range(cfg.num_upscale_blocks):
            feats = ScaleLayer(cfg, name=f"upscale_{i}")(feats)  # [B, G, G, D]
        mask_embed = MaskHead(cfg, name="mask_head")(queries)  # [B, Q, D]
        mask_logits = jnp.einsum("bqd,bhwd->bqhw", mask_embed, feats, preferred_element_type=jnp.float32)
        return class_logits.astype(jnp.float32), mask_logits.astype(jnp.float32)
