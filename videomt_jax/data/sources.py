"""Real video datasets as recipe data kinds: `ytvis` (YouTube-VIS 2019/2021/2022, OVIS), `vipseg`, `vspw`.

A data config names the dataset (its folder layout, class table and the authors' input sizes) and
the root it lives under (`--data-root`: either the folder holding the dataset folder, as the
authors' `$DETECTRON2_DATASETS`, or the dataset folder itself). `config.train_clips(fill)` is a
picklable function of the global clip index alone: clip g of a run is video `perm_e[g mod N]` of
epoch e = g // N (a permutation seeded by (seed, e)), with frames sampled and the clip augmented from
a generator seeded by (seed, g), so a batch is a pure function of (seed, step) and a resumed run
sees exactly the clips of an uninterrupted one. The dataset is opened lazily in each process
(data-loading workers included) and not pickled. A `ytvis` config with a `coco_root` (`--coco-root`)
mixes COCO images made into clips with the videos, as the authors train every YouTube-VIS and OVIS
model (`data/coco.py`, `data/mixing.py`).
"""

from __future__ import annotations

import abc
import functools
import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, ClassVar

import numpy as np

from videomt_jax.data.batching import Clip
from videomt_jax.data.categories import (
    OVIS_CLASSES,
    VSPW_CLASSES,
    VSPW_THING_IDS,
    YTVIS_2019_CLASSES,
    YTVIS_2021_CLASSES,
    things_first,
)
from videomt_jax.data.clip_transforms import SIZE_DIVISIBILITY, ClipAugment, Fill, as_fill, augment_video_clip
from videomt_jax.data.coco import (
    COCO_FOLDER,
    COCO_RATIO,
    COCO_TRAIN_ANNOTATIONS,
    COCO_TRAIN_IMAGES,
    CocoClips,
    coco_labels,
)
from videomt_jax.data.mixing import MixedClips
from videomt_jax.data.vipseg import IMAGES_DIR, PANOPTIC_DIR, VIPSegDataset
from videomt_jax.data.vspw import VSPWDataset
from videomt_jax.data.ytvis import YTVISDataset, sample_frame_indices

# Authors' configs (INPUT.*): shorter-edge choices in training.
YTVIS_MIN_SIZES = (320, 352, 392, 416, 448, 480, 512, 544, 576, 608, 640)
VIDEO_720P_MIN_SIZES = tuple(range(480, 801, 32))  # VIPSeg / VSPW (480, 512, ..., 800)

# dataset -> split -> (annotation file, image folder) relative to the dataset folder (authors' builtin.py)
_YTVIS_SPLITS = {s: (f"{s}.json", f"{s}/JPEGImages") for s in ("train", "valid", "test")}
YTVIS_LAYOUTS: dict[str, dict[str, tuple[str, str]]] = {
    "ytvis_2019": _YTVIS_SPLITS,
    "ytvis_2021": _YTVIS_SPLITS,
    # the official 2022 ground truth: the short and the long videos of valid/ (yt2022_evaluate.py)
    "ytvis_2022": {
        "valid": _YTVIS_SPLITS["valid"],
        "valid_short": ("gt_short.json", "valid/JPEGImages"),
        "valid_long": ("gt_long.json", "valid/JPEGImages"),
    },
    "ovis": {s: (f"annotations/annotations_{s}.json", s) for s in ("train", "valid", "test")},
}
YTVIS_CLASSES = {
    "ytvis_2019": YTVIS_2019_CLASSES,
    "ytvis_2021": YTVIS_2021_CLASSES,
    "ytvis_2022": YTVIS_2021_CLASSES,
    "ovis": OVIS_CLASSES,
}
VIPSEG_FOLDER, VIPSEG_RELEASE = "VIPSeg", "VIPSeg_720P"
VSPW_FOLDER = "VSPW_480p"


def resolve_root(root: str | None, folder: str, what: str) -> str:
    """`root/folder` when that is a directory, else `root` itself (which must exist)."""
    if root is None:
        raise ValueError(
            f"{what} needs a dataset root: pass --data-root DIR (the folder holding {folder}/, or {folder}/ itself)"
        )
    candidate = os.path.join(root, folder)
    if os.path.isdir(candidate):
        return candidate
    if not os.path.isdir(root):
        raise FileNotFoundError(f"{what}: data root {root} is not a directory")
    return root


