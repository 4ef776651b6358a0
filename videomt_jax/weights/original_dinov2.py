"""The authors' DINOv2 checkpoints (github tue-mps/videomt, detectron2 + timm): keys, config inference, load.

A released `.pth` holds `{"model": state_dict}` with the detectron2 meta-architecture's keys:
`backbone.encoder.backbone.*` is a timm DINOv2-with-registers ViT (`cls_token` [1,1,D], `reg_token`
[1,R,D], `pos_embed` [1,N,D] over patches only, `blocks.{i}.attn.qkv` fused q|k|v, `ls1/ls2.gamma`,
`mlp.fc1/fc2` (SwiGLU: timm `SwiGLUPacked` packs gate then up into `mlp.fc1` [2F, D]; timm `SwiGLU`
splits them into `mlp.fc1_g` / `mlp.fc1_x`), final `norm`); `backbone.{q, query_updater, class_head,
mask_head.{0,2,4}, upscale.{i}}` are the VidEoMT parts and `backbone.attn_mask_probs` [nb] /
`criterion.empty_weight` [K+1] the buffers (`shared_rules.py`, shared with the DINOv3 files). timm
has no `mask_token`: ours is filled with zeros (HF's initial value; it is unused at inference).
The authors' per-dataset "segmenters" (`dinov2_segmenter/*.pth`, the init of every recipe) are the
image model in the same layout without `query_updater`: they load as model_type "eomt" (no masked
attention: their forward never masks), and `model_type="videomt"` / `init_videomt_from` adds a fresh
query updater, which is what detectron2 leaves fresh when their trainer loads one (missing keys).
The config is inferred from the shapes; what they cannot tell (the head count, and the image size
when the position grid is not square) comes from the file or model name, or from overrides.

Class names: a checkpoint holds only the class count. `dataset=` (CLI `--dataset`) names the
authors' training set and takes its category list (`data/categories.py`, the model's label order);
without it the file name (the authors' `yt_2019_*`, `ovis_*`, `vipseg_*`, ...) or, when one list
alone has that many classes, the count picks it, and a `CheckpointConfigWarning` says which and
why. With neither, the labels stay `LABEL_i` and the warning names the options. Head count: timm's
DINOv2 weights hold nothing that fixes it (qkv is [3D, D] for every split of D), so it comes from
`num_attention_heads=`, else a model / file name (`vit_small` ...), else the released DINOv2 /
DINOv3 size of that width, with a warning that it was assumed and how to set it.

Letters: D hidden, R registers, N = g*g patch positions, F MLP hidden, nb query blocks, K classes.
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from videomt_jax.config import VideomtConfig
from videomt_jax.data.categories import DATASET_LABELS
from videomt_jax.weights.shapes import expected_shapes
from videomt_jax.weights.shared_rules import (
    AUTHORS_ATTN_MASK_PROBS,
    AUTHORS_HEAD,
    AUTHORS_UPSCALE_KEYS,
    AUTHORS_VIT,
    EMBEDDINGS,
    EMPTY_WEIGHT,
    HEAD_DIM,
    HEADS_BY_NAME,
    ZEROS,
    authors_head_rules,
    authors_model_type,
    buffer_shapes,
    layer_rules,
    no_object_weight,
    numbered,
)
from videomt_jax.weights.tables import (
    CONV,
    LINEAR,
    SPLIT_GATE_UP_BIAS,
    SPLIT_GATE_UP_KERNEL,
    SQUEEZE_BATCH,
    ConversionError,
    Entry,
    Rule,
    Table,
    dense,
    norm,
    one,
    rules_under,
    source_to_params,
)

NAME = "authors' .pth"  # the LoadReport's source
DATASET = "dataset"  # the override naming the authors' training set (class names), consumed by the loaders

# How the authors' released files start (model_zoo/dinov2.md, dinov3.md) -> their training set.
AUTHORS_FILE_DATASETS = {
    "yt_2019": "ytvis19",
    "yt_2021": "ytvis21",
    "yt_2022": "ytvis22",
    "ovis": "ovis",
    "vipseg": "vipseg",
    "vipsseg": "vipseg",  # their DINOv3 VIPSeg file: vipsseg_dinov3_55.1_47.1.pth
    "vspw": "vspw",
}
# Released DINOv2 / DINOv3 widths -> heads (HEAD_DIM-wide heads, but DINOv3 7B's 128)
RELEASED_HEADS = {384: 6, 768: 12, 1024: 16, 1280: 20, 1536: 24, 4096: 32}
HEADS_HINT = "pass num_attention_heads=... (CLI: --num-heads) if the backbone differs"


class CheckpointConfigWarning(UserWarning):
    """A config value of an authors' checkpoint that its weights do not fix: what was taken, and why."""


