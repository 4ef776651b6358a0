"""The Hugging Face side of the benchmark: `VideomtForUniversalSegmentation`, eager or torch.compile.

Letters: B videos, T frames, C channels, H/W pixels, Q queries, D hidden.
The HF model gets our (random) parameters through `params_to_hf_state_dict`, runs in eval mode
under `torch.no_grad()`, in the benchmark's dtype, on the same kind of device as JAX. HF's public
forward has no carried state, so the online mode runs one frame per call through HF's own modules
(embeddings, layers, query updater, layernorm, `predict`), exactly as its forward does for frame t.
torch and transformers are imported here only, when the HF side runs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from videomt_bench.flops import flops
from videomt_bench.measure import MIB, Unit, warm_up
from videomt_bench.settings import BenchSettings
from videomt_jax.config import VideomtConfig
from videomt_jax.weights.hf_videomt import params_to_hf_state_dict

HF_ONLY_KEYS = ("model_type", "architectures", "label2id")  # set by transformers itself


def torch_device(jax_backend: str) -> tuple[str | None, str | None]:
    """The torch device matching JAX's backend, or (None, why HF cannot run on it)."""
    import torch

    if jax_backend == "cpu":
        return "cpu", None
    if torch.cuda.is_available():
        return "cuda", None
    return None, f"JAX runs on {jax_backend} but this torch build has no CUDA; HF would not run on the same device"


def build_hf_model(config: VideomtConfig, params: Any, device: str, attn_implementation: str) -> Any:
    """HF VidEoMT for `config` holding our parameters, eval mode, on `device` in the config's dtype."""
    import torch
    import transformers

    data = {k: v for k, v in config.to_hf_dict().items() if k not in HF_ONLY_KEYS}
    hf_config = transformers.VideomtConfig(**data)
    hf_config._attn_implementation = attn_implementation
    model = transformers.VideomtForUniversalSegmentation(hf_config)
    state = {
        k: torch.from_numpy(np.array(v)) for k, v in params_to_hf_state_dict(config, jax.device_get(params)).items()
    }
    model.load_state_dict(state, strict=True)
    return model.to(device=device, dtype=getattr(torch, config.dtype)).eval()


def online_step(model: Any) -> Callable:
    """(pixels [B, C, H, W], propagated queries [B, Q, D] or None) -> (mask logits, class logits, queries out).

    Frame t of HF's forward, written with HF's modules: frame 0 starts from the learned queries,
    later frames from `query_updater(previous queries) + learned queries`.
    """
    import torch

    cfg = model.config
    start = cfg.num_hidden_layers - cfg.num_blocks

    def step(pixels: Any, propagated: Any | None) -> tuple[Any, Any, Any]:
        hidden = model.embeddings(pixels)
        for layer in model.layers[:start]:
            hidden = layer(hidden)
        learned = model.query.weight[None].expand(pixels.shape[0], -1, -1)
        queries = learned if propagated is None else model.query_updater(propagated) + learned
        hidden = torch.cat((queries, hidden), dim=1)
        for layer in model.layers[start:]:
            hidden = layer(hidden)
        masks, classes = model.predict(model.layernorm(hidden))
        return masks, classes, hidden[:, : cfg.num_queries]

    return step


def _sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def max_abs_diff(model: Any, clip: Any, reference: dict[str, np.ndarray]) -> dict[str, float]:
    """Largest |HF - videomt-jax| over the class and mask logits of one clip [1, T, C, H, W] (float32 compare)."""
    import torch

    with torch.no_grad():
        out = model(pixel_values_videos=clip)  # HF stacks frames frame-major; B = 1 so [T, ...]
    got = {"class_logits": out.class_queries_logits, "mask_logits": out.masks_queries_logits}
    return {f"max_abs_diff_{k}": float(np.abs(got[k].float().cpu().numpy() - reference[k]).max()) for k in reference}


def prepare_hf(
    config: VideomtConfig,
    params: Any,
    videos: np.ndarray,
    settings: BenchSettings,
    device: str,
    compiled: bool,
    reference: dict[str, np.ndarray] | None = None,
) -> dict[str, Unit]:
    """A warmed-up unit per requested mode for videos [B, T, H, W, C] (clip and online use video 0);
    eager or torch.compile; every call runs under `torch.no_grad()`.

    `reference`: videomt-jax's logits of video 0 (see `jax_runner.prepare_videomt_jax`); their
    largest difference from HF's is recorded in the clip unit's `extra`.
    """
    import torch

    if settings.torch_threads is not None:
        torch.set_num_threads(settings.torch_threads)
    model = build_hf_model(config, params, device, settings.hf_attention)
    dtype = getattr(torch, config.dtype)
    pixels = (
        torch.from_numpy(np.ascontiguousarray(videos)).permute(0, 1, 4, 2, 3).contiguous().to(device, dtype)
    )  # [B, T, C, H, W]
    clip = pixels[:1]
    forward = torch.compile(model) if compiled else model
    step = torch.compile(online_step(model)) if compiled else online_step(model)
    h, w = config.image_hw

    def online(sync_each: bool) -> Callable[[], None]:
        @torch.no_grad()
        def run() -> None:
            propagated = None
            for t in range(clip.shape[1]):
                _, _, propagated = step(clip[:, t], propagated)
                if sync_each:
                    _sync(device)
            _sync(device)

        return run

    def call(x: Any) -> Callable[[], None]:
        @torch.no_grad()
        def run() -> None:
            forward(pixel_values_videos=x)
            _sync(device)

        return run

    on_cuda = device == "cuda"
    plans = {
        "online": (online(False), 1, clip.shape[1]),
        "online_sync": (online(True), 1, clip.shape[1]),
        "clip": (call(clip), 1, clip.shape[1]),
        "batch": (call(pixels), pixels.shape[0], pixels.shape[1]),
    }
    units = {}
    for name in settings.modes:
        run, b, t = plans[name]
        units[name] = Unit(
            run,
            b * t,
            flops(config, h, w, t, batch=b),
            warm_up(run, settings.warmup),
            compiles=compiled,
            device_peak_mb=(lambda: torch.cuda.max_memory_allocated() / MIB) if on_cuda else (lambda: None),
            reset_peak=torch.cuda.reset_peak_memory_stats if on_cuda else (lambda: None),
            extra=dict(torch_threads=torch.get_num_threads(), attn_implementation=settings.hf_attention, device=device),
        )
    if reference is not None and "clip" in units:
        units["clip"].extra.update(max_abs_diff(forward, clip, reference))
    return units
