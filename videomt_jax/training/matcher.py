"""Per-frame Hungarian matching of queries to padded targets (HF `VideomtHungarianMatcher`), jittable.

Cost per (query, target) = class_weight * (-softmax p[target class])
                         + mask_weight * sigmoid BCE + dice_weight * dice,
the mask terms over `train_num_points` uniform points shared by every mask of a frame. The linear
assignment is `optax.assignment.hungarian_algorithm`, vmapped over the B*T frames: every frame of
every clip is matched on its own, as the authors do (targets split frame by frame).

Targets are padded to M slots per frame with a `valid` flag. Padded slots never change which valid
targets get which queries: with Q >= M they cost 0 for every query (a constant column cannot move
the optimum of the others); with Q < M they cost more than any assignment of valid targets, so as
many valid targets as possible are matched. HF replaces NaN/inf costs by the dtype's maximum so that
they are matched only when nothing else can be; a float32 solver would overflow on that, so here
they get the smallest finite cost with the same property (see `_finite_costs`).

Letters: B batch, T frames, Q queries, M target slots per frame, K+1 classes (last = no object),
h/w predicted mask grid, H/W target mask size, P points.
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from videomt_jax.config import VideomtConfig
from videomt_jax.modeling.outputs import check_logits
from videomt_jax.training.points import sample_points

_HIGHEST = jax.lax.Precision.HIGHEST


@struct.dataclass
class LossTargets:
    """Padded, fixed-shape targets of a batch of clips.

    mask_labels:  binary masks at input resolution, bool or float        # [B, T, M, H, W]
    class_labels: class id in [0, num_labels) of each slot, int32         # [B, T, M]
    valid:        which slots hold a target                               # [B, T, M] bool
    """

    mask_labels: jax.Array
    class_labels: jax.Array
    valid: jax.Array

    @classmethod
    def from_frames(
        cls,
        mask_labels: Sequence[np.ndarray],
        class_labels: Sequence[np.ndarray],
        frames: int,
        max_targets: int | None = None,
    ) -> "LossTargets":
        """Pads HF-style per-frame lists (frames of clip 0 first) into `LossTargets` (host side).

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
    matched:     slot m is a valid target that got a query               # [B, T, M] bool
    """

    query_index: jax.Array
    matched: jax.Array


def check_inputs(class_logits: jax.Array, mask_logits: jax.Array, targets: LossTargets, num_labels: int) -> None:
    """Shape/dtype checks (always) and label-range checks (when the labels are concrete: not traced, all local)."""
    check_logits(class_logits, mask_logits, num_labels)
    check_targets(targets.mask_labels, targets.class_labels, targets.valid, class_logits.shape[:2], num_labels, "targets.")


def check_targets(masks: Any, labels: Any, valid: Any, batch_frames: tuple, num_labels: int, prefix: str = "") -> None:
    """Padded targets (numpy or jax): mask_labels [B, T, M, H, W] bool/float, class_labels [B, T, M]
    int in [0, num_labels) where valid, valid [B, T, M] bool. Label values are checked only when
    concrete (not traced, all on this process). `prefix` starts every name in the errors."""
    if masks.ndim != 5 or tuple(masks.shape[:2]) != tuple(batch_frames):
        raise ValueError(f"{prefix}mask_labels must be [B, T, M, H, W] with B, T = {tuple(batch_frames)}, got shape {masks.shape}")
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


def _finite_costs(cost: jax.Array, valid: jax.Array) -> jax.Array:
    """One frame's cost [Q, M] made finite, padded slots neutral (see the module docstring).

    With n = min(Q, M) pairs and finite valid costs in [lo, hi]:
    - NaN/inf -> big = hi + n * (hi - lo) + 1: any assignment with fewer such entries is cheaper;
    - padded slots, Q >= M -> 0 (constant column);
      Q < M -> big + n * (big - lo) + 1: any assignment with more valid targets is cheaper.
    """
    queries, slots = cost.shape
    pairs = min(queries, slots)
    usable = jnp.isfinite(cost) & valid[None, :]
    any_usable = usable.any()
    hi = jnp.where(any_usable, jnp.max(jnp.where(usable, cost, -jnp.inf)), 0.0)
    lo = jnp.where(any_usable, jnp.min(jnp.where(usable, cost, jnp.inf)), 0.0)
    big = hi + pairs * (hi - lo) + 1.0
    cost = jnp.where(jnp.isfinite(cost), cost, big)
    padded = 0.0 if queries >= slots else big + pairs * (big - lo) + 1.0
    return jnp.where(valid[None, :], cost, padded)


def _assign_frame(cost: jax.Array, valid: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Hungarian on one frame: cost [Q, M], valid [M] -> (query of slot [M], slot got a query [M])."""
    queries, slots = cost.shape
    rows, cols = optax.assignment.hungarian_algorithm(_finite_costs(cost, valid))  # [min(Q, M)] each
    assigned = jnp.zeros((slots,), bool).at[cols].set(True)
    query_index = jnp.zeros((slots,), jnp.int32).at[cols].set(rows.astype(jnp.int32))
    return query_index, assigned & valid


