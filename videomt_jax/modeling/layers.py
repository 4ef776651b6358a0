"""Pre-norm ViT blocks (DINOv2 style) and a stack of them run with `nn.scan`.

Letters: B batch (frames), G a group of the batch, N tokens, D hidden, H heads, E head dim, F MLP hidden,
L layers.
Precision: parameters float32; matmuls in `config.dtype`; LayerNorm, softmax and the residual
stream in float32.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from videomt_jax.config import HIDDEN_ACTS, VideomtConfig
from videomt_jax.modeling.dinov3 import QkvNoKeyBias, Rope, apply_rope
from videomt_jax.modeling.masking import masked_attention


def gelu_erf(x: jax.Array) -> jax.Array:
    """Exact GELU, x * Phi(x), written with erf as torch writes it, computed in float32.

    `jax.nn.gelu(approximate=False)` goes through erfc, which XLA:CPU evaluates about 3x slower
    (10.1 vs 2.6-3.6 ms on [3240, 1536]); both are within 1.1e-6 of a float64 GELU.
    """
    x32 = x.astype(jnp.float32)
    return (x32 * (0.5 + 0.5 * jax.lax.erf(x32 * np.float32(np.sqrt(0.5))))).astype(x.dtype)


def gelu_tanh(x: jax.Array) -> jax.Array:
    return jax.nn.gelu(x, approximate=True)


# One function per name in config.HIDDEN_ACTS (the only list of names), in that order.
ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = dict(
    zip(HIDDEN_ACTS, (gelu_erf, gelu_tanh, gelu_tanh, jax.nn.relu, jax.nn.silu), strict=True)
)
# The gated MLP's activation name per backbone: DINOv2's SwiGLU FFN always gates with SiLU (HF
# `VideomtSwiGLUFFN` / `EomtSwiGLUFFN`, timm `SwiGLU`), whatever `hidden_act` says (which then drives
# the heads only); DINOv3's gated MLP applies `hidden_act` (HF `DINOv3ViTGatedMLP` / `EomtDinov3GatedMLP`).
GATE_ACTS: dict[str, Callable[[VideomtConfig], str]] = {
    "dinov2": lambda cfg: "silu",
    "dinov3": lambda cfg: cfg.hidden_act,
}


def gate_activation(config: VideomtConfig) -> Callable[[jax.Array], jax.Array]:
    """The function `SwiGLU` applies to its gate projection for `config`'s backbone."""
    return ACTIVATIONS[GATE_ACTS[config.backbone](config)]


def compute_dtype(config: VideomtConfig) -> jnp.dtype:
    return jnp.dtype(config.dtype)


def layer_norm(config: VideomtConfig, name: str, eps: float | None = None) -> nn.LayerNorm:
    eps = config.layer_norm_eps if eps is None else eps
    return nn.LayerNorm(epsilon=eps, dtype=jnp.float32, param_dtype=jnp.float32, name=name)


def dense(config: VideomtConfig, features: int, name: str, use_bias: bool = True) -> nn.Dense:
    return nn.Dense(features, use_bias=use_bias, dtype=compute_dtype(config), param_dtype=jnp.float32, name=name)


def resolve_attention_impl(config: VideomtConfig) -> str:
    """`auto` picks cuDNN flash attention on GPU for 16-bit compute, grouped einsum on CPU, einsum elsewhere."""
    if config.attention_impl != "auto":
        return config.attention_impl
    backend = jax.default_backend()
    if backend == "gpu" and config.dtype in ("bfloat16", "float16"):
        return "cudnn"
    return "einsum_map" if backend == "cpu" else "einsum"


def _einsum_attention(q: jax.Array, k: jax.Array, v: jax.Array, scale: float) -> jax.Array:
    # q, k, v: [B, H, N, E]; scores, softmax statistics and the normalisation in float32.
    # The softmax is normalised after the PV product: N*E divisions instead of N*N.
    scores = jnp.einsum("bhqe,bhke->bhqk", q * jnp.asarray(scale, q.dtype), k, preferred_element_type=jnp.float32)
    weights = jnp.exp(scores - scores.max(axis=-1, keepdims=True))  # [B, H, N, N], unnormalised
    out = jnp.einsum("bhqk,bhke->bhqe", weights.astype(v.dtype), v, preferred_element_type=jnp.float32)
    return (out / weights.sum(axis=-1, keepdims=True)).astype(v.dtype)  # [B, H, N, E]


# einsum_map: the batch goes through attention in groups whose float32 scores take at most this
# many bytes (the L2 cache of the 2-core CPU it was tuned on); XLA:CPU runs a whole
# [8, 6, 405, 405] batch of scores about 1.5x slower than one frame at a time.
SCORES_BYTES_PER_GROUP = 4 * 2**20


