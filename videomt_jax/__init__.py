"""videomt-jax: VidEoMT (encoder-only online video segmentation) in JAX/Flax.

Public names are resolved lazily, so `import videomt_jax` stays light (no torch, no training code).
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS: dict[str, str] = {
    "VideomtConfig": "videomt_jax.config",
    "PRESETS": "videomt_jax.config",
    "VideomtModel": "videomt_jax.modeling.videomt",
    "EomtModel": "videomt_jax.modeling.eomt",
    "model_for": "videomt_jax.modeling.family",
    "init_videomt_from": "videomt_jax.weights.init_from",
    "init_params": "videomt_jax.modeling.family",
    "init_state": "videomt_jax.modeling.videomt",
    "VideomtOutput": "videomt_jax.modeling.outputs",
    "StreamState": "videomt_jax.modeling.outputs",
    "VideoStreamer": "videomt_jax.streaming",
    "load_pretrained": "videomt_jax.weights.api",
    "save_pretrained": "videomt_jax.weights.api",
    "export_hf": "videomt_jax.weights.api",
    "export_serving": "videomt_jax.serving.export",
    "load_serving": "videomt_jax.serving.load",
    "export_onnx": "videomt_jax.serving.onnx_export",
    "VideoProcessor": "videomt_jax.processing",
    "load_processor": "videomt_jax.processing",
    "VideoGeometry": "videomt_jax.processing",
    "read_video": "videomt_jax.io.video",
    "iter_video_chunks": "videomt_jax.io.video",
    "write_video": "videomt_jax.io.video",
    "overlay_video": "videomt_jax.io.overlay",
    "encode_rle": "videomt_jax.io.results_json",
    "decode_rle": "videomt_jax.io.results_json",
    "write_results_json": "videomt_jax.io.results_json",
    "SyntheticConfig": "videomt_jax.data.synthetic",
    "make_clip": "videomt_jax.data.synthetic",
    "evaluate_semantic": "videomt_jax.metrics",
    "evaluate_video_instance": "videomt_jax.metrics",
    "evaluate_panoptic": "videomt_jax.metrics",
    "TrainConfig": "videomt_jax.training.config",
    "fit": "videomt_jax.training.loop",
    "TrainProgram": "videomt_jax.training.loop",
    "make_program": "videomt_jax.training.loop",
    "load_recipe": "videomt_jax.training.recipes",
    "Recipe": "videomt_jax.training.recipes",
    "evaluate_model": "videomt_jax.evaluation.synthetic",
    "videomt_loss": "videomt_jax.training.losses",
    "LossTargets": "videomt_jax.training.matcher",
    "hungarian_match": "videomt_jax.training.matcher",
    "post_process_semantic": "videomt_jax.postprocess",
    "post_process_instance": "videomt_jax.postprocess",
    "post_process_panoptic": "videomt_jax.postprocess",
    "to_hf": "videomt_jax.postprocess",
    "video_instance": "videomt_jax.postprocess",
    "video_panoptic": "videomt_jax.postprocess",
    "video_semantic": "videomt_jax.postprocess",
    "SegmentResult": "videomt_jax.postprocess",
    "VideoInstanceResult": "videomt_jax.postprocess",
    "VideoPanopticResult": "videomt_jax.postprocess",
    "segment_video": "videomt_jax.apps.segment",
    "VideoSegmentation": "videomt_jax.apps.segment",
}

# subpackages reachable as attributes (`vm.metrics.evaluate_vpq`), imported on first use
_SUBPACKAGES = ("metrics",)

__all__ = sorted(_EXPORTS) + list(_SUBPACKAGES)


def __getattr__(name: str) -> Any:
    if name in _SUBPACKAGES:
        return importlib.import_module(f"videomt_jax.{name}")
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'videomt_jax' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS) | set(_SUBPACKAGES))
