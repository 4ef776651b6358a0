"""Segmentation overlays: one stable colour per segment/track id, contours, a legend of class names.

`overlay_video` blends each segment's colour into the frames (`round((1 - alpha) * pixel +
alpha * colour)`, half to even) and paints segment borders in the full colour. The legend never
covers the picture: it is a panel to the right of each frame (so a legend makes the video
`panel` pixels wider) listing that frame's segments, colour swatch and "name #id" (or the class
name for class maps), in Pillow's default font scaled with the frame height. `OverlayPainter`
does the same chunk by chunk for a video of any length (its panel width is fixed up front from
the texts that may appear). Colours depend only on the id (golden-ratio hue steps), so a track
keeps its colour over the whole video and across calls. Host-side numpy; nothing here is jitted.

Letters: T frames, H/W height/width, P legend panel width, S segments, N ids.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence

import numpy as np

GOLDEN = 0.618033988749895
LEGEND_MARGIN = 4  # pixels around and between the legend's swatches and text
LEGEND_MIN_FONT = 10  # pixels; the font grows with the frame: height / LEGEND_FONT_DIVISOR
LEGEND_FONT_DIVISOR = 45
LEGEND_BACKGROUND = (24, 24, 24)  # RGB of the panel
LEGEND_TEXT = (255, 255, 255)
LEGEND_CACHE = 64  # rendered panels kept (consecutive frames usually list the same segments)
BLEND_ROWS = 256  # rows of a frame blended at a time (float temporaries: BLEND_ROWS x W x 3 x 4 bytes, a few)


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
        raise ValueError(
            f"segment_labels must be a mapping or a 1-D array indexed by segment id, got shape {labels.shape}"
        )
    return int(labels[segment_id]) if segment_id < len(labels) and labels[segment_id] >= 0 else None


def legend_entries(
    ids: Sequence[int] | np.ndarray,
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


def legend_font_size(height: int) -> int:
    return max(LEGEND_MIN_FONT, round(height / LEGEND_FONT_DIVISOR))


def _line_metrics(font) -> tuple[int, int]:
    """(line height, swatch side) in pixels for `font`."""
    from PIL import Image, ImageDraw

    box = ImageDraw.Draw(Image.new("RGB", (1, 1))).textbbox((0, 0), "Ag#0", font=font)
    line_h = max(int(box[3]), 8) + 2  # Pillow types boxes as float; at an integer origin they are whole pixels
    return line_h, line_h - 2


def legend_panel_width(texts: Sequence[str], height: int) -> int:
    """Width (even, for yuv420p video) of a legend panel that fits the longest of `texts`."""
    from PIL import Image, ImageDraw

    font = _font(legend_font_size(height))
    _, swatch = _line_metrics(font)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    text_w = max((int(probe.textbbox((0, 0), t or " ", font=font)[2]) for t in [*texts, "+99 more"]), default=0)
    width = LEGEND_MARGIN * 3 + swatch + text_w
    return width + width % 2


def render_legend(entries: Sequence[tuple[int, str]], height: int, width: int) -> np.ndarray:
    """Legend panel, uint8 RGB [height, width, 3]: a colour swatch and a text line per entry, as many
    as fit (the rest summarised as "+N more")."""
    from PIL import Image, ImageDraw

    font = _font(legend_font_size(height))
    line_h, swatch = _line_metrics(font)
    rows = max(1, (height - 2 * LEGEND_MARGIN) // line_h)
    lines = list(entries) if len(entries) <= rows else list(entries[: rows - 1])
    extra = len(entries) - len(lines)
    texts = [text for _, text in lines] + ([f"+{extra} more"] if extra > 0 else [])
    image = Image.new("RGB", (width, height), LEGEND_BACKGROUND)
    draw = ImageDraw.Draw(image)
    colors = segment_colors([sid for sid, _ in lines]) if lines else np.zeros((0, 3), np.uint8)
    for row, text in enumerate(texts):
        top = LEGEND_MARGIN + row * line_h
        if row < len(lines):
            draw.rectangle(
                [LEGEND_MARGIN, top + 1, LEGEND_MARGIN + swatch - 1, top + swatch], fill=tuple(map(int, colors[row]))
            )
        draw.text((LEGEND_MARGIN * 2 + swatch, top), text, fill=LEGEND_TEXT, font=font)
    return np.asarray(image)


def _check(frames: np.ndarray, seg: np.ndarray, alpha: float) -> None:
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be uint8 (T, H, W, 3), got {frames.dtype} {frames.shape}")
    if seg.shape != frames.shape[:3] or seg.dtype.kind not in "iu":
        raise ValueError(f"segmentation must be integer (T, H, W) = {frames.shape[:3]}, got {seg.dtype} {seg.shape}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")


def blend(frame: np.ndarray, seg: np.ndarray, alpha: float, contours: bool, rows: int = BLEND_ROWS) -> np.ndarray:
    """One frame uint8 [H, W, 3] + ids [H, W] (-1 = none) -> blended uint8 [H, W, 3].

    Done `rows` rows at a time, so the float temporaries of a big frame stay a band large (the
    result does not depend on `rows`: every pixel is computed alone; contours from the whole map)."""
    edges = contour_mask(seg) if contours else None  # [H, W] bool
    out = np.empty(frame.shape, np.uint8)
    for top in range(0, seg.shape[0], rows):
        band = slice(top, top + rows)
        ids_map = np.asarray(seg[band], np.int64)
        ids, inverse = np.unique(np.maximum(ids_map, 0), return_inverse=True)
        color = segment_colors(ids)[inverse.reshape(ids_map.shape)]  # [r, W, 3]: the legend's swatch colours
        pixels = frame[band]
        blended = np.rint((1.0 - alpha) * pixels.astype(np.float32) + alpha * color.astype(np.float32))
        painted = np.where((ids_map >= 0)[..., None], blended, pixels).astype(np.uint8)
        if edges is not None:
            painted = np.where(edges[band][..., None], color, painted)
        out[band] = painted
    return out


class OverlayPainter:
    """Paints overlays chunk by chunk; with a legend, every frame gets a panel `panel` pixels wide.

    legend_texts: every text the legend may show (sizes the panel once; `legend_texts_for` builds
    them); None or empty: no legend, frames keep their size.
    """

    def __init__(
        self, height: int, legend_texts: Sequence[str] | None = None, alpha: float = 0.5, contours: bool = True
    ):
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
        self.height, self.alpha, self.contours = int(height), float(alpha), contours
        self.panel = legend_panel_width(legend_texts, self.height) if legend_texts else 0
        self._legends: OrderedDict[tuple, np.ndarray] = OrderedDict()

    def _legend(self, entries: list[tuple[int, str]]) -> np.ndarray:
        key = tuple(entries)
        if key not in self._legends:
            self._legends[key] = render_legend(entries, self.height, self.panel)
            while len(self._legends) > LEGEND_CACHE:
                self._legends.popitem(last=False)
        self._legends.move_to_end(key)
        return self._legends[key]

    def paint(
        self,
        frames: np.ndarray,
        segmentation: np.ndarray,
        segment_labels: Mapping[int, int] | Sequence[int] | np.ndarray | None = None,
        id2label: Mapping[int, str] | None = None,
    ) -> np.ndarray:
        """uint8 [t, H, W, 3] + int [t, H, W] -> uint8 [t, H, W + P, 3] (arguments as `overlay_video`)."""
        frames, seg = np.asarray(frames), np.asarray(segmentation)
        _check(frames, seg, self.alpha)
        if frames.shape[1] != self.height:
            raise ValueError(f"frames are {frames.shape[1]} pixels high, the painter was made for {self.height}")
        t, h, w, _ = frames.shape
        out = np.empty((t, h, w + self.panel, 3), np.uint8)
        for i in range(t):  # frame by frame: float temporaries stay one frame large
            out[i, :, :w] = blend(frames[i], seg[i], self.alpha, self.contours)
            if self.panel:
                ids = np.unique(seg[i][seg[i] >= 0])
                out[i, :, w:] = self._legend(legend_entries(ids, segment_labels, id2label))
        return out


def legend_texts_for(id2label: Mapping[int, str] | None, max_id: int | None) -> list[str]:
    """Every legend text a video can show: class names (max_id None: class maps), else "name #max_id"
    (the widest id) for each class name and for an unknown class."""
    names = [*(id2label or {}).values(), "?"]
    return names if max_id is None else [f"{name} #{max_id}" for name in names]


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
    """Frames uint8 [T, H, W, 3] + segmentation int [T, H, W] (-1 = none) -> uint8 [T, H, W + P, 3].

    segment_labels: class id per segment id (a mapping, or an array indexed by segment id with -1
    for unused ids); None when `segmentation` holds class ids itself (semantic maps).
    id2label: class id -> name for the legend (default "class k").
    legend: a panel to the right of each frame (P pixels wide, sized for the video's segments)
    listing the segments of that frame; False: no panel, P = 0.
    """
    frames, seg = np.asarray(frames), np.asarray(segmentation)
    _check(frames, seg, alpha)
    ids = np.unique(seg[seg >= 0])  # [S]
    texts = [text for _, text in legend_entries(ids, segment_labels, id2label)] if legend else None
    return OverlayPainter(frames.shape[1], texts, alpha, contours).paint(frames, seg, segment_labels, id2label)
