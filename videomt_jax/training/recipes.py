"""Training recipes: model config + train config + data, by name or from a JSON file.

A recipe file is JSON (every key optional; anything not given comes from the base recipe):
    {"base": "synthetic-tiny",                      # a name in RECIPES
     "model": {"preset": "small", ...VideomtConfig fields},   # or fields on top of the base model
     "train": {...TrainConfig fields},
     "data": {"kind": "synthetic", ...SyntheticConfig fields},
     "augment": {...AugmentConfig fields} or null,
     "processor": {...VideoProcessor fields, e.g. "mean", "std"},  # the model's pixel normalisation
     "max_instances": 12, "panoptic_targets": true,
     "init": "runs/x/model"}                        # what `--init` should load (a path, URL or Hub id), or null
The model's labels default to the data's classes. `train.num_frames` and `data.num_frames` are one
value: give either (or both, equal). The compute dtype is the model's (`"model": {"dtype": ...}`);
an older recipe's `"train": {"compute_dtype": ...}` is read as that model dtype. The processor
(default `VideoProcessor.from_config(model)`) normalises the training frames and is saved beside
the trained model, so inference and evaluation normalise the same way. `Recipe.to_dict()` writes
the fully resolved form, which loads back to the same recipe. Data kinds (`DATA_KINDS`): `synthetic`,
and the real datasets of `videomt_jax.data.sources` (`ytvis`, `vipseg`, `vspw`), whose config holds
the authors' augmentation and whose `root` comes from `--data-root`; the paper's recipes are in
`paper_recipes.py`.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from videomt_jax.config import VideomtConfig
from videomt_jax.data.augment import AugmentConfig, augment_clip
from videomt_jax.data.batching import Batch, Clip, ClipNumbering, add_stuff_instances, collate
from videomt_jax.data.sources import DATA_KINDS as VIDEO_DATA_KINDS
from videomt_jax.data.sources import VideoDataConfig
from videomt_jax.data.synthetic import SyntheticConfig, make_clip
from videomt_jax.processing import VideoProcessor, default_processor
from videomt_jax.training.config import CLIP_SUM, TrainConfig, move_legacy_keys
from videomt_jax.training.paper_recipes import PAPER_RECIPES
from videomt_jax.utils.structs import dataclass_from_dict, json_tuples

RECIPE_KEYS = (
    "name",
    "base",
    "model",
    "train",
    "data",
    "augment",
    "processor",
    "max_instances",
    "panoptic_targets",
    "init",
)
# recipe "data" kind -> its config class
DATA_KINDS: dict[str, type] = {"synthetic": SyntheticConfig, **VIDEO_DATA_KINDS}


def data_kind(data: Any) -> str:
    """The `DATA_KINDS` name of a data config."""
    return next(k for k, cls in DATA_KINDS.items() if type(data) is cls)


@dataclass(frozen=True)
class Recipe:
    name: str
    model: VideomtConfig
    train: TrainConfig
    data: SyntheticConfig | VideoDataConfig
    augment: AugmentConfig | None = None  # synthetic data only (real datasets: the authors' mapper, data config)
    max_instances: int = 12  # target slots per frame (things + stuff)
    panoptic_targets: bool = True  # stuff regions are targets too (semantic / panoptic output)
    processor: VideoProcessor | None = None  # pixel normalisation; None: `default_processor(model)`
    # The weights training is meant to start from (`--init`): a path, URL or Hub id; None: random init.
    # The paper's recipes name the authors' checkpoints (paper_recipes.py).
    init: str | None = None

    def __post_init__(self) -> None:
        if self.processor is None:
            object.__setattr__(self, "processor", default_processor(self.model))
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
        if isinstance(self.data, VideoDataConfig) and self.augment is not None:
            raise ValueError(
                f"recipe {self.name!r}: {data_kind(self.data)} data is augmented by its data config "
                '(the authors\' mapper); set "augment": null'
            )

    @property
    def _processor(self) -> VideoProcessor:
        """`processor`, which `__post_init__` always sets (the model's default when none is given)."""
        if self.processor is None:
            raise ValueError(f"recipe {self.name!r} has no processor: build it with Recipe(...), which sets one")
        return self.processor

    def clip_fn(self, split: str = "train") -> Callable[[int], Clip]:
        """`clip_fn(index)`: augmented training clip number `index`, a pure function of it (picklable)."""
        data, aug = self.data, self.augment
        if isinstance(data, VideoDataConfig):
            if split != "train":
                raise ValueError(
                    f"recipe {self.name!r}: {data_kind(data)} data trains on its train split, not {split!r}"
                )
            return data.train_clips(self._processor.pixel_mean)

        def make(index: int) -> Clip:
            clip = make_clip(data, split, index)
            if self.panoptic_targets:
                clip = add_stuff_instances(clip, data.stuff_ids)
            if aug is not None:
                rng = np.random.default_rng([data.seed, index, 7])
                clip = augment_clip(clip, aug, rng, fill=self._processor.pixel_mean)
            return clip

        return make

    def collate(self, clips: list[Clip]) -> Batch:
        """Clips -> one training `Batch` (targets padded to `max_instances` and bit-packed, frames uint8:
        the train step normalises them with `self.processor`, passed to `fit` / `make_program`)."""
        data = self.data
        # video data: clips of their own sizes, on shape buckets of at most the largest canvas
        bucket, cap = (data.bucket, data.image_hw) if isinstance(data, VideoDataConfig) else (None, None)
        return collate(
            clips,
            num_labels=data.num_classes,
            max_instances=self.max_instances,
            processor=self.processor,
            bucket=bucket,
            cap=cap,
        )

    def batches(
        self, split: str = "train", *, process_index: int = 0, process_count: int = 1
    ) -> Callable[[int], Batch]:
        """`batches(step)`: a pure function of the step (resumable, reproducible).

        With several processes, process p gets clips [p * b, (p + 1) * b) of the step's global
        batch (b = train.batch_size / process_count), so the processes together see the same clips
        as one process would.
        """
        numbering = ClipNumbering(self.train.batch_size, process_index, process_count)
        make = self.clip_fn(split)

        def get(step: int) -> Batch:
            return self.collate([make(numbering.number(step, j)) for j in range(numbering.local)])

        return get

    def with_train(self, **changes: Any) -> Recipe:
        """A copy with TrainConfig fields changed (num_frames changes the data's too)."""
        data = replace(self.data, num_frames=changes["num_frames"]) if "num_frames" in changes else self.data
        return replace(self, train=replace(self.train, **changes), data=data)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "model": self.model.to_dict(),
            "train": self.train.to_dict(),
            "data": {"kind": data_kind(self.data), **dataclasses.asdict(self.data)},
            "augment": None if self.augment is None else dataclasses.asdict(self.augment),
            "processor": dataclasses.asdict(self._processor),
            "max_instances": self.max_instances,
            "panoptic_targets": self.panoptic_targets,
            "init": self.init,
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
        dtype="float32",  # compute dtype, training too: bf16 is emulated (slow) on CPU
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
        # The optimizer the shipped model was trained with (before the authors' became the default):
        # weight decay on kernels only, the final LayerNorm in the head group.
        decay_params="kernels",
        final_norm_group="heads",
        # From scratch, one assignment per clip on summed costs trained better than the authors' rule
        # (video AP 0.537 vs 0.481, both stages retrained; README, "The shipped model").
        matching=CLIP_SUM,
        # The auxiliary prediction's heads and loss doubled the CPU step (0.36 vs 0.18 s). In the same
        # 27 minutes, 6000 steps without it gave video AP 0.537; 3000 with it (and 1024 points) 0.418.
        deep_supervision=False,
        checkpoint_every=250,
        log_every=25,
    )
    return Recipe("synthetic-tiny", model, train, data, AugmentConfig(flip_prob=0.5, scale_range=(0.8, 1.2)))


