"""Prediction heads: class head, mask MLP and the upscaling blocks over patch features.

Letters: B batch (frames), Q queries, D hidden, K+1 classes, g/G grid before/after upscaling
(G = g * 2^num_upscale_blocks), P prefix tokens (CLS + registers).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from videomt_jax.config import VideomtConfig
from videomt_jax.modeling.content import region_mask
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
        # One matmul [B*g*g, D] x [D, 2*2*D], then depth-to-space.
        k = jnp.transpose(kernel, (2, 0, 1, 3)).reshape(d, 4 * d).astype(x.dtype)  # [in, (a, b, out)]
        y = (x.reshape(-1, d) @ k).reshape(b, h, w, 2, 2, d)  # [B, g, g, 2, 2, D]
        y = jnp.transpose(y, (0, 1, 3, 2, 4, 5)).reshape(b, 2 * h, 2 * w, d)
        return y + bias.astype(x.dtype)


def _shift_add(flat: jax.Array, k: jax.Array, h: int, stride: int) -> jax.Array:
    """sum over (i, j) of flat[:, i*stride + j : ... + h*stride] * k[i, j]. flat [B, (h+3)(w+2), D], k [3, 3, D]."""
    out = jnp.zeros((flat.shape[0], h * stride, flat.shape[-1]), flat.dtype)
    for i in range(3):
        for j in range(3):
            offset = i * stride + j
            out = out + jax.lax.slice_in_dim(flat, offset, offset + h * stride, axis=1) * k[i, j]
    return out


def _pad_flat(x: jax.Array) -> jax.Array:
    """[B, h, w, D] -> zero-padded (1 top, 2 bottom, 1 left, 1 right) and flattened [B, (h+3)(w+2), D].

    The extra bottom row keeps every shifted window of h * (w+2) elements inside.
    """
    b, h, w, d = x.shape
    return jnp.pad(x, ((0, 0), (1, 2), (1, 1), (0, 0))).reshape(b, (h + 3) * (w + 2), d)


@jax.custom_vjp
def depthwise_conv3x3(x: jax.Array, k: jax.Array) -> jax.Array:
    """3x3 depthwise cross-correlation, zero padding 1, no bias. x [B, h, w, D], k [3, 3, D] -> [B, h, w, D].

    Same numbers as a grouped `lax.conv`, but far faster on CPU, where XLA's grouped convolution is
    slow. The shifts are offsets along the flattened rows of the padded map (row stride w + 2): 1-D
    slices fuse into one loop, where 2-D window slices were each copied out first (the GELU before
    and LayerNorm after the conv at [8, 80, 80, 384]: 111 ms against 394 ms; bit-identical).
    The gradient is written by hand (`_conv_bwd`): autodiff of the nine shifted products kept
    shifted copies of the input for the backward pass, and XLA:CPU materialised the nine products
    of the kernel gradient; this keeps the input once and reduces one product at a time (XLA's
    memory analysis, 5 ViT-S frames at 192x192, bfloat16: 2.7 GB of temporaries -> 0.8 GB).
    """
    b, h, w, d = x.shape
    return _shift_add(_pad_flat(x), k, h, w + 2).reshape(b, h, w + 2, d)[:, :, :w]


def _conv_fwd(x: jax.Array, k: jax.Array) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
    return depthwise_conv3x3(x, k), (x, k)


def _conv_bwd(res: tuple[jax.Array, jax.Array], g: jax.Array) -> tuple[jax.Array, jax.Array]:
    x, k = res
    b, h, w, d = x.shape
    stride = w + 2
    # dx: the correlation transposed = correlation of g with the kernel turned by 180 degrees
    dx = _shift_add(_pad_flat(g), k[::-1, ::-1], h, stride).reshape(b, h, stride, d)[:, :, :w]
    # dk[i, j] = sum over pixels of x shifted by (i, j) times g (g padded to the row stride; the
    # two wrap-around columns of each row carry zero gradient)
    flat = _pad_flat(x)
    g_rows = jnp.pad(g, ((0, 0), (0, 0), (0, 2), (0, 0))).reshape(b, h * stride, d)

    def kernel_grad(n: int, dk: jax.Array) -> jax.Array:  # (i, j) = divmod(n, 3), one at a time
        offset = (n // 3) * stride + n % 3
        window = jax.lax.dynamic_slice_in_dim(flat, offset, h * stride, axis=1)
        return dk.at[n].set(jnp.sum(window * g_rows, axis=(0, 1), dtype=jnp.float32))

    dk = jax.lax.fori_loop(0, 9, kernel_grad, jnp.zeros((9, d), jnp.float32)).reshape(3, 3, d)
    return dx, dk.astype(k.dtype)


depthwise_conv3x3.defvjp(_conv_fwd, _conv_bwd)


class DepthwiseConv3x3(nn.Module):
    """`depthwise_conv3x3` with its kernel as a parameter (HF's grouped Conv2d, [3, 3, 1, D])."""

    config: VideomtConfig

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        d = self.config.hidden_size
        kernel = self.param("kernel", nn.initializers.lecun_normal(), (3, 3, 1, d), jnp.float32)  # [i, j, 1, D]
        return depthwise_conv3x3(x, kernel[:, :, 0, :].astype(x.dtype))


class ScaleLayer(nn.Module):
    """ConvTranspose 2x2/2 -> activation -> depthwise 3x3 (no bias) -> LayerNorm over channels."""

    config: VideomtConfig

    @nn.compact
    def __call__(self, x: jax.Array, region: jax.Array | None = None) -> jax.Array:
        """x [B, g, g, D] -> [B, 2g, 2g, D]; `region` [B, 2g, 2g] bool: the 3x3 conv sees zeros outside it."""
        cfg = self.config
        x = ACTIVATIONS[cfg.hidden_act](ConvTranspose2x2(cfg, name="conv1")(x))
        if region is not None:
            x = jnp.where(region[..., None], x, jnp.zeros((), x.dtype))
        x = DepthwiseConv3x3(cfg, name="conv2")(x)
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
    def __call__(
        self, tokens: jax.Array, grid_hw: tuple[int, int], content: jax.Array | None = None
    ) -> tuple[jax.Array, jax.Array]:
        """`content` [B, 2]: each example's own patch grid (`modeling/content.py`), or None."""
        cfg = self.config
        cdt = compute_dtype(cfg)
        tokens = tokens.astype(cdt)  # [B, Q+P+g*g, D]
        queries = tokens[:, : cfg.num_queries]  # [B, Q, D]
        patches = tokens[:, cfg.num_queries + cfg.num_prefix_tokens :]  # [B, g*g, D]
        class_logits = dense(cfg, cfg.num_labels + 1, "class_predictor")(queries)
        feats = patches.reshape(patches.shape[0], *grid_hw, cfg.hidden_size)  # [B, g, g, D]
        for i in range(cfg.num_upscale_blocks):
            scale = 2 ** (i + 1)
            region = None if content is None else region_mask(content, (grid_hw[0] * scale, grid_hw[1] * scale), scale)
            feats = ScaleLayer(cfg, name=f"upscale_{i}")(feats, region)  # [B, G, G, D]
        mask_embed = MaskHead(cfg, name="mask_head")(queries)  # [B, Q, D]
        mask_logits = jnp.einsum("bqd,bhwd->bqhw", mask_embed, feats, preferred_element_type=jnp.float32)
        return class_logits.astype(jnp.float32), mask_logits.astype(jnp.float32)
