"""Benchmark settings: defaults per backend (one table) and model configs per preset name.

Letters: B videos per batch call, T frames per clip, H/W pixels.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from videomt_jax.config import PRESETS, VideomtConfig

# Extra preset names the benchmark knows besides `VideomtConfig.preset`'s; "tiny" is for tests.
BENCH_PRESETS: dict[str, dict[str, int]] = {
    "tiny": dict(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=2, num_blocks=1, num_queries=4, num_register_tokens=1
    ),
}

# Defaults by JAX backend: a GPU runs the paper's setting, a CPU a size that finishes in minutes.
BACKEND_DEFAULTS: dict[str, dict[str, Any]] = {
    "gpu": dict(
        presets=("small", "base", "large"),
        size=640,
        frames=8,
        batch=8,
        dtype="bfloat16",
        iters=20,
        warmup=3,
        hf=True,
        compile_hf=True,
    ),
    "cpu": dict(
        presets=("small",), size=320, frames=8, batch=2, dtype="float32", iters=3, warmup=1, hf=True, compile_hf=False
    ),
}
HF_ATTENTION = ("sdpa", "eager")  # `sdpa` is what transformers picks by default for VidEoMT
# online: batch 1, one frame per call, carried state, outputs awaited once per pass (frames pipelined);
# online_sync: the same, but each frame's outputs are awaited before the next frame goes in (latency).
MODES = ("online", "online_sync", "clip", "batch")


@dataclass(frozen=True)
class BenchSettings:
    presets: tuple[str, ...]  # preset names or paths to a config.json
    size: int  # H = W
    frames: int  # T
    batch: int  # B of the batch-of-videos mode
    dtype: str  # compute dtype of both implementations
    iters: int  # timed repetitions per mode
    warmup: int  # untimed repetitions per mode (the first one compiles)
    hf: bool  # also run Hugging Face transformers
    compile_hf: bool  # also run HF under torch.compile
    hf_attention: str = "sdpa"
    torch_threads: int | None = None  # torch intra-op threads for HF on CPU (None: torch's default)
    attention_impl: str = "auto"  # videomt-jax attention kernel
    scan_layers: bool = False  # videomt-jax: lax.scan over layers (faster compile)
    compile_only: bool = False  # only measure videomt-jax compile times
    serving: bool = False  # also time the jax.export artifact and ONNX Runtime (CPU) (serving_runner)
    modes: tuple[str, ...] = MODES
    seed: int = 0

    def __post_init__(self) -> None:
        problems = [
            f"{k} must be >= 1, got {getattr(self, k)}"
            for k in ("size", "frames", "batch", "iters")
            if getattr(self, k) < 1
        ]
        if self.warmup < 1:
            problems.append(f"warmup must be >= 1 (the first call compiles), got {self.warmup}")
        if self.torch_threads is not None and self.torch_threads < 1:
            problems.append(f"torch_threads must be >= 1, got {self.torch_threads}")
        if self.hf_attention not in HF_ATTENTION:
            problems.append(f"hf_attention must be one of {HF_ATTENTION}, got {self.hf_attention!r}")
        unknown = [m for m in self.modes if m not in MODES]
        if unknown or not self.modes:
            problems.append(f"modes must be a non-empty subset of {MODES}, got {self.modes}")
        if not self.presets:
            problems.append("no presets given")
        if problems:
            raise ValueError("invalid benchmark settings: " + "; ".join(problems))

    @classmethod
    def for_backend(cls, backend: str, **overrides: Any) -> BenchSettings:
        """Defaults of `backend` ("gpu" for CUDA/ROCm, anything else counts as "cpu"), then overrides (None = keep)."""
        base = dict(BACKEND_DEFAULTS["gpu" if backend in ("gpu", "cuda", "rocm") else "cpu"])
        base.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**base)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def preset_config(name: str, settings: BenchSettings) -> VideomtConfig:
    """The model config of one preset name (or config.json path) at the benchmark's size and dtype."""
    jax_side = dict(
        image_size=settings.size,
        dtype=settings.dtype,
        attention_impl=settings.attention_impl,
        scan_layers=settings.scan_layers,
    )
    if name in PRESETS:
        return VideomtConfig.preset(name, **jax_side)
    if name in BENCH_PRESETS:
        return VideomtConfig(**{**BENCH_PRESETS[name], **jax_side})
    path = Path(name)
    if path.suffix == ".json" and path.is_file():
        return VideomtConfig.from_json_file(str(path), **jax_side)
    known = sorted(PRESETS) + sorted(BENCH_PRESETS)
    raise ValueError(f"unknown preset {name!r}: use one of {known} or the path of a config.json file")


def preset_label(name: str) -> str:
    """Short name for tables: the preset name, or a config file's stem."""
    return name if name in PRESETS or name in BENCH_PRESETS else Path(name).stem


def config_summary(config: VideomtConfig) -> dict[str, Any]:
    keys = (
        "hidden_size",
        "num_hidden_layers",
        "num_attention_heads",
        "num_blocks",
        "num_queries",
        "patch_size",
        "image_size",
        "dtype",
        "attention_impl",
        "scan_layers",
    )
    return json.loads(json.dumps({k: getattr(config, k) for k in keys}))
