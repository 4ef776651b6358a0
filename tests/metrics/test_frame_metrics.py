"""Metrics on constructed cases with hand-computed answers, and video AP against pycocotools."""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pycocotools.mask as mask_utils
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from videomt_jax.data.synthetic import SyntheticConfig, make_clip
from videomt_jax.metrics import (
    SubsetVideoInstanceAccumulator,
    evaluate_panoptic,
    evaluate_semantic,
    evaluate_video_instance,
    mask_iou,
    panoptic_from_segments,
)

# ----------------------------------------------------------------------------- semantic


def test_semantic_hand_case():
    gt = np.array([[0, 0, 1], [1, 2, 255]])
    pred = np.array([[0, 1, 1], [1, 2, 0]])
    r = evaluate_semantic(gt, pred, num_classes=4)
    # class 0: TP 1, FN 1 (pred 0 on the ignored pixel does not count); class 1: TP 2, FP 1;
    # class 2: TP 1; class 3 absent everywhere -> NaN, left out.
    np.testing.assert_allclose(r["iou"][:3], [1 / 2, 2 / 3, 1.0])
    assert np.isnan(r["iou"][3])
    assert r["miou"] == pytest.approx((1 / 2 + 2 / 3 + 1) / 3)
    assert r["pixel_accuracy"] == pytest.approx(4 / 5)
    assert r["confusion"].sum() == 5


def test_semantic_sequences_and_predicted_only_class():
    gt = [np.zeros((2, 2), np.int32), np.ones((1, 3), np.int32)]
    pred = [np.array([[0, 2], [0, 0]]), np.ones((1, 3), np.int32)]
    r = evaluate_semantic(gt, pred, num_classes=3)
    # class 2 is only predicted: IoU 0 and counted; class 0: 3/4; class 1: 1
    np.testing.assert_allclose(r["iou"], [3 / 4, 1.0, 0.0])
    assert r["miou"] == pytest.approx((3 / 4 + 1 + 0) / 3)


def test_semantic_errors():
    with pytest.raises(ValueError, match="shape"):
        evaluate_semantic(np.zeros((2, 2), int), np.zeros((2, 3), int), 2)
    with pytest.raises(ValueError, match=r"ground truth labels \[7\]"):
        evaluate_semantic(np.array([7, 0]), np.array([0, 0]), 2)
    with pytest.raises(ValueError, match=r"predicted labels \[-1\]"):
        evaluate_semantic(np.array([1, 0]), np.array([-1, 0]), 2)
    with pytest.raises(TypeError, match="integer"):
        evaluate_semantic(np.zeros(3), np.zeros(3), 2)


# ----------------------------------------------------------------------------- video instance AP


def _video(masks_by_frame):  # list over frames of [n, H, W] -> [T, n, H, W]
    return np.stack(masks_by_frame).astype(bool)


def _box(h, w, y0, y1, x0, x1):
    m = np.zeros((h, w), bool)
    m[y0:y1, x0:x1] = True
    return m


def test_vis_perfect_prediction():
    g = _video([[_box(8, 8, 0, 3, 0, 3), _box(8, 8, 4, 8, 4, 8)]] * 3)
    r = evaluate_video_instance(
        [{"masks": g, "classes": np.array([0, 1])}],
        [{"masks": g, "scores": np.array([0.9, 0.5]), "classes": np.array([0, 1])}],
    )
    for key in ("AP", "AP50", "AP75", "AR1", "AR10", "AR100"):
        assert r[key] == pytest.approx(1.0, abs=1e-12)


def test_vis_single_pair_iou_point_six():
    gt = np.zeros((2, 1, 4, 5), bool)
    gt[:, 0, 0] = True  # 5 pixels per frame, 10 in all
    pred = np.zeros_like(gt)
    pred[0, 0, 0, :3] = pred[1, 0, 0, :3] = True  # 6 of them
    assert mask_iou(pred, gt)[0, 0] == pytest.approx(0.6)
    r = evaluate_video_instance(
        [{"masks": gt, "classes": np.array([3])}],
        [{"masks": pred, "scores": np.array([0.7]), "classes": np.array([3])}],
    )
    assert r["AP"] == pytest.approx(3 / 10)  # matched at IoU 0.50, 0.55, 0.60
    assert r["AP50"] == pytest.approx(1.0) and r["AP75"] == 0.0
    assert list(r["per_class_ap"]) == [3]


