"""The authors' DINOv3 VidEoMT checkpoints (tue-mps/videomt `dinov3_online/*.pth`): keys, config, export.

Their DINOv3 backbone is HF's `DINOv3ViTModel` renamed to timm's attribute names
(`videomt/modeling/backbone/vit.py`): under `backbone.encoder.backbone.` the embeddings module is
`patch_embed` (`cls_token`, `register_tokens`, `patch_embeddings` conv; its mask token deleted),
the layers are `blocks.{i}` (HF DINOv3 layer names inside), the final norm is `norm`, and
`rope_embeddings.inv_freq` may be present (older transformers kept it in the state dict). With
`FUSED_QKV` the q/k/v projections of every layer are one `attention.qkv_proj` (Linear D -> 3D with a
full bias). The VidEoMT parts (`backbone.q`, `query_updater`, `class_head`, `mask_head.{0,2,4}`,
`upscale.{i}`) and buffers are those of the DINOv2 checkpoints (`shared_rules.py`).

Letters: D hidden, E head dim, L layers, nb query blocks, K classes.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from videomt_jax.config import ROPE_PARTS, VideomtConfig
from videomt_jax.weights.original_dinov2 import DATASET, authors_heads, authors_labels
from videomt_jax.weights.shapes import check_params, expected_shapes
from videomt_jax.weights.shared_rules import (
    AUTHORS_ATTN_MASK_PROBS,
    AUTHORS_HEAD,
    AUTHORS_UPSCALE_KEYS,
    AUTHORS_VIT,
    DINOV3_PATCH,
    EMBEDDINGS,
    EMPTY_WEIGHT,
    TOKENS,
    ZEROS,
    authors_head_rules,
    buffer_shapes,
    dinov3_layer,
    empty_weight,
    layer_rules,
    no_object_weight,
    numbered,
)
from videomt_jax.weights.tables import ConversionError, Rule, norm, params_to_source, rules_under, source_to_params

NAME = "authors' DINOv3 .pth"  # the LoadReport's source
VIT, HEAD, ATTN_MASK_PROBS = AUTHORS_VIT, AUTHORS_HEAD, AUTHORS_ATTN_MASK_PROBS
INV_FREQ = f"{VIT}rope_embeddings.inv_freq"
DINOV3_ANCHOR = f"{VIT}patch_embed.patch_embeddings.weight"  # present in every authors' DINOv3 file
DINOV3_DEFAULTS = dict(hidden_act="gelu", layer_norm_eps=1e-5, image_size=640)  # HF DINOv3 ViT; authors' IMG_SIZE


def matches(state_dict: Mapping[str, Any]) -> bool:
    """An authors' DINOv3 state dict (the renamed HF embeddings below `patch_embed.`)."""
    return DINOV3_ANCHOR in state_dict


def _is_fused(state_dict: Mapping[str, Any]) -> bool:
    return f"{VIT}blocks.0.attention.qkv_proj.weight" in state_dict


def original_dinov3_rules(config: VideomtConfig, fused: bool) -> list[Rule]:
    """HF DINOv3 embeddings below `patch_embed.` (the module the authors renamed), layers below
    `blocks.{i}.`, the final `norm`, and the authors' VidEoMT parts."""
    return (
        rules_under(TOKENS + DINOV3_PATCH, f"{VIT}patch_embed.", EMBEDDINGS)
        + rules_under(norm("layernorm", "norm"), VIT)
        + layer_rules(config, dinov3_layer(config, fused), f"{VIT}blocks.")
        + authors_head_rules(config)
    )


def inv_freq(head_dim: int, theta: float) -> np.ndarray:
    """HF DINOv3's rotary frequencies [E/4] (float32)."""
    return (1.0 / theta ** (np.arange(0, head_dim, ROPE_PARTS, dtype=np.float64) / head_dim)).astype(np.float32)


def check_rope_buffer(config: VideomtConfig, state_dict: Mapping[str, Any], source: str) -> None:
    """The optional `inv_freq` buffer must be the frequencies of the config's head dim and rope_theta."""
    if INV_FREQ not in state_dict:
        return
    got = np.asarray(state_dict[INV_FREQ], np.float32).reshape(-1)
    want = inv_freq(config.head_dim, config.rope_theta)
    if got.shape != want.shape:
        raise ConversionError(
            f"{source}: {INV_FREQ} holds {got.size} rotary frequencies; head_dim {config.head_dim} "
            f"(num_attention_heads {config.num_attention_heads}) needs {want.size}"
        )
    if not np.allclose(got, want, rtol=1e-5, atol=1e-7):
        raise ConversionError(
            f"{source}: {INV_FREQ} does not match rope_theta={config.rope_theta} "
            f"(first values {got[:3]}, expected {want[:3]})"
        )


