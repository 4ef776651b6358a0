"""The deployment artifacts in the benchmark: a `jax.export` artifact run by `load_serving`, and the
ONNX model run by ONNX Runtime on CPU (`--serving`).

Letters: B videos, T frames, H/W pixels, C channels, Q queries, D hidden.
Each mode gets the artifact it needs (online: T = 1, B = 1; clip: T frames, B = 1; batch: T
frames, B videos), written to a temporary directory and loaded back from disk, as a deployment
would. Online passes carry the state from call to call. The clip unit records the largest
difference from videomt-jax's logits, as the HF rows do. onnxruntime/jax2onnx are imported only
here; without them the ONNX row is skipped with the reason.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import numpy as np

from videomt_bench.flops import flops
from videomt_bench.measure import Unit, warm_up
from videomt_bench.settings import BenchSettings
from videomt_jax.config import VideomtConfig

EXPORT_IMPL = "jax-export"
ORT_IMPL = "onnxruntime-cpu"
IMPLS = (EXPORT_IMPL, ORT_IMPL)
ORT_PROVIDERS = ["CPUExecutionProvider"]


def call_shapes(settings: BenchSettings) -> dict[str, tuple[int, int]]:
    """mode -> (videos B, frames T) of one call."""
    shapes = {
        "online": (1, 1),
        "online_sync": (1, 1),
        "clip": (1, settings.frames),
        "batch": (settings.batch, settings.frames),
    }
    return {m: shapes[m] for m in settings.modes}


def _logit_diffs(class_logits: Any, mask_logits: Any, reference: dict[str, np.ndarray] | None) -> dict[str, float]:
    """Largest |artifact - videomt-jax| of video 0's clip logits ([T, Q, ...] reference)."""
    if reference is None:
        return {}
    got = {"class_logits": np.asarray(class_logits)[0], "mask_logits": np.asarray(mask_logits)[0]}
    return {f"max_abs_diff_{k}": float(np.abs(got[k] - reference[k]).max()) for k in reference}


def _units(
    config: VideomtConfig,
    settings: BenchSettings,
    videos: np.ndarray,
    runners: dict[tuple[int, int], Callable[[np.ndarray, bool], Any]],
    reference: dict[str, np.ndarray] | None,
    extra: dict[str, Any],
    compile_s: dict[tuple[int, int], float | None],
) -> dict[str, Unit]:
    """One warmed-up unit per mode from per-shape runners (chunk [B, T, H, W, C], sync_each) -> last outputs."""
    h, w = config.image_hw
    t = videos.shape[1]
    units = {}
    for mode, (b, frames) in call_shapes(settings).items():
        runner = runners[(b, frames)]
        if frames == 1:  # online: one frame per call, state carried over the clip of video 0
            chunks = [videos[:1, i : i + 1] for i in range(t)]
            sync_each = mode == "online_sync"

            def run(chunks: list = chunks, runner: Callable = runner, sync_each: bool = sync_each) -> None:
                runner(chunks, sync_each)

            frames_per_rep, flop_count = t, flops(config, h, w, t)
        else:
            chunk = [videos[:b]]

            def run(chunk: list = chunk, runner: Callable = runner) -> None:
                runner(chunk, False)

            frames_per_rep, flop_count = b * t, flops(config, h, w, t, batch=b)
        units[mode] = Unit(
            run,
            frames_per_rep,
            flop_count,
            warm_up(run, settings.warmup),
            compile_s=compile_s[(b, frames)],
            extra=dict(extra),
        )
    if "clip" in units:
        units["clip"].extra.update(_logit_diffs(*runners[(1, settings.frames)]([videos[:1]], False)[:2], reference))
    return units


