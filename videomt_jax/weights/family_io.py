"""Loading the VidEoMT family's other checkpoints, and turning an image model into a VidEoMT.

Called by `api.py`'s format detection: HF directories whose `config.json` says `eomt` or
`eomt_dinov3` (an EoMT-DINOv3 directory that also holds `query_updater.*` is a DINOv3 VidEoMT
written by `export_hf`), and the authors' DINOv3 `.pth` files (plain or fused q|k|v).

Letters: D hidden.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from videomt_jax.config import VideomtConfig
from videomt_jax.weights.hf_family import EOMT_TYPES, config_from_eomt_dict, family_state_dict_to_params
from videomt_jax.weights.original_dinov3 import infer_original_dinov3_config, original_dinov3_state_dict_to_params
from videomt_jax.weights.tables import ConversionError, check_params

BACKBONE_TYPES = ("dinov3_vit", "dinov2_with_registers")
UPDATER_KEY = "query_updater.weight"


def load_hf_family(
    data: Mapping[str, Any], state_dict: Mapping[str, np.ndarray], source: str, overrides: Mapping[str, Any]
) -> tuple[VideomtConfig, dict]:
    """An HF-layout checkpoint of model_type eomt / eomt_dinov3 -> (config, params)."""
    kind = data.get("model_type")
    if kind in BACKBONE_TYPES:
        raise ConversionError(
            f"{source} holds a {kind} backbone alone, not a segmentation model; initialise a VidEoMT from it "
            "with videomt_jax.weights.init_from.init_videomt_from(path, config, key)"
        )
    if kind not in EOMT_TYPES:
        raise ConversionError(f"{source}: config.json model_type {kind!r} is not a VidEoMT / EoMT checkpoint")
    if UPDATER_KEY in state_dict and kind == "eomt":
        raise ConversionError(
            f"{source}: its config.json says model_type {kind!r} (an image model) but the weights hold "
            f"{UPDATER_KEY} (a VidEoMT); the config and the weights belong to different models"
        )
    config = config_from_eomt_dict(data, source, **overrides)
    if UPDATER_KEY in state_dict:  # a DINOv3 VidEoMT in HF layout (EoMT-DINOv3 keys + query_updater)
        config = config.replace(model_type="videomt", attn_mask_probs=None)
    return family_state_dict_to_params(config, state_dict, source)


def load_original_dinov3(
    state_dict: Mapping[str, np.ndarray], source: str, overrides: Mapping[str, Any]
) -> tuple[VideomtConfig, dict]:
    overrides = dict(overrides)
    model_name = overrides.pop("model_name", None) or Path(source).name
    config = infer_original_dinov3_config(state_dict, model_name=model_name, source=source, **overrides)
    return config, original_dinov3_state_dict_to_params(config, state_dict, source=source)


def fresh_query_updater(hidden_size: int, key: jax.Array) -> dict[str, jax.Array]:
    """A new `query_updater` Dense (kernel [D, D], bias [D]), initialised as `VideomtModel` does."""
    kernel = nn.initializers.lecun_normal()(key, (hidden_size, hidden_size), jnp.float32)
    return {"kernel": kernel, "bias": jnp.zeros((hidden_size,), jnp.float32)}


def to_model_type(
    config: VideomtConfig, params: Mapping, model_type: str, key: jax.Array | None = None
) -> tuple[VideomtConfig, dict, list[str]]:
    """(config, params) as `model_type`; returns the parameter paths that start fresh.

    eomt -> videomt: the same backbone, queries and heads, masking off, a fresh `query_updater`
    (seeded by `key`, default key 0). Asking a VidEoMT for `eomt` is refused (that would drop the
    trained propagation silently).
    """
    if model_type == config.model_type:
        return config, dict(params), []
    if (config.model_type, model_type) != ("eomt", "videomt"):
        raise ValueError(f"cannot turn a {config.model_type!r} checkpoint into model_type={model_type!r}")
    new = config.replace(model_type="videomt", attn_mask_probs=None)
    key = jax.random.key(0) if key is None else key
    out = {**params, "query_updater": fresh_query_updater(config.hidden_size, key)}
    check_params(new, out)
    return new, out, ["query_updater/kernel", "query_updater/bias"]


def check_dinov2_backbone(overrides: Mapping[str, Any], source: str) -> None:
    """A DINOv2 (timm) checkpoint asked to load as another backbone: say so, naming both."""
    asked = overrides.get("backbone", "dinov2")
    if asked != "dinov2":
        raise ConversionError(
            f"{source} holds a DINOv2 backbone (timm keys: pos_embed, blocks.*.attn.qkv) but backbone={asked!r} was asked"
        )


def export_hf_family(path: Path, config: VideomtConfig, params: Mapping, *, overwrite: bool, processor: Any) -> Path:
    """HF layout of an EoMT (transformers' `Eomt(Dinov3)ForUniversalSegmentation` loads it strictly) or of
    a DINOv3 VidEoMT (EoMT-DINOv3 config and keys plus `query_updater.*`: HF's EoMT-DINOv3 loads all
    but the updater; `load_pretrained` reads it back as a VidEoMT)."""
    import json

    from safetensors.numpy import save_file

    from videomt_jax.utils.io import atomic_directory
    from videomt_jax.weights.hf_family import eomt_config_dict, params_to_family_state_dict

    if config.model_type == "videomt" and config.backbone == "dinov2":
        raise ValueError("a DINOv2 VidEoMT exports through export_hf's VidEoMT path")
    state_dict = params_to_family_state_dict(config, params)
    image_config = config.replace(model_type="eomt", attn_mask_probs=config.attn_mask_probs if config.model_type == "eomt" else None)
    data = {**eomt_config_dict(image_config), "dtype": "float32"}
    with atomic_directory(Path(path), overwrite=overwrite) as tmp:
        (tmp / "config.json").write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
        save_file(state_dict, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        if processor is not None:
            processor.save_pretrained(tmp, hf_only=True)
    return Path(path)