def test_vis_iou_is_spatio_temporal_not_frame_mean():
    gt = np.zeros((2, 1, 4, 4), bool)
    gt[0, 0, :2, :2] = True  # 4 pixels
    gt[1, 0, 3, :2] = True  # 2 pixels
    pred = np.zeros_like(gt)
    pred[0] = gt[0]  # frame IoUs 1 and 0 (mean 0.5); video IoU 4 / 6
    assert mask_iou(pred, gt)[0, 0] == pytest.approx(4 / 6)
    r = evaluate_video_instance(
        [{"masks": gt, "classes": np.array([0])}],
        [{"masks": pred, "scores": np.array([1.0]), "classes": np.array([0])}],
    )
    assert r["AP"] == pytest.approx(4 / 10)  # thresholds 0.50 .. 0.65


def test_vis_false_positive_ranked_first_and_missed_gt():
    a, b = _box(6, 6, 0, 2, 0, 2), _box(6, 6, 3, 6, 3, 6)
    gt = _video([[a], [a]])
    preds = _video([[b, a], [b, a]])  # a miss with the higher score, then the exact mask
    r = evaluate_video_instance(
        [{"masks": gt, "classes": np.array([0])}],
        [{"masks": preds, "scores": np.array([0.9, 0.8]), "classes": np.array([0, 0])}],
    )
    assert r["AP"] == pytest.approx(0.5)  # precision 1/2 at every recall point
    assert r["AR1"] == 0.0 and r["AR10"] == pytest.approx(1.0)
    gt2 = _video([[a, b], [a, b]])
    r = evaluate_video_instance(
        [{"masks": gt2, "classes": np.array([0, 0])}],
        [{"masks": gt, "scores": np.array([0.5]), "classes": np.array([0])}],
    )
    assert r["AP"] == pytest.approx(51 / 101)  # precision 1 at recall points 0.00 .. 0.50
    assert r["AR100"] == pytest.approx(0.5)


def test_vis_category_mean_and_max_dets():
    a, b = _box(6, 6, 0, 2, 0, 2), _box(6, 6, 3, 6, 3, 6)
    gt = {"masks": _video([[a, b]]), "classes": np.array([0, 1])}
    pred = {"masks": _video([[a, b]]), "scores": np.array([0.9, 0.8]), "classes": np.array([0, 2])}
    r = evaluate_video_instance([gt], [pred])
    assert r["per_class_ap"] == {0: pytest.approx(1.0), 1: 0.0}  # class 2 has no ground truth
    assert r["AP"] == pytest.approx(0.5)
    # 101 predictions, the only correct one scored lowest: dropped by max_dets=100
    many = np.repeat(_video([[b]]), 101, axis=1)
    many[:, 100] = a
    scores = np.linspace(1.0, 0.5, 101)
    one_gt = {"masks": _video([[a]]), "classes": np.array([0])}
    preds = {"masks": many, "scores": scores, "classes": np.zeros(101, int)}
    assert evaluate_video_instance([one_gt], [preds])["AP"] == 0.0
    assert evaluate_video_instance([one_gt], [preds], max_dets=101)["AP"] == pytest.approx(1 / 101)


