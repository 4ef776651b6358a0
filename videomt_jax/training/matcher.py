"""Hungarian matching of queries to track-aligned target slots, jittable; two rules (`MATCHING_RULES`).

Cost per (query, target) = class_weight * (-softmax p[target class])
                         + mask_weight * sigmoid BCE + dice_weight * dice,
the mask terms over `train_num_points` uniform points shared by every mask of a frame (one point
set per frame). The linear assignment is `optax.assignment.hungarian_algorithm`.

- "first_appearance" (the authors' `VideoHungarianMatcher_Consistent`, every released config): one
  assignment per clip. Frames in order, the objects first visible in frame t are matched on frame t's
  costs to the queries not taken in earlier frames; the assignment holds in every frame, and every
  object of the clip is a target in every frame (its class each frame, an empty mask where hidden).
- "per_frame" (Hugging Face's `VideomtLoss`, the image EoMT loss): every frame of every clip is
  matched on its own, to the objects visible in it.
- "clip_sum": one assignment per clip on the costs summed over the frames each object is visible in;
  each frame's targets are the objects visible in it (elsewhere the query is trained as no-object).
  What the shipped synthetic model was trained with from scratch; it scored higher there than
  "first_appearance" (README, "The shipped model").

Targets are padded to M slots with a `valid` flag. Padded slots never change which valid targets
get which queries: with Q >= M they cost 0 for every query (a constant column cannot move the optimum
of the others); with Q < M they cost more than any assignment of valid targets, so as many valid
targets as possible are matched. HF replaces NaN/inf costs by the dtype's maximum so that they are
matched only when nothing else can be; a float32 solver would overflow on that, so here they (and
queries already taken) get the smallest finite cost with the same property (see `_finite_costs`).
The authors give taken queries a cost of 1e6 instead, which is the same assignment unless a clip
holds more objects than queries (they would reuse a query; here the extra objects stay unmatched).

Letters: B batch, T frames, Q queries, M target slots, K+1 classes (last = no object),
h/w predicted mask grid, H/W target mask size, P points.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from videomt_jax.config import VideomtConfig
from videomt_jax.modeling.outputs import check_logits
from videomt_jax.training.config import CLIP_SUM, DEFAULT_MATCHING, FIRST_APPEARANCE, PER_FRAME
from videomt_jax.training.points import sample_points

_HIGHEST = jax.lax.Precision.HIGHEST


@struct.dataclass
class LossTargets:
    """Padded, fixed-shape, track-aligned targets of a batch of clips.

    mask_labels:  binary masks at input resolution, bool or float        # [B, T, M, H, W]
    class_labels: class id in [0, num_labels) of each slot, int32         # [B, T, M]
    valid:        the slot's object is visible in that frame              # [B, T, M] bool
    Slot m holds the same object in every frame of its clip (`data.batching.collate` gives that);
    class labels count where valid, masks are read as empty where not valid.
    content:      optional, each clip's own frame as a fraction (height, width) of the H x W canvas  # [B, 2]
                  (shape buckets, `modeling/content.py`): matching and loss points are drawn inside it.
    """

    mask_labels: jax.Array
    class_labels: jax.Array
    valid: jax.Array
    content: jax.Array | None = None

    @classmethod
    def from_frames(
        cls,
        mask_labels: Sequence[np.ndarray],
        class_labels: Sequence[np.ndarray],
        frames: int,
        max_targets: int | None = None,
    ) -> LossTargets:
        """Pads HF-style per-frame lists (frames of clip 0 first) into `LossTargets` (host side).

        Frame lists carry no tracks: slot m is the m-th target of each frame, not one object, so
        these targets suit "per_frame" matching only.

        mask_labels[i]: [n_i, H, W] (bool stays bool, anything else becomes float32);
        class_labels[i]: [n_i]; every frame shares H, W.
        max_targets: M (default: the largest n_i); a frame with more targets is an error.
        """
        if len(mask_labels) != len(class_labels):
            raise ValueError(f"{len(mask_labels)} mask_labels entries but {len(class_labels)} class_labels entries")
        if not mask_labels:
            raise ValueError("from_frames needs at least one frame")
        if frames < 1 or len(mask_labels) % frames:
            raise ValueError(f"{len(mask_labels)} frames cannot be split into clips of {frames}")
        masks = [np.asarray(m) for m in mask_labels]
        labels = [np.asarray(c).reshape(-1) for c in class_labels]
        sizes = {m.shape[1:] for m in masks}
        if any(m.ndim != 3 for m in masks) or len(sizes) != 1:
            shapes = [m.shape for m in masks]
            raise ValueError(f"mask_labels must be [n, H, W] with one (H, W) for all frames, got {shapes}")
        counts = [m.shape[0] for m in masks]
        if any(n != len(c) for n, c in zip(counts, labels)):
            raise ValueError(f"masks per frame {counts} differ from labels per frame {[len(c) for c in labels]}")
        slots = max(counts) if max_targets is None else int(max_targets)
        if max(counts) > slots:
            raise ValueError(f"a frame has {max(counts)} targets, more than max_targets={slots}")
        (height, width), n = sizes.pop(), len(masks)
        mask_dtype = bool if all(m.dtype == bool for m in masks) else np.float32
        out_masks = np.zeros((n, slots, height, width), mask_dtype)
        out_labels = np.zeros((n, slots), np.int32)
        out_valid = np.zeros((n, slots), bool)
        for i, (m, c) in enumerate(zip(masks, labels)):
            out_masks[i, : len(c)] = m
            out_labels[i, : len(c)] = c
            out_valid[i, : len(c)] = True
        shape = (n // frames, frames, slots)
        return cls(
            mask_labels=jnp.asarray(out_masks.reshape(*shape, height, width)),
            class_labels=jnp.asarray(out_labels.reshape(shape)),
            valid=jnp.asarray(out_valid.reshape(shape)),
        )


@struct.dataclass
class Matching:
    """Which query each target slot got.

    query_index: the matched query of slot m (0 where unmatched)        # [B, T, M] int32
    matched:     the pair (query_index, slot m) is supervised in frame t # [B, T, M] bool
    "per_frame": matched only where the slot is valid in that frame; "first_appearance": the same
    query and flag in every frame of the clip (hidden frames included).
    """

    query_index: jax.Array
    matched: jax.Array


def check_inputs(class_logits: jax.Array, mask_logits: jax.Array, targets: LossTargets, num_labels: int) -> None:
    """Shape/dtype checks (always) and label-range checks (when the labels are concrete: not traced, all local)."""
    check_logits(class_logits, mask_logits, num_labels)
    frames = class_logits.shape[:2]
    check_targets(targets.mask_labels, targets.class_labels, targets.valid, frames, num_labels, "targets.")


def check_targets(masks: Any, labels: Any, valid: Any, batch_frames: tuple, num_labels: int, prefix: str = "") -> None:
    """Padded targets (numpy or jax): mask_labels [B, T, M, H, W] bool/float, class_labels [B, T, M]
    int in [0, num_labels) where valid, valid [B, T, M] bool. Label values are checked only when
    concrete (not traced, all on this process). `prefix` starts every name in the errors."""
    if masks.ndim != 5 or tuple(masks.shape[:2]) != tuple(batch_frames):
        raise ValueError(
            f"{prefix}mask_labels must be [B, T, M, H, W] with B, T = {tuple(batch_frames)}, got shape {masks.shape}"
        )
    for name, array in (("class_labels", labels), ("valid", valid)):
        if array.shape != masks.shape[:3]:
            raise ValueError(f"{prefix}{name} must be [B, T, M] = {masks.shape[:3]}, got shape {array.shape}")
    if not (masks.dtype == jnp.bool_ or jnp.issubdtype(masks.dtype, jnp.floating)):
        raise TypeError(f"{prefix}mask_labels must be bool or float, got {masks.dtype}")
    if not jnp.issubdtype(labels.dtype, jnp.integer):
        raise TypeError(f"{prefix}class_labels must be integer, got {labels.dtype}")
    if valid.dtype != jnp.bool_:
        raise TypeError(f"{prefix}valid must be bool, got {valid.dtype}")
    if any(isinstance(x, jax.core.Tracer) or not getattr(x, "is_fully_addressable", True) for x in (labels, valid)):
        return
    used = np.asarray(labels)[np.asarray(valid)]
    bad = used[(used < 0) | (used >= num_labels)]
    if bad.size:
        raise ValueError(
            f"{prefix}class_labels {np.unique(bad).tolist()} of valid targets are outside [0, num_labels={num_labels})"
        )


def pairwise_mask_costs(pred_points: jax.Array, target_points: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Sigmoid BCE and dice between every prediction and every target, on shared points.

    pred_points: logits [..., Q, P]; target_points: 0/1 (or soft) labels [..., M, P].
    Returns (bce [..., Q, M], dice [..., Q, M]), HF's `pair_wise_*` functions.
    """
    num_points = pred_points.shape[-1]
    pos = jax.nn.softplus(-pred_points)  # BCE against 1
    neg = jax.nn.softplus(pred_points)  # BCE against 0
    bce = jnp.einsum("...qp,...mp->...qm", pos / num_points, target_points, precision=_HIGHEST) + jnp.einsum(
        "...qp,...mp->...qm", neg / num_points, 1.0 - target_points, precision=_HIGHEST
    )
    probs = jax.nn.sigmoid(pred_points)
    numerator = 2.0 * jnp.einsum("...qp,...mp->...qm", probs, target_points, precision=_HIGHEST)
    denominator = probs.sum(-1)[..., :, None] + target_points.sum(-1)[..., None, :]
    dice = 1.0 - (numerator + 1.0) / (denominator + 1.0)
    return bce, dice


