"""The VidEoMT set-prediction loss with deep supervision, jittable: the authors' criterion
(`criterion_videomt.py` with `VideoHungarianMatcher_Consistent`) or Hugging Face's `VideomtLoss`.

Per prediction (the final one and each auxiliary one, each matched on its own; `matcher.MATCHING_RULES`):
- the targets of a frame: "first_appearance" (the authors'), every object of the clip (its class in
  every frame, an empty mask where it is hidden), one query per object for the whole clip;
  "per_frame" (HF's), the objects visible in that frame, matched frame by frame.
- loss_cross_entropy: class cross-entropy over all B*T*Q queries, target = the matched target's
  class, else no-object (index K); class weights 1, no-object `config.no_object_weight`; weighted
  mean sum(w_i * nll_i) / sum(w_i) (torch `CrossEntropyLoss(weight=...)`).
- loss_mask / loss_dice: sigmoid BCE (mean over points) and dice of each matched pair in each frame
  on `train_num_points` points chosen by uncertainty, summed and divided by the number of targets
  (objects x frames for "first_appearance", visible masks for "per_frame") in the whole batch, at
  least 1. Under jit with a data-parallel sharding the count is global: what the authors' division
  by (all-reduced count / devices), then DDP's average of the gradients over devices, amounts to.
Total = sum over predictions of weight * (class_weight * CE + mask_weight * BCE + dice_weight * dice),
auxiliary predictions weighted by `aux_weights` (default 1 each, the authors' table).

Letters: A auxiliary predictions, B batch, T frames, Q queries, M target slots per frame,
K+1 classes, h/w predicted mask grid, H/W target size, P points per mask, C candidates, R random points.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp

from videomt_jax.config import VideomtConfig
from videomt_jax.training.config import DEFAULT_MATCHING
from videomt_jax.training.matcher import LossTargets, Matching, check_inputs, match_frames, matching_rule
from videomt_jax.training.points import (
    PointDraws,
    check_draws,
    draw_points,
    num_uncertain_points,
    sample_points,
    uncertain_points,
    within_content,
    zero_outside,
)

LOSS_TERMS = ("loss_cross_entropy", "loss_mask", "loss_dice")


def term_weights(config: VideomtConfig) -> dict[str, float]:
    """The weight of each loss term in the total (HF `weight_dict`)."""
    return {"loss_cross_entropy": config.class_weight, "loss_mask": config.mask_weight, "loss_dice": config.dice_weight}


def num_target_masks(is_target: jax.Array) -> jax.Array:
    """Number of target masks in the batch (all B*T frames), at least 1. is_target: [B, T, M]."""
    return jnp.maximum(is_target.sum().astype(jnp.float32), 1.0)


def matched_classes(matching: Matching, class_labels: jax.Array, num_queries: int, num_labels: int) -> jax.Array:
    """Class target of every query: its matched target's class, else no-object (num_labels). -> [B, T, Q]

    class_labels [B, T, M]: each slot's class in each frame."""
    queries = jnp.arange(num_queries, dtype=jnp.int32)
    hit = (queries[None, None, :, None] == matching.query_index[:, :, None, :]) & matching.matched[:, :, None, :]
    label = jnp.sum(jnp.where(hit, class_labels[:, :, None, :].astype(jnp.int32), 0), axis=-1)  # [B, T, Q]
    return jnp.where(hit.any(-1), label, num_labels)


def class_loss(class_logits: jax.Array, target_classes: jax.Array, no_object_weight: float) -> jax.Array:
    """Weighted cross-entropy, torch `CrossEntropyLoss(weight=empty_weight)` with mean reduction.

    class_logits [..., K+1], target_classes [...] in [0, K] (K = no object).
    """
    num_labels = class_logits.shape[-1] - 1
    log_probs = jax.nn.log_softmax(class_logits.astype(jnp.float32), axis=-1)
    nll = -jnp.take_along_axis(log_probs, target_classes[..., None], axis=-1)[..., 0]
    weight = jnp.where(target_classes == num_labels, jnp.float32(no_object_weight), 1.0)
    return jnp.sum(weight * nll) / jnp.sum(weight)