def hungarian_match(cost: jax.Array, valid: jax.Array) -> Matching:
    """Minimum-cost assignment of queries to the valid target slots, per frame.

    cost: [..., Q, M] (any leading axes, e.g. [B, T]); valid: [..., M] bool.
    Each frame gets min(Q, #valid) pairs, the optimum of `scipy.optimize.linear_sum_assignment`
    on the valid columns (ties may pick a different, equally cheap assignment).
    """
    if cost.ndim < 2 or valid.shape != cost.shape[:-2] + cost.shape[-1:]:
        raise ValueError(f"cost [..., Q, M] {cost.shape} and valid [..., M] {valid.shape} do not fit")
    lead = cost.shape[:-2]
    queries, slots = cost.shape[-2:]
    if slots == 0:
        empty = jnp.zeros(lead + (0,), jnp.int32)
        return Matching(query_index=empty, matched=empty.astype(bool))
    flat_cost = jax.lax.stop_gradient(cost).astype(jnp.float32).reshape(-1, queries, slots)
    query_index, matched = jax.vmap(_assign_frame)(flat_cost, valid.reshape(-1, slots))
    return Matching(query_index=query_index.reshape(lead + (slots,)), matched=matched.reshape(lead + (slots,)))


def clip_match(cost: jax.Array, valid: jax.Array) -> Matching:
    """One assignment per clip, used in every frame: a query follows one target slot (track) throughout.

    cost [B, T, Q, M], valid [B, T, M]. The clip cost of (query, slot) sums the frame costs over
    the frames where the slot is present; a slot present in no frame takes no query. In each frame
    only the slots present there count as matched (elsewhere the query is trained as no-object).
    """
    present = valid[:, :, None, :]  # [B, T, 1, M]
    clip_cost = jnp.where(present, jax.lax.stop_gradient(cost).astype(jnp.float32), 0.0).sum(axis=1)  # [B, Q, M]
    per_clip = hungarian_match(clip_cost, valid.any(axis=1))  # [B, M]
    frames = valid.shape[1]
    query_index = jnp.repeat(per_clip.query_index[:, None], frames, axis=1)  # [B, T, M]
    return Matching(query_index=query_index, matched=per_clip.matched[:, None] & valid)


def match_frames(
    class_logits: jax.Array,
    mask_logits: jax.Array,
    targets: LossTargets,
    points: jax.Array,
    config: VideomtConfig,
    per_clip: bool = False,
) -> Matching:
    """Costs on `points` [B, T, P, 2], then Hungarian matching per frame (the authors'), or once
    per clip (`per_clip`, see `clip_match`)."""
    cost = match_costs(class_logits, mask_logits, targets, points, config)
    return clip_match(cost, targets.valid) if per_clip else hungarian_match(cost, targets.valid)
