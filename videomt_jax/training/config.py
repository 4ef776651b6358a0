"""`TrainConfig`: every training default, once. Authors' recipe values unless noted."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

from videomt_jax.modeling.layers import REMAT_POLICIES
from videomt_jax.training.param_groups import DECAY_PARAMS, FINAL_NORM_GROUPS

# Keys that moved between a recipe file's sections: (old section, old key) -> (new section, new key).
# The compute dtype has one source, the model config (`VideomtConfig.dtype`), in training as in
# inference; rematerialisation is a training setting, never saved with the model.
MOVED_RECIPE_KEYS: dict[tuple[str, str], tuple[str, str]] = {
    ("train", "compute_dtype"): ("model", "dtype"),
    ("model", "remat"): ("train", "remat"),
}


def move_legacy_keys(sections: dict[str, dict[str, Any]], where: str) -> None:
    """Read older recipe files: each `MOVED_RECIPE_KEYS` entry moves to its new home, in place.

    `sections` maps "train" / "model" to that section's dict. A value given in both places must agree."""
    for (old_section, old_key), (new_section, new_key) in MOVED_RECIPE_KEYS.items():
        if old_key not in sections[old_section]:
            continue
        value = sections[old_section].pop(old_key)
        if sections[new_section].setdefault(new_key, value) != value:
            raise ValueError(
                f"{where}: {old_section}.{old_key}={value!r} and {new_section}.{new_key}="
                f"{sections[new_section][new_key]!r} differ; the setting lives in "
                f"{new_section}.{new_key}: keep only that"
            )


# How predictions are matched to targets (`matcher.MATCHING_RULES`): the authors' rule (one
# assignment per clip, each object matched at its first visible frame), Hugging Face's (per frame), or
# one assignment per clip on costs summed over the frames with per-frame targets (the shipped
# synthetic model's, from scratch: video AP 0.537 against 0.481 with the authors' rule, README).
FIRST_APPEARANCE, PER_FRAME, CLIP_SUM = "first_appearance", "per_frame", "clip_sum"
MATCHINGS = (FIRST_APPEARANCE, PER_FRAME, CLIP_SUM)
DEFAULT_MATCHING = FIRST_APPEARANCE
REMOVED_MATCH_PER_CLIP = (
    f"TrainConfig.match_per_clip was removed: set matching to one of {list(MATCHINGS)} "
    f"(default {DEFAULT_MATCHING!r}, the authors'; match_per_clip true is {CLIP_SUM!r}, false {PER_FRAME!r})"
)


# field annotation -> (accepted Python types, name in errors); bool is refused where a number is meant
FIELD_TYPES: dict[str, tuple[tuple[type, ...], str]] = {
    "int": ((int,), "an int"),
    "float": ((int, float), "a number"),
    "bool": ((bool,), "true or false"),
    "str": ((str,), "a string"),
    "float | None": ((int, float, type(None)), "a number or null"),
}


def _type_problem(name: str, annotation: Any, value: Any) -> str | None:
    """`name must be an int, got 'five' (str)` when `value` does not fit the field's type, else None."""
    accepted, what = FIELD_TYPES[annotation if isinstance(annotation, str) else annotation.__name__]
    if isinstance(value, accepted) and (annotation == "bool" or not isinstance(value, bool)):
        return None
    return f"{name} must be {what}, got {value!r} ({type(value).__name__})"


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 40_000  # 40k for ViT-S/B, 60k for ViT-L
    batch_size: int = 8  # clips per step
    num_frames: int = 5  # frames per clip
    learning_rate: float = 1e-4
    weight_decay: float = 0.05
    layer_decay: float = 0.6  # encoder block i gets lr * layer_decay^(L-1-i)
    warmup_head: int = 500  # non-encoder params warm up over these steps (encoder frozen meanwhile)
    warmup_encoder: int = 1000  # then the encoder warms up over these
    poly_power: float = 0.9
    # Optimizer as the authors' trainer runs it (training/optim.py): no clipping (their YAML's 0.01 is never
    # read), AdamW decay on every parameter, the final LayerNorm in the encoder group at factor 1 (DINOv2).
    grad_clip: float | None = None  # global-norm clipping of the full model; None: none
    decay_params: str = "all"  # which parameters weight decay applies to: param_groups.DECAY_PARAMS
    final_norm_group: str = "encoder"  # the encoder's final LayerNorm's LR group: param_groups.FINAL_NORM_GROUPS
    adam_b1: float = 0.9
    adam_b2: float = 0.999
    adam_eps: float = 1e-8
    freeze_backbone: bool = False  # train only queries, query updater and heads
    deep_supervision: bool = True
    drop_last_aux: bool = True  # authors: the prediction entering the last query block is not in the loss
    # one of MATCHINGS: "first_appearance" (authors'), "per_frame" (HF's), "clip_sum"
    matching: str = DEFAULT_MATCHING
    # Rematerialisation of encoder blocks and heads in the backward pass (`modeling.layers.REMAT_POLICIES`):
    # same numbers, less memory, more compute. Not a model setting: never saved with the model.
    remat: str = "none"
    # Devices that split the parameters, gradients and optimizer state between them (the mesh's "fsdp"
    # axis, `step.train_mesh`); 1: every device holds all of it (data parallel). It must divide the
    # device count; the batch is split over all devices either way. Same numbers, less memory per device.
    fsdp: int = 1
    seed: int = 0
    log_every: int = 10
    checkpoint_every: int = 500
    keep_checkpoints: int = 3

    def __post_init__(self) -> None:
        wrong_type = [_type_problem(f.name, f.type, getattr(self, f.name)) for f in dataclasses.fields(self)]
        if any(wrong_type):  # before the range checks, which would fail on e.g. "five" < 1
            raise ValueError("invalid TrainConfig: " + "; ".join(p for p in wrong_type if p))
        problems = []
        for name in ("steps", "batch_size", "num_frames", "fsdp", "log_every", "checkpoint_every", "keep_checkpoints"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("warmup_head", "warmup_encoder"):
            if getattr(self, name) < 0:
                problems.append(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.learning_rate < 0 or self.weight_decay < 0:
            problems.append("learning_rate and weight_decay must be >= 0")
        if self.grad_clip is not None and not self.grad_clip > 0:
            problems.append(f"grad_clip must be > 0, or None (null) for no clipping, got {self.grad_clip}")
        for name, table in (("decay_params", DECAY_PARAMS), ("final_norm_group", FINAL_NORM_GROUPS)):
            if getattr(self, name) not in table:
                problems.append(f"{name} must be one of {sorted(table)}, got {getattr(self, name)!r}")
        if self.remat not in REMAT_POLICIES:
            problems.append(f"remat must be one of {sorted(REMAT_POLICIES)}, got {self.remat!r}")
        if self.matching not in MATCHINGS:
            problems.append(f"matching must be one of {list(MATCHINGS)}, got {self.matching!r}")
        if not 0 < self.layer_decay <= 1:
            problems.append(f"layer_decay must be in (0, 1], got {self.layer_decay}")
        if problems:
            raise ValueError("invalid TrainConfig: " + "; ".join(problems))

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        if "match_per_clip" in data:
            raise ValueError(REMOVED_MATCH_PER_CLIP)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown TrainConfig keys: {unknown}")
        return cls(**data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)
