"""Hugging Face backbones alone: `DINOv3ViTModel` and `Dinov2WithRegistersModel` (keys, config).

An HF directory whose config.json says model_type "dinov3_vit" or "dinov2_with_registers" holds a
ViT without queries or heads: `init_videomt_from` (`init_from.py`) fills a VidEoMT's embeddings,
encoder layers and final norm from it; `load_pretrained` refuses it by name.

- `DINOv3ViTModel`: embeddings (`cls_token`, `register_tokens`, a bare `patch_embeddings` conv; its
  `mask_token` a buffer here), layers `model.layer.{i}` (older releases `layer.{i}`), final `norm`,
  optionally `rope_embeddings.inv_freq`. Its config keys map to our DINOv3 fields
  (`dinov3_config_fields`, shared with EoMT-DINOv3); settings we do not model (biases switched off
  other than the key bias, a rotary type other than "default") are refused by name.
- `Dinov2WithRegistersModel`: layers `encoder.layer.{i}` (older files name the attention
  projections `attention.attention.{query,key,value}` / `attention.output.dense`), final `layernorm`,
  position embeddings [1, 1+N, D] with a CLS slot, folded into our CLS token; the patch positions are
  resampled to our grid, and the patch kernel may have another patch size (`init_from.py` resizes it).

Letters: D hidden, N patch positions, E head dim.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np

from videomt_jax.config import ROPE_PARTS, VideomtConfig
from videomt_jax.modeling.embeddings import resample_pos_embed
from videomt_jax.weights.readers import Loaded, hf_model_type
from videomt_jax.weights.shapes import expected_shapes
from videomt_jax.weights.shared_rules import (
    DINOV2_PATCH,
    DINOV3_PATCH,
    EMBEDDINGS,
    TOKENS,
    dinov2_layer,
    dinov3_layer,
    layer_rules,
)
from videomt_jax.weights.tables import (
    Arrays,
    ConversionError,
    Entry,
    Layout,
    Rule,
    flatten,
    norm,
    one,
    rules_under,
    source_to_params,
)

# HF's DINOv3 default for `pos_embed_rescale` (a config.json without the key means it)
DINOV3_POS_EMBED_RESCALE = 2.0
# DINOv3 switches we do not model: they must have these values (and EoMT-DINOv3 exports write them).
DINOV3_FIXED = {"query_bias": True, "value_bias": True, "proj_bias": True, "mlp_bias": True}
# Config keys both backbones state as our fields of the same name.
STATED_FIELDS = (
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "patch_size",
    "num_register_tokens",
    "layer_norm_eps",
    "hidden_act",
)
BACKBONE_PREFIXES = ("embeddings/", "encoder/", "query_encoder/", "layernorm/")  # what a backbone fills
MASK_TOKEN = "embeddings/mask_token"  # ours: not filled from a backbone (its mask token is a buffer)
PATCH_KERNEL = "embeddings/patch_embeddings/kernel"
DINOV2_PATCH_KERNEL = "embeddings.patch_embeddings.projection.weight"


# ---------------------------------------------------------------- config
def _rope_theta(data: Mapping[str, Any], source: str) -> float:
    """rope_theta from `rope_parameters` (EoMT-DINOv3) or a top-level `rope_theta` (DINOv3ViT)."""
    if "rope_parameters" not in data and "rope_theta" in data:
        return float(data["rope_theta"])
    rope = data.get("rope_parameters")
    if not isinstance(rope, Mapping) or "rope_theta" not in rope:
        raise ConversionError(f"{source}: rope_parameters must hold rope_theta (got {rope!r})")
    if rope.get("rope_type", "default") != "default":
        raise ConversionError(
            f"{source}: rope_parameters.rope_type {rope['rope_type']!r} is not supported (only 'default')"
        )
    return float(rope["rope_theta"])


def dinov3_config_fields(data: dict[str, Any], source: str) -> dict[str, Any]:
    """Pop the DINOv3 keys of an HF config dict (DINOv3ViT, EoMT-DINOv3) into VideomtConfig fields (checked)."""
    wrong = {k: data[k] for k, v in DINOV3_FIXED.items() if k in data and bool(data[k]) != v}
    if wrong:
        raise ConversionError(f"{source}: unsupported DINOv3 settings {wrong} (expected {DINOV3_FIXED})")
    augment = {k: data.pop(k) for k in ("pos_embed_shift", "pos_embed_jitter") if data.get(k) is not None}
    if augment:
        raise ConversionError(f"{source}: unsupported DINOv3 training augmentation {augment} (only pos_embed_rescale)")
    for key in ("pos_embed_shift", "pos_embed_jitter"):
        data.pop(key, None)
    fields = dict(
        backbone="dinov3",
        rope_theta=_rope_theta(data, source),
        pos_embed_rescale=data.pop("pos_embed_rescale", DINOV3_POS_EMBED_RESCALE),
        key_bias=bool(data.pop("key_bias", False)),
        use_swiglu_ffn=bool(data.pop("use_gated_mlp", False)),
        intermediate_size=int(data.pop("intermediate_size")),
    )
    for key in ("rope_parameters", "rope_theta", *DINOV3_FIXED):
        data.pop(key, None)
    return fields


def _dinov2_config_fields(data: dict[str, Any], source: str) -> dict[str, Any]:
    if not data.get("qkv_bias", True):
        raise ConversionError(f"{source}: qkv_bias=False is not supported")
    return dict(
        backbone="dinov2",
        key_bias=True,
        mlp_ratio=data.get("mlp_ratio", 4),
        use_swiglu_ffn=bool(data.get("use_swiglu_ffn", False)),
        intermediate_size=None,
    )


# ---------------------------------------------------------------- key rules
def dinov3_backbone_rules(config: VideomtConfig, layer_keys: str) -> list[Rule]:
    """`DINOv3ViTModel`: embeddings, layers under `layer_keys` ("model.layer."), final `norm`."""
    return (
        rules_under(TOKENS + DINOV3_PATCH, "embeddings.", EMBEDDINGS)
        + rules_under(norm("layernorm", "norm"), "")
        + layer_rules(config, dinov3_layer(config), layer_keys)
    )


# Older Dinov2WithRegisters checkpoints (and the Hub files) name the attention projections this way.
DINOV2_LEGACY_NAMES = {
    "attention.attention.query.": "attention.q_proj.",
    "attention.attention.key.": "attention.k_proj.",
    "attention.attention.value.": "attention.v_proj.",
    "attention.output.dense.": "attention.o_proj.",
}


def rename_legacy_dinov2(state_dict: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    out = {}
    for key, value in state_dict.items():
        for old, new in DINOV2_LEGACY_NAMES.items():
            key = key.replace(old, new)
        out[key] = value
    return out


def dinov2_backbone_rules(config: VideomtConfig) -> list[Rule]:
    """`Dinov2WithRegistersModel`: CLS + position embeddings (with their CLS slot) resampled to our grid."""
    grid = config.grid_hw

    def to_jax(xs: Arrays) -> list[np.ndarray]:  # cls [1, 1, D], pos [1, 1+N, D]
        cls, pos = xs
        side = int(round(np.sqrt(pos.shape[1] - 1)))
        if side * side != pos.shape[1] - 1:
            raise ValueError(f"{pos.shape[1] - 1} patch positions do not form a square grid")
        patches = np.asarray(resample_pos_embed(jnp.asarray(pos[0, 1:], jnp.float32), (side, side), grid))
        return [cls + pos[:, :1], patches]

    def to_source(ys: Arrays) -> list[np.ndarray]:
        raise ValueError("writing a Dinov2WithRegistersModel is not supported")

    embed = Layout("cls_plus_pos_resampled", to_jax, to_source)
    embeddings = (
        Entry(("cls_token", "position_embeddings"), ("cls_token", "position_embeddings"), embed),
        one("register_tokens", "register_tokens"),
        *DINOV2_PATCH,
    )
    return (
        rules_under(embeddings, "embeddings.", EMBEDDINGS)
        + rules_under(norm("layernorm", "layernorm"), "")
        + layer_rules(config, dinov2_layer(config, out_proj="attention.o_proj"), "encoder.layer.")
    )


def _dinov3_source(state_dict: Mapping[str, np.ndarray], config: VideomtConfig) -> tuple[dict, list[Rule], dict]:
    layer_keys = "model.layer." if any(k.startswith("model.layer.") for k in state_dict) else "layer."
    buffers = {
        "embeddings.mask_token": (1, 1, config.hidden_size),
        "rope_embeddings.inv_freq": (config.head_dim // ROPE_PARTS,),
    }
    return dict(state_dict), dinov3_backbone_rules(config, layer_keys), buffers


def _dinov2_source(state_dict: Mapping[str, np.ndarray], config: VideomtConfig) -> tuple[dict, list[Rule], dict]:
    buffers = {"embeddings.mask_token": (1, config.hidden_size)}
    return rename_legacy_dinov2(state_dict), dinov2_backbone_rules(config), buffers


@dataclasses.dataclass(frozen=True)
class BackboneKind:
    """One HF backbone model_type: its config fields, and its (state dict, rules, buffers) for a config."""

    config_fields: Callable[[dict[str, Any], str], dict[str, Any]]
    source: Callable[[Mapping[str, np.ndarray], VideomtConfig], tuple[dict, list[Rule], dict]]
    patch_kernel: str | None  # source key of a patch kernel of any patch size (resized by init_from), or None


BACKBONES: dict[str, BackboneKind] = {
    "dinov3_vit": BackboneKind(dinov3_config_fields, _dinov3_source, None),
    "dinov2_with_registers": BackboneKind(_dinov2_config_fields, _dinov2_source, DINOV2_PATCH_KERNEL),
}


# ---------------------------------------------------------------- reading
def _kind(data: Mapping[str, Any], source: str) -> BackboneKind:
    kind = BACKBONES.get(str(data.get("model_type")))
    if kind is None:
        raise ConversionError(
            f"{source}: model_type {data.get('model_type')!r} is not a backbone ({sorted(BACKBONES)})"
        )
    return kind


def stated_config(data: Mapping[str, Any], config: VideomtConfig, source: str) -> VideomtConfig:
    """`config` with the backbone settings the HF config.json `data` states (a patch size the weights
    may be resized from is left at `config`'s)."""
    kind = _kind(data, source)
    data = {k: v for k, v in data.items() if not (kind.patch_kernel and k == "patch_size")}
    fields = kind.config_fields(data, source)
    fields.update({k: data[k] for k in STATED_FIELDS if k in data})
    try:
        return config.replace(**fields)
    except ValueError as e:
        raise ConversionError(f"{source}: {e}") from e


def backbone_params(
    data: Mapping[str, Any], state_dict: Mapping[str, np.ndarray], config: VideomtConfig, source: str
) -> tuple[dict[str, np.ndarray], tuple[int, int]]:
    """The backbone parameters of `config` (flat paths: embeddings, encoder layers, final norm) from a
    backbone's state dict, strictly, and the patch size of its patch kernel (maybe not `config`'s)."""
    kind = _kind(data, source)
    state_dict, rules, buffers = kind.source(state_dict, config)
    wanted = {p: s for p, s in expected_shapes(config).items() if p.startswith(BACKBONE_PREFIXES) and p != MASK_TOKEN}
    patch: tuple[int, ...] = config.patch_hw
    if kind.patch_kernel in state_dict and np.ndim(state_dict[kind.patch_kernel]) == 4:  # [D, C, p_h, p_w]
        patch = tuple(int(n) for n in np.shape(state_dict[kind.patch_kernel])[2:])
        wanted[PATCH_KERNEL] = (*patch, *wanted[PATCH_KERNEL][2:])
    params, _ = source_to_params(state_dict, rules, wanted, source=source, buffers=buffers)
    return flatten(params), (patch[0], patch[1])


# ---------------------------------------------------------------- load_pretrained
def matches(path: Path) -> bool:
    return hf_model_type(path) in BACKBONES


def load(path: Path, overrides: Mapping[str, Any]) -> Loaded:
    """`load_pretrained` refuses a backbone alone, naming what reads it."""
    raise ConversionError(
        f"{path} holds a {hf_model_type(path)} backbone alone, not a segmentation model; initialise a VidEoMT "
        f"from it with videomt_jax.weights.init_from.init_videomt_from(path, config, key)"
    )
