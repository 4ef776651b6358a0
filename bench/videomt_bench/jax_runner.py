"""The videomt-jax side of the benchmark: online (VideoStreamer), clip and batch-of-videos modes.

Letters: B videos, T frames, H/W pixels, C channels, Q queries, K+1 classes, h/w mask grid.
Inputs live on the device before timing starts; every repetition waits for its outputs.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from videomt_bench.flops import flops
from videomt_bench.measure import MIB, Unit, warm_up
from videomt_bench.settings import BenchSettings
from videomt_jax.config import VideomtConfig
from videomt_jax.modeling.family import init_params
from videomt_jax.modeling.videomt import VideomtModel, inference_params
from videomt_jax.modeling.xla_options import jit_model
from videomt_jax.streaming import VideoStreamer

# CPU XLA cannot always reuse a donated buffer; the streamer donates its state on every backend.
warnings.filterwarnings("ignore", message="Some donated buffers were not usable")


def random_params(config: VideomtConfig, seed: int = 0) -> dict:
    """Random float32 parameters on the device: N(0, 0.02) weights, unit norm scales, zero biases.

    Filled from numpy over the shapes of `init_params` (no init forward pass to trace or compile);
    the benchmark only needs finite activations of realistic scale, not trained values.
    """
    rng = np.random.default_rng(seed)

    def fill(path: tuple, leaf: jax.ShapeDtypeStruct) -> np.ndarray:
        name = str(getattr(path[-1], "key", path[-1]))
        if name == "scale" or name.startswith("lambda"):
            return np.ones(leaf.shape, np.float32)
        if name == "bias":
            return np.zeros(leaf.shape, np.float32)
        return (0.02 * rng.standard_normal(leaf.shape)).astype(np.float32)

    return jax.device_put(jax.tree_util.tree_map_with_path(fill, abstract_params(config)))


def abstract_params(config: VideomtConfig) -> Any:
    """Parameter shapes only (for compile-time measurements without allocating anything)."""
    return jax.eval_shape(lambda: init_params(config, jax.random.PRNGKey(0)))


def logits_fn(config: VideomtConfig) -> Callable:
    """(params, videos [B, T, H, W, C]) -> (class logits [B, T, Q, K+1], mask logits [B, T, Q, h, w]), jitted."""
    model = VideomtModel(config)

    def forward(params: Any, videos: jax.Array) -> tuple[jax.Array, jax.Array]:
        out = model.apply({"params": params}, videos)
        return out.class_logits, out.mask_logits

    return jit_model(forward)


def compile_time(config: VideomtConfig, batch: int, frames: int, params: Any | None = None) -> tuple[float, Any]:
    """Seconds to trace, lower and compile the clip forward for [batch, frames] videos; and the executable."""
    h, w = config.image_hw
    params = abstract_params(config) if params is None else params
    videos = jax.ShapeDtypeStruct((batch, frames, h, w, config.num_channels), jnp.float32)
    start = time.perf_counter()
    compiled = logits_fn(config).lower(params, videos).compile()
    return time.perf_counter() - start, compiled


def xla_memory_mb(compiled: Any) -> float | None:
    """Arguments + outputs + temporaries of one executable (XLA's own accounting), MiB."""
    try:
        stats = compiled.memory_analysis()
    except (NotImplementedError, AttributeError, RuntimeError):
        return None
    if stats is None:
        return None
    total = (
        stats.argument_size_in_bytes + stats.output_size_in_bytes + stats.temp_size_in_bytes - stats.alias_size_in_bytes
    )
    return total / MIB


def device_peak_mb() -> float | None:
    """The accelerator allocator's peak bytes in use (whole process, never reset); None on CPU."""
    stats = jax.devices()[0].memory_stats() if jax.default_backend() != "cpu" else None
    return stats["peak_bytes_in_use"] / MIB if stats and "peak_bytes_in_use" in stats else None


def online_pass(streamer: VideoStreamer, frames: list, sync_each: bool) -> None:
    """Feed frames ([1, 1, H, W, C] each, on the device) one per call from a fresh state; returns when done.

    sync_each: wait for every frame's outputs before the next call (latency), else once per pass.
    """
    state = streamer.init(batch_size=1)
    outs = []
    for frame in frames:
        out, state = streamer.step(state, frame)
        if sync_each:
            jax.block_until_ready(out)
        outs.append(out)
    jax.block_until_ready(outs)


def _online(config: VideomtConfig, params: Any, clip: jax.Array, settings: BenchSettings, sync_each: bool) -> Unit:
    """Batch 1, one frame per call, state carried by VideoStreamer (donated buffers); clip [1, T, H, W, C].

    sync_each: wait for every frame's outputs before the next call (latency), else once per pass.
    """
    streamer = VideoStreamer(VideomtModel(config), params)
    t = clip.shape[1]
    frames = [clip[:, i : i + 1] for i in range(t)]  # T x [1, 1, H, W, C], already on the device

    def one_pass() -> None:
        online_pass(streamer, frames, sync_each)

    first = warm_up(one_pass, settings.warmup)
    return Unit(one_pass, t, flops(config, *config.image_hw, t), first, device_peak_mb=device_peak_mb)


def _call(config: VideomtConfig, params: Any, videos: jax.Array, settings: BenchSettings) -> tuple[Unit, Any]:
    """One call on videos [B, T, H, W, C] (clip mode: B = 1; batch mode: B videos); also the executable."""
    b, t = videos.shape[:2]
    compile_s, compiled = compile_time(config, b, t, params)

    def run() -> None:
        jax.block_until_ready(compiled(params, videos))

    first = warm_up(run, settings.warmup)
    unit = Unit(
        run,
        b * t,
        flops(config, *config.image_hw, t, batch=b),
        first,
        compile_s=compile_s,
        device_peak_mb=device_peak_mb,
    )
    unit.extra["xla_memory_mb"] = xla_memory_mb(compiled)
    return unit, compiled


def prepare_videomt_jax(
    config: VideomtConfig, params: Any, videos: np.ndarray, settings: BenchSettings
) -> tuple[dict[str, Unit], dict[str, np.ndarray]]:
    """A compiled, warmed-up unit per requested mode for videos [B, T, H, W, C] (float32 host array;
    clip and online use video 0).

    Also returns the class and mask logits of video 0 (host arrays [T, Q, K+1], [T, Q, h, w]), so the
    HF side can check it computes the same thing.
    """
    dev_videos = jax.device_put(jnp.asarray(videos))
    clip = dev_videos[:1]
    params = inference_params(config, params)  # what VideoStreamer runs with; the same numbers
    units: dict[str, Unit] = {}
    clip_fn = logits_fn(config)
    for name in settings.modes:
        if name.startswith("online"):
            units[name] = _online(config, params, clip, settings, sync_each=name == "online_sync")
        else:
            units[name], compiled = _call(config, params, clip if name == "clip" else dev_videos, settings)
            clip_fn = compiled if name == "clip" else clip_fn
    class_logits, mask_logits = jax.device_get(clip_fn(params, clip))
    return units, {"class_logits": class_logits[0], "mask_logits": mask_logits[0]}
