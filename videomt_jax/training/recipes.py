"""Training recipes: model config + train config + data, by name or from a JSON file.

A recipe file is JSON: {"model": {...VideomtConfig fields or "preset": name},
"train": {...TrainConfig fields}, "data": {"kind": "synthetic", ...SyntheticConfig fields} or
{"kind": "ytvis", "annotations": path, "image_root": path, "image_size": n}}.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

from videomt_jax.config import VideomtConfig
from videomt_jax.data.augment import AugmentConfig, augment_clip
from videomt_jax.data.batching import Batch, add_stuff_instances, collate
from videomt_jax.data.synthetic import SyntheticConfig, make_clip
from videomt_jax.training.config import TrainConfig


@dataclass(frozen=True)
class Recipe:
    name: str
    model: VideomtConfig
    train: TrainConfig
    data: SyntheticConfig
    augment: AugmentConfig | None = None
    max_instances: int = 12  # target slots per frame (things + stuff)
    panoptic_targets: bool = True  # stuff regions are targets too (semantic / panoptic output)

    def batches(self, split: str = "train") -> Callable[[int], Batch]:
        """`batches(step)`: a pure function of the step (resumable, reproducible)."""
        data, bs, aug = self.data, self.train.batch_size, self.augment

        def get(step: int) -> Batch:
            clips = []
            for j in range(bs):
                index = step * bs + j
                clip = make_clip(data, split, index)
                if self.panoptic_targets:
                    clip = add_stuff_instances(clip, data.stuff_ids)
                if aug is not None:
                    clip = augment_clip(clip, aug, np.random.default_rng([data.seed, index, 7]))
                clips.append(clip)
            return collate(clips, num_labels=data.num_classes, max_instances=self.max_instances)

        return get


def _tiny() -> Recipe:
    data = SyntheticConfig(image_size=64, num_frames=3)
    model = VideomtConfig(
        hidden_size=128,
        num_hidden_layers=6,
        num_attention_heads=4,
        num_blocks=2,
        image_size=64,
        patch_size=8,
        num_queries=24,
        num_register_tokens=2,
        num_upscale_blocks=2,
        train_num_points=1024,
        id2label=data.id2label,
    )
    train = TrainConfig(
        steps=1500,
        batch_size=4,
        num_frames=3,
        learning_rate=6e-4,  # from scratch: no pretrained backbone, so no small encoder LR
        layer_decay=1.0,
        warmup_head=100,
        warmup_encoder=100,
        grad_clip=1.0,
        compute_dtype="float32",  # bf16 is emulated (slow) on CPU
        checkpoint_every=250,
        log_every=25,
    )
    return Recipe("synthetic-tiny", model, train, data, AugmentConfig(flip_prob=0.5, scale_range=(0.8, 1.2)))


RECIPES: dict[str, Callable[[], Recipe]] = {"synthetic-tiny": _tiny}


def load_recipe(name_or_path: str, **train_overrides: Any) -> Recipe:
    """A recipe by name (`RECIPES`) or from a JSON file; `train_overrides` edit its TrainConfig."""
    if name_or_path in RECIPES:
        recipe = RECIPES[name_or_path]()
    else:
        path = Path(name_or_path)
        if not path.is_file():
            raise FileNotFoundError(f"{name_or_path!r} is neither a recipe name {sorted(RECIPES)} nor a file")
        spec = json.loads(path.read_text())
        base = RECIPES[spec.get("base", "synthetic-tiny")]()
        model_spec = dict(spec.get("model", {}))
        preset = model_spec.pop("preset", None)
        data = replace(base.data, **spec.get("data", {}))
        model_kwargs = {"id2label": data.id2label, **model_spec}
        model = VideomtConfig.preset(preset, **model_kwargs) if preset else base.model.replace(**model_kwargs)
        train = replace(base.train, **spec.get("train", {}))
        recipe = replace(base, name=path.stem, model=model, train=train, data=data)
    if train_overrides:
        recipe = replace(recipe, train=replace(recipe.train, **train_overrides))
    return recipe
