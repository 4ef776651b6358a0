"""`videomt-jax segment VIDEO --model M --task T --out DIR`: overlay video + results.json
(`videomt_jax.apps.segment.segment_video` with a command line; its defaults are `SegmentOptions`').

Stop signals: SIGTERM / SIGINT only set a flag here, checked between chunks (`GracefulStop.check`,
the run's `checkpoint`), which then raises `Interrupted` in plain Python code. Raising from the
signal handler itself interrupted whatever ran at that instant, e.g. JAX right after an XLA
compile returned, leaving its runtime half-updated so that the process crashed with a
segmentation fault at exit (6 of 10 interrupted `--video-level --task instance` runs).
"""

from __future__ import annotations

import argparse
from typing import Any

from videomt_jax.apps.pipeline import DEFAULT_MODEL_DIR, FRAME_TASKS
from videomt_jax.apps.segment import DTYPES, OVERLAY_FORMATS, SegmentOptions
from videomt_jax.cli.common import guarded, positive_int, probability
from videomt_jax.utils.signals import GracefulStop

DEFAULTS = SegmentOptions()


def run(args: argparse.Namespace) -> int:
    from videomt_jax.apps.segment import run_segment

    # the first SIGTERM / SIGINT is recorded and acted on between chunks (never inside XLA or the
    # decoder: an exception raised there can crash the process); later ones are ignored
    with GracefulStop(insist=False) as stop:
        return run_segment(args, checkpoint=stop.check)


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
        help="checkpoint dir, .pth or Hub id, VidEoMT or an image model (EoMT: frame by frame, no tracks); "
        "the default is the shipped tiny model",
    )
    p.add_argument("--task", choices=sorted(FRAME_TASKS), default=DEFAULTS.task, help="what to segment")
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
        "--chunk",
        type=positive_int,
        default=DEFAULTS.chunk,
        help="frames per model call (streaming; queries carry over); memory grows with it and is checked first",
    )
    p.add_argument(
        "--max-frames", type=positive_int, default=DEFAULTS.max_frames, help="stop after this many frames (None: all)"
    )
    p.add_argument("--stride", type=positive_int, default=DEFAULTS.stride, help="keep every n-th frame")
    p.add_argument("--keep-aspect", action="store_true", help="shorter side to the model size, pad to the patch size")
    p.add_argument(
        "--threshold",
        type=probability,
        default=DEFAULTS.threshold,
        help="score threshold in [0, 1] for instance / panoptic, per frame and with --video-level "
        "(None: the post-processor's, as HF / the authors)",
    )
    p.add_argument(
        "--format",
        dest="overlay_format",
        choices=OVERLAY_FORMATS,
        default=DEFAULTS.overlay_format,
        help="overlay file format",
    )
    p.add_argument("--dtype", choices=DTYPES, default=DEFAULTS.dtype, help="compute dtype (None: the checkpoint's)")
    p.set_defaults(func=guarded(run, "segment", interruptible=True))
