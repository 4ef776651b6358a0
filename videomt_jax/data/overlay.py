"""Segmentation overlays: one stable colour per segment/track id, contours, a legend of class names.

`overlay_video` blends each segment's colour into the frames (`round((1 - alpha) * pixel +
alpha * colour)`, half to even), paints segment borders in the full colour, and draws a legend
(Pillow's default font) listing the segments present anywhere in the video, in the top-left
corner. Colours depend only on the id (golden-ratio hue steps), so a track keeps its colour over
the whole video and across calls. Host-side numpy; nothing here is jitted.

Letters: T frames, H/W height/width, S segments, N ids.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

GOLDEN = 0.618033988749895
LEGEND_MARGIN = 4  # pixels between the legend and the frame border, and inside the legend
LEGEND_MIN_FONT = 10  # pixels; the font grows with the frame: height / LEGEND_FONT_DIVISOR
LEGEND_FONT_DIVISOR = 45
LEGEND_MAX_ENTRIES = 20  # further segments are summarised as "+N more"
LEGEND_BACKGROUND = (0, 0, 0, 160)  # RGBA
LEGEND_TEXT = (255, 255, 255, 255)


def _hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Vectorised HSV (all in [0, 1]) -> RGB float [N, 3]."""
    i = np.floor(h * 6.0).astype(np.int64) % 6
    f = h * 6.0 - np.floor(h * 6.0)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    table = np.stack([np.stack(c, -1) for c in ((v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q))])
    return table[i, np.arange(len(h))]


