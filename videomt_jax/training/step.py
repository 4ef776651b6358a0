"""Train state and the jitted train step (donated state, optional data-parallel sharding).

A training batch (a `Batch` or a dict) holds `class_labels`, `valid`, and one of each pair:
    pixels: "frames" uint8 [B, T, H, W, C] (normalised in the step by the program's processor,
            through `pixel_table`, bit-identical to host normalisation) or
            "pixel_values" float [B, T, H, W, C] (normalised already);
    masks:  "mask_bits" uint8 [B, T, M, H, ceil(W/8)] (`np.packbits(masks, axis=-1)` at the frame
            size, unpacked in the step) or "mask_labels" bool/float [B, T, M, H', W'].
`collate` gives the first of each (the lean format); hand-made dicts may use either.

Letters: B clips, T frames, H/W pixels, M target slots per frame, C channels.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Protocol, cast

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from videomt_jax.config import VideomtConfig
from videomt_jax.data.batching import pixel_table
from videomt_jax.modeling.content import trains_with_randomness
from videomt_jax.modeling.outputs import VideomtOutput
from videomt_jax.modeling.videomt import VideomtModel
from videomt_jax.processing import VideoProcessor, default_processor
from videomt_jax.training.config import TrainConfig
from videomt_jax.training.losses import videomt_loss
from videomt_jax.training.matcher import LossTargets, check_targets
from videomt_jax.training.optim import make_optimizer

# Each group: a batch holds exactly one of its names (module docstring).
BATCH_FIELDS: tuple[tuple[str, ...], ...] = (
    ("frames", "pixel_values"),
    ("mask_bits", "mask_labels"),
    ("class_labels",),
    ("valid",),
)
# Fields a batch may hold; absent (or None) they are not passed to the step.
OPTIONAL_BATCH_FIELDS: tuple[str, ...] = ("content_hw",)  # [B, 2] int32: each clip's own size on the canvas


def train_processor(config: VideomtConfig, processor: VideoProcessor | None = None) -> VideoProcessor:
    """The processor that normalises uint8 batch frames in the step: `processor`, else the model's."""
    return default_processor(config, processor)


class TrainStep(Protocol):
    """The jitted train step of `make_train_step`: `step(state, batch) -> (state, metrics)`."""

    def __call__(self, state: TrainState, batch: dict[str, Any]) -> tuple[TrainState, dict[str, jax.Array]]: ...

    def lower(self, *args: Any, **kwargs: Any) -> jax.stages.Lowered:
        """Lower for these (possibly abstract) arguments, to compile ahead of time (`jax.jit`'s `lower`)."""
        ...


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


def batch_field(batch: Any, names: tuple[str, ...]) -> str:
    """Which of `names` (one `BATCH_FIELDS` group) the batch holds; exactly one must be there."""
    present = [k for k in names if k in batch and batch[k] is not None]
    if len(present) != 1:
        held = sorted(k for k in batch if batch[k] is not None)
        if len(names) == 1:
            raise ValueError(f"training batch lacks the fields {list(names)} (it holds {held})")
        raise ValueError(
            f"a training batch needs exactly one of {list(names)}, got {present or 'none'} (fields {held})"
        )
    return present[0]


def batch_arrays(batch: Any) -> dict[str, np.ndarray]:
    """The fields the step needs (one name per `BATCH_FIELDS` group), from a `Batch`, a dict or an object."""
    if isinstance(batch, dict):
        fields = batch
    elif hasattr(batch, "_asdict"):  # a NamedTuple (`Batch`): its fields, never its unpacking properties
        fields = batch._asdict()
    else:
        fields = {k: getattr(batch, k, None) for group in BATCH_FIELDS for k in group}
    needed = {name: fields[name] for name in (batch_field(fields, group) for group in BATCH_FIELDS)}
    return {**needed, **{k: fields[k] for k in OPTIONAL_BATCH_FIELDS if fields.get(k) is not None}}


def _check_dtype(name: str, array: Any, ok: bool, wanted: str) -> None:
    if not ok:
        raise TypeError(f"{name} must be {wanted}, got {array.dtype} (shape {tuple(array.shape)})")


