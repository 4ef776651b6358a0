"""`videomt-jax export-serving MODEL OUT`: the streaming step as serialised `jax.export` artifacts
(cpu / cuda / tpu), run later with nothing but jax (`videomt_jax.serving.load.load_serving`)."""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from videomt_jax.cli.common import guarded
from videomt_jax.config import DTYPES, IMAGE_MODEL_TYPES
from videomt_jax.serving.export import TASKS as SERVING_TASKS

ANY_BATCH = "any"  # --batch value for a symbolic batch dimension


def csv(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def size_pair(text: str) -> tuple[int, int]:
    """ "320" or "240,320" -> (height, width)."""
    try:
        values = [int(v) for v in csv(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected H or H,W in pixels, got {text!r}") from None
    if len(values) not in (1, 2):
        raise argparse.ArgumentTypeError(f"expected H or H,W in pixels, got {text!r}")
    return (values[0], values[-1])


def batch_arg(text: str) -> int | None:
    if text == ANY_BATCH:
        return None
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--batch takes a positive int or {ANY_BATCH!r}, got {text!r}") from None


def add_step_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments shared with export-onnx: MODEL OUT and the shape of one call."""
    parser.add_argument(
        "model", metavar="MODEL", help="anything load_pretrained reads (HF dir, videomt-jax dir, .pth, Hub id)"
    )
    parser.add_argument("out", metavar="OUT", help="output path (written atomically)")
    parser.add_argument(
        "--frames", type=int, default=1, help="frames per call T (default 1: online, one frame per call)"
    )
    parser.add_argument("--size", type=size_pair, help="model input H or H,W (default: the config's image_size)")
    parser.add_argument(
        "--batch", type=batch_arg, default=1, help=f"videos per call, or {ANY_BATCH!r} for a symbolic batch (default 1)"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")


def summary(path: Path, files: Sequence[Path], seconds: float) -> str:
    sizes = ", ".join(f"{f.name} {f.stat().st_size / 2**20:.2f} MiB" for f in files)
    return f"wrote {path} in {seconds:.1f} s: {sizes}"


def read_model(model: str) -> tuple[Any, Any, Any]:
    """(config, params, processor) of MODEL, saying when it is an image model run frame by frame."""
    from videomt_jax.processing import load_processor
    from videomt_jax.weights.api import load_pretrained

    print(f"reading {model} ...", flush=True)
    config, params = load_pretrained(model)
    if config.model_type in IMAGE_MODEL_TYPES:
        print(
            f"{model} is an image model ({config.model_type}): every frame is segmented on its own "
            "(no queries carried from frame to frame)",
            flush=True,
        )
    return config, params, load_processor(model, config)


def run(args: argparse.Namespace) -> int:
    """MODEL -> OUT directory: serving.json, weights.npz, step.<platform>.jaxexport per platform."""
    from videomt_jax.serving.export import PLATFORMS, check_call_options, export_serving
    from videomt_jax.utils.io import check_replaceable, output_lock

    out = Path(args.out)
    options = {"threshold": args.threshold} if args.threshold is not None else {}
    platforms = args.platforms or PLATFORMS
    # everything that needs no model is checked before it is read, and OUT is claimed for the run
    check_call_options(platforms, args.dtype, args.frames, args.batch, args.task, args.frame_size, options)
    with output_lock(out):
        check_replaceable(out, overwrite=args.overwrite, flag="--overwrite")
        config, params, processor = read_model(args.model)
        print(f"lowering for {', '.join(platforms)} ...", flush=True)
        start = time.perf_counter()
        export_serving(
            out,
            config,
            params,
            platforms=platforms,
            dtype=args.dtype,
            frames=args.frames,
            input_size=args.size,
            batch=args.batch,
            task=args.task,
            frame_size=args.frame_size,
            task_options=options,
            processor=processor,
            overwrite=args.overwrite,
            overwrite_flag="--overwrite",
        )
    print(summary(out, sorted(p for p in out.iterdir() if not p.name.startswith(".")), time.perf_counter() - start))
    return 0


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "export-serving",
        help="export the streaming step as jax.export artifacts (cpu, cuda, tpu)",
        description=run.__doc__,
    )
    add_step_arguments(parser)
    parser.add_argument("--platforms", type=csv, help="comma-separated from cpu,cuda,tpu (default: all three)")
    parser.add_argument("--dtype", choices=DTYPES, help="compute dtype (default: the config's)")
    parser.add_argument(
        "--task",
        choices=sorted(SERVING_TASKS),
        help="fuse pre-processing and this per-frame post-processing in (uint8 frames in, maps out)",
    )
    parser.add_argument(
        "--frame-size",
        type=size_pair,
        help="with --task: H,W of the uint8 frames and of the output maps (default: --size)",
    )
    parser.add_argument(
        "--threshold", type=float, help="with --task instance/panoptic: score threshold in [0, 1] (default: HF's)"
    )
    parser.set_defaults(func=guarded(run, "export-serving", interruptible=True))
