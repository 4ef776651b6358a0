"""Peak host memory of `videomt-jax segment` against the video's length (it must stay flat).

    python bench/segment_memory.py                      # 100 vs 1000 frames of 640x480, shipped model
    python bench/segment_memory.py --lengths 40,400 --height 96 --width 128 --extra=--video-level

Each video is written to a temporary folder (synthetic shapes, `videomt_jax.data.synthetic`, a
short clip looped and scaled up), then segmented by a fresh process that reports its own peak
resident set size (ru_maxrss) after the command returns. Prints one JSON line per length.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

CLIP_FRAMES = 50  # frames of the synthetic clip that is looped
CLIP_SCALE = 4  # the clip is drawn at 1/CLIP_SCALE of the frame size and scaled up (nearest)


def write_synthetic_video(path: Path, frames: int, height: int, width: int, fps: float = 25.0) -> None:
    """An mp4 of `frames` frames, encoded one frame at a time (this process stays small too)."""
    import av
    import numpy as np

    from videomt_jax.data.synthetic import SyntheticConfig, make_clip

    small = (max(8, height // CLIP_SCALE), max(8, width // CLIP_SCALE))
    clip = make_clip(SyntheticConfig(image_size=small, num_frames=CLIP_FRAMES, bounce=True), "heldout", 0).frames
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for t in range(frames):
            frame = clip[t % CLIP_FRAMES].repeat(CLIP_SCALE, axis=0).repeat(CLIP_SCALE, axis=1)
            pad = ((0, max(0, height - frame.shape[0])), (0, max(0, width - frame.shape[1])), (0, 0))
            frame = np.ascontiguousarray(np.pad(frame, pad, mode="edge")[:height, :width])
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def child(argv: list[str]) -> None:
    from videomt_jax.cli import main

    t0 = time.perf_counter()
    rc = main(argv)
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"rc": rc, "peak_rss_mib": round(peak_mib, 1), "seconds": round(time.perf_counter() - t0, 1)}))


def measure(frames: int, height: int, width: int, extra: list[str], workdir: Path) -> dict:
    video = workdir / f"video_{frames}.mp4"
    write_synthetic_video(video, frames, height, width)
    argv = ["segment", str(video), "--out", str(workdir / f"out_{frames}"), *extra]
    cmd = [sys.executable, __file__, "--child", json.dumps(argv)]
    done = subprocess.run(cmd, check=True, capture_output=True, text=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return {"frames": frames, "height": height, "width": width, "args": extra, **result}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lengths", default="100,1000")
    p.add_argument("--height", type=int, default=480)
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--extra", default="", help="further segment arguments, space-separated")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child is not None:
        child(json.loads(args.child))
        return
    with tempfile.TemporaryDirectory(prefix="segment_memory.") as tmp:
        for n in (int(x) for x in args.lengths.split(",")):
            print(json.dumps(measure(n, args.height, args.width, args.extra.split(), Path(tmp))), flush=True)


if __name__ == "__main__":
    main()
