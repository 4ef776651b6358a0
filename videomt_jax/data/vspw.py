"""VSPW video semantic segmentation, in its 480p release layout (the authors' `datasets/README.md`).

Letters: T frames, M classes present in a clip (the targets), H/W frame size.

    VSPW_480p/{train,val,test}.txt          one video name per line
    VSPW_480p/data/<video>/origin/*.jpg     frames (sorted by name)
    VSPW_480p/data/<video>/mask/*.png       label maps, same stems (absent for the test split)

A mask PNG stores category id + 1 (1..124) per pixel; 0 and 255 are unlabeled (IGNORE_INDEX), as the
authors read it. Labels are contiguous with the things first (`categories.things_first`), so a clip's
targets are one mask per class present in it (track id = label), `Clip.semantic` is the label map.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
from PIL import Image

from videomt_jax.data.batching import Clip
from videomt_jax.data.categories import VSPW_CLASSES, VSPW_THING_IDS, things_first
from videomt_jax.data.vipseg import read_rgb
from videomt_jax.ops.labels import IGNORE_INDEX

FRAMES_DIR, MASKS_DIR = "origin", "mask"
RAW_UNLABELED = (0, 255)  # raw PNG values without a label


def raw_to_label_table() -> np.ndarray:
    """[256] int32: raw PNG value -> contiguous label (IGNORE_INDEX for unlabeled, -1 for invalid)."""
    order, _ = things_first(VSPW_CLASSES, VSPW_THING_IDS)
    table = np.full(256, -1, np.int32)
    table[list(RAW_UNLABELED)] = IGNORE_INDEX
    for label, category in enumerate(order):
        table[category + 1] = label
    return table


class VSPWDataset:
    """Random access to the videos of one VSPW split (`root` holds `<split>.txt` and `data/`)."""

    def __init__(self, root: str | os.PathLike, split: str, require_masks: bool = True):
        self.root, self.split = str(root), split
        listing = os.path.join(self.root, f"{split}.txt")
        if not os.path.isfile(listing):
            raise FileNotFoundError(f"VSPW split file {listing} not found")
        with open(listing) as f:
            names = [line.strip() for line in f if line.strip()]
        order, labels = things_first(VSPW_CLASSES, VSPW_THING_IDS)
        self.id2label = dict(enumerate(labels))
        self.num_things = len(VSPW_THING_IDS)
        self._table = raw_to_label_table()
        self.videos: list[dict] = []
        for name in names:
            where = f"{listing}: video {name!r}"
            frame_dir = os.path.join(self.root, "data", name, FRAMES_DIR)
            if not os.path.isdir(frame_dir):
                raise FileNotFoundError(f"{where}: frame folder {frame_dir} not found")
            frames = sorted(f for f in os.listdir(frame_dir) if not f.startswith("."))
            if not frames:
                raise ValueError(f"{where}: frame folder {frame_dir} is empty")
            mask_dir = os.path.join(self.root, "data", name, MASKS_DIR)
            masks = None
            if os.path.isdir(mask_dir):
                masks = [os.path.join(mask_dir, os.path.splitext(f)[0] + ".png") for f in frames]
            elif require_masks:
                raise FileNotFoundError(f"{where}: label folder {mask_dir} not found")
            self.videos.append({"name": name, "frames": [os.path.join(frame_dir, f) for f in frames], "masks": masks})

    def __len__(self) -> int:
        return len(self.videos)

    @property
    def num_classes(self) -> int:
        return len(self.id2label)

    def video_length(self, index: int) -> int:
        return len(self.videos[index]["frames"])

    def read_labels(self, index: int, frame: int) -> np.ndarray:
        """Label map [H, W] int32 (contiguous labels, IGNORE_INDEX unlabeled) of one frame."""
        video = self.videos[index]
        where = f"{self.root}/{self.split}.txt: video {video['name']!r}"
        if video["masks"] is None:
            raise FileNotFoundError(f"{where}: no label folder")
        path = video["masks"][frame]
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{where}: label map {path} not found")
        try:
            with Image.open(path) as image:
                raw = np.asarray(image)
        except OSError as e:
            raise ValueError(f"{where}: cannot read label map {path}: {e}") from None
        raw = raw[..., 0] if raw.ndim == 3 else raw  # the authors read channel 0 of an RGB decode
        labels = self._table[raw.astype(np.uint8)] if raw.dtype == np.uint8 else np.full(raw.shape, -1, np.int32)
        if (labels < 0).any():
            bad = sorted(set(np.unique(raw[labels < 0]).tolist()))[:8]
            raise ValueError(f"{where}: label map {path} holds unknown category values {bad} (expected 0..124 or 255)")
        return labels

    def load_clip(
        self, index: int, frame_indices: Sequence[int] | np.ndarray | None = None, with_targets: bool = True
    ) -> Clip:
        """Frames `frame_indices` (default: all) of video `index`, one target per class present."""
        if not 0 <= index < len(self):
            raise IndexError(f"video index {index} out of range for {len(self)} videos")
        video = self.videos[index]
        where = f"{self.root}/{self.split}.txt: video {video['name']!r}"
        idx = np.arange(self.video_length(index)) if frame_indices is None else np.asarray(frame_indices)
        frames = np.stack([read_rgb(video["frames"][i], where) for i in idx])
        t, h, w = frames.shape[:3]
        if not with_targets:
            empty = np.zeros((t, 0, h, w), bool)
            return Clip(frames, empty, np.zeros(0, np.int32), np.zeros(0, np.int32), frame_indices=idx.astype(np.int32))
        semantic = np.stack([self.read_labels(index, int(i)) for i in idx])  # [T, H, W]
        if semantic.shape[1:] != (h, w):
            raise ValueError(f"{where}: label maps are {semantic.shape[1:]}, frames {(h, w)}")
        classes = np.array([c for c in np.unique(semantic).tolist() if c != IGNORE_INDEX], np.int32)
        masks = semantic[:, None] == classes[None, :, None, None]  # [T, M, H, W]
        return Clip(frames, masks, classes, classes.copy(), semantic=semantic, frame_indices=idx.astype(np.int32))
