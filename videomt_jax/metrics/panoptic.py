"""Panoptic quality (PQ, SQ, RQ), frame by frame, accumulated over a dataset as panopticapi does.

Letters: N frames (or images), H/W size, C classes.

Panoptic maps hold segment ids `class * label_divisor + instance` (stuff: any instance number,
one segment per id) and `void_id` for void pixels (ground truth) / unassigned pixels (prediction).
In each frame a predicted and a ground-truth segment of the same class match when
IoU > 0.5, where the predicted pixels on ground-truth void are left out of the union. Unmatched
ground truth counts as FN; an unmatched prediction counts as FP unless more than half of it lies
on void. Per class: PQ = sum IoU(TP) / (TP + FP/2 + FN/2), SQ = sum IoU(TP) / TP,
RQ = TP / (TP + FP/2 + FN/2), summed over all frames; averages run over the classes with
TP + FP + FN > 0 (all, things, stuff). Crowd regions are not modelled.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from videomt_jax.metrics.pairs import feed_pairs
from videomt_jax.ops.labels import LABEL_DIVISOR, VOID_ID


def pq_from_counts(
    tp: np.ndarray, fp: np.ndarray, fn: np.ndarray, iou: np.ndarray, classes: Sequence[int]
) -> dict[str, Any]:
    """PQ / SQ / RQ averaged over `classes` from per-class counts [K] (TP, FP, FN, summed TP IoU);
    classes with TP + FP + FN = 0 are left out, SQ is 0 where TP = 0 (panopticapi's rules)."""
    cls = np.asarray([c for c in classes if tp[c] + fp[c] + fn[c] > 0], np.int64)
    if cls.size == 0:
        return {"pq": float("nan"), "sq": float("nan"), "rq": float("nan"), "n": 0}
    tp, fp, fn, iou = tp[cls], fp[cls], fn[cls], iou[cls]
    denom = tp + 0.5 * fp + 0.5 * fn
    sq = np.divide(iou, tp, out=np.zeros(len(cls)), where=tp > 0)
    return {
        "pq": float(np.mean(iou / denom)),
        "sq": float(np.mean(sq)),
        "rq": float(np.mean(tp / denom)),
        "n": int(cls.size),
    }


class PanopticAccumulator:
    def __init__(
        self,
        thing_ids: Sequence[int],
        stuff_ids: Sequence[int],
        *,
        label_divisor: int = LABEL_DIVISOR,
        void_id: int = VOID_ID,
    ):
        overlap = set(thing_ids) & set(stuff_ids)
        if overlap:
            raise ValueError(f"classes {sorted(overlap)} are listed as both thing and stuff")
        self.thing_ids = tuple(int(c) for c in thing_ids)
        self.stuff_ids = tuple(int(c) for c in stuff_ids)
        self.classes = tuple(sorted(self.thing_ids + self.stuff_ids))
        if not self.classes:
            raise ValueError("PanopticAccumulator needs at least one class")
        self.label_divisor = int(label_divisor)
        self.void_id = int(void_id)
        size = max(self.classes) + 1
        self.tp = np.zeros(size, np.int64)  # [C']
        self.fp = np.zeros(size, np.int64)
        self.fn = np.zeros(size, np.int64)
        self.iou = np.zeros(size, np.float64)
        self._known = np.zeros(size, bool)
        self._known[list(self.classes)] = True

    def _segments(self, panoptic: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        ids, inverse, areas = np.unique(panoptic, return_inverse=True, return_counts=True)
        segment = ids != self.void_id
        cls = ids // self.label_divisor
        bad = segment & ((cls < 0) | (cls >= len(self._known)) | ~self._known[np.clip(cls, 0, len(self._known) - 1)])
        if bad.any():
            raise ValueError(
                f"{name} segment ids {ids[bad].tolist()} map to classes {cls[bad].tolist()}, "
                f"which are neither thing nor stuff classes "
                f"(label_divisor={self.label_divisor}, void_id={self.void_id})"
            )
        return ids, inverse.reshape(panoptic.shape), areas

    def update_frame(self, gt: np.ndarray, pred: np.ndarray) -> None:
        """One frame: gt, pred [H, W] integer panoptic maps."""
        g_ids, g_inv, g_area = self._segments(gt, "ground truth")
        p_ids, p_inv, p_area = self._segments(pred, "prediction")
        pairs = np.bincount((g_inv * len(p_ids) + p_inv).ravel(), minlength=len(g_ids) * len(p_ids))
        inter = pairs.reshape(len(g_ids), len(p_ids))  # [Gs, Ps] pixel counts (void rows/cols included)
        g_seg, p_seg = g_ids != self.void_id, p_ids != self.void_id
        g_cls, p_cls = g_ids // self.label_divisor, p_ids // self.label_divisor
        on_void = inter[~g_seg].sum(axis=0)  # [Ps] predicted pixels on ground-truth void
        union = g_area[:, None] + p_area[None, :] - inter - on_void[None, :]
        iou = np.divide(inter, union, out=np.zeros(inter.shape), where=union > 0)
        match = (iou > 0.5) & g_seg[:, None] & p_seg[None, :] & (g_cls[:, None] == p_cls[None, :])
        # IoU > 0.5 makes matches unique: each segment has at most one partner.
        gi, pi = np.nonzero(match)
        np.add.at(self.tp, g_cls[gi], 1)
        np.add.at(self.iou, g_cls[gi], iou[gi, pi])
        g_unmatched = g_seg & ~match.any(axis=1)
        np.add.at(self.fn, g_cls[g_unmatched], 1)
        p_unmatched = p_seg & ~match.any(axis=0) & (on_void <= 0.5 * p_area)
        np.add.at(self.fp, p_cls[p_unmatched], 1)

    def update(self, gt: np.ndarray, pred: np.ndarray) -> None:
        """Frames [..., H, W] (e.g. [T, H, W]); every frame is scored separately."""
        gt, pred = np.asarray(gt), np.asarray(pred)
        if gt.shape != pred.shape or gt.ndim < 2:
            raise ValueError(f"ground truth {gt.shape} and prediction {pred.shape} must be equal [..., H, W] shapes")
        for name, a in (("ground truth", gt), ("prediction", pred)):
            if not np.issubdtype(a.dtype, np.integer):
                raise TypeError(f"{name} panoptic map must be integer, got {a.dtype}")
        h, w = gt.shape[-2:]
        for g, p in zip(gt.reshape(-1, h, w), pred.reshape(-1, h, w)):
            self.update_frame(g.astype(np.int64), p.astype(np.int64))

    def _average(self, classes: Sequence[int]) -> dict[str, float]:
        return pq_from_counts(self.tp, self.fp, self.fn, self.iou, classes)

    def compute(self) -> dict[str, Any]:
        """{"pq", "sq", "rq", "n", "things": {...}, "stuff": {...}, "per_class": {c: {...}}}."""
        out: dict[str, Any] = dict(self._average(self.classes))
        out["things"] = self._average(self.thing_ids)
        out["stuff"] = self._average(self.stuff_ids)
        out["per_class"] = {}
        for c in self.classes:
            if self.tp[c] + self.fp[c] + self.fn[c] > 0:
                stats = self._average([c])
                stats.pop("n")
                stats.update(tp=int(self.tp[c]), fp=int(self.fp[c]), fn=int(self.fn[c]))
                out["per_class"][c] = stats
        return out


def evaluate_panoptic(
    gt: np.ndarray | Iterable[np.ndarray],
    pred: np.ndarray | Iterable[np.ndarray],
    *,
    thing_ids: Sequence[int],
    stuff_ids: Sequence[int],
    label_divisor: int = LABEL_DIVISOR,
    void_id: int = VOID_ID,
) -> dict[str, Any]:
    """PQ of panoptic maps: two arrays [..., H, W] or two sequences of paired arrays (per video)."""
    acc = PanopticAccumulator(thing_ids, stuff_ids, label_divisor=label_divisor, void_id=void_id)
    feed_pairs(acc.update, gt, pred, "videos")
    return acc.compute()


def panoptic_from_segments(
    segmentation: np.ndarray,
    segment_labels: np.ndarray,
    stuff_ids: Sequence[int],
    *,
    label_divisor: int = LABEL_DIVISOR,
    void_id: int = VOID_ID,
) -> np.ndarray:
    """Post-processing output -> panoptic ids.

    segmentation [..., H, W] int: index into the segments (-1 = none); segment_labels [S] class
    ids. Thing segment s gets `class * label_divisor + s + 1`; stuff segments of one class merge
    into `class * label_divisor`.
    """
    segment_labels = np.asarray(segment_labels, np.int64)
    if segmentation.size and segmentation.max() >= len(segment_labels):
        raise ValueError(f"segmentation refers to segment {segmentation.max()} but only {len(segment_labels)} labels")
    is_stuff = np.isin(segment_labels, np.asarray(list(stuff_ids), np.int64))
    ids = segment_labels * label_divisor + np.where(is_stuff, 0, np.arange(1, len(segment_labels) + 1))
    table = np.append(ids, void_id)  # index -1 -> void
    return table[np.where(segmentation < 0, -1, segmentation)].astype(np.int32)
