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
from videomt_jax.training.matcher import LossTargets, check_targets
from videomt_jax.training.optim import make_optimizer

BATCH_FIELDS = ("pixel_values", "mask_labels", "class_labels", "valid")


@struct.dataclass
class TrainState:
    step: jax.Array  # int32 scalar
    params: Any  # float32
    opt_state: Any
    rng: jax.Array  # raw uint32 key data (checkpoint friendly)


def create_train_state(
    params: Any, config: VideomtConfig, tc: TrainConfig, tx: optax.GradientTransformation | None = None
) -> tuple[TrainState, optax.GradientTransformation]:
    """Step 0 of a run: float32 params, fresh optimizer state (of `tx`, default `make_optimizer`), seed key."""
    tx = make_optimizer(params, config, tc) if tx is None else tx
    # a copy: the step donates the state, which must not delete the caller's arrays
    params = jax.tree.map(lambda p: jnp.array(p, jnp.float32, copy=True), params)
    state = TrainState(
        step=jnp.zeros([], jnp.int32),
        params=params,
        opt_state=tx.init(params),
        rng=jax.random.key_data(jax.random.key(tc.seed)),
    )
    return state, tx


def batch_arrays(batch: Any) -> dict[str, np.ndarray]:
    """The fields the step needs, from a `Batch` or a dict."""
    get = batch.get if isinstance(batch, dict) else lambda k: getattr(batch, k, None)
    out = {k: get(k) for k in BATCH_FIELDS}
    missing = [k for k, v in out.items() if v is None]
    if missing:
        raise ValueError(f"training batch lacks the fields {missing} (needs {list(BATCH_FIELDS)})")
    return out


def check_batch(batch: dict[str, Any], config: VideomtConfig) -> None:
    """Host-side checks of a training batch (under jit, label values can no longer be checked).

    pixel_values [B, T, H, W, C] float; mask_labels [B, T, M, H', W'] bool/float;
    class_labels [B, T, M] int in [0, num_labels) where valid; valid [B, T, M] bool.
    """
    pixels, masks = batch["pixel_values"], batch["mask_labels"]
    labels, valid = batch["class_labels"], batch["valid"]
    if pixels.ndim != 5 or pixels.shape[-1] != config.num_channels:
        raise ValueError(f"pixel_values must be [B, T, H, W, {config.num_channels}], got shape {pixels.shape}")
    if not np.issubdtype(pixels.dtype, np.floating):
        raise TypeError(f"pixel_values must be floating point (normalized), got {pixels.dtype}")
    (ph, pw), (h, w) = config.patch_hw, pixels.shape[2:4]
    if h % ph or w % pw:
        raise ValueError(f"frame size {h}x{w} is not a multiple of the patch size {ph}x{pw}")
    check_targets(masks, labels, valid, pixels.shape[:2], config.num_labels)


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
        match_per_clip=tc.match_per_clip,
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
    cfg = config  # its `dtype` is the compute dtype of training too (params and optimizer stay float32)
    deterministic = cfg.drop_path_rate == 0 and cfg.hidden_dropout_prob == 0 and cfg.attention_dropout == 0
    model = VideomtModel(cfg, deterministic=deterministic)

    def step(state: TrainState, batch: dict[str, jax.Array]) -> tuple[TrainState, dict[str, jax.Array]]:
        key = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
        grad_fn = jax.value_and_grad(loss_and_metrics, has_aux=True)
        (loss, terms), grads = grad_fn(state.params, batch, key, model, tc)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads), **terms}
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
    """A 1-D mesh named "data" over the first `num_devices` devices (all by default).

    With several processes (`jax.distributed.initialize`) the devices are global and the mesh
    must span all of them: every process then feeds its own slice of the batch (`shard_batch`).
    """
    devices = jax.devices()
    n = len(devices) if num_devices is None else num_devices
    if not 1 <= n <= len(devices):
        raise ValueError(f"asked for {n} devices, {len(devices)} available")
    if jax.process_count() > 1 and n != len(devices):
        raise ValueError(f"with {jax.process_count()} processes the mesh must use all {len(devices)} devices, not {n}")
    return Mesh(np.array(devices[:n]), ("data",))


def shard_batch(batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """This process's batch (global batch / process count, B_local) -> global arrays split over "data"."""
    local_devices = len(mesh.local_devices)
    size = batch["pixel_values"].shape[0]
    if size % local_devices:
        raise ValueError(
            f"batch size {size} (per process) is not divisible by the {local_devices} local devices of the mesh"
        )
    sharding = NamedSharding(mesh, PartitionSpec("data"))
    return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in batch.items()}


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Copy a pytree (identical on every process) onto every device of the mesh."""
    sharding = NamedSharding(mesh, PartitionSpec())
    return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), tree)
