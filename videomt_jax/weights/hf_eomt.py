"""Hugging Face EoMT image models, DINOv2 (`EomtForUniversalSegmentation`) and DINOv3
(`EomtDinov3ForUniversalSegmentation`), and the DINOv3 VidEoMT in their layout: keys, config, load, export.

- EoMT (config.json model_type "eomt"): HF VidEoMT's keys without `query_updater` and
  `embeddings.mask_token` (ours is filled with zeros, HF's initial value: unused at inference).
- EoMT-DINOv3 ("eomt_dinov3"): DINOv3 layers (`shared_rules.dinov3_layer`), a bare
  `embeddings.patch_embeddings` conv, no position embeddings; its DINOv3 config keys map to our
  fields as a `DINOv3ViT`'s do (`hf_backbone.dinov3_config_fields`).
- A DINOv3 VidEoMT (transformers' VidEoMT is DINOv2 only): EoMT-DINOv3's config and keys plus
  `query_updater.*`. `export_hf` writes it so; transformers' EoMT-DINOv3 loads all of it but the
  updater, and `load_pretrained` reads it back as a VidEoMT (the updater's keys tell it apart).

An image model loads as model_type "eomt"; its `attn_mask_probs` buffer becomes the config's masking
schedule. `load_pretrained(..., model_type="videomt")` turns it into a VidEoMT (`api.to_model_type`).

Letters: D hidden, nb query blocks, K classes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from flax import traverse_util

from videomt_jax.config import VideomtConfig
from videomt_jax.processing import VideoProcessor
from videomt_jax.weights.hf_backbone import DINOV3_FIXED, dinov3_config_fields
from videomt_jax.weights.readers import (
    CONFIG_NAME,
    Loaded,
    LoadReport,
    hf_model_type,
    read_hf_weights,
    read_json_object,
)
from videomt_jax.weights.shapes import check_params, expected_shapes
from videomt_jax.weights.shared_rules import (
    ATTN_MASK_PROBS,
    DINOV2_PATCH,
    DINOV3_PATCH,
    EMBEDDINGS,
    EMPTY_WEIGHT,
    HF_DINOV2_POSITIONS,
    HF_HEAD,
    HF_UPSCALE,
    HF_UPSCALE_KEYS,
    QUERY_UPDATER,
    TOKENS,
    ZEROS,
    buffer_shapes,
    dinov2_layer,
    dinov3_layer,
    empty_weight,
    layer_rules,
    upscale_rules,
)
from videomt_jax.weights.tables import (
    SEP,
    ConversionError,
    Rule,
    Table,
    flatten,
    norm,
    params_to_source,
    rules_under,
    source_to_params,
)
from videomt_jax.weights.writers import write_hf_directory

ARCHITECTURES = {"eomt": "EomtForUniversalSegmentation", "eomt_dinov3": "EomtDinov3ForUniversalSegmentation"}
EOMT_TYPES = tuple(ARCHITECTURES)
HF_TYPE_BY_BACKBONE = {"dinov2": "eomt", "dinov3": "eomt_dinov3"}  # our backbone -> HF model_type
UPDATER_KEY = "query_updater.weight"  # present: a DINOv3 VidEoMT in this layout
# Below `embeddings.`, by backbone.
EMBEDDINGS_BY_BACKBONE: dict[str, Table] = {
    "dinov2": (*TOKENS, *DINOV2_PATCH, *HF_DINOV2_POSITIONS),
    "dinov3": (*TOKENS, *DINOV3_PATCH),
}
LAYERS_BY_BACKBONE: dict[str, Callable[[VideomtConfig], Table]] = {"dinov2": dinov2_layer, "dinov3": dinov3_layer}
# Parameters HF's EoMT lacks, by backbone: the DINOv2 mask token (zeros, as HF initialises it).
DEFAULTS_BY_BACKBONE: dict[str, dict[str, Callable[[tuple[int, ...]], np.ndarray]]] = {
    "dinov2": {f"{EMBEDDINGS}mask_token": ZEROS},
    "dinov3": {},
}


# ---------------------------------------------------------------- config
def config_from_eomt_dict(data: Mapping[str, Any], source: str, **overrides: Any) -> VideomtConfig:
    """An HF EoMT / EoMT-DINOv3 config.json dict -> VideomtConfig(model_type="eomt", ...)."""
    data = dict(data)
    kind = data.get("model_type")
    if kind not in EOMT_TYPES:
        raise ConversionError(f"{source}: model_type {kind!r} is not one of {EOMT_TYPES}")
    fields: dict[str, Any] = dict(model_type="eomt")
    if kind == "eomt_dinov3":
        fields.update(dinov3_config_fields(data, source))
    if tuple(data.get("architectures") or ()) == (ARCHITECTURES[kind],):
        data.pop("architectures")  # written back by eomt_config_dict
    data["model_type"] = "videomt"  # VideomtConfig.from_hf_dict reads the shared fields
    try:
        return VideomtConfig.from_hf_dict(data, **{**fields, **overrides})
    except (TypeError, ValueError) as e:
        raise ConversionError(f"{source}: {e}") from e


def eomt_config_dict(config: VideomtConfig) -> dict[str, Any]:
    """The config.json transformers reads for `config` (an EoMT of either backbone)."""
    if config.model_type != "eomt":
        raise ConversionError(f"an HF EoMT config needs model_type='eomt', got {config.model_type!r}")
    out = config.to_hf_dict()
    kind = HF_TYPE_BY_BACKBONE[config.backbone]
    out.update(model_type=kind, architectures=[ARCHITECTURES[kind]])
    if kind == "eomt_dinov3":
        for key in ("mlp_ratio", "use_swiglu_ffn"):
            out.pop(key)
        out.update(
            rope_parameters={"rope_theta": config.rope_theta, "rope_type": "default"},
            pos_embed_rescale=config.pos_embed_rescale,
            key_bias=config.key_bias,
            use_gated_mlp=config.use_swiglu_ffn,
            intermediate_size=config.mlp_hidden_size,
            **DINOV3_FIXED,
        )
    return out


# ---------------------------------------------------------------- keys
def hf_eomt_rules(config: VideomtConfig) -> list[Rule]:
    """HF EoMT / EoMT-DINOv3 keys; for a (DINOv3) VidEoMT config, the same plus `query_updater.*`."""
    top = (*norm("layernorm", "layernorm"), *HF_HEAD, *(QUERY_UPDATER if config.model_type == "videomt" else ()))
    return (
        rules_under(EMBEDDINGS_BY_BACKBONE[config.backbone], "embeddings.", EMBEDDINGS)
        + rules_under(top, "")
        + layer_rules(config, LAYERS_BY_BACKBONE[config.backbone](config), "layers.")
        + upscale_rules(config, HF_UPSCALE, HF_UPSCALE_KEYS)
    )


def _probs(state_dict: Mapping[str, np.ndarray], num_blocks: int, source: str) -> tuple[float, ...]:
    probs = np.asarray(state_dict[ATTN_MASK_PROBS], np.float64).reshape(-1)
    if probs.shape != (num_blocks,):
        raise ConversionError(
            f"{source}: {ATTN_MASK_PROBS} has shape {probs.shape}, expected ({num_blocks},) (num_blocks)"
        )
    return tuple(float(np.float32(p)) for p in probs)


def eomt_state_dict_to_params(
    config: VideomtConfig, state_dict: Mapping[str, np.ndarray], source: str
) -> tuple[VideomtConfig, dict]:
    """HF EoMT(-DINOv3) weights, or EoMT-DINOv3 keys + `query_updater.*` for a DINOv3 VidEoMT,
    -> (config, params), strictly. An EoMT config takes `attn_mask_probs` from the checkpoint."""
    if config.model_type == "eomt" and ATTN_MASK_PROBS in state_dict and config.attn_mask_probs is None:
        config = config.replace(attn_mask_probs=_probs(state_dict, config.num_blocks, source))
    params, _ = source_to_params(
        state_dict,
        hf_eomt_rules(config),
        expected_shapes(config),
        source=source,
        buffers=buffer_shapes(config),
        defaults=DEFAULTS_BY_BACKBONE[config.backbone],
    )
    return config, params


def params_to_eomt_state_dict(config: VideomtConfig, params: Mapping) -> dict[str, np.ndarray]:
    """EoMT params -> the state dict `Eomt(Dinov3)ForUniversalSegmentation` loads (float32, torch layout);
    a DINOv3 VidEoMT -> the same keys plus `query_updater.*`."""
    check_params(config, params)
    unwritten = DEFAULTS_BY_BACKBONE[config.backbone]  # parameters HF's EoMT does not have
    kept = traverse_util.unflatten_dict({p: v for p, v in flatten(params).items() if p not in unwritten}, sep=SEP)
    out = params_to_source(kept, hf_eomt_rules(config), what="an HF EoMT state dict")
    out[ATTN_MASK_PROBS] = np.asarray(config.attn_mask_probs or (0.0,) * config.num_blocks, np.float32)
    out[EMPTY_WEIGHT] = empty_weight(config)
    return out


# ---------------------------------------------------------------- load_pretrained / export_hf
def matches(path: Path) -> bool:
    return hf_model_type(path) in EOMT_TYPES


def load(path: Path, overrides: Mapping[str, Any]) -> Loaded:
    """`load_pretrained`'s loader for this format: an image model, or a DINOv3 VidEoMT when the
    weights hold `query_updater.*`."""
    data = read_json_object(path / CONFIG_NAME)
    state_dict, files = read_hf_weights(path)
    source, kind = str(files[0]), data["model_type"]
    if UPDATER_KEY in state_dict and kind == "eomt":
        raise ConversionError(
            f"{source}: its config.json says model_type {kind!r} (an image model) but the weights hold "
            f"{UPDATER_KEY} (a VidEoMT); the config and the weights belong to different models"
        )
    config = config_from_eomt_dict(data, source, **overrides)
    if UPDATER_KEY in state_dict:
        config = config.replace(model_type="videomt", attn_mask_probs=None)
    config, params = eomt_state_dict_to_params(config, state_dict, source)
    buffers = sorted(k for k in buffer_shapes(config) if k in state_dict)
    report = LoadReport(f"hugging face ({kind})", [str(path / CONFIG_NAME), *map(str, files)], len(state_dict), buffers)
    return config, params, report


def export(path: Path, config: VideomtConfig, params: Mapping, *, overwrite: bool, processor: VideoProcessor) -> Path:
    """`export_hf` for an EoMT (transformers' `Eomt(Dinov3)ForUniversalSegmentation` loads it strictly)
    or a DINOv3 VidEoMT (EoMT-DINOv3 config and keys plus `query_updater.*`)."""
    if config.model_type == "videomt" and config.backbone != "dinov3":
        raise ValueError("a DINOv2 VidEoMT exports in Hugging Face VidEoMT's own layout (hf_videomt.export)")
    state_dict = params_to_eomt_state_dict(config, params)
    schedule = config.attn_mask_probs if config.model_type == "eomt" else None
    data = {**eomt_config_dict(config.replace(model_type="eomt", attn_mask_probs=schedule)), "dtype": "float32"}
    return write_hf_directory(path, data, state_dict, processor, overwrite=overwrite)
