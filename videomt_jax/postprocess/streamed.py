"""Video-level results of a streamed video (`segment --video-level`), with memory flat in its length.

The authors' video-level answers (`postprocess.video`) need the whole video: class logits averaged
over all frames decide which queries become tracks, with which class and score, and only then can
any frame's masks be drawn. Here the first pass (while the model streams) keeps per-query running
sums of the class logits and spills each chunk's mask logits (Q x h x w float32 per frame, the
model's 1/stride grid) to an unlinked temporary file; `chunks()` then reads them back one chunk at
a time and gives each frame's video-level map. Panoptic makes one more pass before that, summing
its per-query pixel counts over the whole video. The results equal `postprocess.video` on the
whole video (up to the float32 rounding of the frame average).

What each task gives (track ids are unique over the video):
- semantic: the authors' video semantic map (class probabilities averaged over the video per query,
  times each frame's sigmoid masks, argmax over classes); one track per class present in it:
  id = label_id = class id, score = the share of the video's pixels that class covers.
- instance: the top-k queries, each with its best class (`video_instance(unique_queries=True)`:
  the authors' top-k over (query, class) pairs can take one query twice): id = query index,
  score = the class probability; overlapping masks are painted in rising score order. With a
  `threshold`, only tracks scoring >= threshold are kept (None: all top-k, as the authors).
- panoptic: the authors' video panoptic segments: id = segment id, stable over the video, with the
  query that opened it; isthing. `threshold` is the object score a query must exceed (None: the
  authors' OBJECT_MASK_THRESHOLD).

Letters: T frames, n frames of a chunk, Q queries, K classes (+1 no object), N tracks,
h/w mask grid, H/W target size.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from videomt_jax.modeling.outputs import VideomtOutput
from videomt_jax.ops.resize import resize_bilinear, resize_to_input
from videomt_jax.postprocess import common
from videomt_jax.postprocess.frame import panoptic_counts
from videomt_jax.postprocess.video import (
    MASK_THRESHOLD,
    OBJECT_MASK_THRESHOLD,
    OVERLAP_THRESHOLD,
    TOP_K,
    video_instance,
    video_semantic,
)

TASKS = ("semantic", "instance", "panoptic")


@dataclass
class VideoChunk:
    segmentation: np.ndarray  # [n, H, W] int32 track ids, -1 = none
    masks: dict[int, np.ndarray]  # track id -> [n, H, W] bool (its own mask; instance masks may overlap)


@partial(jax.jit, static_argnames=("target", "valid", "stride"))
def _panoptic_chunk(mask_logits, score, keep, segment, *, target, valid, stride):
    """Frames [n, Q, h, w] -> (map [n, H, W] of `segment` ids, won / original / final [Q] summed)."""

    def frame(logits):  # [Q, h, w] -> the authors' two resizes with the sigmoid between
        masks = resize_bilinear(jax.nn.sigmoid(resize_to_input(logits.transpose(1, 2, 0), valid, stride)), target)
        winner, own, won, original, final = panoptic_counts(score, keep, masks, jnp.float32(MASK_THRESHOLD))
        return jnp.where(own, segment[winner], -1), won, original, final

    seg, won, original, final = jax.lax.map(frame, mask_logits)
    return seg, won.sum(0), original.sum(0), final.sum(0)


class VideoLevel:
    """Accumulates a streamed video (`add`), then yields its video-level maps (`chunks`).

    Use as a context manager: leaving it closes (and so deletes) the spill file.
    """

    def __init__(
        self,
        task: str,
        target: tuple[int, int],
        *,
        valid: tuple[int, int] | None,
        stride: int,
        spill_dir: str | Path | None = None,
        top_k: int = TOP_K,
        threshold: float | None = None,
        overlap_threshold: float = OVERLAP_THRESHOLD,
        frames_per_piece: int | None = None,
    ):
        if task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {task!r}")
        self.task, self.target, self.valid, self.stride = task, tuple(target), valid, int(stride)
        self.top_k, self.threshold, self.overlap = top_k, threshold, overlap_threshold
        # frames per map of `chunks()` (None: the chunks `add` got); the maps have no recurrence, so
        # a small piece bounds the second pass's memory whatever the chunk of the first
        self.frames_per_piece = frames_per_piece
        # unlinked at once; open across add() / chunks(), closed by __exit__
        self._spill = tempfile.TemporaryFile(prefix=".videomt-spill.", dir=spill_dir)  # noqa: SIM115
        self._sum: np.ndarray | None = None  # [Q, K+1] float64 running sum of class logits
        self._chunk_sizes: list[int] = []
        self._grid: tuple[int, int, int] | None = None  # (Q, h, w)
        self.tracks: list[dict[str, Any]] = []  # info per track, in id order (after `chunks`)
        self.labels: dict[int, int] | None = None  # track id -> class id (None: the map holds class ids)

    def __enter__(self) -> VideoLevel:
        return self

    def __exit__(self, *exc: Any) -> None:
        self._spill.close()

    @property
    def num_frames(self) -> int:
        return sum(self._chunk_sizes)

    def add(self, out: VideomtOutput) -> None:
        """One chunk of model output for one video: class_logits [1, n, Q, K+1], mask_logits [1, n, Q, h, w]."""
        class_logits = np.asarray(out.class_logits, np.float64)[0]  # [n, Q, K+1]
        mask_logits = np.ascontiguousarray(np.asarray(out.mask_logits, np.float32)[0])  # [n, Q, h, w]
        if self._grid is not None and mask_logits.shape[1:] != self._grid:
            raise ValueError(f"mask logits {mask_logits.shape[1:]} differ from the first chunk's {self._grid}")
        self._grid = mask_logits.shape[1:]
        total = class_logits.sum(axis=0)
        self._sum = total if self._sum is None else self._sum + total
        self._spill.write(mask_logits.tobytes())
        self._chunk_sizes.append(mask_logits.shape[0])

    def _added_grid(self) -> tuple[int, int, int]:
        """(Q, h, w) of the mask logits added so far."""
        if self._grid is None:
            raise ValueError("no frames were added")
        return self._grid

    def mean_class_logits(self) -> np.ndarray:
        """[Q, K+1] float32: the class logits averaged over every frame added."""
        if self._sum is None:
            raise ValueError("no frames were added")
        return (self._sum / self.num_frames).astype(np.float32)

    def _spilled(self) -> Iterator[np.ndarray]:
        """The spilled mask logits again, chunk by chunk: [n, Q, h, w] float32 (each chunk `add` got,
        cut into pieces of at most `frames_per_piece` frames)."""
        self._spill.seek(0)
        grid = self._added_grid()
        per_frame = int(np.prod(grid))
        for n in self._chunk_sizes:
            step = n if self.frames_per_piece is None else self.frames_per_piece
            for start in range(0, n, step):
                m = min(step, n - start)
                yield np.fromfile(self._spill, np.float32, count=m * per_frame).reshape((m, *grid))

    def _as_videos(self, logits: np.ndarray) -> VideomtOutput:
        """Each frame as a one-frame video whose class logits are the whole video's average, so the
        public video-level functions give the whole video's answer frame by frame."""
        mean = self.mean_class_logits()
        # host arrays on purpose (post-processing takes them); modeling/outputs.py types the fields jax.Array
        return VideomtOutput(
            class_logits=np.broadcast_to(mean, (logits.shape[0], 1, *mean.shape)),  # type: ignore[arg-type]
            mask_logits=logits[:, None],  # type: ignore[arg-type]
        )

    def chunks(self) -> Iterator[VideoChunk]:
        """Every frame's video-level map, one chunk at a time (the sizes `add` got, cut to
        `frames_per_piece`); fills `tracks`."""
        yield from {"semantic": self._semantic, "instance": self._instance, "panoptic": self._panoptic}[self.task]()

    # ------------------------------------------------------------------------------- per task
    def _post_kwargs(self) -> dict[str, Any]:
        return {"valid_size": self.valid, "mask_stride": self.stride}

    def _semantic(self) -> Iterator[VideoChunk]:
        area: dict[int, int] = {}
        for logits in self._spilled():
            seg = np.asarray(video_semantic(self._as_videos(logits), self.target, **self._post_kwargs()))[:, 0]
            classes, counts = np.unique(seg, return_counts=True)
            for c, count in zip(classes.tolist(), counts.tolist()):
                area[c] = area.get(c, 0) + count
            yield VideoChunk(seg.astype(np.int32), {c: seg == c for c in classes.tolist()})
        pixels = self.num_frames * self.target[0] * self.target[1]
        self.tracks = [{"id": c, "label_id": c, "score": area[c] / pixels} for c in sorted(area)]

    def _instance(self) -> Iterator[VideoChunk]:
        num_queries = self._added_grid()[0]
        top_k = min(self.top_k, num_queries)
        floor = -np.inf if self.threshold is None else np.asarray(common.f32_ceil(self.threshold))  # score >= threshold
        for logits in self._spilled():
            result = jax.device_get(
                video_instance(self._as_videos(logits), self.target, top_k, unique_queries=True, **self._post_kwargs())
            )
            score = np.asarray(result.score[0])  # [N], descending: one average, the same for every chunk
            kept = [n for n in range(top_k) if score[n] >= floor]
            query = [int(result.query[0, n]) for n in kept]
            masks = np.asarray(result.masks)[:, kept, 0]  # [n, N', H, W], score-descending
            seg = np.full((masks.shape[0], *self.target), -1, np.int32)
            for n in range(len(query) - 1, -1, -1):  # lower scores first, higher painted on top
                seg[masks[:, n]] = query[n]
            if self.labels is None:
                self.tracks = [
                    {"id": q, "label_id": int(result.label_id[0, n]), "score": float(score[n])}
                    for n, q in zip(kept, query)
                ]
                self.labels = {t["id"]: t["label_id"] for t in self.tracks}
            yield VideoChunk(seg, {q: masks[:, n] for n, q in enumerate(query)})

    def _panoptic(self) -> Iterator[VideoChunk]:
        probs = np.asarray(jax.nn.softmax(jnp.asarray(self.mean_class_logits()), axis=-1))  # [Q, K+1]
        score, labels = probs.max(axis=-1), probs.argmax(axis=-1).astype(np.int32)  # [Q]
        threshold = OBJECT_MASK_THRESHOLD if self.threshold is None else self.threshold
        keep = (labels != probs.shape[-1] - 1) & (score > common.f32(threshold))
        static = {"target": self.target, "valid": self.valid, "stride": self.stride}
        num_queries = probs.shape[0]
        won = original = final = np.zeros(num_queries, np.int64)
        no_segment = jnp.full(num_queries, -1, jnp.int32)
        for logits in self._spilled():  # pass 1: the whole video's pixel counts per query
            _, w, o, f = jax.device_get(_panoptic_chunk(logits, score, keep, no_segment, **static))
            won, original, final = won + w, original + o, final + f
        ratio = won.astype(np.float32) / np.maximum(original, 1).astype(np.float32)
        ok = keep & (won > 0) & (original > 0) & (final > 0) & (ratio >= np.asarray(common.f32_ceil(self.overlap)))
        order = np.arange(num_queries)
        segment = np.where(ok, np.cumsum(ok) - 1, -1).astype(np.int32)  # things only: one segment per query
        self.tracks = [
            {
                "id": int(segment[q]),
                "label_id": int(labels[q]),
                "score": float(score[q]),
                "query": int(q),
                "isthing": True,
            }
            for q in order[ok]
        ]
        self.labels = {t["id"]: t["label_id"] for t in self.tracks}
        for logits in self._spilled():  # pass 2: the maps
            seg = np.asarray(_panoptic_chunk(logits, score, keep, jnp.asarray(segment), **static)[0])
            yield VideoChunk(seg, {t["id"]: seg == t["id"] for t in self.tracks})