def match_costs(
    class_logits: jax.Array, mask_logits: jax.Array, targets: LossTargets, points: jax.Array, config: VideomtConfig
) -> jax.Array:
    """Matching cost of every (query, target slot) of every frame; no gradient flows.

    class_logits [B, T, Q, K+1], mask_logits [B, T, Q, h, w], points [B, T, P, 2] -> cost [B, T, Q, M].
    Padded slots get arbitrary (finite or not) costs here; `hungarian_match` neutralises them.
    """
    class_logits = jax.lax.stop_gradient(class_logits).astype(jnp.float32)
    mask_logits = jax.lax.stop_gradient(mask_logits).astype(jnp.float32)
    probs = jax.nn.softmax(class_logits, axis=-1)  # [B, T, Q, K+1]
    labels = jnp.clip(targets.class_labels, 0, class_logits.shape[-1] - 1)  # [B, T, M]
    cost_class = -jnp.take_along_axis(probs, labels[:, :, None, :], axis=-1)  # [B, T, Q, M]
    # one point set per frame, shared by its Q predictions and M targets
    sample = jax.vmap(jax.vmap(sample_points))  # over B, then T
    pred_points = sample(mask_logits, points)  # [B, T, Q, P]
    target_points = sample(targets.mask_labels, points)  # [B, T, M, P]
    cost_mask, cost_dice = pairwise_mask_costs(pred_points, target_points)
    return config.mask_weight * cost_mask + config.class_weight * cost_class + config.dice_weight * cost_dice


