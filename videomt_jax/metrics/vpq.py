"""Video panoptic quality (VPQ) as the authors score VIPSeg (tue-mps/videomt `utils/eval_vpq_vspw.py`).

A tube is a panoptic id over `n` consecutive frames. For each tube length n and every window of
n consecutive frames, ground-truth and predicted tubes are matched as segments are in PQ (same
class, tube IoU > 0.5, predicted pixels on ground-truth void left out of the union); TP / FP / FN
and the matched IoU are summed per class over all windows of all videos, then PQ / SQ / RQ per
class and their means as in panopticapi. VPQ is the mean of the tube lengths' figures.

What the script does, and this module does too (line numbers: `utils/eval_vpq_vspw.py`):
- tube lengths 1, 2, 4, 6, 8 frames (line 449), VPQ = plain mean of the five PQs, for all, things
  and stuff separately (lines 463-465); the script prints them x100, we return fractions;
- windows start at every frame, stride 1, overlapping: starts 0 .. T - n (line 114); a video with
  fewer than n frames has no window of length n and adds nothing to that length's figure;
- a tube's area and its intersections are summed over the window's frames; a segment counts in a
  window when it has pixels in at least one of its frames (Step 2, lines 166-177);
- union = |gt| + |pred| - |gt & pred| - |pred on void| (line 209); TP when IoU > 0.5 (line 214);
- an unmatched predicted tube is not a FP when more than half of it lies on void (line 243);
- per-class averages skip classes with TP + FP + FN = 0 (line 78) and divide by the number kept;
  SQ of a class with TP = 0 is 0 (pq_average).

Conventions of the inputs (ours) vs the script's:
- void is `void_id` (script: id 0 of the RGB-coded PNGs, line 110); any other id is a segment of
  class `id // label_divisor` (script: `category_id` from the JSON). Stuff of one class is one
  segment per frame and keeps its id over frames, as in VIPSeg's panoptic PNGs.
- crowd: the script skips `iscrowd` ground truth (lines 203, 227-241); VIPSeg's converter writes
  iscrowd = 0 for every segment, and our maps carry no crowd flag, so no segment is crowd here.
- where no class has TP + FP + FN > 0 (e.g. no video has n frames, or no stuff class), the script
  divides by zero (line 95); we return NaN for that figure, and VPQ is then NaN too.
No plain bug in this script affects our inputs; no corrected figure is needed.

With one-frame tubes the figures equal `metrics.panoptic.evaluate_panoptic` (per-frame PQ).

Letters: T frames, H/W size, W windows (T - n + 1), G/P distinct ground-truth/predicted ids of a
video (void included), U distinct (gt, pred) id pairs that overlap somewhere in the video, C classes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from videomt_jax.metrics.panoptic import pq_from_counts
from videomt_jax.metrics.video_inputs import ClassTable, check_videos
from videomt_jax.ops.labels import LABEL_DIVISOR, VOID_ID

VPQ_TUBE_LENGTHS = (1, 2, 4, 6, 8)  # eval_vpq_vspw.py line 449


class _Overlaps:
    """Pixel counts of every overlapping (gt id, pred id) pair, per frame, of one video."""

    def __init__(self, pred: np.ndarray, gt: np.ndarray, table: ClassTable):
        t = gt.shape[0]
        self.g_ids, g_inv = np.unique(gt, return_inverse=True)  # [G], [T*H*W]
        self.p_ids, p_inv = np.unique(pred, return_inverse=True)  # [P]
        g, p = len(self.g_ids), len(self.p_ids)
        frame = np.repeat(np.arange(t, dtype=np.int64), gt[0].size)  # [T*H*W]
        code = (frame * g + g_inv.reshape(-1)) * p + p_inv.reshape(-1)
        codes, counts = np.unique(code, return_counts=True)
        pairs, pair_index = np.unique(codes % (g * p), return_inverse=True)  # [U]
        self.per_frame = np.zeros((t, len(pairs)), np.int64)  # [T, U]
        self.per_frame[codes // (g * p), pair_index.reshape(-1)] = counts
        self.pair_g, self.pair_p = pairs // p, pairs % p  # [U]
        self.g_void, self.p_void = self.g_ids == table.void_id, self.p_ids == table.void_id  # [G], [P]
        self.g_cls = np.full(g, -1, np.int64)
        self.g_cls[~self.g_void] = table.classes_of(self.g_ids[~self.g_void], "ground truth")
        self.p_cls = np.full(p, -1, np.int64)
        self.p_cls[~self.p_void] = table.classes_of(self.p_ids[~self.p_void], "prediction")

    def window_sums(self, n: int) -> np.ndarray:
        """Pair pixel counts summed over each window of n frames: [W, U]."""
        cum = np.concatenate([np.zeros((1, self.per_frame.shape[1]), np.int64), np.cumsum(self.per_frame, axis=0)])
        return cum[n:] - cum[:-n]


class _Stats:
    """Per-class TP / FP / FN counts and summed TP IoU."""

    def __init__(self, size: int):
        self.tp, self.fp, self.fn = (np.zeros(size, np.int64) for _ in range(3))  # [C']
        self.iou = np.zeros(size, np.float64)
        self.windows = 0

    def add_windows(self, ov: _Overlaps, n: int) -> None:
        inter = ov.window_sums(n)  # [W, U]
        w, size = inter.shape[0], len(self.tp)
        if w <= 0:
            return
        self.windows += w
        # Scatter-adds go through the transposed views ([G, W] etc.): one index array on the first
        # axis, the same sums as indexing [:, pairs] (numpy's stubs type `ufunc.at` indices that way).
        area_g = np.zeros((w, len(ov.g_ids)), np.int64)  # [W, G]
        np.add.at(area_g.T, ov.pair_g, inter.T)
        area_p = np.zeros((w, len(ov.p_ids)), np.int64)  # [W, P]
        np.add.at(area_p.T, ov.pair_p, inter.T)
        on_void = np.zeros((w, len(ov.p_ids)), np.int64)  # [W, P] predicted pixels on ground-truth void
        void_pairs = ov.g_void[ov.pair_g]
        np.add.at(on_void.T, ov.pair_p[void_pairs], inter[:, void_pairs].T)

        same = ~ov.g_void[ov.pair_g] & ~ov.p_void[ov.pair_p] & (ov.g_cls[ov.pair_g] == ov.p_cls[ov.pair_p])  # [U]
        union = area_g[:, ov.pair_g] + area_p[:, ov.pair_p] - inter - on_void[:, ov.pair_p]  # [W, U]
        candidate = same[None, :] & (inter > 0)
        iou = np.divide(inter, union, out=np.zeros(inter.shape), where=candidate)
        wi, ui = np.nonzero(candidate & (iou > 0.5))  # IoU > 0.5: at most one partner per tube
        cls = ov.g_cls[ov.pair_g[ui]]
        self.tp += np.bincount(cls, minlength=size)
        self.iou += np.bincount(cls, weights=iou[wi, ui], minlength=size)

        matched_g = np.zeros(area_g.shape, bool)
        matched_g[wi, ov.pair_g[ui]] = True
        matched_p = np.zeros(area_p.shape, bool)
        matched_p[wi, ov.pair_p[ui]] = True
        _, gi = np.nonzero((area_g > 0) & ~ov.g_void[None, :] & ~matched_g)
        self.fn += np.bincount(ov.g_cls[gi], minlength=size)
        fp = (area_p > 0) & ~ov.p_void[None, :] & ~matched_p & (2 * on_void <= area_p)
        _, pi = np.nonzero(fp)
        self.fp += np.bincount(ov.p_cls[pi], minlength=size)

    def average(self, classes: Sequence[int]) -> dict[str, Any]:
        return pq_from_counts(self.tp, self.fp, self.fn, self.iou, classes)

    def per_class(self, classes: Sequence[int]) -> dict[int, dict[str, Any]]:
        out = {}
        for c in classes:
            if self.tp[c] + self.fp[c] + self.fn[c] > 0:
                stats = self.average([c])
                stats.pop("n")
                stats.update(tp=int(self.tp[c]), fp=int(self.fp[c]), fn=int(self.fn[c]), iou=float(self.iou[c]))
                out[c] = stats
        return out


def evaluate_vpq(
    videos: Sequence[tuple[np.ndarray, np.ndarray]],
    thing_ids: Sequence[int],
    stuff_ids: Sequence[int],
    *,
    label_divisor: int = LABEL_DIVISOR,
    void_id: int = VOID_ID,
    tube_lengths: Sequence[int] = VPQ_TUBE_LENGTHS,
) -> dict[str, Any]:
    """VPQ of panoptic videos, as the authors' eval_vpq_vspw.py computes it (see the module doc).

    videos: list of (pred, gt) integer panoptic maps [T, H, W] (`class * label_divisor + instance`,
    `void_id` = void); ids must be stable over the frames of a video (one id = one track).

    Returns fractions in [0, 1] (NaN where no class counts):
      {"vpq", "vpq_things", "vpq_stuff": means over the tube lengths,
       "tube_lengths": [1, 2, 4, 6, 8],
       "by_tube": {n: {"all" | "things" | "stuff": {"pq", "sq", "rq", "n"},
                       "windows": number of n-frame windows scored,
                       "per_class": {class: {"pq", "sq", "rq", "tp", "fp", "fn", "iou"}}}}}
    e.g. result["by_tube"][1]["all"]["pq"] is per-frame PQ, result["by_tube"][8]["things"]["pq"] VPQ_th at 8 frames.
    """
    pairs = check_videos(videos, "evaluate_vpq")
    table = ClassTable(thing_ids, stuff_ids, label_divisor, void_id)
    lengths = [int(n) for n in tube_lengths]
    if not lengths or min(lengths) < 1 or len(set(lengths)) != len(lengths):
        raise ValueError(f"tube_lengths must be distinct positive frame counts, got {tuple(tube_lengths)}")
    stats = {n: _Stats(table.size) for n in lengths}
    for pred, gt in pairs:
        overlaps = _Overlaps(pred, gt, table)
        for n in lengths:
            stats[n].add_windows(overlaps, n)
    by_tube: dict[int, dict[str, Any]] = {
        n: {
            "all": s.average(table.classes),
            "things": s.average(table.thing_ids),
            "stuff": s.average(table.stuff_ids),
            "windows": s.windows,
            "per_class": s.per_class(table.classes),
        }
        for n, s in stats.items()
    }
    mean = lambda group: float(np.mean([by_tube[n][group]["pq"] for n in lengths]))
    return {
        "vpq": mean("all"),
        "vpq_things": mean("things"),
        "vpq_stuff": mean("stuff"),
        "tube_lengths": lengths,
        "by_tube": by_tube,
    }