def _coco_reference(gts, preds):
    """pycocotools COCOeval on frames tiled side by side: sum-over-frames IoU == tiled-image IoU."""

    def tile(masks):  # [T, n, H, W] -> n masks [H, T*W]
        return [np.concatenate(list(masks[:, k]), axis=1) for k in range(masks.shape[1])]

    images, anns, dets, cats = [], [], [], set()
    for vid, (g, p) in enumerate(zip(gts, preds), start=1):
        t, _, h, w = g["masks"].shape
        images.append({"id": vid, "height": h, "width": t * w})
        for m, c in zip(tile(g["masks"]), g["classes"]):
            rle = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": vid,
                    "category_id": int(c),
                    "segmentation": rle,
                    "area": float(m.sum()),
                    "bbox": list(mask_utils.toBbox(rle)),
                    "iscrowd": 0,
                }
            )
            cats.add(int(c))
        for m, s, c in zip(tile(p["masks"]), p["scores"], p["classes"]):
            dets.append(
                {
                    "image_id": vid,
                    "category_id": int(c),
                    "score": float(s),
                    "segmentation": mask_utils.encode(np.asfortranarray(m.astype(np.uint8))),
                }
            )
            cats.add(int(c))
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = {"images": images, "annotations": anns, "categories": [{"id": c} for c in sorted(cats)]}
        coco_gt.createIndex()
        ev = COCOeval(coco_gt, coco_gt.loadRes(dets), "segm")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats


def _random_video(rng: np.random.Generator, t: int = 3) -> tuple[dict, dict]:
    """(ground truth, prediction) of one video: moving boxes, shifted copies of them and clutter."""
    h, w, n = 10, 12, int(rng.integers(1, 5))
    boxes = []
    for _ in range(n):
        y, x = rng.integers(0, 6, 2)
        boxes.append([_box(h, w, y, y + 4 + i % 4, x, x + 5 + i % 4) for i in range(t)])
    g = np.array(boxes).transpose(1, 0, 2, 3)  # [T, n, H, W]
    p_list = [np.roll(g[:, k], int(rng.integers(-1, 2)), axis=int(rng.integers(1, 3))) for k in range(n)]
    p_list += [rng.random((t, h, w)) < 0.2 for _ in range(int(rng.integers(0, 4)))]  # clutter
    p = np.stack(p_list, axis=1)
    g_cls = rng.integers(0, 3, n)
    p_cls = rng.integers(0, 3, p.shape[1])
    p_cls[:n] = np.where(rng.random(n) < 0.8, g_cls, p_cls[:n])  # mostly the right class
    return {"masks": g, "classes": g_cls}, {"masks": p, "scores": rng.random(p.shape[1]), "classes": p_cls}


@pytest.mark.parametrize("seed", range(4))
def test_vis_matches_pycocotools(seed):
    rng = np.random.default_rng(seed)
    gts, preds = (list(x) for x in zip(*[_random_video(rng) for _ in range(4)]))
    ours = evaluate_video_instance(gts, preds)
    ref = _coco_reference(gts, preds)
    got = [ours[k] for k in ("AP", "AP50", "AP75", "AR1", "AR10", "AR100")]
    np.testing.assert_allclose(got, ref[[0, 1, 2, 6, 7, 8]], atol=1e-12)


@pytest.mark.parametrize("seed", range(3))
def test_vis_subsets_are_scored_alone_and_averaged_as_youtube_vis_2022(seed):
    # the authors' yt2022_evaluate.py: COCO-style AP against the short videos' and the long videos'
    # ground truth separately, reported AP = their mean; pycocotools on tiled frames is the reference
    rng = np.random.default_rng(seed)
    subsets = {"short": [_random_video(rng, 3) for _ in range(3)], "long": [_random_video(rng, 8) for _ in range(3)]}
    acc = SubsetVideoInstanceAccumulator(["short", "long"])
    for pairs in zip(subsets["short"], subsets["long"]):  # videos of both subsets interleaved
        for name, (g, p) in zip(subsets, pairs):
            acc.update(name, g, p)
    ours = acc.compute()
    for name, videos in subsets.items():
        ref = _coco_reference(*zip(*videos))
        got = [ours[f"{k}_{name}"] for k in ("AP", "AP50", "AP75", "AR1", "AR10", "AR100")]
        np.testing.assert_allclose(got, ref[[0, 1, 2, 6, 7, 8]], atol=1e-12)
    short, long = (_coco_reference(*zip(*v))[0] for v in subsets.values())
    assert ours["AP"] == pytest.approx((short + long) / 2, abs=1e-12)
    with pytest.raises(ValueError, match="unknown subset 'medium'"):
        acc.update("medium", *subsets["short"][0])
    with pytest.raises(ValueError, match="distinct subset names"):
        SubsetVideoInstanceAccumulator(["short", "short"])


