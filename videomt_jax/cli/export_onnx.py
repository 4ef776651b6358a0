"""`videomt-jax export-onnx MODEL OUT.onnx`: the streaming step as an ONNX model for ONNX Runtime
(float32, DINOv2 backbones; needs the `onnx` extra). A JSON with the same name sits beside it."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from videomt_jax.cli.common import guarded
from videomt_jax.cli.export_serving import add_step_arguments, read_model, summary


def run(args: argparse.Namespace) -> int:
    """MODEL -> OUT.onnx (+ OUT.json): inputs pixels, queries, started; outputs class_logits,
    mask_logits, queries_out, started_out."""
    from videomt_jax.serving.onnx_export import OPSET, check_opset, check_targets, export_onnx, require_exporter
    from videomt_jax.utils.io import output_lock

    try:
        require_exporter()
    except ImportError as e:  # a missing optional extra is a one-line user error here
        raise ValueError(str(e)) from None
    opset = check_opset(OPSET if args.opset is None else args.opset)
    out = Path(args.out)
    with output_lock(out):  # checked and claimed before the model is read
        check_targets(out, overwrite=args.overwrite, flag="--overwrite")
        config, params, processor = read_model(args.model)
        print("tracing and converting to ONNX ...", flush=True)
        start = time.perf_counter()
        export_onnx(
            out,
            config,
            params,
            frames=args.frames,
            input_size=args.size,
            batch=args.batch,
            opset=opset,
            processor=processor,
            overwrite=args.overwrite,
            overwrite_flag="--overwrite",
        )
    print(summary(out, [out, out.with_suffix(".json")], time.perf_counter() - start))
    return 0


def add_parser(subparsers: Any) -> None:
    from videomt_jax.serving.onnx_export import MIN_OPSET, OPSET

    parser = subparsers.add_parser(
        "export-onnx", help="export the streaming step as an ONNX model (ONNX Runtime)", description=run.__doc__
    )
    add_step_arguments(parser)
    parser.add_argument("--opset", type=int, help=f"ONNX opset, {MIN_OPSET} or newer (default {OPSET})")
    parser.set_defaults(func=guarded(run, "export-onnx", interruptible=True))
