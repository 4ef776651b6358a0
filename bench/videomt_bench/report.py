"""Benchmark report: run metadata, the printed table and the JSON file.

JSON layout (all times in seconds, memory in MiB):
  meta:     date, backend, device, cpu, cpu_count, loadavg_start/end, versions, argv
  settings: BenchSettings fields
  results:  one row per (preset, impl): preset, impl, config, flops_per_frame,
            modes: {online|clip|batch: frames_per_rep, flops_per_rep, times_s, median_s, fps,
                    tflops, peak_mem_mb, compile_s, extra}
  compile:  [{preset, scan_layers, batch, frames, compile_s}]   (videomt-jax jit compile times)
  skipped:  [{preset, impl, reason}]
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import sys
from collections.abc import Iterable
from importlib import metadata
from typing import Any

from videomt_bench.measure import ModeResult, max_rss_mb

JAX_IMPL = "videomt-jax"
PACKAGES = ("jax", "jaxlib", "flax", "numpy", "torch", "transformers")
REQUIRED_KEYS = ("meta", "settings", "results", "compile", "skipped")
ROW_KEYS = ("preset", "impl", "config", "flops_per_frame", "modes")
MODE_KEYS = ("frames_per_rep", "flops_per_rep", "times_s", "median_s", "fps", "tflops", "peak_mem_mb", "compile_s")


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def run_meta() -> dict[str, Any]:
    import jax

    from videomt_jax.modeling.xla_options import compiler_options

    dev = jax.devices()[0]
    return {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "backend": jax.default_backend(),
        "device": f"{dev.platform}: {dev.device_kind}",
        "cpu": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "loadavg_start": list(os.getloadavg()),
        "python": platform.python_version(),
        "versions": {p: _version(p) for p in PACKAGES},
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "xla_compiler_options": compiler_options(),  # what videomt-jax's own jits compile with
        "argv": sys.argv,
    }


def result_row(
    preset: str, impl: str, config_summary: dict, flops_per_frame: int, modes: dict[str, ModeResult]
) -> dict[str, Any]:
    return {
        "preset": preset,
        "impl": impl,
        "config": config_summary,
        "flops_per_frame": flops_per_frame,
        "modes": {name: result.to_dict() for name, result in modes.items()},
    }


def _cell(row: dict[str, Any], mode: str, key: str, fmt: str) -> str:
    value = row["modes"].get(mode, {}).get(key)
    return "-" if value is None else format(value, fmt)


def _peak(row: dict[str, Any]) -> str:
    peaks = [m["peak_mem_mb"] for m in row["modes"].values() if m.get("peak_mem_mb") is not None]
    return format(max(peaks), ".0f") if peaks else "-"


def format_table(rows: Iterable[dict[str, Any]]) -> str:
    rows = list(rows)
    header = (
        "preset",
        "impl",
        "online fps",
        "online-sync fps",
        "clip fps",
        "batch fps",
        "clip TFLOP/s",
        "peak MiB",
        "compile s",
    )
    body = [
        (
            r["preset"],
            r["impl"],
            _cell(r, "online", "fps", ".2f"),
            _cell(r, "online_sync", "fps", ".2f"),
            _cell(r, "clip", "fps", ".2f"),
            _cell(r, "batch", "fps", ".2f"),
            _cell(r, "clip", "tflops", ".3f"),
            _peak(r),
            _cell(r, "clip", "compile_s", ".1f")
            if r["modes"].get("clip", {}).get("compile_s") is not None
            else _cell(r, "online", "compile_s", ".1f"),
        )
        for r in rows
    ]
    widths = [max(len(str(line[i])) for line in [header, *body]) for i in range(len(header))]
    lines = [
        "  ".join(str(c).rjust(w) if i > 1 else str(c).ljust(w) for i, (c, w) in enumerate(zip(line, widths)))
        for line in [header, *body]
    ]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines + speedups(rows))


def speedups(rows: list[dict[str, Any]]) -> list[str]:
    """One line per (preset, other impl): videomt-jax fps / other fps for every mode both ran."""
    lines = []
    ours = {r["preset"]: r for r in rows if r["impl"] == JAX_IMPL}
    for r in rows:
        mine = ours.get(r["preset"])
        if r["impl"] == JAX_IMPL or mine is None:
            continue
        ratios = [
            f"{m} x{mine['modes'][m]['fps'] / r['modes'][m]['fps']:.2f}" for m in r["modes"] if m in mine["modes"]
        ]
        lines.append(f"{r['preset']}: {JAX_IMPL} vs {r['impl']} (fps ratio): " + ", ".join(ratios))
    return lines


def format_compile(entries: list[dict[str, Any]]) -> str:
    return "\n".join(
        f"compile {e['preset']}: scan_layers={e['scan_layers']} [B={e['batch']}, T={e['frames']}] "
        f"{e['compile_s']:.1f} s"
        for e in entries
    )


def finish(report: dict[str, Any]) -> dict[str, Any]:
    report["meta"]["loadavg_end"] = list(os.getloadavg())
    report["meta"]["max_rss_mb"] = max_rss_mb()
    return report


def write_json(path: str, report: dict[str, Any]) -> None:
    from videomt_jax.utils.io import atomic_write_text

    atomic_write_text(path, json.dumps(report, indent=2) + "\n")
