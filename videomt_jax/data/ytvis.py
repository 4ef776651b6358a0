"""YouTube-VIS-format datasets (YouTube-VIS 2019/2021, OVIS, ...): annotation JSON + frame folders.

Letters: T frames, M instances (annotations of a video), H/W frame size, P predictions.

JSON layout: `videos` [{id, file_names, height, width, length}], `annotations` [{id, video_id,
category_id, segmentations: one per frame (RLE, compressed or not, polygons, or null), iscrowd}],
`categories` [{id, name}]. Category ids are mapped to contiguous labels 0..K-1 in sorted id
order (as the authors do). Crowd annotations are skipped; polygons with fewer than 3 points
count as no segmentation in that frame. Frames are read with Pillow from
`image_root / file_name`. A clip is returned as `videomt_jax.data.batching.Clip` (no semantic or
panoptic map: YouTube-VIS has none), with the annotation ids as track ids.
"""

from __future__ import annotations

import json
import os
import warnings
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pycocotools.mask as mask_utils
from PIL import Image

from videomt_jax.data.batching import Clip

# Authors' training sampler: 5 frames around a reference frame, at most 2 frames away.
DEFAULT_NUM_FRAMES = 5
DEFAULT_FRAME_RANGE = 2


def sample_frame_indices(
    length: int, rng: np.random.Generator, num_frames: int = DEFAULT_NUM_FRAMES, frame_range: int = DEFAULT_FRAME_RANGE
) -> np.ndarray:
    """Frame indices [num_frames] (sorted) of one training clip from a video of `length` frames.

    When num_frames == 2 * frame_range + 1 (the authors' 5 / 2) the clip is a window of
    consecutive frames at a uniform start (every window possible; the authors' sampler never
    picks the last one); a video shorter than the window gives all its frames plus random repeats.
    Otherwise: a uniform reference frame plus num_frames - 1 frames drawn with replacement from
    its neighbours at most `frame_range` away.
    """
    if length < 1 or num_frames < 1 or frame_range < 0:
        raise ValueError(
            f"need length >= 1, num_frames >= 1, frame_range >= 0; got {length}, {num_frames}, {frame_range}"
        )
    if num_frames == 2 * frame_range + 1:
        if num_frames > length:
            extra = rng.choice(length, num_frames - length)
            return np.sort(np.concatenate([np.arange(length), extra])).astype(np.int32)
        start = int(rng.integers(0, length - num_frames + 1))
        return np.arange(start, start + num_frames, dtype=np.int32)
    ref = int(rng.integers(0, length))
    neighbours = [i for i in range(max(0, ref - frame_range), min(length, ref + frame_range + 1)) if i != ref]
    others = rng.choice(neighbours, num_frames - 1) if neighbours else np.full(num_frames - 1, ref)
    return np.sort(np.append(others, ref)).astype(np.int32)


def decode_segmentation(segm: Any, height: int, width: int, where: str = "segmentation") -> np.ndarray | None:
    """One frame's segmentation (RLE, uncompressed RLE, polygons or null) -> [H, W] bool or None.

    Anything malformed (wrong size, counts that are not run lengths, coordinates that are not numbers)
    raises one ValueError that starts with `where`."""
    if segm is None or (isinstance(segm, list) and not segm):
        return None
    try:
        rle = _rle_of(segm, height, width, where)
        if rle is None:
            return None
        with warnings.catch_warnings():  # pycocotools' own numpy-2 deprecation notice, nothing of ours
            warnings.filterwarnings("ignore", message="__array__ implementation", category=DeprecationWarning)
            mask = mask_utils.decode(rle).astype(bool)
    except (TypeError, KeyError, IndexError, ValueError, OverflowError) as e:  # pycocotools on malformed values
        message = str(e)
        raise ValueError(message if message.startswith(where) else f"{where}: corrupt segmentation: {e}") from None
    if mask.shape != (height, width):
        raise ValueError(f"{where}: segmentation decodes to {mask.shape}, the video is {(height, width)}")
    return mask


