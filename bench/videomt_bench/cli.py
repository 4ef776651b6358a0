"""The benchmark harness (`python bench/run_bench.py`, `make bench`, `videomt-jax bench`): videomt-jax
against Hugging Face transformers, in one process on one device.

For each preset: online FPS (batch 1, one frame per call, state carried), clip FPS (T frames per
call), batch-of-videos throughput (B x T frames per call), peak memory, jit compile time and the
achieved TFLOP/s from the analytic FLOP count. Defaults depend on the JAX backend (see
`settings.BACKEND_DEFAULTS`); jax and torch are imported only when the command runs.
"""

from __future__ import annotations

import argparse
import gc
import os
from collections.abc import Callable, Sequence
from typing import Any

from videomt_bench.settings import HF_ATTENTION, MODES, BenchSettings, config_summary, preset_config, preset_label
from videomt_jax.cli.common import guarded
from videomt_jax.config import ATTENTION_IMPLS, DTYPES

# argparse dest -> BenchSettings field (None = keep the backend default)
SETTING_FLAGS = (
    "size",
    "frames",
    "batch",
    "dtype",
    "iters",
    "warmup",
    "hf",
    "compile_hf",
    "hf_attention",
    "torch_threads",
    "attention_impl",
    "scan_layers",
    "compile_only",
    "seed",
    "serving",
)


def _csv(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def add_bench_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--presets",
        type=_csv,
        help="comma-separated: small, base, large, tiny or config.json paths "
        "(GPU default: small,base,large; CPU: small)",
    )
    parser.add_argument("--size", type=int, help="frame height = width in pixels (GPU default 640, CPU 320)")
    parser.add_argument("--frames", type=int, help="frames per clip T (default 8)")
    parser.add_argument("--batch", type=int, help="videos per call in the batch mode (GPU default 8, CPU 2)")
    parser.add_argument(
        "--dtype", choices=DTYPES, help="compute dtype of both implementations (GPU default bfloat16, CPU float32)"
    )
    parser.add_argument(
        "--iters", type=int, help="timed repetitions per mode (GPU default 20, CPU 3); medians are reported"
    )
    parser.add_argument(
        "--warmup", type=int, help="untimed repetitions per mode, the first compiles (GPU default 3, CPU 1)"
    )
    parser.add_argument(
        "--hf",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also run Hugging Face transformers (default: on)",
    )
    parser.add_argument(
        "--compile",
        dest="compile_hf",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also run HF under torch.compile (default: on GPU only)",
    )
    parser.add_argument(
        "--hf-attention",
        choices=HF_ATTENTION,
        help="HF attention implementation (default sdpa, transformers' own default)",
    )
    parser.add_argument(
        "--torch-threads", type=int, help="torch intra-op threads for HF on CPU (default: torch's own choice)"
    )
    parser.add_argument("--attention-impl", choices=ATTENTION_IMPLS, help="videomt-jax attention kernel (default auto)")
    parser.add_argument(
        "--scan-layers", action=argparse.BooleanOptionalAction, default=None, help="videomt-jax: lax.scan over layers"
    )
    parser.add_argument("--modes", type=_csv, help=f"subset of {','.join(MODES)} (default: all)")
    parser.add_argument(
        "--compile-only",
        action="store_true",
        default=None,
        help="only time videomt-jax jit compiles, scan_layers off and on",
    )
    parser.add_argument("--seed", type=int, help="seed of the random weights and videos")
    parser.add_argument(
        "--serving",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also time the jax.export artifact and the ONNX model under ONNX Runtime (CPU) (default: off)",
    )
    parser.add_argument("--json", dest="json_path", help="write the full results to this JSON file")


def settings_from_args(args: argparse.Namespace, backend: str) -> BenchSettings:
    overrides = {k: getattr(args, k) for k in SETTING_FLAGS}
    overrides.update(presets=args.presets, modes=args.modes)
    return BenchSettings.for_backend(backend, **overrides)


def run(args: argparse.Namespace) -> int:
    # JAX and torch share one accelerator here: stop JAX from grabbing 75% of its memory up front
    # (only takes effect if no JAX backend was started earlier in this process).
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    import jax

    run_bench(settings_from_args(args, jax.default_backend()), json_path=args.json_path)
    return 0


def _compile_entries(name: str, settings: BenchSettings) -> list[dict[str, Any]]:
    from videomt_bench.jax_runner import compile_time

    entries = []
    for scan in (False, True):
        config = preset_config(name, settings).replace(scan_layers=scan)
        seconds, _ = compile_time(config, 1, settings.frames)
        entries.append(
            dict(preset=preset_label(name), scan_layers=scan, batch=1, frames=settings.frames, compile_s=seconds)
        )
    return entries


