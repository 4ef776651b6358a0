"""Initialise a VidEoMT for training from another checkpoint: `init_videomt_from(path, config, key)`.

Sources:
- anything `load_pretrained` reads (VidEoMT, EoMT / EoMT-DINOv3 image models, authors' `.pth`):
  every parameter comes from it, except a fresh `query_updater` for an image model and a fresh
  class head when the label count differs from `config`'s;
- a backbone alone, HF `DINOv3ViTModel` or `Dinov2WithRegistersModel` (config.json `model_type`
  "dinov3_vit" / "dinov2_with_registers"): embeddings, every encoder layer and the final norm come
  from it; queries, query updater and heads start fresh. DINOv2's position embeddings are
  resampled to `config`'s grid and its CLS position folded into the CLS token; its patch-embedding
  kernel is PI-resized to `config`'s patch size when they differ (timm's resampling, by which the
  authors build their patch-16 backbone from the patch-14 DINOv2 weights; `patch_resample.py`).
Strict about everything else: the architecture fields the weights imply must equal `config`'s
(named in the error), and every source key must be used.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from videomt_jax.config import VideomtConfig
from videomt_jax.modeling.heads import Heads
from videomt_jax.weights.family_io import fresh_query_updater
from videomt_jax.weights.family_tables import dinov2_backbone_rules, dinov3_backbone_rules, rename_legacy_dinov2
from videomt_jax.weights.hf_family import dinov3_fields
from videomt_jax.weights.patch_resample import DEFAULT_METHOD, resample_patch_kernel
from videomt_jax.weights.tables import SEP, ConversionError, check_params, expected_shapes, flatten, source_to_params

# Fields that fix the backbone's computation; a source must agree with `config` on each.
BACKBONE_FIELDS = (
    "backbone", "hidden_size", "num_hidden_layers", "num_attention_heads", "patch_size", "num_register_tokens",
    "layer_norm_eps", "use_swiglu_ffn", "mlp_hidden_size", "key_bias", "rope_theta", "hidden_act",
)
MODEL_FIELDS = BACKBONE_FIELDS + ("num_queries", "num_blocks", "num_upscale_blocks")
BACKBONE_PREFIXES = ("embeddings/", "encoder/", "query_encoder/", "layernorm/")
PATCH_KERNEL, DINOV2_PATCH_KERNEL = "embeddings/patch_embeddings/kernel", "embeddings.patch_embeddings.projection.weight"


@dataclasses.dataclass
class InitReport:
    source: str  # what the checkpoint was recognised as
    from_checkpoint: list[str]  # parameter paths filled from it
    fresh: list[str]  # parameter paths initialised here
    resampled: dict[str, str] = dataclasses.field(default_factory=dict)  # path in from_checkpoint -> how it was resized


def _disagreements(config: VideomtConfig, found: VideomtConfig, fields: tuple[str, ...]) -> list[str]:
    rope = config.backbone == "dinov3"
    fields = tuple(f for f in fields if rope or f != "rope_theta")
    return [f"{f}: checkpoint {getattr(found, f)!r}, config {getattr(config, f)!r}" for f in fields
            if getattr(found, f) != getattr(config, f)]


def _check_same(config: VideomtConfig, found: VideomtConfig, fields: tuple[str, ...], source: str) -> None:
    wrong = _disagreements(config, found, fields)
    if wrong:
        raise ConversionError(f"{source} does not fit the config: " + "; ".join(wrong))


def _backbone_config(data: Mapping[str, Any], config: VideomtConfig, source: str) -> VideomtConfig:
    """The backbone settings an HF DINOv3ViT / Dinov2WithRegisters config.json states, on top of `config`."""
    data = dict(data)
    if data["model_type"] == "dinov3_vit":
        fields = dinov3_fields(data, source)
    else:
        if not data.get("qkv_bias", True):
            raise ConversionError(f"{source}: qkv_bias=False is not supported")
        fields = dict(backbone="dinov2", key_bias=True, mlp_ratio=data.get("mlp_ratio", 4),
                      use_swiglu_ffn=bool(data.get("use_swiglu_ffn", False)), intermediate_size=None)
    for key in ("hidden_size", "num_hidden_layers", "num_attention_heads", "patch_size", "num_register_tokens",
                "layer_norm_eps", "hidden_act"):
        if key in data:
            fields[key] = data[key]
    try:
        return config.replace(**fields)
    except ValueError as e:
        raise ConversionError(f"{source}: {e}") from e


def _load_backbone(path: Path, data: Mapping[str, Any], config: VideomtConfig) -> tuple[dict, dict[str, str]]:
    """Backbone parameters (flat paths) from an HF DINOv3ViT / Dinov2WithRegisters directory, and the
    resampled ones (path -> how)."""
    from videomt_jax.weights.api import HF_WEIGHT_FILES, _hf_weight_file

    weights = _hf_weight_file(path)
    if weights is None:
        raise ConversionError(f"{path} has a config.json but no weights")
    state_dict, _ = HF_WEIGHT_FILES[weights.name](weights)
    source = str(weights)
    dinov2 = data["model_type"] == "dinov2_with_registers"
    stated = {k: v for k, v in data.items() if not (dinov2 and k == "patch_size")}  # DINOv2: resampled below
    _check_same(config, _backbone_config(stated, config, source), BACKBONE_FIELDS, source)
    if data["model_type"] == "dinov3_vit":
        prefix = "model.layer.{}." if any(k.startswith("model.layer.") for k in state_dict) else "layer.{}."
        rules, buffers = dinov3_backbone_rules(config, prefix), {"embeddings.mask_token": (1, 1, config.hidden_size)}
        buffers["rope_embeddings.inv_freq"] = (config.head_dim // 4,)
    else:
        state_dict = rename_legacy_dinov2(state_dict)
        rules, buffers = dinov2_backbone_rules(config), {"embeddings.mask_token": (1, config.hidden_size)}
    wanted = {p: s for p, s in expected_shapes(config).items() if p.startswith(BACKBONE_PREFIXES) and p != "embeddings/mask_token"}
    old_patch = config.patch_hw
    if dinov2 and np.ndim(state_dict.get(DINOV2_PATCH_KERNEL)) == 4:  # [D, C, p_h, p_w]
        old_patch = tuple(int(n) for n in np.shape(state_dict[DINOV2_PATCH_KERNEL])[2:])
        wanted[PATCH_KERNEL] = (*old_patch, *wanted[PATCH_KERNEL][2:])
    params, _ = source_to_params(state_dict, rules, wanted, source=source, buffers=buffers)
    flat, resampled = flatten(params), {}
    if old_patch != config.patch_hw:
        flat[PATCH_KERNEL] = resample_patch_kernel(flat[PATCH_KERNEL], config.patch_hw)
        resampled[PATCH_KERNEL] = f"patch {old_patch} -> {config.patch_hw} (PI-resize, {DEFAULT_METHOD})"
    return flat, resampled


def fresh_params(config: VideomtConfig, paths: list[str], key: jax.Array) -> dict[str, jax.Array]:
    """New values for the parameters `paths` (queries, query updater, heads, mask token), as the model
    initialises them; only those modules are initialised (no full-model trace)."""
    k_query, k_updater, k_heads = jax.random.split(key, 3)
    made: dict[str, jax.Array] = {"embeddings/mask_token": jnp.zeros((1, 1, config.hidden_size), jnp.float32)}
    made["query"] = jax.random.normal(k_query, (config.num_queries, config.hidden_size), jnp.float32)
    made.update({f"query_updater/{k}": v for k, v in fresh_query_updater(config.hidden_size, k_updater).items()})
    if any(p.startswith("heads/") for p in paths):
        gh, gw = config.grid_hw
        tokens = jnp.zeros((1, config.num_queries + config.num_prefix_tokens + gh * gw, config.hidden_size), jnp.float32)
        init = jax.jit(lambda k, x: Heads(config, parent=None).init(k, x, (gh, gw))["params"])  # one compile, not per op
        heads = init(k_heads, tokens)
        made.update({f"heads/{p}": v for p, v in flatten(heads).items()})
    unknown = [p for p in paths if p not in made]
    if unknown:
        raise ConversionError(f"no fresh initialisation for {unknown}: they must come from the checkpoint")
    return {p: made[p] for p in paths}


def init_videomt_from(path: str | Path, config: VideomtConfig, key: jax.Array) -> tuple[dict, InitReport]:
    """Parameters for `config` (a VidEoMT) from the checkpoint at `path`; fresh ones seeded by `key`."""
    from videomt_jax.weights.api import load_pretrained_with_report

    if config.model_type != "videomt":
        raise ValueError(f"init_videomt_from builds a VidEoMT; config has model_type={config.model_type!r}")
    path = Path(path)
    data = json.loads((path / "config.json").read_text()) if (path / "config.json").is_file() else {}
    resampled: dict[str, str] = {}
    if data.get("model_type") in ("dinov3_vit", "dinov2_with_registers"):
        loaded, resampled = _load_backbone(path, data, config)
        what = f"{data['model_type']} backbone"
    else:
        found, params, report = load_pretrained_with_report(path, model_type="videomt")
        _check_same(config, found, MODEL_FIELDS, str(path))
        loaded = flatten(params)
        if found.num_labels != config.num_labels:  # a new label set: the class head starts fresh
            loaded = {p: v for p, v in loaded.items() if not p.startswith("heads/class_predictor/")}
        for p in report.fresh:  # the query updater of an image model
            loaded.pop(p, None)
        what = report.source
    missing = sorted(p for p in expected_shapes(config) if p not in loaded)
    out = {**fresh_params(config, missing, key), **{p: jnp.asarray(v, jnp.float32) for p, v in loaded.items()}}
    report = InitReport(what, sorted(loaded), missing, resampled)
    params = traverse_util.unflatten_dict(out, sep=SEP)
    check_params(config, params)
    return params, report
