"""EoMT's masked attention: object queries see only the patches inside their own predicted mask.

While EoMT trains, each query block i has an annealing probability p_i (`attn_mask_probs`). Before a
block with p_i > 0, HF's `EomtForUniversalSegmentation` (and the authors' EoMT) predicts masks from
the LayerNorm-ed tokens, resizes the mask logits bilinearly (PyTorch, align_corners=False, no
antialias) to the patch grid, and lets query q attend to patch j only where that logit is > 0.
Queries always see the queries and the prefix (CLS, registers); every other token sees everything.
With p_i < 1 each (image, query) pair drops its mask with probability 1 - p_i; HF does that at
inference too, so here it needs an rng (the "attn_mask" stream). Released checkpoints finish
training at p_i = 0: no masking at all.

Letters: B batch (images), Q queries, P prefix tokens, G = g_h*g_w patch tokens, N = Q+P+G tokens,
H heads, E head dim, h/w mask grid.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from videomt_jax.ops.resize import resize_bilinear

ATTN_MASK_RNG = "attn_mask"  # the rng stream for 0 < p < 1


def query_patch_mask(
    mask_logits: jax.Array, grid_hw: tuple[int, int], num_prefix: int, prob: float, key: jax.Array | None
) -> jax.Array:
    """mask_logits [B, Q, h, w] -> boolean attention mask [B, N, N] (True = may attend).

    `prob` is the block's annealing probability (> 0); below 1 a `key` must be given.
    """
    b, q = mask_logits.shape[:2]
    small = resize_bilinear(jnp.moveaxis(mask_logits, (2, 3), (0, 1)), grid_hw)  # [g_h, g_w, B, Q]
    allowed = jnp.moveaxis(small, (0, 1), (2, 3)).reshape(b, q, -1) > 0  # [B, Q, G]
    if prob < 1.0:
        if key is None:
            raise ValueError(
                f"attn_mask_probs {prob} is in (0, 1): masking is random; pass rngs={{'{ATTN_MASK_RNG}': key}}"
            )
        dropped = jax.random.uniform(key, (b, q)) > prob  # [B, Q]: these queries see every patch
        allowed = allowed | dropped[:, :, None]
    n = q + num_prefix + allowed.shape[-1]
    query_rows = jnp.concatenate([jnp.ones((b, q, q + num_prefix), bool), allowed], axis=2)  # [B, Q, N]
    return jnp.concatenate([query_rows, jnp.ones((b, n - q, n), bool)], axis=1)  # [B, N, N]


def masked_attention(q: jax.Array, k: jax.Array, v: jax.Array, scale: float, mask: jax.Array) -> jax.Array:
    """Softmax attention with a boolean mask; q, k, v [B, H, N, E], mask [B, N, N] (or [B, 1, N]: the
    same keys for every query) -> [B, H, N, E].

    Scores and softmax in float32; masked scores get -inf (every row keeps at least itself).
    """
    scores = jnp.einsum("bhqe,bhke->bhqk", q * jnp.asarray(scale, q.dtype), k, preferred_element_type=jnp.float32)
    scores = jnp.where(mask[:, None], scores, -jnp.inf)
    weights = jax.nn.softmax(scores, axis=-1)  # [B, H, N, N]
    out = jnp.einsum("bhqk,bhke->bhqe", weights.astype(v.dtype), v, preferred_element_type=jnp.float32)
    return out.astype(v.dtype)
