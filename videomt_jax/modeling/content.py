"""Content geometry: a clip whose pixels fill only the top-left part of a larger (bucket) canvas.

Training pads every clip only to a multiple of 32 of its own size, as the authors do (one clip per
GPU), but a jitted step needs one static shape for all its clips. So a batch sits on a canvas from a
small set of shape buckets and each clip says how much of it is its own: `content_hw` [B, 2], the
height and width in pixels of the clip's own padded frame (a multiple of the patch size). With it the
model computes, for every token of that region, what it computes on the clip alone at its own size:
- the position embeddings are resampled to the clip's own grid (`resample_pos_embed_traced`; DINOv3's
  rotary tables use its own grid, `rope_tables_traced`), as at test time;
- no token attends to a token outside the region (`key_mask`);
- the heads' 3x3 convolutions see zeros beyond it, as at its border (`region_mask`).
Outputs outside the region are not meaningful: the loss draws its points inside it only.

Letters: B batch (frames), g/G canvas grid (patch tokens / mask pixels), c content grid, N tokens,
D hidden, E head dim, S source grid of the position embeddings.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from videomt_jax.config import ROPE_PARTS, VideomtConfig
from videomt_jax.ops.resize import antialias_matrix_traced


def content_grid(content_hw: jax.Array, patch_hw: tuple[int, int]) -> jax.Array:
    """[B, 2] pixels -> [B, 2] int32 patches of each clip's own region."""
    return (jnp.asarray(content_hw, jnp.int32) // jnp.asarray(patch_hw, jnp.int32)).astype(jnp.int32)


def region_mask(grid: jax.Array, shape_hw: tuple[int, int], scale: int = 1) -> jax.Array:
    """[B, 2] content grid -> [B, h, w] bool: inside the region at `scale` x the patch grid."""
    rows = jnp.arange(shape_hw[0])[None, :, None] < grid[:, 0, None, None] * scale
    cols = jnp.arange(shape_hw[1])[None, None, :] < grid[:, 1, None, None] * scale
    return rows & cols


def key_mask(grid: jax.Array, grid_hw: tuple[int, int], leading: int) -> jax.Array:
    """[B, 2] content grid -> attention mask [B, 1, N] (True = may be attended): the `leading` tokens
    (queries, CLS, registers) and the patch tokens inside the region; the same for every query token."""
    patches = region_mask(grid, grid_hw).reshape(grid.shape[0], -1)  # [B, g_h*g_w]
    return jnp.concatenate([jnp.ones((grid.shape[0], leading), bool), patches], axis=1)[:, None, :]


def resample_pos_embed_traced(
    pos: jax.Array, src_hw: tuple[int, int], grid: jax.Array, canvas_hw: tuple[int, int]
) -> jax.Array:
    """pos [S_h*S_w, D] resampled to each clip's own grid (timm's antialiased bicubic), placed top-left
    on the canvas grid (zeros outside). grid [B, 2] -> [B, g_h*g_w, D] float32."""
    d = pos.shape[-1]
    source = jnp.asarray(pos, jnp.float32).reshape(*src_hw, d)  # [S_h, S_w, D]

    def one(g: jax.Array) -> jax.Array:
        rows = antialias_matrix_traced(src_hw[0], g[0], canvas_hw[0])  # [g_h, S_h]
        cols = antialias_matrix_traced(src_hw[1], g[1], canvas_hw[1])  # [g_w, S_w]
        out = jnp.einsum("ys,xt,std->yxd", rows, cols, source, precision=jax.lax.Precision.HIGHEST)
        return out.reshape(-1, d)

    return jax.vmap(one)(grid)


def rope_tables_traced(
    config: VideomtConfig, grid: jax.Array, canvas_hw: tuple[int, int], scale: jax.Array | None = None
) -> tuple[jax.Array, jax.Array]:
    """DINOv3 rotary tables of each clip's own grid on the canvas: (cos, sin) [B, g_h*g_w, E] float32.

    Patch centres are normalised over the clip's own grid (as `dinov3.rope_tables` over the input's);
    positions outside the region get angles too, unused since no token attends to them. `scale` (a
    scalar, training): the coordinates are multiplied by it (`rescale_factor`)."""
    e = config.head_dim
    inv_freq = 1.0 / config.rope_theta ** (jnp.arange(0, e, ROPE_PARTS, dtype=jnp.float32) / e)  # [E/4]
    n = grid.astype(jnp.float32)  # [B, 2]
    ys = (jnp.arange(canvas_hw[0], dtype=jnp.float32)[None] + 0.5) / n[:, :1] * 2.0 - 1.0  # [B, g_h]
    xs = (jnp.arange(canvas_hw[1], dtype=jnp.float32)[None] + 0.5) / n[:, 1:] * 2.0 - 1.0  # [B, g_w]
    yy = jnp.broadcast_to(ys[:, :, None], (n.shape[0], *canvas_hw)).reshape(n.shape[0], -1)  # [B, G]
    xx = jnp.broadcast_to(xs[:, None, :], (n.shape[0], *canvas_hw)).reshape(n.shape[0], -1)
    coords = jnp.stack([yy, xx], axis=-1)  # [B, G, 2]
    if scale is not None:
        coords = coords * scale
    angles = 2.0 * math.pi * coords[..., None] * inv_freq  # [B, G, 2, E/4]
    angles = jnp.tile(angles.reshape(*coords.shape[:2], -1), (1, 1, 2))  # [B, G, E]
    return jnp.cos(angles), jnp.sin(angles)


def rescale_applies(config: VideomtConfig) -> bool:
    """Whether training rescales the rotary coordinates (DINOv3 with `pos_embed_rescale`)."""
    return config.backbone == "dinov3" and config.pos_embed_rescale is not None


def rescale_factor(config: VideomtConfig, key: jax.Array) -> jax.Array | None:
    """DINOv3's training-time augmentation of its rotary coordinates: one log-uniform factor in
    [1/r, r] (r = `pos_embed_rescale`), as HF's `augment_patches_center_coordinates`; None when off."""
    if not rescale_applies(config) or config.pos_embed_rescale is None:
        return None
    bound = math.log(config.pos_embed_rescale)
    return jnp.exp(jax.random.uniform(key, (), jnp.float32, -bound, bound))


def trains_with_randomness(config: VideomtConfig) -> bool:
    """Whether training draws random numbers inside the model (dropout, drop-path, DINOv3's rotary
    rescale), i.e. runs it with `deterministic=False` and a "dropout" rng."""
    rates = (config.drop_path_rate, config.hidden_dropout_prob, config.attention_dropout)
    return any(rate > 0 for rate in rates) or rescale_applies(config)
