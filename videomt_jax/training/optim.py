"""AdamW with layer-wise learning-rate decay and the authors' two-stage warmup + poly decay.

Parameter groups (docs/reference.md, "Optimizer and schedule", from the authors' tue-mps/videomt):
- encoder: patch/position embeddings, CLS/register tokens (factor of block 0) and every encoder
  block i (factor decay^(L-1-i)); LR 0 for the first `warmup_head` steps, then a linear warmup
  over `warmup_encoder` steps, then poly decay.
- head: everything else (final LayerNorm, queries, query updater, heads, upscaling), factor 1;
  linear warmup over `warmup_head` steps, then poly decay.
Encoder blocks are stacked on a leading [L] axis, so a block's factor is a vector over that axis.

The schedule is the authors' `TwoStageWarmupPolySchedule` at optimizer step s (0-based):
head lr = base * s / W_h for s < W_h, else base * (1 - (s - W_h) / (S - W_h))^p;
encoder lr = 0 for s < W_h, base * (s - W_h) / W_e for s < W_h + W_e,
else base * (1 - (s - W_h - W_e) / (S - W_h - W_e))^p  (S = total steps, p = poly power).
Weight decay (decoupled, scaled by the group LR as torch AdamW) applies to kernels only; the authors'
AdamW decays every parameter. `freeze_backbone` zeroes the encoder's gradients before clipping, so
frozen parameters neither move nor count in the clipping norm (as `requires_grad=False` would).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from videomt_jax.config import VideomtConfig
from videomt_jax.training.config import TrainConfig

ENCODER_ROOTS = ("embeddings", "encoder", "query_encoder")


def _path_names(path: tuple) -> tuple[str, ...]:
    return tuple(getattr(k, "key", getattr(k, "name", str(k))) for k in path)


def layer_factors(params: Any, config: VideomtConfig, decay: float) -> Any:
    """A pytree like `params` of LR factors, broadcastable against each leaf."""
    num_layers = config.num_hidden_layers

    def factor(path: tuple, leaf: jax.Array) -> jax.Array:
        names = _path_names(path)
        if names[0] == "embeddings":
            return jnp.asarray(decay ** (num_layers - 1), jnp.float32)
        if names[0] in ("encoder", "query_encoder"):
            first = 0 if names[0] == "encoder" else config.query_start
            idx = jnp.arange(first, first + leaf.shape[0])
            return (decay ** (num_layers - 1 - idx)).astype(jnp.float32).reshape((-1,) + (1,) * (leaf.ndim - 1))
        return jnp.asarray(1.0, jnp.float32)

    return jax.tree_util.tree_map_with_path(factor, params)


def is_encoder_tree(params: Any) -> Any:
    return jax.tree_util.tree_map_with_path(lambda p, _: _path_names(p)[0] in ENCODER_ROOTS, params)


def decay_mask(params: Any) -> Any:
    """Weight decay on matmul/conv kernels only (not on norms, biases, tokens or layer scales)."""
    return jax.tree_util.tree_map_with_path(lambda p, _: _path_names(p)[-1] == "kernel", params)


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
    count: jax.Array


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
    is_encoder = is_encoder_tree(params)
    return optax.chain(
        optax.masked(optax.set_to_zero(), is_encoder) if tc.freeze_backbone else optax.identity(),
        optax.clip_by_global_norm(tc.grad_clip) if tc.grad_clip > 0 else optax.identity(),
        optax.scale_by_adam(b1=tc.adam_b1, b2=tc.adam_b2, eps=tc.adam_eps),
        optax.add_decayed_weights(tc.weight_decay, mask=decay_mask(params)),
        scale_by_group_lr(layer_factors(params, config, tc.layer_decay), is_encoder, tc),
    )
