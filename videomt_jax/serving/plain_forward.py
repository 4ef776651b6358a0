"""The VidEoMT streaming step in plain JAX over the linen model's parameter pytree (DINOv2 backbone).

No flax transforms: layers and frames are Python loops over static counts, so the traced program
is straight-line code of basic ops (matmul, reshape, transpose, slice, pad, erf, exp, where),
which `jax2onnx` converts (it cannot trace linen's `nn.scan`). Same parameters, same maths as
`VideomtModel` in float32; tests compare the two.

    step = streaming_step(config, params)                      # params as VideomtModel uses them
    class_logits, mask_logits, queries, started = step(pixels, queries, started)

Letters: B videos, T frames, H/W pixels, C channels, g_h/g_w patch grid, P prefix tokens
(CLS + registers), Q queries, N tokens, D hidden, Hd heads, E head dim, K+1 classes,
G upscaled grid (h/w mask grid), L layers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from videomt_jax.config import VideomtConfig
from videomt_jax.modeling.embeddings import resample_pos_embed
from videomt_jax.modeling.layers import ACTIVATIONS

SUPPORTED_BACKBONES = ("dinov2",)
Params = dict[str, Any]


def check_supported(config: VideomtConfig) -> None:
    """Raise for configs this forward does not implement (it covers the DINOv2 VidEoMT family)."""
    backbone = getattr(config, "backbone", "dinov2")
    if backbone not in SUPPORTED_BACKBONES:
        raise ValueError(
            f"the plain-JAX forward (ONNX export) supports backbones {SUPPORTED_BACKBONES}, got {backbone!r}; "
            "use export-serving (jax.export) for this model"
        )
    if getattr(config, "model_type", "videomt") != "videomt":
        raise ValueError(
            f"the plain-JAX forward is the VidEoMT streaming step; config.model_type is {config.model_type!r}"
        )
    if config.dtype != "float32":
        raise ValueError(f"the plain-JAX forward computes in float32; config.dtype is {config.dtype!r}")


def layer_norm(x: jax.Array, p: Params, eps: float) -> jax.Array:
    """x [..., D] -> normalised over D, float32."""
    mean = x.mean(axis=-1, keepdims=True)
    var = jnp.square(x - mean).mean(axis=-1, keepdims=True)
    return (x - mean) * jax.lax.rsqrt(var + eps) * p["scale"] + p["bias"]


def dense(x: jax.Array, p: Params) -> jax.Array:
    return x @ p["kernel"] + p["bias"]


def attention(x: jax.Array, p: Params, heads: int) -> jax.Array:
    """x [B, N, D] -> [B, N, D]; softmax normalised after the value product, as the model."""
    b, n, d = x.shape
    e = d // heads
    qkv = dense(x, p["qkv"]).reshape(b, n, 3, heads, e).transpose(2, 0, 3, 1, 4)  # [3, B, Hd, N, E]
    q, k, v = qkv[0] * (e**-0.5), qkv[1], qkv[2]
    scores = q @ k.transpose(0, 1, 3, 2)  # [B, Hd, N, N]
    weights = jnp.exp(scores - scores.max(axis=-1, keepdims=True))
    out = (weights @ v) / weights.sum(axis=-1, keepdims=True)  # [B, Hd, N, E]
    return dense(out.transpose(0, 2, 1, 3).reshape(b, n, d), p["out_proj"])


def mlp(x: jax.Array, p: Params, config: VideomtConfig) -> jax.Array:
    if config.use_swiglu_ffn:
        gate = jax.nn.silu(dense(x, p["gate_proj"]))
        return dense(gate * dense(x, p["up_proj"]), p["down_proj"])
    return dense(ACTIVATIONS[config.hidden_act](dense(x, p["fc1"])), p["fc2"])


def block(x: jax.Array, p: Params, config: VideomtConfig) -> jax.Array:
    """Pre-norm ViT block with layer scale; x [B, N, D]."""
    eps = config.layer_norm_eps
    x = (
        x
        + attention(layer_norm(x, p["norm1"], eps), p["attention"], config.num_attention_heads)
        * p["layer_scale1"]["lambda1"]
    )
    return x + mlp(layer_norm(x, p["norm2"], eps), p["mlp"], config) * p["layer_scale2"]["lambda1"]


def block_stack(x: jax.Array, stacked: Params, length: int, config: VideomtConfig) -> jax.Array:
    """`length` blocks whose parameters are stacked on a leading [L] axis."""
    for i in range(length):
        x = block(x, jax.tree_util.tree_map(lambda a, i=i: a[i], stacked["layers"]["block"]), config)
    return x


def embed(pixels: jax.Array, p: Params, config: VideomtConfig) -> jax.Array:
    """pixels [F, H, W, C] -> tokens [F, P + g_h*g_w, D] (position embeddings already at this grid)."""
    f, h, w, c = pixels.shape
    (ph, pw), d = config.patch_hw, config.hidden_size
    gh, gw = h // ph, w // pw
    patches = pixels.reshape(f, gh, ph, gw, pw, c).transpose(0, 1, 3, 2, 4, 5).reshape(f, gh * gw, ph * pw * c)
    pe = p["patch_embeddings"]
    patches = patches @ pe["kernel"].reshape(ph * pw * c, d) + pe["bias"] + p["position_embeddings"]
    prefix = jnp.concatenate([p["cls_token"], p["register_tokens"]], axis=1)  # [1, P, D]
    return jnp.concatenate([jnp.broadcast_to(prefix, (f, *prefix.shape[1:])), patches], axis=1)


def upscale(x: jax.Array, p: Params, config: VideomtConfig) -> jax.Array:
    """x [F, g_h, g_w, D] -> [F, 2g_h, 2g_w, D]: 2x2/2 transposed conv, activation, depthwise 3x3, LayerNorm."""
    f, gh, gw, d = x.shape
    k = p["conv1"]["kernel"].transpose(2, 0, 1, 3).reshape(d, 4 * d)  # [in, (a, b, out)]
    y = (x.reshape(-1, d) @ k).reshape(f, gh, gw, 2, 2, d).transpose(0, 1, 3, 2, 4, 5).reshape(f, 2 * gh, 2 * gw, d)
    y = ACTIVATIONS[config.hidden_act](y + p["conv1"]["bias"])
    padded = jnp.pad(y, ((0, 0), (1, 1), (1, 1), (0, 0)))
    dw = p["conv2"]["kernel"][:, :, 0, :]  # [3, 3, D]
    out = jnp.zeros_like(y)
    for i in range(3):
        for j in range(3):
            out = out + padded[:, i : i + 2 * gh, j : j + 2 * gw] * dw[i, j]
    return layer_norm(out, p["layernorm2d"], 1e-6)


def heads(tokens: jax.Array, p: Params, config: VideomtConfig, grid_hw: tuple[int, int]) -> tuple[jax.Array, jax.Array]:
    """tokens [F, N, D] -> class logits [F, Q, K+1], mask logits [F, Q, G_h, G_w]."""
    q = config.num_queries
    queries = tokens[:, :q]
    feats = tokens[:, q + config.num_prefix_tokens :].reshape(tokens.shape[0], *grid_hw, config.hidden_size)
    class_logits = dense(queries, p["class_predictor"])
    for i in range(config.num_upscale_blocks):
        feats = upscale(feats, p[f"upscale_{i}"], config)  # [F, G_h, G_w, D]
    act = ACTIVATIONS[config.hidden_act]
    mh = p["mask_head"]
    embed_q = dense(act(dense(act(dense(queries, mh["fc1"])), mh["fc2"])), mh["fc3"])  # [F, Q, D]
    f, gh, gw, d = feats.shape
    mask_logits = (embed_q @ feats.reshape(f, gh * gw, d).transpose(0, 2, 1)).reshape(f, q, gh, gw)
    return class_logits, mask_logits


def params_at_size(config: VideomtConfig, params: Params, input_hw: tuple[int, int]) -> Params:
    """`params` with the position embeddings resampled to the grid of `input_hw` (the model's own
    resampling, done once here instead of inside the traced step)."""
    ph, pw = config.patch_hw
    grid = (input_hw[0] // ph, input_hw[1] // pw)
    emb = dict(params["embeddings"])
    emb["position_embeddings"] = resample_pos_embed(emb["position_embeddings"], config.grid_hw, grid)
    return {**params, "embeddings": emb}


def streaming_step(config: VideomtConfig, params: Params) -> Callable:
    """(pixels [B, T, H, W, C], queries [B, Q, D], started [B]) -> (class logits [B, T, Q, K+1],
    mask logits [B, T, Q, h, w], queries [B, Q, D], started [B]); `params` at the input's grid
    (see `params_at_size`)."""
    check_supported(config)

    def step(pixels: jax.Array, queries: jax.Array, started: jax.Array) -> tuple[jax.Array, ...]:
        b, t, h, w, c = pixels.shape
        grid = (h // config.patch_hw[0], w // config.patch_hw[1])
        tokens = embed(pixels.reshape(b * t, h, w, c), params["embeddings"], config)  # [B*T, P+g*g, D]
        if config.query_start > 0:
            tokens = block_stack(tokens, params["encoder"], config.query_start, config)
        tokens = tokens.reshape(b, t, *tokens.shape[1:])
        learned = params["query"][None]  # [1, Q, D]
        normed = []
        for i in range(t):
            fused = dense(queries, params["query_updater"]) + learned
            x = jnp.concatenate([jnp.where(started[:, None, None], fused, learned), tokens[:, i]], axis=1)  # [B, N, D]
            x = block_stack(x, params["query_encoder"], config.num_blocks, config)
            normed.append(layer_norm(x, params["layernorm"], config.layer_norm_eps))
            queries = (normed[-1] if config.norm_queries else x)[:, : config.num_queries]
            started = jnp.ones_like(started)
        class_logits, mask_logits = heads(
            jnp.stack(normed, axis=1).reshape(b * t, *normed[0].shape[1:]), params["heads"], config, grid
        )
        return (
            class_logits.reshape(b, t, *class_logits.shape[1:]),
            mask_logits.reshape(b, t, *mask_logits.shape[1:]),
            queries,
            started,
        )

    return step
