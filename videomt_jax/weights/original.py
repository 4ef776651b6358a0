"""The authors' checkpoints (github tue-mps/videomt, detectron2 + timm): key table and config inference.

A released `.pth` holds `{"model": state_dict}` with the detectron2 meta-architecture's keys:
`backbone.encoder.backbone.*` is a timm DINOv2-with-registers ViT (`cls_token` [1,1,D], `reg_token`
[1,R,D], `pos_embed` [1,N,D] over patches only, `blocks.{i}.attn.qkv` fused q|k|v, `ls1/ls2.gamma`,
`mlp.fc1/fc2` (SwiGLU: timm `SwiGLUPacked` packs gate then up into `mlp.fc1` [2F, D]; timm `SwiGLU`
splits them into `mlp.fc1_g` / `mlp.fc1_x`), final `norm`); `backbone.{q, query_updater, class_head,
mask_head.{0,2,4}, upscale.{i}.{conv1,conv2,norm}}` are the VidEoMT parts; `backbone.attn_mask_probs`
[nb] and `criterion.empty_weight` [K+1] are buffers (see `hf.py`). timm has no `mask_token`: ours
is filled with zeros (HF's initial value; it is unused at inference).

Letters: D hidden, R registers, N = g*g patch positions, F MLP hidden, nb query blocks, K classes.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from videomt_jax.config import VideomtConfig
from videomt_jax.weights.tables import (
    CONV,
    DECONV,
    LINEAR,
    SPLIT_GATE_UP_BIAS,
    SPLIT_GATE_UP_KERNEL,
    SQUEEZE_BATCH,
    ConversionError,
    Entry,
    Rule,
    block_slot,
    dense,
    expected_shapes,
    norm,
    one,
    source_to_params,
)

VIT = "backbone.encoder.backbone."
HEAD = "backbone."
ATTN_MASK_PROBS = "backbone.attn_mask_probs"
EMPTY_WEIGHT = "criterion.empty_weight"

# Per ViT block: ours under `{encoder,query_encoder}/layers/block/`, theirs under `{VIT}blocks.{i}.`
ORIGINAL_BLOCK: tuple[Entry, ...] = (
    *norm("norm1", "norm1"),
    one("attention/qkv/kernel", "attn.qkv.weight", LINEAR),  # already fused q|k|v: [3D, D]
    one("attention/qkv/bias", "attn.qkv.bias"),
    *dense("attention/out_proj", "attn.proj"),
    one("layer_scale1/lambda1", "ls1.gamma"),
    *norm("norm2", "norm2"),
    one("layer_scale2/lambda1", "ls2.gamma"),
)
ORIGINAL_MLP: tuple[Entry, ...] = (*dense("mlp/fc1", "mlp.fc1"), *dense("mlp/fc2", "mlp.fc2"))
ORIGINAL_SWIGLU_PACKED: tuple[Entry, ...] = (
    Entry(("mlp/gate_proj/kernel", "mlp/up_proj/kernel"), ("mlp.fc1.weight",), SPLIT_GATE_UP_KERNEL),
    Entry(("mlp/gate_proj/bias", "mlp/up_proj/bias"), ("mlp.fc1.bias",), SPLIT_GATE_UP_BIAS),
    *dense("mlp/down_proj", "mlp.fc2"),
)
ORIGINAL_SWIGLU_SPLIT: tuple[Entry, ...] = (
    *dense("mlp/gate_proj", "mlp.fc1_g"),
    *dense("mlp/up_proj", "mlp.fc1_x"),
    *dense("mlp/down_proj", "mlp.fc2"),
)
# ViT parts outside the blocks, under `{VIT}`.
ORIGINAL_VIT: tuple[Entry, ...] = (
    one("embeddings/cls_token", "cls_token"),
    one("embeddings/patch_embeddings/kernel", "patch_embed.proj.weight", CONV),
    one("embeddings/patch_embeddings/bias", "patch_embed.proj.bias"),
    one("embeddings/position_embeddings", "pos_embed", SQUEEZE_BATCH),
    *norm("layernorm", "norm"),
)
ORIGINAL_REGISTERS = one("embeddings/register_tokens", "reg_token")  # absent when R = 0
# VidEoMT parts, under `{HEAD}`.
ORIGINAL_HEAD: tuple[Entry, ...] = (
    one("query", "q.weight"),
    *dense("query_updater", "query_updater"),
    *dense("heads/class_predictor", "class_head"),
    *dense("heads/mask_head/fc1", "mask_head.0"),
    *dense("heads/mask_head/fc2", "mask_head.2"),
    *dense("heads/mask_head/fc3", "mask_head.4"),
)
# Per upscale block i: ours under `heads/upscale_{i}/`, theirs under `{HEAD}upscale.{i}.`
ORIGINAL_UPSCALE: tuple[Entry, ...] = (
    one("conv1/kernel", "conv1.weight", DECONV),
    one("conv1/bias", "conv1.bias"),
    one("conv2/kernel", "conv2.weight", CONV),
    *norm("layernorm2d", "norm"),
)
ORIGINAL_DEFAULTS = {
    "embeddings/mask_token": lambda shape: np.zeros(shape, np.float32),
    "embeddings/register_tokens": lambda shape: np.zeros(shape, np.float32),  # only used when R = 0
}
# Attention heads of the timm DINOv2 backbones, by a name fragment (model or checkpoint file name).
HEADS_BY_NAME = {"vit_small": 6, "vit_base": 12, "vit_large": 16, "vit_giant": 24}
HEAD_DIM = 64  # every DINOv2 size uses 64-dimensional heads
ORIGINAL_FIXED = dict(hidden_act="gelu", layer_norm_eps=1e-6)  # timm nn.GELU and LayerNorm(eps=1e-6)


def _swiglu_kind(state_dict: Mapping[str, Any]) -> str | None:
    """None (plain MLP), "split" (timm SwiGLU, fc1_g/fc1_x) or "packed" (SwiGLUPacked, fc1 = gate|up)."""
    if f"{VIT}blocks.0.mlp.fc1_g.weight" in state_dict:
        return "split"
    fc1 = np.shape(state_dict[f"{VIT}blocks.0.mlp.fc1.weight"])
    fc2 = np.shape(state_dict[f"{VIT}blocks.0.mlp.fc2.weight"])
    return "packed" if fc1[0] == 2 * fc2[1] else None


MLP_TABLES = {None: ORIGINAL_MLP, "packed": ORIGINAL_SWIGLU_PACKED, "split": ORIGINAL_SWIGLU_SPLIT}


def original_rules(config: VideomtConfig, swiglu_kind: str | None) -> list[Rule]:
    if (swiglu_kind is not None) != config.use_swiglu_ffn:
        raise ConversionError(
            f"checkpoint MLP kind {swiglu_kind or 'plain'} disagrees with use_swiglu_ffn={config.use_swiglu_ffn}"
        )
    rules = [e.rule(VIT, "") for e in ORIGINAL_VIT] + [e.rule(HEAD, "") for e in ORIGINAL_HEAD]
    if config.num_register_tokens:
        rules.append(ORIGINAL_REGISTERS.rule(VIT, ""))
    for layer in range(config.num_hidden_layers):
        prefix, index = block_slot(config, layer)
        rules += [e.rule(f"{VIT}blocks.{layer}.", prefix, index) for e in ORIGINAL_BLOCK + MLP_TABLES[swiglu_kind]]
    for i in range(config.num_upscale_blocks):
        rules += [e.rule(f"{HEAD}upscale.{i}.", f"heads/upscale_{i}/") for e in ORIGINAL_UPSCALE]
    return rules


def _indices(state_dict: Mapping[str, Any], pattern: str) -> list[int]:
    regex = re.compile(pattern)
    return sorted({int(m.group(1)) for k in state_dict if (m := regex.match(k))})


def check_original_keys(state_dict: Mapping[str, Any], source: str) -> None:
    """Clear errors for state dicts that are not the authors' DINOv2 VidEoMT."""
    anchors = [f"{VIT}{k}" for k in ("cls_token", "pos_embed", "patch_embed.proj.weight")]
    anchors += [f"{HEAD}{k}" for k in ("q.weight", "class_head.weight")]
    if any(k.startswith((f"{VIT}layer.", f"{VIT}rope_embeddings")) for k in state_dict):
        raise ConversionError(
            f"{source} holds a DINOv3 (Hugging Face backbone) VidEoMT; only DINOv2 (timm) checkpoints convert"
        )
    absent = [k for k in anchors if k not in state_dict]
    if absent:
        sample = ", ".join(sorted(state_dict)[:8])
        raise ConversionError(
            f"{source} is not an authors' VidEoMT checkpoint: it lacks {', '.join(absent)} (its keys start: {sample})"
        )


