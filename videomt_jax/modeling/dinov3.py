"""DINOv3 pieces of the ViT block: rotary position embeddings and the q|k|v bias without a key part.

DINOv3 (HF `DINOv3ViTModel`, used by the authors for their DINOv3 VidEoMT) has no absolute position
embeddings. Each attention layer rotates the queries and keys of the *patch tokens* by angles that
depend on the patch centre; every token before the patches (object queries, CLS, registers) is left
as it is. The centres are normalised to [-1, 1] over the input's own grid, so any input size works
with no resampling. Per head of E dims, E/4 frequencies `theta ** -(4i/E)` are used for y and E/4
for x; the angle list [y-angles, x-angles] (E/2) is tiled twice to E, and the rotation pairs dim j
with dim j + E/2 (`rotate_half`).

Letters: B batch (frames), N tokens, g_h/g_w grid, G = g_h*g_w patch tokens, H heads, E head dim, D hidden.
"""

from __future__ import annotations

import math
from functools import lru_cache

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from videomt_jax.config import ROPE_PARTS, VideomtConfig

Rope = tuple[jax.Array, jax.Array]  # (cos, sin), each [G, E] (or [B, G, E]: one grid per example)


@lru_cache(maxsize=64)
def _rope_tables(grid_hw: tuple[int, int], head_dim: int, theta: float) -> tuple[np.ndarray, np.ndarray]:
    """cos, sin [g_h*g_w, E] (float32), computed in float64 on the host: they depend on static sizes only."""
    inv_freq = 1.0 / theta ** (np.arange(0, head_dim, ROPE_PARTS, dtype=np.float64) / head_dim)  # [E/4]
    gh, gw = grid_hw
    centres = [(np.arange(n, dtype=np.float64) + 0.5) / n * 2.0 - 1.0 for n in (gh, gw)]  # each in [-1, 1]
    yy, xx = np.meshgrid(*centres, indexing="ij")  # [g_h, g_w]
    coords = np.stack([yy.ravel(), xx.ravel()], axis=-1)  # [G, 2] as (y, x), row-major patches
    angles = 2.0 * math.pi * coords[:, :, None] * inv_freq[None, None, :]  # [G, 2, E/4]
    angles = np.tile(angles.reshape(len(coords), -1), (1, 2))  # [G, E]
    return np.cos(angles).astype(np.float32), np.sin(angles).astype(np.float32)


def rope_tables(config: VideomtConfig, grid_hw: tuple[int, int]) -> Rope | None:
    """The rotary tables for an input grid; None for a backbone without rotary embeddings."""
    if config.backbone != "dinov3":
        return None
    cos, sin = _rope_tables(tuple(grid_hw), config.head_dim, float(config.rope_theta))
    return jnp.asarray(cos), jnp.asarray(sin)


def rotate_half(x: jax.Array) -> jax.Array:
    """[..., E] -> [..., E]: (x1, x2) -> (-x2, x1) on the two halves of the last axis."""
    x1, x2 = jnp.split(x, 2, axis=-1)
    return jnp.concatenate([-x2, x1], axis=-1)


def apply_rope(q: jax.Array, k: jax.Array, rope: Rope) -> tuple[jax.Array, jax.Array]:
    """Rotate the last G tokens of q, k [B, N, H, E]; the N - G tokens before them stay unchanged.

    The tables are padded with cos = 1, sin = 0 for the leading tokens, which leaves them exact.
    """
    n, g = q.shape[1], rope[0].shape[-2]
    if g > n:
        raise ValueError(f"rotary tables cover {g} patch tokens but the sequence has only {n} tokens")

    def lead(table: jax.Array, value: float) -> jax.Array:  # [..., G, E] -> [..., N, 1, E]
        fill = jnp.full((*table.shape[:-2], n - g, table.shape[-1]), value, table.dtype)
        return jnp.concatenate([fill, table], axis=-2)[..., None, :].astype(q.dtype)

    cos, sin = lead(rope[0], 1.0), lead(rope[1], 0.0)
    return q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin


class QkvNoKeyBias(nn.Module):
    """The fused q|k|v projection (kernel [D, 3D], bias [3D]) of a layer without a key bias.

    The bias keeps its [3D] shape so that every backbone has the same parameter tree; its middle
    (key) third is multiplied by zero, so it never acts and receives no gradient. Importers fill it
    with zeros; exporters leave it out.
    """

    config: VideomtConfig

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        d = self.config.hidden_size
        kernel = self.param("kernel", nn.initializers.lecun_normal(), (d, 3 * d), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, (3 * d,), jnp.float32)
        keep = np.ones(3 * d, np.float32)
        keep[d : 2 * d] = 0.0
        dtype = jnp.dtype(self.config.dtype)
        y = jnp.dot(x.astype(dtype), kernel.astype(dtype))  # [B, N, 3D]
        return y + (bias * keep).astype(dtype)
