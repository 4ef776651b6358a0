"""`videomt-jax bench`: a thin entry to the speed benchmark harness, which lives in the source
repository's `bench/` folder (it needs torch and transformers, so it is not part of the installed
library). Every argument after `bench` goes to the harness; `videomt-jax bench --help` lists them.
Equivalent to `python bench/run_bench.py ...` from a checkout (or `make bench`).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path
from typing import Any

from videomt_jax.cli.common import guarded

HARNESS = "videomt_bench"  # package inside the repository's bench/ folder
BENCH_DIR = Path(__file__).resolve().parents[2] / "bench"  # <checkout>/bench for a source install


def load_harness() -> Any:
    """Import the harness's command-line module from the checkout this package was installed from."""
    if not (BENCH_DIR / HARNESS).is_dir():
        raise FileNotFoundError(
            f"the benchmark harness ships with the source repository, not the installed package "
            f"({BENCH_DIR / HARNESS} is missing); run `python bench/run_bench.py` from a checkout"
        )
    if str(BENCH_DIR) not in sys.path:
        sys.path.insert(0, str(BENCH_DIR))
    return importlib.import_module(f"{HARNESS}.cli")


NEEDS_EXTRA = {"torch": "torch", "transformers": "torch", "onnxruntime": "onnx", "jax2onnx": "onnx", "onnx": "onnx"}


def run(args: argparse.Namespace) -> int:
    try:
        return load_harness().main(args.forwarded)
    except ModuleNotFoundError as e:  # a core install (`make demo`) has neither torch nor ONNX
        extra = NEEDS_EXTRA.get((e.name or "").split(".")[0])
        if extra is None:
            raise
        raise ValueError(
            f"the benchmark needs {e.name}: install the {extra} extra (`pip install -e '.[{extra}]'` in the "
            "checkout, or `make test`)"
        ) from e


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "bench",
        add_help=False,
        help="speed: videomt-jax vs Hugging Face (see bench/ and docs/performance.md)",
        description=__doc__,
    )
    parser.set_defaults(func=guarded(run, "bench"), forward_args=True)
