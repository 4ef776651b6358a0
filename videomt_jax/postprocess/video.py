"""Video-level results: one answer per video, the query index is the track id.

Follows the authors' `videomt_online` inference (tue-mps/videomt, `inference_video_{vis,vps,vss}`):
- class logits are averaged over the frames per query (the mean of logits, then one softmax);
- mask logits go through the authors' two resizes: to the (padded) model input
  (mask grid x mask_stride, the stride the output carries: `VideomtOutput.mask_stride`), crop to
  `valid_size` (the un-padded input, default: all of it), then to `target_size`. Panoptic and
  semantic apply the sigmoid between the two resizes, as they do.

video_instance: softmax without the no-object column, top-k over (query, class) pairs, score = that
class probability (no mask factor), mask = logit > 0 in every frame. We return the k pairs sorted
by score (the authors' `topk(sorted=False)` leaves the order unspecified; ties: lower query first).
A query can be taken twice, with two classes (the YouTube-VIS protocol scores both); with
`unique_queries=True` each query competes only with its best class (first on ties), so the
query index is a unique track id (what `videomt-jax segment --video-level` writes).

video_panoptic: score, label = max / argmax of the softmax over all K+1 columns; queries with a real
class and score > threshold compete per pixel and frame by score x sigmoid mask; a query keeps its
segment when it wins pixels somewhere in the video, its own mask (sigmoid >= 0.5) is non-empty, they
overlap, and won / own area >= overlap_threshold (areas summed over the whole video; float32
quotient). Classes in `stuff_label_ids` share one segment per video (the authors' "not isthing";
their thing classes are the first `num_thing` ids, i.e. stuff_label_ids = range(num_thing, K)).
Ids: ours count from 0 with -1 = void; the authors' count from 1 with 0 = void.

video_semantic: einsum of class probabilities (no-object dropped) and sigmoid masks over queries,
argmax over classes. We apply the einsum before the second (linear) resize instead of after it:
the same numbers up to float rounding, with K instead of Q channels at the target size.

The authors' older `videomt_segmenter` re-orders queries between frames by Hungarian matching of
query embeddings; `videomt_online` (VidEoMT) keeps the query index as identity, and so do we.

Letters: B batch, T frames, F = B*T, Q queries, K classes (+1 no object), N = top_k,
h/w mask grid, H/W target size.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp

from videomt_jax.ops.resize import resize_bilinear, resize_to_input
from videomt_jax.postprocess import common
from videomt_jax.postprocess.frame import HIGHEST, panoptic_counts
from videomt_jax.postprocess.results import VideoInstanceResult, VideoPanopticResult

TOP_K = 20  # authors' MODEL.BACKBONE.TEST.MAX_NUM
OBJECT_MASK_THRESHOLD = 0.8  # authors' VIPSeg config (TEST.OBJECT_MASK_THRESHOLD)
OVERLAP_THRESHOLD = 0.8  # authors' VIPSeg config (TEST.OVERLAP_THRESHOLD)
MASK_THRESHOLD = 0.5  # fixed in the authors' code


def _video_probs(class_logits: jax.Array) -> jax.Array:
    """Softmax of the frame-averaged class logits: [B, T, Q, K+1] -> [B, Q, K+1]."""
    return jax.nn.softmax(class_logits.mean(axis=1), axis=-1)


def _per_frame(x: jax.Array, frames: int) -> jax.Array:
    """Per-video values [B, ...] -> one copy per frame [B*T, ...] (batch-major)."""
    return jnp.repeat(x, frames, axis=0)


# ------------------------------------------------------------------------------------------ instance
@partial(jax.jit, static_argnames=("target", "valid", "stride", "top_k", "unique", "frames_per_step"))
def _video_instance(class_logits, mask_logits, *, target, valid, stride, top_k, unique, frames_per_step):
    b, t, q, k1 = class_logits.shape
    num_labels = k1 - 1
    scores = _video_probs(class_logits)[..., :-1]  # [B, Q, K]
    if unique:  # each query keeps only its best class; the others can never be picked
        best = jax.nn.one_hot(jnp.argmax(scores, axis=-1), num_labels, dtype=bool)  # [B, Q, K]
        scores = jnp.where(best, scores, -jnp.inf)
    scores = scores.reshape(b, q * num_labels)  # [B, Q*K]
    top_score, top_index = jax.lax.top_k(scores, top_k)  # [B, N]
    query = (top_index // num_labels).astype(jnp.int32)
    label = (top_index % num_labels).astype(jnp.int32)
    chosen = jnp.take_along_axis(mask_logits, query[:, None, :, None, None], axis=2)  # [B, T, N, h, w]

    def frame(logits):  # [h, w, N] -> [H, W, N]
        return resize_bilinear(resize_to_input(logits, valid, stride), target) > 0

    masks = common.map_frames(frame, common.frames_last(chosen), frames_per_step)  # [F, H, W, N]
    masks = masks.reshape((b, t) + target + (top_k,)).transpose(0, 4, 1, 2, 3)  # [B, N, T, H, W]
    return VideoInstanceResult(masks=masks, label_id=label, score=top_score, query=query)


def video_instance(
    out: Any,
    target_size: Sequence[int],
    top_k: int = TOP_K,
    *,
    unique_queries: bool = False,
    valid_size: Sequence[int] | None = None,
    mask_stride: int | None = None,
    frames_per_step: int = common.DEFAULT_FRAMES_PER_STEP,
) -> VideoInstanceResult:
    """Video instance segmentation: the top_k (query, class) pairs of each video with their masks.

    unique_queries: take each query at most once, with its best class (then top_k <= Q)."""
    x = common.prepare(out, target_size, valid_size, mask_stride, frames_per_step)
    pairs = x.class_logits.shape[2] * (1 if unique_queries else x.class_logits.shape[3] - 1)
    if not isinstance(top_k, int) or not 1 <= top_k <= pairs:
        what = "Q" if unique_queries else "Q*K"
        raise ValueError(f"top_k must be an int in [1, {what} = {pairs}], got {top_k!r}")
    return _video_instance(x.class_logits, x.mask_logits, top_k=top_k, unique=bool(unique_queries), **x.static)


# ------------------------------------------------------------------------------------------ panoptic
@partial(jax.jit, static_argnames=("target", "valid", "stride", "stuff", "frames_per_step"))
def _video_panoptic(class_logits, mask_logits, threshold, overlap, *, target, valid, stride, stuff, frames_per_step):
    b, t, q, k1 = class_logits.shape
    probs = _video_probs(class_logits)  # [B, Q, K+1]
    score, labels = probs.max(axis=-1), jnp.argmax(probs, axis=-1).astype(jnp.int32)  # [B, Q]
    keep = (labels != k1 - 1) & (score > threshold)

    def frame(x):
        logits, frame_score, frame_keep = x  # [h, w, Q], [Q], [Q]
        masks = resize_bilinear(jax.nn.sigmoid(resize_to_input(logits, valid, stride)), target)  # [H, W, Q]
        return panoptic_counts(frame_score, frame_keep, masks, jnp.float32(MASK_THRESHOLD))

    frames = (common.frames_last(mask_logits), _per_frame(score, t), _per_frame(keep, t))
    winner, own, won, original, final = common.map_frames(frame, frames, frames_per_step)
    per_video = lambda x: x.reshape((b, t) + x.shape[1:])
    won, original, final = (per_video(x).sum(axis=1) for x in (won, original, final))  # [B, Q]
    ratio = won.astype(jnp.float32) / jnp.maximum(original, 1).astype(jnp.float32)
    segment_ok = keep & (won > 0) & (original > 0) & (final > 0) & (ratio >= overlap)  # [B, Q]
    isthing = ~jnp.isin(labels, jnp.asarray(stuff, jnp.int32)) if stuff else jnp.ones_like(keep)
    new, segment = jax.vmap(lambda ok, lab, merge: common.number_segments(ok, common.first_in_group(ok, lab, merge)))(
        segment_ok, labels, ~isthing
    )  # [B, Q] each
    winner, own = per_video(winner), per_video(own)  # [B, T, H, W]
    segmentation = jnp.where(own, jax.vmap(lambda seg, win: seg[win])(segment, winner), -1)  # [B, T, H, W]
    slots = jax.vmap(common.scatter_slots, in_axes=(0, 0, 0, None))
    return VideoPanopticResult(
        segmentation=segmentation,
        label_id=slots(new, segment, labels, -1),
        score=slots(new, segment, score, 0.0),
        query=slots(new, segment, jnp.broadcast_to(jnp.arange(q, dtype=jnp.int32), (b, q)), -1),
        valid=jnp.arange(q)[None, :] < new.sum(axis=1, keepdims=True),
        isthing=slots(new, segment, isthing, False),
        query_segment=segment,
    )


def video_panoptic(
    out: Any,
    target_size: Sequence[int],
    threshold: float = OBJECT_MASK_THRESHOLD,
    overlap_threshold: float = OVERLAP_THRESHOLD,
    stuff_label_ids: Sequence[int] | None = None,
    *,
    valid_size: Sequence[int] | None = None,
    mask_stride: int | None = None,
    frames_per_step: int = common.DEFAULT_FRAMES_PER_STEP,
) -> VideoPanopticResult:
    """Video panoptic segmentation with segment ids stable over the frames of each video.

    stuff_label_ids is static under jit (a new set compiles a new program)."""
    x = common.prepare(out, target_size, valid_size, mask_stride, frames_per_step)
    return _video_panoptic(
        x.class_logits,
        x.mask_logits,
        common.f32(threshold),  # tensor > scalar: float32
        common.f32_ceil(overlap_threshold),  # authors keep unless won / own < threshold
        stuff=common.static_labels(stuff_label_ids, "stuff_label_ids"),
        **x.static,
    )


# ------------------------------------------------------------------------------------------ semantic
@partial(jax.jit, static_argnames=("target", "valid", "stride", "frames_per_step"))
def _video_semantic(class_logits, mask_logits, *, target, valid, stride, frames_per_step):
    b, t = class_logits.shape[:2]
    probs = _video_probs(class_logits)[..., :-1]  # [B, Q, K]

    def frame(x):
        logits, frame_probs = x  # [h, w, Q], [Q, K]
        masks = jax.nn.sigmoid(resize_to_input(logits, valid, stride))  # [h_in, w_in, Q]
        scores = jnp.einsum("qk,hwq->hwk", frame_probs, masks, precision=HIGHEST)  # [h_in, w_in, K]
        return jnp.argmax(resize_bilinear(scores, target), axis=-1).astype(jnp.int32)  # [H, W]

    frames = (common.frames_last(mask_logits), _per_frame(probs, t))
    return common.map_frames(frame, frames, frames_per_step).reshape((b, t) + target)


def video_semantic(
    out: Any,
    target_size: Sequence[int],
    *,
    valid_size: Sequence[int] | None = None,
    mask_stride: int | None = None,
    frames_per_step: int = common.DEFAULT_FRAMES_PER_STEP,
) -> jax.Array:
    """Video semantic segmentation: class id per pixel and frame, [B, T, H, W] int32."""
    x = common.prepare(out, target_size, valid_size, mask_stride, frames_per_step)
    return _video_semantic(x.class_logits, x.mask_logits, **x.static)
