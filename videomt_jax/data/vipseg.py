"""VIPSeg video panoptic segmentation, in its 720p release layout (the authors' `datasets/README.md`).

Letters: T frames, M segments (targets), H/W frame size.

    VIPSeg_720P/images/<video_id>/<frame>.jpg
    VIPSeg_720P/panomasksRGB/<video_id>/<frame>.png      RGB-encoded segment ids: R + 256 G + 256^2 B
    VIPSeg_720P/panoptic_gt_VIPSeg_{train,val,test}.json

JSON: `categories` [{id, name, isthing}], `videos` [{video_id, images: [{id, file_name, height, width}]}],
`annotations` [{video_id, annotations: [{image_id, file_name, segments_info: [{id, category_id,
iscrowd}]}]}] (one entry per frame, in frame order). Labels are contiguous with the things first
(category id order), then the stuff, as the authors number them. A clip's targets are its segments
that are not crowd: a thing segment is one instance tracked by its segment id, a stuff segment one
region of its class. `Clip.panoptic` holds class * LABEL_DIVISOR + instance (things numbered
1, 2, ... in segment-id order within the clip; stuff 0; VOID_ID where the PNG has no listed,
non-crowd segment) and `Clip.semantic` the class map (IGNORE_INDEX there).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image

from videomt_jax.data.batching import Clip
from videomt_jax.data.ytvis import require_keys, require_list, require_size
from videomt_jax.ops.labels import IGNORE_INDEX, LABEL_DIVISOR, VOID_ID

IMAGES_DIR = "images"
PANOPTIC_DIR = "panomasksRGB"


def rgb_to_id(rgb: np.ndarray) -> np.ndarray:
    """[..., 3] uint8 -> int32 segment ids R + 256 G + 256^2 B (panopticapi's rgb2id)."""
    rgb = rgb.astype(np.int32)
    return rgb[..., 0] + 256 * rgb[..., 1] + 256 * 256 * rgb[..., 2]


def read_rgb(path: str, where: str) -> np.ndarray:  # [H, W, 3] uint8
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{where}: file {path} not found")
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except OSError as e:
        raise ValueError(f"{where}: cannot read image {path}: {e}") from None


class VIPSegDataset:
    """Random access to the videos of one VIPSeg split (`root` holds images/, panomasksRGB/, the JSON)."""

    def __init__(
        self, annotation_file: str | os.PathLike, image_root: str | os.PathLike, panoptic_root: str | os.PathLike
    ):
        self.annotation_file = str(annotation_file)
        self.image_root, self.panoptic_root = str(image_root), str(panoptic_root)
        src = self.annotation_file
        try:
            with open(src) as f:
                data = json.load(f)
        except FileNotFoundError:
            raise FileNotFoundError(f"VIPSeg annotation file {src} not found") from None
        except json.JSONDecodeError as e:
            raise ValueError(f"{src} is not valid JSON: {e}") from None
        require_keys(data, ("categories", "videos", "annotations"), src)
        for c in require_list(data, "categories", src):
            require_keys(c, ("id", "name"), f"{src}: category {c}")
        cats = sorted(data["categories"], key=lambda c: c["id"])
        things = [c for c in cats if c.get("isthing")]
        stuff = [c for c in cats if not c.get("isthing")]
        self.category_ids = [int(c["id"]) for c in things + stuff]  # contiguous label -> category id
        self.category_to_label = {cid: i for i, cid in enumerate(self.category_ids)}
        self.id2label = {i: str(c["name"]) for i, c in enumerate(things + stuff)}
        self.num_things = len(things)
        images: dict[tuple[Any, Any], dict[str, Any]] = {}  # (video id, image id) -> image record
        for n, v in enumerate(require_list(data, "videos", src)):
            require_keys(v, ("video_id",), f"{src}: videos entry {n}")
            where = f"{src}: video {v['video_id']!r}"
            for im in require_list(v, "images", where) if "images" in v else []:
                require_keys(im, ("id", "file_name", "height", "width"), f"{where} image {im}")
                require_size(im, f"{where} image {im['id']!r}")
                images[(v["video_id"], im["id"])] = im
        for n, record in enumerate(require_list(data, "annotations", src)):
            require_keys(record, ("video_id",), f"{src}: annotations entry {n}")
        self.videos: list[dict[str, Any]] = []
        for record in sorted(data["annotations"], key=lambda a: str(a["video_id"])):
            vid = record["video_id"]
            where = f"{src}: video {vid!r}"
            frames = require_list(record, "annotations", where) if "annotations" in record else []
            if not frames:
                raise ValueError(f"{where} has no frames")
            entries = []
            for frame in frames:
                require_keys(frame, ("image_id", "file_name"), f"{where} frame {frame}")
                key = (vid, frame["image_id"])
                if key not in images:
                    raise ValueError(f"{where} frame {frame['image_id']!r} is not listed under videos")
                segments = (
                    require_list(frame, "segments_info", f"{where} frame {frame['file_name']!r}")
                    if ("segments_info" in frame)
                    else []
                )
                for seg in segments:
                    require_keys(seg, ("id", "category_id"), f"{where} frame {frame['file_name']!r} segment {seg}")
                    if seg["category_id"] not in self.category_to_label:
                        known = f"{min(self.category_ids)}..{max(self.category_ids)}"
                        raise ValueError(
                            f"{where} frame {frame['file_name']!r} segment {seg['id']} has unknown "
                            f"category id {seg['category_id']} (known: {known})"
                        )
                stem = os.path.splitext(images[key]["file_name"])[0]
                entries.append(
                    {
                        "image": os.path.join(self.image_root, str(vid), stem + ".jpg"),
                        "panoptic": os.path.join(self.panoptic_root, str(vid), frame["file_name"]),
                        "segments": segments,
                    }
                )
            first = images[(vid, frames[0]["image_id"])]
            self.videos.append(
                {"video_id": vid, "frames": entries, "height": int(first["height"]), "width": int(first["width"])}
            )

    def __len__(self) -> int:
        return len(self.videos)

    @property
    def num_classes(self) -> int:
        return len(self.category_ids)

    @property
    def thing_ids(self) -> tuple[int, ...]:
        return tuple(range(self.num_things))

    @property
    def stuff_ids(self) -> tuple[int, ...]:
        return tuple(range(self.num_things, self.num_classes))

    def video_length(self, index: int) -> int:
        return len(self.videos[index]["frames"])

    def load_frames(self, index: int, frame_indices: Sequence[int] | np.ndarray) -> np.ndarray:  # [T, H, W, 3] uint8
        video = self.videos[index]
        where = f"{self.annotation_file}: video {video['video_id']!r}"
        return np.stack([read_rgb(video["frames"][i]["image"], where) for i in frame_indices])

    def load_clip(
        self, index: int, frame_indices: Sequence[int] | np.ndarray | None = None, with_targets: bool = True
    ) -> Clip:
        """Frames `frame_indices` (default: all) of video `index` with its segments as targets."""
        if not 0 <= index < len(self):
            raise IndexError(f"video index {index} out of range for {len(self)} videos")
        video = self.videos[index]
        where = f"{self.annotation_file}: video {video['video_id']!r}"
        idx = np.arange(self.video_length(index)) if frame_indices is None else np.asarray(frame_indices)
        frames = self.load_frames(index, idx)
        t, h, w = frames.shape[:3]
        if not with_targets:
            empty = np.zeros((t, 0, h, w), bool)
            return Clip(frames, empty, np.zeros(0, np.int32), np.zeros(0, np.int32), frame_indices=idx.astype(np.int32))
        ids = np.empty((t, h, w), np.int32)  # [T, H, W] segment ids
        seg_class: dict[int, int] = {}  # segment id -> label (first non-crowd mention in the clip)
        for k, i in enumerate(idx):
            entry = video["frames"][i]
            png = read_rgb(entry["panoptic"], where)
            if png.shape[:2] != (h, w):
                raise ValueError(
                    f"{where}: {entry['panoptic']} is {png.shape[:2]}, its frame {entry['image']} {(h, w)}"
                )
            ids[k] = rgb_to_id(png)
            for seg in entry["segments"]:
                if not seg.get("iscrowd", 0):
                    seg_class.setdefault(int(seg["id"]), self.category_to_label[seg["category_id"]])
        present = set(np.unique(ids).tolist())
        seg_ids = [s for s in sorted(seg_class) if s in present]
        classes = np.array([seg_class[s] for s in seg_ids], np.int32)
        masks = ids[:, None] == np.array(seg_ids, np.int32)[None, :, None, None]  # [T, M, H, W]
        semantic = np.full((t, h, w), IGNORE_INDEX, np.int32)
        panoptic = np.full((t, h, w), VOID_ID, np.int32)
        instance_no: dict[int, int] = {}
        for m, c in enumerate(classes.tolist()):
            inst = 0 if c >= self.num_things else instance_no.setdefault(c, 0) + 1
            if c < self.num_things:
                instance_no[c] = inst
            semantic[masks[:, m]] = c
            panoptic[masks[:, m]] = c * LABEL_DIVISOR + inst
        return Clip(
            frames=frames,
            masks=masks,
            classes=classes,
            track_ids=np.array(seg_ids, np.int32),
            semantic=semantic,
            panoptic=panoptic,
            frame_indices=idx.astype(np.int32),
        )
