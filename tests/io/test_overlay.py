"""Overlay pixels: tint, contours and legend swatches of one id share one colour (issue 25.9), and a
big frame blended in bands equals the whole-frame blend."""

from __future__ import annotations

import numpy as np

from videomt_jax.io import overlay as ov

HEIGHT, WIDTH = 120, 90


def frames_and_map() -> tuple[np.ndarray, np.ndarray, dict[int, int]]:
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (2, HEIGHT, WIDTH, 3), dtype=np.uint8)
    seg = np.full((2, HEIGHT, WIDTH), -1, np.int32)
    seg[0, 10:60, 5:50], seg[0, 40:110, 40:85], seg[1, 20:100, 10:80] = 5, 17, 3
    return frames, seg, {5: 4, 17: 0, 3: 4}


def swatches(panel: np.ndarray, count: int) -> list[tuple[int, int, int]]:
    """The colour at the centre of the first `count` legend swatches, read from the panel's pixels."""
    line_h, side = ov._line_metrics(ov._font(ov.legend_font_size(panel.shape[0])))
    centre = [ov.LEGEND_MARGIN + row * line_h + 1 + side // 2 for row in range(count)]
    return [tuple(int(v) for v in panel[y, ov.LEGEND_MARGIN + side // 2]) for y in centre]


def test_tint_contours_and_swatches_share_the_colour():
    frames, seg, labels = frames_and_map()
    names = {0: "circle", 4: "grass"}
    painter = ov.OverlayPainter(HEIGHT, ov.legend_texts_for(names, 20))
    out = painter.paint(frames, seg, labels, names)
    for t in range(2):
        ids = np.unique(seg[t][seg[t] >= 0])  # the legend lists them in this order
        swatch = dict(zip(ids.tolist(), swatches(out[t, :, WIDTH:], len(ids))))
        edges = ov.contour_mask(seg[t])
        for i in ids.tolist():
            colour = np.array(swatch[i], np.float32)
            own = seg[t] == i
            np.testing.assert_array_equal(
                out[t, :, :WIDTH][own & edges], np.broadcast_to(colour, ((own & edges).sum(), 3))
            )
            want = np.rint(0.5 * frames[t][own & ~edges].astype(np.float32) + 0.5 * colour)
            np.testing.assert_array_equal(out[t, :, :WIDTH][own & ~edges], want)
        untouched = seg[t] < 0
        np.testing.assert_array_equal(out[t, :, :WIDTH][untouched], frames[t][untouched])
    assert len({swatch_colour for swatch_colour in swatches(out[0, :, WIDTH:], 2)}) == 2  # two ids, two colours


def test_blend_in_bands_equals_the_whole_frame():
    frames, seg, _ = frames_and_map()
    whole = ov.blend(frames[0], seg[0], 0.4, True, rows=HEIGHT)
    np.testing.assert_array_equal(ov.blend(frames[0], seg[0], 0.4, True, rows=7), whole)
    assert not np.array_equal(whole, frames[0])
