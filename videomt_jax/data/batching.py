"""The clip format every data source returns, and its padding into fixed-shape training batches.

Letters: B clips per batch, T frames per clip, M instance slots (per clip: as many as it has;
per batch: the fixed `max_instances`), H/W frame height/width.

A `Clip` is YouTube-VIS-like: instance m is one object tracked over the clip, with a (possibly
empty) mask in every frame; it is *present* in frame t when that mask has a pixel. `collate` turns
a list of clips into the per-frame targets the loss wants: slot m of frame t is valid only where
the instance is present in that frame; invalid slots carry the class `num_labels` (no object) and
an all-False mask. Pixels are normalised by the model's `VideoProcessor` (`processing.py`; default
HF's: /255, ImageNet mean/std), the one normalisation of inference, training and evaluation.

The batch is lean (what worker processes hand over is ~10x smaller than float pixels + bool masks):
frames stay uint8 and are normalised on the device by the train step, through `pixel_table`
(the processor's value of each 0..255 level per channel, so the device numbers are the host's
bit for bit); masks are bit-packed along W (`np.packbits`, 8 pixels a byte) and unpacked on the
device. `Batch.pixel_values` and `Batch.mask_labels` give the float / bool arrays on the host.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from videomt_jax.ops.labels import IGNORE_INDEX, VOID_ID
from videomt_jax.processing import VideoProcessor, default_processor


class Clip(NamedTuple):
    """One video clip with tracked instances (numpy arrays; see the module docstring)."""

    frames: np.ndarray  # [T, H, W, 3] uint8
    masks: np.ndarray  # [T, M, H, W] bool: visible pixels of instance m in frame t
    classes: np.ndarray  # [M] int32: contiguous class ids
    track_ids: np.ndarray  # [M] int32: unique within the clip
    semantic: np.ndarray | None = None  # [T, H, W] int32: class ids, IGNORE_INDEX unlabeled
    panoptic: np.ndarray | None = None  # [T, H, W] int32: class*LABEL_DIVISOR+instance, VOID_ID void
    frame_indices: np.ndarray | None = None  # [T] int32: frame numbers in the source video
    video_id: int = -1

    @property
    def present(self) -> np.ndarray:  # [T, M] bool
        return np.asarray(self.masks.any(axis=(2, 3)))

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])

    @property
    def num_instances(self) -> int:
        return int(self.classes.shape[0])

    @property
    def image_hw(self) -> tuple[int, int]:
        return int(self.frames.shape[1]), int(self.frames.shape[2])


def _expect(name: str, array: object, dtype: type, shape: tuple[int | None, ...]) -> None:
    if not isinstance(array, np.ndarray):
        raise TypeError(f"Clip.{name} must be a numpy array, got {type(array).__name__}")
    if array.dtype != dtype:
        raise TypeError(f"Clip.{name} must have dtype {np.dtype(dtype)}, got {array.dtype}")
    if array.ndim != len(shape) or any(s is not None and s != a for s, a in zip(shape, array.shape)):
        wanted = tuple("?" if s is None else s for s in shape)
        raise ValueError(f"Clip.{name} has shape {array.shape}, expected {wanted}")


def validate_clip(clip: Clip) -> Clip:
    """Check shapes and dtypes of every field; returns the clip for chaining."""
    _expect("frames", clip.frames, np.uint8, (None, None, None, 3))
    t, h, w = clip.frames.shape[:3]
    _expect("classes", clip.classes, np.int32, (None,))
    m = clip.classes.shape[0]
    _expect("masks", clip.masks, np.bool_, (t, m, h, w))
    _expect("track_ids", clip.track_ids, np.int32, (m,))
    if len(np.unique(clip.track_ids)) != m:
        raise ValueError(f"Clip.track_ids must be unique within a clip, got {clip.track_ids.tolist()}")
    for name in ("semantic", "panoptic"):
        if getattr(clip, name) is not None:
            _expect(name, getattr(clip, name), np.int32, (t, h, w))
    if clip.frame_indices is not None:
        _expect("frame_indices", clip.frame_indices, np.int32, (t,))
    return clip


def pixel_table(processor: VideoProcessor) -> np.ndarray:  # [256, 3] float32
    """`processor.normalize` of every uint8 level in every channel: row v, column c is what pixel
    value v of channel c normalises to (the one source of the train step's normalisation)."""
    levels = np.broadcast_to(np.arange(256, dtype=np.uint8)[:, None], (256, 3))
    return processor.normalize(levels)


def normalize_with_table(frames: np.ndarray, table: np.ndarray) -> np.ndarray:
    """uint8 frames [..., 3] -> float32 through a `pixel_table` [256, 3] (host side)."""
    return table[frames, np.arange(table.shape[1])]


class Batch(NamedTuple):
    """Fixed-shape training batch (a pytree: jax.tree functions and jit accept it as is).

    Lean format (module docstring): the train step normalises `frames` with its processor and
    unpacks `mask_bits`; `pixel_table` records the collate processor so `fit` can check they agree."""

    frames: np.ndarray  # [B, T, H, W, 3] uint8, not normalised
    mask_bits: np.ndarray  # [B, T, M, H, ceil(W / 8)] uint8: np.packbits(masks, axis=-1)
    class_labels: np.ndarray  # [B, T, M] int32; num_labels (no object) where not valid
    valid: np.ndarray  # [B, T, M] bool: instance present in that frame
    track_ids: np.ndarray  # [B, M] int32; -1 for empty slots
    pixel_table: np.ndarray  # [256, 3] float32: `pixel_table(processor)` of the collate processor
    semantic: np.ndarray | None = None  # [B, T, H, W] int32 when every clip has it
    panoptic: np.ndarray | None = None  # [B, T, H, W] int32 when every clip has it
    dropped: np.ndarray | None = None  # [B] int32: objects of a crowded clip left out (over max_instances)
    # [B, 2] int32: each clip's own (height, width) at the top left of the batch canvas, when some clip is
    # smaller than the canvas (shape buckets, `batch_canvas`); None: every clip fills it
    content_hw: np.ndarray | None = None

    @property
    def pixel_values(self) -> np.ndarray:  # [B, T, H, W, 3] float32, normalised (host)
        return normalize_with_table(self.frames, self.pixel_table)

    @property
    def mask_labels(self) -> np.ndarray:  # [B, T, M, H, W] bool (host)
        width = self.frames.shape[3]
        return np.unpackbits(self.mask_bits, axis=-1, count=width).astype(bool)


def batch_canvas(sizes: Sequence[tuple[int, int]], bucket: int | None, cap: tuple[int, int] | None) -> tuple[int, int]:
    """The (H, W) of a batch holding clips of `sizes`: each side the largest clip's, rounded up to a
    multiple of `bucket`, at most `cap` (a clip is never cut here). No bucket: `cap` itself (one
    canvas for every batch), or with no cap either the largest clip's size.

    A bucket of 128 and a cap of 768 allow at most 6 x 6 canvases, so the jitted step compiles for a
    bounded set of shapes (docs/training.md, "Geometry")."""
    largest = [max(s[i] for s in sizes) for i in (0, 1)]
    if bucket is not None:
        canvas = [-(-side // bucket) * bucket for side in largest]
    else:
        canvas = list(cap) if cap is not None else largest
    if cap is not None:
        canvas = [min(side, limit) for side, limit in zip(canvas, cap)]
    return max(canvas[0], largest[0]), max(canvas[1], largest[1])


def collate(
    clips: Sequence[Clip],
    *,
    num_labels: int,
    max_instances: int,
    processor: VideoProcessor | None = None,
    bucket: int | None = None,
    cap: tuple[int, int] | None = None,
) -> Batch:
    """Pad clips of equal T to a `Batch` with `max_instances` slots per clip.

    Frames stay uint8 (the train step normalises them with `processor`, the model's; no resize
    here: clips are at model size); masks are packed per clip, never held unpacked per batch.
    Clips of different sizes go top-left onto one canvas (`batch_canvas(sizes, bucket, cap)`),
    padded with the processor's pixel mean, empty masks, IGNORE_INDEX / VOID_ID maps; `content_hw`
    then records each clip's own size, which the model and the loss keep to.

    Instances absent from every frame carry no target and are left out first. A crowded clip that
    still has more than `max_instances` keeps the `max_instances` with the most visible pixels over
    the clip (ties: the first); `Batch.dropped` counts the others per clip, and `fit` reports them.
    """
    if not clips:
        raise ValueError("collate needs at least one clip")
    if max_instances < 1 or num_labels < 1:
        raise ValueError(f"max_instances and num_labels must be positive, got {max_instances}, {num_labels}")
    for i, clip in enumerate(clips):
        try:
            validate_clip(clip)
        except (TypeError, ValueError) as e:
            raise type(e)(f"clip {i}: {e}") from None
    t = clips[0].frames.shape[0]
    h, w = batch_canvas([c.frames.shape[1:3] for c in clips], bucket, cap)
    b = len(clips)
    proc = default_processor(processor=processor)
    frames = np.empty((b, t, h, w, 3), np.uint8)
    frames[:] = np.clip(np.round(np.asarray(proc.pixel_mean, np.float32)), 0, 255).astype(np.uint8)
    content = np.zeros((b, 2), np.int32)
    mask_bits = np.zeros((b, t, max_instances, h, -(-w // 8)), np.uint8)
    class_labels = np.full((b, t, max_instances), num_labels, np.int32)
    valid = np.zeros((b, t, max_instances), bool)
    track_ids = np.full((b, max_instances), -1, np.int32)
    dropped = np.zeros((b,), np.int32)
    for i, clip in enumerate(clips):
        if clip.frames.shape[0] != t:
            raise ValueError(f"clip {i} has {clip.frames.shape[0]} frames, clip 0 has {t}: a batch needs one T")
        ch, cw = content[i] = clip.frames.shape[1:3]
        bad = (clip.classes < 0) | (clip.classes >= num_labels)
        if bad.any():
            raise ValueError(f"clip {i}: class ids {clip.classes[bad].tolist()} are outside [0, {num_labels})")
        present = clip.present  # [T, M]
        keep = np.flatnonzero(present.any(axis=0))
        if len(keep) > max_instances:  # crowded: the largest objects, in their order
            area = clip.masks[:, keep].sum(axis=(0, 2, 3))  # [n] visible pixels over the clip
            dropped[i] = len(keep) - max_instances
            keep = np.sort(keep[np.argsort(-area, kind="stable")[:max_instances]])
        n = len(keep)
        frames[i, :, :ch, :cw] = clip.frames
        mask_bits[i, :, :n, :ch, : -(-cw // 8)] = np.packbits(clip.masks[:, keep], axis=-1)  # [T, n, h, ceil(w/8)]
        valid[i, :, :n] = present[:, keep]
        class_labels[i, :, :n] = np.where(valid[i, :, :n], clip.classes[keep][None], num_labels)
        track_ids[i, :n] = clip.track_ids[keep]
    semantic = _stack_optional([c.semantic for c in clips], (h, w), IGNORE_INDEX)
    panoptic = _stack_optional([c.panoptic for c in clips], (h, w), VOID_ID)
    filled = bool((content == (h, w)).all())
    return Batch(
        frames,
        mask_bits,
        class_labels,
        valid,
        track_ids,
        pixel_table(proc),
        semantic,
        panoptic,
        dropped,
        None if filled else content,
    )


def _stack_optional(maps: list[np.ndarray | None], canvas: tuple[int, int], fill: int) -> np.ndarray | None:
    """[T, h, w] label maps -> [B, T, H, W] on the canvas (top left, `fill` elsewhere), or None if one is missing."""
    present = [m for m in maps if m is not None]
    if len(present) < len(maps):
        return None
    out = np.full((len(present), present[0].shape[0], *canvas), fill, np.int32)
    for i, m in enumerate(present):
        out[i, :, : m.shape[1], : m.shape[2]] = m
    return out


def add_stuff_instances(clip: Clip, stuff_ids: Sequence[int]) -> Clip:
    """Append one instance per stuff class seen in the clip (mask from the semantic map).

    Panoptic training treats every stuff class as one more target; its track id is
    -(class id) - 1, so it never collides with the positive thing track ids.
    """
    if clip.semantic is None:
        raise ValueError("add_stuff_instances needs Clip.semantic")
    seen = [s for s in stuff_ids if (clip.semantic == s).any()]
    if not seen:
        return clip
    stuff_masks = clip.semantic[:, None] == np.asarray(seen, np.int32)[None, :, None, None]  # [T, S, H, W]
    return clip._replace(
        masks=np.concatenate([clip.masks, stuff_masks], axis=1),
        classes=np.concatenate([clip.classes, np.asarray(seen, np.int32)]),
        track_ids=np.concatenate([clip.track_ids, -np.asarray(seen, np.int32) - 1]),
    )


@dataclass(frozen=True)
class ClipNumbering:
    """Which clips of the run a process loads at each step (`Recipe.batches` and the grain pipeline).

    Clip j (< local = global_batch / process_count) of process p at `step` is clip number
    step * global_batch + p * local + j of the run, so the processes together load the clips one
    process would, and a batch is a pure function of the step.
    """

    global_batch: int
    process_index: int = 0
    process_count: int = 1

    def __post_init__(self) -> None:
        splits = self.global_batch >= 1 and self.global_batch % self.process_count == 0
        if not splits or not 0 <= self.process_index < self.process_count:
            raise ValueError(
                f"batch size {self.global_batch} cannot be split over {self.process_count} processes "
                f"(process index {self.process_index})"
            )

    @property
    def local(self) -> int:
        """Clips per process and step."""
        return self.global_batch // self.process_count

    def number(self, step: int, j: int) -> int:
        """The run-wide number of this process's clip j at `step`."""
        return int(step) * self.global_batch + self.process_index * self.local + int(j)