def _bench_preset(
    name: str, settings: BenchSettings, hf_device: str | None, report: dict[str, Any], say: Callable[[str], None]
) -> None:
    """Compile and warm up every implementation, then time each mode with the implementations taking turns."""
    import numpy as np

    from videomt_bench.flops import flops
    from videomt_bench.jax_runner import prepare_videomt_jax, random_params
    from videomt_bench.measure import time_interleaved
    from videomt_bench.report import JAX_IMPL, result_row

    config = preset_config(name, settings)
    label, summary = preset_label(name), config_summary(config)
    h, w = config.image_hw
    params = random_params(config, settings.seed)
    videos = np.random.default_rng(settings.seed).standard_normal(
        (settings.batch, settings.frames, h, w, config.num_channels), np.float32
    )
    say(f"[{label}] {JAX_IMPL}: compiling and warming up {', '.join(settings.modes)} ...")
    units, reference = prepare_videomt_jax(config, params, videos, settings)
    prepared = {JAX_IMPL: units}
    if hf_device is not None and config.backbone != "dinov2":  # transformers has no DINOv3 VidEoMT
        report["skipped"].append(dict(preset=label, impl="hf", reason=f"transformers has no {config.backbone} VidEoMT"))
    elif hf_device is not None:
        from videomt_bench.hf_runner import prepare_hf

        for impl, compiled in (("hf-eager", False), ("hf-compile", True))[: 1 + settings.compile_hf]:
            say(f"[{label}] {impl}: building and warming up ...")
            try:
                prepared[impl] = prepare_hf(config, params, videos, settings, hf_device, compiled, reference)
            except Exception as e:  # torch.compile needs a working compiler toolchain; record why it could not run
                if not compiled:
                    raise
                report["skipped"].append(dict(preset=label, impl=impl, reason=f"{type(e).__name__}: {e}"))
    if settings.serving:
        from videomt_bench.serving_runner import prepare_serving

        served, skipped = prepare_serving(
            config, params, videos, settings, reference, lambda text: say(f"[{label}] {text}")
        )
        prepared.update(served)
        report["skipped"] += [dict(preset=label, impl=impl, reason=reason) for impl, reason in skipped]
    timed: dict[str, dict] = {impl: {} for impl in prepared}
    for mode in settings.modes:
        say(f"[{label}] timing {mode}: {settings.iters} repetitions, taking turns between {', '.join(prepared)} ...")
        for impl, result in time_interleaved(
            {impl: units[mode] for impl, units in prepared.items()}, settings.iters
        ).items():
            timed[impl][mode] = result
    for impl, modes in timed.items():
        report["results"].append(result_row(label, impl, summary, flops(config, h, w, 1), modes))
        diffs = {k: v for r in modes.values() for k, v in r.extra.items() if k.startswith("max_abs_diff")}
        say(
            f"[{label}] {impl}: "
            + ", ".join(f"{m} {r.fps:.2f} fps" for m, r in modes.items())
            + "".join(f", {k} {v:.2e}" for k, v in diffs.items())
        )
    if "clip" in timed[JAX_IMPL]:
        report["compile"].append(
            dict(
                preset=label,
                scan_layers=config.scan_layers,
                batch=1,
                frames=settings.frames,
                compile_s=timed[JAX_IMPL]["clip"].compile_s,
            )
        )
    del prepared, units
    gc.collect()


def run_bench(
    settings: BenchSettings, json_path: str | None = None, say: Callable[[str], None] = print
) -> dict[str, Any]:
    """Run the benchmark, print the table, write JSON if asked; returns the report (see `report`)."""
    import jax

    from videomt_bench.report import finish, format_compile, format_table, run_meta, write_json

    for name in settings.presets:  # fail fast on a bad preset name
        preset_config(name, settings)
    report: dict[str, Any] = {
        "meta": run_meta(),
        "settings": settings.to_dict(),
        "results": [],
        "compile": [],
        "skipped": [],
    }
    hf_device = None
    if settings.hf and not settings.compile_only:
        from videomt_bench.hf_runner import torch_device

        hf_device, reason = torch_device(jax.default_backend())
        if reason:
            report["skipped"].append(dict(preset="*", impl="hf", reason=reason))
    say(
        f"videomt-jax bench on {report['meta']['device']} ({report['meta']['cpu_count']} CPUs, "
        f"load {report['meta']['loadavg_start'][0]:.1f}): {settings.to_dict()}"
    )
    for name in settings.presets:
        if settings.compile_only:
            report["compile"] += _compile_entries(name, settings)
        else:
            _bench_preset(name, settings, hf_device, report, say)
    finish(report)
    if report["results"]:
        say(format_table(report["results"]))
    say(format_compile(report["compile"]))
    for s in report["skipped"]:
        say(f"skipped {s['impl']} ({s['preset']}): {s['reason']}")
    if json_path:
        write_json(json_path, report)
        say(f"wrote {json_path}")
    return report


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="videomt-jax bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_bench_arguments(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry of bench/run_bench.py and `videomt-jax bench`; user errors print one line and return 1."""
    return guarded(run, "bench")(build_parser().parse_args(argv))
