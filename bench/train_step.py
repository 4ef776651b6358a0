"""Time one train step of a recipe at its real size (random weights and targets), on this host.

    python bench/train_step.py ytvis19-vits --clips 1 8 --remat full --steps 3
    python bench/train_step.py ytvis19-vits --clips 1 --dtype float32   # CPU: bfloat16 is emulated

The step is the one `videomt-jax train` runs (`make_program`: loss with deep supervision, AdamW,
clipping), fed the batch format `train` feeds (`memory.abstract_batch`) filled with random values:
random frames, random target masks in the valid slots, random classes. Prints one JSON line per
setting: compile seconds, seconds per step (median of `--steps` after one warm-up step), clips/s,
the compiled step's peak memory (XLA's analysis) and the analytic model FLOPs of one clip
(`videomt_bench.flops`: forward + the deep-supervision heads, x3 for forward and backward, not
counting the recomputation of remat).

Letters: B clips, T frames, H/W canvas, M target slots.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

import jax
import numpy as np

from videomt_bench.flops import flops_breakdown
from videomt_jax.modeling.family import init_params
from videomt_jax.training.loop import make_program
from videomt_jax.training.memory import GIB, abstract_batch, peak_bytes
from videomt_jax.training.recipes import load_recipe
from videomt_jax.training.step import create_train_state

HEAD_PARTS = ("heads", "upscale", "mask_einsum")  # what each deep-supervision prediction adds


def random_batch(shapes: dict[str, jax.ShapeDtypeStruct], num_labels: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Arrays of the given shapes: uint8 fields random bytes, `valid` half True, classes in range."""
    rng = np.random.default_rng(seed)
    fill = {
        "class_labels": lambda s: rng.integers(0, num_labels, s.shape, dtype=np.int32),
        "valid": lambda s: rng.random(s.shape) < 0.5,
    }
    out = {k: fill[k](s) if k in fill else rng.integers(0, 256, s.shape, dtype=np.uint8) for k, s in shapes.items()}
    if "mask_bits" in out:  # an empty mask where the slot is not valid (what collate writes)
        out["mask_bits"] *= out["valid"][..., None, None].astype(np.uint8)
    return out


def training_flops_per_clip(config: Any, hw: tuple[int, int], frames: int, aux_predictions: int) -> int:
    """3 x (forward + the heads of each deep-supervision prediction), analytic, for one clip."""
    parts = flops_breakdown(config, *hw, frames)
    forward = sum(parts.values()) + aux_predictions * sum(parts[k] for k in HEAD_PARTS)
    return 3 * forward


def time_step(name: str, clips: int, remat: str, dtype: str | None, steps: int) -> dict[str, Any]:
    recipe = load_recipe(name)
    changes = {"dtype": dtype} if dtype else {}
    model, tc, hw = recipe.model.replace(**changes), recipe.train.replace(remat=remat), recipe.data.image_hw
    params = jax.jit(lambda k: init_params(model, k, image_hw=hw))(jax.random.key(0))
    program = make_program(model, tc, params, processor=recipe.processor)
    state, _ = create_train_state(params, model, tc, program.tx)
    del params
    shapes = abstract_batch(clips, tc.num_frames, hw, recipe.max_instances)
    batch = jax.device_put(random_batch(shapes, model.num_labels))
    start = time.perf_counter()
    compiled = program.step.lower(state, batch).compile()
    compile_s = time.perf_counter() - start
    memory = compiled.memory_analysis()
    times = []
    for _ in range(steps + 1):  # the first is a warm-up
        start = time.perf_counter()
        state, metrics = compiled(state, batch)
        loss = float(jax.block_until_ready(metrics["loss"]))
        times.append(time.perf_counter() - start)
    if not np.isfinite(loss):
        raise RuntimeError(f"{name}: the step's loss is {loss}")
    step_s = statistics.median(times[1:])
    aux = model.num_blocks - 1 if tc.drop_last_aux else model.num_blocks
    flops = training_flops_per_clip(model, hw, tc.num_frames, aux if tc.deep_supervision else 0) * clips
    return {
        "recipe": name,
        "clips": clips,
        "frames": tc.num_frames,
        "hw": list(hw),
        "remat": remat,
        "dtype": model.dtype,
        "backend": jax.default_backend(),
        "compile_s": round(compile_s, 1),
        "step_s": round(step_s, 2),
        "step_s_all": [round(t, 2) for t in times],
        "clips_per_s": round(clips / step_s, 4),
        "peak_gib": round(peak_bytes(memory) / GIB, 2),
        "model_flops": flops,
        "model_tflops_per_s": round(flops / step_s / 1e12, 3),
        "loss": round(loss, 4),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipes", nargs="+")
    parser.add_argument(
        "--clips", type=int, nargs="+", default=[1], help="clips per step (one device of the global batch: 1)"
    )
    parser.add_argument("--remat", nargs="+", default=["full"])
    parser.add_argument("--dtype", help="override the recipe's compute dtype (e.g. float32 on CPU)")
    parser.add_argument("--steps", type=int, default=3, help="timed steps after one warm-up step")
    args = parser.parse_args(argv)
    if min(args.clips) < 1 or args.steps < 1:
        parser.error(f"--clips and --steps must be >= 1, got {args.clips} and {args.steps}")
    for name in args.recipes:
        for remat in args.remat:
            for clips in args.clips:
                print(json.dumps(time_step(name, clips, remat, args.dtype, args.steps)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
