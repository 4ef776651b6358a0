"""Semantic segmentation: confusion matrix, per-class IoU, mIoU, pixel accuracy.

Letters: K classes; label maps of any shape (e.g. [T, H, W] or [N, H, W]).

IoU_k = TP_k / (TP_k + FP_k + FN_k) over pixels whose ground truth is not `ignore_index`.
A class absent from both ground truth and prediction has no IoU (NaN) and is left out of mIoU.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from videomt_jax.metrics.pairs import feed_pairs
from videomt_jax.ops.labels import IGNORE_INDEX


class SemanticAccumulator:
    """Accumulates a [K, K] confusion matrix (rows: ground truth, columns: prediction)."""

    def __init__(self, num_classes: int, ignore_index: int = IGNORE_INDEX):
        if num_classes < 1:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        self.num_classes = int(num_classes)
        self.ignore_index = int(ignore_index)
        self.confusion = np.zeros((num_classes, num_classes), np.int64)  # [K, K]

    def update(self, gt: np.ndarray, pred: np.ndarray) -> None:
        gt, pred = np.asarray(gt), np.asarray(pred)
        if gt.shape != pred.shape:
            raise ValueError(f"ground truth shape {gt.shape} != prediction shape {pred.shape}")
        for name, a in (("ground truth", gt), ("prediction", pred)):
            if not np.issubdtype(a.dtype, np.integer):
                raise TypeError(f"{name} label map must be integer, got {a.dtype}")
        k = self.num_classes
        labeled = gt != self.ignore_index
        g, p = gt[labeled].astype(np.int64), pred[labeled].astype(np.int64)
        if g.size and (g.min() < 0 or g.max() >= k):
            bad = np.unique(g[(g < 0) | (g >= k)])
            raise ValueError(
                f"ground truth labels {bad.tolist()} are outside [0, {k}) and not ignore_index={self.ignore_index}"
            )
        if p.size and (p.min() < 0 or p.max() >= k):
            bad = np.unique(p[(p < 0) | (p >= k)])
            raise ValueError(f"predicted labels {bad.tolist()} at labeled pixels are outside [0, {k})")
        self.confusion += np.bincount(g * k + p, minlength=k * k).reshape(k, k)

    def compute(self) -> dict[str, Any]:
        """{"miou", "iou" [K] (NaN where excluded), "pixel_accuracy", "confusion" [K, K]}."""
        conf = self.confusion
        tp = np.diag(conf).astype(np.float64)
        union = conf.sum(0) + conf.sum(1) - tp
        iou = np.full(self.num_classes, np.nan)
        np.divide(tp, union, out=iou, where=union > 0)
        total = conf.sum()
        return {
            "miou": float(np.nanmean(iou)) if (union > 0).any() else float("nan"),
            "iou": iou,
            "pixel_accuracy": float(tp.sum() / total) if total else float("nan"),
            "confusion": conf.copy(),
        }


def evaluate_semantic(
    gt: np.ndarray | Iterable[np.ndarray],
    pred: np.ndarray | Iterable[np.ndarray],
    num_classes: int,
    *,
    ignore_index: int = IGNORE_INDEX,
) -> dict[str, Any]:
    """mIoU of integer label maps: two arrays of one shape, or two sequences of paired arrays."""
    acc = SemanticAccumulator(num_classes, ignore_index)
    feed_pairs(acc.update, gt, pred, "maps")
    return acc.compute()