def _tiny_long() -> Recipe:
    # Stage 2 of the shipped model: start from `synthetic-tiny`'s weights (`--init`) and teach the
    # recurrence to hold over long videos. Stage 1 propagates the raw query tokens through an
    # unconstrained linear updater and only ever applies it twice (3-frame clips); its carried
    # queries grow without bound (norm 30 at frame 0, ~3000 at frame 63) and it stops segmenting
    # after ~12 frames. Here the propagated queries are the final LayerNorm's output (the authors'
    # NORM_QUERIES), so their norm is fixed, and the clips are twice as long (docs/training.md).
    base = _tiny()
    long = base.with_train(
        num_frames=6, steps=800, learning_rate=3e-4, warmup_head=50, warmup_encoder=50, checkpoint_every=100
    )
    return replace(long, name="synthetic-tiny-long", model=base.model.replace(norm_queries=True))


def _paper(name: str) -> Callable[[], Recipe]:
    """The paper's recipe `name`, built from its parts (paper_recipes.py)."""
    return lambda: Recipe(name, **PAPER_RECIPES[name]()._asdict())


RECIPES: dict[str, Callable[[], Recipe]] = {
    "synthetic-tiny": _tiny,
    "synthetic-tiny-long": _tiny_long,
    **{name: _paper(name) for name in PAPER_RECIPES},  # the authors' configs
}


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
    kind = data_spec.pop("kind", data_kind(base.data))
    if kind not in DATA_KINDS:
        raise ValueError(f"recipe {name!r}: unknown data kind {kind!r} (supported: {list(DATA_KINDS)})")
    data_cls = DATA_KINDS[kind]
    base_data = dataclasses.asdict(base.data) if isinstance(base.data, data_cls) else {}
    train_spec = dict(spec.get("train") or {})
    model_spec = dict(spec.get("model") or {})
    move_legacy_keys({"train": train_spec, "model": model_spec}, f"recipe {name!r}")
    frames = {k: s["num_frames"] for k, s in (("train", train_spec), ("data", data_spec)) if "num_frames" in s}
    if len(set(frames.values())) > 1:
        raise ValueError(f"recipe {name!r}: train.num_frames and data.num_frames differ: {frames}")
    if frames:
        train_spec["num_frames"] = data_spec["num_frames"] = next(iter(frames.values()))
    data = dataclass_from_dict(data_cls, {**base_data, **data_spec}, f"recipe {name!r} data")
    try:
        train = TrainConfig.from_dict({**base.train.to_dict(), **train_spec})
    except ValueError as e:  # name the recipe and its section: "recipe 'x' train: steps must be an int"
        raise ValueError(f"recipe {name!r} train: {e}") from None
    preset = model_spec.pop("preset", None)
    model_kwargs = {"id2label": data.id2label, **{k: json_tuples(v) for k, v in model_spec.items()}}
    try:
        model = VideomtConfig.preset(preset, **model_kwargs) if preset else base.model.replace(**model_kwargs)
    except TypeError as e:
        raise ValueError(f"recipe {name!r}: bad model keys: {e}") from None
    augment = base.augment if isinstance(base.data, data_cls) else None  # a new data kind brings its own
    if "augment" in spec:
        aug = spec["augment"]
        augment = None if aug is None else dataclass_from_dict(AugmentConfig, aug, f"recipe {name!r} augment")
    processor_spec = {k: json_tuples(v) for k, v in (spec.get("processor") or {}).items()}
    unknown = sorted(set(processor_spec) - {f.name for f in dataclasses.fields(VideoProcessor)})
    if unknown:
        raise ValueError(f"recipe {name!r} processor: unknown VideoProcessor keys {unknown}")
    processor = default_processor(model, **processor_spec)
    init = spec.get("init", base.init)
    if init is not None and not isinstance(init, str):
        raise ValueError(f"recipe {name!r}: init must be a path, URL or Hub id (a string) or null, got {init!r}")
    return replace(
        base,
        name=spec.get("name", name),
        model=model,
        train=train,
        data=data,
        augment=augment,
        processor=processor,
        max_instances=int(spec.get("max_instances", base.max_instances)),
        panoptic_targets=bool(spec.get("panoptic_targets", base.panoptic_targets)),
        init=init,
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
