"""Key rules that several checkpoint formats share (torch layout <-> ours; run by `tables.py`).

- Encoder layers in Hugging Face names: the DINOv2 layer of HF VidEoMT / EoMT /
  `Dinov2WithRegisters` (separate q/k/v fused into our q|k|v kernel, `fc1/fc2` or SwiGLU
  `gate/up/down_proj`) and the DINOv3 layer of `DINOv3ViT` / EoMT-DINOv3 / the authors' DINOv3
  backbone (`q/k/v/o_proj`, optional key bias, `up/down_proj` or gated). A layer's parameters are
  stacked: layers [0, L-nb) under `encoder`, the last nb under `query_encoder` (`layer_slot`).
- Embeddings below their module: CLS and register tokens, the DINOv2 and DINOv3 patch convolutions.
- The segmentation head in HF names (`query`, `class_predictor`, `mask_head.fc{1,2,3}`,
  `upscale_block.block.{i}`) and in the authors' names (`q`, `class_head`, `mask_head.{0,2,4}`,
  `upscale.{i}`), and the two buffers every segmentation checkpoint carries (`attn_mask_probs` [nb]:
  the masking schedule of training, read by no inference; `criterion.empty_weight` [K+1]: the loss's
  class weights, ones with `no_object_weight` last).
- The authors' checkpoints: key prefixes and the head count a timm backbone name implies.

Letters: D hidden, L layers, nb query blocks, K classes.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from videomt_jax.config import VideomtConfig
from videomt_jax.weights.tables import (
    CONV,
    DECONV,
    FUSE_QKV_BIAS,
    FUSE_QKV_KERNEL,
    LINEAR,
    Arrays,
    Entry,
    Layout,
    Rule,
    Table,
    dense,
    norm,
    one,
    rules_under,
)

ZEROS: Callable[[tuple[int, ...]], np.ndarray] = lambda shape: np.zeros(shape, np.float32)


# ---------------------------------------------------------------- encoder layers
def layer_slot(config: VideomtConfig, layer: int) -> tuple[str, int]:
    """Encoder layer -> (path prefix of its stacked parameters, index on the stacked axis)."""
    if layer < config.query_start:
        return "encoder/layers/block/", layer
    return "query_encoder/layers/block/", layer - config.query_start


def layer_rules(config: VideomtConfig, layer: Table, source: str) -> list[Rule]:
    """`layer` for every encoder layer i, its keys below `{source}{i}.` (e.g. source "layers.")."""
    rules = []
    for i in range(config.num_hidden_layers):
        target, index = layer_slot(config, i)
        rules += rules_under(layer, f"{source}{i}.", target, index)
    return rules


SWIGLU: Table = (
    *dense("mlp/gate_proj", "mlp.gate_proj"),
    *dense("mlp/up_proj", "mlp.up_proj"),
    *dense("mlp/down_proj", "mlp.down_proj"),
)
LAYER_SCALES: Table = (
    one("layer_scale1/lambda1", "layer_scale1.lambda1"),
    one("layer_scale2/lambda1", "layer_scale2.lambda1"),
)
DINOV2_MLP: Table = (*dense("mlp/fc1", "mlp.fc1"), *dense("mlp/fc2", "mlp.fc2"))
DINOV3_MLP: Table = (*dense("mlp/fc1", "mlp.up_proj"), *dense("mlp/fc2", "mlp.down_proj"))
SEPARATE_QKV: Table = (
    Entry(
        ("attention/qkv/kernel",),
        ("attention.q_proj.weight", "attention.k_proj.weight", "attention.v_proj.weight"),
        FUSE_QKV_KERNEL,
    ),
    Entry(
        ("attention/qkv/bias",),
        ("attention.q_proj.bias", "attention.k_proj.bias", "attention.v_proj.bias"),
        FUSE_QKV_BIAS,
    ),
)


def dinov2_layer(config: VideomtConfig, out_proj: str = "attention.out_proj") -> Table:
    """An HF DINOv2 layer (VidEoMT, EoMT; `Dinov2WithRegisters` names the output projection
    `attention.o_proj`)."""
    mlp = SWIGLU if config.use_swiglu_ffn else DINOV2_MLP
    return (
        *norm("norm1", "norm1"),
        *SEPARATE_QKV,
        *dense("attention/out_proj", out_proj),
        *norm("norm2", "norm2"),
        *LAYER_SCALES,
        *mlp,
    )


def _qv_bias_to_jax(xs: Arrays) -> list[np.ndarray]:
    q, v = xs
    return [np.concatenate([q, np.zeros_like(q), v])]


def _qv_bias_to_source(ys: Arrays) -> list[np.ndarray]:
    q, _, v = np.split(ys[0], 3)
    return [q, v]


# q and v biases (no key bias) <-> our [3D] q|k|v bias with a zero key third (modeling/dinov3.py)
QV_BIAS = Layout("qv_bias_zero_key", _qv_bias_to_jax, _qv_bias_to_source)


def dinov3_attention(key_bias: bool, fused: bool) -> Table:
    """One DINOv3 attention: separate q/k/v projections, or the authors' fused `qkv_proj`
    (one Linear D -> 3D with a full bias)."""
    if fused:
        qkv: Table = (
            one("attention/qkv/kernel", "attention.qkv_proj.weight", LINEAR),
            one("attention/qkv/bias", "attention.qkv_proj.bias"),
        )
    else:
        kernels = tuple(f"attention.{p}_proj.weight" for p in "qkv")
        biases = tuple(f"attention.{p}_proj.bias" for p in ("qkv" if key_bias else "qv"))
        qkv = (
            Entry(("attention/qkv/kernel",), kernels, FUSE_QKV_KERNEL),
            Entry(("attention/qkv/bias",), biases, FUSE_QKV_BIAS if key_bias else QV_BIAS),
        )
    return (*qkv, *dense("attention/out_proj", "attention.o_proj"))


def dinov3_layer(config: VideomtConfig, fused: bool = False) -> Table:
    """An HF DINOv3 layer (`DINOv3ViTLayer` / `EomtDinov3Layer`, also inside the authors' backbone)."""
    mlp = SWIGLU if config.use_swiglu_ffn else DINOV3_MLP
    return (
        *norm("norm1", "norm1"),
        *dinov3_attention(config.key_bias, fused),
        *norm("norm2", "norm2"),
        *LAYER_SCALES,
        *mlp,
    )


# ---------------------------------------------------------------- embeddings (below their module)
TOKENS: Table = (one("cls_token", "cls_token"), one("register_tokens", "register_tokens"))
DINOV2_PATCH: Table = (
    one("patch_embeddings/kernel", "patch_embeddings.projection.weight", CONV),
    one("patch_embeddings/bias", "patch_embeddings.projection.bias"),
)
HF_DINOV2_POSITIONS: Table = (one("position_embeddings", "position_embeddings.weight"),)  # [N, D] Embedding
DINOV3_PATCH: Table = (
    one("patch_embeddings/kernel", "patch_embeddings.weight", CONV),
    one("patch_embeddings/bias", "patch_embeddings.bias"),
)
EMBEDDINGS = "embeddings/"  # our embeddings module


# ---------------------------------------------------------------- segmentation head, HF names
QUERY_UPDATER: Table = tuple(dense("query_updater", "query_updater"))  # the same name in every layout
HF_HEAD: Table = (
    one("query", "query.weight"),
    *dense("heads/class_predictor", "class_predictor"),
    *dense("heads/mask_head/fc1", "mask_head.fc1"),
    *dense("heads/mask_head/fc2", "mask_head.fc2"),
    *dense("heads/mask_head/fc3", "mask_head.fc3"),
)
HF_UPSCALE: Table = (
    one("conv1/kernel", "conv1.weight", DECONV),
    one("conv1/bias", "conv1.bias"),
    one("conv2/kernel", "conv2.weight", CONV),
    *norm("layernorm2d", "layernorm2d"),
)
HF_UPSCALE_KEYS = "upscale_block.block."


def upscale_rules(config: VideomtConfig, block: Table, source: str) -> list[Rule]:
    """`block` for every upscale block i: ours under `heads/upscale_{i}/`, theirs below `{source}{i}.`."""
    rules = []
    for i in range(config.num_upscale_blocks):
        rules += rules_under(block, f"{source}{i}.", f"heads/upscale_{i}/")
    return rules


# ---------------------------------------------------------------- buffers
ATTN_MASK_PROBS = "attn_mask_probs"  # HF's key; the authors' is below their HEAD prefix
EMPTY_WEIGHT = "criterion.empty_weight"


def buffer_shapes(config: VideomtConfig, attn_mask_probs: str = ATTN_MASK_PROBS) -> dict[str, tuple[int, ...]]:
    """The two buffers of a segmentation checkpoint: consumed and shape-checked, values unused."""
    return {attn_mask_probs: (config.num_blocks,), EMPTY_WEIGHT: (config.num_labels + 1,)}


def empty_weight(config: VideomtConfig) -> np.ndarray:
    """`criterion.empty_weight` [K+1] for `config`: ones, `no_object_weight` last (float32)."""
    out = np.ones((config.num_labels + 1,), np.float32)
    out[-1] = config.no_object_weight
    return out


def no_object_weight(state_dict: Mapping[str, Any]) -> float:
    """`no_object_weight` from a checkpoint's `criterion.empty_weight` (its shortest decimal: str() of
    the float32 gives 0.1, not 0.10000000149011612)."""
    return float(str(np.asarray(state_dict[EMPTY_WEIGHT], np.float32)[-1]))


# ---------------------------------------------------------------- the authors' checkpoints
AUTHORS_VIT = "backbone.encoder.backbone."  # the ViT (timm DINOv2, or HF DINOv3 renamed to timm's names)
AUTHORS_HEAD = "backbone."  # the VidEoMT parts
AUTHORS_ATTN_MASK_PROBS = f"{AUTHORS_HEAD}{ATTN_MASK_PROBS}"
AUTHORS_HEAD_TABLE: Table = (
    one("query", "q.weight"),
    *dense("heads/class_predictor", "class_head"),
    *dense("heads/mask_head/fc1", "mask_head.0"),
    *dense("heads/mask_head/fc2", "mask_head.2"),
    *dense("heads/mask_head/fc3", "mask_head.4"),
)
AUTHORS_UPSCALE: Table = (
    one("conv1/kernel", "conv1.weight", DECONV),
    one("conv1/bias", "conv1.bias"),
    one("conv2/kernel", "conv2.weight", CONV),
    *norm("layernorm2d", "norm"),
)
AUTHORS_UPSCALE_KEYS = f"{AUTHORS_HEAD}upscale."
# Attention heads of the timm backbones by a name fragment (model or checkpoint file name).
HEADS_BY_NAME = {"vit_small": 6, "vit_base": 12, "vit_large": 16, "vit_giant": 24}
HEAD_DIM = 64  # every DINOv2 / DINOv3 size uses 64-dimensional heads


AUTHORS_QUERY_UPDATER = f"{AUTHORS_HEAD}query_updater.weight"  # absent from their image models ("segmenters")


def authors_model_type(state_dict: Mapping[str, Any]) -> str:
    """ "videomt" for an authors' VidEoMT; "eomt" for their image model, the per-dataset "segmenter"
    every recipe starts from (model_zoo/dinov2.md, "Init Weights"): the same keys without `query_updater`."""
    return "videomt" if AUTHORS_QUERY_UPDATER in state_dict else "eomt"


def authors_head_rules(config: VideomtConfig) -> list[Rule]:
    """The VidEoMT parts of an authors' checkpoint: queries, query updater (VidEoMT only), heads, upscale blocks."""
    table = AUTHORS_HEAD_TABLE + (QUERY_UPDATER if config.model_type == "videomt" else ())
    return rules_under(table, AUTHORS_HEAD) + upscale_rules(config, AUTHORS_UPSCALE, AUTHORS_UPSCALE_KEYS)


def numbered(state_dict: Mapping[str, Any], prefix: str) -> list[int]:
    """The sorted indices i of the keys `{prefix}{i}.*` (layers, upscale blocks)."""
    regex = re.compile(rf"{re.escape(prefix)}(\d+)\.")
    return sorted({int(m.group(1)) for k in state_dict if (m := regex.match(k))})
