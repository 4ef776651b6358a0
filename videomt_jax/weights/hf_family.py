"""HF EoMT / EoMT-DINOv3 checkpoints (and the HF backbones) <-> `VideomtConfig` + parameters.

`config.json` `model_type` picks the reader: "eomt" and "eomt_dinov3" are image models
(`model_type="eomt"` here; their `attn_mask_probs` buffer becomes the config's masking schedule),
"dinov3_vit" and "dinov2_with_registers" are backbones alone (see `init_from.py`). The EoMT-DINOv3
config's DINOv3 settings map to our family fields; settings we do not model (biases switched off
other than the key bias, a rotary type other than "default") are refused by name.

Letters: D hidden, nb query blocks, K classes.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from videomt_jax.config import VideomtConfig
from videomt_jax.weights.family_tables import (
    family_buffers,
    hf_family_defaults,
    hf_family_rules,
)
from videomt_jax.weights.tables import ConversionError, check_params, expected_shapes, params_to_source, source_to_params

EOMT_TYPES = ("eomt", "eomt_dinov3")
ARCHITECTURES = {"eomt": "EomtForUniversalSegmentation", "eomt_dinov3": "EomtDinov3ForUniversalSegmentation"}
# DINOv3 switches we do not model: they must have these values.
DINOV3_FIXED = {"query_bias": True, "value_bias": True, "proj_bias": True, "mlp_bias": True}
# Training-time rotary augmentations (unused at inference): kept in `extra` for the round trip.
DINOV3_TRAIN_ONLY = ("pos_embed_shift", "pos_embed_jitter", "pos_embed_rescale")


def _rope_theta(data: Mapping[str, Any], source: str) -> float:
    """rope_theta from `rope_parameters` (EoMT-DINOv3) or a top-level `rope_theta` (DINOv3ViT)."""
    if "rope_parameters" not in data and "rope_theta" in data:
        return float(data["rope_theta"])
    rope = data.get("rope_parameters")
    if not isinstance(rope, Mapping) or "rope_theta" not in rope:
        raise ConversionError(f"{source}: rope_parameters must hold rope_theta (got {rope!r})")
    if rope.get("rope_type", "default") != "default":
        raise ConversionError(f"{source}: rope_parameters.rope_type {rope['rope_type']!r} is not supported (only 'default')")
    return float(rope["rope_theta"])


def dinov3_fields(data: dict[str, Any], source: str) -> dict[str, Any]:
    """Pop the DINOv3 keys of an HF config dict into VideomtConfig fields (checked)."""
    wrong = {k: data[k] for k, v in DINOV3_FIXED.items() if k in data and bool(data[k]) != v}
    if wrong:
        raise ConversionError(f"{source}: unsupported DINOv3 settings {wrong} (expected {DINOV3_FIXED})")
    fields = dict(
        backbone="dinov3",
        rope_theta=_rope_theta(data, source),
        key_bias=bool(data.pop("key_bias", False)),
        use_swiglu_ffn=bool(data.pop("use_gated_mlp", False)),
        intermediate_size=int(data.pop("intermediate_size")),
    )
    for key in ("rope_parameters", "rope_theta", *DINOV3_FIXED):
        data.pop(key, None)
    return fields


def config_from_eomt_dict(data: Mapping[str, Any], source: str, **overrides: Any) -> VideomtConfig:
    """An HF EoMT / EoMT-DINOv3 config.json dict -> VideomtConfig(model_type="eomt", ...)."""
    data = dict(data)
    kind = data.get("model_type")
    if kind not in EOMT_TYPES:
        raise ConversionError(f"{source}: model_type {kind!r} is not one of {EOMT_TYPES}")
    fields: dict[str, Any] = dict(model_type="eomt")
    if kind == "eomt_dinov3":
        fields.update(dinov3_fields(data, source))
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
    kind = "eomt_dinov3" if config.backbone == "dinov3" else "eomt"
    out.update(model_type=kind, architectures=[ARCHITECTURES[kind]])
    if kind == "eomt_dinov3":
        for key in ("mlp_ratio", "use_swiglu_ffn"):
            out.pop(key)
        out.update(
            rope_parameters={"rope_theta": config.rope_theta, "rope_type": "default"},
            key_bias=config.key_bias,
            use_gated_mlp=config.use_swiglu_ffn,
            intermediate_size=config.mlp_hidden_size,
            **DINOV3_FIXED,
        )
    return out


def _probs(state_dict: Mapping[str, np.ndarray], key: str, num_blocks: int, source: str) -> tuple[float, ...]:
    probs = np.asarray(state_dict[key], np.float64).reshape(-1)
    if probs.shape != (num_blocks,):
        raise ConversionError(f"{source}: {key} has shape {probs.shape}, expected ({num_blocks},) (num_blocks)")
    return tuple(float(np.float32(p)) for p in probs)


def family_state_dict_to_params(
    config: VideomtConfig, state_dict: Mapping[str, np.ndarray], source: str
) -> tuple[VideomtConfig, dict]:
    """HF EoMT(-DINOv3) weights, or EoMT-DINOv3 keys + `query_updater.*` for a DINOv3 VidEoMT,
    -> (config, params), strictly. An EoMT config takes `attn_mask_probs` from the checkpoint."""
    if config.model_type == "eomt" and "attn_mask_probs" in state_dict and config.attn_mask_probs is None:
        config = config.replace(attn_mask_probs=_probs(state_dict, "attn_mask_probs", config.num_blocks, source))
    params, _ = source_to_params(
        state_dict, hf_family_rules(config), expected_shapes(config), source=source,
        buffers=family_buffers(config), defaults=hf_family_defaults(config),
    )
    return config, params


def params_to_family_state_dict(config: VideomtConfig, params: Mapping) -> dict[str, np.ndarray]:
    """EoMT params -> the state dict `Eomt(Dinov3)ForUniversalSegmentation` loads (float32, torch layout);
    a DINOv3 VidEoMT -> the same keys plus `query_updater.*`."""
    check_params(config, params)
    dropped = {"embeddings": {k: v for k, v in params["embeddings"].items() if k != "mask_token"}}
    out = params_to_source({**params, **dropped}, hf_family_rules(config), what="an HF EoMT state dict")
    out["attn_mask_probs"] = np.asarray(config.attn_mask_probs or (0.0,) * config.num_blocks, np.float32)
    empty_weight = np.ones((config.num_labels + 1,), np.float32)
    empty_weight[-1] = config.no_object_weight
    out["criterion.empty_weight"] = empty_weight
    return out
