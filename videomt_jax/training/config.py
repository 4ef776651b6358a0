"""`TrainConfig`: every training default, once. Authors' recipe values unless noted."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

EVAL_CLIPS = 32  # held-out clips scored by `evaluate_model` / `videomt-jax eval`
EVAL_BATCH = 4  # clips per forward pass there
# The compute dtype has one source, the model config (`VideomtConfig.dtype`), in training as in inference.
REMOVED_COMPUTE_DTYPE = (
    "TrainConfig.compute_dtype was removed: training computes in the model config's dtype "
    "(VideomtConfig.dtype; in a recipe file, \"model\": {\"dtype\": ...}). Recipe files that still say "
    "\"train\": {\"compute_dtype\": ...} are read as that model dtype (docs/training.md)"
)


# field annotation -> (accepted Python types, name in errors); bool is refused where a number is meant
FIELD_TYPES: dict[str, tuple[tuple[type, ...], str]] = {
    "int": ((int,), "an int"),
    "float": ((int, float), "a number"),
    "bool": ((bool,), "true or false"),
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
    grad_clip: float = 0.01  # global-norm clipping of the full model (detectron2 "full_model", 0.01)
    adam_b1: float = 0.9
    adam_b2: float = 0.999
    adam_eps: float = 1e-8
    freeze_backbone: bool = False  # train only queries, query updater and heads
    deep_supervision: bool = True
    drop_last_aux: bool = True  # authors: the prediction entering the last query block is not in the loss
    # Authors: Hungarian matching per frame (tracking emerges from a pretrained image model).
    # True: one assignment per clip, so each query learns to follow one instance (training from scratch).
    match_per_clip: bool = False
    seed: int = 0
    log_every: int = 10
    checkpoint_every: int = 500
    keep_checkpoints: int = 3

    def __post_init__(self) -> None:
        wrong_type = [_type_problem(f.name, f.type, getattr(self, f.name)) for f in dataclasses.fields(self)]
        if any(wrong_type):  # before the range checks, which would fail on e.g. "five" < 1
            raise ValueError("invalid TrainConfig: " + "; ".join(p for p in wrong_type if p))
        problems = []
        for name in ("steps", "batch_size", "num_frames", "log_every", "checkpoint_every", "keep_checkpoints"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("warmup_head", "warmup_encoder"):
            if getattr(self, name) < 0:
                problems.append(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.learning_rate < 0 or self.weight_decay < 0 or self.grad_clip < 0:
            problems.append("learning_rate, weight_decay and grad_clip must be >= 0")
        if not 0 < self.layer_decay <= 1:
            problems.append(f"layer_decay must be in (0, 1], got {self.layer_decay}")
        if problems:
            raise ValueError("invalid TrainConfig: " + "; ".join(problems))

    def replace(self, **changes: Any) -> "TrainConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        if "compute_dtype" in data:
            raise ValueError(REMOVED_COMPUTE_DTYPE)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown TrainConfig keys: {unknown}")
        return cls(**data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)