def segment_colors(ids: Sequence[int] | np.ndarray) -> np.ndarray:
    """Deterministic colour per id: uint8 [N, 3]. Hue steps by the golden ratio, saturation and
    value alternate over three levels so neighbouring ids differ strongly."""
    ids = np.asarray(ids, np.int64).reshape(-1)
    hue = np.mod(ids * GOLDEN + 0.11, 1.0)
    sat = np.array([0.85, 0.65, 0.95])[ids % 3]
    val = np.array([0.95, 0.85, 0.75])[(ids // 3) % 3]
    return np.round(_hsv_to_rgb(hue, sat, val) * 255).astype(np.uint8)


def segment_color(segment_id: int) -> tuple[int, int, int]:
    r, g, b = segment_colors([segment_id])[0]
    return int(r), int(g), int(b)


def contour_mask(segmentation: np.ndarray) -> np.ndarray:
    """[..., H, W] ids -> bool: labelled pixels with a 4-neighbour of another id."""
    seg = np.asarray(segmentation)
    edge = np.zeros(seg.shape, bool)
    vertical = seg[..., 1:, :] != seg[..., :-1, :]
    horizontal = seg[..., :, 1:] != seg[..., :, :-1]
    edge[..., 1:, :] |= vertical
    edge[..., :-1, :] |= vertical
    edge[..., :, 1:] |= horizontal
    edge[..., :, :-1] |= horizontal
    return edge & (seg >= 0)


def _label_of(segment_labels: Mapping[int, int] | Sequence[int] | np.ndarray | None, segment_id: int) -> int | None:
    if segment_labels is None:
        return segment_id  # the segmentation holds class ids (semantic maps)
    if isinstance(segment_labels, Mapping):
        label = segment_labels.get(segment_id)
        return None if label is None else int(label)
    labels = np.asarray(segment_labels)
    if labels.ndim != 1:
        raise ValueError(f"segment_labels must be a mapping or a 1-D array indexed by segment id, got shape {labels.shape}")
    return int(labels[segment_id]) if segment_id < len(labels) and labels[segment_id] >= 0 else None


def legend_entries(
    ids: Sequence[int],
    segment_labels: Mapping[int, int] | Sequence[int] | np.ndarray | None,
    id2label: Mapping[int, str] | None,
) -> list[tuple[int, str]]:
    """(segment id, text) per segment: "name #id" with per-segment labels, "name" for class maps."""
    entries = []
    for sid in ids:
        label = _label_of(segment_labels, int(sid))
        name = "?" if label is None else (id2label or {}).get(label, f"class {label}")
        entries.append((int(sid), name if segment_labels is None else f"{name} #{sid}"))
    return entries


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)  # scalable when Pillow has FreeType
    except (TypeError, ValueError, OSError, ImportError):
        return ImageFont.load_default()


def render_legend(
    entries: Sequence[tuple[int, str]], font_size: int = LEGEND_MIN_FONT, max_entries: int = LEGEND_MAX_ENTRIES
) -> np.ndarray:
    """Legend image, uint8 RGBA [h, w, 4]: a colour swatch and a text line per entry."""
    from PIL import Image, ImageDraw

    font = _font(font_size)
    lines = list(entries[:max_entries])
    extra = len(entries) - len(lines)
    texts = [text for _, text in lines] + ([f"+{extra} more"] if extra > 0 else [])
    probe = ImageDraw.Draw(Image.new("RGBA", (1, 1)))
    boxes = [probe.textbbox((0, 0), text or " ", font=font) for text in texts]
    line_h = max(max(b[3] for b in boxes), 8) + 2
    swatch = line_h - 2
    width = LEGEND_MARGIN * 3 + swatch + max(b[2] for b in boxes)
    height = LEGEND_MARGIN * 2 + line_h * len(texts)
    image = Image.new("RGBA", (width, height), LEGEND_BACKGROUND)
    draw = ImageDraw.Draw(image)
    colors = segment_colors([sid for sid, _ in lines]) if lines else np.zeros((0, 3), np.uint8)
    for row, text in enumerate(texts):
        top = LEGEND_MARGIN + row * line_h
        if row < len(lines):
            left = LEGEND_MARGIN
            draw.rectangle([left, top + 1, left + swatch - 1, top + swatch], fill=(*map(int, colors[row]), 255))
        draw.text((LEGEND_MARGIN * 2 + swatch, top), text, fill=LEGEND_TEXT, font=font)
    return np.asarray(image)


def _paste_rgba(frames: np.ndarray, patch: np.ndarray, top: int, left: int) -> None:
    """Alpha-composite an RGBA patch onto every frame in place (clipped to the frame)."""
    h = max(0, min(patch.shape[0], frames.shape[1] - top))
    w = max(0, min(patch.shape[1], frames.shape[2] - left))
    if h == 0 or w == 0:
        return
    rgb = patch[:h, :w, :3].astype(np.float32)
    a = patch[:h, :w, 3:].astype(np.float32) / 255.0
    region = frames[:, top : top + h, left : left + w].astype(np.float32)
    frames[:, top : top + h, left : left + w] = np.rint(region * (1 - a) + rgb * a).astype(np.uint8)


def overlay_video(
    frames: np.ndarray,
    segmentation: np.ndarray,
    segment_labels: Mapping[int, int] | Sequence[int] | np.ndarray | None = None,
    id2label: Mapping[int, str] | None = None,
    alpha: float = 0.5,
    *,
    contours: bool = True,
    legend: bool = True,
) -> np.ndarray:
    """Frames uint8 [T, H, W, 3] + segmentation int [T, H, W] (-1 = none) -> uint8 [T, H, W, 3].

    segment_labels: class id per segment id (a mapping, or an array indexed by segment id with -1
    for unused ids); None when `segmentation` holds class ids itself (semantic maps).
    id2label: class id -> name for the legend (default "class k").
    """
    frames = np.asarray(frames)
    seg = np.asarray(segmentation)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be uint8 (T, H, W, 3), got {frames.dtype} {frames.shape}")
    if seg.shape != frames.shape[:3] or seg.dtype.kind not in "iu":
        raise ValueError(f"segmentation must be integer (T, H, W) = {frames.shape[:3]}, got {seg.dtype} {seg.shape}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    ids = np.unique(seg[seg >= 0])  # [S]
    lookup = np.zeros((int(ids.max()) + 1 if ids.size else 1, 3), np.uint8)
    lookup[ids] = segment_colors(ids)
    out = np.empty_like(frames)
    for t in range(frames.shape[0]):  # frame by frame: float temporaries stay one frame large
        frame_seg = seg[t].astype(np.int64)  # [H, W]
        color = lookup[np.maximum(frame_seg, 0)]  # [H, W, 3]
        blended = np.rint((1.0 - alpha) * frames[t].astype(np.float32) + alpha * color.astype(np.float32))
        out[t] = np.where((frame_seg >= 0)[..., None], blended, frames[t]).astype(np.uint8)
        if contours:
            out[t] = np.where(contour_mask(frame_seg)[..., None], color, out[t])
    if legend and ids.size:
        font_size = max(LEGEND_MIN_FONT, round(frames.shape[1] / LEGEND_FONT_DIVISOR))
        patch = render_legend(legend_entries(ids, segment_labels, id2label), font_size)
        _paste_rgba(out, patch, LEGEND_MARGIN, LEGEND_MARGIN)
    return out