def rle_string_fits(data: bytes, pixels: int) -> bool:
    """Whether COCO's compressed RLE string `data` is well formed and its runs cover exactly
    `pixels` pixels (pycocotools' `rleFrString`, done first in numpy: that C code trusts the string
    and corrupts memory on a malformed one).

    Each run is a little-endian group of 6-bit digits (char - 48): 5 value bits plus a "more" bit
    (0x20); the last digit's 0x10 bit sign-extends; from the fourth run on, a run adds the one two
    before it."""
    c = np.frombuffer(data, np.uint8).astype(np.int64) - 48
    if not c.size or c.min() < 0 or c.max() > 63 or c[-1] & 0x20:
        return False
    last = (c & 0x20) == 0  # the digit that ends its run
    run = np.concatenate([[0], np.cumsum(last)[:-1]])  # [chars] run index of each digit
    starts = np.flatnonzero(np.concatenate([[True], last[:-1]]))
    k = np.arange(c.size) - starts[run]  # digit position within its run
    if k.max() > 6:  # longer than the 32 bits a count holds
        return False
    values = np.zeros(int(run[-1]) + 1, np.int64)
    np.add.at(values, run, (c & 0x1F) << (5 * k))
    negative = last & ((c & 0x10) != 0)
    values[run[negative]] -= np.left_shift(1, 5 * (k[negative] + 1))
    counts = values.copy()
    counts[3::2] = np.cumsum(values[1::2])[1:]  # run m > 2 adds run m - 2
    counts[4::2] = np.cumsum(values[2::2])[1:]
    return bool(counts.min() >= 0 and counts.max() < 2**32 and counts.sum() == pixels)


def _rle_of(segm: Any, height: int, width: int, where: str) -> Any:
    """The pycocotools RLE of a segmentation, None for polygons of fewer than 3 points."""
    if isinstance(segm, dict):
        size = segm.get("size")
        if not isinstance(size, (list, tuple)) or tuple(size) != (height, width):
            raise ValueError(f"{where}: RLE size {size} does not match the video size {(height, width)}")
        counts = segm.get("counts")
        if isinstance(counts, list):
            if not all(isinstance(c, int) and c >= 0 for c in counts) or sum(counts) != height * width:
                raise ValueError(
                    f"{where}: uncompressed RLE counts must be non-negative ints summing to {height}*{width} pixels"
                )
            return mask_utils.frPyObjects(segm, height, width)
        if isinstance(counts, (str, bytes)):
            data = counts.encode() if isinstance(counts, str) else counts
            if not rle_string_fits(data, height * width):  # pycocotools would read / write out of bounds
                raise ValueError(f"{where}: compressed RLE counts do not describe {height}*{width} pixels")
            return {"size": [height, width], "counts": data}
        raise ValueError(f"{where}: RLE counts must be a list, str or bytes, got {type(counts).__name__}")
    if isinstance(segm, list):
        polygons = [p for p in segm if isinstance(p, list) and len(p) % 2 == 0 and len(p) >= 6]
        if not polygons:
            return None
        if not all(isinstance(x, (int, float)) and not isinstance(x, bool) for p in polygons for x in p):
            raise ValueError(f"{where}: polygon coordinates must be numbers")
        return mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))
    raise ValueError(f"{where}: unsupported segmentation of type {type(segm).__name__}")


def require_keys(record: Any, keys: Sequence[str], where: str) -> None:
    if not isinstance(record, dict):
        raise ValueError(f"{where} must be a JSON object, got {type(record).__name__}")
    missing = [k for k in keys if k not in record]
    if missing:
        raise ValueError(f"{where} lacks the keys {missing}")


def require_list(data: Mapping[str, Any], key: str, where: str) -> list[Any]:
    """data[key], which must be a JSON list."""
    value = data[key]
    if not isinstance(value, list):
        raise ValueError(f"{where}: {key!r} must be a list, got {type(value).__name__}")
    return value


def require_size(record: Mapping[str, Any], where: str, keys: Sequence[str] = ("height", "width")) -> tuple[int, ...]:
    """The record's frame size: positive ints (a negative or string height is named, not a numpy error)."""
    values = tuple(record[k] for k in keys)
    for key, value in zip(keys, values):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{where}: {key} must be a positive int, got {value!r}")
    return values


