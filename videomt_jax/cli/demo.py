"""`videomt-jax demo`: the shipped tiny model on held-out synthetic clips (the `make demo` job)."""

from __future__ import annotations

import argparse
from typing import Any

from videomt_jax.cli.common import guarded

DEMO_FRAMES = 12  # frames of the held-out clip drawn as the overlay


def run(args: argparse.Namespace) -> int:
    from videomt_jax.apps.demo import run_demo

    return run_demo(args)


def add_parser(sub: Any) -> None:
    from videomt_jax.apps.pipeline import DEFAULT_MODEL_DIR

    p = sub.add_parser(
        "demo",
        help="segment held-out synthetic clips with the shipped model (make demo)",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--out", default="demo_out", help="output directory")
    p.add_argument("--model", default=str(DEFAULT_MODEL_DIR), help="model directory with data.json")
    p.add_argument("--clip", type=int, default=0, help="held-out clip index drawn in the overlay")
    p.add_argument("--frames", type=int, default=DEMO_FRAMES, help="frames of the overlay clip")
    p.add_argument("--clips", type=int, default=None, help="held-out clips scored (default: the eval default)")
    p.set_defaults(func=guarded(run, "demo", interruptible=True))