def sigmoid_bce(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Mean over the last axis of torch `BCEWithLogitsLoss(reduction='none')`. [..., P] -> [...]"""
    return jnp.mean(jax.nn.softplus(logits) - logits * labels, axis=-1)


def dice(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """1 - (2 sum(p y) + 1) / (sum(p) + sum(y) + 1) over the last axis, p = sigmoid. [..., P] -> [...]"""
    probs = jax.nn.sigmoid(logits)
    numerator = 2.0 * jnp.sum(probs * labels, axis=-1)
    denominator = jnp.sum(probs, axis=-1) + jnp.sum(labels, axis=-1)
    return 1.0 - (numerator + 1.0) / (denominator + 1.0)


def mask_losses(
    mask_logits: jax.Array,
    targets: LossTargets,
    matching: Matching,
    draws: PointDraws,
    num_uncertain: int,
    num_masks: jax.Array,
) -> dict[str, jax.Array]:
    """BCE and dice of the matched pairs on uncertainty-chosen points, normalised by `num_masks`.

    mask_logits [B, T, Q, h, w]; the pair of slot m is (matching.query_index[m], target m); the
    target mask is empty in the frames where the slot is not valid (a hidden object).
    """
    index = matching.query_index[..., None, None]  # [B, T, M, 1, 1]
    pred = jnp.take_along_axis(mask_logits.astype(jnp.float32), index, axis=2)  # [B, T, M, h, w]
    coords = uncertain_points(pred, draws.candidates, draws.extra, num_uncertain)  # [B, T, M, P, 2]
    point_logits = sample_points(pred, coords)  # [B, T, M, P]
    visible = targets.valid[..., None].astype(jnp.float32)  # [B, T, M, 1]
    point_labels = jax.lax.stop_gradient(sample_points(targets.mask_labels, coords)) * visible  # [B, T, M, P]
    weight = matching.matched.astype(jnp.float32)  # [B, T, M]; unmatched / padded pairs count 0
    return {
        "loss_mask": jnp.sum(weight * sigmoid_bce(point_logits, point_labels)) / num_masks,
        "loss_dice": jnp.sum(weight * dice(point_logits, point_labels)) / num_masks,
    }


def set_prediction_loss(
    class_logits: jax.Array,
    mask_logits: jax.Array,
    targets: LossTargets,
    draws: PointDraws,
    config: VideomtConfig,
    matching: str = DEFAULT_MATCHING,
) -> tuple[dict[str, jax.Array], Matching]:
    """The three unweighted terms of one prediction (no aux), and its matching.

    class_logits [B, T, Q, K+1], mask_logits [B, T, Q, h, w]. `matching`: see `videomt_loss`.
    """
    check_inputs(class_logits, mask_logits, targets, config.num_labels)
    matching_rule(matching)
    batch, frames = class_logits.shape[:2]
    check_draws(draws, batch, frames, targets.valid.shape[-1], config)
    return _prediction_loss(class_logits, mask_logits, targets, draws, config, matching)


def _prediction_loss(
    class_logits: jax.Array,
    mask_logits: jax.Array,
    targets: LossTargets,
    draws: PointDraws,
    config: VideomtConfig,
    matching: str,
) -> tuple[dict[str, jax.Array], Matching]:
    """`set_prediction_loss` on inputs its caller has checked (`videomt_loss` checks each once).

    With `targets.content` the draws land inside each clip's own frame and the mask logits past it read 0."""
    queries = class_logits.shape[2]
    mask_logits, draws = zero_outside(mask_logits, targets.content), within_content(draws, targets.content)
    assignment = match_frames(class_logits, mask_logits, targets, draws.match, config, matching)
    labels, is_target = matching_rule(matching).targets(targets)  # [B, T, M] each
    num_masks = num_target_masks(is_target)
    terms = mask_losses(mask_logits, targets, assignment, draws, num_uncertain_points(config), num_masks)
    target_classes = matched_classes(assignment, labels, queries, config.num_labels)
    terms["loss_cross_entropy"] = class_loss(class_logits, target_classes, config.no_object_weight)
    return {name: terms[name] for name in LOSS_TERMS}, assignment


def _aux_selection(
    num_aux: int, aux_indices: Sequence[int] | None, aux_weights: Sequence[float] | None
) -> tuple[tuple[int, ...], tuple[float, ...]]:
    indices = tuple(range(num_aux - 1)) if aux_indices is None else tuple(int(i) for i in aux_indices)
    if any(not 0 <= i < num_aux for i in indices) or len(set(indices)) != len(indices):
        raise ValueError(f"aux_indices {indices} must be distinct indices into {num_aux} auxiliary predictions")
    weights = (1.0,) * len(indices) if aux_weights is None else tuple(float(w) for w in aux_weights)
    if len(weights) != len(indices):
        raise ValueError(f"aux_weights has {len(weights)} entries for {len(indices)} auxiliary predictions {indices}")
    return indices, weights


def videomt_loss(
    class_logits: jax.Array,
    mask_logits: jax.Array,
    aux_class_logits: jax.Array | None,
    aux_mask_logits: jax.Array | None,
    targets: LossTargets,
    key: jax.Array | None,
    config: VideomtConfig,
    aux_indices: Sequence[int] | None = None,
    draws: Sequence[PointDraws] | None = None,
    matching: str = DEFAULT_MATCHING,
    aux_weights: Sequence[float] | None = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Total training loss with deep supervision, and its unweighted terms.

    class_logits [B, T, Q, K+1], mask_logits [B, T, Q, h, w]: the final prediction.
    aux_class_logits [A, B, T, Q, K+1], aux_mask_logits [A, B, T, Q, h, w] or None: predictions
        from the tokens entering each query block, block 0 first (`VideomtOutput.aux_*`).
    targets: padded, track-aligned `LossTargets`. key: PRNG key for the point draws (unused when `draws` is given).
    config: loss weights and point counts (`class_weight`, `mask_weight`, `dice_weight`,
        `no_object_weight`, `train_num_points`, `oversample_ratio`, `importance_sample_ratio`).
    aux_indices: which auxiliary predictions enter the loss. None (default) follows the authors:
        all but the last, i.e. 0 .. A-2. Their weight table names only num_blocks - 1 auxiliary
        outputs, so the prediction entering the last query block is computed but dropped. Pass
        `tuple(range(A))` to supervise it too.
    draws: uniform draws per prediction, final first, then the selected aux in `aux_indices` order
        (see `PointDraws`); default: drawn from `key`. Inject them to reproduce a reference run.
    matching: "first_appearance" (default, the authors'): one assignment per clip, each object
        matched at its first visible frame, every object of the clip a target in every frame;
        "per_frame" (HF's `VideomtLoss`): each frame matched to its visible objects.
    aux_weights: a multiplier per selected auxiliary prediction (default 1.0 each).

    Returns (total, terms): terms holds "loss_cross_entropy", "loss_mask", "loss_dice" of the final
    prediction and "<term>_<i>" of auxiliary prediction i (HF's names), all unweighted.
    Jit with `config`, `aux_indices`, `matching` and `aux_weights` static.
    """
    check_inputs(class_logits, mask_logits, targets, config.num_labels)
    matching_rule(matching)  # an unknown name fails here, before any work
    if (aux_class_logits is None) != (aux_mask_logits is None):
        raise ValueError("aux_class_logits and aux_mask_logits must be given together")
    predictions = [("", class_logits, mask_logits, 1.0)]
    if aux_class_logits is not None and aux_mask_logits is not None:
        if aux_class_logits.ndim != 5 or aux_mask_logits.ndim != 6:
            raise ValueError(
                f"aux_class_logits must be [A, B, T, Q, K+1] and aux_mask_logits [A, B, T, Q, h, w], "
                f"got {aux_class_logits.shape} and {aux_mask_logits.shape}"
            )
        if aux_class_logits.shape[1:] != class_logits.shape or aux_mask_logits.shape[1:] != mask_logits.shape:
            raise ValueError(
                f"aux_class_logits {aux_class_logits.shape} / aux_mask_logits {aux_mask_logits.shape} must be "
                f"[A, *class_logits.shape] = [A, *{class_logits.shape}] / [A, *{mask_logits.shape}]"
            )
        if aux_class_logits.shape[0] != aux_mask_logits.shape[0]:
            raise ValueError(
                f"aux_class_logits {aux_class_logits.shape} and aux_mask_logits {aux_mask_logits.shape} differ in A"
            )
        indices, scales = _aux_selection(aux_class_logits.shape[0], aux_indices, aux_weights)
        predictions += [(f"_{i}", aux_class_logits[i], aux_mask_logits[i], w) for i, w in zip(indices, scales)]
    elif aux_indices or aux_weights:
        raise ValueError("aux_indices / aux_weights given without auxiliary predictions")
    batch, frames = class_logits.shape[:2]
    slots = targets.valid.shape[-1]
    if draws is None:
        if key is None:
            raise ValueError("videomt_loss needs a PRNG key when no draws are given")
        draws = draw_points(key, batch, frames, slots, config, count=len(predictions))
    elif len(draws) != len(predictions):
        raise ValueError(f"{len(draws)} PointDraws given for {len(predictions)} predictions (final + selected aux)")
    for draw in draws:
        check_draws(draw, batch, frames, slots, config)
    weights = term_weights(config)
    total = jnp.float32(0.0)
    terms: dict[str, jax.Array] = {}
    for (suffix, cls, msk, scale), draw in zip(predictions, draws):
        one, _ = _prediction_loss(cls, msk, targets, draw, config, matching)
        for name, value in one.items():
            terms[name + suffix] = value
            total = total + scale * weights[name] * value
    return total, terms
