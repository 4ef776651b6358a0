"""AdamW with layer-wise learning-rate decay and the authors' two-stage warmup + poly decay.

The authors' optimizer (tue-mps/videomt `train_net_video.py` `build_optimizer`, run by detectron2's
trainer): a plain torch AdamW over per-parameter groups, weight decay on every parameter, and no
gradient clipping (their YAML's CLIP_GRADIENTS is never read by that trainer). Three TrainConfig
fields choose between their behaviour (the defaults) and alternatives:
- `grad_clip`: None = no clipping (theirs); a number = global-norm clipping of the full model.
- `decay_params` (DECAY_PARAMS): "all" (theirs) or "kernels" (matmul / conv kernels only).
- `final_norm_group` (FINAL_NORM_GROUPS): the encoder's final LayerNorm in the "encoder" group at LR
  factor 1 (their DINOv2 runs), in the encoder group at block 0's factor ("encoder_block0", their
  DINOv3 runs), or with the "heads" at factor 1.

Parameter groups:
- encoder: patch/position embeddings, CLS/register tokens (block 0's factor, decay^(L-1)) and every
  encoder block i (factor decay^(L-1-i)); LR 0 for the first `warmup_head` steps, then a linear
  warmup over `warmup_encoder` steps, then poly decay.
- heads: queries, query updater, heads, upscaling, factor 1; linear warmup over `warmup_head`
  steps, then poly decay.
Encoder blocks are stacked on a leading [L] axis, so a block's factor is a vector over that axis.

The schedule is the authors' `TwoStageWarmupPolySchedule` at optimizer step s (0-based):
head lr = base * s / W_h for s < W_h, else base * (1 - (s - W_h) / (S - W_h))^p;
encoder lr = 0 for s < W_h, base * (s - W_h) / W_e for s < W_h + W_e,
else base * (1 - (s - W_h - W_e) / (S - W_h - W_e))^p  (S = total steps, p = poly power).
Weight decay is decoupled and scaled by the group LR and factor, as torch AdamW. `freeze_backbone`
zeroes the encoder group's gradients before clipping, so frozen parameters neither move nor count
in the clipping norm (as `requires_grad=False` would).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from videomt_jax.config import VideomtConfig
from videomt_jax.training.config import TrainConfig
from videomt_jax.training.param_groups import (
    DECAY_PARAMS,
    ENCODER_ROOTS,
    FINAL_NORM,
    FINAL_NORM_GROUPS,
    path_names,
)


def layer_factors(params: Any, config: VideomtConfig, decay: float, final_norm_group: str) -> Any:
    """A pytree like `params` of LR factors, broadcastable against each leaf."""
    num_layers = config.num_hidden_layers
    first_block = {"encoder": 0, "query_encoder": config.query_start}  # stacked blocks: root -> first index
    fixed = {  # the other roots' factors; any root not named here: 1
        "embeddings": decay ** (num_layers - 1),
        FINAL_NORM: FINAL_NORM_GROUPS[final_norm_group].factor(decay, num_layers),
    }

    def factor(path: tuple, leaf: jax.Array) -> jax.Array:
        root = path_names(path)[0]
        if root in first_block:
            idx = jnp.arange(first_block[root], first_block[root] + leaf.shape[0])  # [L_root]
            return (decay ** (num_layers - 1 - idx)).astype(jnp.float32).reshape((-1,) + (1,) * (leaf.ndim - 1))
        return jnp.asarray(fixed.get(root, 1.0), jnp.float32)

    return jax.tree_util.tree_map_with_path(factor, params)


def is_encoder_tree(params: Any, final_norm_group: str) -> Any:
    """A pytree like `params` of bools: the leaf follows the encoder schedule."""
    roots = ENCODER_ROOTS + ((FINAL_NORM,) if FINAL_NORM_GROUPS[final_norm_group].encoder else ())
    return jax.tree_util.tree_map_with_path(lambda p, _: path_names(p)[0] in roots, params)


def decay_mask(params: Any, decay_params: str) -> Any:
    """A pytree like `params` of bools: the leaf is weight-decayed (DECAY_PARAMS[decay_params])."""
    return jax.tree_util.tree_map_with_path(lambda p, _: DECAY_PARAMS[decay_params](path_names(p)), params)


def schedules(tc: TrainConfig) -> tuple[optax.Schedule, optax.Schedule]:
    """(head schedule, encoder schedule): warmup(s) then (1 - progress)^power decay to 0."""
    total = tc.steps

    def poly(step: jax.Array, start: int) -> jax.Array:
        progress = jnp.clip((step - start) / jnp.maximum(total - start, 1), 0.0, 1.0)
        return (1.0 - progress) ** tc.poly_power

    def head(step: jax.Array) -> jax.Array:
        warm = jnp.clip(step / max(tc.warmup_head, 1), 0.0, 1.0)
        return tc.learning_rate * jnp.where(step < tc.warmup_head, warm, poly(step, tc.warmup_head))

    def encoder(step: jax.Array) -> jax.Array:
        start = tc.warmup_head
        warm = jnp.clip((step - start) / max(tc.warmup_encoder, 1), 0.0, 1.0)
        end = start + tc.warmup_encoder
        lr = jnp.where(step < start, 0.0, jnp.where(step < end, warm, poly(step, end)))
        return tc.learning_rate * lr * (0.0 if tc.freeze_backbone else 1.0)

    return head, encoder


class GroupLRState(NamedTuple):
    # shadows tuple.count, unavoidably: optax names its step counters so, and the name is a path in
    # saved checkpoints
    count: jax.Array  # type: ignore[assignment]


def scale_by_group_lr(factors: Any, is_encoder: Any, tc: TrainConfig) -> optax.GradientTransformation:
    """updates *= -lr_group(step) * layer factor."""
    head_lr, enc_lr = schedules(tc)

    def init(params: Any) -> GroupLRState:
        del params
        return GroupLRState(count=jnp.zeros([], jnp.int32))

    def update(updates: Any, state: GroupLRState, params: Any = None) -> tuple[Any, GroupLRState]:
        del params
        lr_h, lr_e = head_lr(state.count), enc_lr(state.count)
        updates = jax.tree.map(
            lambda u, f, enc: -(jnp.where(enc, lr_e, lr_h) * f).astype(u.dtype) * u, updates, factors, is_encoder
        )
        return updates, GroupLRState(count=optax.safe_increment(state.count))

    return optax.GradientTransformation(init, update)


def make_optimizer(params: Any, config: VideomtConfig, tc: TrainConfig) -> optax.GradientTransformation:
    is_encoder = is_encoder_tree(params, tc.final_norm_group)
    factors = layer_factors(params, config, tc.layer_decay, tc.final_norm_group)
    return optax.chain(
        optax.masked(optax.set_to_zero(), is_encoder) if tc.freeze_backbone else optax.identity(),
        optax.identity() if tc.grad_clip is None else optax.clip_by_global_norm(tc.grad_clip),
        optax.scale_by_adam(b1=tc.adam_b1, b2=tc.adam_b2, eps=tc.adam_eps),
        optax.add_decayed_weights(tc.weight_decay, mask=decay_mask(params, tc.decay_params)),
        scale_by_group_lr(factors, is_encoder, tc),
    )
