"""Model outputs and streaming state: plain pytrees (flax.struct dataclasses).

Letters: B batch, T frames, Q queries, K+1 classes (last = no object), h/w mask grid,
N tokens per frame (queries + prefix + patches), D hidden, A auxiliary predictions.
"""

from __future__ import annotations

from typing import Optional

import jax
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
    last_hidden_state: Optional[jax.Array] = None  # [B, T, N, D] after the final LayerNorm
    # Deep supervision (training): predictions made from the tokens entering each query block,
    # query block 0 first; present only when asked for.
    aux_class_logits: Optional[jax.Array] = None  # [A, B, T, Q, K+1]
    aux_mask_logits: Optional[jax.Array] = None  # [A, B, T, Q, h, w]
    # Hidden states after the embeddings and after every encoder layer (layer-by-layer checks).
    hidden_states: Optional[tuple] = None  # L+1 entries; [B*T, N_l, D] (frames batch-major)
    state: Optional[StreamState] = None  # streaming state after the last frame
