"""Peak memory of one train step from XLA's compiled memory analysis, without running it.

The step is lowered and compiled for abstract inputs (`jax.ShapeDtypeStruct`: no parameter or
batch is ever allocated), so a ViT-L step at the paper's sizes can be sized on a CPU host:

    python -m videomt_jax.training.memory ytvis19-vits ytvis19-vitl --remat none full --clips 1

`--clips` sizes one device of a data-parallel run (the recipes' batch of 8 clips is global).

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

from videomt_jax.modeling.family import init_params
from videomt_jax.training.loop import make_program
from videomt_jax.training.step import create_train_state

GIB = 1024**3


def abstract_batch(
    batch: int, frames: int, hw: tuple[int, int], slots: int, content: bool = False
) -> dict[str, jax.ShapeDtypeStruct]:
    """The lean batch `train` feeds (`data.batching.collate`): uint8 frames, masks packed along W;
    with `content`, the clips' own sizes on the canvas (a batch of clips smaller than the canvas)."""
    h, w = hw
    out = {
        "frames": jax.ShapeDtypeStruct((batch, frames, h, w, 3), jnp.uint8),
        "mask_bits": jax.ShapeDtypeStruct((batch, frames, slots, h, -(-w // 8)), jnp.uint8),
        "class_labels": jax.ShapeDtypeStruct((batch, frames, slots), jnp.int32),
        "valid": jax.ShapeDtypeStruct((batch, frames, slots), jnp.bool_),
    }
    if content:
        out["content_hw"] = jax.ShapeDtypeStruct((batch, 2), jnp.int32)
    return out


def peak_bytes(stats: Any) -> int:
    """arguments + outputs - aliased + temporaries of a compiled `memory_analysis()`."""
    return int(
        stats.argument_size_in_bytes + stats.output_size_in_bytes - stats.alias_size_in_bytes + stats.temp_size_in_bytes
    )


def train_step_memory(
    recipe: Any,
    remat: str = "none",
    clips: int | None = None,
    canvas: tuple[int, int] | None = None,
    content: bool = False,
    **model_changes: Any,
) -> dict[str, Any]:
    """Compile the recipe's train step (its frames, canvas, target slots; `clips` per step, default
    the recipe's batch) for abstract inputs.

    Returns bytes: arguments (state + batch), outputs, aliased (donated state reused for the new
    one), temporaries, and peak = arguments + outputs - aliased + temporaries; plus the compile time.
    """
    model = recipe.model.replace(**model_changes)
    tc, hw = recipe.train.replace(remat=remat), canvas or recipe.data.image_hw
    params = jax.eval_shape(lambda k: init_params(model, k, image_hw=hw), jax.random.key(0))
    program = make_program(model, tc, params)
    state = jax.eval_shape(lambda p: create_train_state(p, model, tc, program.tx)[0], params)
    clips = tc.batch_size if clips is None else clips
    batch = abstract_batch(clips, tc.num_frames, hw, recipe.max_instances, content)
    start = time.perf_counter()
    stats = program.step.lower(state, batch).compile().memory_analysis()
    if stats is None:
        raise RuntimeError(f"the {jax.default_backend()} backend gives no memory analysis of a compiled step")
    out = {
        "recipe": recipe.name,
        "remat": remat,
        "batch": [clips, tc.num_frames, *hw],
        "content": content,
        "dtype": model.dtype,
        "arguments": int(stats.argument_size_in_bytes),
        "outputs": int(stats.output_size_in_bytes),
        "aliased": int(stats.alias_size_in_bytes),
        "temporaries": int(stats.temp_size_in_bytes),
        "compile_s": round(time.perf_counter() - start, 1),
    }
    out["peak"] = peak_bytes(stats)
    return out


def main(argv: list[str] | None = None) -> int:
    from videomt_jax.training.recipes import load_recipe

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipes", nargs="+")
    parser.add_argument("--remat", nargs="+", default=["none", "full"])
    parser.add_argument("--clips", type=int, help="clips per step (default: the recipe's batch)")
    parser.add_argument("--attention-impl", help="override the model's attention_impl (e.g. einsum)")
    parser.add_argument("--canvas", type=int, nargs=2, metavar=("H", "W"), help="a bucket canvas (default the largest)")
    parser.add_argument("--content", action="store_true", help="clips smaller than the canvas (content regions)")
    args = parser.parse_args(argv)
    changes = {"attention_impl": args.attention_impl} if args.attention_impl else {}
    for name in args.recipes:
        for remat in args.remat:
            canvas = tuple(args.canvas) if args.canvas else None
            row = train_step_memory(load_recipe(name), remat, args.clips, canvas, args.content, **changes)
            print(json.dumps({**row, "peak_gib": round(row["peak"] / GIB, 2)}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
