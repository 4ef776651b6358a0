"""The authors' DINOv3 VidEoMT checkpoints (tue-mps/videomt `dinov3_online/*.pth`): keys, config, export.

Their DINOv3 backbone is HF's `DINOv3ViTModel` renamed to timm's attribute names
(`videomt/modeling/backbone/vit.py`): under `backbone.encoder.backbone.` the embeddings module is
`patch_embed` (`cls_token`, `register_tokens`, `patch_embeddings` conv; its mask token deleted),
the layers are `blocks.{i}` (HF DINOv3 layer names inside), the final norm is `norm`, and
`rope_embeddings.inv_freq` may be present (older transformers kept it in the state dict). With
`FUSED_QKV` the q/k/v projections of every layer are one `attention.qkv_proj` (Linear D -> 3D with a
full bias). The VidEoMT parts (`backbone.q`, `query_updater`, `class_head`, `mask_head.{0,2,4}`,
`upscale.{i}`) and buffers are those of the DINOv2 checkpoints (`original.py`).

Letters: D hidden, E head dim, L layers, nb query blocks, K classes.
"""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from videomt_jax.config import ROPE_PARTS, VideomtConfig
from videomt_jax.weights.family_tables import DINOV3_EMBEDDINGS, ZEROS, block_rules, dinov3_block
from videomt_jax.weights.original import (
    ATTN_MASK_PROBS,
    EMPTY_WEIGHT,
    HEAD,
    ORIGINAL_HEAD,
    ORIGINAL_UPSCALE,
    VIT,
    _heads,
)
from videomt_jax.weights.tables import (
    ConversionError,
    check_params,
    expected_shapes,
    norm,
    params_to_source,
    source_to_params,
)

INV_FREQ = f"{VIT}rope_embeddings.inv_freq"
DINOV3_ANCHOR = f"{VIT}patch_embed.patch_embeddings.weight"  # present in every authors' DINOv3 file
DINOV3_DEFAULTS = dict(hidden_act="gelu", layer_norm_eps=1e-5, image_size=640)  # HF DINOv3 ViT; authors' IMG_SIZE


def is_original_dinov3(state_dict: Mapping[str, Any]) -> bool:
    return DINOV3_ANCHOR in state_dict


def _is_fused(state_dict: Mapping[str, Any]) -> bool:
    return f"{VIT}blocks.0.attention.qkv_proj.weight" in state_dict


def original_dinov3_rules(config: VideomtConfig, fused: bool) -> list:
    glob = [e.rule(f"{VIT}patch_embed.", "") for e in _embeddings()] + [e.rule(VIT, "") for e in norm("layernorm", "norm")]
    glob += [e.rule(HEAD, "") for e in ORIGINAL_HEAD]
    ups = [e.rule(f"{HEAD}upscale.{i}.", f"heads/upscale_{i}/") for i in range(config.num_upscale_blocks) for e in ORIGINAL_UPSCALE]
    return glob + block_rules(config, dinov3_block(config, fused), f"{VIT}blocks.{{}}.") + ups


def _embeddings():
    """HF DINOv3 embeddings, re-keyed below `patch_embed.` (the module the authors renamed)."""
    return tuple(e.__class__(e.ours, tuple(k.removeprefix("embeddings.") for k in e.theirs), e.layout) for e in DINOV3_EMBEDDINGS)


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
            f"{source}: {INV_FREQ} does not match rope_theta={config.rope_theta} (first values {got[:3]}, expected {want[:3]})"
        )


def _theta_from_buffer(state_dict: Mapping[str, Any], head_dim: int) -> float | None:
    if INV_FREQ not in state_dict or np.size(state_dict[INV_FREQ]) < 2:
        return None
    second = float(np.asarray(state_dict[INV_FREQ]).reshape(-1)[1])  # theta ** (-4 / E)
    return float(np.round(second ** (-head_dim / ROPE_PARTS), 4))