def prepare_jax_export(
    config: VideomtConfig, params: Any, videos: np.ndarray, settings: BenchSettings, reference: dict | None
) -> dict[str, Unit]:
    """Units of the jax.export artifact (this backend's platform), loaded back with `load_serving`."""
    from videomt_jax.serving.export import export_serving
    from videomt_jax.serving.load import PLATFORMS_OF_BACKEND, load_serving

    platform = PLATFORMS_OF_BACKEND.get(jax.default_backend(), (jax.default_backend(),))[0]
    runners, export_s = {}, {}
    device_videos = jax.device_put(videos)
    with tempfile.TemporaryDirectory(prefix="videomt-serving-") as tmp:
        for b, t in set(call_shapes(settings).values()):
            start = time.perf_counter()
            path = export_serving(Path(tmp) / f"b{b}-t{t}", config, params, platforms=(platform,), frames=t, batch=b)
            export_s[(b, t)] = time.perf_counter() - start
            serving = load_serving(path)

            def runner(chunks: list, sync_each: bool, serving: Any = serving) -> Any:
                state, out = None, None
                for chunk in chunks:
                    out, state = serving.step(chunk, state)
                    if sync_each:
                        jax.block_until_ready(out)
                jax.block_until_ready(out)
                return out["class_logits"], out["mask_logits"]

            runners[(b, t)] = runner
    extra = {"platform": platform, "export_s": {f"B{b}xT{t}": round(s, 3) for (b, t), s in export_s.items()}}
    # inputs already on the device, as for videomt-jax; compile time = first call - median
    return _units(config, settings, device_videos, runners, reference, extra, dict.fromkeys(runners))


def prepare_onnxruntime(
    config: VideomtConfig, params: Any, videos: np.ndarray, settings: BenchSettings, reference: dict | None
) -> dict[str, Unit]:
    """Units of the ONNX model under ONNX Runtime's CPU provider (session build time = compile_s)."""
    import onnxruntime as ort

    from videomt_jax.serving.onnx_export import INPUT_NAMES, export_onnx

    runners, build_s, export_s = {}, {}, {}
    with tempfile.TemporaryDirectory(prefix="videomt-onnx-") as tmp:
        for b, t in set(call_shapes(settings).values()):
            start = time.perf_counter()
            path = export_onnx(Path(tmp) / f"b{b}-t{t}.onnx", config, params, frames=t, batch=b)
            export_s[(b, t)] = time.perf_counter() - start
            start = time.perf_counter()
            session = ort.InferenceSession(str(path), providers=ORT_PROVIDERS)
            build_s[(b, t)] = time.perf_counter() - start

            def runner(chunks: list, sync_each: bool, session: Any = session, b: int = b) -> Any:
                queries = np.zeros((b, config.num_queries, config.hidden_size), np.float32)
                started = np.zeros((b,), bool)
                out = None
                for chunk in chunks:  # ONNX Runtime returns finished host arrays: every call is synchronous
                    out = session.run(None, dict(zip(INPUT_NAMES, (chunk, queries, started))))
                    queries, started = out[2], out[3]
                return out[0], out[1]

            runners[(b, t)] = runner
    threads = ort.SessionOptions().intra_op_num_threads
    extra = {
        "onnxruntime": ort.__version__,
        "providers": ORT_PROVIDERS,
        "intra_op_num_threads": threads or "default",
        "export_s": {f"B{b}xT{t}": round(s, 3) for (b, t), s in export_s.items()},
    }
    return _units(config, settings, np.ascontiguousarray(videos), runners, reference, extra, build_s)


def prepare_serving(
    config: VideomtConfig,
    params: Any,
    videos: np.ndarray,
    settings: BenchSettings,
    reference: dict | None,
    say: Callable[[str], None],
) -> tuple[dict[str, dict[str, Unit]], list[tuple[str, str]]]:
    """Units per serving implementation, and (impl, reason) for those that could not run."""
    prepared, skipped = {}, []
    say(f"{EXPORT_IMPL}: exporting, loading and warming up ...")
    prepared[EXPORT_IMPL] = prepare_jax_export(config, params, videos, settings, reference)
    try:
        import jax2onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as e:
        skipped.append((ORT_IMPL, f"needs the onnx extra (jax2onnx, onnxruntime): {e}"))
        return prepared, skipped
    if config.dtype != "float32" or getattr(config, "backbone", "dinov2") != "dinov2":
        skipped.append((ORT_IMPL, f"the ONNX export is float32 DINOv2 only (dtype {config.dtype})"))
        return prepared, skipped
    say(f"{ORT_IMPL}: converting to ONNX, building sessions and warming up ...")
    prepared[ORT_IMPL] = prepare_onnxruntime(config, params, videos, settings, reference)
    return prepared, skipped
