"""Per-frame semantic / instance / panoptic segmentation with Hugging Face's exact semantics.

Mirrors `VideomtVideoProcessor.post_process_{semantic,instance,panoptic}_segmentation`, jitted and
with fixed shapes; every frame of every video is handled alike (HF sees the B*T frames as a flat
list, one target size each; here one `target_size` serves the whole batch).

What HF does, and we do:
- mask logits are resized bilinearly (torch `align_corners=False`, see ops/resize.py) to target_size;
- semantic: softmax over classes without the no-object column, einsum with sigmoid masks at mask
  resolution, resize the class scores, argmax;
- instance: score = max class probability x mean sigmoid inside the mask (logit > 0); a query is kept
  when its mask is non-empty and score >= threshold; kept queries paint their masks in query order
  (later ones overwrite), segment ids count kept queries;
- panoptic: queries whose argmax class (over all K+1) is not no-object and whose probability
  > threshold compete per pixel by probability x sigmoid mask; a query becomes a segment when it
  wins pixels, its own mask (sigmoid >= mask_threshold) is non-empty, they overlap, and
  won / own area > overlap_mask_area_threshold; classes in label_ids_to_fuse share one segment.
- HF compares some scores as Python floats (float64); those thresholds are rounded to the float32
  that gives the same answer (common.f32_floor / f32_ceil). Reported scores are float32; `to_hf`
  rounds them to 6 decimals as HF does.

All functions map over the B*T frames with `lax.map`, `frames_per_step` frames at a time (default
1: only one frame's [H, W, Q] resized masks live in memory). Inside, arrays are channels-last.

Our addition: `valid_size=(h_in, w_in)` crops the mask logits to the un-padded part of the model
input (ceil(h_in / mask_stride) x ceil(w_in / mask_stride) cells) before resizing. Default: no crop.
The mask stride is the one the output carries (`VideomtOutput.mask_stride`, set by the model); pass
`mask_stride` only for outputs built by hand (default: the default model's, 4).

Letters: B batch, T frames, F = B*T, Q queries, K classes (+1 no object), h/w mask grid, H/W target.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp

from videomt_jax.ops.resize import Size, crop_grid
from videomt_jax.postprocess import common
from videomt_jax.postprocess.results import SegmentResult

HIGHEST = jax.lax.Precision.HIGHEST
INSTANCE_THRESHOLD = 0.5
PANOPTIC_THRESHOLD = 0.8
MASK_THRESHOLD = 0.5
OVERLAP_MASK_AREA_THRESHOLD = 0.8
MASK_SCORE_EPS = 1e-6  # HF: mask_scores = sum(sigmoid * mask) / (mask area + 1e-6)


# ------------------------------------------------------------------------------------------ shell
@partial(jax.jit, static_argnums=0, static_argnames=("target", "valid", "stride", "frames_per_step", "options"))
def _frames_shell(frame_fn, class_logits, mask_logits, dynamic, *, target, valid, stride, frames_per_step, options):
    """`frame_fn(class_logits [Q, K+1], mask_logits [h, w, Q], *dynamic, target=, valid=, stride=,
    **options)` on every frame, `frames_per_step` at a time; results reshaped to [B, T, ...]."""
    b, t = class_logits.shape[:2]
    fn = partial(frame_fn, target=target, valid=valid, stride=stride, **dict(options))
    frames = (common.flatten_frames(class_logits), common.frames_last(mask_logits))
    res = common.map_frames(lambda x: fn(*x, *dynamic), frames, frames_per_step)
    return jax.tree_util.tree_map(lambda x: x.reshape((b, t) + x.shape[1:]), res)


def _rows(x: common.Inputs, rows_per_step: int | None, channels: int) -> int:
    """Target rows per piece for `channels` resized masks or class scores per pixel."""
    height, width = x.static["target"]
    return common.piece_rows(height, width, channels, rows_per_step)


def _run(frame_fn: Any, x: common.Inputs, *dynamic: Any, **options: Any) -> Any:
    """The jitted per-frame shell on prepared inputs; `options` are static (hashable) extras."""
    return _frames_shell(
        frame_fn, x.class_logits, x.mask_logits, dynamic, options=tuple(sorted(options.items())), **x.static
    )


# ------------------------------------------------------------------------------------------ semantic
def _semantic_frame(
    class_logits: jax.Array, mask_logits: jax.Array, *, target: Size, valid: Size | None, stride: int, rows: int
) -> jax.Array:
    """One frame: class_logits [Q, K+1], mask_logits [h, w, Q] -> class ids [H, W] (in pieces of `rows` rows)."""
    probs = jax.nn.softmax(class_logits, axis=-1)[:, :-1]  # [Q, K]
    ch, cw = crop_grid(valid, (mask_logits.shape[0], mask_logits.shape[1]), stride)
    masks = jax.nn.sigmoid(mask_logits[:ch, :cw])  # [h, w, Q]
    scores = jnp.einsum("qk,hwq->hwk", probs, masks, precision=HIGHEST)  # [h, w, K]

    def piece(start, _):
        return jnp.argmax(common.resized_rows(scores, target, start, rows), axis=-1).astype(jnp.int32)  # [r, W]

    return common.map_rows(piece, target[0], rows)  # [H, W]


def post_process_semantic(
    out: Any,
    target_size: Sequence[int],
    *,
    valid_size: Sequence[int] | None = None,
    mask_stride: int | None = None,
    frames_per_step: int = common.DEFAULT_FRAMES_PER_STEP,
    rows_per_step: int | None = None,
) -> jax.Array:
    """Class id per pixel and frame, [B, T, H, W] int32 (HF `post_process_semantic_segmentation`).

    rows_per_step: target rows post-processed at a time (None: as many as `common.PIECE_BYTES` allows)."""
    x = common.prepare(out, target_size, valid_size, mask_stride, frames_per_step)
    return _run(_semantic_frame, x, rows=_rows(x, rows_per_step, x.class_logits.shape[-1] - 1))


# ------------------------------------------------------------------------------------------ instance
def _slots(new, segment, labels, scores, fused, segmentation) -> SegmentResult:
    q = new.shape[0]
    return SegmentResult(
        segmentation=segmentation,
        label_id=common.scatter_slots(new, segment, labels.astype(jnp.int32), -1),
        score=common.scatter_slots(new, segment, scores, 0.0),
        query=common.scatter_slots(new, segment, jnp.arange(q, dtype=jnp.int32), -1),
        valid=jnp.arange(q) < new.sum(),
        fused=common.scatter_slots(new, segment, fused, False),
        query_segment=segment,
    )


def _instance_frame(class_logits, mask_logits, threshold, *, target, valid, stride, rows) -> SegmentResult:
    """One frame: class_logits [Q, K+1], mask_logits [h, w, Q]; the target in pieces of `rows` rows."""
    probs = jax.nn.softmax(class_logits, axis=-1)[:, :-1]  # [Q, K]
    class_score, labels = probs.max(axis=-1), jnp.argmax(probs, axis=-1)  # [Q]
    ch, cw = crop_grid(valid, (mask_logits.shape[0], mask_logits.shape[1]), stride)
    cropped = mask_logits[:ch, :cw]

    def sums(start, _):  # per target row: mask area and sigmoid inside it, [r, Q] each
        logits = common.resized_rows(cropped, target, start, rows)  # [r, W, Q]
        binary = logits > 0
        inside = common.tree_sum(jnp.where(binary, jax.nn.sigmoid(logits), 0.0), axis=1)
        return binary.sum(axis=1, dtype=jnp.int32), inside

    area_rows, inside_rows = common.map_rows(sums, target[0], rows)  # [H, Q] each
    # [Q]; float sums in a fixed order: one piece or many, the same score
    area, inside = area_rows.sum(axis=0), common.tree_sum(inside_rows, axis=0)
    score = class_score * (inside / (area.astype(jnp.float32) + jnp.float32(MASK_SCORE_EPS)))
    keep = (area > 0) & (score >= threshold)  # [Q]
    new, segment = common.number_segments(keep, jnp.arange(keep.shape[0], dtype=jnp.int32))

    def paint(start, _):  # later queries overwrite earlier ones and carry larger ids: the max id wins
        binary = common.resized_rows(cropped, target, start, rows) > 0  # [r, W, Q]
        return jnp.where(binary & keep, segment, -1).max(axis=-1)  # [r, W]

    return _slots(new, segment, labels, score, jnp.zeros_like(keep), common.map_rows(paint, target[0], rows))


def post_process_instance(
    out: Any,
    target_size: Sequence[int],
    threshold: float = INSTANCE_THRESHOLD,
    *,
    valid_size: Sequence[int] | None = None,
    mask_stride: int | None = None,
    frames_per_step: int = common.DEFAULT_FRAMES_PER_STEP,
    rows_per_step: int | None = None,
) -> SegmentResult:
    """Instance segmentation per frame (HF `post_process_instance_segmentation`); rows_per_step as
    `post_process_semantic`."""
    x = common.prepare(out, target_size, valid_size, mask_stride, frames_per_step)
    rows = _rows(x, rows_per_step, x.class_logits.shape[2])
    return _run(_instance_frame, x, common.f32_ceil(threshold), rows=rows)  # HF: score.item() >= threshold


# ------------------------------------------------------------------------------------------ panoptic
def panoptic_counts(
    probs: jax.Array, keep: jax.Array, masks: jax.Array, mask_threshold: jax.Array, counted: jax.Array | None = None
):
    """Per-pixel competition between kept queries (shared by the per-frame and the video path).

    probs: [Q] score per query; keep: [Q] bool; masks: [..., Q] sigmoid masks (channels-last);
    counted: [...] bool, the pixels the counts include (None: all; a piece's rows past the frame
    are left out). Returns winner [...] int32 (argmax of probs x mask over kept queries), own [...]
    bool (the winner's mask >= mask_threshold there), and per query [Q] int32: pixels won,
    own-mask area, pixels both won and own."""
    q = probs.shape[0]
    weighted = jnp.where(keep, probs * masks, -1.0)  # [..., Q]
    winner = jnp.argmax(weighted, axis=-1).astype(jnp.int32)  # [...] (first max, as torch)
    binary = masks >= mask_threshold  # [..., Q]
    own = jnp.take_along_axis(binary, winner[..., None], axis=-1)[..., 0]  # [...]
    counted = jnp.ones(winner.shape, bool) if counted is None else counted
    won = common.count_per_query(winner, q, counted)
    original = (binary & counted[..., None]).reshape(-1, q).sum(axis=0, dtype=jnp.int32)
    final = common.count_per_query(winner, q, own & counted)
    return winner, own, won, original, final


def _panoptic_frame(
    class_logits, mask_logits, threshold, mask_threshold, overlap, *, target, valid, stride, fuse, rows
) -> SegmentResult:
    """One frame: class_logits [Q, K+1], mask_logits [h, w, Q]; the target in pieces of `rows` rows."""
    num_labels = class_logits.shape[-1] - 1
    probs = jax.nn.softmax(class_logits, axis=-1)  # [Q, K+1]
    score, labels = probs.max(axis=-1), jnp.argmax(probs, axis=-1)  # [Q]
    keep = (labels != num_labels) & (score > threshold)
    ch, cw = crop_grid(valid, (mask_logits.shape[0], mask_logits.shape[1]), stride)
    cropped = mask_logits[:ch, :cw]

    def piece(start, inside):  # inside: [r] rows of the frame
        masks = jax.nn.sigmoid(common.resized_rows(cropped, target, start, rows))  # [r, W, Q]
        counted = jnp.broadcast_to(inside[:, None], masks.shape[:2])
        winner, own, won, original, final = panoptic_counts(score, keep, masks, mask_threshold, counted)
        return winner, own, won[None], original[None], final[None]

    winner, own, won, original, final = common.map_rows(piece, target[0], rows)  # [H, W] x 2, [pieces, Q] x 3
    won, original, final = (x.sum(axis=0) for x in (won, original, final))  # [Q] (exact integer sums)
    ratio = won.astype(jnp.float32) / jnp.maximum(original, 1).astype(jnp.float32)  # float32, as torch
    segment_ok = keep & (won > 0) & (original > 0) & (final > 0) & (ratio > overlap)  # [Q]
    fused = jnp.isin(labels, jnp.asarray(fuse, jnp.int32)) if fuse else jnp.zeros_like(keep)
    new, segment = common.number_segments(segment_ok, common.first_in_group(segment_ok, labels, fused))
    segmentation = jnp.where(own, segment[winner], -1)  # [H, W]
    return _slots(new, segment, labels, score, fused, segmentation)


def post_process_panoptic(
    out: Any,
    target_size: Sequence[int],
    threshold: float = PANOPTIC_THRESHOLD,
    mask_threshold: float = MASK_THRESHOLD,
    overlap_mask_area_threshold: float = OVERLAP_MASK_AREA_THRESHOLD,
    label_ids_to_fuse: Sequence[int] | None = None,
    *,
    valid_size: Sequence[int] | None = None,
    mask_stride: int | None = None,
    frames_per_step: int = common.DEFAULT_FRAMES_PER_STEP,
    rows_per_step: int | None = None,
) -> SegmentResult:
    """Panoptic segmentation per frame (HF `post_process_panoptic_segmentation`).

    label_ids_to_fuse is static under jit (a new set compiles a new program); rows_per_step as
    `post_process_semantic`."""
    x = common.prepare(out, target_size, valid_size, mask_stride, frames_per_step)
    return _run(
        _panoptic_frame,
        x,
        common.f32(threshold),  # tensor > scalar: float32 in torch
        common.f32(mask_threshold),
        common.f32_floor(overlap_mask_area_threshold),  # HF: ratio.item() > threshold
        fuse=common.static_labels(label_ids_to_fuse, "label_ids_to_fuse"),
        rows=_rows(x, rows_per_step, x.class_logits.shape[2]),
    )