def _note(message: str) -> None:
    warnings.warn(message, CheckpointConfigWarning, stacklevel=3)


def _file_dataset(model_name: str | None) -> str | None:
    """The authors' training set a file name like `yt_2019_vit_small_52.8.pth` names, if any."""
    name = (model_name or "").lower()
    hits = {d for f, d in AUTHORS_FILE_DATASETS.items() if re.search(rf"(^|[^a-z0-9]){f}([^a-z0-9]|$)", name)}
    return hits.pop() if len(hits) == 1 else None


def authors_labels(num_labels: int, model_name: str | None, dataset: str | None, source: str) -> dict[int, str]:
    """id2label of an authors' checkpoint with `num_labels` classes (module doc, "Class names")."""
    if dataset is not None:
        if dataset not in DATASET_LABELS:
            raise ConversionError(f"unknown dataset {dataset!r}; choose one of {', '.join(DATASET_LABELS)}")
        names = DATASET_LABELS[dataset]
        if len(names) != num_labels:
            raise ConversionError(
                f"{source}: dataset {dataset} has {len(names)} classes but the checkpoint's class head "
                f"predicts {num_labels} (+1 no-object)"
            )
        return dict(enumerate(names))
    fits = [d for d, names in DATASET_LABELS.items() if len(names) == num_labels]
    named = _file_dataset(model_name)
    if named in fits:
        _note(f"{source}: class names of {named} (from the file name; --dataset / dataset=... sets them)")
        return dict(enumerate(DATASET_LABELS[named]))
    if fits and len({DATASET_LABELS[d] for d in fits}) == 1:
        _note(f"{source}: class names of {'/'.join(fits)}, the authors' only list of {num_labels} classes")
        return dict(enumerate(DATASET_LABELS[fits[0]]))
    which = f"{num_labels} classes fit {', '.join(fits)}" if fits else f"no authors' dataset has {num_labels} classes"
    _note(
        f"{source}: class names unknown ({which}): labels LABEL_0 .. LABEL_{num_labels - 1}; "
        "pass --dataset NAME (dataset=...) or --id2label-json FILE (id2label=...)"
    )
    return {i: f"LABEL_{i}" for i in range(num_labels)}


def authors_heads(hidden: int, model_name: str | None, source: str) -> int:
    """num_attention_heads when the weights do not fix it: the model / file name, else the released
    size of this width (warned), else hidden // 64 (warned)."""
    for fragment, heads in HEADS_BY_NAME.items():
        if model_name and fragment in model_name:
            return heads
    if hidden in RELEASED_HEADS:
        heads = RELEASED_HEADS[hidden]
        _note(
            f"{source}: {heads} attention heads assumed (the released DINOv2/DINOv3 size of width {hidden}); "
            + HEADS_HINT
        )
        return heads
    if hidden % HEAD_DIM:
        raise ConversionError(
            f"{source}: the weights do not fix the head count and width {hidden} is no released size; "
            "pass num_attention_heads=... (CLI: --num-heads)"
        )
    _note(
        f"{source}: {hidden // HEAD_DIM} attention heads guessed ({HEAD_DIM} per head; width {hidden} is no "
        f"released size); {HEADS_HINT}"
    )
    return hidden // HEAD_DIM


