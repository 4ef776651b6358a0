"""`VideomtConfig`: the one place where every model default lives.

One frozen dataclass, its fields in four groups (each group's names are listed once below):
- architecture (`ARCHITECTURE_FIELDS` from HF's `VideomtConfig`, `FAMILY_FIELDS` beyond it: backbone,
  image / video model, NORM_QUERIES): what the parameters mean and what the model computes;
- loss (`LOSS_FIELDS`, HF's): the loss weights and point counts of `training.losses`;
- labels (`id2label`);
- runtime (`RUNTIME_FIELDS`): how the numbers are computed on this machine (compute dtype,
  attention kernel, layer scan), not what they are.
HF's fields keep HF's names and defaults, so a `config.json` written by `transformers` round-trips
losslessly (keys we do not model are kept in `extra`); the family and runtime groups never reach an
HF `config.json` but are saved by `vm.save_pretrained` under the "videomt_jax" key. Training-only
settings (rematerialisation, optimizer, matching) live in `training.config.TrainConfig`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

# Architecture fields of HF's VideomtConfig (in HF's order).
ARCHITECTURE_FIELDS: tuple[str, ...] = (
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "hidden_act",
    "hidden_dropout_prob",
    "initializer_range",
    "layer_norm_eps",
    "image_size",
    "patch_size",
    "num_channels",
    "mlp_ratio",
    "layerscale_value",
    "drop_path_rate",
    "num_upscale_blocks",
    "attention_dropout",
    "use_swiglu_ffn",
    "num_blocks",
    "num_queries",
    "num_register_tokens",
)
# Loss fields of HF's VideomtConfig (read by `training.losses` / `training.points`).
LOSS_FIELDS: tuple[str, ...] = (
    "no_object_weight",
    "class_weight",
    "mask_weight",
    "dice_weight",
    "train_num_points",
    "oversample_ratio",
    "importance_sample_ratio",
)
HF_FIELDS: tuple[str, ...] = ARCHITECTURE_FIELDS + LOSS_FIELDS  # what an HF config.json holds of ours
# Architecture beyond HF's VideomtConfig (backbone, image / video model, NORM_QUERIES); see `family_problems`.
FAMILY_FIELDS: tuple[str, ...] = (
    "model_type",
    "backbone",
    "rope_theta",
    "key_bias",
    "intermediate_size",
    "attn_mask_probs",
    "norm_queries",
    "pos_embed_rescale",
)
# How the numbers are computed, not what they are.
RUNTIME_FIELDS: tuple[str, ...] = ("dtype", "attention_impl", "scan_layers")
# Saved by `save_pretrained` under the "videomt_jax" key of config.json.
JAX_FIELDS: tuple[str, ...] = FAMILY_FIELDS + RUNTIME_FIELDS
# Keys older versions saved under "videomt_jax" that are no longer model settings: read and dropped.
# ("remat" is a training setting now: `TrainConfig.remat`.)
DROPPED_JAX_KEYS: tuple[str, ...] = ("remat",)
MODEL_TYPES = ("videomt", "eomt")  # video model with query propagation | image model (EoMT)
IMAGE_MODEL_TYPES = ("eomt",)  # no query propagation: run on every frame on its own (eval, export-serving)
BACKBONES = ("dinov2", "dinov3")  # absolute position embeddings | rotary embeddings on patch tokens
ROPE_PARTS = 4  # DINOv3 rotary: each head splits into (y, x) x (cos, sin) quarters

DTYPES = ("float32", "bfloat16", "float16")
ATTENTION_IMPLS = ("auto", "einsum", "einsum_map", "xla", "cudnn")
# The supported `hidden_act` names, listed once: modeling/layers.py ACTIVATIONS maps each to its function.
HIDDEN_ACTS = ("gelu", "gelu_new", "gelu_pytorch_tanh", "relu", "silu")

PRESETS: dict[str, dict[str, Any]] = {
    "small": dict(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, num_blocks=3),
    "base": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, num_blocks=3),
    "large": dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, num_blocks=4),
}
# DINOv3 (HF DINOv3ViT, LVD-1689M weights): no key bias, LayerNorm eps 1e-5, 4 registers, MLP x4.
_DINOV3 = dict(
    backbone="dinov3",
    key_bias=False,
    layer_norm_eps=1e-5,
    rope_theta=100.0,
    num_register_tokens=4,
    pos_embed_rescale=2.0,
)
PRESETS.update({f"dinov3-{name}": {**PRESETS[name], **_DINOV3} for name in ("small", "base", "large")})


INF = float("inf")
# The largest model a config may describe (DINOv3's largest ViT has 6.7 billion parameters): a typo such
# as hidden_size 10**7 is refused here in one line instead of as a multi-petabyte allocation.
MAX_PARAMS = 64 * 10**9


@dataclass(frozen=True)
class FieldRule:
    """Type and inclusive range of one numeric / boolean field; `optional`: None is allowed too."""

    kind: str  # a `FIELD_KINDS` name
    low: float = -INF
    high: float = INF
    optional: bool = False
    open_low: bool = False  # low itself excluded (a ratio that must be positive)
    open_high: bool = False  # high itself excluded (probabilities that must stay below 1)

    def holds(self, value: float) -> bool:
        above = value > self.low if self.open_low else value >= self.low
        below = value < self.high if self.open_high else value <= self.high
        return above and below

    def text(self) -> str:
        return f"{'(' if self.open_low else '['}{self.low:g}, {self.high:g}{')' if self.open_high else ']'}"


def _is_int(v: Any) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_real(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(float(v))


def _size_values(v: Any) -> tuple[Any, ...]:
    return tuple(v) if isinstance(v, (tuple, list)) and len(v) == 2 else (v,)


# kind -> (type test of one value, what the error calls it); "size" is an int or a (height, width) pair
FIELD_KINDS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "int": (_is_int, "an int"),
    "real": (_is_real, "a finite number"),
    "bool": (lambda v: isinstance(v, bool), "true or false"),
    "size": (lambda v: all(_is_int(x) for x in _size_values(v)), "an int or a [height, width] pair of ints"),
}
_POSITIVE_INT = FieldRule("int", 1)
_WEIGHT = FieldRule("real", 0)
_PROBABILITY = FieldRule("real", 0, 1, open_high=True)
FIELD_RULES: dict[str, FieldRule] = {
    "hidden_size": FieldRule("int", 1, 2**16),
    "num_hidden_layers": FieldRule("int", 1, 1024),
    "num_attention_heads": FieldRule("int", 1, 2**16),
    "hidden_dropout_prob": _PROBABILITY,
    "initializer_range": _WEIGHT,
    "layer_norm_eps": FieldRule("real", 0, 1, open_high=True),
    "image_size": FieldRule("size", 1, 2**15),
    "patch_size": FieldRule("size", 1, 2**10),
    "num_channels": FieldRule("int", 1, 64),
    "mlp_ratio": FieldRule("real", 0, 64, open_low=True),
    "layerscale_value": FieldRule("real"),
    "drop_path_rate": _PROBABILITY,
    "num_upscale_blocks": FieldRule("int", 0, 10),
    "attention_dropout": _PROBABILITY,
    "use_swiglu_ffn": FieldRule("bool"),
    "num_blocks": _POSITIVE_INT,
    "num_queries": FieldRule("int", 1, 2**16),
    "num_register_tokens": FieldRule("int", 0, 1024),
    "no_object_weight": _WEIGHT,
    "class_weight": _WEIGHT,
    "mask_weight": _WEIGHT,
    "dice_weight": _WEIGHT,
    "train_num_points": _POSITIVE_INT,
    "oversample_ratio": FieldRule("real", 1),
    "importance_sample_ratio": FieldRule("real", 0, 1),
    "rope_theta": FieldRule("real"),
    "pos_embed_rescale": FieldRule("real", optional=True),
    "key_bias": FieldRule("bool"),
    "intermediate_size": FieldRule("int", optional=True),
    "norm_queries": FieldRule("bool"),
    "scan_layers": FieldRule("bool"),
}
# Fields that take one of a few names (model_type and backbone: `family_problems`).
FIELD_CHOICES: dict[str, tuple[str, ...]] = {
    "hidden_act": HIDDEN_ACTS,
    "dtype": DTYPES,
    "attention_impl": ATTENTION_IMPLS,
}


def field_problems(config: Any) -> list[str]:
    """One message per field of `config` whose type or range breaks `FIELD_RULES` (the field named)."""
    problems = []
    for name, rule in FIELD_RULES.items():
        value = getattr(config, name)
        if value is None and rule.optional:
            continue
        test, what = FIELD_KINDS[rule.kind]
        if not test(value):
            problems.append(f"{name} must be {what}{' or null' if rule.optional else ''}, got {value!r}")
            continue
        if not all(rule.holds(v) for v in _size_values(value)):
            problems.append(f"{name} must be in {rule.text()}, got {value!r}")
    for name, choices in FIELD_CHOICES.items():
        if getattr(config, name) not in choices:
            problems.append(f"{name} must be one of {choices}, got {getattr(config, name)!r}")
    return problems


def _pair(value: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    if isinstance(value, (list, tuple)):
        if len(value) != 2:
            raise ValueError(f"expected an int or a pair (height, width), got {value!r}")
        return int(value[0]), int(value[1])
    return int(value), int(value)


def _freeze(value: Any) -> Any:
    """Lists -> tuples so the config stays hashable (it is a static argument under jit)."""
    if isinstance(value, list):
        return tuple(_freeze(v) for v in value)
    return value


# What `to_hf_dict` writes as "architectures" unless `extra` holds another value.
DEFAULT_ARCHITECTURES = ("VideomtForUniversalSegmentation",)


@dataclass(frozen=True)
class VideomtConfig:
    # --- architecture: Hugging Face VideomtConfig fields (same names and defaults) ---
    hidden_size: int = 1024
    num_hidden_layers: int = 24
    num_attention_heads: int = 16
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.0
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-6
    image_size: int | tuple[int, int] = 640
    patch_size: int | tuple[int, int] = 16
    num_channels: int = 3
    mlp_ratio: int = 4
    layerscale_value: float = 1.0
    drop_path_rate: float = 0.0
    num_upscale_blocks: int = 2
    attention_dropout: float = 0.0
    use_swiglu_ffn: bool = False
    num_blocks: int = 4
    num_queries: int = 200
    num_register_tokens: int = 4
    # --- loss: Hugging Face VideomtConfig fields (same names and defaults) ---
    no_object_weight: float = 0.1
    class_weight: float = 2.0
    mask_weight: float = 5.0
    dice_weight: float = 5.0
    train_num_points: int = 12544
    oversample_ratio: float = 3.0
    importance_sample_ratio: float = 0.75
    # --- labels (PretrainedConfig) ---
    id2label: Mapping[int, str] | None = None
    # --- architecture beyond HF's: the model family ---
    model_type: str = "videomt"  # "videomt" (queries propagate over frames) | "eomt" (image model)
    backbone: str = "dinov2"  # "dinov2" (absolute position embeddings) | "dinov3" (rotary, patch tokens only)
    rope_theta: float = 100.0  # DINOv3 rotary base period
    # DINOv3 training: rotary coordinates scaled by a log-uniform factor in [1/r, r], one draw per forward
    # (HF DINOv3ViT `pos_embed_rescale`, 2.0 in HF's config and the DINOv3 presets; None: no rescaling)
    pos_embed_rescale: float | None = None
    key_bias: bool = True  # DINOv3 has no key bias (its q|k|v bias keeps a zero, unused k part)
    intermediate_size: int | None = None  # MLP width when a checkpoint states it (DINOv3); None: from mlp_ratio
    attn_mask_probs: tuple[float, ...] | None = None  # EoMT masked-attention probabilities, one per query block
    norm_queries: bool = False  # authors' NORM_QUERIES: final LayerNorm before aux heads and propagation
    # --- runtime: how the numbers are computed (same numbers, other speed / memory) ---
    dtype: str = "float32"  # compute dtype (inference and training); params stay float32, norms/softmax/logits float32
    attention_impl: str = "auto"  # auto: cudnn flash attention on GPU (16-bit), einsum_map on CPU, einsum elsewhere
    scan_layers: bool = False  # lax.scan over encoder layers (faster compile, same numbers)
    # --- everything else found in an HF config.json, kept for a lossless round trip ---
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "image_size", _freeze(self.image_size))
        object.__setattr__(self, "patch_size", _freeze(self.patch_size))
        if self.attn_mask_probs is not None:
            object.__setattr__(self, "attn_mask_probs", tuple(float(p) for p in self.attn_mask_probs))
        labels = {0: "LABEL_0", 1: "LABEL_1"} if self.id2label is None else self.id2label
        try:
            object.__setattr__(self, "id2label", {int(k): str(v) for k, v in labels.items()})
        except (AttributeError, TypeError, ValueError):
            raise ValueError(
                f"invalid VideomtConfig: id2label must map integer ids to names, got {str(labels)[:80]}"
            ) from None
        self.validate()

    # ------------------------------------------------------------------ checks
    def validate(self) -> None:
        """Raise one ValueError line naming every field that is of the wrong type or out of range."""
        problems = field_problems(self)
        if not problems:  # the arithmetic below needs the types and ranges to hold
            problems = self.consistency_problems() + self.family_problems()
        if problems:
            raise ValueError("invalid VideomtConfig: " + "; ".join(problems))

    def consistency_problems(self) -> list[str]:
        """What is wrong between fields (divisibility, nesting, total size)."""
        problems = []
        if self.hidden_size % self.num_attention_heads:
            problems.append(
                f"hidden_size {self.hidden_size} is not divisible by num_attention_heads {self.num_attention_heads}"
            )
        if not self.num_blocks <= self.num_hidden_layers:
            problems.append(
                f"num_blocks must be in [1, num_hidden_layers={self.num_hidden_layers}], got {self.num_blocks}"
            )
        (image_h, image_w), (patch_h, patch_w) = self.image_hw, self.patch_hw
        if image_h % patch_h or image_w % patch_w:
            problems.append(f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}")
        if 2**self.num_upscale_blocks > min(patch_h, patch_w):
            problems.append(
                f"num_upscale_blocks {self.num_upscale_blocks} upscales past the pixels of patch_size "
                f"{self.patch_size} (2**num_upscale_blocks must be <= the patch size)"
            )
        if self.num_labels < 1:
            problems.append("id2label must name at least one label")
        params = self.approx_num_params
        if params > MAX_PARAMS:
            problems.append(
                f"hidden_size {self.hidden_size} x num_hidden_layers {self.num_hidden_layers} gives about "
                f"{params / 1e9:.3g} billion parameters ({4 * params / 2**30:.3g} GiB in float32), over the "
                f"limit of {MAX_PARAMS / 1e9:.3g} billion"
            )
        return problems

    def family_problems(self) -> list[str]:
        """What is wrong with the model-family fields (backbone, rotary, bias layout, EoMT masking)."""
        problems = []
        if self.model_type not in MODEL_TYPES:
            problems.append(f"model_type must be one of {MODEL_TYPES}, got {self.model_type!r}")
        if self.backbone not in BACKBONES:
            problems.append(f"backbone must be one of {BACKBONES}, got {self.backbone!r}")
        if self.backbone == "dinov3" and self.head_dim % ROPE_PARTS:
            problems.append(f"dinov3 rotary embeddings need head_dim % {ROPE_PARTS} == 0, got head_dim {self.head_dim}")
        if self.backbone == "dinov3" and not self.rope_theta > 0:
            problems.append(f"rope_theta must be positive, got {self.rope_theta}")
        if self.backbone == "dinov2" and not self.key_bias:
            problems.append("key_bias=False is a DINOv3 layout; a DINOv2 backbone always has a key bias")
        if self.intermediate_size is not None and self.intermediate_size < 1:
            problems.append(f"intermediate_size must be positive or None, got {self.intermediate_size}")
        if self.pos_embed_rescale is not None and not self.pos_embed_rescale >= 1.0:
            problems.append(f"pos_embed_rescale must be None or >= 1, got {self.pos_embed_rescale}")
        probs = self.attn_mask_probs
        if probs is not None and self.model_type != "eomt":
            problems.append("attn_mask_probs applies to model_type='eomt' only")
        if probs is not None and (len(probs) != self.num_blocks or not all(0.0 <= p <= 1.0 for p in probs)):
            problems.append(f"attn_mask_probs must hold num_blocks={self.num_blocks} values in [0, 1], got {probs}")
        return problems

    def __hash__(self) -> int:  # dict fields are not hashable; the JSON form is
        return hash(json.dumps(self.to_dict(), sort_keys=True, default=str))

    # ------------------------------------------------------------------ derived
    @property
    def label_names(self) -> Mapping[int, str]:
        """`id2label` as `__post_init__` left it: never None (None there means the two default labels)."""
        if self.id2label is None:
            raise RuntimeError("VideomtConfig.id2label is None after __post_init__; build configs through the class")
        return self.id2label

    @property
    def num_labels(self) -> int:
        return len(self.label_names)

    @property
    def label2id(self) -> dict[str, int]:
        return {v: k for k, v in self.label_names.items()}

    @property
    def image_hw(self) -> tuple[int, int]:
        return _pair(self.image_size)

    @property
    def patch_hw(self) -> tuple[int, int]:
        return _pair(self.patch_size)

    @property
    def grid_hw(self) -> tuple[int, int]:
        (ih, iw), (ph, pw) = self.image_hw, self.patch_hw
        return ih // ph, iw // pw

    @property
    def num_prefix_tokens(self) -> int:
        return 1 + self.num_register_tokens

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def mlp_hidden_size(self) -> int:
        if self.intermediate_size is not None:
            return self.intermediate_size
        hidden = int(self.hidden_size * self.mlp_ratio)
        if self.use_swiglu_ffn:  # two thirds, rounded up to a multiple of 8 (as DINOv2 / HF)
            hidden = (int(hidden * 2 / 3) + 7) // 8 * 8
        return hidden

    @property
    def approx_num_params(self) -> int:
        """Parameters of the encoder layers, embeddings and heads, to within a few percent."""
        d, mlp = self.hidden_size, self.mlp_hidden_size
        ph, pw = self.patch_hw
        gh, gw = self.grid_hw
        per_layer = 4 * d * d + (3 if self.use_swiglu_ffn else 2) * d * mlp
        embed = (ph * pw * self.num_channels + gh * gw + self.num_register_tokens + self.num_queries) * d
        return self.num_hidden_layers * per_layer + embed + (self.num_labels + 4) * d

    @property
    def mask_stride(self) -> int:
        """Input pixels per mask-logit pixel (patch 16 with 2 upscale blocks: 4)."""
        return self.patch_hw[0] // (2**self.num_upscale_blocks)

    @property
    def query_start(self) -> int:
        """Index of the first encoder layer that carries queries."""
        return self.num_hidden_layers - self.num_blocks

    # ------------------------------------------------------------------ edits
    def replace(self, **changes: Any) -> VideomtConfig:
        return dataclasses.replace(self, **changes)

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> VideomtConfig:
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
        return cls(**{**PRESETS[name], **overrides})

    # ------------------------------------------------------------------ serialisation
    def to_dict(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in HF_FIELDS + JAX_FIELDS + FAMILY_FIELDS}
        out["id2label"] = {str(k): v for k, v in self.label_names.items()}
        out["extra"] = dict(self.extra)
        return out

    def to_hf_dict(self) -> dict[str, Any]:
        """The dict of an HF `config.json` (model_type videomt)."""
        out: dict[str, Any] = dict(self.extra)
        for k in HF_FIELDS:
            v = getattr(self, k)
            out[k] = list(v) if isinstance(v, tuple) else v
        out["id2label"] = {str(k): v for k, v in self.label_names.items()}
        out["label2id"] = {v: k for k, v in self.label_names.items()}
        out["model_type"] = "videomt"
        out.setdefault("architectures", list(DEFAULT_ARCHITECTURES))
        return out

    @classmethod
    def from_hf_dict(cls, data: Mapping[str, Any], **overrides: Any) -> VideomtConfig:
        data = dict(data)
        model_type = data.get("model_type", "videomt")
        if model_type != "videomt":
            raise ValueError(f"config.json describes model_type {model_type!r}, not 'videomt'")
        jax_side = {k: v for k, v in (data.pop("videomt_jax", {}) or {}).items() if k not in DROPPED_JAX_KEYS}
        kwargs: dict[str, Any] = {k: data.pop(k) for k in HF_FIELDS if k in data}
        id2label = data.pop("id2label", None)
        num_labels = data.pop("num_labels", None)
        data.pop("label2id", None)
        if id2label is None and num_labels is not None:
            id2label = {i: f"LABEL_{i}" for i in range(int(num_labels))}
        kwargs["id2label"] = id2label
        kwargs.update({k: jax_side[k] for k in JAX_FIELDS + FAMILY_FIELDS if k in jax_side})
        if tuple(data.get("architectures") or ()) == DEFAULT_ARCHITECTURES:
            data.pop("architectures")  # written by to_hf_dict itself: not an extra setting
        kwargs["extra"] = {k: v for k, v in data.items() if k != "model_type"}
        kwargs.update(overrides)
        return cls(**kwargs)

    def to_json_file(self, path: str, *, hf_only: bool = False) -> None:
        data = self.to_hf_dict()
        if not hf_only:
            data["videomt_jax"] = {k: getattr(self, k) for k in JAX_FIELDS + FAMILY_FIELDS}
        from videomt_jax.utils.io import atomic_write_text

        atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")

    @classmethod
    def from_json_file(cls, path: str, **overrides: Any) -> VideomtConfig:
        try:
            with open(path) as f:
                data = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path} is not valid JSON: {e}") from e
        return cls.from_hf_dict(data, **overrides)
