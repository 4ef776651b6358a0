"""Padding per training clip under the authors' augmentation, before and after shape buckets.

    python bench/padding.py [--recipe ytvis19-vits] [--clips 4000] [--bucket 64 128 256]

Draws the recipe's clip geometry (`data.clip_transforms.draw_geometry`: the crop branch, shorter-edge
resize, flip; only sizes, no pixels) for a YouTube-VIS-like mix of source frames (60 % landscape
1280x720, 30 % 640x480, 10 % portrait 720x1280) and prints, per clip, the share of its frame that is
padding: on the old fixed canvas, on its own frame padded to a multiple of 32 (what the authors' model
sees, one clip per GPU, and what the model and loss keep to here, `modeling/content.py`), and on the
batch canvas the jitted step computes on (`data.batching.batch_canvas`) for 1 and 8 clips a step.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import numpy as np

from videomt_jax.data.batching import batch_canvas
from videomt_jax.data.clip_transforms import draw_geometry
from videomt_jax.training.recipes import load_recipe

MIX = (((720, 1280), 0.6), ((480, 640), 0.3), ((1280, 720), 0.1))  # (H, W) of source frames, share


def own_sizes(recipe_name: str, clips: int, seed: int = 0) -> tuple[np.ndarray, Any]:
    """([clips, 2] each clip's (H, W) after augmentation, before padding; the recipe's data config)."""
    data = load_recipe(recipe_name).data
    augment, rng = data.augment, np.random.default_rng(seed)
    sizes = []
    for _ in range(clips):
        hw = MIX[rng.choice(len(MIX), p=[share for _, share in MIX])][0]
        sizes.append(draw_geometry(hw, augment, rng).size)
    return np.asarray(sizes), data


def _stats(fraction: np.ndarray) -> dict[str, float]:
    return {
        "median": round(float(np.median(fraction)), 3),
        "p90": round(float(np.percentile(fraction, 90)), 3),
        "worst": round(float(fraction.max()), 3),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--recipe", default="ytvis19-vits")
    parser.add_argument("--clips", type=int, default=4000)
    parser.add_argument("--bucket", type=int, nargs="+", default=[64, 128, 256])
    args = parser.parse_args(argv)
    sizes, data = own_sizes(args.recipe, args.clips)
    divisor, cap = data.size_divisibility, data.image_hw
    own = -(-sizes // divisor) * divisor
    area = sizes.prod(1)
    rows = [
        {"frame": f"fixed canvas {cap[0]}x{cap[1]}", **_stats(1 - area / np.prod(cap))},
        {"frame": f"own, multiple of {divisor}", **_stats(1 - area / own.prod(1))},
    ]
    for bucket in args.bucket:
        for per_step in (1, 8):
            groups = own[: len(own) // per_step * per_step].reshape(-1, per_step, 2)
            canvases = np.asarray([batch_canvas([tuple(s) for s in g], bucket, cap) for g in groups])
            shown = np.repeat(canvases, per_step, axis=0)
            seen = len({tuple(c) for c in canvases.tolist()})
            rows.append(
                {
                    "frame": f"bucket {bucket}, {per_step} clips a step ({seen} canvases seen)",
                    **_stats(1 - area[: len(shown)] / shown.prod(1)),
                }
            )
    for row in rows:
        print(json.dumps(row))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
