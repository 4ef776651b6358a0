"""`TrainConfig`: every training default, once. Authors' recipe values unless noted."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

from videomt_jax.config import DTYPES as COMPUTE_DTYPES

EVAL_CLIPS = 32  # held-out clips scored by `evaluate_model` / `videomt-jax eval`
EVAL_BATCH = 4  # clips per forward pass there


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
    compute_dtype: str = "bfloat16"  # params stay float32
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
        if self.compute_dtype not in COMPUTE_DTYPES:
            problems.append(f"compute_dtype must be one of {COMPUTE_DTYPES}, got {self.compute_dtype!r}")
        if problems:
            raise ValueError("invalid TrainConfig: " + "; ".join(problems))

    def replace(self, **changes: Any) -> "TrainConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown TrainConfig keys: {unknown}")
        return cls(**data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)
