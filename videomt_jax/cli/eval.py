"""`videomt-jax eval MODEL`: a saved model -> semantic mIoU, video instance AP, panoptic PQ on
held-out synthetic clips. jax is imported only when the command runs."""

from __future__ import annotations

import argparse
import json
from typing import Any

from videomt_jax.cli.common import guarded
from videomt_jax.data.synthetic import SPLITS
from videomt_jax.training.config import EVAL_BATCH, EVAL_CLIPS


def run_eval(args: argparse.Namespace) -> int:
    """Score a saved model on held-out synthetic clips: mIoU, video AP, PQ."""
    from videomt_jax.training.evaluate import evaluate_model, format_results, json_ready, load_data_config
    from videomt_jax.training.recipes import load_recipe
    from videomt_jax.utils.io import atomic_write_text
    from videomt_jax.processing import load_processor
    from videomt_jax.weights.api import load_pretrained

    config, params = load_pretrained(args.model)
    data_cfg = load_recipe(args.recipe).data if args.recipe else load_data_config(args.model)
    processor = load_processor(args.model, config)  # the normalisation the model was trained with
    results = evaluate_model(config, params, data_cfg, args.split, args.clips, args.batch_size, processor=processor)
    print(format_results(results), flush=True)
    if args.out:
        atomic_write_text(args.out, json.dumps(json_ready(results), indent=2, sort_keys=True) + "\n")
        print(f"results -> {args.out}", flush=True)
    return 0


def add_parser(subparsers: Any) -> None:
    ev = subparsers.add_parser(
        "eval", help="evaluate a model on held-out synthetic clips", description=run_eval.__doc__
    )
    ev.add_argument(
        "model", metavar="MODEL", help="model directory (OUT/model of `train`) or anything load_pretrained reads"
    )
    ev.add_argument("--split", default="heldout", choices=sorted(SPLITS), help="synthetic split (default heldout)")
    ev.add_argument("--clips", type=int, default=EVAL_CLIPS, help=f"clips to evaluate (default {EVAL_CLIPS})")
    ev.add_argument("--batch-size", type=int, default=EVAL_BATCH, help=f"clips per forward pass (default {EVAL_BATCH})")
    ev.add_argument("--recipe", help="recipe whose data to use when MODEL has no data.json")
    ev.add_argument("--out", help="write the results as JSON here")
    ev.set_defaults(func=guarded(run_eval, "eval"))
