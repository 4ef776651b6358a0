"""Segmentation and tracking quality (STQ) as the authors score VIPSeg.

Source: tue-mps/videomt `utils/eval_stq_vspw.py` (driver, "eval" below) and the deeplab2 numpy
`utils/segmentation_and_tracking_quality.py` it imports ("stq" below). STQ = sqrt(AQ x IoU):
- IoU: mean class IoU of the semantic part (class of each panoptic id), from one confusion
  matrix summed over all frames of all videos; classes with an empty union are left out.
- AQ: over all ground-truth thing tubes of all videos (a tube = one id in one video),
  AQ = sum_g (1/|g|) sum_p TPA(p, g) IoU(p, g) / number of tubes, where p runs over the
  predicted thing tubes of the same video, class-agnostically (stq lines 226-236).

What the scripts do, and this module does too:
- ground-truth void pixels are ignored by IoU (their confusion row is zeroed, stq line 252);
  predicted void on a labelled pixel is a false negative of that pixel's class (eval line 147:
  unassigned prediction pixels get semantic 255, the ignore label, mapped to an extra class column);
- AQ: ground-truth void and stuff pixels belong to no tube, but a predicted thing tube's size
  counts all its pixels, on ground-truth void and stuff too (stq lines 165-189), so predicting a
  thing over void lowers AQ; predicted stuff / void pixels belong to no predicted tube;
- crowd: a ground-truth thing pixel whose instance number is 0 is crowd: it is left out of the
  ground-truth tubes and predicted pixels on it are left out of the predicted tubes (stq 175-181);
- AQ and IoU are dataset-level (tube-weighted AQ, one confusion matrix), not means of per-video
  STQ; AQ is 0 when there is no ground-truth thing tube (stq line 239).

Two plain bugs, kept in `stq` / `aq` / `iou` and corrected beside them:
1. Accidental crowd (eval lines 110-118, 142): the driver renumbers each video's ground-truth
   segments 0, 1, 2, ... in order of first listing (frame by frame, in the JSON's segments_info
   order) and uses that number as the instance. The first-listed segment gets instance 0; when it
   is a thing, the whole tube is treated as crowd (see above) and drops out of AQ. In VIPSeg's
   converter segments_info lists a frame's stuff first (ascending class), then things (ascending
   VIPSeg id), so this bites only videos whose first labelled frame has no stuff. We reproduce it
   with that order: in the first frame with any labelled pixel, segments sorted by (is thing, id).
   `aq_corrected` keeps every thing tube (no crowd).
2. Phantom void class (stq lines 86-87, 134-139, 270-278): the ignore label 255 > num_classes is
   mapped to an extra confusion column; the void row is zeroed but the column is not, so whenever a
   labelled pixel is predicted void the void "class" has union > 0, IoU 0, and is counted in the
   mean: mIoU is multiplied by n / (n + 1). `iou_corrected` averages over real classes only.
`stq_corrected` = sqrt(aq_corrected x iou_corrected).

Conventions of the inputs: panoptic ids `class * label_divisor + instance`, `void_id` = void
(ground truth) or no segment (prediction); stuff of one class shares one id; ids are stable over
the frames of a video. The scripts' 16-bit instance field and 2**24 offset do not limit us.

Letters: T frames, H/W size, C classes, G/P ground-truth/predicted thing tubes of a video.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from videomt_jax.metrics.video_inputs import ClassTable, check_videos
from videomt_jax.ops.labels import LABEL_DIVISOR, VOID_ID


def _script_crowd_id(gt: np.ndarray, labelled: np.ndarray, table: ClassTable) -> int | None:
    """The ground-truth id the authors' driver numbers 0 in this video, when it is a thing."""
    frames = np.flatnonzero(labelled.reshape(gt.shape[0], -1).any(axis=1))
    if frames.size == 0:
        return None
    ids = np.unique(gt[frames[0]][labelled[frames[0]]])
    thing = table.is_thing[ids // table.label_divisor]
    first = ids[np.lexsort((ids, thing))[0]]  # stuff first, then ascending id
    return int(first) if table.is_thing[first // table.label_divisor] else None


def _association(gt: np.ndarray, pred: np.ndarray, gt_mask: np.ndarray, pred_mask: np.ndarray) -> tuple[float, int]:
    """Sum over this video's ground-truth tubes of (1/|g|) sum_p TPA * IoU, and the number of tubes."""
    g_ids, g_size = np.unique(gt[gt_mask], return_counts=True)  # [G]
    p_ids, p_size = np.unique(pred[pred_mask], return_counts=True)  # [P]
    if g_ids.size == 0:
        return 0.0, 0
    both = gt_mask & pred_mask
    code = np.searchsorted(g_ids, gt[both]) * max(len(p_ids), 1) + np.searchsorted(p_ids, pred[both])
    codes, tpa = np.unique(code, return_counts=True)
    cg, cp = codes // max(len(p_ids), 1), codes % max(len(p_ids), 1)
    iou = tpa / (g_size[cg] + p_size[cp] - tpa)
    per_tube = np.bincount(cg, weights=tpa * iou, minlength=len(g_ids)) / g_size  # [G]
    return float(per_tube.sum()), int(g_ids.size)


def _mean_iou(confusion: np.ndarray, phantom_void: bool) -> float:
    """confusion [C+1, C+1] (rows gt, columns pred; index C = void), void row already zeroed."""
    inter = np.diag(confusion)
    union = confusion.sum(axis=0) + confusion.sum(axis=1) - inter  # [C+1]
    if not phantom_void:
        inter, union = inter[:-1], union[:-1]
    counted = np.count_nonzero(union)
    if counted == 0:
        return float("nan")
    return float(np.sum(inter / np.maximum(union, 1)) / counted)


def evaluate_stq(
    videos: Sequence[tuple[np.ndarray, np.ndarray]],
    thing_ids: Sequence[int],
    stuff_ids: Sequence[int],
    *,
    label_divisor: int = LABEL_DIVISOR,
    void_id: int = VOID_ID,
) -> dict[str, Any]:
    """STQ of panoptic videos as the authors' eval_stq_vspw.py computes it (see the module doc).

    videos: list of (pred, gt) integer panoptic maps [T, H, W].
    Returns {"stq", "aq", "iou"} (the script's figures), {"stq_corrected", "aq_corrected",
    "iou_corrected"} (both bugs fixed), "num_tubes" (ground-truth thing tubes counted by AQ) and
    "crowd_tubes" (tubes the script drops as accidental crowd). Fractions in [0, 1]; IoU is NaN
    when no pixel is labelled and no class is predicted on a labelled pixel.
    """
    pairs = check_videos(videos, "evaluate_stq")
    table = ClassTable(thing_ids, stuff_ids, label_divisor, void_id)
    c = len(table.classes)
    position = np.full(table.size, -1, np.int64)
    position[list(table.classes)] = np.arange(c)
    confusion = np.zeros((c + 1, c + 1), np.int64)  # [C+1, C+1], index C = void
    aq_sum = {"script": 0.0, "corrected": 0.0}
    tubes = {"script": 0, "corrected": 0}
    crowd_tubes = 0
    for pred, gt in pairs:
        labelled, predicted = gt != void_id, pred != void_id  # [T, H, W]
        g_cls = np.zeros(gt.shape, np.int64)
        g_cls[labelled] = table.classes_of(gt[labelled], "ground truth")
        p_cls = np.zeros(pred.shape, np.int64)
        p_cls[predicted] = table.classes_of(pred[predicted], "prediction")
        g_pos = np.where(labelled, position[g_cls], c)
        p_pos = np.where(predicted, position[p_cls], c)
        confusion += np.bincount((g_pos * (c + 1) + p_pos).ravel(), minlength=(c + 1) ** 2).reshape(c + 1, c + 1)

        g_thing = labelled & table.is_thing[g_cls]
        p_thing = predicted & table.is_thing[p_cls]
        crowd_id = _script_crowd_id(gt, labelled, table)
        crowd_tubes += crowd_id is not None
        crowd = g_thing & (gt == crowd_id) if crowd_id is not None else np.zeros(gt.shape, bool)
        for variant, is_crowd in (("script", crowd), ("corrected", np.zeros(gt.shape, bool))):
            total, count = _association(gt, pred, g_thing & ~is_crowd, p_thing & ~is_crowd)
            aq_sum[variant] += total
            tubes[variant] += count
    confusion[c, :] = 0  # ground-truth void ignored
    aq = {k: aq_sum[k] / max(tubes[k], 1e-15) for k in aq_sum}
    iou = {"script": _mean_iou(confusion, True), "corrected": _mean_iou(confusion, False)}
    return {
        "stq": float(np.sqrt(aq["script"] * iou["script"])),
        "aq": float(aq["script"]),
        "iou": iou["script"],
        "stq_corrected": float(np.sqrt(aq["corrected"] * iou["corrected"])),
        "aq_corrected": float(aq["corrected"]),
        "iou_corrected": iou["corrected"],
        "num_tubes": tubes["script"],
        "crowd_tubes": int(crowd_tubes),
    }
