"""Train state and the jitted train step (donated state; data parallel, optionally with the state sharded).

A training batch (a `Batch` or a dict) holds `class_labels`, `valid`, and one of each pair:
    pixels: "frames" uint8 [B, T, H, W, C] (normalised in the step by the program's processor,
            through `pixel_table`, bit-identical to host normalisation) or
            "pixel_values" float [B, T, H, W, C] (normalised already);
    masks:  "mask_bits" uint8 [B, T, M, H, ceil(W/8)] (`np.packbits(masks, axis=-1)` at the frame
            size, unpacked in the step) or "mask_labels" bool/float [B, T, M, H', W'].
`collate` gives the first of each (the lean format); hand-made dicts may use either.

On a mesh (`train_mesh`: axes "data" x "fsdp") the batch is split over every device and each
parameter, its gradient and its Adam moments over the "fsdp" axis (`state_shardings`, FSDP); XLA
gathers a parameter where a layer needs it. fsdp = 1 keeps the state replicated (data parallel).

Letters: B clips, T frames, H/W pixels, M target slots per frame, C channels.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from typing import Any, Protocol, cast

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import linen as nn
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
    device. With a mesh (`train_mesh`, or the 1-D `data_mesh`), every batch array is split over all
    devices and the state laid out by `state_shardings` (replicated unless the mesh has an "fsdp"
    axis of size > 1); XLA inserts the gradient all-reduce (reduce-scatter to the sharded
    gradients with fsdp) and the parameter all-gathers, and the loss normaliser (target masks in
    the batch) is global.
    """
    cfg = config  # its `dtype` is the compute dtype of training too (params and optimizer stay float32)
    table = pixel_table(train_processor(cfg, processor))  # [256, C]
    deterministic = not trains_with_randomness(cfg)  # dropout, drop-path, DINOv3's rotary rescale
    model = VideomtModel(cfg, deterministic=deterministic, remat=tc.remat)

    def step(
        state: TrainState, batch: dict[str, jax.Array], shardings: TrainState | None = None, mesh: Mesh | None = None
    ) -> tuple[TrainState, dict[str, jax.Array]]:
        key = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
        grad_fn = jax.value_and_grad(loss_and_metrics, has_aux=True)
        with split_activations(mesh):
            (loss, terms), grads = grad_fn(state.params, batch, key, model, tc, jnp.asarray(table))
        if shardings is not None:  # gradients live split as their parameters (reduce-scatter, not all-reduce)
            grads = jax.lax.with_sharding_constraint(grads, shardings.params)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads), **terms}
        return dataclasses.replace(state, step=state.step + 1, params=params, opt_state=opt_state), metrics

    if mesh is None:
        return jax.jit(step, donate_argnums=0)
    return MeshStep(step, mesh)


# Modules whose outputs (leading axis: clips, or clips x frames) stay split over every device of an
# FSDP mesh: XLA then gathers each layer's weights where it runs instead of the activations.
BATCH_SPLIT_MODULES: tuple[type[nn.Module], ...] = (nn.Dense, nn.Conv, nn.ConvTranspose)


def split_activations(mesh: Mesh | None) -> Any:
    """A context in which the outputs of `BATCH_SPLIT_MODULES` keep their leading (batch) axis split over
    all devices of `mesh` (`flax.linen.intercept_methods`), when its "fsdp" axis is > 1; else nothing.

    Without it XLA's partitioner, meeting a batch-split activation and a weight split over "fsdp",
    gathers the activations of the whole batch onto each device (measured: ViT-g at 1 clip per device
    then needed 78 GiB of temporaries per device, 13 GiB with it) instead of the weight."""
    if mesh is None or dict(mesh.shape).get(FSDP_AXIS, 1) == 1:
        return contextlib.nullcontext()
    sharding = batch_sharding(mesh)
    devices = mesh.devices.size

    def keep_split(next_fun: Any, args: Any, kwargs: Any, context: Any) -> Any:
        out = next_fun(*args, **kwargs)
        if context.method_name != "__call__" or not isinstance(context.module, BATCH_SPLIT_MODULES):
            return out
        if not isinstance(out, jax.Array) or out.ndim < 2 or out.shape[0] % devices:
            return out
        return jax.lax.with_sharding_constraint(out, sharding)

    return nn.intercept_methods(keep_split)


class MeshStep:
    """A train step on a mesh: jitted, for each state layout it meets (one per program in practice),
    with the state's `state_shardings` as input and output shardings and the batch split over all
    devices (`batch_sharding`). Calls and `lower` share jax's trace and compilation caches."""

    def __init__(self, step: Any, mesh: Mesh):
        self.step, self.mesh = step, mesh
        self._jitted: dict[Any, Any] = {}

    def jitted(self, state: Any) -> Any:
        """The jitted step for states shaped as `state` (arrays or `jax.ShapeDtypeStruct`s)."""
        key = (jax.tree.structure(state), tuple((x.shape, str(x.dtype)) for x in jax.tree.leaves(state)))
        if key not in self._jitted:
            shardings = state_shardings(state, self.mesh)
            self._jitted[key] = jax.jit(
                functools.partial(self.step, shardings=shardings, mesh=self.mesh),
                in_shardings=(shardings, batch_sharding(self.mesh)),  # a prefix: every array of the batch dict
                out_shardings=(shardings, NamedSharding(self.mesh, PartitionSpec())),
                donate_argnums=0,
            )
        return self._jitted[key]

    def __call__(self, state: TrainState, batch: dict[str, Any]) -> tuple[TrainState, dict[str, jax.Array]]:
        return cast(tuple[TrainState, dict[str, jax.Array]], self.jitted(state)(state, batch))

    def lower(self, state: Any, batch: Any) -> jax.stages.Lowered:
        return cast(jax.stages.Lowered, self.jitted(state).lower(state, batch))


