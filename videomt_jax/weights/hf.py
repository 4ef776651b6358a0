"""Hugging Face `VideomtForUniversalSegmentation` state dict <-> our parameters (both directions).

HF keeps one `layers.{i}` module per encoder layer with separate q/k/v projections; we stack the
layers on a leading axis (`encoder` holds layers [0, L-nb), `query_encoder` the last nb) and fuse
q|k|v into one kernel. Buffers: `attn_mask_probs` [nb] (masked-attention annealing of the authors'
training; neither HF's nor the authors' inference reads it, so its values are ignored on import and
written as ones on export) and `criterion.empty_weight` [K+1] (the loss's class weights: ones with
`no_object_weight` last; consumed on import, written on export).

Letters: L layers, nb query blocks, K classes, D hidden.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from videomt_jax.config import VideomtConfig
from videomt_jax.weights.tables import (
    CONV,
    DECONV,
    FUSE_QKV_BIAS,
    FUSE_QKV_KERNEL,
    Entry,
    Rule,
    block_slot,
    check_params,
    dense,
    expected_shapes,
    norm,
    one,
    params_to_source,
    source_to_params,
)

# Per encoder layer: ours under `{encoder,query_encoder}/layers/block/`, HF's under `layers.{i}.`
HF_BLOCK: tuple[Entry, ...] = (
    *norm("norm1", "norm1"),
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
    *dense("attention/out_proj", "attention.out_proj"),
    one("layer_scale1/lambda1", "layer_scale1.lambda1"),
    *norm("norm2", "norm2"),
    one("layer_scale2/lambda1", "layer_scale2.lambda1"),
)
HF_MLP: tuple[Entry, ...] = (*dense("mlp/fc1", "mlp.fc1"), *dense("mlp/fc2", "mlp.fc2"))
HF_SWIGLU: tuple[Entry, ...] = (
    *dense("mlp/gate_proj", "mlp.gate_proj"),
    *dense("mlp/up_proj", "mlp.up_proj"),
    *dense("mlp/down_proj", "mlp.down_proj"),
)
# Outside the encoder layers.
HF_GLOBAL: tuple[Entry, ...] = (
    one("embeddings/cls_token", "embeddings.cls_token"),
    one("embeddings/register_tokens", "embeddings.register_tokens"),
    one("embeddings/mask_token", "embeddings.mask_token"),
    one("embeddings/patch_embeddings/kernel", "embeddings.patch_embeddings.projection.weight", CONV),
    one("embeddings/patch_embeddings/bias", "embeddings.patch_embeddings.projection.bias"),
    one("embeddings/position_embeddings", "embeddings.position_embeddings.weight"),
    *norm("layernorm", "layernorm"),
    one("query", "query.weight"),
    *dense("query_updater", "query_updater"),
    *dense("heads/class_predictor", "class_predictor"),
    *dense("heads/mask_head/fc1", "mask_head.fc1"),
    *dense("heads/mask_head/fc2", "mask_head.fc2"),
    *dense("heads/mask_head/fc3", "mask_head.fc3"),
)
# Per upscale block i: ours under `heads/upscale_{i}/`, HF's under `upscale_block.block.{i}.`
HF_UPSCALE: tuple[Entry, ...] = (
    one("conv1/kernel", "conv1.weight", DECONV),
    one("conv1/bias", "conv1.bias"),
    one("conv2/kernel", "conv2.weight", CONV),
    *norm("layernorm2d", "layernorm2d"),
)
ATTN_MASK_PROBS = "attn_mask_probs"
EMPTY_WEIGHT = "criterion.empty_weight"


def hf_rules(config: VideomtConfig) -> list[Rule]:
    rules = [e.rule("", "") for e in HF_GLOBAL]
    block = HF_BLOCK + (HF_SWIGLU if config.use_swiglu_ffn else HF_MLP)
    for layer in range(config.num_hidden_layers):
        prefix, index = block_slot(config, layer)
        rules += [e.rule(f"layers.{layer}.", prefix, index) for e in block]
    for i in range(config.num_upscale_blocks):
        rules += [e.rule(f"upscale_block.block.{i}.", f"heads/upscale_{i}/") for e in HF_UPSCALE]
    return rules


def hf_buffers(config: VideomtConfig) -> dict[str, tuple[int, ...]]:
    return {ATTN_MASK_PROBS: (config.num_blocks,), EMPTY_WEIGHT: (config.num_labels + 1,)}


def hf_state_dict_to_params(
    config: VideomtConfig, state_dict: Mapping[str, np.ndarray], *, source: str = "the HF state dict"
) -> dict:
    """An HF state dict (numpy arrays, torch layout) -> our float32 parameter tree (numpy), strictly."""
    params, _ = source_to_params(
        state_dict, hf_rules(config), expected_shapes(config), source=source, buffers=hf_buffers(config)
    )
    return params


def params_to_hf_state_dict(config: VideomtConfig, params: Mapping) -> dict[str, np.ndarray]:
    """Our parameters -> the state dict `VideomtForUniversalSegmentation` loads (float32, torch layout)."""
    check_params(config, params)
    out = params_to_source(params, hf_rules(config), what="an HF state dict")
    out[ATTN_MASK_PROBS] = np.ones((config.num_blocks,), np.float32)
    empty_weight = np.ones((config.num_labels + 1,), np.float32)
    empty_weight[-1] = config.no_object_weight
    out[EMPTY_WEIGHT] = empty_weight
    return out
