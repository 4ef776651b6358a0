"""`videomt-jax convert SRC OUT`: any checkpoint `load_pretrained` reads (HF dir, Hub id, authors'
.pth, videomt-jax dir) -> a videomt-jax (orbax) directory.

Writes atomically (an interrupted run, SIGTERM and Ctrl-C included, leaves OUT as it was and no
temporary files; what a killed run left is cleaned by the next) and prints a summary. An existing
OUT needs --overwrite and must hold exactly the files its manifest lists (an earlier output of this
tool, unchanged: `utils.io.check_replaceable`): a folder with any other file, at any depth, is
refused untouched. The source
arguments and the runner are shared with `export` (`videomt_jax.cli.export`) and the standalone
scripts in the repository's `convert/` folder. The weight code (jax, orbax, torch for .pth files)
is imported only when a command runs, so `videomt-jax --help` stays quick.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from videomt_jax.cli.common import guarded
from videomt_jax.config import DTYPES, VideomtConfig
from videomt_jax.data.categories import DATASET_LABELS

if TYPE_CHECKING:
    from videomt_jax.weights.api import LoadReport

# CLI flag (argparse dest) -> VideomtConfig field it overrides
OVERRIDE_FLAGS = {
    "num_heads": "num_attention_heads",
    "image_size": "image_size",
    "num_blocks": "num_blocks",
}


def add_source_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("src", help="HF directory, Hub repo id, authors' .pth file, or videomt-jax directory")
    parser.add_argument("out", help="output directory (written atomically)")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace OUT if it is an earlier output of this tool, unchanged (else it is refused, untouched)",
    )
    group = parser.add_argument_group("overrides (mostly for authors' .pth files, whose config is inferred)")
    group.add_argument(
        "--num-heads",
        type=int,
        help="attention heads (default: DINOv3's rotary buffer, --model-name or the file name, else the released "
        "DINOv2/DINOv3 size of that width, with a warning)",
    )
    group.add_argument("--image-size", type=int, help="input size the position embeddings were trained at")
    group.add_argument("--num-blocks", type=int, help="query blocks (default: length of attn_mask_probs)")
    group.add_argument("--model-name", help="timm backbone name, e.g. vit_small_patch14_reg4_dinov2 (picks the heads)")
    group.add_argument("--id2label-json", help='JSON file {"0": "person", ...} or a list of class names')
    group.add_argument(
        "--dataset",
        choices=tuple(DATASET_LABELS),
        help="the authors' dataset the .pth was trained on: its class names (default: from the file name, "
        "or the class count when one dataset has it; a warning says which)",
    )


def add_convert_arguments(parser: argparse.ArgumentParser) -> None:
    add_source_arguments(parser)
    parser.add_argument("--dtype", choices=DTYPES, help="compute dtype stored in the config (params stay float32)")


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    out = {field: getattr(args, flag) for flag, field in OVERRIDE_FLAGS.items() if getattr(args, flag) is not None}
    if args.model_name:
        out["model_name"] = args.model_name
    if getattr(args, "dataset", None):
        out["dataset"] = args.dataset
    if args.id2label_json:
        from videomt_jax.weights.readers import read_id2label_json

        out["id2label"] = read_id2label_json(args.id2label_json)
    return out


def _describe(config: VideomtConfig) -> str:
    return (
        f"hidden {config.hidden_size}, layers {config.num_hidden_layers} (query blocks {config.num_blocks}), "
        f"heads {config.num_attention_heads}, queries {config.num_queries}, labels {config.num_labels}, "
        f"image {config.image_size}, patch {config.patch_size}, registers {config.num_register_tokens}, "
        f"swiglu {config.use_swiglu_ffn}, upscale blocks {config.num_upscale_blocks}"
    )


def _summary(
    verb: str, args: argparse.Namespace, fmt: str, config: VideomtConfig, report: LoadReport, write_s: float
) -> str:
    buffers = f" (non-parameter buffers: {', '.join(report.buffers)})" if report.buffers else ""
    return "\n".join(
        [
            f"{verb} {args.src} [{report.source}] -> {args.out} [{fmt}]",
            f"  source keys consumed: {report.source_keys}{buffers}",
            f"  params: {report.num_params:,} ({report.num_bytes / 2**20:.2f} MiB float32), "
            f"compute dtype {config.dtype}",
            f"  config: {_describe(config)}",
            f"  time: load {report.seconds:.2f} s, write {write_s:.2f} s, total {report.seconds + write_s:.2f} s",
        ]
    )


def run_writer(args: argparse.Namespace, verb: str, fmt: str, write: Callable[..., Path]) -> int:
    from videomt_jax.utils.io import check_replaceable, output_lock, recover

    out = Path(args.out)
    with output_lock(out):  # one writer of OUT at a time, from the check to the write
        recover(out)  # what a killed run left (temporary folders, a swap cut halfway)
        # before the (long) load: OUT may be replaced only when it is an earlier output, unchanged
        check_replaceable(out, overwrite=args.overwrite, flag="--overwrite")
        return _load_and_write(args, out, verb, fmt, write)


def _load_and_write(args: argparse.Namespace, out: Path, verb: str, fmt: str, write: Callable[..., Path]) -> int:
    from videomt_jax.processing import load_processor
    from videomt_jax.weights.api import load_pretrained_with_report

    print(f"reading {args.src} ...", flush=True)
    config, params, report = load_pretrained_with_report(args.src, getattr(args, "dtype", None), **_overrides(args))
    print(f"writing {out} ...", flush=True)
    start = time.perf_counter()
    processor = load_processor(args.src, config)  # the source's pixel normalisation travels along
    write(out, config, params, processor=processor, overwrite=args.overwrite)
    print(_summary(verb, args, fmt, config, report, time.perf_counter() - start))
    return 0


def run_convert(args: argparse.Namespace) -> int:
    """SRC -> videomt-jax (orbax) directory OUT; raises on bad input."""
    from videomt_jax.weights.api import save_pretrained

    return run_writer(args, "converted", "videomt-jax (orbax)", save_pretrained)


convert_command = guarded(run_convert, "convert", interruptible=True)


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "convert", help="convert a checkpoint to a videomt-jax (orbax) directory", description=run_convert.__doc__
    )
    add_convert_arguments(parser)
    parser.set_defaults(func=convert_command)
