"""Throughput of the training input pipeline (`GrainBatches`) on a YouTube-VIS-2019-layout dataset.

    python bench/input_pipeline.py                                  # ytvis19-vits, workers 0 1 2, 8 batches each
    python bench/input_pipeline.py --workers 2 4 --batches 6 --videos 24

Writes a dataset of `--videos` videos x `--frames` JPEG frames of `--size` (default 12 x 20 of
720x1280, 2-4 instances each, RLE masks in `train.json`) into a temporary directory it removes at
the end, points the recipe's data root there, and prints JSON lines: one per worker setting
(clips/s, s per batch, batch MB, after start-up), then the per-stage time of one batch in
this process (load + decode, augment, `collate`, and a shared-memory round trip of the batch's
bytes: what handing it from a worker costs at least), with parts timed alone: float32 host
normalisation of the frames (which the train step does on the device) and the shared-memory round
trip those float pixels would need, and mask packing.

Letters: T frames, H/W frame size, M instances.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from multiprocessing import shared_memory
from pathlib import Path
from typing import Any

import numpy as np
import pycocotools.mask as mask_utils
from PIL import Image

from videomt_jax.data.categories import YTVIS_2019_CLASSES
from videomt_jax.data.clip_transforms import augment_video_clip
from videomt_jax.data.grain_pipeline import GrainBatches
from videomt_jax.data.ytvis import sample_frame_indices
from videomt_jax.training.recipes import load_recipe

MB = 1e6


def _frame(rng: np.random.Generator, h: int, w: int) -> np.ndarray:  # [H, W, 3] uint8
    """A smooth colour field (a coarse random grid upsampled) with mild noise: JPEG-sized like a video frame."""
    coarse = Image.fromarray(rng.integers(0, 256, (9, 16, 3), dtype=np.uint8))
    smooth = np.asarray(coarse.resize((w, h), Image.BILINEAR), np.int16)
    return np.clip(smooth + rng.integers(-8, 9, (h, w, 3)), 0, 255).astype(np.uint8)


def _ellipse(h: int, w: int, cy: float, cx: float, ry: float, rx: float) -> np.ndarray:  # [H, W] bool
    y, x = np.ogrid[:h, :w]
    return ((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2 <= 1.0


def write_dataset(root: Path, videos: int, frames: int, hw: tuple[int, int], seed: int = 0) -> Path:
    """`root/ytvis_2019/{train.json, train/JPEGImages/<video>/<frame>.jpg}`; returns the dataset folder."""
    rng = np.random.default_rng(seed)
    h, w = hw
    folder = root / "ytvis_2019"
    records, annotations = [], []
    for v in range(1, videos + 1):
        names = [f"video{v:03d}/{i:05d}.jpg" for i in range(frames)]
        base = _frame(rng, h, w)
        for i, name in enumerate(names):
            path = folder / "train" / "JPEGImages" / name
            path.parent.mkdir(parents=True, exist_ok=True)
            shifted = np.roll(base, 4 * i, axis=1)  # a panning camera
            Image.fromarray(shifted).save(path, quality=90)
        records.append({"id": v, "file_names": names, "height": h, "width": w, "length": frames})
        for k in range(int(rng.integers(2, 5))):
            cy, cx = rng.uniform(0.2, 0.8) * h, rng.uniform(0.2, 0.8) * w
            ry, rx = rng.uniform(0.08, 0.25) * h, rng.uniform(0.05, 0.2) * w
            vy, vx = rng.uniform(-6, 6, 2)
            segs = []
            for i in range(frames):
                if rng.random() < 0.1:  # occluded in this frame
                    segs.append(None)
                    continue
                mask = _ellipse(h, w, cy + vy * i, cx + vx * i, ry, rx)
                rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
                segs.append({"size": [h, w], "counts": rle["counts"].decode("ascii")})
            annotations.append(
                {
                    "id": 100 * v + k,
                    "video_id": v,
                    "category_id": int(rng.integers(1, len(YTVIS_2019_CLASSES) + 1)),
                    "segmentations": segs,
                    "iscrowd": 0,
                    "areas": [None] * frames,
                    "bboxes": [None] * frames,
                }
            )
    categories = [{"id": i + 1, "name": n} for i, n in enumerate(YTVIS_2019_CLASSES)]
    spec = {"videos": records, "annotations": annotations, "categories": categories}
    (folder / "train.json").write_text(json.dumps(spec))
    return folder


def batch_bytes(batch: Any) -> int:
    return sum(a.nbytes for a in batch if a is not None)


def time_workers(recipe: Any, workers: int, batches: int) -> dict[str, Any]:
    """Clips/s over `batches` batches after start-up (the first max(1, workers) batches, which the
    workers build side by side before the steady state)."""
    bs, warm = recipe.train.batch_size, max(1, workers)
    steps = warm + batches
    feed = GrainBatches(recipe.clip_fn("train"), recipe.collate, batch_size=bs, steps=steps, workers=workers)
    try:
        t0 = time.perf_counter()
        first = feed(0)
        for step in range(1, warm):
            feed(step)
        startup = time.perf_counter() - t0
        t0 = time.perf_counter()
        for step in range(warm, steps):
            feed(step)
        elapsed = time.perf_counter() - t0
    finally:
        feed.close()
    return {
        "workers": workers,
        "batches": batches,
        "clips_per_s": round(batches * bs / elapsed, 2),
        "s_per_batch": round(elapsed / batches, 2),
        "startup_s": round(startup, 1),
        "batch_mb": round(batch_bytes(first) / MB, 1),
        "first_canvas": list(first.frames.shape[2:4]),
    }


def _timed(totals: dict[str, float], name: str, fn: Callable[..., Any], *args: Any) -> Any:
    """fn(*args), its seconds added to totals[name]."""
    t0 = time.perf_counter()
    out = fn(*args)
    totals[name] = totals.get(name, 0.0) + time.perf_counter() - t0
    return out


def shm_round_trip(batch: Any) -> float:
    """Seconds to copy the batch's arrays into fresh shared memory and back out (grain's hand-over)."""
    t0 = time.perf_counter()
    for a in batch:
        if a is None:
            continue
        block = shared_memory.SharedMemory(create=True, size=max(a.nbytes, 1))
        try:
            view = np.ndarray(a.shape, a.dtype, buffer=block.buf)
            view[...] = a
            np.array(view)
            del view
        finally:
            block.close()
            block.unlink()
    return time.perf_counter() - t0


def stage_breakdown(recipe: Any, step: int = 0) -> dict[str, Any]:
    """One batch in this process, stage by stage (the steps of `TrainClips.__call__`, then `collate`)."""
    cfg, bs = recipe.data, recipe.train.batch_size
    clips_fn = recipe.clip_fn("train")
    reader = cfg.open()
    videos = cfg.train_videos(reader)
    order = np.random.default_rng([cfg.seed, 0, 23]).permutation(len(videos))
    totals: dict[str, float] = {}
    clips = []
    for index in range(step * bs, (step + 1) * bs):
        video = videos[int(order[index % len(videos)])]
        rng = np.random.default_rng([cfg.seed, index, 29])
        frames = sample_frame_indices(reader.video_length(video), rng, cfg.num_frames, cfg.frame_range)
        clip = _timed(totals, "load_s", reader.load_clip, video, frames)
        clips.append(_timed(totals, "augment_s", augment_video_clip, clip, cfg.augment, rng, clips_fn.fill))
    batch = _timed(totals, "collate_s", recipe.collate, clips)
    totals["shm_round_trip_s"] = shm_round_trip(batch)
    floats = []
    for clip in clips:  # parts, alone: float32 host normalisation (what the step now does), mask packing
        floats.append(_timed(totals, "host_normalise_float32_s", recipe.processor.normalize, clip.frames))
        _timed(totals, "pack_masks_s", np.packbits, clip.masks, -1)
    totals["float_pixels_shm_round_trip_s"] = shm_round_trip(floats)  # what float pixels would add
    out = {k: round(v, 3) for k, v in totals.items()}
    fields = batch._asdict() if hasattr(batch, "_asdict") else dict(batch)
    out["field_mb"] = {k: round(v.nbytes / MB, 1) for k, v in fields.items() if v is not None}
    return {"stage": "one batch in process", "clips": bs, **out}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="ytvis19-vits", help="a ytvis_2019 recipe (name or JSON file)")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--batches", type=int, default=8, help="timed batches per setting, after start-up")
    parser.add_argument("--videos", type=int, default=12)
    parser.add_argument("--frames", type=int, default=20)
    parser.add_argument("--size", type=int, nargs=2, default=(720, 1280), metavar=("H", "W"))
    parser.add_argument("--no-breakdown", action="store_true", help="skip the in-process per-stage timing")
    args = parser.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="videomt-input-bench-"))
    try:
        t0 = time.perf_counter()
        write_dataset(tmp, args.videos, args.frames, tuple(args.size))
        recipe = load_recipe(args.recipe)
        if getattr(recipe.data, "dataset", None) != "ytvis_2019":
            raise SystemExit(f"recipe {recipe.name!r} does not train on ytvis_2019 data")
        recipe = replace(recipe, data=recipe.data.with_root(str(tmp)))
        print(
            json.dumps(
                {
                    "dataset": f"{args.videos} videos x {args.frames} frames {args.size[0]}x{args.size[1]}",
                    "write_s": round(time.perf_counter() - t0, 1),
                    "recipe": recipe.name,
                }
            ),
            flush=True,
        )
        if not args.no_breakdown:
            print(json.dumps(stage_breakdown(recipe)), flush=True)
        for workers in args.workers:
            print(json.dumps(time_workers(recipe, workers, args.batches)), flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
