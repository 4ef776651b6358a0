"""Checkpoint formats, one module each (`native`, `hf_videomt`, `hf_eomt`, `hf_backbone`,
`original_dinov2`, `original_dinov3`), over a shared engine (`tables`, `shared_rules`, `shapes`,
`readers`, `writers`); `api` dispatches load / save / export over them, `init_from` starts training."""

from videomt_jax.weights.api import (
    CheckpointNotFoundError,
    LoadReport,
    export_hf,
    load_pretrained,
    load_pretrained_with_report,
    save_pretrained,
)
from videomt_jax.weights.hf_videomt import hf_state_dict_to_params, params_to_hf_state_dict
from videomt_jax.weights.original_dinov2 import infer_original_config, original_state_dict_to_params
from videomt_jax.weights.readers import CheckpointReadError, read_safetensors
from videomt_jax.weights.tables import ConversionError

__all__ = [
    "CheckpointNotFoundError",
    "CheckpointReadError",
    "ConversionError",
    "LoadReport",
    "export_hf",
    "hf_state_dict_to_params",
    "infer_original_config",
    "load_pretrained",
    "load_pretrained_with_report",
    "original_state_dict_to_params",
    "params_to_hf_state_dict",
    "read_safetensors",
    "save_pretrained",
]
