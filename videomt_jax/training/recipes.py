"""Training recipes: model config + train config + data, by name or from a JSON file.

A recipe file is JSON (every key optional; anything not given comes from the base recipe):
    {"base": "synthetic-tiny",                      # a name in RECIPES
     "model": {"preset": "small", ...VideomtConfig fields},   # or fields on top of the base model
     "train": {...TrainConfig fields},
     "data": {"kind": "synthetic", ...SyntheticConfig fields},
     "augment": {...AugmentConfig fields} or null,
     "max_instances": 12, "panoptic_targets": true}
The model's labels default to the data's classes. `train.num_frames` and `data.num_frames` are one
value: give either (or both, equal). `Recipe.to_dict()` writes the fully resolved form, which loads
back to the same recipe. Only synthetic data is built from recipes; for YouTube-VIS build a
`batches(step)` function from `videomt_jax.data.ytvis.YTVISDataset` and call `fit` directly.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from videomt_jax.config import VideomtConfig
from videomt_jax.data.augment import AugmentConfig, augment_clip
from videomt_jax.data.batching import Batch, add_stuff_instances, collate
from videomt_jax.data.synthetic import SyntheticConfig, make_clip
from videomt_jax.training.config import TrainConfig

RECIPE_KEYS = ("name", "base", "model", "train", "data", "augment", "max_instances", "panoptic_targets")
DATA_KINDS = ("synthetic",)


def _tuples(value: Any) -> Any:
    """JSON lists -> tuples (the frozen configs hold tuples)."""
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


def dataclass_from_dict(cls: type, data: Mapping[str, Any], where: str) -> Any:
    """`cls(**data)` with lists turned into tuples and unknown keys named in the error."""
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"{where}: unknown {cls.__name__} keys {unknown}; known: {sorted(known)}")
    return cls(**{k: _tuples(v) for k, v in data.items()})


@dataclass(frozen=True)
class Recipe:
    name: str
    model: VideomtConfig
    train: TrainConfig
    data: SyntheticConfig
    augment: AugmentConfig | None = None
    max_instances: int = 12  # target slots per frame (things + stuff)
    panoptic_targets: bool = True  # stuff regions are targets too (semantic / panoptic output)

    def __post_init__(self) -> None:
        if self.train.num_frames != self.data.num_frames:
            raise ValueError(
                f"recipe {self.name!r}: train.num_frames={self.train.num_frames} differs from "
                f"data.num_frames={self.data.num_frames}"
            )
        if self.model.num_labels != self.data.num_classes:
            raise ValueError(
                f"recipe {self.name!r}: the model has {self.model.num_labels} labels but the data "
                f"{self.data.num_classes} classes {self.data.id2label}"
            )
        if self.max_instances < 1:
            raise ValueError(f"recipe {self.name!r}: max_instances must be >= 1, got {self.max_instances}")

    def batches(
        self, split: str = "train", *, process_index: int = 0, process_count: int = 1
    ) -> Callable[[int], Batch]:
        """`batches(step)`: a pure function of the step (resumable, reproducible).

        With several processes, process p gets clips [p * b, (p + 1) * b) of the step's global
        batch (b = train.batch_size / process_count), so the processes together see the same clips
        as one process would.
        """
        if not 0 <= process_index < process_count or self.train.batch_size % process_count:
            raise ValueError(
                f"batch size {self.train.batch_size} cannot be split over {process_count} processes "
                f"(process index {process_index})"
            )
        data, aug = self.data, self.augment
        global_bs, local_bs = self.train.batch_size, self.train.batch_size // process_count

        def get(step: int) -> Batch:
            clips = []
            for j in range(local_bs):
                index = step * global_bs + process_index * local_bs + j
                clip = make_clip(data, split, index)
                if self.panoptic_targets:
                    clip = add_stuff_instances(clip, data.stuff_ids)
                if aug is not None:
                    clip = augment_clip(clip, aug, np.random.default_rng([data.seed, index, 7]))
                clips.append(clip)
            return collate(clips, num_labels=data.num_classes, max_instances=self.max_instances)

        return get

    def with_train(self, **changes: Any) -> "Recipe":
        """A copy with TrainConfig fields changed (num_frames changes the data's too)."""
        data = replace(self.data, num_frames=changes["num_frames"]) if "num_frames" in changes else self.data
        return replace(self, train=replace(self.train, **changes), data=data)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "model": self.model.to_dict(),
            "train": self.train.to_dict(),
            "data": {"kind": "synthetic", **dataclasses.asdict(self.data)},
            "augment": None if self.augment is None else dataclasses.asdict(self.augment),
            "max_instances": self.max_instances,
            "panoptic_targets": self.panoptic_targets,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


def _tiny() -> Recipe:
    # Trained on 3-frame clips (twice the steps of 5-frame ones in the same time; each query still
    # learns to keep its instance); the shipped model is evaluated on 5-frame clips.
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
        train_num_points=512,  # half the 32x32 mask grid; 1024 cost 25% more per step
        id2label=data.id2label,
    )
    train = TrainConfig(
        steps=6000,  # 27 minutes on a quiet 2-core CPU
        batch_size=4,
        num_frames=3,
        learning_rate=6e-4,  # from scratch: no pretrained backbone, so no small encoder LR
        layer_decay=1.0,
        warmup_head=100,
        warmup_encoder=100,
        grad_clip=1.0,
        compute_dtype="float32",  # bf16 is emulated (slow) on CPU
        match_per_clip=True,  # no pretrained image model: teach each query to keep its instance
        # The auxiliary prediction's heads and loss doubled the CPU step (0.36 vs 0.18 s). In the same
        # 27 minutes, 6000 steps without it gave video AP 0.537; 3000 with it (and 1024 points) 0.418.
        deep_supervision=False,
        checkpoint_every=250,
        log_every=25,
    )
    return Recipe("synthetic-tiny", model, train, data, AugmentConfig(flip_prob=0.5, scale_range=(0.8, 1.2)))