DATA_AXIS, FSDP_AXIS = "data", "fsdp"  # the mesh axes: batch over both; the state split over FSDP_AXIS


def _mesh_devices(num_devices: int | None) -> list[jax.Device]:
    """The first `num_devices` devices (all by default); with several processes, all of them."""
    devices = jax.devices()
    n = len(devices) if num_devices is None else num_devices
    if not 1 <= n <= len(devices):
        raise ValueError(f"asked for {n} devices, {len(devices)} available")
    if jax.process_count() > 1 and n != len(devices):
        raise ValueError(f"with {jax.process_count()} processes the mesh must use all {len(devices)} devices, not {n}")
    return devices[:n]


def train_mesh(num_devices: int | None = None, fsdp: int = 1) -> Mesh:
    """A (data, fsdp) mesh over the first `num_devices` devices (all by default): `fsdp` consecutive
    devices (one host's, when fsdp <= devices per host) split the state between them, and
    num_devices / fsdp such groups share the batch. fsdp 1: plain data parallel.

    With several processes (`jax.distributed.initialize`) the devices are global and the mesh
    must span all of them: every process then feeds its own slice of the batch (`shard_batch`).
    """
    devices = _mesh_devices(num_devices)
    if isinstance(fsdp, bool) or not isinstance(fsdp, int) or fsdp < 1 or len(devices) % fsdp:
        raise ValueError(
            f"fsdp={fsdp!r} must be a positive divisor of the {len(devices)} devices of the mesh "
            f"(the devices that split the parameters and optimizer state; 1: replicated)"
        )
    return Mesh(np.array(devices).reshape(len(devices) // fsdp, fsdp), (DATA_AXIS, FSDP_AXIS))


def data_mesh(num_devices: int | None = None) -> Mesh:
    """A 1-D mesh named "data" over the first `num_devices` devices (all by default): data parallel,
    the state replicated (`train_mesh(n)` is the same with an "fsdp" axis of size 1)."""
    return Mesh(np.array(_mesh_devices(num_devices)), (DATA_AXIS,))


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """The batch's sharding: the clip axis split over every device of the mesh (all its axes)."""
    return NamedSharding(mesh, PartitionSpec(tuple(mesh.axis_names)))


def fsdp_spec(shape: tuple[int, ...], size: int) -> PartitionSpec:
    """Split the largest dimension divisible by `size` over "fsdp" (the last of equal ones): a stacked
    [L, D, F] block parameter splits along a layer's own axes, so the layer loop gathers one layer at a
    time. No dimension divisible, or size 1: replicated."""
    dims = [d for d, n in enumerate(shape) if n >= size > 1 and n % size == 0]
    if not dims:
        return PartitionSpec()
    best = max(dims, key=lambda d: (shape[d], d))
    return PartitionSpec(*([None] * best), FSDP_AXIS)


def state_shardings(state: Any, mesh: Mesh) -> Any:
    """A `TrainState` of `NamedSharding`s for `state` (arrays or shapes): each parameter and optimizer
    leaf split by `fsdp_spec` over the mesh's "fsdp" axis (Adam's moments as their parameter), the
    step and the PRNG key replicated. A mesh without that axis (or of size 1) replicates everything."""
    size = dict(mesh.shape).get(FSDP_AXIS, 1)
    replicated = NamedSharding(mesh, PartitionSpec())

    def split(x: Any) -> NamedSharding:
        return NamedSharding(mesh, fsdp_spec(tuple(x.shape), size))

    return dataclasses.replace(jax.tree.map(split, state), step=replicated, rng=replicated)


def place_state(state: TrainState, mesh: Mesh | None) -> TrainState:
    """The state on the devices it trains on: committed to the first local device without a mesh,
    else laid out by `state_shardings` (every process holds the same full state; each device receives
    only its own slice)."""
    if mesh is None:
        return jax.device_put(state, jax.local_devices()[0])

    def put(x: Any, sharding: NamedSharding) -> jax.Array:
        host = np.asarray(x)
        return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

    return cast(TrainState, jax.tree.map(put, state, state_shardings(state, mesh)))


def shard_batch(batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """This process's batch (global batch / process count, B_local) -> global arrays split over the mesh."""
    local_devices = len(mesh.local_devices)
    size = batch["class_labels"].shape[0]
    if size % local_devices:
        raise ValueError(
            f"batch size {size} (per process) is not divisible by the {local_devices} local devices of the mesh"
        )
    sharding = batch_sharding(mesh)
    return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in batch.items()}


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Copy a pytree (identical on every process) onto every device of the mesh."""
    sharding = NamedSharding(mesh, PartitionSpec())
    return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), tree)