def test_vis_errors():
    g = {"masks": np.zeros((2, 1, 4, 4), bool), "classes": np.array([0])}
    with pytest.raises(ValueError, match="lacks the keys \\['scores'\\]"):
        evaluate_video_instance([g], [{"masks": g["masks"], "classes": np.array([0])}])
    with pytest.raises(ValueError, match="differ in T, H or W"):
        evaluate_video_instance(
            [g], [{"masks": np.ones((3, 1, 4, 4), bool), "scores": np.ones(1), "classes": np.zeros(1, int)}]
        )
    empty = {"masks": np.zeros((3, 0, 4, 4), bool), "scores": np.zeros(0), "classes": np.zeros(0, int)}
    with pytest.raises(ValueError, match="differ in T, H or W"):
        evaluate_video_instance([g], [empty])
    no_preds = dict(empty, masks=np.zeros((2, 0, 4, 4), bool))
    assert evaluate_video_instance([g], [no_preds])["AP"] == 0.0
    with pytest.raises(ValueError, match="scores has shape"):
        evaluate_video_instance([g], [{"masks": g["masks"], "scores": np.ones(2), "classes": np.zeros(1, int)}])
    with pytest.raises(ValueError, match="bool"):
        evaluate_video_instance([{"masks": np.zeros((2, 1, 4, 4)), "classes": np.array([0])}], [g])
    with pytest.raises(ValueError, match="1 ground-truth videos but 0"):
        evaluate_video_instance([g], [])


# ----------------------------------------------------------------------------- panoptic

THINGS, STUFF = (0, 1), (3,)


def test_panoptic_perfect_and_synthetic_round_trip():
    gt = np.array([[3000, 3000, 1, 1], [3000, 3000, 1, 1]])
    r = evaluate_panoptic(gt, gt.copy(), thing_ids=THINGS, stuff_ids=STUFF)
    assert (r["pq"], r["sq"], r["rq"], r["n"]) == (1.0, 1.0, 1.0, 2)
    cfg = SyntheticConfig(image_size=32)
    clip = make_clip(cfg, "heldout", 2)
    r = evaluate_panoptic(clip.panoptic, clip.panoptic, thing_ids=cfg.thing_ids, stuff_ids=cfg.stuff_ids)
    assert r["pq"] == 1.0
    assert evaluate_semantic(clip.semantic, clip.semantic, cfg.num_classes)["miou"] == 1.0


def test_panoptic_partial_match_and_threshold():
    gt = np.full((4, 4), 3000)
    gt[0, :] = gt[1, :] = 5  # thing class 0, instance 5: rows 0-1 (8 px); stuff rows 2-3 (8 px)
    pred = np.full((4, 4), 3000)
    pred[0, :] = 7  # thing: row 0, half of rows 1 and 2 (8 px), 6 on the gt thing -> IoU 6 / 10
    pred[1, :2] = 7
    pred[2, :2] = 7
    r = evaluate_panoptic(gt, pred, thing_ids=THINGS, stuff_ids=STUFF)
    # stuff: pred 8 px, 6 on the gt stuff -> IoU 6 / 10
    assert r["per_class"][0] == {
        "pq": pytest.approx(0.6),
        "sq": pytest.approx(0.6),
        "rq": 1.0,
        "tp": 1,
        "fp": 0,
        "fn": 0,
    }
    assert r["per_class"][3]["tp"] == 1 and r["per_class"][3]["pq"] == pytest.approx(0.6)
    assert r["pq"] == pytest.approx(0.6) and r["n"] == 2

    gt = np.array([[5, 5, 5, 5], [3000] * 4])
    pred = np.array([[5, 5, 3000, 3000], [3000] * 4])  # thing IoU 2 / 4 = 0.5: not > 0.5
    r = evaluate_panoptic(gt, pred, thing_ids=THINGS, stuff_ids=STUFF)
    assert r["per_class"][0] == {"pq": 0.0, "sq": 0.0, "rq": 0.0, "tp": 0, "fp": 1, "fn": 1}
    assert r["stuff"]["pq"] == pytest.approx(4 / 6)  # stuff IoU 4 / 6
    assert r["things"]["pq"] == 0.0 and r["pq"] == pytest.approx(2 / 6)


