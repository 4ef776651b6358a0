"""Segmentation results as JSON with COCO run-length-encoded masks (pycocotools).

`write_results_json` stores, for one video, per-frame segments (Hugging Face's per-frame
`{"segmentation", "segments_info"}` dicts, as `vm.to_hf` returns them) and per-video tracks
(YouTube-VIS style: one RLE per frame, ids stable over the video), written atomically.
`read_results_json(decode=True)` gives the masks back as arrays.

Layout: {"format", "video_id", "height", "width", "num_frames", "fps", "id2label",
         "frames": [{"frame": t, "segments": [{"id", "label_id", "label", "score", "area", "bbox", "rle"}]}],
         "tracks": [{"id", "video_id", "label_id", "category_id", "label", "score", "areas", "segmentations"}]}
bbox is COCO [x, y, width, height]; category_id = label_id + category_offset (YouTube-VIS counts from 1).

Letters: T frames, H/W height/width.
"""

from __future__ import annotations

import json
import os
import warnings
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
from pycocotools import mask as mask_utils

from videomt_jax.utils.io import atomic_write_text

FORMAT = "videomt-jax/results-v1"


def encode_rle(mask: np.ndarray) -> dict[str, Any]:
    """Bool mask [H, W] -> COCO compressed RLE {"size": [H, W], "counts": str}."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"encode_rle takes one (H, W) mask, got shape {mask.shape}")
    if mask.dtype != bool and not np.isin(mask, (0, 1)).all():
        raise ValueError(f"mask must be boolean or 0/1, got {mask.dtype} values outside 0/1")
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))  # pycocotools wants Fortran order
    return {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}


def decode_rle(rle: Mapping[str, Any]) -> np.ndarray:
    """COCO RLE (compressed counts as str/bytes, or uncompressed counts as a list) -> bool [H, W]."""
    if "size" not in rle or "counts" not in rle:
        raise ValueError(f"an RLE needs 'size' and 'counts', got keys {sorted(rle)}")
    height, width = (int(s) for s in rle["size"])
    counts = rle["counts"]
    if isinstance(counts, list):
        compressed = mask_utils.frPyObjects({"size": [height, width], "counts": counts}, height, width)
    else:
        compressed = {"size": [height, width], "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
    with warnings.catch_warnings():  # pycocotools' Cython arrays predate numpy 2's copy keyword
        warnings.filterwarnings("ignore", message=".*copy keyword", category=DeprecationWarning)
        return mask_utils.decode(compressed).astype(bool)


def _segment_record(rle: dict[str, Any], info: Mapping[str, Any], id2label: Mapping[int, str] | None) -> dict[str, Any]:
    coco = {"size": rle["size"], "counts": rle["counts"].encode("ascii")}
    record = {key: _plain(value) for key, value in info.items()}
    if id2label is not None and "label_id" in info:
        record["label"] = id2label.get(int(info["label_id"]))
    record["area"] = int(mask_utils.area(coco))
    record["bbox"] = [float(v) for v in mask_utils.toBbox(coco)]
    record["rle"] = rle
    return record


def _plain(value: Any) -> Any:
    """numpy / jax scalars and arrays -> JSON-friendly Python values."""
    if isinstance(value, (str, bool, int, float)) or value is None:
        return value
    array = np.asarray(value)
    return array.item() if array.ndim == 0 else array.tolist()


def frame_records(
    frames: Sequence[Mapping[str, Any]], id2label: Mapping[int, str] | None = None
) -> list[dict[str, Any]]:
    """HF per-frame results [{"segmentation": (H, W) ids, "segments_info": [...]}] -> JSON records."""
    records = []
    for t, frame in enumerate(frames):
        if "segmentation" not in frame or "segments_info" not in frame:
            raise ValueError(f"frame {t} needs 'segmentation' and 'segments_info', got keys {sorted(frame)}")
        seg = np.asarray(frame["segmentation"])
        if seg.ndim != 2:
            raise ValueError(f"frame {t}: segmentation must be (H, W), got shape {seg.shape}")
        segments = [_segment_record(encode_rle(seg == int(info["id"])), info, id2label) for info in frame["segments_info"]]
        records.append({"frame": t, "segments": segments})
    return records


def _iter_tracks(tracks: Any) -> Iterable[tuple[Mapping[str, Any], np.ndarray]]:
    """(info, masks [T, H, W] bool) per track, from a list of tracks or a video-level map."""
    if isinstance(tracks, Mapping):  # {"segmentation": (T, H, W) stable ids, "segments_info": [...]}
        seg = np.asarray(tracks["segmentation"])
        if seg.ndim != 3:
            raise ValueError(f"a video-level segmentation must be (T, H, W), got shape {seg.shape}")
        for info in tracks["segments_info"]:
            yield info, seg == int(info["id"])
        return
    for n, track in enumerate(tracks):
        if "masks" not in track:
            raise ValueError(f"track {n} needs 'masks' (T, H, W), got keys {sorted(track)}")
        masks = np.asarray(track["masks"])
        if masks.ndim != 3:
            raise ValueError(f"track {n}: masks must be (T, H, W), got shape {masks.shape}")
        yield {k: v for k, v in track.items() if k != "masks"}, masks


def track_records(
    tracks: Any, video_id: Any = None, id2label: Mapping[int, str] | None = None, category_offset: int = 0
) -> list[dict[str, Any]]:
    """Tracks -> YouTube-VIS style records (one RLE and area per frame)."""
    records = []
    for info, masks in _iter_tracks(tracks):
        rles = [encode_rle(m) for m in masks]
        record = {key: _plain(value) for key, value in info.items()}
        record["video_id"] = _plain(video_id)
        if "label_id" in info:
            record["category_id"] = int(info["label_id"]) + category_offset
            if id2label is not None:
                record["label"] = id2label.get(int(info["label_id"]))
        record["areas"] = [int(m.sum()) for m in masks]
        record["segmentations"] = rles
        records.append(record)
    return records


def write_results_json(
    path: str | os.PathLike,
    *,
    frames: Sequence[Mapping[str, Any]] | None = None,
    tracks: Any = None,
    video_id: Any = None,
    id2label: Mapping[int, str] | None = None,
    fps: float | None = None,
    category_offset: int = 0,
    indent: int | None = None,
) -> dict[str, Any]:
    """Write one video's results to `path` atomically; returns the JSON document.

    frames: HF per-frame results (list of {"segmentation": (H, W), "segments_info": [{"id", "label_id", "score"}]}).
    tracks: a list of {"id", "label_id", "score", "masks": (T, H, W) bool}, or a video-level map
        {"segmentation": (T, H, W) stable ids, "segments_info": [...]}.
    """
    if frames is None and tracks is None:
        raise ValueError("nothing to write: pass frames=..., tracks=... or both")
    doc: dict[str, Any] = {"format": FORMAT, "video_id": _plain(video_id)}
    if id2label is not None:
        doc["id2label"] = {str(int(k)): v for k, v in id2label.items()}
    if fps is not None:
        doc["fps"] = float(fps)
    sizes = set()
    if frames is not None:
        doc["frames"] = frame_records(frames, id2label)
        sizes |= {tuple(np.shape(f["segmentation"])) for f in frames}
        doc["num_frames"] = len(frames)
    if tracks is not None:
        doc["tracks"] = track_records(tracks, video_id, id2label, category_offset)
        sizes |= {tuple(r["size"]) for t in doc["tracks"] for r in t["segmentations"]}
        lengths = {len(t["segmentations"]) for t in doc["tracks"]} | ({doc["num_frames"]} if frames is not None else set())
        if len(lengths) > 1:
            raise ValueError(f"tracks and frames disagree on the number of frames: {sorted(lengths)}")
        doc.setdefault("num_frames", lengths.pop() if lengths else 0)
    if len(sizes) > 1:
        raise ValueError(f"all masks of a video must share one (H, W), got {sorted(sizes)}")
    if sizes:
        doc["height"], doc["width"] = (int(v) for v in sizes.pop())
    atomic_write_text(path, json.dumps(doc, indent=indent))
    return doc


def read_results_json(path: str | os.PathLike, decode: bool = False) -> dict[str, Any]:
    """Load a results file; with decode=True, add "mask" (H, W) per segment and "masks" (T, H, W) per track."""
    with open(path) as f:
        doc = json.load(f)
    if doc.get("format") != FORMAT:
        raise ValueError(f"{path} is not a {FORMAT} file (format = {doc.get('format')!r})")
    if decode:
        for frame in doc.get("frames", []):
            for segment in frame["segments"]:
                segment["mask"] = decode_rle(segment["rle"])
        for track in doc.get("tracks", []):
            track["masks"] = np.stack([decode_rle(r) for r in track["segmentations"]])
    return doc
