"""bf16 fidelity: the same model and input in a 16-bit compute dtype vs float32 (highest matmul precision).

Letters: B videos, T frames, Q queries, K+1 classes (last = no object), h/w mask grid.

Reported per model (`fidelity`):
  class/mask max |diff| and the same relative to the float32 logits' max |value| (scale);
  pixel agreement of two per-pixel decisions on the mask grid, as the post-processing makes them:
    query:    argmax over queries of p(best class) * sigmoid(mask)  (instance / panoptic assignment)
    semantic: argmax over classes of sum_q p(class) * sigmoid(mask)  (semantic map)
`python -m videomt_bench.fidelity --json out.json` runs the large preset at 640² with random
weights and the shipped synthetic-tiny model on a held-out clip.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from videomt_bench.jax_runner import logits_fn
from videomt_jax.config import VideomtConfig

REFERENCE_PRECISION = "highest"  # float32 matmuls without TF32 on GPU


def _decisions(class_logits: np.ndarray, mask_logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """[B, T, Q, K+1], [B, T, Q, h, w] -> query map [B, T, h, w], semantic map [B, T, h, w]."""
    probs = jax.nn.softmax(jnp.asarray(class_logits, jnp.float32), axis=-1)[..., :-1]  # [B, T, Q, K]
    masks = jax.nn.sigmoid(jnp.asarray(mask_logits, jnp.float32))  # [B, T, Q, h, w]
    query = jnp.argmax(probs.max(-1)[..., None, None] * masks, axis=2)
    semantic = jnp.argmax(jnp.einsum("btqk,btqhw->btkhw", probs, masks), axis=2)
    return np.asarray(query), np.asarray(semantic)


def _logits(config: VideomtConfig, params: Any, videos: jax.Array) -> tuple[np.ndarray, np.ndarray]:
    return jax.device_get(logits_fn(config)(params, videos))


def fidelity(config: VideomtConfig, params: Any, videos: Any, dtype: str = "bfloat16") -> dict[str, float]:
    """Compare `dtype` compute against float32 on videos [B, T, H, W, C]; see the module docstring."""
    videos = jnp.asarray(videos, jnp.float32)
    with jax.default_matmul_precision(REFERENCE_PRECISION):
        ref_cls, ref_mask = _logits(config.replace(dtype="float32"), params, videos)
    cls, mask = _logits(config.replace(dtype=dtype), params, videos)
    ref_q, ref_s = _decisions(ref_cls, ref_mask)
    q, s = _decisions(cls, mask)
    diff = {k: float(np.abs(a - b).max()) for k, a, b in (("class", cls, ref_cls), ("mask", mask, ref_mask))}
    scale = {"class": float(np.abs(ref_cls).max()), "mask": float(np.abs(ref_mask).max())}
    return {
        "dtype": dtype,
        "class_max_abs_diff": diff["class"],
        "mask_max_abs_diff": diff["mask"],
        "class_rel_to_scale": diff["class"] / max(scale["class"], 1e-12),
        "mask_rel_to_scale": diff["mask"] / max(scale["mask"], 1e-12),
        "query_argmax_agreement": float((q == ref_q).mean()),
        "semantic_argmax_agreement": float((s == ref_s).mean()),
    }


def _random_preset(preset: str, size: int, frames: int, seed: int) -> tuple[VideomtConfig, Any, np.ndarray]:
    from videomt_bench.jax_runner import random_params

    config = VideomtConfig.preset(preset, image_size=size)
    videos = np.random.default_rng(seed).standard_normal((1, frames, size, size, config.num_channels), np.float32)
    return config, random_params(config, seed), videos


def _shipped_tiny(frames: int, seed: int) -> tuple[VideomtConfig, Any, np.ndarray]:
    from videomt_jax.apps.pipeline import DEFAULT_MODEL_DIR
    from videomt_jax.data.synthetic import make_clip
    from videomt_jax.evaluation.synthetic import load_data_config
    from videomt_jax.processing import VideoProcessor
    from videomt_jax.weights.api import load_pretrained

    config, params = load_pretrained(DEFAULT_MODEL_DIR)
    data = load_data_config(DEFAULT_MODEL_DIR)
    clip = make_clip(data, "heldout", seed)
    pixels = VideoProcessor.from_config(config)(np.asarray(clip.frames)[None, :frames])
    return config, params, np.asarray(pixels)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="large", help="random-weight preset to check (default large)")
    parser.add_argument("--size", type=int, default=640)
    parser.add_argument("--frames", type=int, default=2)
    parser.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float16"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", dest="json_path")
    args = parser.parse_args(argv)
    dev = jax.devices()[0]
    report: dict[str, Any] = {"device": f"{dev.platform}: {dev.device_kind}", "jax": jax.__version__, "models": {}}
    cases = {  # the quick one first
        "synthetic-tiny-shipped": lambda: _shipped_tiny(args.frames, args.seed),
        f"{args.preset}-{args.size}-random": lambda: _random_preset(args.preset, args.size, args.frames, args.seed),
    }
    for name, build in cases.items():
        start = time.perf_counter()
        config, params, videos = build()
        result = fidelity(config, params, videos, args.dtype)
        result["seconds"] = time.perf_counter() - start
        report["models"][name] = result
        print(name, json.dumps(result), flush=True)
    if args.json_path:
        from videomt_jax.utils.io import atomic_write_text

        atomic_write_text(args.json_path, json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