def _einsum_attention_grouped(q: jax.Array, k: jax.Array, v: jax.Array, scale: float) -> jax.Array:
    # q, k, v: [B, H, N, E] -> [B, H, N, E], computed G items at a time (G divides B).
    b, h, n, _ = q.shape
    fits = max(1, SCORES_BYTES_PER_GROUP // (h * n * n * 4))
    group = max(g for g in range(1, min(b, fits) + 1) if b % g == 0)
    if group == b:
        return _einsum_attention(q, k, v, scale)
    grouped = tuple(t.reshape(b // group, group, *t.shape[1:]) for t in (q, k, v))  # [B/G, G, H, N, E]
    out = jax.lax.map(lambda g: _einsum_attention(g[0], g[1], g[2], scale), grouped)
    return out.reshape(q.shape)


EINSUM_ATTENTION = {"einsum": _einsum_attention, "einsum_map": _einsum_attention_grouped}
# The fused kernels: attention_impl name -> `jax.nn.dot_product_attention`'s `implementation`.
FUSED_ATTENTION: dict[str, Literal["xla", "cudnn"]] = {"xla": "xla", "cudnn": "cudnn"}


def _einsum_attention_dropout(
    q: jax.Array, k: jax.Array, v: jax.Array, scale: float, rate: float, key: jax.Array
) -> jax.Array:
    # q, k, v: [B, H, N, E]. As HF: softmax, then dropout on the attention probabilities
    # (kept ones scaled by 1 / (1 - rate)), then the PV product. Training only.
    scores = jnp.einsum("bhqe,bhke->bhqk", q * jnp.asarray(scale, q.dtype), k, preferred_element_type=jnp.float32)
    probs = jax.nn.softmax(scores, axis=-1)  # [B, H, N, N] float32
    keep = jax.random.bernoulli(key, 1.0 - rate, probs.shape)
    probs = jnp.where(keep, probs / (1.0 - rate), 0.0)
    out = jnp.einsum("bhqk,bhke->bhqe", probs.astype(v.dtype), v, preferred_element_type=jnp.float32)
    return out.astype(v.dtype)


class Attention(nn.Module):
    """Multi-head self-attention with one fused q|k|v projection.

    With `deterministic=False` and `config.attention_dropout > 0` the attention probabilities are
    dropped out (needs a "dropout" rng); every kernel then takes the einsum path, since the
    fused kernels (xla, cudnn) have no dropout.
    DINOv3 (`rope` given): queries and keys of the trailing patch tokens are rotated first.
    EoMT (`mask` [B, N, N], True = may attend): masked softmax attention (einsum).
    """

    config: VideomtConfig

    @nn.compact
    def __call__(
        self, x: jax.Array, deterministic: bool = True, rope: Rope | None = None, mask: jax.Array | None = None
    ) -> jax.Array:
        cfg = self.config
        b, n, d = x.shape
        heads, head_dim = cfg.num_attention_heads, cfg.head_dim
        project = dense(cfg, 3 * d, "qkv") if cfg.key_bias else QkvNoKeyBias(cfg, name="qkv")
        qkv = project(x).reshape(b, n, 3, heads, head_dim)  # [B, N, 3, H, E]
        if rope is not None:
            q, k = apply_rope(qkv[:, :, 0], qkv[:, :, 1], rope)  # each [B, N, H, E]
            qkv = jnp.stack([q, k, qkv[:, :, 2]], axis=2)
        impl = resolve_attention_impl(cfg)
        scale = head_dim**-0.5
        dropout = not deterministic and cfg.attention_dropout > 0.0
        if mask is not None:
            q, k, v = jnp.moveaxis(qkv, (2, 3), (0, 2))  # each [B, H, N, E]
            out = jnp.moveaxis(masked_attention(q, k, v, scale, mask), 1, 2)  # [B, N, H, E]
        elif dropout or impl in EINSUM_ATTENTION:
            q, k, v = jnp.moveaxis(qkv, (2, 3), (0, 2))  # each [B, H, N, E]
            if dropout:
                out = _einsum_attention_dropout(q, k, v, scale, cfg.attention_dropout, self.make_rng("dropout"))
            else:
                out = EINSUM_ATTENTION[impl](q, k, v, scale)
            out = jnp.moveaxis(out, 1, 2)  # [B, N, H, E]
        else:
            q, k, v = (qkv[:, :, i] for i in range(3))  # each [B, N, H, E]
            out = jax.nn.dot_product_attention(q, k, v, scale=scale, implementation=FUSED_ATTENTION[impl])
        return dense(cfg, d, "out_proj")(out.reshape(b, n, d))


class LayerScale(nn.Module):
    config: VideomtConfig

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        init = nn.initializers.constant(self.config.layerscale_value)
        gamma = self.param("lambda1", init, (self.config.hidden_size,), jnp.float32)
        return x * gamma.astype(x.dtype)


class Mlp(nn.Module):
    config: VideomtConfig

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        cfg = self.config
        x = dense(cfg, cfg.mlp_hidden_size, "fc1")(x)
        x = ACTIVATIONS[cfg.hidden_act](x)
        return dense(cfg, cfg.hidden_size, "fc2")(x)


class SwiGLU(nn.Module):
    config: VideomtConfig

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        cfg = self.config
        gate = gate_activation(cfg)(dense(cfg, cfg.mlp_hidden_size, "gate_proj")(x))
        return dense(cfg, cfg.hidden_size, "down_proj")(gate * dense(cfg, cfg.mlp_hidden_size, "up_proj")(x))


class DropPath(nn.Module):
    """Stochastic depth: drops the whole residual branch per sample in training."""

    rate: float

    @nn.compact
    def __call__(self, x: jax.Array, deterministic: bool) -> jax.Array:
        if deterministic or self.rate == 0.0:
            return x
        keep = 1.0 - self.rate
        mask = jax.random.bernoulli(self.make_rng("dropout"), keep, (x.shape[0],) + (1,) * (x.ndim - 1))
        return jnp.where(mask, x / keep, jnp.zeros_like(x))


class Block(nn.Module):
    """LayerNorm -> attention -> LayerScale -> residual; LayerNorm -> MLP -> LayerScale -> residual."""

    config: VideomtConfig

    @nn.compact
    def __call__(
        self, x: jax.Array, deterministic: bool = True, rope: Rope | None = None, mask: jax.Array | None = None
    ) -> jax.Array:
        cfg = self.config
        cdt = compute_dtype(cfg)
        drop = DropPath(cfg.drop_path_rate, name="drop_path")
        y = layer_norm(cfg, "norm1")(x).astype(cdt)
        y = LayerScale(cfg, name="layer_scale1")(Attention(cfg, name="attention")(y, deterministic, rope, mask))
        x = x + drop(y, deterministic).astype(x.dtype)
        y = layer_norm(cfg, "norm2")(x).astype(cdt)
        mlp = SwiGLU(cfg, name="mlp") if cfg.use_swiglu_ffn else Mlp(cfg, name="mlp")
        y = LayerScale(cfg, name="layer_scale2")(mlp(y))
        return x + drop(y, deterministic).astype(x.dtype)


class _ScanBlock(nn.Module):
    """`Block` in the (carry, x) -> (carry, y) form `nn.scan` wants; y = the block's output."""

    config: VideomtConfig
    deterministic: bool = True

    @nn.compact
    def __call__(self, x: jax.Array, rope: Rope | None, mask: jax.Array | None) -> tuple[jax.Array, jax.Array]:
        y = Block(self.config, name="block")(x, self.deterministic, rope, mask)
        return y, y


# Rematerialisation in training (`TrainConfig.remat`, a module attribute of the model) -> jax.checkpoint
# policy: none | full (keep only block inputs) | dots (keep matmul outputs) | dots_no_batch (keep
# matmuls without batch dimensions: the weight products, not attention's). None: no rematerialisation.
REMAT_POLICIES: dict[str, Any] = {
    "none": None,
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots": jax.checkpoint_policies.dots_saveable,
    "dots_no_batch": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


class BlockStack(nn.Module):
    """`length` blocks with parameters stacked on a leading [L] axis.

    `config.scan_layers` picks a rolled loop (fast compile) or a fully unrolled one (fastest run);
    the parameters and the numbers are the same either way. `remat` wraps each block in
    `nn.remat` with a named policy (`REMAT_POLICIES`): the backward pass recomputes what the policy
    does not keep, same numbers, less memory; remat implies the rolled loop. Returns the last output and the
    output of every block  # [B, N, D], [L, B, N, D]
    `rope`: DINOv3 rotary tables, the same for every layer (None for DINOv2).
    `mask`: attention mask for every layer ([B, N, N] or [B, 1, N], True = may attend), or None.
    """

    config: VideomtConfig
    length: int
    deterministic: bool = True
    remat: str = "none"  # a REMAT_POLICIES name

    @nn.compact
    def __call__(
        self, x: jax.Array, rope: Rope | None = None, mask: jax.Array | None = None
    ) -> tuple[jax.Array, jax.Array]:
        policy = REMAT_POLICIES[self.remat]
        block = _ScanBlock if policy is None else nn.remat(_ScanBlock, policy=policy, prevent_cse=False)
        stack = nn.scan(
            block,
            variable_axes={"params": 0},
            split_rngs={"params": True, "dropout": True},
            in_axes=nn.broadcast,
            length=self.length,
            # remat runs as a rolled loop: in unrolled code XLA merges the recomputation back into
            # the forward pass and nothing is saved (measured: 620 vs 620 MiB unrolled, 650 vs 112 rolled)
            unroll=1 if self.config.scan_layers or policy is not None else self.length,
        )
        return stack(self.config, self.deterministic, name="layers")(x, rope, mask)