@dataclass(frozen=True)
class VideoDataConfig(abc.ABC):
    """Fields shared by the real-dataset kinds (defaults: the authors' YouTube-VIS values)."""

    dataset: str = "ytvis_2019"
    root: str | None = None  # set from --data-root
    train_split: str = "train"
    eval_dataset: str | None = None  # dataset evaluated by default (None: `dataset`)
    eval_split: str = "valid"
    num_frames: int = 5  # SAMPLING_FRAME_NUM
    frame_range: int = 2  # SAMPLING_FRAME_RANGE
    min_size_train: tuple[int, ...] = YTVIS_MIN_SIZES
    max_size_train: int = 768
    crop_prob: float = 0.5  # YouTube-VIS / OVIS mapper: random resize + crop branch
    flip_prob: float = 0.5
    canvas: tuple[int, int] = (768, 768)  # the largest training frame (see data/clip_transforms.py)
    # a batch's frames: the largest clip's size rounded up to a multiple of this, at most `canvas`
    # (a bounded set of shapes for the jitted step; `data.batching.batch_canvas`); None: always `canvas`
    bucket: int | None = 128
    min_size_test: int = 448
    max_size_test: int = 1333
    size_divisibility: int = SIZE_DIVISIBILITY
    seed: int = 0

    kind: ClassVar[str] = ""

    def __post_init__(self) -> None:
        if self.num_frames < 1 or self.frame_range < 0:
            raise ValueError(f"need num_frames >= 1 and frame_range >= 0, got {self.num_frames}, {self.frame_range}")
        if min(self.canvas) < 1 or any(c % self.size_divisibility for c in self.canvas):
            raise ValueError(
                f"canvas {self.canvas} must be positive multiples of size_divisibility {self.size_divisibility}"
            )
        if self.bucket is not None and (self.bucket < 1 or self.bucket % self.size_divisibility):
            raise ValueError(
                f"bucket must be None or a positive multiple of {self.size_divisibility}, got {self.bucket}"
            )
        _ = self.augment  # validates the sizes

    @property
    def augment(self) -> ClipAugment:
        return ClipAugment(
            tuple(self.min_size_train),
            self.max_size_train,
            self.canvas,
            self.flip_prob,
            self.crop_prob,
            divisor=self.size_divisibility,
        )

    @property
    def image_hw(self) -> tuple[int, int]:
        return int(self.canvas[0]), int(self.canvas[1])

    @property
    def num_classes(self) -> int:
        return len(self.id2label)

    @property
    @abc.abstractmethod
    def id2label(self) -> dict[int, str]:
        """Contiguous label -> class name (the dataset's table)."""

    @property
    def thing_ids(self) -> tuple[int, ...]:
        return tuple(range(self.num_classes))

    @property
    def stuff_ids(self) -> tuple[int, ...]:
        return ()

    def with_root(self, root: str | None) -> VideoDataConfig:
        return replace(self, root=None if root is None else str(root))

    def open(self, split: str | None = None, dataset: str | None = None) -> Any:
        """The dataset reader of `split` (default the train split); its classes must be the config's."""
        reader = self._open(split or self.train_split, dataset or self.dataset)
        names = {int(k): str(v) for k, v in reader.id2label.items()}
        if names != self.id2label:
            differ = sorted(k for k in set(names) | set(self.id2label) if names.get(k) != self.id2label.get(k))[:5]
            source = getattr(reader, "annotation_file", getattr(reader, "root", "?"))
            raise ValueError(
                f"{source}: categories differ from the {self.kind} {self.dataset!r} table at labels {differ} "
                f"(file: {[names.get(k) for k in differ]}, table: {[self.id2label.get(k) for k in differ]})"
            )
        return reader

    @abc.abstractmethod
    def _open(self, split: str, dataset: str) -> Any:
        """The kind's reader of `split` of `dataset` under the resolved root."""

    def train_videos(self, reader: Any) -> list[int]:
        """Indices of the videos training samples from (all of them by default)."""
        return list(range(len(reader)))

    def train_clips(self, fill: Fill) -> Callable[[int], Clip]:
        """`clips(g) -> Clip`: training clip number g (module docstring), picklable."""
        return TrainClips(self, fill)


