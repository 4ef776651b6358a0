"""Fixed-shape results of post-processing (flax.struct pytrees: they pass through jit, vmap, device_put).

Segments live in slots: slot s of a frame (or video) holds segment id s, so the segments of a
frame are its first `valid.sum()` slots, in id order. There are Q slots (Q = number of queries),
the most segments a frame can have.

Letters: B batch, T frames, Q queries (= slots), H/W target size, N kept instances (top_k).
"""

from __future__ import annotations

import jax
from flax import struct


@struct.dataclass
class SegmentResult:
    """Per-frame instance or panoptic segmentation (Hugging Face semantics).

    segmentation: segment id per pixel, -1 where no segment          # [B, T, H, W] int32
    label_id:     class of segment s                                 # [B, T, Q] int32 (-1 in empty slots)
    score:        score of segment s (unrounded float32)             # [B, T, Q] float32 (0 in empty slots)
    query:        query that opened segment s (= track id)           # [B, T, Q] int32 (-1 in empty slots)
    valid:        slot s holds a segment                             # [B, T, Q] bool
    fused:        segment s's class is in label_ids_to_fuse, so
                  later queries of that class joined it (panoptic)   # [B, T, Q] bool
    query_segment: segment id query q paints into, -1 if none        # [B, T, Q] int32
    """

    segmentation: jax.Array
    label_id: jax.Array
    score: jax.Array
    query: jax.Array
    valid: jax.Array
    fused: jax.Array
    query_segment: jax.Array

    @property
    def num_segments(self) -> jax.Array:  # [B, T] int32
        return self.valid.sum(axis=-1)


@struct.dataclass
class VideoInstanceResult:
    """Video instance segmentation (the authors' `inference_video_vis`): top-k (query, class) pairs.

    masks:    mask of instance n in every frame (mask logit > 0)       # [B, N, T, H, W] bool
    label_id: class of instance n                                      # [B, N] int32
    score:    class probability of instance n (no mask factor)         # [B, N] float32, descending
    query:    query index of instance n = its track id                 # [B, N] int32
    """

    masks: jax.Array
    label_id: jax.Array
    score: jax.Array
    query: jax.Array


@struct.dataclass
class VideoPanopticResult:
    """Video panoptic segmentation (the authors' `inference_video_vps`); ids are stable over frames.

    segmentation: segment id per pixel and frame, -1 = void            # [B, T, H, W] int32
    label_id:     class of segment s                                   # [B, Q] int32 (-1 in empty slots)
    score:        video-level class probability of segment s           # [B, Q] float32
    query:        query that opened segment s (= track id)             # [B, Q] int32 (-1 in empty slots)
    valid:        slot s holds a segment                               # [B, Q] bool
    isthing:      segment s is a thing (not in stuff_label_ids)        # [B, Q] bool
    query_segment: segment id query q paints into, -1 if none          # [B, Q] int32
    """

    segmentation: jax.Array
    label_id: jax.Array
    score: jax.Array
    query: jax.Array
    valid: jax.Array
    isthing: jax.Array
    query_segment: jax.Array

    @property
    def num_segments(self) -> jax.Array:  # [B] int32
        return self.valid.sum(axis=-1)