def _finite_costs(cost: jax.Array, valid: jax.Array, taken: jax.Array) -> jax.Array:
    """One frame's cost [Q, M] made finite, padded slots and taken queries [Q] neutral (module docstring).

    With n = min(Q, M) pairs and the finite costs of valid slots and free queries in [lo, hi]:
    - NaN/inf, and a taken query's cost -> big = hi + n * (hi - lo) + 1: any assignment with fewer
      such entries is cheaper;
    - padded slots, Q >= M -> 0 (constant column);
      Q < M -> big + n * (big - lo) + 1: any assignment with more valid targets is cheaper.
    """
    queries, slots = cost.shape
    pairs = min(queries, slots)
    allowed = jnp.isfinite(cost) & ~taken[:, None]  # [Q, M]
    usable = allowed & valid[None, :]
    any_usable = usable.any()
    hi = jnp.where(any_usable, jnp.max(jnp.where(usable, cost, -jnp.inf)), 0.0)
    lo = jnp.where(any_usable, jnp.min(jnp.where(usable, cost, jnp.inf)), 0.0)
    big = hi + pairs * (hi - lo) + 1.0
    cost = jnp.where(allowed, cost, big)
    padded = 0.0 if queries >= slots else big + pairs * (big - lo) + 1.0
    return jnp.where(valid[None, :], cost, padded)