class YTVISDataset:
    """Random access to the videos of one YouTube-VIS-format annotation file."""

    def __init__(self, annotation_file: str | os.PathLike, image_root: str | os.PathLike):
        self.annotation_file = str(annotation_file)
        self.image_root = str(image_root)
        try:
            with open(annotation_file) as f:
                data = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{annotation_file} is not valid JSON: {e}") from e
        src = str(annotation_file)
        require_keys(data, ("videos", "categories"), src)
        for c in require_list(data, "categories", src):
            require_keys(c, ("id", "name"), f"{src}: category {c}")
            if not isinstance(c["id"], int):
                raise ValueError(f"{src}: category {c['name']!r} has id {c['id']!r}; ids must be ints")
        categories = sorted(data["categories"], key=lambda c: c["id"])
        self.category_ids: list[int] = [int(c["id"]) for c in categories]
        self.category_to_label = {cid: i for i, cid in enumerate(self.category_ids)}
        self.id2label: dict[int, str] = {i: str(c["name"]) for i, c in enumerate(categories)}
        for i, v in enumerate(require_list(data, "videos", src)):
            require_keys(
                v,
                ("id", "file_names", "height", "width"),
                f"{src}: video {v.get('id', f'#{i}') if isinstance(v, dict) else i}",
            )
            where = f"{src}: video {v['id']}"
            if not isinstance(v["id"], int):
                raise ValueError(f"{where}: id must be an int")
            require_size(v, where)
            if not isinstance(v["file_names"], list) or not all(isinstance(f, str) for f in v["file_names"]):
                raise ValueError(f"{where}: file_names must be a list of file names")
            if not v["file_names"]:
                raise ValueError(f"{where} has no frames (empty file_names)")
            if len(v["file_names"]) != v.get("length", len(v["file_names"])):
                raise ValueError(f"{where} lists {len(v['file_names'])} files but length {v['length']}")
        self.videos: list[dict[str, Any]] = sorted(data["videos"], key=lambda v: v["id"])
        known = {v["id"] for v in self.videos}
        self._annotations: dict[int, list[dict[str, Any]]] = defaultdict(list)
        for a in require_list(data, "annotations", src) if "annotations" in data else []:
            require_keys(
                a,
                ("id", "video_id", "category_id", "segmentations"),
                f"{src}: annotation {a.get('id') if isinstance(a, dict) else a}",
            )
            if a["video_id"] not in known:
                raise ValueError(f"{src}: annotation {a['id']} refers to unknown video {a['video_id']}")
            if a["category_id"] not in self.category_to_label:
                raise ValueError(f"{src}: annotation {a['id']} has unknown category {a['category_id']}")
            if not a.get("iscrowd", 0):
                self._annotations[a["video_id"]].append(a)

    def __len__(self) -> int:
        return len(self.videos)

    @property
    def num_classes(self) -> int:
        return len(self.category_ids)

    def num_annotations(self, index: int) -> int:
        """Non-crowd annotations (tracked instances) of video `index`."""
        return len(self._annotations.get(self.videos[index]["id"], []))

    def video_length(self, index: int) -> int:
        return len(self.videos[index]["file_names"])

    def load_frames(self, index: int, frame_indices: Sequence[int] | np.ndarray) -> np.ndarray:  # [T, H, W, 3] uint8
        video = self.videos[index]
        where = f"{self.annotation_file}: video {video['id']}"
        frames = []
        for i in frame_indices:
            path = os.path.join(self.image_root, video["file_names"][i])
            if not os.path.isfile(path):
                raise FileNotFoundError(f"{where}: frame {i} file {path} not found")
            try:
                with Image.open(path) as image:
                    frame = np.asarray(image.convert("RGB"))
            except OSError as e:
                raise ValueError(f"{where}: cannot read frame {i} file {path}: {e}") from None
            if frame.shape[:2] != (video["height"], video["width"]):
                raise ValueError(
                    f"{where}: {path} is {frame.shape[:2]}, the annotation says {(video['height'], video['width'])}"
                )
            frames.append(frame)
        return np.stack(frames)

    def load_clip(self, index: int, frame_indices: Sequence[int] | np.ndarray | None = None) -> Clip:
        """Frames `frame_indices` (default: all) of video `index` with every instance's masks."""
        masks, classes, track_ids, idx = self.load_targets(index, frame_indices)
        return Clip(
            frames=self.load_frames(index, idx),
            masks=masks,
            classes=classes,
            track_ids=track_ids,
            frame_indices=idx,
            video_id=int(self.videos[index]["id"]),
        )

    def load_targets(
        self, index: int, frame_indices: Sequence[int] | np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The ground truth of `load_clip` without the frames: masks [T, M, H, W] bool, classes [M],
        track ids [M] and the frame indices [T] (int32)."""
        if not 0 <= index < len(self):
            raise IndexError(f"video index {index} out of range for {len(self)} videos")
        video = self.videos[index]
        length, h, w = self.video_length(index), int(video["height"]), int(video["width"])
        idx = np.arange(length) if frame_indices is None else np.asarray(frame_indices)  # [T]
        if idx.size and (idx.min() < 0 or idx.max() >= length):
            raise IndexError(f"frame indices {idx.tolist()} out of range for video {video['id']} of {length} frames")
        annotations = self._annotations.get(video["id"], [])
        masks = np.zeros((len(idx), len(annotations), h, w), bool)  # [T, M, H, W]
        for m, a in enumerate(annotations):
            where = f"{self.annotation_file}: video {video['id']} annotation {a['id']}"
            if not isinstance(a["segmentations"], list) or len(a["segmentations"]) != length:
                got = (
                    len(a["segmentations"])
                    if isinstance(a["segmentations"], list)
                    else type(a["segmentations"]).__name__
                )
                raise ValueError(f"{where} has {got} segmentations for {length} frames")
            for t, i in enumerate(idx):
                mask = decode_segmentation(a["segmentations"][i], h, w, where=f"{where} frame {i}")
                if mask is not None:
                    masks[t, m] = mask
        classes = np.array([self.category_to_label[a["category_id"]] for a in annotations], np.int32)
        track_ids = np.array([a["id"] for a in annotations], np.int32)
        return masks, classes, track_ids, idx.astype(np.int32)

    def sample_clip(
        self,
        index: int,
        rng: np.random.Generator,
        num_frames: int = DEFAULT_NUM_FRAMES,
        frame_range: int = DEFAULT_FRAME_RANGE,
    ) -> Clip:
        """A training clip of video `index` (frames chosen by `sample_frame_indices`)."""
        return self.load_clip(index, sample_frame_indices(self.video_length(index), rng, num_frames, frame_range))

    def results_json(
        self, index: int, scores: np.ndarray, labels: np.ndarray, masks: np.ndarray
    ) -> list[dict[str, Any]]:
        """Video-level predictions of video `index` in the YouTube-VIS results format.

        scores [P] float, labels [P] contiguous class ids, masks [T, P, H, W] bool over all
        frames of the video. Returns one dict per prediction with per-frame compressed RLE.
        """
        video = self.videos[index]
        t, p = self.video_length(index), len(scores)
        if masks.shape != (t, p, video["height"], video["width"]) or len(labels) != p:
            raise ValueError(
                f"results_json: masks {masks.shape} / labels {len(labels)} do not match "
                f"(T={t}, P={p}, H={video['height']}, W={video['width']})"
            )
        results = []
        for k in range(p):
            frames = np.asfortranarray(masks[:, k].transpose(1, 2, 0).astype(np.uint8))  # [H, W, T]
            rles = mask_utils.encode(frames)
            for rle in rles:
                rle["counts"] = rle["counts"].decode("ascii")
            results.append(
                {
                    "video_id": int(video["id"]),
                    "score": float(scores[k]),
                    "category_id": self.category_ids[int(labels[k])],
                    "segmentations": rles,
                }
            )
        return results
