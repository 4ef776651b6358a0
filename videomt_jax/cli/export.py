"""`videomt-jax export SRC OUT`: any checkpoint videomt-jax reads -> a Hugging Face directory that
`transformers` loads (written atomically, with a summary)."""

from __future__ import annotations

import argparse
from typing import Any

from videomt_jax.cli.common import guarded
from videomt_jax.cli.convert import add_source_arguments, run_writer


def run_export(args: argparse.Namespace) -> int:
    """SRC -> Hugging Face directory OUT; raises on bad input."""
    from videomt_jax.weights.api import export_hf

    return run_writer(args, "exported", "hugging face", export_hf)


export_command = guarded(run_export, "export", interruptible=True)


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "export", help="export a checkpoint to a Hugging Face directory", description=run_export.__doc__
    )
    add_source_arguments(parser)
    parser.set_defaults(func=export_command)
