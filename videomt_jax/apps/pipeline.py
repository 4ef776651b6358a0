"""Frames in, segmentation out: processor -> streamed model -> post-processing, all jitted.

Letters: T frames, H/W original frame size, Q queries, N video-level instances.

`Segmenter.run(chunks)` streams a video through the model chunk by chunk (the propagated queries
carry over), post-processes every chunk at the original frame size, and keeps only the small
per-frame results on the host, so memory does not grow with the video beyond its label maps.
With `video_level=True` it also keeps the (small, 1/4-resolution) logits to compute the
authors' video-level results (track = query index, class scores averaged over frames).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import jax
import numpy as np

from videomt_jax import postprocess as pp
from videomt_jax.config import VideomtConfig
from videomt_jax.modeling.outputs import VideomtOutput
from videomt_jax.modeling.videomt import VideomtModel
from videomt_jax.processing import VideoProcessor
from videomt_jax.streaming import VideoStreamer

DEFAULT_MODEL_DIR = Path(__file__).resolve().parent.parent / "assets" / "synthetic-tiny"

FRAME_TASKS: dict[str, Callable[..., Any]] = {
    "semantic": pp.post_process_semantic,
    "instance": pp.post_process_instance,
    "panoptic": pp.post_process_panoptic,
}
VIDEO_TASKS: dict[str, Callable[..., Any]] = {
    "semantic": pp.video_semantic,
    "instance": pp.video_instance,
    "panoptic": pp.video_panoptic,
}


def track_map(result: Any, labels: dict[int, int]) -> np.ndarray:
    """Per-frame segment ids of video 0 -> track ids (the query that opened each segment).

    Segment ids are numbered per frame; the query index is stable over the video, so colours
    keyed on it stay put. Fills `labels` (track id -> class id). Returns [t, H, W] int32.
    """
    seg = np.asarray(result.segmentation[0])  # [t, H, W]
    query = np.asarray(result.query[0])  # [t, Q]
    out = np.full(seg.shape, -1, np.int32)
    for t in range(seg.shape[0]):
        valid = seg[t] >= 0
        out[t][valid] = query[t][seg[t][valid]]
        for s in np.flatnonzero(np.asarray(result.valid[0, t])):
            labels[int(query[t, s])] = int(result.label_id[0, t, s])
    return out


def video_instance_map(result: Any, video: int = 0) -> tuple[np.ndarray, dict[int, int]]:
    """Top-k video instances -> [T, H, W] track-id map (higher scores painted on top) and labels."""
    masks = np.asarray(result.masks[video])  # [N, T, H, W], score-descending
    out = np.full(masks.shape[1:], -1, np.int32)
    labels: dict[int, int] = {}
    for n in range(masks.shape[0] - 1, -1, -1):
        track = int(result.query[video, n])
        out[masks[n]] = track
        labels[track] = int(result.label_id[video, n])
    return out, labels


@dataclass
class SegmentationRun:
    task: str
    frames_hf: list[Any]  # HF-style result per frame (to_hf)
    segmentation: np.ndarray  # [T, H, W] int32 track ids = query index (-1 none), or class ids (semantic)
    segment_labels: dict[int, int] | None  # track id -> class id, None for semantic
    video: Any = None  # video-level result (VideoInstanceResult, ...) when asked for
    num_frames: int = 0
    seconds: float = 0.0

    @property
    def fps(self) -> float:
        return self.num_frames / max(self.seconds, 1e-9)


@dataclass
class Segmenter:
    config: VideomtConfig
    params: Any
    task: str = "panoptic"
    keep_aspect: bool = False
    task_kwargs: dict[str, Any] = field(default_factory=dict)
    processor: VideoProcessor = field(init=False)
    streamer: VideoStreamer = field(init=False)

    def __post_init__(self) -> None:
        if self.task not in FRAME_TASKS:
            raise ValueError(f"task must be one of {sorted(FRAME_TASKS)}, got {self.task!r}")
        self.processor = VideoProcessor.from_config(self.config, keep_aspect=self.keep_aspect)
        self.streamer = VideoStreamer(VideomtModel(self.config), self.params, interpolate_pos_encoding=True)

    def _post(self, fn: Callable[..., Any], out: VideomtOutput, geo: Any, **kwargs: Any) -> Any:
        valid = geo.resized_size if geo.resized_size != geo.padded_size else None
        return fn(out, geo.original_size, valid_size=valid, mask_stride=self.config.mask_stride, **kwargs)

    def run(
        self, chunks: Iterable[np.ndarray], video_level: bool = False, progress: Callable[[int], None] | None = None
    ) -> SegmentationRun:
        """chunks: uint8 [t, H, W, 3] pieces of one video, in order."""
        frame_fn = FRAME_TASKS[self.task]
        state, geo = None, None
        frames_hf: list[Any] = []
        maps: list[np.ndarray] = []
        labels: dict[int, int] = {}
        kept: list[VideomtOutput] = []
        chunk_len, ended = None, False
        t0 = time.perf_counter()
        for chunk in chunks:
            if ended:
                raise ValueError("only the last chunk of a video may be shorter than the first")
            n = chunk.shape[0]
            chunk_len = n if chunk_len is None else chunk_len
            if n < chunk_len:
                # Pad the last chunk with copies of its last frame so every call has one shape
                # (one compile); the padded frames come after everything kept and are dropped.
                ended = True
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], chunk_len - n, axis=0)])
            videos, geos = self.processor.preprocess(chunk[None])  # [1, t, Hp, Wp, 3]
            geo = geos[0]
            state = self.streamer.init(1) if state is None else state
            out, state = self.streamer.step(state, videos)
            result = jax.device_get(self._post(frame_fn, out, geo, **self.task_kwargs))
            result = jax.tree.map(lambda x: x[:, :n], result)  # [1, n, ...]
            if self.task == "semantic":
                maps.append(np.asarray(result[0]))
            else:
                maps.append(track_map(result, labels))
            frames_hf += pp.to_hf(result)
            if video_level:
                kept.append(jax.tree.map(lambda x: x[:, :n], jax.device_get(out)))
            if progress is not None:
                progress(n)
        if geo is None:
            raise ValueError("the video has no frames")
        run = SegmentationRun(
            task=self.task,
            frames_hf=frames_hf,
            segmentation=np.concatenate(maps),
            segment_labels=None if self.task == "semantic" else labels,
            num_frames=sum(m.shape[0] for m in maps),
        )
        if video_level:
            whole = VideomtOutput(
                class_logits=np.concatenate([o.class_logits for o in kept], axis=1),
                mask_logits=np.concatenate([o.mask_logits for o in kept], axis=1),
            )
            run.video = jax.device_get(self._post(VIDEO_TASKS[self.task], whole, geo))
        run.seconds = time.perf_counter() - t0
        return run
