"""Frames in, segmentation out: processor -> streamed model -> post-processing, all jitted.

Letters: T frames, t frames of a chunk, H/W original frame size, Q queries, K+1 classes, h/w mask grid.

`Segmenter.stream(chunks)` streams a video through the model chunk by chunk (the propagated
queries carry over), post-processes every chunk at the original frame size, and yields each chunk's
results (`ChunkResult`: the frames, their track-id or class map, HF-style per-frame results and
the model's small output) for the caller to write and drop, so memory stays flat in the video's
length. `Segmenter.run(chunks)` collects everything (short clips: demo, tests). Video-level
results over a stream: `videomt_jax.postprocess.streamed.VideoLevel`, fed with `ChunkResult.output`.

Every model `load_pretrained` reads runs here: VidEoMT streams with its propagated queries (ids in
the maps = query index = track id); an image model (EoMT, `config.model_type == "eomt"`) segments
every frame on its own, so its maps hold the per-frame segment ids (no tracks, `image_model`).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Generator, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import jax
import numpy as np

from videomt_jax import postprocess as pp
from videomt_jax.config import IMAGE_MODEL_TYPES, VideomtConfig
from videomt_jax.modeling.family import model_for
from videomt_jax.modeling.outputs import VideomtOutput
from videomt_jax.modeling.videomt import VideomtModel
from videomt_jax.modeling.xla_options import jit_model
from videomt_jax.postprocess.hf_format import TRACK_ID
from videomt_jax.processing import VideoProcessor, default_processor, load_processor
from videomt_jax.streaming import VideoStreamer, pad_frames

DEFAULT_MODEL_DIR = Path(__file__).resolve().parent.parent / "assets" / "synthetic-tiny"

FRAME_TASKS: dict[str, Callable[..., Any]] = {
    "semantic": pp.post_process_semantic,
    "instance": pp.post_process_instance,
    "panoptic": pp.post_process_panoptic,
}


def track_map(result: Any, labels: dict[int, int]) -> tuple[np.ndarray, list[dict[int, int]]]:
    """Per-frame segment ids of video 0 -> track ids (the query that opened each segment).

    Segment ids are numbered per frame; the query index is stable over the video, so colours
    keyed on it stay put. Fills `labels` (track id -> its latest class id). Returns the map
    [t, H, W] int32 and, per frame, track id -> class id in that frame.
    """
    seg = np.asarray(result.segmentation[0])  # [t, H, W]
    query = np.asarray(result.query[0])  # [t, Q]
    out = np.full(seg.shape, -1, np.int32)
    per_frame = []
    for t in range(seg.shape[0]):
        valid = seg[t] >= 0
        out[t][valid] = query[t][seg[t][valid]]
        frame = {
            int(query[t, s]): int(result.label_id[0, t, s]) for s in np.flatnonzero(np.asarray(result.valid[0, t]))
        }
        labels.update(frame)
        per_frame.append(frame)
    return out, per_frame


def segment_labels(result: Any) -> tuple[np.ndarray, list[dict[int, int]]]:
    """Image models: the per-frame segment ids of video 0 as they are, and per frame segment id -> class id."""
    seg = np.asarray(result.segmentation[0]).astype(np.int32)  # [t, H, W]
    labels = np.asarray(result.label_id[0])  # [t, Q]
    valid = np.asarray(result.valid[0])
    return seg, [{int(s): int(labels[t, s]) for s in np.flatnonzero(valid[t])} for t in range(seg.shape[0])]


def semantic_frames_hf(maps: np.ndarray) -> list[dict[str, Any]]:
    """Class maps [t, H, W] -> HF-style per-frame results: one segment per class present (id = class id)."""
    return [
        {
            "segmentation": m,
            "segments_info": [{"id": int(c), "label_id": int(c), "score": 1.0} for c in np.unique(m) if c >= 0],
        }
        for m in maps
    ]


def _first_frames(tree: Any, n: int) -> Any:
    """Every leaf [B, t, ...] cut to its first n frames (a padded last chunk's real ones)."""
    return jax.tree.map(lambda x: x[:, :n], tree)


@dataclass
class ChunkResult:
    frames: np.ndarray  # [t, H, W, 3] uint8: the input chunk
    segmentation: np.ndarray  # [t, H, W] int32 track ids = query index (-1 none), or class ids (semantic)
    frames_hf: list[Any]  # HF-style result per frame
    output: VideomtOutput  # the model's output for these frames, on the host: [1, t, Q, K+1] / [1, t, Q, h, w]
    geometry: Any  # the processor's geometry of the chunk (original / resized / padded size)
    frame_labels: list[dict[int, int]] | None = None  # per frame: id in `segmentation` -> class id (None: semantic)


@dataclass
class SegmentationRun:
    task: str
    frames_hf: list[Any]  # HF-style result per frame (to_hf)
    segmentation: np.ndarray  # [T, H, W] int32 track ids = query index (-1 none), or class ids (semantic)
    segment_labels: dict[int, int] | None  # track id -> class id, None for semantic
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
    # The model's pixel normalisation (`load_processor`, saved beside the checkpoint); None:
    # `VideoProcessor.from_config(config)`. keep_aspect=True switches it to aspect-preserving resizing.
    processor: VideoProcessor | None = None
    streamer: VideoStreamer | None = field(init=False, default=None)  # VidEoMT: the stateful chunk step
    _image_step: Callable[..., VideomtOutput] | None = field(init=False, default=None, repr=False)  # image models

    def __post_init__(self) -> None:
        if self.task not in FRAME_TASKS:
            raise ValueError(f"task must be one of {sorted(FRAME_TASKS)}, got {self.task!r}")
        processor = default_processor(self.config, self.processor)
        if self.keep_aspect:
            processor = dataclasses.replace(processor, keep_aspect=True, pad_multiple=self.config.patch_hw)
        self.processor = processor
        model = model_for(self.config)
        if self.image_model:  # no state: every frame on its own
            self._image_step = jit_model(lambda p, x: model.apply({"params": p}, x, interpolate_pos_encoding=True))
        else:
            self.streamer = VideoStreamer(cast(VideomtModel, model), self.params, interpolate_pos_encoding=True)

    @property
    def image_model(self) -> bool:
        """An image model (EoMT): frames are segmented one by one, ids are per frame (no tracks)."""
        return self.config.model_type in IMAGE_MODEL_TYPES

    def _step(self, state: Any, videos: Any) -> tuple[VideomtOutput, Any]:
        if self._image_step is not None:
            return self._image_step(self.params, videos), None
        if self.streamer is None:
            raise RuntimeError("Segmenter has no model step; __post_init__ sets it")
        state = self.streamer.init(1) if state is None else state
        return self.streamer.step(state, videos)

    @classmethod
    def from_pretrained(cls, path: str | Path, dtype: str | None = None, **kwargs: Any) -> Segmenter:
        """A segmenter for a checkpoint: weights, config and the processor saved beside them."""
        from videomt_jax.weights.api import load_pretrained

        config, params = load_pretrained(path, dtype=dtype)
        return cls(config, params, processor=load_processor(path, config), **kwargs)

    def _post(self, fn: Callable[..., Any], out: VideomtOutput, geo: Any, **kwargs: Any) -> Any:
        return fn(out, geo.original_size, valid_size=self.valid_size(geo), **kwargs)  # the stride travels on `out`

    def valid_size(self, geo: Any) -> tuple[int, int] | None:
        """The un-padded part of the model input (None when nothing was padded)."""
        return geo.resized_size if geo.resized_size != geo.padded_size else None

    def stream(
        self,
        chunks: Iterable[np.ndarray],
        labels: dict[int, int] | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> Generator[ChunkResult, None, None]:
        """chunks: uint8 [t, H, W, 3] pieces of one video, in order (only the last may be shorter).

        labels: filled with track id -> class id as tracks appear (instance / panoptic)."""
        frame_fn = FRAME_TASKS[self.task]
        processor = self.processor
        if processor is None:
            raise RuntimeError("Segmenter.processor is None; __post_init__ sets it")
        labels = {} if labels is None else labels
        state, chunk_len, ended, seen = None, None, False, False
        for chunk in chunks:
            if ended:
                raise ValueError("only the last chunk of a video may be shorter than the first")
            n = chunk.shape[0]
            chunk_len = n if chunk_len is None else chunk_len
            ended = n < chunk_len
            videos, geos = processor.preprocess(pad_frames(chunk, chunk_len)[None])  # [1, t, Hp, Wp, 3]
            out, state = self._step(state, videos)
            seen = True
            result = jax.device_get(self._post(frame_fn, out, geos[0], **self.task_kwargs))
            result = _first_frames(result, n)  # [1, n, ...]
            frame_labels: list[dict[int, int]] | None = None
            if self.task == "semantic":
                seg = np.asarray(result[0])
                frames_hf = semantic_frames_hf(seg)
            else:
                frames_hf = pp.to_hf(result)
                if self.image_model:  # no tracks: the per-frame ids, and no track_id in the results
                    seg, frame_labels = segment_labels(result)
                    for frame in frames_hf:
                        for info in frame["segments_info"]:
                            info.pop(TRACK_ID, None)
                else:
                    seg, frame_labels = track_map(result, labels)
            output = _first_frames(jax.device_get(out), n)
            yield ChunkResult(chunk, seg, frames_hf, output, geos[0], frame_labels)
            if progress is not None:
                progress(n)
        if not seen:
            raise ValueError("the video has no frames")

    def run(self, chunks: Iterable[np.ndarray], progress: Callable[[int], None] | None = None) -> SegmentationRun:
        """All of `stream` in memory: for short clips."""
        labels: dict[int, int] = {}
        t0 = time.perf_counter()
        results = list(self.stream(chunks, labels, progress))
        return SegmentationRun(
            task=self.task,
            frames_hf=[f for r in results for f in r.frames_hf],
            segmentation=np.concatenate([r.segmentation for r in results]),
            segment_labels=None if self.task == "semantic" else labels,
            num_frames=sum(r.segmentation.shape[0] for r in results),
            seconds=time.perf_counter() - t0,
        )
