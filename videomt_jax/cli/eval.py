"""`videomt-jax eval MODEL`: a saved model -> semantic mIoU, video instance AP, panoptic PQ on
held-out synthetic clips. jax is imported only when the command runs."""

from __future__ import annotations

import argparse
import json
from typing import Any

from videomt_jax.cli.common import guarded
from videomt_jax.data.synthetic import SPLITS
from videomt_jax.evaluation.synthetic import EVAL_BATCH, EVAL_CLIPS

DATASETS = ("ytvis19", "ytvis21", "ytvis22", "ovis", "vipseg", "vspw")  # evaluation/datasets.py PROTOCOLS


def run_dataset_eval(args: argparse.Namespace) -> int:
    """The paper's protocol on a benchmark dataset (evaluation/datasets.py)."""
    from pathlib import Path

    from videomt_jax.evaluation.datasets import PROTOCOLS, RESULTS_ZIP, evaluate_dataset
    from videomt_jax.evaluation.synthetic import json_ready
    from videomt_jax.processing import load_processor
    from videomt_jax.utils.io import atomic_write_text
    from videomt_jax.weights.api import load_pretrained

    if args.data_root is None:
        raise ValueError(f"--dataset {args.dataset} needs --data-root DIR")
    submission = None
    if PROTOCOLS[args.dataset].task == "vis":
        submission = Path(args.submission_dir)
        if (submission / RESULTS_ZIP).exists() and not args.overwrite:
            raise FileExistsError(f"{submission / RESULTS_ZIP} exists; pass --overwrite or another --submission-dir")
        submission.mkdir(parents=True, exist_ok=True)
    config, params = load_pretrained(args.model)
    processor = load_processor(args.model, config)  # the normalisation the model was trained with
    results = evaluate_dataset(
        config,
        params,
        args.dataset,
        args.data_root,
        split=args.split,
        processor=processor,
        window=args.window,
        max_videos=args.max_videos,
        out_dir=submission,
        log=lambda line: print(line, flush=True),
    )
    summary = {k: v for k, v in results.items() if not isinstance(v, dict)}
    print(json.dumps(json_ready(summary)), flush=True)
    if args.out:
        atomic_write_text(args.out, json.dumps(json_ready(results), indent=2, sort_keys=True) + "\n")
        print(f"results -> {args.out}", flush=True)
    return 0


def run_eval(args: argparse.Namespace) -> int:
    """Score a saved model: on held-out synthetic clips (mIoU, video AP, PQ), or with --dataset on a
    benchmark with the paper's protocol."""
    if args.dataset:
        return run_dataset_eval(args)
    from videomt_jax.data.synthetic import SyntheticConfig
    from videomt_jax.evaluation.synthetic import evaluate_model, format_results, json_ready, load_data_config
    from videomt_jax.processing import load_processor
    from videomt_jax.training.recipes import data_kind, load_recipe
    from videomt_jax.utils.io import atomic_write_text
    from videomt_jax.weights.api import load_pretrained

    config, params = load_pretrained(args.model)
    data_cfg = load_recipe(args.recipe).data if args.recipe else load_data_config(args.model)
    if not isinstance(data_cfg, SyntheticConfig):
        raise ValueError(
            f"recipe {args.recipe!r} trains on {data_kind(data_cfg)} data; without --dataset only synthetic clips "
            "are scored (pass --dataset to score a benchmark)"
        )
    processor = load_processor(args.model, config)  # the normalisation the model was trained with
    results = evaluate_model(
        config, params, data_cfg, args.split or "heldout", args.clips, args.batch_size, processor=processor
    )
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
    ev.add_argument("--split", help=f"synthetic split {sorted(SPLITS)} (default heldout) or the dataset's split")
    ev.add_argument("--clips", type=int, default=EVAL_CLIPS, help=f"clips to evaluate (default {EVAL_CLIPS})")
    ev.add_argument("--batch-size", type=int, default=EVAL_BATCH, help=f"clips per forward pass (default {EVAL_BATCH})")
    ev.add_argument("--recipe", help="recipe whose data to use when MODEL has no data.json")
    ev.add_argument("--out", help="write the results as JSON here")
    bench = ev.add_argument_group("benchmarks (the paper's protocols)")
    bench.add_argument("--dataset", choices=DATASETS, help="evaluate on this benchmark instead of synthetic clips")
    bench.add_argument("--data-root", metavar="DIR", help="folder holding the dataset folder, or that folder")
    bench.add_argument("--window", type=int, default=3, help="frames per model call, queries carried over (default 3)")
    bench.add_argument("--max-videos", type=int, help="evaluate only the first N videos")
    bench.add_argument("--submission-dir", default=".", help="video instance datasets: where results.zip goes")
    bench.add_argument("--overwrite", action="store_true", help="replace an existing results.zip")
    ev.set_defaults(func=guarded(run_eval, "eval"))
