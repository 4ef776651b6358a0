"""Peak memory of one train step from XLA's compiled memory analysis, without running it.

The step is lowered and compiled for abstract inputs (`jax.ShapeDtypeStruct`: no parameter or
batch is ever allocated), so a ViT-L step at the paper's sizes can be sized on a CPU host:

    python -m videomt_jax.training.memory ytvis19-vits ytvis19-vitl --remat none full --clips 1

`--clips` sizes one device of a data-parallel run (the recipes' batch of 8 clips is global).
`--devices N --fsdp F` compiles the step for a (data, fsdp) mesh of N devices (on CPU:
XLA_FLAGS=--xla_force_host_platform_device_count=N before jax starts) with the state split over F
of them; the figures are per device. `check_step_fits` is `fit`'s pre-flight check: the compiled
step against the memory of the devices it is about to run on.

Letters: B clips, T frames, H/W canvas, M target slots. The figures are for the backend that
compiles (on CPU: XLA:CPU's buffer assignment and fusion, attention as `attention_impl` picks on
CPU); a GPU compile of the same step differs (fusion, cuDNN attention).
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, PartitionSpec

from videomt_jax.modeling.family import init_params
from videomt_jax.training.config import TrainConfig
from videomt_jax.training.optim import make_optimizer
from videomt_jax.training.step import (
    TrainStep,
    batch_sharding,
    create_train_state,
    fsdp_spec,
    make_train_step,
    state_shardings,
    train_mesh,
)
from videomt_jax.utils.memory import GIB, device_memory


def abstract_batch(
    batch: int, frames: int, hw: tuple[int, int], slots: int, content: bool = False, sharding: Any = None
) -> dict[str, jax.ShapeDtypeStruct]:
    """The lean batch `train` feeds (`data.batching.collate`): uint8 frames, masks packed along W;
    with `content`, the clips' own sizes on the canvas (a batch of clips smaller than the canvas);
    `sharding`: how the batch lies on a mesh (`step.batch_sharding`), None on one device."""
    h, w = hw
    shapes = {
        "frames": ((batch, frames, h, w, 3), jnp.uint8),
        "mask_bits": ((batch, frames, slots, h, -(-w // 8)), jnp.uint8),
        "class_labels": ((batch, frames, slots), jnp.int32),
        "valid": ((batch, frames, slots), jnp.bool_),
    }
    if content:
        shapes["content_hw"] = ((batch, 2), jnp.int32)
    return {k: jax.ShapeDtypeStruct(shape, dtype, sharding=sharding) for k, (shape, dtype) in shapes.items()}


def abstract_state(state: Any, mesh: Mesh | None) -> Any:
    """Shapes of a train state (arrays or shapes), laid out as the step takes it on `mesh`."""
    if mesh is None:
        return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), state)
    return jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), state, state_shardings(state, mesh)
    )


def peak_bytes(stats: Any) -> int:
    """arguments + outputs - aliased + temporaries of a compiled `memory_analysis()`."""
    return int(
        stats.argument_size_in_bytes + stats.output_size_in_bytes - stats.alias_size_in_bytes + stats.temp_size_in_bytes
    )


def state_bytes(state: Any, fsdp: int = 1) -> int:
    """Bytes of a train state's parameters and optimizer state on one device when split over `fsdp`
    devices as `state_shardings` splits it (the analytic state part of a step's arguments)."""

    def per_device(x: Any) -> int:
        split = fsdp if fsdp_spec(tuple(x.shape), fsdp) != PartitionSpec() else 1
        return int(np.prod(x.shape)) * np.dtype(x.dtype).itemsize // split

    return sum(per_device(x) for x in jax.tree.leaves((state.params, state.opt_state)))


def train_step_memory(
    recipe: Any,
    remat: str = "none",
    clips: int | None = None,
    canvas: tuple[int, int] | None = None,
    content: bool = False,
    devices: int = 1,
    fsdp: int = 1,
    **model_changes: Any,
) -> dict[str, Any]:
    """Compile the recipe's train step (its frames, canvas, target slots; `clips` per device, default
    the recipe's batch over `devices`) for abstract inputs, on one device or a `train_mesh(devices, fsdp)`.

    Returns bytes per device: arguments (state + batch), outputs, aliased (donated state reused for
    the new one), temporaries, and peak = arguments + outputs - aliased + temporaries; the state part
    (`state_bytes`); plus the compile time.
    """
    model = recipe.model.replace(**model_changes)
    tc, hw = recipe.train.replace(remat=remat, fsdp=fsdp), canvas or recipe.data.image_hw
    mesh = None if devices == 1 else train_mesh(devices, fsdp)
    if clips is None:
        if tc.batch_size % devices:
            raise ValueError(f"the recipe's batch of {tc.batch_size} clips does not split over {devices} devices")
        clips = tc.batch_size // devices
    params = jax.eval_shape(lambda k: init_params(model, k, image_hw=hw), jax.random.key(0))
    tx = make_optimizer(params, model, tc)
    step = make_train_step(model, tc, tx, mesh, recipe.processor)
    state = abstract_state(jax.eval_shape(lambda p: create_train_state(p, model, tc, tx)[0], params), mesh)
    sharding = None if mesh is None else batch_sharding(mesh)
    batch = abstract_batch(clips * devices, tc.num_frames, hw, recipe.max_instances, content, sharding)
    start = time.perf_counter()
    stats = step.lower(state, batch).compile().memory_analysis()
    if stats is None:
        raise RuntimeError(f"the {jax.default_backend()} backend gives no memory analysis of a compiled step")
    out = {
        "recipe": recipe.name,
        "remat": remat,
        "devices": devices,
        "fsdp": fsdp,
        "batch": [clips, tc.num_frames, *hw],  # per device
        "content": content,
        "dtype": model.dtype,
        "params": sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params)),
        "state": state_bytes(state, fsdp),
        "arguments": int(stats.argument_size_in_bytes),
        "outputs": int(stats.output_size_in_bytes),
        "aliased": int(stats.alias_size_in_bytes),
        "temporaries": int(stats.temp_size_in_bytes),
        "compile_s": round(time.perf_counter() - start, 1),
    }
    out["peak"] = peak_bytes(stats)
    return out


