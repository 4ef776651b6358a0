"""Key tables of the VidEoMT family's other formats (all torch layout, strict, through `tables.py`).

- HF `EomtForUniversalSegmentation` (DINOv2 EoMT): HF VidEoMT's keys without `query_updater` and
  `embeddings.mask_token` (ours is filled with zeros: unused at inference).
- HF `EomtDinov3ForUniversalSegmentation`: DINOv3 layers (`attention.{q,k,v,o}_proj`, no key bias
  when `key_bias` is off, `mlp.up_proj/down_proj` or gated `gate/up/down_proj`), a bare
  `embeddings.patch_embeddings` conv, no position embeddings. The same keys plus `query_updater.*`
  are the HF-style layout of a DINOv3 VidEoMT.
- Backbones alone: HF `DINOv3ViTModel` (`model.layer.{i}`, older releases `layer.{i}`, final `norm`)
  and `Dinov2WithRegistersModel` (`encoder.layer.{i}`, final `layernorm`, position embeddings with
  a CLS slot that we fold into the CLS token).

Letters: D hidden, L layers, N positions, nb query blocks, K classes.
"""

from __future__ import annotations

from typing import Callable, Mapping

import numpy as np

from videomt_jax.config import VideomtConfig
from videomt_jax.modeling.embeddings import resample_pos_embed
from videomt_jax.weights.hf import HF_BLOCK, HF_GLOBAL, HF_MLP, HF_SWIGLU, HF_UPSCALE
from videomt_jax.weights.tables import (
    CONV,
    FUSE_QKV_BIAS,
    FUSE_QKV_KERNEL,
    LINEAR,
    Entry,
    Layout,
    Rule,
    block_slot,
    dense,
    norm,
    one,
)

ZEROS: Callable[[tuple[int, ...]], np.ndarray] = lambda shape: np.zeros(shape, np.float32)  # noqa: E731


def _qv_bias_to_jax(xs):
    q, v = xs
    return [np.concatenate([q, np.zeros_like(q), v])]


def _qv_bias_to_source(ys):
    q, _, v = np.split(ys[0], 3)
    return [q, v]


# q and v biases (no key bias) <-> our [3D] q|k|v bias with a zero key third (modeling/dinov3.py)
QV_BIAS = Layout("qv_bias_zero_key", _qv_bias_to_jax, _qv_bias_to_source)


def dinov3_attention(key_bias: bool, fused: bool) -> tuple[Entry, ...]:
    """One DINOv3 attention layer: separate q/k/v projections, or the authors' fused `qkv_proj`."""
    if fused:  # the authors' FUSED_QKV: one Linear(D, 3D) with a full bias
        qkv = (one("attention/qkv/kernel", "attention.qkv_proj.weight", LINEAR),
               one("attention/qkv/bias", "attention.qkv_proj.bias"))
    else:
        kernels = tuple(f"attention.{p}_proj.weight" for p in "qkv")
        biases = tuple(f"attention.{p}_proj.bias" for p in ("qkv" if key_bias else "qv"))
        qkv = (Entry(("attention/qkv/kernel",), kernels, FUSE_QKV_KERNEL),
               Entry(("attention/qkv/bias",), biases, FUSE_QKV_BIAS if key_bias else QV_BIAS))
    return (*qkv, *dense("attention/out_proj", "attention.o_proj"))


def dinov3_block(config: VideomtConfig, fused: bool = False) -> tuple[Entry, ...]:
    """One HF DINOv3 layer (`DINOv3ViTLayer` / `EomtDinov3Layer`, also inside the authors' backbone)."""
    mlp = HF_SWIGLU if config.use_swiglu_ffn else (*dense("mlp/fc1", "mlp.up_proj"), *dense("mlp/fc2", "mlp.down_proj"))
    return (
        *norm("norm1", "norm1"),
        *dinov3_attention(config.key_bias, fused),
        one("layer_scale1/lambda1", "layer_scale1.lambda1"),
        *norm("norm2", "norm2"),
        one("layer_scale2/lambda1", "layer_scale2.lambda1"),
        *mlp,
    )


def dinov2_block(config: VideomtConfig) -> tuple[Entry, ...]:
    return HF_BLOCK + (HF_SWIGLU if config.use_swiglu_ffn else HF_MLP)


def block_rules(config: VideomtConfig, block: tuple[Entry, ...], prefix: str) -> list[Rule]:
    """`block` for every encoder layer; `prefix` formats with the layer index (e.g. "layers.{}.")."""
    rules = []
    for layer in range(config.num_hidden_layers):
        target, index = block_slot(config, layer)
        rules += [e.rule(prefix.format(layer), target, index) for e in block]
    return rules


def upscale_rules(config: VideomtConfig) -> list[Rule]:
    return [
        e.rule(f"upscale_block.block.{i}.", f"heads/upscale_{i}/") for i in range(config.num_upscale_blocks) for e in HF_UPSCALE
    ]