def check_batch(batch: dict[str, Any], config: VideomtConfig) -> None:
    """Host-side checks of a training batch (under jit, label values can no longer be checked).

    frames [B, T, H, W, C] uint8 or pixel_values [B, T, H, W, C] float; mask_bits
    [B, T, M, H, ceil(W/8)] uint8 or mask_labels [B, T, M, H', W'] bool/float; class_labels
    [B, T, M] int in [0, num_labels) where valid; valid [B, T, M] bool.
    """
    pixel_name, mask_name = batch_field(batch, BATCH_FIELDS[0]), batch_field(batch, BATCH_FIELDS[1])
    pixels, masks = batch[pixel_name], batch[mask_name]
    labels, valid = batch["class_labels"], batch["valid"]
    if pixels.ndim != 5 or pixels.shape[-1] != config.num_channels:
        raise ValueError(f"{pixel_name} must be [B, T, H, W, {config.num_channels}], got shape {pixels.shape}")
    if pixel_name == "frames":
        _check_dtype("frames", pixels, pixels.dtype == np.uint8, "uint8 (0..255; float pixels go in pixel_values)")
    else:
        wanted = "floating point (normalized; uint8 frames go in frames)"
        _check_dtype("pixel_values", pixels, np.issubdtype(pixels.dtype, np.floating), wanted)
    (ph, pw), (h, w) = config.patch_hw, pixels.shape[2:4]
    if h % ph or w % pw:
        raise ValueError(f"frame size {h}x{w} is not a multiple of the patch size {ph}x{pw}")
    if mask_name == "mask_bits":
        _check_dtype("mask_bits", masks, masks.dtype == np.uint8, "uint8 (np.packbits of the masks along W)")
        if masks.ndim != 5 or tuple(masks.shape[3:]) != (h, -(-w // 8)):
            raise ValueError(
                f"mask_bits must be [B, T, M, H, ceil(W/8)] = [B, T, M, {h}, {-(-w // 8)}] for {h}x{w} frames, "
                f"got shape {masks.shape}"
            )
        masks = np.broadcast_to(np.False_, (*masks.shape[:4], w))  # the unpacked shape, for check_targets
    check_targets(masks, labels, valid, pixels.shape[:2], config.num_labels)
    content = batch.get("content_hw")
    if content is not None:
        content = np.asarray(content)
        if content.shape != (pixels.shape[0], 2) or not np.issubdtype(content.dtype, np.integer):
            raise ValueError(
                f"content_hw must be [B, 2] = [{pixels.shape[0]}, 2] ints, got {content.dtype} {content.shape}"
            )
        if (content < (ph, pw)).any() or (content > (h, w)).any() or (content % (ph, pw)).any():
            raise ValueError(
                f"content_hw must be multiples of the patch size {ph}x{pw} within the {h}x{w} frames, "
                f"got {content.tolist()}"
            )


def step_inputs(batch: dict[str, jax.Array], table: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(normalised pixels [B, T, H, W, C] float32, masks [B, T, M, H, W]) from a batch in either format.

    table [256, C] float32: `pixel_table(processor)`, for uint8 `frames`."""
    if "frames" in batch:
        pixels = table[batch["frames"].astype(jnp.int32), jnp.arange(table.shape[1])]  # exact host numbers
    else:
        pixels = batch["pixel_values"]
    if "mask_bits" in batch:
        width = pixels.shape[3]
        masks = jnp.unpackbits(batch["mask_bits"], axis=-1, count=width).astype(jnp.bool_)
    else:
        masks = batch["mask_labels"]
    return pixels, masks


def loss_and_metrics(
    params: Any,
    batch: dict[str, jax.Array],
    key: jax.Array,
    model: VideomtModel,
    tc: TrainConfig,
    table: jax.Array | None = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Loss and its terms; `table` [256, C] (`pixel_table`) normalises uint8 `frames` (default: the
    processor of the model config)."""
    cfg = model.config
    if table is None:
        table = jnp.asarray(pixel_table(train_processor(cfg)))
    pixels, masks = step_inputs(batch, table)
    drop_key, point_key = jax.random.split(key)
    content_hw = batch.get("content_hw")  # [B, 2] or None (every clip fills the frames)
    # `apply` without `mutable` returns the model's output alone
    out = cast(
        VideomtOutput,
        model.apply(
            {"params": params},
            pixels,
            interpolate_pos_encoding=True,
            return_aux=tc.deep_supervision,
            content_hw=content_hw,
            rngs={"dropout": drop_key},
        ),
    )
    labels = jnp.where(batch["valid"], batch["class_labels"], 0)
    content = None if content_hw is None else content_hw / jnp.asarray(pixels.shape[2:4], jnp.float32)
    targets = LossTargets(mask_labels=masks, class_labels=labels, valid=batch["valid"], content=content)
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
        matching=tc.matching,
    )
    return total, terms


def make_train_step(
    config: VideomtConfig,
    tc: TrainConfig,
    tx: optax.GradientTransformation,
    mesh: Mesh | None = None,
    processor: VideoProcessor | None = None,
) -> TrainStep:
    """`step(state, batch) -> (state, metrics)`, jitted with the state donated.

    `processor` (default: the model's, `train_processor`) normalises uint8 `frames` on the
    device. With a mesh, every batch array is split over its "data" axis and the state replicated;
    XLA inserts the gradient all-reduce, and the loss normaliser (target masks in the batch) is global.
    """
    cfg = config  # its `dtype` is the compute dtype of training too (params and optimizer stay float32)
    table = pixel_table(train_processor(cfg, processor))  # [256, C]
    deterministic = not trains_with_randomness(cfg)  # dropout, drop-path, DINOv3's rotary rescale
    model = VideomtModel(cfg, deterministic=deterministic, remat=tc.remat)

    def step(state: TrainState, batch: dict[str, jax.Array]) -> tuple[TrainState, dict[str, jax.Array]]:
        key = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
        grad_fn = jax.value_and_grad(loss_and_metrics, has_aux=True)
        (loss, terms), grads = grad_fn(state.params, batch, key, model, tc, jnp.asarray(table))
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads), **terms}
        return dataclasses.replace(state, step=state.step + 1, params=params, opt_state=opt_state), metrics

    if mesh is None:
        return jax.jit(step, donate_argnums=0)
    replicated = NamedSharding(mesh, PartitionSpec())
    data = NamedSharding(mesh, PartitionSpec("data"))
    return jax.jit(
        step,
        in_shardings=(replicated, data),  # a prefix: every array of the batch dict, either format
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
    size = batch["class_labels"].shape[0]
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
