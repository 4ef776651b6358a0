"""Online-mode probe: per-frame time of one preset, frames pipelined vs awaited one by one.

    python bench/online_probe.py --preset small --size 640 [--trace DIR] [--json out.json]

Run it under different XLA_FLAGS to compare runtime settings (the flags are recorded in the JSON);
`--trace` also writes a JAX profiler trace of a few frames (Chrome trace JSON inside DIR).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from videomt_bench.jax_runner import online_pass, random_params
from videomt_jax.config import VideomtConfig
from videomt_jax.modeling.videomt import VideomtModel
from videomt_jax.streaming import VideoStreamer


def per_frame_ms(streamer: VideoStreamer, frames: list, sync_each: bool, iters: int) -> float:
    """Median over `iters` passes of (pass time / frames), in ms."""
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        online_pass(streamer, frames, sync_each)
        times.append((time.perf_counter() - start) / len(frames) * 1e3)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="small")
    parser.add_argument("--size", type=int, default=640)
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--trace", help="write a profiler trace of 2 passes here")
    parser.add_argument("--json", dest="json_path")
    args = parser.parse_args()
    config = VideomtConfig.preset(args.preset, image_size=args.size, dtype=args.dtype)
    streamer = VideoStreamer(VideomtModel(config), random_params(config))
    rng = np.random.default_rng(0)
    frames = [
        jax.device_put(jnp.asarray(rng.standard_normal((1, 1, args.size, args.size, 3), np.float32)))
        for _ in range(args.frames)
    ]
    start = time.perf_counter()
    per_frame_ms(streamer, frames, True, 1)
    first = time.perf_counter() - start
    result = {
        "preset": args.preset,
        "size": args.size,
        "dtype": args.dtype,
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "device": jax.devices()[0].device_kind,
        "first_pass_s": first,
        "pipelined_ms_per_frame": per_frame_ms(streamer, frames, False, args.iters),
        "sync_each_ms_per_frame": per_frame_ms(streamer, frames, True, args.iters),
    }
    if args.trace:
        with jax.profiler.trace(args.trace):
            per_frame_ms(streamer, frames, True, 1)
            per_frame_ms(streamer, frames, False, 1)
    print(json.dumps(result), flush=True)
    if args.json_path:
        with open(args.json_path, "a") as f:
            f.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
