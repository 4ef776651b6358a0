"""Segmentation results as JSON with COCO run-length-encoded masks (pycocotools).

`write_results_json` (all at once) and `ResultsWriter` (frame by frame, memory flat in the
video's length) store, for one video, per-frame segments (Hugging Face's per-frame
`{"segmentation", "segments_info"}` dicts, as `vm.to_hf` returns them) and per-video tracks
(YouTube-VIS style: one RLE per frame, ids stable over the video), written atomically.
`read_results_json(decode=True)` gives the masks back as arrays.

Layout: {"format", "video_id", "height", "width", "num_frames", "fps", "id2label",
         "frames": [{"frame": t, "segments": [{"id", "label_id", "label", "score", "track_id", "area", "bbox",
                                               "rle"}]}],
         "tracks": [{"id", "video_id", "label_id", "category_id", "label", "score", "areas", "segmentations"}]}
bbox is COCO [x, y, width, height]; category_id = label_id + category_offset (YouTube-VIS counts from 1).
A segment's `id` is its per-frame id (HF's); `track_id` (from `vm.to_hf`) is the query index, the
same for one object in every frame and the "#id" of the overlay legend (absent for image models).

Letters: T frames, H/W height/width.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from videomt_jax.utils.io import atomic_path, atomic_write_text

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


def frame_record(t: int, frame: Mapping[str, Any], id2label: Mapping[int, str] | None = None) -> dict[str, Any]:
    """Frame t's HF result {"segmentation": (H, W) ids, "segments_info": [...]} -> its JSON record."""
    if "segmentation" not in frame or "segments_info" not in frame:
        raise ValueError(f"frame {t} needs 'segmentation' and 'segments_info', got keys {sorted(frame)}")
    seg = np.asarray(frame["segmentation"])
    if seg.ndim != 2:
        raise ValueError(f"frame {t}: segmentation must be (H, W), got shape {seg.shape}")
    segments = [_segment_record(encode_rle(seg == int(info["id"])), info, id2label) for info in frame["segments_info"]]
    return {"frame": t, "segments": segments}


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


def track_record(
    info: Mapping[str, Any],
    rles: Sequence[Mapping[str, Any]],
    video_id: Any = None,
    id2label: Mapping[int, str] | None = None,
    category_offset: int = 0,
) -> dict[str, Any]:
    """One track from its info {"id", "label_id", "score", ...} and one compressed RLE per frame."""
    record = {key: _plain(value) for key, value in info.items()}
    record["video_id"] = _plain(video_id)
    if "label_id" in info:
        record["category_id"] = int(info["label_id"]) + category_offset
        if id2label is not None:
            record["label"] = id2label.get(int(info["label_id"]))
    coco = [{"size": r["size"], "counts": r["counts"].encode("ascii")} for r in rles]
    record["areas"] = [
        int(mask_utils.area(c)) for c in coco
    ]  # one at a time: pycocotools' list form overflows past 255
    record["segmentations"] = [{"size": r["size"], "counts": r["counts"]} for r in rles]
    return record