SEGMENTER_NAME = "authors' segmenter .pth (image model)"  # ... of a file without the query updater
# Per ViT block: ours under `{encoder,query_encoder}/layers/block/`, theirs under `{AUTHORS_VIT}blocks.{i}.`
TIMM_BLOCK: Table = (
    *norm("norm1", "norm1"),
    one("attention/qkv/kernel", "attn.qkv.weight", LINEAR),  # already fused q|k|v: [3D, D]
    one("attention/qkv/bias", "attn.qkv.bias"),
    *dense("attention/out_proj", "attn.proj"),
    one("layer_scale1/lambda1", "ls1.gamma"),
    *norm("norm2", "norm2"),
    one("layer_scale2/lambda1", "ls2.gamma"),
)
# The block's MLP by kind: None (plain), "packed" (SwiGLUPacked: fc1 = gate|up), "split" (SwiGLU: fc1_g, fc1_x).
TIMM_MLPS: dict[str | None, Table] = {
    None: (*dense("mlp/fc1", "mlp.fc1"), *dense("mlp/fc2", "mlp.fc2")),
    "packed": (
        Entry(("mlp/gate_proj/kernel", "mlp/up_proj/kernel"), ("mlp.fc1.weight",), SPLIT_GATE_UP_KERNEL),
        Entry(("mlp/gate_proj/bias", "mlp/up_proj/bias"), ("mlp.fc1.bias",), SPLIT_GATE_UP_BIAS),
        *dense("mlp/down_proj", "mlp.fc2"),
    ),
    "split": (
        *dense("mlp/gate_proj", "mlp.fc1_g"),
        *dense("mlp/up_proj", "mlp.fc1_x"),
        *dense("mlp/down_proj", "mlp.fc2"),
    ),
}
# timm ViT parts outside the blocks, under `{AUTHORS_VIT}` (ours under `embeddings/` but the final norm).
TIMM_EMBEDDINGS: Table = (
    one("cls_token", "cls_token"),
    one("patch_embeddings/kernel", "patch_embed.proj.weight", CONV),
    one("patch_embeddings/bias", "patch_embed.proj.bias"),
    one("position_embeddings", "pos_embed", SQUEEZE_BATCH),
)
TIMM_REGISTERS: Table = (one("register_tokens", "reg_token"),)  # absent when R = 0
TIMM_NORM: Table = tuple(norm("layernorm", "norm"))
DEFAULTS = {  # parameters timm does not have
    f"{EMBEDDINGS}mask_token": ZEROS,
    f"{EMBEDDINGS}register_tokens": ZEROS,  # only used when R = 0
}
FIXED = dict(hidden_act="gelu", layer_norm_eps=1e-6)  # timm nn.GELU and LayerNorm(eps=1e-6)
ANCHORS = (  # keys every authors' DINOv2 checkpoint has
    *(f"{AUTHORS_VIT}{k}" for k in ("cls_token", "pos_embed", "patch_embed.proj.weight")),
    *(f"{AUTHORS_HEAD}{k}" for k in ("q.weight", "class_head.weight")),
)


def _swiglu_kind(state_dict: Mapping[str, Any]) -> str | None:
    """The key of `TIMM_MLPS` the checkpoint's MLP is."""
    if f"{AUTHORS_VIT}blocks.0.mlp.fc1_g.weight" in state_dict:
        return "split"
    fc1 = np.shape(state_dict[f"{AUTHORS_VIT}blocks.0.mlp.fc1.weight"])
    fc2 = np.shape(state_dict[f"{AUTHORS_VIT}blocks.0.mlp.fc2.weight"])
    return "packed" if fc1[0] == 2 * fc2[1] else None


def original_dinov2_rules(config: VideomtConfig, swiglu_kind: str | None) -> list[Rule]:
    if (swiglu_kind is not None) != config.use_swiglu_ffn:
        raise ConversionError(
            f"checkpoint MLP kind {swiglu_kind or 'plain'} disagrees with use_swiglu_ffn={config.use_swiglu_ffn}"
        )
    embeddings = TIMM_EMBEDDINGS + (TIMM_REGISTERS if config.num_register_tokens else ())
    return (
        rules_under(embeddings, AUTHORS_VIT, EMBEDDINGS)
        + rules_under(TIMM_NORM, AUTHORS_VIT)
        + layer_rules(config, TIMM_BLOCK + TIMM_MLPS[swiglu_kind], f"{AUTHORS_VIT}blocks.")
        + authors_head_rules(config)
    )


