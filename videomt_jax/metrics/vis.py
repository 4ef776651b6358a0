"""Video instance segmentation AP, YouTube-VIS protocol.

Letters: T frames, N ground-truth instances, P predicted instances, H/W frame size,
R = 101 recall points, I = 10 IoU thresholds.

A video instance is a mask per frame. IoU(pred, gt) = sum_t |p_t & g_t| / sum_t |p_t | g_t|.
Per video and category, predictions are sorted by score (stable), the best `max_dets` kept and
matched greedily at each IoU threshold 0.50:0.05:0.95 to the unmatched ground truth of highest
IoU >= threshold. Per category the matches of all videos are merged by score; precision is made
monotone and read at 101 recall points (COCO interpolation). AP = mean over thresholds and over
categories that have ground truth; AR@k = the recall with the top-k predictions per video and
category, averaged the same way. Crowd regions and area ranges are not modelled.

`SubsetVideoInstanceAccumulator` scores named subsets of the videos alone and averages their AP
(YouTube-VIS 2022: short and long videos, the authors' `yt2022_evaluate.py`).

Inputs, one entry per video (numpy):
  ground truth: {"masks": [T, N, H, W] bool, "classes": [N] int}
  prediction:   {"masks": [T, P, H, W] bool, "scores": [P] float, "classes": [P] int}
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from videomt_jax.metrics.pairs import feed_pairs

IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)  # [I], same values as pycocotools
RECALL_POINTS = np.linspace(0.0, 1.0, 101)  # [R]
MAX_DETS = 100
AR_DETS = (1, 10, 100)
_PIXEL_CHUNK = 1 << 16  # float32 sums of 0/1 stay exact below 2**24


def mask_iou(pred_masks: np.ndarray, gt_masks: np.ndarray) -> np.ndarray:
    """Spatio-temporal IoU [P, N] of [T, P, H, W] and [T, N, H, W] boolean masks (0 if union empty)."""
    if pred_masks.ndim != 4 or gt_masks.ndim != 4:
        raise ValueError(f"masks must be [T, P, H, W] / [T, N, H, W], got {pred_masks.shape} / {gt_masks.shape}")
    if pred_masks.shape[0] != gt_masks.shape[0] or pred_masks.shape[2:] != gt_masks.shape[2:]:
        raise ValueError(f"prediction masks {pred_masks.shape} and ground truth {gt_masks.shape} differ in T, H or W")
    t, p, h, w = pred_masks.shape
    n = gt_masks.shape[1]
    inter = np.zeros((p, n), np.int64)
    d = pred_masks.reshape(t, p, h * w)
    g = gt_masks.reshape(t, n, h * w)
    for ti in range(t):
        for s in range(0, h * w, _PIXEL_CHUNK):
            dc = d[ti, :, s : s + _PIXEL_CHUNK].astype(np.float32)
            gc = g[ti, :, s : s + _PIXEL_CHUNK].astype(np.float32)
            inter += (dc @ gc.T).astype(np.int64)
    area_d = pred_masks.sum(axis=(0, 2, 3), dtype=np.int64)  # [P]
    area_g = gt_masks.sum(axis=(0, 2, 3), dtype=np.int64)  # [N]
    union = area_d[:, None] + area_g[None, :] - inter
    return np.divide(inter, union, out=np.zeros((p, n)), where=union > 0)


def _greedy_match(ious: np.ndarray) -> np.ndarray:
    """ious [P, N] for score-sorted predictions -> matched flag [I, P] per threshold."""
    matched = np.zeros((len(IOU_THRESHOLDS), ious.shape[0]), bool)
    for ti, thr in enumerate(IOU_THRESHOLDS):
        limit = min(thr, 1 - 1e-10)
        taken = np.zeros(ious.shape[1], bool)
        for d in range(ious.shape[0]):
            cand = np.where(taken | (ious[d] < limit), -1.0, ious[d])
            if cand.size and cand.max() >= 0:
                g = len(cand) - 1 - int(np.argmax(cand[::-1]))  # ties: the last one, as pycocotools
                taken[g] = True
                matched[ti, d] = True
    return matched


def _check(entry: Mapping[str, Any], keys: Sequence[str], where: str) -> dict[str, np.ndarray]:
    missing = [k for k in keys if k not in entry]
    if missing:
        raise ValueError(f"{where} lacks the keys {missing} (has {sorted(entry)})")
    out = {k: np.asarray(entry[k]) for k in keys}
    if out["masks"].dtype != bool or out["masks"].ndim != 4:
        raise ValueError(
            f"{where}: masks must be a bool [T, n, H, W] array, got {out['masks'].dtype} {out['masks'].shape}"
        )
    n = out["masks"].shape[1]
    for k in keys[1:]:
        if out[k].shape != (n,):
            raise ValueError(f"{where}: {k} has shape {out[k].shape}, expected ({n},) to match the masks")
    return out


class VideoInstanceAccumulator:
    """Adds videos one at a time (keeps only match flags and scores); `compute` gives AP/AR."""

    def __init__(self, max_dets: int = MAX_DETS):
        self.max_dets = int(max_dets)
        self._num_gt: dict[int, int] = defaultdict(int)
        self._scores: dict[int, list[np.ndarray]] = defaultdict(list)  # per category, per video [P']
        self._matched: dict[int, list[np.ndarray]] = defaultdict(list)  # per category, per video [I, P']
        self._rank: dict[int, list[np.ndarray]] = defaultdict(list)  # rank of a prediction in its video
        self.num_videos = 0

    def update(self, gt: Mapping[str, Any], pred: Mapping[str, Any]) -> None:
        where = f"video {self.num_videos}"
        g = _check(gt, ("masks", "classes"), f"{where} ground truth")
        p = _check(pred, ("masks", "scores", "classes"), f"{where} prediction")
        (t, n, h, w), pm = g["masks"].shape, p["masks"].shape
        if (pm[0], pm[2], pm[3]) != (t, h, w):
            raise ValueError(f"{where}: prediction masks {pm} and ground truth {g['masks'].shape} differ in T, H or W")
        ious = mask_iou(p["masks"], g["masks"]) if pm[1] and n else np.zeros((pm[1], n))  # [P, N]
        for c in np.union1d(g["classes"], p["classes"]).tolist():
            gi = np.flatnonzero(g["classes"] == c)
            pi = np.flatnonzero(p["classes"] == c)
            order = pi[np.argsort(-p["scores"][pi], kind="mergesort")][: self.max_dets]
            self._num_gt[c] += len(gi)
            self._scores[c].append(p["scores"][order].astype(np.float64))
            self._matched[c].append(_greedy_match(ious[np.ix_(order, gi)]))
            self._rank[c].append(np.arange(len(order)))
        self.num_videos += 1

    def compute(self) -> dict[str, Any]:
        """{"AP", "AP50", "AP75", "AR1", "AR10", "AR100", "per_class_ap" {class: AP}}; NaN without GT."""
        precision: dict[int, np.ndarray] = {}  # class -> [I, R]
        recall: dict[int, dict[int, np.ndarray]] = {k: {} for k in AR_DETS}  # maxdets -> class -> [I]
        for c, num_gt in self._num_gt.items():
            if num_gt == 0:
                continue
            scores = np.concatenate(self._scores[c])
            matched = np.concatenate(self._matched[c], axis=1)  # [I, D]
            rank = np.concatenate(self._rank[c])
            for k in AR_DETS:
                recall[k][c] = matched[:, rank < k].sum(axis=1) / num_gt
            order = np.argsort(-scores, kind="mergesort")
            tp = np.cumsum(matched[:, order], axis=1)  # [I, D]
            fp = np.cumsum(~matched[:, order], axis=1)
            rc = tp / num_gt
            pr = tp / (tp + fp + np.spacing(1))
            pr = np.maximum.accumulate(pr[:, ::-1], axis=1)[:, ::-1]  # monotone from the right
            q = np.zeros((len(IOU_THRESHOLDS), len(RECALL_POINTS)))
            for ti in range(len(IOU_THRESHOLDS)):
                idx = np.searchsorted(rc[ti], RECALL_POINTS, side="left")
                ok = idx < rc.shape[1]
                q[ti, ok] = pr[ti, idx[ok]]
            precision[c] = q
        if not precision:
            nan = float("nan")
            return {"AP": nan, "AP50": nan, "AP75": nan, **{f"AR{k}": nan for k in AR_DETS}, "per_class_ap": {}}
        stack = np.stack(list(precision.values()))  # [C, I, R]
        out: dict[str, Any] = {
            "AP": float(stack.mean()),
            "AP50": float(stack[:, 0].mean()),
            "AP75": float(stack[:, 5].mean()),
        }
        for k in AR_DETS:
            out[f"AR{k}"] = float(np.mean(list(recall[k].values())))
        out["per_class_ap"] = {c: float(q.mean()) for c, q in sorted(precision.items())}
        return out


def evaluate_video_instance(
    ground_truth: Sequence[Mapping[str, Any]],
    predictions: Sequence[Mapping[str, Any]],
    *,
    max_dets: int = MAX_DETS,
) -> dict[str, Any]:
    """YouTube-VIS AP of paired per-video ground truth and predictions (formats in the docstring)."""
    acc = VideoInstanceAccumulator(max_dets)
    feed_pairs(acc.update, ground_truth, predictions, "videos")
    return acc.compute()


SUBSET_KEYS = ("AP", "AP50", "AP75", "AR1", "AR10", "AR100")


class SubsetVideoInstanceAccumulator:
    """Video AP of named subsets of the videos, each scored alone, and the mean of the subsets' AP.

    YouTube-VIS 2022 (the authors' `utils/yt2022_evaluate.py`): the predictions are scored against
    the short videos' ground truth and, separately, the long videos'; the reported AP is the mean of
    the two. `compute` gives "AP" (that mean; NaN when a subset has no ground truth) and, per
    subset s, "AP_s", "AP50_s", "AP75_s", "AR1_s", "AR10_s", "AR100_s".
    """

    def __init__(self, subsets: Sequence[str], max_dets: int = MAX_DETS):
        if not subsets or len(set(subsets)) != len(subsets):
            raise ValueError(f"need distinct subset names, got {list(subsets)}")
        self.subsets = {name: VideoInstanceAccumulator(max_dets) for name in subsets}

    def update(self, subset: str, gt: Mapping[str, Any], pred: Mapping[str, Any]) -> None:
        if subset not in self.subsets:
            raise ValueError(f"unknown subset {subset!r}; the subsets are {list(self.subsets)}")
        self.subsets[subset].update(gt, pred)

    def compute(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for name, acc in self.subsets.items():
            result = acc.compute()
            out.update({f"{k}_{name}": result[k] for k in SUBSET_KEYS})
        out["AP"] = float(np.mean([out[f"AP_{name}"] for name in self.subsets]))
        return out
