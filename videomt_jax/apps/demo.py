"""`videomt-jax demo`: the shipped tiny model on held-out synthetic clips, no network needed.

Writes DIR/overlay.gif (panoptic segmentation of one held-out clip, one colour per track) and
DIR/results.json (mIoU, video AP and PQ over held-out clips, mIoU and first / last pixel accuracy
over long streamed clips, and the streaming speed in frames/s).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

DEMO_CHUNK = 4  # frames per streamed model call


def say(message: str) -> None:
    """One progress line, shown at once (the demo's steps take seconds each on a CPU)."""
    print(f"demo: {message}", flush=True)


def _stream_speed(segmenter: Any, frames: Any) -> tuple[Any, float]:
    """Run the streamed pipeline twice (the first compiles); frames/s of the second run."""
    chunks = [frames[i : i + DEMO_CHUNK] for i in range(0, len(frames), DEMO_CHUNK)]
    segmenter.run(chunks)
    run = segmenter.run(chunks)
    return run, run.fps


def run_demo(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    say("importing jax ...")
    import jax
    import numpy as np

    from videomt_jax.apps.pipeline import Segmenter
    from videomt_jax.data.synthetic import make_clip
    from videomt_jax.evaluation.synthetic import (
        EVAL_CLIPS,
        LONG_CLIPS,
        LONG_FRAMES,
        evaluate_long,
        evaluate_model,
        format_results,
        json_ready,
        load_data_config,
    )
    from videomt_jax.io.overlay import overlay_video
    from videomt_jax.io.video import write_video
    from videomt_jax.utils.io import atomic_write_text
    from videomt_jax.weights.api import load_pretrained

    say(f"loading the model {args.model} (jax on {jax.devices()[0].platform}) ...")
    try:
        config, params = load_pretrained(args.model)
        data_cfg = load_data_config(args.model)
    except (OSError, ValueError) as e:
        print(f"videomt-jax demo: error: cannot load model {args.model!r}: {e}", file=sys.stderr)
        return 1
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)

    clip = make_clip(dataclasses.replace(data_cfg, num_frames=args.frames), "heldout", args.clip)
    segmenter = Segmenter(config, params, task="panoptic", task_kwargs={"label_ids_to_fuse": data_cfg.stuff_ids})
    say(f"segmenting held-out clip {args.clip}: {args.frames} frames, {DEMO_CHUNK} per call (the first compiles) ...")
    run, fps = _stream_speed(segmenter, clip.frames)

    def upscale(x: np.ndarray) -> np.ndarray:  # nearest 4x, so the tiny clip and its legend are readable
        return np.repeat(np.repeat(x, 4, axis=1), 4, axis=2)

    overlay = overlay_video(upscale(clip.frames), upscale(run.segmentation), run.segment_labels, config.id2label)
    gif = write_video(out_dir / "overlay.gif", overlay, fps=4)
    say(f"wrote {gif} ({fps:.1f} frames/s after compilation)")

    num_clips = EVAL_CLIPS if args.clips is None else args.clips
    say(f"scoring {num_clips} held-out clips of {data_cfg.num_frames} frames (mIoU, video AP, PQ) ...")
    metrics = evaluate_model(config, params, data_cfg, "heldout", num_clips=num_clips, long_clips=0)
    say(f"streaming {LONG_CLIPS} held-out clips of {LONG_FRAMES} frames (long-video mIoU, VPQ, STQ, mVC_8) ...")
    long = metrics["long"] = evaluate_long(config, params, data_cfg, "heldout")
    results = {
        "miou": metrics["semantic"]["miou"],
        "video_ap": metrics["video_instance"]["AP"],
        "pq": metrics["panoptic"]["pq"],
        "long_miou": long["miou"],
        "long_first_pixel_accuracy": long["first_accuracy"],
        "long_last_pixel_accuracy": long["last_accuracy"],
        "vpq": long["video"]["vpq"],
        "stq": long["video"]["stq"],
        "mvc_8": long["video"]["mvc_8"],
        "long_note": f"{long['num_clips']} held-out clips of {long['num_frames']} frames (objects bouncing), "
        f"streamed {long['chunk']} frames per call; pixel accuracy of the first / last {long['window']} frames; "
        "vpq / stq / mvc_8 over the same clips (the paper's scripts, docs/metrics.md)",
        "fps": fps,
        "fps_note": f"streamed panoptic pipeline, {DEMO_CHUNK} frames per call, after compilation, "
        f"{data_cfg.image_hw[0]}x{data_cfg.image_hw[1]} frames, {jax.devices()[0].platform}",
        "model": str(args.model),
        "heldout_clips": num_clips,
        "metrics": metrics,
        "seconds": time.perf_counter() - t0,
    }
    atomic_write_text(out_dir / "results.json", json.dumps(json_ready(results), indent=2) + "\n")
    print(format_results(metrics))
    print(
        f"miou {results['miou']:.3f}  video_ap {results['video_ap']:.3f}  pq {results['pq']:.3f}  "
        f"long_miou {long['miou']:.3f}  long pixel acc first {long['window']} {long['first_accuracy']:.3f} "
        f"last {long['window']} {long['last_accuracy']:.3f}  vpq {results['vpq']:.3f}  stq {results['stq']:.3f}  "
        f"mvc_8 {results['mvc_8']:.3f}  fps {fps:.1f}  ({results['seconds']:.0f} s)\n"
        f"wrote {gif} and {out_dir / 'results.json'}"
    )
    return 0
