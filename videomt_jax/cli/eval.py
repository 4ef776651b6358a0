"""`videomt-jax eval MODEL`: a saved model -> semantic mIoU, video instance AP, panoptic PQ on
held-out synthetic clips, or with --dataset the paper's protocol on a benchmark. Output files are
checked and claimed before the model is read; an existing one needs --overwrite."""

from __future__ import annotations

import argparse
import contextlib
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from videomt_jax.cli.common import guarded, positive_int
from videomt_jax.data.synthetic import SPLITS
from videomt_jax.evaluation.datasets import PROTOCOLS, WINDOW
from videomt_jax.evaluation.synthetic import EVAL_BATCH, EVAL_CLIPS


@contextlib.contextmanager
def claimed(paths: Sequence[Path | None], overwrite: bool) -> Iterator[None]:
    """Check, before any work, that each output file may be written (an existing one needs
    --overwrite), and claim them all for the run (`output_lock`)."""
    from videomt_jax.utils.io import check_new_file, output_lock

    with contextlib.ExitStack() as stack:
        for path in paths:
            if path is not None:
                check_new_file(path, overwrite=overwrite)
                stack.enter_context(output_lock(path))
        yield


def read_model(model: str) -> tuple[Any, Any, Any]:
    """(config, params, processor) of MODEL, saying when an image model is run frame by frame."""
    from videomt_jax.evaluation.runner import frame_by_frame
    from videomt_jax.processing import load_processor
    from videomt_jax.weights.api import load_pretrained

    config, params = load_pretrained(model)
    if frame_by_frame(config):
        print(f"{model} is an image model ({config.model_type}): every frame is segmented on its own", flush=True)
    return config, params, load_processor(model, config)  # the normalisation the model was trained with


def write_results(path: Path | None, results: dict, overwrite: bool) -> None:
    from videomt_jax.evaluation.synthetic import json_ready
    from videomt_jax.utils.io import atomic_write_text

    if path is not None:
        atomic_write_text(path, json.dumps(json_ready(results), indent=2, sort_keys=True) + "\n", overwrite=overwrite)
        print(f"results -> {path}", flush=True)


def run_dataset_eval(args: argparse.Namespace) -> int:
    """The paper's protocol on a benchmark dataset (evaluation/datasets.py)."""
    from videomt_jax.evaluation.datasets import RESULTS_ZIP, evaluate_dataset
    from videomt_jax.evaluation.synthetic import json_ready

    if args.data_root is None:
        raise ValueError(f"--dataset {args.dataset} needs --data-root DIR")
    submission = Path(args.submission_dir) if PROTOCOLS[args.dataset].task == "vis" else None
    out = None if args.out is None else Path(args.out)
    with claimed([out, None if submission is None else submission / RESULTS_ZIP], args.overwrite):
        config, params, processor = read_model(args.model)
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
        write_results(out, results, args.overwrite)
    return 0


def run_eval(args: argparse.Namespace) -> int:
    """Score a saved model: on held-out synthetic clips (mIoU, video AP, PQ), or with --dataset on a
    benchmark with the paper's protocol. Image models (EoMT) are run frame by frame."""
    if args.dataset:
        return run_dataset_eval(args)
    from videomt_jax.data.synthetic import SyntheticConfig
    from videomt_jax.evaluation.synthetic import evaluate_model, format_results, load_data_config
    from videomt_jax.training.recipes import data_kind, load_recipe

    out = None if args.out is None else Path(args.out)
    with claimed([out], args.overwrite):
        data_cfg = load_recipe(args.recipe).data if args.recipe else load_data_config(args.model)
        if not isinstance(data_cfg, SyntheticConfig):
            raise ValueError(
                f"recipe {args.recipe!r} trains on {data_kind(data_cfg)} data; without --dataset only synthetic "
                "clips are scored (pass --dataset to score a benchmark)"
            )
        config, params, processor = read_model(args.model)
        results = evaluate_model(
            config, params, data_cfg, args.split or "heldout", args.clips, args.batch_size, processor=processor
        )
        print(format_results(results), flush=True)
        write_results(out, results, args.overwrite)
    return 0


def add_parser(subparsers: Any) -> None:
    ev = subparsers.add_parser(
        "eval",
        help="evaluate a model: held-out synthetic clips, or a benchmark with --dataset",
        description=run_eval.__doc__,
    )
    ev.add_argument(
        "model", metavar="MODEL", help="model directory (OUT/model of `train`) or anything load_pretrained reads"
    )
    ev.add_argument("--split", help=f"synthetic split {sorted(SPLITS)} (default heldout) or the dataset's split")
    ev.add_argument("--clips", type=positive_int, default=EVAL_CLIPS, help=f"clips to evaluate (default {EVAL_CLIPS})")
    ev.add_argument(
        "--batch-size",
        type=positive_int,
        default=EVAL_BATCH,
        help=f"clips per forward pass, at most --clips; refused when the machine cannot hold it (default {EVAL_BATCH})",
    )
    ev.add_argument("--recipe", help="recipe whose data to use when MODEL has no data.json")
    ev.add_argument("--out", help="write the results as JSON here (an existing file needs --overwrite)")
    ev.add_argument("--overwrite", action="store_true", help="replace an existing --out file or results.zip")
    bench = ev.add_argument_group("benchmarks (the paper's protocols)")
    bench.add_argument(
        "--dataset", choices=list(PROTOCOLS), help="evaluate on this benchmark instead of synthetic clips"
    )
    bench.add_argument("--data-root", metavar="DIR", help="folder holding the dataset folder, or that folder")
    bench.add_argument(
        "--window",
        type=positive_int,
        default=WINDOW,
        help=f"frames per model call, queries carried over (default {WINDOW})",
    )
    bench.add_argument("--max-videos", type=positive_int, help="evaluate only the first N videos")
    bench.add_argument(
        "--submission-dir", default=".", help="video instance datasets: where results.zip goes (default: here)"
    )
    ev.set_defaults(func=guarded(run_eval, "eval", interruptible=True))
