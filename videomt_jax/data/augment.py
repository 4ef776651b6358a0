"""Clip-consistent augmentation: horizontal flip, random scale, crop/pad to a fixed size.

Letters: T frames, M instances, H/W input size, h/w output size.

One set of parameters is drawn per clip and applied to every frame, mask and label map, so
objects keep their identity and motion. Scaling is large-scale-jitter style: the clip is first
scaled to fit the output size, then by a random factor in `scale_range`; a larger result is
cropped at a random offset, a smaller one padded at the bottom/right (frames with `fill`, by default
the default processor's mean colour, i.e. 0 after normalisation; masks False; semantic
IGNORE_INDEX; panoptic VOID_ID).
Frames are resampled bilinearly (half-pixel centres), label maps and masks by nearest neighbour.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from videomt_jax.data.batching import Clip, validate_clip
from videomt_jax.ops.labels import IGNORE_INDEX, VOID_ID
from videomt_jax.processing import default_processor

Fill = tuple[float, float, float]  # 0..255 RGB padding colour
DEFAULT_FILL: Fill = default_processor().pixel_mean


@dataclass(frozen=True)
class AugmentConfig:
    output_size: tuple[int, int] | None = None  # (h, w); None keeps the input size
    flip_prob: float = 0.5
    scale_range: tuple[float, float] = (0.5, 1.5)  # factor on top of "fit into output_size"

    def __post_init__(self) -> None:
        if not 0.0 <= self.flip_prob <= 1.0:
            raise ValueError(f"flip_prob must be in [0, 1], got {self.flip_prob}")
        lo, hi = self.scale_range
        if not 0 < lo <= hi:
            raise ValueError(f"scale_range must satisfy 0 < low <= high, got {self.scale_range}")
        if self.output_size is not None and min(self.output_size) < 1:
            raise ValueError(f"output_size must be positive, got {self.output_size}")


class AugmentParams(NamedTuple):
    flip: bool
    scaled_hw: tuple[int, int]  # size of the scaled clip before crop/pad
    offset: tuple[int, int]  # top-left corner of the crop in the scaled clip (0 when padding)
    output_hw: tuple[int, int]


def sample_params(input_hw: tuple[int, int], cfg: AugmentConfig, rng: np.random.Generator) -> AugmentParams:
    h, w = input_hw
    out_h, out_w = cfg.output_size if cfg.output_size is not None else (h, w)
    flip = bool(rng.random() < cfg.flip_prob)
    scale = min(out_h / h, out_w / w) * rng.uniform(*cfg.scale_range)
    scaled = (max(1, int(round(h * scale))), max(1, int(round(w * scale))))
    top = int(rng.integers(0, max(scaled[0] - out_h, 0) + 1))
    left = int(rng.integers(0, max(scaled[1] - out_w, 0) + 1))
    offset = (top, left)
    return AugmentParams(flip, scaled, offset, (int(out_h), int(out_w)))


def _axis_maps(size_in: int, size_scaled: int, offset: int, size_out: int, flip: bool):
    """Per output index along one axis: nearest source, bilinear (lo, hi, weight), inside mask."""
    scaled = np.arange(size_out) + offset  # coordinate in the scaled image
    inside = scaled < size_scaled
    src = (scaled + 0.5) * (size_in / size_scaled) - 0.5  # continuous source coordinate
    if flip:
        src = size_in - 1 - src
    nearest = np.clip(np.floor(src + 0.5), 0, size_in - 1).astype(np.int64)
    src = np.clip(src, 0, size_in - 1)
    lo = np.floor(src).astype(np.int64)
    hi = np.minimum(lo + 1, size_in - 1)
    return nearest, lo, hi, (src - lo).astype(np.float32), inside


def apply_params(clip: Clip, params: AugmentParams, fill: Fill = DEFAULT_FILL) -> Clip:
    """Apply one parameter set to every frame, mask and label map of `clip` (padding frames with `fill`)."""
    validate_clip(clip)
    h, w = clip.image_hw
    out_h, out_w = params.output_hw
    ny, y0, y1, wy, in_y = _axis_maps(h, params.scaled_hw[0], params.offset[0], out_h, False)
    nx, x0, x1, wx, in_x = _axis_maps(w, params.scaled_hw[1], params.offset[1], out_w, params.flip)
    inside = in_y[:, None] & in_x[None, :]  # [h, w]

    frames = clip.frames.astype(np.float32)
    wy4, wx4 = wy[None, :, None, None], wx[None, None, :, None]
    top = frames[:, y0][:, :, x0] * (1 - wx4) + frames[:, y0][:, :, x1] * wx4
    bottom = frames[:, y1][:, :, x0] * (1 - wx4) + frames[:, y1][:, :, x1] * wx4
    out = top * (1 - wy4) + bottom * wy4  # [T, h, w, 3]
    out = np.where(inside[None, :, :, None], out, np.asarray(fill, np.float32))
    frames = np.clip(np.round(out), 0, 255).astype(np.uint8)

    masks = clip.masks[:, :, ny][:, :, :, nx] & inside  # [T, M, h, w]

    def relabel(label_map: np.ndarray | None, fill: int) -> np.ndarray | None:
        if label_map is None:
            return None
        return np.where(inside, label_map[:, ny][:, :, nx], fill).astype(np.int32)

    return clip._replace(
        frames=frames,
        masks=masks,
        semantic=relabel(clip.semantic, IGNORE_INDEX),
        panoptic=relabel(clip.panoptic, VOID_ID),
    )


def augment_clip(clip: Clip, cfg: AugmentConfig, rng: np.random.Generator | int, fill: Fill = DEFAULT_FILL) -> Clip:
    """Draw one parameter set from `rng` (a Generator or a seed) and apply it to the clip.

    fill: padding colour on 0..255, the model processor's `pixel_mean` (0 after normalisation)."""
    if not isinstance(rng, np.random.Generator):
        rng = np.random.default_rng(rng)
    return apply_params(clip, sample_params(clip.image_hw, cfg, rng), fill)