def _assign_frame(cost: jax.Array, valid: jax.Array, taken: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Hungarian on one frame: cost [Q, M], valid [M], taken [Q] (queries that may not be used)
    -> (query of slot [M], slot got a free query [M])."""
    slots = cost.shape[1]
    rows, cols = optax.assignment.hungarian_algorithm(_finite_costs(cost, valid, taken))  # [min(Q, M)] each
    assigned = jnp.zeros((slots,), bool).at[cols].set(True)
    query_index = jnp.zeros((slots,), jnp.int32).at[cols].set(rows.astype(jnp.int32))
    return query_index, assigned & valid & ~taken[query_index]


def _check_costs(cost: jax.Array, valid: jax.Array) -> None:
    if cost.ndim < 2 or valid.shape != cost.shape[:-2] + cost.shape[-1:]:
        raise ValueError(f"cost [..., Q, M] {cost.shape} and valid [..., M] {valid.shape} do not fit")


def hungarian_match(cost: jax.Array, valid: jax.Array) -> Matching:
    """Minimum-cost assignment of queries to the valid target slots, per frame ("per_frame").

    cost: [..., Q, M] (any leading axes, e.g. [B, T]); valid: [..., M] bool.
    Each frame gets min(Q, #valid) pairs, the optimum of `scipy.optimize.linear_sum_assignment`
    on the valid columns (ties may pick a different, equally cheap assignment).
    """
    _check_costs(cost, valid)
    lead = cost.shape[:-2]
    queries, slots = cost.shape[-2:]
    if slots == 0:
        empty = jnp.zeros(lead + (0,), jnp.int32)
        return Matching(query_index=empty, matched=empty.astype(bool))
    flat_cost = jax.lax.stop_gradient(cost).astype(jnp.float32).reshape(-1, queries, slots)
    free = jnp.zeros((flat_cost.shape[0], queries), bool)
    query_index, matched = jax.vmap(_assign_frame)(flat_cost, valid.reshape(-1, slots), free)
    return Matching(query_index=query_index.reshape(lead + (slots,)), matched=matched.reshape(lead + (slots,)))


def first_appearance_match(cost: jax.Array, valid: jax.Array) -> Matching:
    """One assignment per clip, each object matched at the first frame it is visible in ("first_appearance").

    cost [B, T, Q, M], valid [B, T, M]. Frames in order (a `lax.scan` carrying the taken queries):
    the slots first visible in frame t get the frame-t optimum among the queries no earlier frame
    took. The result holds in every frame: `matched` [B, T, M] is the same for all t (an object of
    the clip is supervised in every frame, hidden ones included); a slot visible in no frame, or
    one left without a free query (more objects than queries), stays unmatched.
    """
    _check_costs(cost, valid)
    if cost.ndim != 4:
        raise ValueError(f"cost must be [B, T, Q, M], got shape {cost.shape}")
    batch, frames, queries, slots = cost.shape
    if slots == 0:
        empty = jnp.zeros((batch, frames, 0), jnp.int32)
        return Matching(query_index=empty, matched=empty.astype(bool))
    seen = jnp.cumsum(valid.astype(jnp.int32), axis=1)  # [B, T, M] frames so far where visible
    first = valid & (seen == 1)  # [B, T, M] the object's first visible frame
    query_ids = jnp.arange(queries, dtype=jnp.int32)
    assign = jax.vmap(_assign_frame)  # over B

    def frame(carry: tuple[jax.Array, jax.Array, jax.Array], inputs: tuple[jax.Array, jax.Array]):
        taken, query_index, matched = carry  # [B, Q], [B, M], [B, M]
        frame_cost, new = inputs  # [B, Q, M], [B, M]
        index, hit = assign(frame_cost, new, taken)  # [B, M] each
        taken = taken | ((index[:, None, :] == query_ids[None, :, None]) & hit[:, None, :]).any(-1)
        return (taken, jnp.where(hit, index, query_index), matched | hit), None

    init = (jnp.zeros((batch, queries), bool), jnp.zeros((batch, slots), jnp.int32), jnp.zeros((batch, slots), bool))
    steps = (jnp.moveaxis(jax.lax.stop_gradient(cost).astype(jnp.float32), 1, 0), jnp.moveaxis(first, 1, 0))
    (_, query_index, matched), _ = jax.lax.scan(frame, init, steps)
    shape = (batch, frames, slots)
    return Matching(
        query_index=jnp.broadcast_to(query_index[:, None], shape), matched=jnp.broadcast_to(matched[:, None], shape)
    )


def clip_sum_match(cost: jax.Array, valid: jax.Array) -> Matching:
    """One assignment per clip on summed costs ("clip_sum"); matched only where the object is visible.

    cost [B, T, Q, M], valid [B, T, M]. The clip cost of (query, slot) sums the frame costs over the
    frames where the slot is visible; a slot visible in no frame takes no query.
    """
    _check_costs(cost, valid)
    if cost.ndim != 4:
        raise ValueError(f"cost must be [B, T, Q, M], got shape {cost.shape}")
    visible = valid[:, :, None, :]  # [B, T, 1, M]
    clip_cost = jnp.where(visible, jax.lax.stop_gradient(cost).astype(jnp.float32), 0.0).sum(axis=1)  # [B, Q, M]
    per_clip = hungarian_match(clip_cost, valid.any(axis=1))  # [B, M]
    frames = valid.shape[1]
    query_index = jnp.repeat(per_clip.query_index[:, None], frames, axis=1)  # [B, T, M]
    return Matching(query_index=query_index, matched=per_clip.matched[:, None] & valid)


def clip_targets(targets: LossTargets) -> tuple[jax.Array, jax.Array]:
    """Every object of the clip is a target of every frame: (class [B, T, M] = the class of its
    first visible frame, is a target [B, T, M] = visible in some frame of the clip)."""
    first = jnp.argmax(targets.valid, axis=1)[:, None]  # [B, 1, M] (0 for a slot never visible)
    labels = jnp.take_along_axis(targets.class_labels, first, axis=1)  # [B, 1, M]
    in_clip = targets.valid.any(axis=1, keepdims=True)  # [B, 1, M]
    shape = targets.valid.shape
    return jnp.broadcast_to(labels, shape), jnp.broadcast_to(in_clip, shape)


def frame_targets(targets: LossTargets) -> tuple[jax.Array, jax.Array]:
    """The targets of each frame are the objects visible in it: (class [B, T, M], valid [B, T, M])."""
    return targets.class_labels, targets.valid


@dataclass(frozen=True)
class MatchingRule:
    """How one prediction is matched, and which targets each frame holds.

    assign(cost [B, T, Q, M], valid [B, T, M]) -> Matching.
    targets(LossTargets) -> (class label [B, T, M], slot is a target of that frame [B, T, M]); the
        loss normalises its mask terms by the number of targets (objects x frames).
    """

    assign: Callable[[jax.Array, jax.Array], Matching]
    targets: Callable[[LossTargets], tuple[jax.Array, jax.Array]]


MATCHING_RULES: dict[str, MatchingRule] = {
    FIRST_APPEARANCE: MatchingRule(first_appearance_match, clip_targets),
    PER_FRAME: MatchingRule(hungarian_match, frame_targets),
    CLIP_SUM: MatchingRule(clip_sum_match, frame_targets),
}


def matching_rule(matching: str) -> MatchingRule:
    """The `MATCHING_RULES` entry of `matching`; an unknown name is an error that lists the choices."""
    if matching not in MATCHING_RULES:
        raise ValueError(f"matching must be one of {list(MATCHING_RULES)}, got {matching!r}")
    return MATCHING_RULES[matching]


def match_frames(
    class_logits: jax.Array,
    mask_logits: jax.Array,
    targets: LossTargets,
    points: jax.Array,
    config: VideomtConfig,
    matching: str = DEFAULT_MATCHING,
) -> Matching:
    """Costs on `points` [B, T, P, 2] (frame t's shared points), then the `matching` rule's assignment."""
    cost = match_costs(class_logits, mask_logits, targets, points, config)
    return matching_rule(matching).assign(cost, targets.valid)
