"""Train state and the jitted train step (donated state, optional data-parallel sharding).

Letters: B clips, T frames, H/W pixels, M target slots per frame.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from videomt_jax.config import VideomtConfig
from videomt_jax.modeling.videomt import VideomtModel
from videomt_jax.training.config import TrainConfig
from videomt_jax.training.losses import videomt_loss
from videomt_jax.training.matcher import LossTargets
from videomt_jax.training.optim import make_optimizer

BATCH_FIELDS = ("pixel_values", "mask_labels", "class_labels", "valid")


@struct.dataclass
class TrainState:
    step: jax.Array  # int32 scalar
    params: Any  # float32
    opt_state: Any
    rng: jax.Array  # raw uint32 key data (checkpoint friendly)


def training_model_config(config: VideomtConfig, tc: TrainConfig) -> VideomtConfig:
    return config.replace(dtype=tc.compute_dtype)


def create_train_state(params: Any, config: VideomtConfig, tc: TrainConfig) -> tuple[TrainState, optax.GradientTransformation]:
    tx = make_optimizer(params, config, tc)
    params = jax.tree.map(lambda p: jnp.asarray(p, jnp.float32), params)
    state = TrainState(
        step=jnp.zeros([], jnp.int32),
        params=params,
        opt_state=tx.init(params),
        rng=jax.random.key_data(jax.random.key(tc.seed)),
    )
    return state, tx


def batch_arrays(batch: Any) -> dict[str, np.ndarray]:
    """The fields the step needs, from a `Batch` or a dict."""
    get = batch.get if isinstance(batch, dict) else lambda k: getattr(batch, k)
    return {k: get(k) for k in BATCH_FIELDS}


def loss_and_metrics(
    params: Any, batch: dict[str, jax.Array], key: jax.Array, model: VideomtModel, tc: TrainConfig
) -> tuple[jax.Array, dict[str, jax.Array]]:
    cfg = model.config
    drop_key, point_key = jax.random.split(key)
    out = model.apply(
        {"params": params},
        batch["pixel_values"],
        interpolate_pos_encoding=True,
        return_aux=tc.deep_supervision,
        rngs={"dropout": drop_key},
    )
    labels = jnp.where(batch["valid"], batch["class_labels"], 0)
    targets = LossTargets(mask_labels=batch["mask_labels"], class_labels=labels, valid=batch["valid"])
    aux_indices = None
    if tc.deep_supervision and not tc.drop_last_aux:
        aux_indices = tuple(range(cfg.num_blocks))
    total, terms = videomt_loss(
        out.class_logits,
        out.mask_logits,
        out.aux_class_logits,
        out.aux_mask_logits,
        targets,
        point_key,
        cfg,
        aux_indices=aux_indices,
    )
    return total, terms


def make_train_step(
    config: VideomtConfig,
    tc: TrainConfig,
    tx: optax.GradientTransformation,
    mesh: Mesh | None = None,
) -> Callable[[TrainState, dict[str, Any]], tuple[TrainState, dict[str, jax.Array]]]:
    """`step(state, batch) -> (state, metrics)`, jitted with the state donated.

    With a mesh, the batch is split over its "data" axis and the state replicated; XLA inserts
    the gradient all-reduce, and the loss normaliser (target masks in the batch) is global.
    """
    cfg = training_model_config(config, tc)
    deterministic = cfg.drop_path_rate == 0 and cfg.hidden_dropout_prob == 0
    model = VideomtModel(cfg, deterministic=deterministic)

    def step(state: TrainState, batch: dict[str, jax.Array]) -> tuple[TrainState, dict[str, jax.Array]]:
        key = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
        grad_fn = jax.value_and_grad(loss_and_metrics, has_aux=True)
        (loss, terms), grads = grad_fn(state.params, batch, key, model, tc)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {"loss": loss, "grad_norm": optax.global_norm(grads), **terms}
        return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics

    if mesh is None:
        return jax.jit(step, donate_argnums=0)
    replicated = NamedSharding(mesh, PartitionSpec())
    data = NamedSharding(mesh, PartitionSpec("data"))
    return jax.jit(
        step,
        in_shardings=(replicated, {k: data for k in BATCH_FIELDS}),
        out_shardings=(replicated, replicated),
        donate_argnums=0,
    )


def data_mesh(num_devices: int | None = None) -> Mesh:
    """A 1-D mesh named "data" over the first `num_devices` devices (all by default)."""
    devices = jax.devices()
    n = len(devices) if num_devices is None else num_devices
    if not 1 <= n <= len(devices):
        raise ValueError(f"asked for {n} devices, {len(devices)} available")
    return Mesh(np.array(devices[:n]), ("data",))


def shard_batch(batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    n = mesh.devices.size
    size = batch["pixel_values"].shape[0]
    if size % n:
        raise ValueError(f"batch size {size} is not divisible by the {n} devices of the mesh")
    sharding = NamedSharding(mesh, PartitionSpec("data"))
    return {k: jax.device_put(v, sharding) for k, v in batch.items()}
