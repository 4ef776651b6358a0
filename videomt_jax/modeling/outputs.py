"""Model outputs and streaming state: plain pytrees (flax.struct dataclasses).

Letters: B batch, T frames, Q queries, K+1 classes (last = no object), h/w mask grid,
N tokens per frame (queries + prefix + patches), D hidden, A auxiliary predictions.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import struct


@struct.dataclass
class StreamState:
    """What one call hands the next when a video is fed in chunks.

    queries: the query tokens that left the last encoder layer on the latest frame  # [B, Q, D]
    started: whether a frame was seen already (frame 0 uses the learned queries alone)  # [B]
    """

    queries: jax.Array
    started: jax.Array


@struct.dataclass
class VideomtOutput:
    class_logits: jax.Array  # [B, T, Q, K+1]
    mask_logits: jax.Array  # [B, T, Q, h, w]
    last_hidden_state: jax.Array | None = None  # [B, T, N, D] after the final LayerNorm
    # Deep supervision (training): predictions made from the tokens entering each query block,
    # query block 0 first; present only when asked for.
    aux_class_logits: jax.Array | None = None  # [A, B, T, Q, K+1]
    aux_mask_logits: jax.Array | None = None  # [A, B, T, Q, h, w]
    # Hidden states after the embeddings and after every encoder layer (layer-by-layer checks).
    hidden_states: tuple | None = None  # L+1 entries; [B*T, N_l, D] (frames batch-major)
    state: StreamState | None = None  # streaming state after the last frame
    # Input pixels per mask-logit pixel, set by the model (static: part of the tree structure, not a
    # leaf). Post-processing reads it, so mask geometry follows the model that made the logits;
    # None for an output built by hand (post-processing then assumes the default model's stride).
    mask_stride: int | None = struct.field(pytree_node=False, default=None)


def check_logits(class_logits: Any, mask_logits: Any, num_labels: int | None = None) -> None:
    """Shape and dtype checks shared by post-processing and the loss (they run on shapes only).

    class_logits [B, T, Q, K+1] and mask_logits [B, T, Q, h, w], floating point, agreeing on
    (B, T, Q), with at least one class plus no-object; with `num_labels`, K must equal it.
    """
    class_shape, mask_shape = tuple(class_logits.shape), tuple(mask_logits.shape)
    if len(class_shape) != 4 or len(mask_shape) != 5:
        raise ValueError(
            "expected class_logits [B, T, Q, K+1] and mask_logits [B, T, Q, h, w], got shapes "
            f"{class_shape} and {mask_shape}"
        )
    if class_shape[:3] != mask_shape[:3]:
        raise ValueError(f"class_logits {class_shape} and mask_logits {mask_shape} disagree on (B, T, Q)")
    for name, array in (("class_logits", class_logits), ("mask_logits", mask_logits)):
        if not jnp.issubdtype(array.dtype, jnp.floating):
            raise TypeError(f"{name} must be floating point, got dtype {array.dtype}")
    if class_shape[-1] < 2:
        raise ValueError(f"class_logits needs at least one class plus no-object, got {class_shape[-1]} columns")
    if num_labels is not None and class_shape[-1] != num_labels + 1:
        raise ValueError(f"class_logits has {class_shape[-1]} classes, expected num_labels + 1 = {num_labels + 1}")