RECIPES: dict[str, Callable[[], Recipe]] = {"synthetic-tiny": _tiny}


def recipe_from_dict(spec: Mapping[str, Any], name: str = "custom") -> Recipe:
    """A recipe from its JSON form (module docstring); errors name the offending keys."""
    unknown = sorted(set(spec) - set(RECIPE_KEYS))
    if unknown:
        raise ValueError(f"recipe {name!r}: unknown keys {unknown}; known: {list(RECIPE_KEYS)}")
    base_name = spec.get("base", "synthetic-tiny")
    if base_name not in RECIPES:
        raise ValueError(f"recipe {name!r}: unknown base {base_name!r}; choose one of {sorted(RECIPES)}")
    base = RECIPES[base_name]()
    data_spec = dict(spec.get("data") or {})
    kind = data_spec.pop("kind", "synthetic")
    if kind not in DATA_KINDS:
        raise ValueError(
            f"recipe {name!r}: data kind {kind!r} is not built from recipes (supported: {list(DATA_KINDS)}); "
            "for YouTube-VIS call videomt_jax.training.loop.fit with your own batches(step)"
        )
    train_spec = dict(spec.get("train") or {})
    frames = {k: s["num_frames"] for k, s in (("train", train_spec), ("data", data_spec)) if "num_frames" in s}
    if len(set(frames.values())) > 1:
        raise ValueError(f"recipe {name!r}: train.num_frames and data.num_frames differ: {frames}")
    if frames:
        train_spec["num_frames"] = data_spec["num_frames"] = next(iter(frames.values()))
    data = dataclass_from_dict(SyntheticConfig, {**dataclasses.asdict(base.data), **data_spec}, f"recipe {name!r} data")
    train = TrainConfig.from_dict({**base.train.to_dict(), **train_spec})
    model_spec = dict(spec.get("model") or {})
    preset = model_spec.pop("preset", None)
    model_kwargs = {"id2label": data.id2label, **{k: _tuples(v) for k, v in model_spec.items()}}
    try:
        model = VideomtConfig.preset(preset, **model_kwargs) if preset else base.model.replace(**model_kwargs)
    except TypeError as e:
        raise ValueError(f"recipe {name!r}: bad model keys: {e}") from None
    augment = base.augment
    if "augment" in spec:
        aug = spec["augment"]
        augment = None if aug is None else dataclass_from_dict(AugmentConfig, aug, f"recipe {name!r} augment")
    return replace(
        base,
        name=spec.get("name", name),
        model=model,
        train=train,
        data=data,
        augment=augment,
        max_instances=int(spec.get("max_instances", base.max_instances)),
        panoptic_targets=bool(spec.get("panoptic_targets", base.panoptic_targets)),
    )


def load_recipe(name_or_path: str | Path, **train_overrides: Any) -> Recipe:
    """A recipe by name (`RECIPES`) or from a JSON file; `train_overrides` edit its TrainConfig."""
    if str(name_or_path) in RECIPES:
        recipe = RECIPES[str(name_or_path)]()
    else:
        path = Path(name_or_path)
        if not path.is_file():
            raise FileNotFoundError(f"{str(name_or_path)!r} is neither a recipe name {sorted(RECIPES)} nor a file")
        try:
            spec = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"recipe file {path} is not valid JSON: {e}") from None
        if not isinstance(spec, dict):
            raise ValueError(f"recipe file {path} must hold a JSON object, got {type(spec).__name__}")
        recipe = recipe_from_dict(spec, path.stem)
    if train_overrides:
        recipe = recipe.with_train(**train_overrides)
    return recipe
