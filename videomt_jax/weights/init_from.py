"""Initialise a VidEoMT for training from another checkpoint: `init_videomt_from(path, config, key)`.

Sources:
- anything `load_pretrained` reads (VidEoMT, EoMT / EoMT-DINOv3 image models, authors' `.pth`,
  among them their per-dataset "segmenters", the image models every paper recipe starts from):
  every parameter comes from it, except a fresh `query_updater` for an image model (as detectron2
  leaves it when the authors' trainer loads a segmenter) and a fresh class head when the label
  count differs from `config`'s (detectron2 skips a tensor of another shape the same way);
- a backbone alone, HF `DINOv3ViTModel` or `Dinov2WithRegistersModel` (config.json `model_type`
  "dinov3_vit" / "dinov2_with_registers"): embeddings, every encoder layer and the final norm come
  from it; queries, query updater and heads start fresh. DINOv2's position embeddings are
  resampled to `config`'s grid and its CLS position folded into the CLS token; its patch-embedding
  kernel is PI-resized to `config`'s patch size when they differ (timm's resampling, by which the
  authors build their patch-16 backbone from the patch-14 DINOv2 weights; `ops/resize.py`). The
  backbones' keys and config are `hf_backbone.py`'s.
Strict about everything else: the architecture fields the weights imply must equal `config`'s
(named in the error), and every source key must be used.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from videomt_jax.config import VideomtConfig
from videomt_jax.modeling.heads import Heads
from videomt_jax.ops.resize import PI_RESIZE_DEFAULT, resample_patch_kernel
from videomt_jax.weights import hf_backbone
from videomt_jax.weights.api import fresh_query_updater, load_pretrained_with_report
from videomt_jax.weights.readers import CONFIG_NAME, hf_model_type, read_hf_weights, read_json_object
from videomt_jax.weights.shapes import check_params, expected_shapes
from videomt_jax.weights.tables import SEP, ConversionError, flatten

# Fields that fix the backbone's computation; a source must agree with `config` on each.
BACKBONE_FIELDS = (
    "backbone",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "patch_size",
    "num_register_tokens",
    "layer_norm_eps",
    "use_swiglu_ffn",
    "mlp_hidden_size",
    "key_bias",
    "rope_theta",
    "hidden_act",
)
MODEL_FIELDS = BACKBONE_FIELDS + ("num_queries", "num_blocks", "num_upscale_blocks")


@dataclasses.dataclass
class InitReport:
    source: str  # what the checkpoint was recognised as
    from_checkpoint: list[str]  # parameter paths filled from it
    fresh: list[str]  # parameter paths initialised here
    resampled: dict[str, str] = dataclasses.field(default_factory=dict)  # path in from_checkpoint -> how it was resized


def _disagreements(config: VideomtConfig, found: VideomtConfig, fields: tuple[str, ...]) -> list[str]:
    rope = config.backbone == "dinov3"
    fields = tuple(f for f in fields if rope or f != "rope_theta")
    return [
        f"{f}: checkpoint {getattr(found, f)!r}, config {getattr(config, f)!r}"
        for f in fields
        if getattr(found, f) != getattr(config, f)
    ]


def _check_same(config: VideomtConfig, found: VideomtConfig, fields: tuple[str, ...], source: str) -> None:
    wrong = _disagreements(config, found, fields)
    if wrong:
        raise ConversionError(f"{source} does not fit the config: " + "; ".join(wrong))


def _load_backbone(path: Path, config: VideomtConfig) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Backbone parameters (flat paths) from an HF DINOv3ViT / Dinov2WithRegisters directory, and the
    resampled ones (path -> how)."""
    data = read_json_object(path / CONFIG_NAME)
    state_dict, files = read_hf_weights(path)
    source = str(files[0])
    _check_same(config, hf_backbone.stated_config(data, config, source), BACKBONE_FIELDS, source)
    flat, patch = hf_backbone.backbone_params(data, state_dict, config, source)
    resampled = {}
    if patch != config.patch_hw:
        kernel = hf_backbone.PATCH_KERNEL
        flat[kernel] = resample_patch_kernel(flat[kernel], config.patch_hw)
        resampled[kernel] = f"patch {patch} -> {config.patch_hw} (PI-resize, {PI_RESIZE_DEFAULT})"
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
        n = config.num_queries + config.num_prefix_tokens + gh * gw
        tokens = jnp.zeros((1, n, config.hidden_size), jnp.float32)
        # one compile, not one per op
        init = jax.jit(lambda k, x: Heads(config, parent=None).init(k, x, (gh, gw))["params"])
        heads = init(k_heads, tokens)
        made.update({f"heads/{p}": v for p, v in flatten(heads).items()})
    unknown = [p for p in paths if p not in made]
    if unknown:
        raise ConversionError(f"no fresh initialisation for {unknown}: they must come from the checkpoint")
    return {p: made[p] for p in paths}


def init_videomt_from(path: str | Path, config: VideomtConfig, key: jax.Array) -> tuple[dict, InitReport]:
    """Parameters for `config` (a VidEoMT) from the checkpoint at `path`; fresh ones seeded by `key`."""
    if config.model_type != "videomt":
        raise ValueError(f"init_videomt_from builds a VidEoMT; config has model_type={config.model_type!r}")
    path = Path(path)
    resampled: dict[str, str] = {}
    if hf_backbone.matches(path):
        loaded, resampled = _load_backbone(path, config)
        what = f"{hf_model_type(path)} backbone"
    else:
        found, params, loaded_report = load_pretrained_with_report(path, model_type="videomt")
        _check_same(config, found, MODEL_FIELDS, str(path))
        loaded = flatten(params)
        if found.num_labels != config.num_labels:  # a new label set: the class head starts fresh
            loaded = {p: v for p, v in loaded.items() if not p.startswith("heads/class_predictor/")}
        for p in loaded_report.fresh:  # the query updater of an image model
            loaded.pop(p, None)
        what = loaded_report.source
    missing = sorted(p for p in expected_shapes(config) if p not in loaded)
    out = {**fresh_params(config, missing, key), **{p: jnp.asarray(v, jnp.float32) for p, v in loaded.items()}}
    params = traverse_util.unflatten_dict(out, sep=SEP)
    check_params(config, params)
    return params, InitReport(what, sorted(loaded), missing, resampled)