def check_original_keys(state_dict: Mapping[str, Any], source: str) -> None:
    """Clear errors for state dicts that are not the authors' DINOv2 VidEoMT."""
    if any(k.startswith((f"{AUTHORS_VIT}layer.", f"{AUTHORS_VIT}rope_embeddings")) for k in state_dict):
        raise ConversionError(
            f"{source} holds a DINOv3 backbone in Hugging Face's names (`layer.{{i}}`); the authors' files this "
            "reads name it as timm does (DINOv2: `pos_embed`, `blocks.{i}`; DINOv3: `patch_embed.*`, `blocks.{i}`)"
        )
    absent = [k for k in ANCHORS if k not in state_dict]
    if absent:
        sample = ", ".join(sorted(state_dict)[:8])
        raise ConversionError(
            f"{source} is not an authors' VidEoMT checkpoint: it lacks {', '.join(absent)} (its keys start: {sample})"
        )


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
    number of heads and, for the authors' file names, the training set; `dataset=` names that set
    (the class names; module doc).
    """
    check_original_keys(state_dict, source)
    overrides = dict(overrides)
    shape = lambda key: tuple(np.shape(state_dict[key]))
    vit, head = AUTHORS_VIT, AUTHORS_HEAD
    hidden = shape(f"{vit}cls_token")[-1]
    layers = numbered(state_dict, f"{vit}blocks.")
    if layers != list(range(len(layers))) or not layers:
        raise ConversionError(f"{source}: ViT block indices are not 0..L-1: {layers}")
    patch = shape(f"{vit}patch_embed.proj.weight")[-2:]
    positions = shape(f"{vit}pos_embed")[1]
    swiglu = _swiglu_kind(state_dict)
    inferred: dict[str, Any] = dict(
        FIXED,
        model_type=authors_model_type(state_dict),
        hidden_size=hidden,
        num_hidden_layers=len(layers),
        patch_size=patch[0] if patch[0] == patch[1] else tuple(patch),
        num_register_tokens=shape(f"{vit}reg_token")[1] if f"{vit}reg_token" in state_dict else 0,
        use_swiglu_ffn=swiglu is not None,
        mlp_ratio=_mlp_ratio(hidden, shape(f"{vit}blocks.0.mlp.fc2.weight")[1], swiglu is not None),
        num_queries=shape(f"{head}q.weight")[0],
        num_upscale_blocks=len(numbered(state_dict, AUTHORS_UPSCALE_KEYS)),
    )
    num_labels = shape(f"{head}class_head.weight")[0] - 1
    dataset = overrides.pop(DATASET, None)
    if "id2label" not in overrides:
        inferred["id2label"] = authors_labels(num_labels, model_name, dataset, source)
    elif dataset is not None:
        raise ConversionError(f"{source}: pass either id2label or dataset, not both")
    if AUTHORS_ATTN_MASK_PROBS in state_dict:
        inferred["num_blocks"] = shape(AUTHORS_ATTN_MASK_PROBS)[0]
    if EMPTY_WEIGHT in state_dict:
        inferred["no_object_weight"] = no_object_weight(state_dict)
    side = math.isqrt(positions)
    if side * side == positions:
        inferred["image_size"] = side * patch[0] if patch[0] == patch[1] else (side * patch[0], side * patch[1])
    merged = {**inferred, **overrides}
    if "num_attention_heads" not in merged:
        merged["num_attention_heads"] = authors_heads(hidden, model_name, source)
    for needed, flag in (("image_size", "--image-size"), ("num_blocks", "--num-blocks")):
        if needed not in merged:
            raise ConversionError(
                f"{source}: cannot infer {needed} from the checkpoint; pass {needed}=... (CLI: {flag})"
            )
    labels = merged["id2label"]
    if len(labels) != num_labels:
        raise ConversionError(
            f"id2label has {len(labels)} labels but the checkpoint's class head predicts {num_labels} (+1 no-object)"
        )
    return VideomtConfig(**merged)


def _to_params(config: VideomtConfig, state_dict: Mapping[str, np.ndarray], source: str) -> tuple[dict, list[str]]:
    check_original_keys(state_dict, source)
    return source_to_params(
        state_dict,
        original_dinov2_rules(config, _swiglu_kind(state_dict)),
        expected_shapes(config),
        source=source,
        buffers=buffer_shapes(config, AUTHORS_ATTN_MASK_PROBS),
        defaults=DEFAULTS,
    )


def original_state_dict_to_params(
    config: VideomtConfig, state_dict: Mapping[str, np.ndarray], *, source: str = "the authors' state dict"
) -> dict:
    """The authors' state dict (numpy arrays, torch layout) -> our float32 parameter tree, strictly."""
    return _to_params(config, state_dict, source)[0]


def matches(state_dict: Mapping[str, Any]) -> bool:
    """A timm DINOv2 backbone below the authors' prefix."""
    return f"{AUTHORS_VIT}pos_embed" in state_dict


def is_segmenter(state_dict: Mapping[str, Any]) -> bool:
    """An authors' DINOv2 image model (a "segmenter"): their layout without the query updater."""
    return matches(state_dict) and authors_model_type(state_dict) == "eomt"


def load_state_dict(
    state_dict: Mapping[str, np.ndarray], source: str, overrides: Mapping[str, Any]
) -> tuple[VideomtConfig, dict, list[str]]:
    """`load_pretrained`'s loader for this format, given the file's state dict: (config, params,
    buffers found). `overrides` may hold `model_name` (default: the file name), which picks the heads."""
    asked = overrides.get("backbone", "dinov2")
    if asked != "dinov2":
        raise ConversionError(
            f"{source} holds a DINOv2 backbone (timm keys: pos_embed, blocks.*.attn.qkv) "
            f"but backbone={asked!r} was asked"
        )
    overrides = dict(overrides)
    model_name = overrides.pop("model_name", None) or Path(source).name
    config = infer_original_config(state_dict, model_name=model_name, source=source, **overrides)
    params, buffers = _to_params(config, state_dict, source)
    return config, params, buffers
