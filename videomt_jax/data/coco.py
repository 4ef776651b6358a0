"""COCO images as pseudo-videos, mixed into YouTube-VIS / OVIS training as the authors do.

Letters: T frames, M instances, H/W image size, N images.

The authors train every YouTube-VIS (2019, 2021, 2022) and OVIS model on the video dataset and on
COCO at a 1:1 ratio (`coco2ytvis2019_train` + `ytvis_2019_train`, ...), each COCO image turned into
a T-frame clip by their `CocoClipDatasetMapper`. Here:

Reading a COCO instances JSON (`images` [{id, file_name, height, width}], `annotations` [{id,
image_id, category_id, segmentation (polygons or RLE), iscrowd}], `categories` [{id, name}]):
- a category reaches the model only through the video dataset's map (`categories.COCO_MAPS`:
  COCO id -> dataset id -> contiguous label); annotations of other categories are dropped (the
  authors filter the file the same way, `convert_coco2ytvis.py`), as are crowd annotations and
  polygon lists without a polygon of at least 3 points (detectron2's COCO loader);
- images left without annotations are not trained on (FILTER_EMPTY_ANNOTATIONS);
- mapped categories must carry COCO's names (`categories.COCO_NAMES`), so a file in another
  numbering is an error that names it.

A pseudo-clip (the mapper's augmentation, every random choice drawn once per clip):
1-3. crop branch (probability `crop_prob`), shorter-edge resize and flip of the video datasets
     (`clip_transforms.augment_geometry`, same sizes: the authors' INPUT.PSEUDO equals INPUT);
4.   rotation: T angles uniform in [-15, 15] degrees, sorted ascending (descending with probability
     0.5), about one centre drawn uniformly in [0.4, 0.6] x [0.4, 0.6] of the width and height;
     frame t is the image rotated by angle t (counter-clockwise for positive angles, as OpenCV;
     bilinear, black outside the image as OpenCV's default border), so the objects turn smoothly
     over the clip;
5.   padded to a multiple of 32 (cropped to the largest canvas) like every training clip (`clip_transforms.fit_canvas`).
Instance m is annotation m of the image in every frame; where the rotation takes it out of the
frame it is absent there (an empty mask), as the authors' `filter_empty_instances`. One difference:
the authors rotate the polygons and rasterise them; here the decoded masks are rotated (nearest
neighbour), which differs only along the boundary.

`CocoClips(g)` is clip g: image `perm_e[g mod N]` of epoch e = g // N (a permutation seeded by
(seed, e)), augmented from a generator seeded by (seed, g), so it is a pure function of g; the
annotation file is read lazily in each process and kept compactly (polygons as float arrays).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from videomt_jax.data.batching import Clip
from videomt_jax.data.categories import COCO_MAPS, COCO_NAMES
from videomt_jax.data.clip_transforms import ClipAugment, Fill, as_fill, augment_geometry, fit_canvas
from videomt_jax.data.ytvis import decode_segmentation, require_list, require_size

# The authors' layout under $DETECTRON2_DATASETS (their builtin.py): coco/annotations/*.json, coco/train2017/
COCO_FOLDER = "coco"
COCO_TRAIN_ANNOTATIONS = "annotations/instances_train2017.json"
COCO_TRAIN_IMAGES = "train2017"
COCO_RATIO = 1.0  # COCO clips per video clip (DATASET_RATIO [1.0, 1.0])

Segmentation = tuple[np.ndarray, ...] | dict[str, Any]  # polygons [2K] float64 each, or an RLE dict


@dataclass(frozen=True)
class PseudoMotion:
    """Step 4 of the module docstring (the authors' `RandomRotationClip` of INPUT.PSEUDO.AUGMENTATIONS)."""

    max_angle: float = 15.0  # degrees: angles uniform in [-max_angle, max_angle]
    center_range: tuple[float, float] = (0.4, 0.6)  # rotation centre, a fraction of the width / height
    reverse_prob: float = 0.5  # angles descending instead of ascending

    def __post_init__(self) -> None:
        lo, hi = self.center_range
        if self.max_angle < 0 or not 0 <= lo <= hi <= 1 or not 0 <= self.reverse_prob <= 1:
            raise ValueError(
                f"PseudoMotion needs max_angle >= 0, 0 <= centre low <= high <= 1 and reverse_prob in [0, 1]; "
                f"got {self.max_angle}, {self.center_range}, {self.reverse_prob}"
            )


def coco_labels(dataset: str, id2label: Mapping[int, str]) -> dict[int, int]:
    """COCO category id -> contiguous label of `dataset` (whose categories are numbered from 1, in `id2label` order)."""
    if dataset not in COCO_MAPS:
        raise ValueError(f"no COCO category map for dataset {dataset!r}; maps exist for {sorted(COCO_MAPS)}")
    labels = {coco: target - 1 for coco, target in COCO_MAPS[dataset].items()}
    bad = sorted(c for c, label in labels.items() if label not in id2label)
    if bad:
        raise ValueError(f"COCO map of {dataset!r}: categories {bad} map outside its {len(id2label)} classes")
    return labels


def _missing(record: Any, keys: Sequence[str]) -> list[str]:
    return [k for k in keys if not isinstance(record, dict) or k not in record]


def _check(record: Any, keys: Sequence[str], what: str) -> None:
    """An error naming `what` (file and record kind) and the record's id when `record` lacks any of `keys`."""
    missing = _missing(record, keys)
    if missing:
        raise ValueError(f"{what} {record.get('id') if isinstance(record, dict) else record} lacks {missing}")


def _compact(segm: Any, where: str) -> Segmentation | None:
    """A COCO segmentation as kept in memory; None when no valid polygon is left (the instance is dropped)."""
    if isinstance(segm, dict):
        if _missing(segm, ("size", "counts")):
            raise ValueError(f"{where}: RLE segmentation lacks 'size' or 'counts'")
        return segm
    if not isinstance(segm, list):
        raise ValueError(f"{where}: segmentation must be polygons (a list) or an RLE dict, got {type(segm).__name__}")
    valid = [p for p in segm if isinstance(p, list) and len(p) % 2 == 0 and len(p) >= 6]  # >= 3 points
    try:
        polygons = tuple(np.asarray(p, np.float64) for p in valid)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{where}: polygon coordinates must be numbers: {e}") from None
    return polygons or None


class CocoInstances:
    """The images of a COCO instances file that have annotations of mapped categories (module docstring)."""

    def __init__(self, annotation_file: str | os.PathLike, image_root: str | os.PathLike, labels: Mapping[int, int]):
        self.annotation_file, self.image_root = str(annotation_file), str(image_root)
        where = self.annotation_file
        if not os.path.isfile(where):
            raise FileNotFoundError(f"COCO annotation file {where} not found")
        try:
            with open(where) as f:
                data = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{where} is not valid JSON: {e}") from None
        missing = _missing(data, ("images", "annotations", "categories"))
        if missing:
            raise ValueError(f"{where} is not a COCO instances file: it lacks {missing}")
        names: dict[int, str] = {}
        for c in require_list(data, "categories", where):
            _check(c, ("id", "name"), f"{where}: category")
            names[int(c["id"])] = str(c["name"])
        wrong = {i: names[i] for i in labels if i in names and names[i] != COCO_NAMES.get(i, names[i])}
        if wrong:
            raise ValueError(
                f"{where}: categories {wrong} are not COCO's (expected { ({i: COCO_NAMES[i] for i in wrong}) }); "
                "the category maps need COCO's ids"
            )
        images: dict[int, tuple[str, int, int]] = {}
        for im in require_list(data, "images", where):
            _check(im, ("id", "file_name", "height", "width"), f"{where}: image")
            height, width = require_size(im, f"{where}: image {im['id']}")
            images[int(im["id"])] = (str(im["file_name"]), height, width)
        kept: dict[int, list[tuple[int, Segmentation]]] = {}
        for a in require_list(data, "annotations", where):
            _check(a, ("id", "image_id", "category_id", "segmentation"), f"{where}: annotation")
            ann = f"{where}: annotation {a['id']}"
            if a["image_id"] not in images:
                raise ValueError(f"{ann} refers to unknown image {a['image_id']}")
            if a["category_id"] not in names:
                raise ValueError(f"{ann} has category {a['category_id']}, which the file's categories lack")
            if a.get("iscrowd", 0) or a["category_id"] not in labels:
                continue
            segm = _compact(a["segmentation"], ann)
            if segm is not None:
                kept.setdefault(int(a["image_id"]), []).append((int(labels[a["category_id"]]), segm))
        self.image_ids: list[int] = sorted(kept)
        self._images = [images[i] for i in self.image_ids]
        self._annotations = [kept[i] for i in self.image_ids]
        self.instances_per_image = np.array([len(a) for a in self._annotations], np.int64)  # [N]
        self.num_annotations = int(self.instances_per_image.sum())

    def __len__(self) -> int:
        return len(self.image_ids)

    def load_image(self, index: int) -> np.ndarray:  # [H, W, 3] uint8
        file_name, h, w = self._images[index]
        path = os.path.join(self.image_root, file_name)
        where = f"{self.annotation_file}: image {self.image_ids[index]}"
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{where}: file {path} not found")
        try:
            with Image.open(path) as image:
                frame = np.asarray(ImageOps.exif_transpose(image).convert("RGB"))  # detectron2 read_image
        except OSError as e:
            raise ValueError(f"{where}: cannot read {path}: {e}") from None
        if frame.shape[:2] != (h, w):
            raise ValueError(f"{where}: {path} is {frame.shape[:2]}, the annotation says {(h, w)}")
        return frame

    def load(self, index: int) -> Clip:
        """Image `index` as a 1-frame clip with its instances (track id = annotation order)."""
        if not 0 <= index < len(self):
            raise IndexError(f"image index {index} out of range for {len(self)} images")
        _, h, w = self._images[index]
        annotations = self._annotations[index]
        masks = np.zeros((1, len(annotations), h, w), bool)  # [1, M, H, W]
        for m, (_, segm) in enumerate(annotations):
            raw = [p.tolist() for p in segm] if isinstance(segm, tuple) else segm
            where = f"{self.annotation_file}: image {self.image_ids[index]} instance {m}"
            mask = decode_segmentation(raw, h, w, where=where)
            if mask is not None:
                masks[0, m] = mask
        return Clip(
            frames=self.load_image(index)[None],
            masks=masks,
            classes=np.array([label for label, _ in annotations], np.int32),
            track_ids=np.arange(len(annotations), dtype=np.int32),
            frame_indices=np.zeros(1, np.int32),
            video_id=self.image_ids[index],
        )


def _rotation(angle: float, center: tuple[float, float]) -> tuple[float, ...]:
    """Pillow AFFINE coefficients (output -> input point) of OpenCV's rotation by `angle` degrees about
    `center` (x, y), in continuous pixel coordinates (pixel centres at +0.5)."""
    c, s = float(np.cos(np.deg2rad(angle))), float(np.sin(np.deg2rad(angle)))
    cx, cy = center
    return (c, -s, cx - c * cx + s * cy, s, c, cy - s * cx - c * cy)


def rotate_frame(frame: np.ndarray, angle: float, center: tuple[float, float]) -> np.ndarray:  # [H, W, 3]
    """Bilinear rotation of a uint8 image, black where no source pixel is."""
    h, w = frame.shape[:2]
    image = Image.fromarray(frame).transform(
        (w, h),
        Image.Transform.AFFINE,
        _rotation(angle, center),
        resample=Image.Resampling.BILINEAR,
        fillcolor=(0, 0, 0),
    )
    return np.asarray(image)


def rotate_masks(masks: np.ndarray, angle: float, center: tuple[float, float]) -> np.ndarray:  # [M, H, W]
    """Nearest-neighbour rotation of boolean masks (Pillow's NEAREST rule: the source pixel holding the
    output pixel's centre), False where no source pixel is."""
    h, w = masks.shape[-2:]
    a, b, c, d, e, f = _rotation(angle, center)
    ys, xs = np.mgrid[0:h, 0:w] + 0.5  # [H, W] output pixel centres
    sx, sy = np.floor(a * xs + b * ys + c), np.floor(d * xs + e * ys + f)
    inside = (sx >= 0) & (sx < w) & (sy >= 0) & (sy < h)
    sx, sy = np.where(inside, sx, 0).astype(np.intp), np.where(inside, sy, 0).astype(np.intp)
    return masks[:, sy, sx] & inside


def pseudo_clip(
    image: Clip, num_frames: int, augment: ClipAugment, motion: PseudoMotion, rng: np.random.Generator, fill: Fill
) -> Clip:
    """A 1-frame clip -> a `num_frames` training clip (steps 1-5 of the module docstring)."""
    if image.num_frames != 1:
        raise ValueError(f"pseudo_clip takes a 1-frame clip, got {image.num_frames} frames")
    clip = augment_geometry(image, augment, rng)
    angles = np.sort(rng.uniform(-motion.max_angle, motion.max_angle, num_frames))
    h, w = clip.image_hw
    rel_x, rel_y = rng.uniform(*motion.center_range, 2)
    if rng.random() < motion.reverse_prob:
        angles = angles[::-1]
    center = (float(rel_x) * w, float(rel_y) * h)
    clip = clip._replace(
        frames=np.stack([rotate_frame(clip.frames[0], a, center) for a in angles]),  # [T, H, W, 3]
        masks=np.stack([rotate_masks(clip.masks[0], a, center) for a in angles]),  # [T, M, H, W]
        frame_indices=np.zeros(num_frames, np.int32),
    )
    return fit_canvas(clip, augment.canvas, rng, fill, augment.divisor)


class CocoClips:
    """`clips(g) -> Clip`: pseudo-clip number g of a COCO file (module docstring); picklable, opens lazily."""

    def __init__(
        self,
        annotation_file: str,
        image_root: str,
        labels: Mapping[int, int],
        *,
        num_frames: int,
        augment: ClipAugment,
        fill: Fill,
        motion: PseudoMotion = PseudoMotion(),
        seed: int = 0,
    ):
        if num_frames < 1:
            raise ValueError(f"num_frames must be >= 1, got {num_frames}")
        self._args = (annotation_file, image_root, dict(labels))
        self.num_frames, self.augment, self.motion, self.seed = num_frames, augment, motion, seed
        self.fill = as_fill(fill)
        self._reader: CocoInstances | None = None
        self._epoch: tuple[int, np.ndarray] = (-1, np.zeros(0, np.int64))  # (epoch, its order), cached

    def __getstate__(self) -> dict[str, Any]:  # the configuration only: each process reads the file itself
        return {k: v for k, v in self.__dict__.items() if k not in ("_reader", "_epoch")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, _reader=None, _epoch=(-1, np.zeros(0, np.int64)))

    @property
    def reader(self) -> CocoInstances:
        if self._reader is None:
            reader = CocoInstances(*self._args)
            if not len(reader):
                raise ValueError(f"{reader.annotation_file}: no image has an annotation of a mapped category")
            self._reader = reader
        return self._reader

    def _order(self, epoch: int) -> np.ndarray:  # [N] the images of `epoch` in training order
        if self._epoch[0] != epoch:
            self._epoch = (epoch, np.random.default_rng([self.seed, epoch, 37]).permutation(len(self.reader)))
        return self._epoch[1]

    def __call__(self, index: int) -> Clip:
        epoch, position = divmod(int(index), len(self.reader))
        image = self.reader.load(int(self._order(epoch)[position]))
        rng = np.random.default_rng([self.seed, int(index), 39])
        return pseudo_clip(image, self.num_frames, self.augment, self.motion, rng, self.fill)
