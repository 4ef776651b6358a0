"""`videomt-jax segment VIDEO --model M --task T --out DIR`: overlay video + results.json."""

from __future__ import annotations

import argparse
import math
from typing import Any

from videomt_jax.apps.pipeline import DEFAULT_MODEL_DIR, FRAME_TASKS
from videomt_jax.cli.common import guarded

OVERLAY_FORMATS = ("mp4", "gif", "webm")


def positive_int(text: str) -> int:
    """argparse type: an int >= 1 (argparse names the option in its error)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive int, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive int, got {text!r}")
    return value


def probability(text: str) -> float:
    """argparse type: a finite float in [0, 1] (a score threshold)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number in [0, 1], got {text!r}") from None
    if not (math.isfinite(value) and 0.0 <= value <= 1.0):
        raise argparse.ArgumentTypeError(f"must be a number in [0, 1], got {text!r}")
    return value


def run(args: argparse.Namespace) -> int:
    from videomt_jax.apps.segment import run_segment

    return run_segment(args)


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "segment",
        help="segment a video file or a folder of frames",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("video", help="video file (mp4, webm, gif, ...) or a folder of images")
    p.add_argument(
        "--model",
        default=str(DEFAULT_MODEL_DIR),
        help="checkpoint dir, .pth or Hub id (the default is the shipped tiny model)",
    )
    p.add_argument("--task", choices=sorted(FRAME_TASKS), default="panoptic", help="what to segment")
    p.add_argument(
        "--video-level",
        action="store_true",
        help="also compute video-level results: the overlay shows them and results.json gets `tracks` "
        "(instance: top queries with their best class; panoptic: video segments; semantic: the video class map, "
        "one track per class)",
    )
    p.add_argument("--out", default="segment_out", help="output directory: gets overlay.FORMAT and results.json only")
    p.add_argument("--overwrite", action="store_true", help="replace overlay.FORMAT / results.json if OUT holds them")
    p.add_argument(
        "--chunk", type=positive_int, default=8, help="frames per model call (streaming; queries carry over)"
    )
    p.add_argument("--max-frames", type=positive_int, default=None, help="stop after this many frames (None: all)")
    p.add_argument("--stride", type=positive_int, default=1, help="keep every n-th frame")
    p.add_argument("--keep-aspect", action="store_true", help="shorter side to the model size, pad to the patch size")
    p.add_argument(
        "--threshold",
        type=probability,
        default=None,
        help="per-frame score threshold in [0, 1] for instance / panoptic (None: the post-processor's, as HF)",
    )
    p.add_argument("--format", choices=OVERLAY_FORMATS, default="mp4", help="overlay file format")
    p.add_argument(
        "--dtype", choices=("float32", "bfloat16"), default=None, help="compute dtype (None: the checkpoint's)"
    )
    p.set_defaults(func=guarded(run, "segment", interruptible=True))
