"""Per-device memory of the train step, from XLA's analysis, for ViT-S/B/L and two giant backbones
with the state replicated or split (FSDP): the table of docs/training.md, "Sharded state (FSDP)".

    python bench/train_memory.py vits vitl --remat none full --devices 8 --fsdp 1 8
    python bench/train_memory.py vitg 7b --remat full              # one device, no mesh

Models: the paper's ViT-S/B/L recipes (`ytvis19-vit{s,b,l}`) and, on the ViT-L recipes, DINOv2-g
with registers (EoMT-g / VidEoMT-g: hidden 1536, 40 layers, 24 heads, SwiGLU MLP 4096) and a
DINOv3 7B-shaped backbone (hidden 4096, 40 layers, 32 heads, SwiGLU FFN 8192, patch 16,
4 registers). Each: the recipe's frames (5), canvas (768x768) and target slots, `--clips` clips
per device (default 1), bfloat16 compute. Nothing is allocated: the step is compiled for abstract
inputs (`training.memory.train_step_memory`); on CPU, `--devices N` makes N host devices. Prints
one JSON line per setting, figures in bytes per device (`state`: the parameters and both Adam
moments held on one device).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import jax

# name -> (the recipe whose data and training it takes, model fields changed)
MODELS: dict[str, tuple[str, dict[str, Any]]] = {
    "vits": ("ytvis19-vits", {}),
    "vitb": ("ytvis19-vitb", {}),
    "vitl": ("ytvis19-vitl", {}),
    "vitg": (
        "ytvis19-vitl",
        dict(hidden_size=1536, num_hidden_layers=40, num_attention_heads=24, use_swiglu_ffn=True),
    ),
    "7b": (
        "ytvis19-dinov3-vitl",
        dict(
            hidden_size=4096, num_hidden_layers=40, num_attention_heads=32, use_swiglu_ffn=True, intermediate_size=8192
        ),
    ),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", choices=sorted(MODELS))
    parser.add_argument("--remat", nargs="+", default=["none", "dots_no_batch", "full"])
    parser.add_argument("--devices", type=int, default=1, help="devices of the (data, fsdp) mesh")
    parser.add_argument("--fsdp", type=int, nargs="+", default=[1], help="sizes of the state-splitting axis")
    parser.add_argument("--clips", type=int, default=1, help="clips per device")
    parser.add_argument(
        "--attention-impl",
        default="einsum",
        help="attention (default einsum, TPU's: CPU's own einsum_map loops over the batch, which a mesh gathers)",
    )
    args = parser.parse_args(argv)
    if args.devices > 1:  # CPU: that many host devices (before any backend starts)
        jax.config.update("jax_num_cpu_devices", args.devices)
    from videomt_jax.training.memory import GIB, train_step_memory
    from videomt_jax.training.recipes import load_recipe

    for name in args.models:
        recipe_name, changes = MODELS[name]
        recipe = load_recipe(recipe_name)
        for remat in args.remat:
            for fsdp in args.fsdp:
                model = {**changes, "attention_impl": args.attention_impl}
                row = train_step_memory(recipe, remat, args.clips, None, False, args.devices, fsdp, **model)
                gib = {k: round(row[k] / GIB, 2) for k in ("state", "arguments", "temporaries", "peak")}
                print(json.dumps({"model": name, "attention": args.attention_impl, **row, "gib": gib}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
