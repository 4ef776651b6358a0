"""Peak host memory of streaming a long video: it must not grow with the video's length.

    python bench/stream_memory.py            # small preset, 320x320, chunks of 8, 16 vs 256 frames

Each length runs in a fresh process; the peak resident set size (ru_maxrss) is reported.
Frames are generated chunk by chunk, so only the model's own memory can grow with length.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def stream(frames: int, size: int, chunk: int) -> dict:
    import jax
    import numpy as np

    import videomt_jax as vm

    config = vm.VideomtConfig.preset("small", image_size=size)
    params = vm.init_params(config, jax.random.key(0))
    streamer = vm.VideoStreamer(vm.VideomtModel(config), params)
    rng = np.random.default_rng(0)
    chunks = (rng.normal(size=(1, chunk, size, size, 3)).astype(np.float32) for _ in range(frames // chunk))
    t0 = time.perf_counter()
    count = sum(out.class_logits.shape[1] for out in streamer.run(chunks))
    seconds = time.perf_counter() - t0
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "frames": count,
        "size": size,
        "chunk": chunk,
        "peak_rss_mib": round(peak_mib, 1),
        "seconds": round(seconds, 1),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lengths", default="16,256")
    p.add_argument("--size", type=int, default=320)
    p.add_argument("--chunk", type=int, default=8)
    p.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child is not None:
        print(json.dumps(stream(args.child, args.size, args.chunk)))
        return
    for n in (int(x) for x in args.lengths.split(",")):
        cmd = [sys.executable, __file__, "--child", str(n), "--size", str(args.size), "--chunk", str(args.chunk)]
        print(
            subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1], flush=True
        )


if __name__ == "__main__":
    main()