class ResultsWriter:
    """Writes one video's results file as the frames come, atomically (the file appears on a clean exit).

        with ResultsWriter(path, video_id="clip.mp4", id2label=..., fps=25.0) as writer:
            for frames_hf in chunks:               # HF per-frame results, in frame order
                writer.add_frames(frames_hf)
            writer.add_track_rles(info, rles)      # optional, any time: one RLE per frame

    Frame records go to disk when added (memory does not grow with the video); track records (one
    compressed RLE per frame each) are kept until the end. The layout is the module docstring's.
    overwrite=False: an existing `path` is never replaced (FileExistsError).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        video_id: Any = None,
        id2label: Mapping[int, str] | None = None,
        fps: float | None = None,
        category_offset: int = 0,
        overwrite: bool = True,
    ):
        self.path, self.video_id, self.id2label, self.overwrite = path, video_id, id2label, overwrite
        self.fps, self.category_offset = fps, category_offset
        self.num_frames = 0
        self._frames_open = False
        self._tracks: list[tuple[Mapping[str, Any], Sequence[Mapping[str, Any]]]] = []  # (info, RLEs)
        self._tracks_open = False  # write a "tracks" list (tracks were added or announced)
        self._sizes: set[tuple[int, ...]] = set()  # one (H, W) once all is well

    def __enter__(self) -> ResultsWriter:
        self._atomic = atomic_path(self.path, overwrite=self.overwrite)
        self._file = open(self._atomic.__enter__(), "w", encoding="utf-8")
        head: dict[str, Any] = {"format": FORMAT, "video_id": _plain(self.video_id)}
        if self.id2label is not None:
            head["id2label"] = {str(int(k)): v for k, v in self.id2label.items()}
        if self.fps is not None:
            head["fps"] = float(self.fps)
        self._file.write(json.dumps(head)[:-1])  # the object stays open
        return self

    def _size(self, size: Sequence[int]) -> None:
        self._sizes.add(tuple(int(s) for s in size))
        if len(self._sizes) > 1:
            raise ValueError(f"all masks of a video must share one (H, W), got {sorted(self._sizes)}")

    def add_frames(self, frames: Sequence[Mapping[str, Any]]) -> None:
        """Append HF per-frame results (they are numbered on from the frames added before)."""
        if not self._frames_open:
            self._file.write(', "frames": [')
            self._frames_open = True
        for frame in frames:
            record = frame_record(self.num_frames, frame, self.id2label)
            self._size(np.shape(frame["segmentation"]))
            self._file.write((", " if self.num_frames else "") + json.dumps(record))
            self.num_frames += 1

    def add_track_rles(self, info: Mapping[str, Any], rles: Sequence[Mapping[str, Any]]) -> None:
        """One track: info {"id", "label_id", "score", ...} and one compressed RLE per frame (any
        sequence; kept as given until the file is closed, then turned into its record)."""
        for rle in rles:
            self._size(rle["size"])
        self._tracks.append((info, rles))
        self._tracks_open = True

    def add_tracks(self, tracks: Any) -> None:
        """Tracks as `write_results_json` takes them (a list with masks, or a video-level map)."""
        for info, masks in _iter_tracks(tracks):
            self.add_track_rles(info, [encode_rle(m) for m in masks])

    def _write_tail(self) -> None:
        lengths = {len(rles) for _, rles in self._tracks} | ({self.num_frames} if self._frames_open else set())
        if len(lengths) > 1:
            raise ValueError(f"tracks and frames disagree on the number of frames: {sorted(lengths)}")
        if self._tracks_open:  # one track record at a time: memory stays one track large
            self._file.write(', "tracks": [')
            for n, (info, rles) in enumerate(self._tracks):
                record = track_record(info, rles, self.video_id, self.id2label, self.category_offset)
                self._file.write((", " if n else "") + json.dumps(record))
            self._file.write("]")
        tail: dict[str, Any] = {"num_frames": lengths.pop() if lengths else 0}
        if self._sizes:
            tail["height"], tail["width"] = next(iter(self._sizes))
        self._file.write(", " + json.dumps(tail)[1:])

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                self._file.write("]" if self._frames_open else "")
                self._write_tail()
        except BaseException as e:
            self._file.close()
            self._atomic.__exit__(type(e), e, e.__traceback__)
            raise
        self._file.close()
        self._atomic.__exit__(exc_type, exc, tb)

    def expect_tracks(self) -> None:
        """Write a "tracks" list even when no track is added (a video-level run that found none)."""
        self._tracks_open = True


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
    indent: pretty-print with this indent (the file is rewritten once more).
    """
    if frames is None and tracks is None:
        raise ValueError("nothing to write: pass frames=..., tracks=... or both")
    with ResultsWriter(path, video_id=video_id, id2label=id2label, fps=fps, category_offset=category_offset) as writer:
        if frames is not None:
            writer.add_frames(frames)
        if tracks is not None:
            writer.expect_tracks()
            writer.add_tracks(tracks)
    with open(path) as f:
        doc = json.load(f)
    if indent is not None:
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