def infer_original_dinov3_config(
    state_dict: Mapping[str, Any], *, model_name: str | None = None, source: str = "the checkpoint", **overrides: Any
) -> VideomtConfig:
    """The config an authors' DINOv3 state dict implies (shapes + HF DINOv3 defaults); `overrides` win."""
    shape = lambda key: tuple(np.shape(state_dict[key]))  # noqa: E731
    for key in (f"{VIT}patch_embed.cls_token", f"{HEAD}q.weight", f"{HEAD}class_head.weight", ATTN_MASK_PROBS):
        if key not in state_dict:
            raise ConversionError(f"{source} is not an authors' DINOv3 VidEoMT checkpoint: it lacks {key}")
    hidden = shape(f"{VIT}patch_embed.cls_token")[-1]
    layers = sorted({int(m.group(1)) for k in state_dict if (m := re.match(rf"{re.escape(VIT)}blocks\.(\d+)\.", k))})
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
        num_upscale_blocks=len({k.split(".")[2] for k in state_dict if k.startswith(f"{HEAD}upscale.")}),
        id2label={i: f"LABEL_{i}" for i in range(shape(f"{HEAD}class_head.weight")[0] - 1)},
    )
    if EMPTY_WEIGHT in state_dict:
        inferred["no_object_weight"] = float(str(np.asarray(state_dict[EMPTY_WEIGHT], np.float32)[-1]))
    merged = {**inferred, **overrides}
    if "num_attention_heads" not in merged:
        merged["num_attention_heads"] = _heads(hidden, model_name)
    if "rope_theta" not in overrides:
        theta = _theta_from_buffer(state_dict, hidden // merged["num_attention_heads"])
        merged["rope_theta"] = theta if theta is not None else 100.0
    for field, value in inferred.items():  # the weights fix these; an override may not contradict them
        if field in overrides and field in ("backbone", "hidden_size", "num_hidden_layers", "key_bias") and overrides[field] != value:
            raise ConversionError(f"{source}: {field}={overrides[field]!r} contradicts the checkpoint ({field}={value!r})")
    try:
        return VideomtConfig(**merged)
    except ValueError as e:
        raise ConversionError(f"{source}: {e}") from e


def original_dinov3_state_dict_to_params(
    config: VideomtConfig, state_dict: Mapping[str, np.ndarray], *, source: str = "the authors' state dict"
) -> dict:
    """An authors' DINOv3 state dict (fused or not) -> our float32 parameter tree, strictly."""
    if config.backbone != "dinov3":
        raise ConversionError(f"{source} holds a DINOv3 backbone but the config says backbone={config.backbone!r}")
    check_rope_buffer(config, state_dict, source)
    buffers = {ATTN_MASK_PROBS: (config.num_blocks,), EMPTY_WEIGHT: (config.num_labels + 1,)}
    if INV_FREQ in state_dict:
        buffers[INV_FREQ] = (config.head_dim // ROPE_PARTS,)
    rules = original_dinov3_rules(config, _is_fused(state_dict))
    params, _ = source_to_params(
        state_dict, rules, expected_shapes(config), source=source, buffers=buffers,
        defaults={"embeddings/register_tokens": ZEROS},
    )
    return params


def params_to_original_dinov3(config: VideomtConfig, params: Mapping, *, fused: bool = False) -> dict[str, np.ndarray]:
    """Our DINOv3 VidEoMT params -> the authors' state dict (float32, torch layout; `fused`: qkv_proj)."""
    if config.backbone != "dinov3" or config.model_type != "videomt":
        raise ConversionError(
            f"the authors' DINOv3 layout holds a DINOv3 VidEoMT; got model_type={config.model_type!r}, backbone={config.backbone!r}"
        )
    check_params(config, params)
    out = params_to_source(params, original_dinov3_rules(config, fused), what="an authors' DINOv3 state dict")
    if fused and not config.key_bias:  # our unused key third (modeling/dinov3.py) is written as the zeros it acts as
        for key in [k for k in out if k.endswith("attention.qkv_proj.bias")]:
            out[key] = out[key].copy()
            out[key][config.hidden_size : 2 * config.hidden_size] = 0.0
    out[ATTN_MASK_PROBS] = np.zeros((config.num_blocks,), np.float32)  # annealed to 0 by training
    empty_weight = np.ones((config.num_labels + 1,), np.float32)
    empty_weight[-1] = config.no_object_weight
    out[EMPTY_WEIGHT] = empty_weight
    return out


def save_original_dinov3(path: str | Path, config: VideomtConfig, params: Mapping, *, fused: bool = False) -> Path:
    """Write `{"model": state_dict}` as the authors' `.pth` (torch is imported here only), atomically."""
    import torch

    from videomt_jax.utils.io import atomic_write_bytes

    arrays = params_to_original_dinov3(config, params, fused=fused)
    state_dict = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in arrays.items()}
    buffer = io.BytesIO()
    torch.save({"model": state_dict}, buffer)
    atomic_write_bytes(str(path), buffer.getvalue())
    return Path(path)