@dataclass(frozen=True)
class YTVISDataConfig(VideoDataConfig):
    """YouTube-VIS / OVIS; with `coco_root`, COCO images join training as pseudo-videos (data/coco.py)."""

    coco_root: str | None = None  # set from --coco-root: the folder holding coco/, or coco/ itself
    coco_ratio: float = COCO_RATIO  # COCO clips per video clip
    coco_annotations: str = COCO_TRAIN_ANNOTATIONS  # relative to the COCO folder
    coco_images: str = COCO_TRAIN_IMAGES

    kind: ClassVar[str] = "ytvis"

    def __post_init__(self) -> None:
        for name in (self.dataset, self.eval_dataset or self.dataset):
            if name not in YTVIS_LAYOUTS:
                raise ValueError(f"unknown ytvis dataset {name!r}; choose one of {sorted(YTVIS_LAYOUTS)}")
        if not self.coco_ratio > 0:
            raise ValueError(f"coco_ratio must be > 0, got {self.coco_ratio}")
        super().__post_init__()

    def with_coco_root(self, root: str | None) -> YTVISDataConfig:
        return replace(self, coco_root=None if root is None else str(root))

    def coco_clips(self, fill: Fill) -> CocoClips:
        """The COCO pseudo-clips of this dataset's training (needs `coco_root`)."""
        base = resolve_root(self.coco_root, COCO_FOLDER, "COCO pseudo-videos")
        labels = coco_labels(self.dataset, self.id2label)
        return CocoClips(
            os.path.join(base, self.coco_annotations),
            os.path.join(base, self.coco_images),
            labels,
            num_frames=self.num_frames,
            augment=self.augment,
            fill=fill,
            seed=self.seed,
        )

    def train_clips(self, fill: Fill) -> TrainClips | MixedClips:
        """The video clips alone, or mixed with COCO pseudo-clips at `coco_ratio` : 1 when `coco_root` is set."""
        videos = TrainClips(self, fill)
        if self.coco_root is None:
            return videos
        return MixedClips((videos, self.coco_clips(fill)), (1.0, self.coco_ratio), self.seed)

    @property
    def id2label(self) -> dict[int, str]:
        return dict(enumerate(YTVIS_CLASSES[self.dataset]))

    def _open(self, split: str, dataset: str) -> YTVISDataset:
        if split not in YTVIS_LAYOUTS[dataset]:
            raise ValueError(f"{dataset} has no split {split!r}; choose one of {sorted(YTVIS_LAYOUTS[dataset])}")
        base = resolve_root(self.root, dataset, f"ytvis dataset {dataset}")
        annotations, images = YTVIS_LAYOUTS[dataset][split]
        return YTVISDataset(os.path.join(base, annotations), os.path.join(base, images))

    def train_videos(self, reader: YTVISDataset) -> list[int]:
        # authors: DATALOADER.FILTER_EMPTY_ANNOTATIONS, videos without an instance are not trained on
        return [i for i in range(len(reader)) if reader.num_annotations(i)]


@dataclass(frozen=True)
class VIPSegDataConfig(VideoDataConfig):
    kind: ClassVar[str] = "vipseg"

    @property
    def id2label(self) -> dict[int, str]:
        return dict(enumerate(things_first(VSPW_CLASSES, VSPW_THING_IDS)[1]))

    @property
    def thing_ids(self) -> tuple[int, ...]:
        return tuple(range(len(VSPW_THING_IDS)))

    @property
    def stuff_ids(self) -> tuple[int, ...]:
        return tuple(range(len(VSPW_THING_IDS), len(VSPW_CLASSES)))

    def _open(self, split: str, dataset: str) -> VIPSegDataset:
        base = os.path.join(resolve_root(self.root, VIPSEG_FOLDER, "vipseg"), VIPSEG_RELEASE)
        annotations = os.path.join(base, f"panoptic_gt_VIPSeg_{split}.json")
        return VIPSegDataset(annotations, os.path.join(base, IMAGES_DIR), os.path.join(base, PANOPTIC_DIR))


@dataclass(frozen=True)
class VSPWDataConfig(VideoDataConfig):
    kind: ClassVar[str] = "vspw"

    @property
    def id2label(self) -> dict[int, str]:
        return dict(enumerate(things_first(VSPW_CLASSES, VSPW_THING_IDS)[1]))

    def _open(self, split: str, dataset: str) -> VSPWDataset:
        return VSPWDataset(resolve_root(self.root, VSPW_FOLDER, "vspw"), split, require_masks=split != "test")


DATA_KINDS: dict[str, type[VideoDataConfig]] = {c.kind: c for c in (YTVISDataConfig, VIPSegDataConfig, VSPWDataConfig)}


@functools.lru_cache(maxsize=2)
def _video_order(seed: int, epoch: int, num_videos: int) -> np.ndarray:  # [N] the videos of `epoch` in training order
    return np.random.default_rng([seed, epoch, 23]).permutation(num_videos)


class TrainClips:
    """`clips(g) -> Clip`: training clip number g (module docstring); picklable, opens lazily."""

    def __init__(self, config: VideoDataConfig, fill: Fill):
        self.config, self.fill = config, as_fill(fill)
        self._reader: Any = None
        self._videos: list[int] = []

    def __getstate__(self) -> dict[str, Any]:
        return {"config": self.config, "fill": self.fill}

    def __setstate__(self, state: dict[str, Any]) -> None:
        TrainClips.__init__(self, state["config"], state["fill"])

    def _open(self) -> tuple[Any, list[int]]:
        if self._reader is None:
            reader = self.config.open()
            videos = self.config.train_videos(reader)
            if not videos:
                source = getattr(reader, "annotation_file", getattr(reader, "root", "?"))
                raise ValueError(f"{source}: no video to train on (every video lacks annotations)")
            self._reader, self._videos = reader, videos
        return self._reader, self._videos

    def __call__(self, index: int) -> Clip:
        reader, videos = self._open()
        epoch, position = divmod(int(index), len(videos))
        video = videos[int(_video_order(self.config.seed, epoch, len(videos))[position])]
        rng = np.random.default_rng([self.config.seed, int(index), 29])
        cfg = self.config
        frames = sample_frame_indices(reader.video_length(video), rng, cfg.num_frames, cfg.frame_range)
        clip = reader.load_clip(video, frames)
        return augment_video_clip(clip, cfg.augment, rng, self.fill)