# Outside the layers: HF EoMT (DINOv2) = HF VidEoMT less mask token and query updater.
_NOT_IN_EOMT = ("embeddings.mask_token", "query_updater.weight", "query_updater.bias")
EOMT_GLOBAL: tuple[Entry, ...] = tuple(e for e in HF_GLOBAL if e.theirs[0] not in _NOT_IN_EOMT)
DINOV3_EMBEDDINGS: tuple[Entry, ...] = (
    one("embeddings/cls_token", "embeddings.cls_token"),
    one("embeddings/register_tokens", "embeddings.register_tokens"),
    one("embeddings/patch_embeddings/kernel", "embeddings.patch_embeddings.weight", CONV),
    one("embeddings/patch_embeddings/bias", "embeddings.patch_embeddings.bias"),
)
_NOT_DINOV3 = ("embeddings.", "query_updater.")
EOMT_DINOV3_GLOBAL: tuple[Entry, ...] = DINOV3_EMBEDDINGS + tuple(
    e for e in HF_GLOBAL if not e.theirs[0].startswith(_NOT_DINOV3)
)
QUERY_UPDATER: tuple[Entry, ...] = tuple(dense("query_updater", "query_updater"))


def hf_family_rules(config: VideomtConfig) -> list[Rule]:
    """HF EoMT / EoMT-DINOv3 keys, or (model_type videomt, DINOv3) EoMT-DINOv3 keys + query_updater."""
    dinov3 = config.backbone == "dinov3"
    glob = EOMT_DINOV3_GLOBAL if dinov3 else EOMT_GLOBAL
    if config.model_type == "videomt":
        glob = glob + QUERY_UPDATER
    block = dinov3_block(config) if dinov3 else dinov2_block(config)
    return [e.rule("", "") for e in glob] + block_rules(config, block, "layers.{}.") + upscale_rules(config)


def hf_family_defaults(config: VideomtConfig) -> dict[str, Callable[[tuple[int, ...]], np.ndarray]]:
    """Parameters HF's EoMT lacks: the DINOv2 mask token (zeros, as HF initialises it)."""
    return {"embeddings/mask_token": ZEROS} if config.backbone == "dinov2" else {}


def family_buffers(config: VideomtConfig, prefix: str = "") -> dict[str, tuple[int, ...]]:
    return {f"{prefix}attn_mask_probs": (config.num_blocks,), "criterion.empty_weight": (config.num_labels + 1,)}


# ---------------------------------------------------------------- backbones alone
def dinov3_backbone_rules(config: VideomtConfig, layer_prefix: str) -> list[Rule]:
    """HF `DINOv3ViTModel`: embeddings, layers under `layer_prefix` ("model.layer.{}."), final `norm`."""
    glob = DINOV3_EMBEDDINGS + tuple(norm("layernorm", "norm"))
    return [e.rule("", "") for e in glob] + block_rules(config, dinov3_block(config), layer_prefix)


# Older Dinov2WithRegisters checkpoints (and the Hub files) name the attention projections this way.
DINOV2_LEGACY_NAMES = {
    "attention.attention.query.": "attention.q_proj.",
    "attention.attention.key.": "attention.k_proj.",
    "attention.attention.value.": "attention.v_proj.",
    "attention.output.dense.": "attention.o_proj.",
}


def dinov2_backbone_block(config: VideomtConfig) -> tuple[Entry, ...]:
    """A `Dinov2WithRegistersLayer`: our HF VidEoMT block with `o_proj` for the output projection."""
    block = tuple(e for e in dinov2_block(config) if not e.theirs[0].startswith("attention.out_proj"))
    return block + tuple(dense("attention/out_proj", "attention.o_proj"))


def dinov2_backbone_rules(config: VideomtConfig) -> list[Rule]:
    """`Dinov2WithRegistersModel`: CLS + position embeddings (with their CLS slot) resampled to our grid."""
    grid = config.grid_hw

    def to_jax(xs):  # cls [1, 1, D], pos [1, 1+N, D] -> cls + pos[CLS], patch positions on our grid
        cls, pos = xs
        side = int(round(np.sqrt(pos.shape[1] - 1)))
        if side * side != pos.shape[1] - 1:
            raise ValueError(f"{pos.shape[1] - 1} patch positions do not form a square grid")
        patches = np.asarray(resample_pos_embed(np.asarray(pos[0, 1:], np.float32), (side, side), grid))
        return [cls + pos[:, :1], patches]

    def to_source(ys):
        raise ValueError("writing a Dinov2WithRegistersModel is not supported")

    embed = Layout("cls_plus_pos_resampled", to_jax, to_source)
    glob = (
        Entry(("embeddings/cls_token", "embeddings/position_embeddings"),
              ("embeddings.cls_token", "embeddings.position_embeddings"), embed),
        one("embeddings/register_tokens", "embeddings.register_tokens"),
        one("embeddings/patch_embeddings/kernel", "embeddings.patch_embeddings.projection.weight", CONV),
        one("embeddings/patch_embeddings/bias", "embeddings.patch_embeddings.projection.bias"),
        *norm("layernorm", "layernorm"),
    )
    return [e.rule("", "") for e in glob] + block_rules(config, dinov2_backbone_block(config), "encoder.layer.{}.")


def rename_legacy_dinov2(state_dict: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    out = {}
    for key, value in state_dict.items():
        for old, new in DINOV2_LEGACY_NAMES.items():
            key = key.replace(old, new)
        out[key] = value
    return out