def test_panoptic_void_handling_and_class_mismatch():
    gt = np.full((3, 4), -1)
    gt[0, :] = 1000 + 2  # class 1 instance, 4 px
    pred = np.full((3, 4), -1)
    pred[:2, :] = 1000 + 9  # covers the 4 px and 4 void px: IoU 4 / (8 + 4 - 4 - 4) = 1
    pred[2, :3] = 3000  # stuff predicted on void only: ignored, not FP
    r = evaluate_panoptic(gt, pred, thing_ids=THINGS, stuff_ids=STUFF)
    assert r["per_class"] == {1: {"pq": 1.0, "sq": 1.0, "rq": 1.0, "tp": 1, "fp": 0, "fn": 0}}
    wrong = np.where(pred == 1009, 9, pred)  # same pixels, class 0
    r = evaluate_panoptic(gt, wrong, thing_ids=THINGS, stuff_ids=STUFF)
    assert r["per_class"][0]["fp"] == 1 and r["per_class"][1]["fn"] == 1 and r["pq"] == 0.0


def test_panoptic_accumulates_over_frames_then_classes():
    f1_gt = np.array([[1, 1, 1, 1, 1], [3000] * 5])
    f1_pred = np.array([[1, 1, 1, 1, 3000], [3000] * 5])  # thing IoU 4/5 = 0.8
    f2_gt = np.array([[2, 2, 3000, 3000, 3000], [3000] * 5])
    f2_pred = np.full((2, 5), 3000)  # thing missed (FN)
    r = evaluate_panoptic([np.stack([f1_gt, f2_gt])], [np.stack([f1_pred, f2_pred])], thing_ids=THINGS, stuff_ids=STUFF)
    pq_thing = 0.8 / (1 + 0.5)  # one TP (0.8), one FN over both frames
    iou_stuff = 5 / 6 + 8 / 10  # frame 1: 5/6; frame 2: 8/10
    assert r["things"] == {
        "pq": pytest.approx(pq_thing),
        "sq": pytest.approx(0.8),
        "rq": pytest.approx(1 / 1.5),
        "n": 1,
    }
    assert r["stuff"]["pq"] == pytest.approx(iou_stuff / 2)
    assert r["pq"] == pytest.approx((pq_thing + iou_stuff / 2) / 2)


def test_panoptic_errors_and_segment_conversion():
    with pytest.raises(ValueError, match="map to classes \\[2\\]"):
        evaluate_panoptic(np.array([[1, 1]]), np.array([[2001, 1]]), thing_ids=THINGS, stuff_ids=STUFF)
    with pytest.raises(ValueError, match="both thing and stuff"):
        evaluate_panoptic(np.zeros((1, 1), int), np.zeros((1, 1), int), thing_ids=(0,), stuff_ids=(0,))
    with pytest.raises(ValueError, match="must be equal"):
        evaluate_panoptic(np.zeros((2, 2), int), np.zeros((2, 3), int), thing_ids=THINGS, stuff_ids=STUFF)
    seg = np.array([[0, 1, -1], [2, 3, 3]])
    ids = panoptic_from_segments(seg, np.array([1, 3, 3, 0]), STUFF)
    np.testing.assert_array_equal(ids, [[1001, 3000, -1], [3000, 4, 4]])
