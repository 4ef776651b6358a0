"""The authors' training augmentation for real video datasets, one draw per clip, on a fixed canvas.

Letters: T frames, M instances, H/W input size, h/w size after resizing, Hc/Wc canvas size.

What the authors' dataset mappers do to a training clip (every frame, mask and label map alike):
1. YouTube-VIS / OVIS only, with probability `crop_prob` (0.5): resize the shorter edge to a choice of
   `crop_resize` (400, 500, 600; longer edge at most 1333), then crop a box whose height and width are
   drawn uniformly in [`crop_range[0]`, min(side, `crop_range[1]`)] ("absolute_range", (384, 600)).
2. Resize the shorter edge to a choice of `min_sizes`, the longer edge at most `max_size`
   (detectron2 `ResizeShortestEdge`: sizes rounded half up).
3. Horizontal flip with probability `flip_prob` (0.5).
Frames are resized bilinearly and label maps / masks by nearest neighbour, with Pillow (as
detectron2's `ResizeTransform`). The authors then pad each batch (one clip per GPU) at the bottom/right
to a multiple of 32 of its own size; so does `fit_canvas` (with the pixel mean, 0 after normalisation;
masks False; semantic IGNORE_INDEX; panoptic VOID_ID). Under `jit` a batch has one static shape:
`data.batching.collate` puts its clips top-left on one canvas from a bounded set of shape buckets
and records each clip's own size, which the model and the loss keep to (`modeling/content.py`).
A clip larger than the largest canvas `canvas` (a portrait video at VIPSeg sizes) is cropped to it
at a random offset drawn from the same generator.
All randomness comes from the one `numpy.random.Generator` passed in, so a clip is a pure function
of its seed.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from PIL import Image

from videomt_jax.data.batching import Clip
from videomt_jax.ops.labels import IGNORE_INDEX, VOID_ID

Fill = tuple[float, float, float]
SIZE_DIVISIBILITY = 32  # the authors' SIZE_DIVISIBILITY: each clip is padded to a multiple of this


def as_fill(values: Iterable[float]) -> Fill:
    """The padding colour as three floats (one per RGB channel, e.g. a processor's pixel mean)."""
    fill = tuple(float(v) for v in values)
    if len(fill) != 3:
        raise ValueError(f"a fill colour needs 3 values (R, G, B), got {len(fill)}: {fill}")
    return fill[0], fill[1], fill[2]


@dataclass(frozen=True)
class ClipAugment:
    min_sizes: tuple[int, ...]  # shorter-edge choices (detectron2 MIN_SIZE_TRAIN, "choice")
    max_size: int  # longer edge at most this (MAX_SIZE_TRAIN)
    canvas: tuple[int, int]  # (Hc, Wc): the largest training frame; a larger clip is cropped to it
    flip_prob: float = 0.5
    crop_prob: float = 0.0  # YouTube-VIS / OVIS: 0.5
    crop_resize: tuple[int, ...] = (400, 500, 600)
    crop_resize_max: int = 1333
    crop_range: tuple[int, int] = (384, 600)
    divisor: int = SIZE_DIVISIBILITY  # every clip is padded to a multiple of this

    def __post_init__(self) -> None:
        if not self.min_sizes or min(self.min_sizes) < 1 or self.max_size < 1:
            raise ValueError(
                f"ClipAugment needs positive min_sizes and max_size, got {self.min_sizes}, {self.max_size}"
            )
        if (
            len(self.canvas) != 2
            or min(self.canvas) < 1
            or self.divisor < 1
            or any(c % self.divisor for c in self.canvas)
        ):
            raise ValueError(
                f"ClipAugment.canvas must be (height, width) > 0, multiples of {self.divisor}, got {self.canvas}"
            )
        if not (0 <= self.flip_prob <= 1 and 0 <= self.crop_prob <= 1):
            raise ValueError(f"flip_prob and crop_prob must lie in [0, 1], got {self.flip_prob}, {self.crop_prob}")
        if not 0 < self.crop_range[0] <= self.crop_range[1]:
            raise ValueError(f"crop_range must be 0 < low <= high, got {self.crop_range}")


def shortest_edge_size(hw: tuple[int, int], short: int, max_size: int) -> tuple[int, int]:
    """detectron2 ResizeShortestEdge: shorter edge to `short`, longer edge capped at `max_size`."""
    h, w = hw
    scale = short / min(h, w)
    new_h, new_w = (short, scale * w) if h < w else (scale * h, short)
    if max(new_h, new_w) > max_size:
        cap = max_size / max(new_h, new_w)
        new_h, new_w = new_h * cap, new_w * cap
    return int(new_h + 0.5), int(new_w + 0.5)


def _resize_frames(frames: np.ndarray, hw: tuple[int, int]) -> np.ndarray:  # [T, H, W, 3] -> [T, h, w, 3]
    if frames.shape[1:3] == hw:
        return frames
    size = (hw[1], hw[0])
    return np.stack([np.asarray(Image.fromarray(f).resize(size, Image.Resampling.BILINEAR)) for f in frames])


def _resize_labels(maps: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of [..., H, W] integer or bool maps (Pillow's NEAREST, as detectron2)."""
    if maps.shape[-2:] == hw:
        return maps
    flat = maps.reshape(-1, *maps.shape[-2:])
    src = flat.view(np.uint8) if flat.dtype == bool else flat.astype(np.int32)  # Pillow modes "L" / "I"
    size = (hw[1], hw[0])
    out = [np.asarray(Image.fromarray(m).resize(size, Image.Resampling.NEAREST)) for m in src]
    return (
        np.stack(out).astype(maps.dtype).reshape(*maps.shape[:-2], *hw)
        if out
        else np.zeros((*maps.shape[:-2], *hw), maps.dtype)
    )


def _geometry(clip: Clip, fn) -> Clip:
    """Apply `fn(array, is_frames)` to frames, masks and label maps alike."""
    return clip._replace(
        frames=fn(clip.frames, True),
        masks=fn(clip.masks, False),
        semantic=None if clip.semantic is None else fn(clip.semantic, False),
        panoptic=None if clip.panoptic is None else fn(clip.panoptic, False),
    )


def _resize(clip: Clip, hw: tuple[int, int]) -> Clip:
    def fn(a: np.ndarray, is_frames: bool) -> np.ndarray:
        return _resize_frames(a, hw) if is_frames else _resize_labels(a, hw)

    return _geometry(clip, fn)


def _crop(clip: Clip, top: int, left: int, hw: tuple[int, int]) -> Clip:
    def fn(a: np.ndarray, is_frames: bool) -> np.ndarray:
        if is_frames:
            return np.ascontiguousarray(a[:, top : top + hw[0], left : left + hw[1]])
        return np.ascontiguousarray(a[..., top : top + hw[0], left : left + hw[1]])

    return _geometry(clip, fn)


def _flip(clip: Clip) -> Clip:
    def fn(a: np.ndarray, is_frames: bool) -> np.ndarray:
        return np.ascontiguousarray(a[:, :, ::-1] if is_frames else a[..., ::-1])

    return _geometry(clip, fn)


def fit_canvas(
    clip: Clip, canvas: tuple[int, int], rng: np.random.Generator, fill: Fill, divisor: int = SIZE_DIVISIBILITY
) -> Clip:
    """Crop (random offset) what exceeds `canvas`, then pad at the bottom/right to a multiple of `divisor`."""
    (h, w), (ch, cw) = clip.image_hw, canvas
    if h > ch or w > cw:
        top, left = int(rng.integers(0, max(h - ch, 0) + 1)), int(rng.integers(0, max(w - cw, 0) + 1))
        clip = _crop(clip, top, left, (min(h, ch), min(w, cw)))
        h, w = clip.image_hw
    ch, cw = -(-h // divisor) * divisor, -(-w // divisor) * divisor
    if (h, w) == (ch, cw):
        return clip
    t, m = clip.num_frames, clip.num_instances
    frames = np.empty((t, ch, cw, 3), np.uint8)
    frames[:] = np.clip(np.round(np.asarray(fill, np.float32)), 0, 255).astype(np.uint8)
    frames[:, :h, :w] = clip.frames
    masks = np.zeros((t, m, ch, cw), bool)
    masks[:, :, :h, :w] = clip.masks

    def pad_map(label_map: np.ndarray | None, value: int) -> np.ndarray | None:
        if label_map is None:
            return None
        out = np.full((t, ch, cw), value, np.int32)
        out[:, :h, :w] = label_map
        return out

    return clip._replace(
        frames=frames,
        masks=masks,
        semantic=pad_map(clip.semantic, IGNORE_INDEX),
        panoptic=pad_map(clip.panoptic, VOID_ID),
    )


def augment_video_clip(clip: Clip, cfg: ClipAugment, rng: np.random.Generator, fill: Fill) -> Clip:
    """The authors' mapper steps 1-3 (module docstring) with one draw per clip, then `fit_canvas`."""
    return fit_canvas(augment_geometry(clip, cfg, rng), cfg.canvas, rng, fill, cfg.divisor)


@dataclass(frozen=True)
class GeometryDraw:
    """One clip's draw of steps 1-3: what `augment_geometry` does to it, decided from its size alone."""

    crop_resize: tuple[int, int] | None  # step 1: resized (h, w) before the crop, or None (no crop branch)
    crop_box: tuple[int, int, int, int] | None  # step 1: (top, left, height, width)
    size: tuple[int, int]  # step 2: the resized (h, w)
    flip: bool  # step 3


def draw_geometry(hw: tuple[int, int], cfg: ClipAugment, rng: np.random.Generator) -> GeometryDraw:
    """The random choices of steps 1-3 for a clip of size `hw` (the generator is advanced as they are made)."""
    crop_resize, crop_box = None, None
    if rng.random() < cfg.crop_prob:
        short = int(rng.choice(cfg.crop_resize))
        crop_resize = shortest_edge_size(hw, short, cfg.crop_resize_max)
        h, w = crop_resize
        lo, hi = cfg.crop_range
        crop_h = int(rng.integers(min(h, lo), min(h, hi) + 1))
        crop_w = int(rng.integers(min(w, lo), min(w, hi) + 1))
        top, left = int(rng.integers(0, h - crop_h + 1)), int(rng.integers(0, w - crop_w + 1))
        crop_box, hw = (top, left, crop_h, crop_w), (crop_h, crop_w)
    short = int(rng.choice(cfg.min_sizes))
    size = shortest_edge_size(hw, short, cfg.max_size)
    return GeometryDraw(crop_resize, crop_box, size, bool(rng.random() < cfg.flip_prob))


def augment_geometry(clip: Clip, cfg: ClipAugment, rng: np.random.Generator) -> Clip:
    """Steps 1-3 of the module docstring (crop branch, resize, flip), one draw for the whole clip."""
    draw = draw_geometry(clip.image_hw, cfg, rng)
    if draw.crop_resize is not None and draw.crop_box is not None:
        top, left, crop_h, crop_w = draw.crop_box
        clip = _crop(_resize(clip, draw.crop_resize), top, left, (crop_h, crop_w))
    clip = _resize(clip, draw.size)
    return _flip(clip) if draw.flip else clip


def eval_input_size(
    hw: tuple[int, int], min_size: int, max_size: int, divisor: int
) -> tuple[tuple[int, int], tuple[int, int]]:
    """Evaluation input: (resized (h, w), padded (h, w) up to a multiple of `divisor`)."""
    h, w = shortest_edge_size(hw, min_size, max_size)
    return (h, w), (-(-h // divisor) * divisor, -(-w // divisor) * divisor)