def _heads_from_buffer(state_dict: Mapping[str, Any], hidden: int) -> int | None:
    """The head count the `inv_freq` buffer fixes ([E/4] frequencies: E = hidden / heads), if present."""
    if INV_FREQ not in state_dict:
        return None
    head_dim = ROPE_PARTS * int(np.size(state_dict[INV_FREQ]))
    return hidden // head_dim if head_dim and hidden % head_dim == 0 else None


def _theta_from_buffer(state_dict: Mapping[str, Any], head_dim: int) -> float | None:
    if INV_FREQ not in state_dict or np.size(state_dict[INV_FREQ]) < 2:
        return None
    second = float(np.asarray(state_dict[INV_FREQ]).reshape(-1)[1])  # theta ** (-4 / E)
    return float(np.round(second ** (-head_dim / ROPE_PARTS), 4))


def infer_original_dinov3_config(
    state_dict: Mapping[str, Any], *, model_name: str | None = None, source: str = "the checkpoint", **overrides: Any
) -> VideomtConfig:
    """The config an authors' DINOv3 state dict implies (shapes + HF DINOv3 defaults); `overrides` win.

    The head count comes from `overrides`, else the `inv_freq` buffer when the file has it, else as
    for DINOv2 files (`original_dinov2.authors_heads`); class names as there (`dataset=`)."""
    overrides = dict(overrides)
    dataset = overrides.pop(DATASET, None)
    shape = lambda key: tuple(np.shape(state_dict[key]))
    for key in (f"{VIT}patch_embed.cls_token", f"{HEAD}q.weight", f"{HEAD}class_head.weight", ATTN_MASK_PROBS):
        if key not in state_dict:
            raise ConversionError(f"{source} is not an authors' DINOv3 VidEoMT checkpoint: it lacks {key}")
    hidden = shape(f"{VIT}patch_embed.cls_token")[-1]
    layers = numbered(state_dict, f"{VIT}blocks.")
    if not layers or layers != list(range(len(layers))):
        raise ConversionError(f"{source}: DINOv3 block indices are not 0..L-1: {layers}")
    block = f"{VIT}blocks.0."
    gated = f"{block}mlp.gate_proj.weight" in state_dict
    fused = _is_fused(state_dict)
    if fused:  # a key bias that training in fused form made non-zero must be kept
        key_bias = bool(np.any(np.split(np.asarray(state_dict[f"{block}attention.qkv_proj.bias"]), 3)[1] != 0))
    else:
        key_bias = f"{block}attention.k_proj.bias" in state_dict
    patch = shape(DINOV3_ANCHOR)[-2:]
    inferred: dict[str, Any] = dict(
        DINOV3_DEFAULTS,
        backbone="dinov3",
        hidden_size=hidden,
        num_hidden_layers=len(layers),
        patch_size=patch[0] if patch[0] == patch[1] else tuple(patch),
        num_register_tokens=shape(f"{VIT}patch_embed.register_tokens")[1],
        key_bias=key_bias,
        use_swiglu_ffn=gated,
        intermediate_size=shape(f"{block}mlp.{'gate_proj' if gated else 'up_proj'}.weight")[0],
        num_queries=shape(f"{HEAD}q.weight")[0],
        num_blocks=shape(ATTN_MASK_PROBS)[0],
        num_upscale_blocks=len(numbered(state_dict, AUTHORS_UPSCALE_KEYS)),
    )
    if "id2label" not in overrides:
        inferred["id2label"] = authors_labels(shape(f"{HEAD}class_head.weight")[0] - 1, model_name, dataset, source)
    elif dataset is not None:
        raise ConversionError(f"{source}: pass either id2label or dataset, not both")
    if EMPTY_WEIGHT in state_dict:
        inferred["no_object_weight"] = no_object_weight(state_dict)
    merged = {**inferred, **overrides}
    if "num_attention_heads" not in merged:
        from_buffer = _heads_from_buffer(state_dict, hidden)
        merged["num_attention_heads"] = from_buffer or authors_heads(hidden, model_name, source)
    if "rope_theta" not in overrides:
        theta = _theta_from_buffer(state_dict, hidden // merged["num_attention_heads"])
        merged["rope_theta"] = theta if theta is not None else 100.0
    for field, value in inferred.items():  # the weights fix these; an override may not contradict them
        fixed = field in ("backbone", "hidden_size", "num_hidden_layers", "key_bias")
        if fixed and field in overrides and overrides[field] != value:
            raise ConversionError(
                f"{source}: {field}={overrides[field]!r} contradicts the checkpoint ({field}={value!r})"
            )
    try:
        return VideomtConfig(**merged)
    except ValueError as e:
        raise ConversionError(f"{source}: {e}") from e


def _to_params(config: VideomtConfig, state_dict: Mapping[str, np.ndarray], source: str) -> tuple[dict, list[str]]:
    if config.backbone != "dinov3":
        raise ConversionError(f"{source} holds a DINOv3 backbone but the config says backbone={config.backbone!r}")
    check_rope_buffer(config, state_dict, source)
    buffers = buffer_shapes(config, ATTN_MASK_PROBS)
    if INV_FREQ in state_dict:
        buffers[INV_FREQ] = (config.head_dim // ROPE_PARTS,)
    rules = original_dinov3_rules(config, _is_fused(state_dict))
    return source_to_params(
        state_dict,
        rules,
        expected_shapes(config),
        source=source,
        buffers=buffers,
        defaults={f"{EMBEDDINGS}register_tokens": ZEROS},
    )


def original_dinov3_state_dict_to_params(
    config: VideomtConfig, state_dict: Mapping[str, np.ndarray], *, source: str = "the authors' state dict"
) -> dict:
    """An authors' DINOv3 state dict (fused or not) -> our float32 parameter tree, strictly."""
    return _to_params(config, state_dict, source)[0]


def load_state_dict(
    state_dict: Mapping[str, np.ndarray], source: str, overrides: Mapping[str, Any]
) -> tuple[VideomtConfig, dict, list[str]]:
    """`load_pretrained`'s loader for this format, given the file's state dict: (config, params,
    buffers found). `overrides` may hold `model_name` (default: the file name), which picks the heads."""
    overrides = dict(overrides)
    model_name = overrides.pop("model_name", None) or Path(source).name
    config = infer_original_dinov3_config(state_dict, model_name=model_name, source=source, **overrides)
    params, buffers = _to_params(config, state_dict, source)
    return config, params, buffers


def params_to_original_dinov3(config: VideomtConfig, params: Mapping, *, fused: bool = False) -> dict[str, np.ndarray]:
    """Our DINOv3 VidEoMT params -> the authors' state dict (float32, torch layout; `fused`: qkv_proj)."""
    if config.backbone != "dinov3" or config.model_type != "videomt":
        raise ConversionError(
            "the authors' DINOv3 layout holds a DINOv3 VidEoMT; "
            f"got model_type={config.model_type!r}, backbone={config.backbone!r}"
        )
    check_params(config, params)
    out = params_to_source(params, original_dinov3_rules(config, fused), what="an authors' DINOv3 state dict")
    if fused and not config.key_bias:  # our unused key third (modeling/dinov3.py) is written as the zeros it acts as
        for key in [k for k in out if k.endswith("attention.qkv_proj.bias")]:
            out[key] = out[key].copy()
            out[key][config.hidden_size : 2 * config.hidden_size] = 0.0
    out[ATTN_MASK_PROBS] = np.zeros((config.num_blocks,), np.float32)  # annealed to 0 by training
    out[EMPTY_WEIGHT] = empty_weight(config)
    return out


def save_original_dinov3(path: str | Path, config: VideomtConfig, params: Mapping, *, fused: bool = False) -> Path:
    """Write `{"model": state_dict}` as the authors' `.pth` (torch is imported here only), atomically."""
    import torch

    from videomt_jax.utils.io import atomic_write_bytes

    arrays = params_to_original_dinov3(config, params, fused=fused)
    state_dict = {k: torch.from_numpy(np.array(v, order="C")) for k, v in arrays.items()}  # writable copies
    buffer = io.BytesIO()
    torch.save({"model": state_dict}, buffer)
    atomic_write_bytes(str(path), buffer.getvalue())
    return Path(path)
