"""`videomt-jax export-onnx MODEL OUT.onnx`: the streaming step as an ONNX model for ONNX Runtime
(float32, DINOv2 backbones; needs the `onnx` extra). A JSON with the same name sits beside it."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from videomt_jax.cli.common import guarded
from videomt_jax.cli.export_serving import add_step_arguments, summary


def run(args: argparse.Namespace) -> int:
    """MODEL -> OUT.onnx (+ OUT.json): inputs pixels, queries, started; outputs class_logits,
    mask_logits, queries_out, started_out."""
    from videomt_jax.serving.onnx_export import OPSET, export_onnx, require_exporter
    from videomt_jax.weights.api import load_pretrained

    try:
        require_exporter()
    except ImportError as e:  # a missing optional extra is a one-line user error here
        raise ValueError(str(e)) from None

    out = Path(args.out)
    print(f"reading {args.model} ...", flush=True)
    config, params = load_pretrained(args.model)
    print("tracing and converting to ONNX ...", flush=True)
    start = time.perf_counter()
    export_onnx(
        out,
        config,
        params,
        frames=args.frames,
        input_size=args.size,
        batch=args.batch,
        opset=args.opset or OPSET,
        overwrite=args.overwrite,
    )
    print(summary(out, [out, out.with_suffix(".json")], time.perf_counter() - start))
    return 0


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "export-onnx", help="export the streaming step as an ONNX model (ONNX Runtime)", description=run.__doc__
    )
    add_step_arguments(parser)
    parser.add_argument("--opset", type=int, help="ONNX opset (default 21)")
    parser.set_defaults(func=guarded(run, "export-onnx"))