def _heads(hidden: int, model_name: str | None) -> int:
    for fragment, heads in HEADS_BY_NAME.items():
        if model_name and fragment in model_name:
            return heads
    if hidden % HEAD_DIM:
        raise ConversionError(
            f"cannot infer num_attention_heads for hidden size {hidden} (not a multiple of {HEAD_DIM}); "
            "pass num_attention_heads=... (CLI: --num-heads) or a model name"
        )
    return hidden // HEAD_DIM


def _mlp_ratio(hidden: int, mlp_hidden: int, swiglu: bool) -> int:
    def size(ratio: int) -> int:  # the MLP width VideomtConfig.mlp_hidden_size gives for `ratio`
        config = VideomtConfig(hidden_size=hidden, num_attention_heads=1, mlp_ratio=ratio, use_swiglu_ffn=swiglu)
        return config.mlp_hidden_size

    for ratio in range(1, 17):
        if size(ratio) == mlp_hidden:
            return ratio
    raise ConversionError(f"no integer mlp_ratio gives an MLP width of {mlp_hidden} for hidden size {hidden}")


def infer_original_config(
    state_dict: Mapping[str, Any], *, model_name: str | None = None, source: str = "the checkpoint", **overrides: Any
) -> VideomtConfig:
    """The `VideomtConfig` an authors' state dict implies, from its shapes; `overrides` win.

    `model_name` (e.g. "vit_small_patch14_reg4_dinov2" or the checkpoint's file name) picks the
    number of heads; otherwise hidden // 64 (true for every DINOv2 size).
    """
    check_original_keys(state_dict, source)
    shape = lambda key: tuple(np.shape(state_dict[key]))  # noqa: E731
    hidden = shape(f"{VIT}cls_token")[-1]
    layers = _indices(state_dict, rf"{re.escape(VIT)}blocks\.(\d+)\.")
    if layers != list(range(len(layers))) or not layers:
        raise ConversionError(f"{source}: ViT block indices are not 0..L-1: {layers}")
    patch = shape(f"{VIT}patch_embed.proj.weight")[-2:]
    positions = shape(f"{VIT}pos_embed")[1]
    swiglu = _swiglu_kind(state_dict)
    mlp_key = f"{VIT}blocks.0.mlp.fc2.weight"
    inferred: dict[str, Any] = dict(
        ORIGINAL_FIXED,
        hidden_size=hidden,
        num_hidden_layers=len(layers),
        patch_size=patch[0] if patch[0] == patch[1] else tuple(patch),
        num_register_tokens=shape(f"{VIT}reg_token")[1] if f"{VIT}reg_token" in state_dict else 0,
        use_swiglu_ffn=swiglu is not None,
        mlp_ratio=_mlp_ratio(hidden, shape(mlp_key)[1], swiglu is not None),
        num_queries=shape(f"{HEAD}q.weight")[0],
        num_upscale_blocks=len(_indices(state_dict, rf"{re.escape(HEAD)}upscale\.(\d+)\.")),
        id2label={i: f"LABEL_{i}" for i in range(shape(f"{HEAD}class_head.weight")[0] - 1)},
    )
    if ATTN_MASK_PROBS in state_dict:
        inferred["num_blocks"] = shape(ATTN_MASK_PROBS)[0]
    if EMPTY_WEIGHT in state_dict:
        # str() of the float32 gives its shortest decimal (0.1, not 0.10000000149011612)
        inferred["no_object_weight"] = float(str(np.asarray(state_dict[EMPTY_WEIGHT], np.float32)[-1]))
    side = math.isqrt(positions)
    if side * side == positions:
        inferred["image_size"] = side * patch[0] if patch[0] == patch[1] else (side * patch[0], side * patch[1])
    merged = {**inferred, **overrides}
    if "num_attention_heads" not in merged:
        merged["num_attention_heads"] = _heads(hidden, model_name)
    for needed, flag in (("image_size", "--image-size"), ("num_blocks", "--num-blocks")):
        if needed not in merged:
            raise ConversionError(
                f"{source}: cannot infer {needed} from the checkpoint; pass {needed}=... (CLI: {flag})"
            )
    labels = merged["id2label"]
    if len(labels) != len(inferred["id2label"]):
        raise ConversionError(
            f"id2label has {len(labels)} labels but the checkpoint's class head predicts "
            f"{len(inferred['id2label'])} (+1 no-object)"
        )
    return VideomtConfig(**merged)


def original_state_dict_to_params(
    config: VideomtConfig, state_dict: Mapping[str, np.ndarray], *, source: str = "the authors' state dict"
) -> dict:
    """The authors' state dict (numpy arrays, torch layout) -> our float32 parameter tree, strictly."""
    check_original_keys(state_dict, source)
    buffers = {ATTN_MASK_PROBS: (config.num_blocks,), EMPTY_WEIGHT: (config.num_labels + 1,)}
    rules = original_rules(config, _swiglu_kind(state_dict))
    params, _ = source_to_params(
        state_dict, rules, expected_shapes(config), source=source, buffers=buffers, defaults=ORIGINAL_DEFAULTS
    )
    return params


def read_id2label_json(path: str | Path) -> dict[int, str]:
    """A JSON file {"0": "person", ...} (or a list of names) -> {0: "person", ...}."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"cannot read id2label JSON {path}: {e}") from e
    items = enumerate(data) if isinstance(data, list) else data.items() if isinstance(data, dict) else None
    if items is None:
        raise ValueError(f"{path} must hold a JSON object {{id: name}} or a list of names")
    return {int(k): str(v) for k, v in items}
