"""Hugging Face VidEoMT (`VideomtForUniversalSegmentation`, DINOv2): keys, config, load, export.

A directory holds `config.json` (model_type "videomt"; `VideomtConfig.from_hf_dict` /
`to_hf_dict` map it, keeping every field) and the weights as model.safetensors, a sharded index or
pytorch_model.bin (`readers.py`). HF keeps one `layers.{i}` module per encoder layer with separate
q/k/v projections; we stack the layers on a leading axis and fuse q|k|v (`shared_rules.py`).
Buffers: `attn_mask_probs` [nb] (the masking schedule of training, read by no inference: ignored on
import, written as ones on export) and `criterion.empty_weight` [K+1] (consumed on import, written
from `no_object_weight` on export).

Letters: L layers, nb query blocks, K classes, D hidden.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from videomt_jax.config import VideomtConfig
from videomt_jax.processing import VideoProcessor
from videomt_jax.weights.readers import CONFIG_NAME, Loaded, LoadReport, hf_model_type, read_hf_weights
from videomt_jax.weights.shapes import check_params, expected_shapes
from videomt_jax.weights.shared_rules import (
    ATTN_MASK_PROBS,
    DINOV2_PATCH,
    EMBEDDINGS,
    HF_DINOV2_POSITIONS,
    HF_HEAD,
    HF_UPSCALE,
    HF_UPSCALE_KEYS,
    QUERY_UPDATER,
    TOKENS,
    buffer_shapes,
    dinov2_layer,
    empty_weight,
    layer_rules,
    upscale_rules,
)
from videomt_jax.weights.tables import Rule, Table, norm, one, params_to_source, rules_under, source_to_params
from videomt_jax.weights.writers import write_hf_directory

NAME = "hugging face"  # the LoadReport's source
MODEL_TYPE = "videomt"
# Below `embeddings.`: DINOv2 tokens and patch convolution, the mask token, position embeddings.
HF_EMBEDDINGS: Table = (*TOKENS, *DINOV2_PATCH, one("mask_token", "mask_token"), *HF_DINOV2_POSITIONS)
HF_TOP: Table = (*norm("layernorm", "layernorm"), *HF_HEAD, *QUERY_UPDATER)  # outside the embeddings and layers


def hf_videomt_rules(config: VideomtConfig) -> list[Rule]:
    return (
        rules_under(HF_EMBEDDINGS, "embeddings.", EMBEDDINGS)
        + rules_under(HF_TOP, "")
        + layer_rules(config, dinov2_layer(config), "layers.")
        + upscale_rules(config, HF_UPSCALE, HF_UPSCALE_KEYS)
    )


def hf_state_dict_to_params(
    config: VideomtConfig, state_dict: Mapping[str, np.ndarray], *, source: str = "the HF state dict"
) -> dict:
    """An HF state dict (numpy arrays, torch layout) -> our float32 parameter tree (numpy), strictly."""
    params, _ = source_to_params(
        state_dict, hf_videomt_rules(config), expected_shapes(config), source=source, buffers=buffer_shapes(config)
    )
    return params


def params_to_hf_state_dict(config: VideomtConfig, params: Mapping) -> dict[str, np.ndarray]:
    """Our parameters -> the state dict `VideomtForUniversalSegmentation` loads (float32, torch layout)."""
    check_params(config, params)
    out = params_to_source(params, hf_videomt_rules(config), what="an HF state dict")
    out[ATTN_MASK_PROBS] = np.ones((config.num_blocks,), np.float32)
    out["criterion.empty_weight"] = empty_weight(config)
    return out


def matches(path: Path) -> bool:
    """An HF directory whose config.json says (or leaves at its default) model_type videomt."""
    return hf_model_type(path) == MODEL_TYPE


def load(path: Path, overrides: Mapping[str, Any]) -> Loaded:
    """`load_pretrained`'s loader for this format."""
    config_file = path / CONFIG_NAME
    try:
        config = VideomtConfig.from_json_file(str(config_file), **overrides)
    except (ValueError, TypeError) as e:
        raise ValueError(f"{config_file}: {e}") from e
    state_dict, files = read_hf_weights(path)
    params, buffers = source_to_params(
        state_dict,
        hf_videomt_rules(config),
        expected_shapes(config),
        source=str(files[0]),
        buffers=buffer_shapes(config),
    )
    return config, params, LoadReport(NAME, [str(config_file), *map(str, files)], len(state_dict), buffers)


def export(path: Path, config: VideomtConfig, params: Mapping, *, overwrite: bool, processor: VideoProcessor) -> Path:
    """`export_hf` for a DINOv2 VidEoMT: the layout transformers' VidEoMT loads strictly.

    A model that propagates normalised queries (`norm_queries`) is refused: Hugging Face has no such
    option, so it would load the weights without complaint and compute something else after frame 0.
    """
    if config.norm_queries:
        raise ValueError(
            f"cannot export to {path}: the model propagates normalised queries (norm_queries=True), which "
            "Hugging Face VidEoMT cannot express (transformers would load it and give different outputs "
            "from the second frame on); keep it in the native format (save_pretrained)"
        )
    state_dict = params_to_hf_state_dict(config, params)
    data = config.replace(extra={**config.extra, "dtype": "float32"}).to_hf_dict()  # the arrays written are float32
    return write_hf_directory(path, data, state_dict, processor, overwrite=overwrite)