def check_step_fits(step: TrainStep, state: Any, batch: dict[str, Any], mesh: Mesh | None, tc: TrainConfig) -> str:
    """Compile `step` for the shapes of `state` and this process's first `batch` (as `fit` feeds them;
    the call that follows reuses the compilation) and compare XLA's memory analysis with the memory
    of the local devices. Too little: a one-line ValueError with the knobs that help; else a line
    saying what the step needs. CPU devices share the host's RAM: their needs add up, against the RAM
    available plus what the state already holds."""
    sharding = None if mesh is None else batch_sharding(mesh)
    global_batch = {
        k: jax.ShapeDtypeStruct((v.shape[0] * jax.process_count(), *v.shape[1:]), v.dtype, sharding=sharding)
        for k, v in ((k, np.asarray(v)) for k, v in batch.items())
    }
    spec = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state)
    stats = step.lower(spec, global_batch).compile().memory_analysis()
    if stats is None:
        return f"memory: the {jax.default_backend()} backend gives no memory analysis; not checked"
    device = jax.local_devices()[0]
    have, what = device_memory(device)
    if have is None:
        return f"memory: this machine does not say how much memory {device} has; not checked"
    per_device = peak_bytes(stats)
    local = len(mesh.local_devices) if mesh is not None else 1
    need = per_device
    if device.platform == "cpu":  # every CPU device allocates from the host's RAM, which holds the state already
        need *= local
        have += sum(s.data.nbytes for x in jax.tree.leaves(state) for s in x.addressable_shards)
        what += " (with the train state it holds)"
    size = f"{per_device / GIB:.1f} GiB per device" + (f" x {local} devices" if need > per_device else "")
    clips = batch["class_labels"].shape[0] * jax.process_count()
    devices = 1 if mesh is None else mesh.devices.size
    if need > have:
        raise ValueError(
            f"the train step needs {size} (XLA's memory analysis: {stats.argument_size_in_bytes / GIB:.1f} GiB "
            f"state and batch, {stats.temp_size_in_bytes / GIB:.1f} GiB temporaries), more than the "
            f"{have / GIB:.1f} GiB {what}: lower train.batch_size (now {clips}; {clips // devices} per device), "
            f"set train.remat (now {tc.remat!r}; 'full' keeps the least), or split the state over more devices "
            f"(train.fsdp, now {tc.fsdp}, with --devices)"
        )
    where = "one device" if mesh is None else " x ".join(f"{k} {v}" for k, v in mesh.shape.items())
    return (
        f"memory (mesh {where}, remat {tc.remat!r}): the train step needs {size} of the {have / GIB:.1f} GiB "
        f"{what}, by XLA's memory analysis"
    )


def main(argv: list[str] | None = None) -> int:
    from videomt_jax.training.recipes import load_recipe

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipes", nargs="+")
    parser.add_argument("--remat", nargs="+", default=["none", "full"])
    parser.add_argument("--clips", type=int, help="clips per device (default: the recipe's batch over the devices)")
    parser.add_argument("--devices", type=int, default=1, help="devices of the (data, fsdp) mesh (default 1)")
    parser.add_argument("--fsdp", type=int, nargs="+", default=[1], help="sizes of the state-splitting axis")
    parser.add_argument("--attention-impl", help="override the model's attention_impl (e.g. einsum)")
    parser.add_argument("--canvas", type=int, nargs=2, metavar=("H", "W"), help="a bucket canvas (default the largest)")
    parser.add_argument("--content", action="store_true", help="clips smaller than the canvas (content regions)")
    args = parser.parse_args(argv)
    if args.devices > 1:  # CPU: that many host devices (before any backend starts; accelerators: no effect)
        jax.config.update("jax_num_cpu_devices", args.devices)
    changes = {"attention_impl": args.attention_impl} if args.attention_impl else {}
    for name in args.recipes:
        for remat in args.remat:
            canvas = tuple(args.canvas) if args.canvas else None
            for fsdp in args.fsdp:
                recipe = load_recipe(name)
                row = train_step_memory(recipe, remat, args.clips, canvas, args.content, args.devices, fsdp, **changes)
                print(json.dumps({**row, "peak_gib": round(row["peak"] / GIB, 2)}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
