"""Video metrics (VPQ, STQ, video consistency) against hand-computed answers and against slow,
literal re-implementations of the authors' scoring procedures (tue-mps/videomt utils/eval_*_vspw.py),
written here pixel by pixel with dicts, independent of the vectorised code under test."""

from __future__ import annotations

import warnings
from collections import Counter

import numpy as np
import pytest

from videomt_jax.metrics.consistency import ShortVideoWarning, evaluate_video_consistency
from videomt_jax.metrics.panoptic import evaluate_panoptic
from videomt_jax.metrics.stq import evaluate_stq
from videomt_jax.metrics.vpq import evaluate_vpq

DIV, VOID = 1000, -1
THING, STUFF = (2, 3), (0, 1)


# ------------------------------------------------------------------------------ literal references
def literal_vpq_stats(videos, n, div=DIV, void=VOID):
    """Per-class [iou, tp, fp, fn] over all n-frame windows, one window and one pair at a time."""
    stats: dict[int, list] = {}
    for pred, gt in videos:
        for start in range(len(gt) - n + 1):
            g = gt[start : start + n].ravel().tolist()
            p = pred[start : start + n].ravel().tolist()
            g_area, p_area, inter = Counter(g), Counter(p), Counter(zip(g, p))
            g_hit, p_hit = set(), set()
            for (gl, pl), count in inter.items():
                if gl == void or pl == void or gl // div != pl // div:
                    continue
                iou = count / (g_area[gl] + p_area[pl] - count - inter.get((void, pl), 0))
                if iou > 0.5:
                    s = stats.setdefault(gl // div, [0.0, 0, 0, 0])
                    s[0] += iou
                    s[1] += 1
                    g_hit.add(gl)
                    p_hit.add(pl)
            for gl in g_area:
                if gl != void and gl not in g_hit:
                    stats.setdefault(gl // div, [0.0, 0, 0, 0])[3] += 1
            for pl in p_area:
                if pl != void and pl not in p_hit and inter.get((void, pl), 0) / p_area[pl] <= 0.5:
                    stats.setdefault(pl // div, [0.0, 0, 0, 0])[2] += 1
    return stats


def literal_pq(stats, classes):
    pq, sq, rq, n = 0.0, 0.0, 0.0, 0
    for c in classes:
        iou, tp, fp, fn = stats.get(c, [0.0, 0, 0, 0])
        if tp + fp + fn == 0:
            continue
        n += 1
        pq += iou / (tp + fp / 2 + fn / 2)
        sq += iou / tp if tp else 0.0
        rq += tp / (tp + fp / 2 + fn / 2)
    return {"pq": pq / n, "sq": sq / n, "rq": rq / n, "n": n} if n else None


def literal_stq(videos, things, stuff, div=DIV, void=VOID, script=True):
    """The driver's renumbering + deeplab2's accumulation, one pixel at a time."""
    n_classes = max(things + stuff) + 1
    conf = np.zeros((n_classes + 1, n_classes + 1), np.int64)  # ignore -> column n_classes
    aq_total, n_tubes = 0.0, 0
    for pred, gt in videos:

        def ordinals(video):
            order: list[int] = []
            for frame in video:  # segments_info order: stuff first, then ascending id
                for i in sorted(set(frame.ravel().tolist()) - {void}, key=lambda i: (i // div in things, i)):
                    if i not in order:
                        order.append(i)
            return {i: k for k, i in enumerate(order)}

        g_ord = ordinals(gt)
        g_sizes: Counter = Counter()
        p_sizes: Counter = Counter()
        inters: Counter = Counter()
        for gv, pv in zip(gt.ravel().tolist(), pred.ravel().tolist()):
            gs, ps = (n_classes if gv == void else gv // div), (n_classes if pv == void else pv // div)
            conf[gs, ps] += 1
            crowd = script and gs in things and g_ord[gv] == 0
            g_tube, p_tube = gs in things and not crowd, ps in things and not crowd
            if g_tube:
                g_sizes[gv] += 1
            if p_tube:
                p_sizes[pv] += 1
            if g_tube and p_tube:
                inters[gv, pv] += 1
        for g, g_size in g_sizes.items():
            inner = sum(t * t / (p_sizes[p] + g_size - t) for (gg, p), t in inters.items() if gg == g)
            aq_total += inner / g_size
        n_tubes += len(g_sizes)
    conf[n_classes, :] = 0
    inter = np.diag(conf).astype(float)
    union = conf.sum(0) + conf.sum(1) - inter
    if not script:
        inter, union = inter[:-1], union[:-1]
    iou = sum(i / u for i, u in zip(inter, union) if u > 0) / np.count_nonzero(union)
    aq = aq_total / max(n_tubes, 1e-15)
    return {"stq": np.sqrt(aq * iou), "aq": aq, "iou": iou}


def literal_vc(videos, windows, ignore=255, script=True):
    """Window by window, frame pair by frame pair; script: shared list, starts < T - n, skip T <= n."""
    out, shared = {}, []
    for n in windows:
        accs = shared if script else []
        for pred, gt in videos:
            if (len(gt) <= n) if script else (len(gt) < n):
                continue
            for i in range(len(gt) - n + (0 if script else 1)):
                g_common = np.ones(gt[0].shape, bool) if script else gt[i] != ignore
                p_common = np.ones(gt[0].shape, bool)
                for j in range(1, n):
                    g_common &= gt[i] == gt[i + j]
                    p_common &= pred[i] == pred[i + j]
                accs.append((g_common & p_common).sum() / g_common.sum() if g_common.sum() else np.nan)
        out[n] = np.nanmean(accs) if np.any(~np.isnan(accs)) else np.nan
    return out


# ------------------------------------------------------------------------------ random-ish videos
def panoptic_video(rng, t, h=8, w=10, with_stuff=True):
    """Ground truth with tracked things over two stuff bands and some void; a noisy prediction
    (identity switches, a one-pixel shift, wrong classes, void, a false object)."""
    gt = np.full((t, h, w), VOID, np.int64)
    if with_stuff:
        band = int(rng.integers(2, h - 2))
        gt[:, :band], gt[:, band:] = STUFF[0] * DIV, STUFF[1] * DIV
    for k in range(int(rng.integers(1, 4))):
        oid = int(rng.choice(THING)) * DIV + k + 1
        y, x, hh, ww = rng.integers(0, h - 3), rng.integers(0, w - 3), *rng.integers(2, 4, size=2)
        vy, vx = rng.integers(-1, 2, size=2)
        for f in range(t):
            yy, xx = np.clip(y + vy * f, 0, h - hh), np.clip(x + vx * f, 0, w - ww)
            gt[f, yy : yy + hh, xx : xx + ww] = oid
    gt[rng.random(gt.shape) < 0.06] = VOID
    pred = gt.copy()
    pred[pred == VOID] = STUFF[0] * DIV
    things = [i for i in np.unique(gt) if i // DIV in THING]
    if things and t > 1:  # identity switch from a random frame on
        f0 = int(rng.integers(1, t))
        pred[f0:][pred[f0:] == things[0]] = things[0] + 50
    pred[: t // 2] = np.roll(pred[: t // 2], 1, axis=2)
    noise = rng.random(pred.shape)
    pred[noise < 0.05] = VOID
    pred[(noise > 0.95)] = int(rng.choice(STUFF + THING)) * DIV + 7
    pred[:, 0, 0] = THING[0] * DIV + 99  # a small false object in every frame
    return pred, gt


def random_videos(seed, lengths=(1, 3, 6, 9), with_stuff=True):
    rng = np.random.default_rng(seed)
    return [panoptic_video(rng, t, with_stuff=with_stuff) for t in lengths]


# ------------------------------------------------------------------------------ VPQ
def switch_video():
    """4 frames 2x4: thing 1001 left, stuff 0 right; the prediction renames the thing at frame 2."""
    gt = np.zeros((4, 2, 4), np.int64)
    gt[:, :, :2] = 1001
    pred = gt.copy()
    pred[2:, :, :2] = 1002
    return pred, gt


def test_vpq_identity_switch_hand_computed():
    r = evaluate_vpq([switch_video()], [1], [0], tube_lengths=(1, 2, 4))
    assert r["by_tube"][1]["things"]["pq"] == 1.0 and r["by_tube"][1]["stuff"]["pq"] == 1.0
    # 2 frames: windows 0-1 and 2-3 match; window 1-2 has tube IoU 4/8 = 0.5 (not > 0.5): FN 1, FP 2
    assert r["by_tube"][2]["per_class"][1] == pytest.approx(
        {"pq": 2 / 3.5, "sq": 1.0, "rq": 2 / 3.5, "tp": 2, "fp": 2, "fn": 1, "iou": 2.0}
    )
    assert r["by_tube"][2]["windows"] == 3 and r["by_tube"][4]["windows"] == 1
    assert r["by_tube"][4]["things"]["pq"] == 0.0 and r["by_tube"][4]["stuff"]["pq"] == 1.0
    assert r["vpq"] == pytest.approx((1 + (2 / 3.5 + 1) / 2 + 0.5) / 3)
    assert r["vpq_things"] == pytest.approx((1 + 2 / 3.5 + 0) / 3)
    assert r["vpq_stuff"] == 1.0
    assert evaluate_panoptic(switch_video()[1], switch_video()[0], thing_ids=[1], stuff_ids=[0])["pq"] == 1.0


def test_vpq_void_hand_computed():
    gt = np.full((1, 2, 4), VOID, np.int64)
    gt[:, :, :2] = 1001
    pred = np.full_like(gt, 1002)
    pred[:, :, :3] = 1001  # 4 pixels on the thing + 2 on void: union 4 + 6 - 4 - 2 = 4, IoU 1
    r = evaluate_vpq([(pred, gt)], [1], [0], tube_lengths=(1,))
    # 1002 lies wholly on void: not a false positive
    expected = {"pq": 1.0, "sq": 1.0, "rq": 1.0, "tp": 1, "fp": 0, "fn": 0, "iou": 1.0}
    assert r["by_tube"][1]["per_class"] == {1: expected}
    assert np.isnan(r["by_tube"][1]["stuff"]["pq"])  # no stuff class counts (the script divides by zero)


def test_vpq_short_videos_have_no_long_tubes():
    r = evaluate_vpq(random_videos(0, lengths=(3, 5)), THING, STUFF)
    assert r["tube_lengths"] == [1, 2, 4, 6, 8]
    assert [r["by_tube"][n]["windows"] for n in (1, 2, 4, 6, 8)] == [8, 6, 2, 0, 0]
    assert np.isnan(r["by_tube"][6]["all"]["pq"]) and np.isnan(r["vpq"])


@pytest.mark.parametrize("seed", [1, 2])
def test_vpq_one_frame_tube_equals_per_frame_pq(seed):
    videos = random_videos(seed)
    r = evaluate_vpq(videos, THING, STUFF)["by_tube"][1]
    pq = evaluate_panoptic([g for _, g in videos], [p for p, _ in videos], thing_ids=THING, stuff_ids=STUFF)
    for group in ("things", "stuff"):
        assert r[group] == pytest.approx(pq[group])
    assert {k: r["all"][k] for k in ("pq", "sq", "rq", "n")} == pytest.approx(
        {k: pq[k] for k in ("pq", "sq", "rq", "n")}
    )
    for c, stats in pq["per_class"].items():
        assert {k: r["per_class"][c][k] for k in ("tp", "fp", "fn")} == {k: stats[k] for k in ("tp", "fp", "fn")}
    assert 0.05 < r["all"]["pq"] < 0.95  # the noise leaves an informative case


@pytest.mark.parametrize("seed", [3, 4])
def test_vpq_matches_literal_procedure(seed):
    videos = random_videos(seed) + random_videos(seed + 10, lengths=(8,), with_stuff=False)
    r = evaluate_vpq(videos, THING, STUFF)
    means = {"all": [], "things": [], "stuff": []}
    for n in (1, 2, 4, 6, 8):
        stats = literal_vpq_stats(videos, n)
        for group, classes in (("all", THING + STUFF), ("things", THING), ("stuff", STUFF)):
            expected = literal_pq(stats, classes)
            assert r["by_tube"][n][group] == pytest.approx(expected), (n, group)
            means[group].append(expected["pq"])
    assert r["vpq"] == pytest.approx(np.mean(means["all"]))
    assert r["vpq_things"] == pytest.approx(np.mean(means["things"]))
    assert r["vpq"] < r["by_tube"][1]["all"]["pq"]  # identity switches cost only the longer tubes


# ------------------------------------------------------------------------------ STQ
def test_stq_identity_switch_hand_computed():
    r = evaluate_stq([switch_video()], [1], [0])
    # one tube of 16 px; two predicted tubes of 8 px, each IoU 8/16: AQ = (8 * 0.5 + 8 * 0.5) / 16
    assert r["aq"] == pytest.approx(0.5) and r["iou"] == 1.0 and r["stq"] == pytest.approx(np.sqrt(0.5))
    assert r["stq_corrected"] == r["stq"] and r["crowd_tubes"] == 0 and r["num_tubes"] == 1


def test_stq_thing_over_void_lowers_aq():
    gt = np.full((1, 2, 4), VOID, np.int64)
    gt[:, :, :2] = 1001
    pred = np.full_like(gt, VOID)
    pred[:, :, :3] = 1001  # 2 predicted pixels on void count in the predicted tube's size
    gt[0, 1, 3] = pred[0, 1, 3] = 0  # stuff, listed first: 1001 is not the accidental crowd
    r = evaluate_stq([(pred, gt)], [1], [0])
    assert r["aq"] == pytest.approx(4 * (4 / 6) / 4) and r["iou"] == 1.0


def test_stq_first_listed_thing_is_accidental_crowd():
    gt = np.zeros((2, 2, 4), np.int64)
    gt[:, :, :2], gt[:, :, 2:] = 1001, 1002  # no stuff in the first frame: 1001 is numbered 0
    pred = gt.copy()
    pred[0, :, :2], pred[1, :, :2], pred[:, :, 2:] = 1005, 1006, 1007  # 1001 switches identity
    r = evaluate_stq([(pred, gt)], [1], [0])
    assert r["crowd_tubes"] == 1 and r["num_tubes"] == 1
    assert r["aq"] == 1.0 and r["stq"] == 1.0  # the switched tube is dropped as crowd
    assert r["aq_corrected"] == pytest.approx((0.5 + 1.0) / 2) and r["stq_corrected"] == pytest.approx(np.sqrt(0.75))
    gt[0, 0, 3] = pred[0, 0, 3] = 0  # a stuff pixel in frame 0 is listed first: no crowd
    r = evaluate_stq([(pred, gt)], [1], [0])
    assert r["crowd_tubes"] == 0 and r["aq"] == r["aq_corrected"]


def test_stq_void_prediction_adds_phantom_class():
    gt = np.zeros((1, 2, 5), np.int64)
    gt[:, :, :2], gt[:, :, 4] = 1001, VOID
    pred = gt.copy()
    pred[:, :, 3], pred[:, :, 4] = VOID, 0  # labelled pixels predicted void; gt void predicted stuff
    r = evaluate_stq([(pred, gt)], [1], [0])
    # class 1: IoU 1; class 0: 2 / 4; void column: union 2, IoU 0, counted by the script
    assert r["iou"] == pytest.approx((1 + 0.5 + 0) / 3) and r["iou_corrected"] == pytest.approx(0.75)
    assert r["aq"] == 1.0 and r["stq"] == pytest.approx(np.sqrt(0.5))


@pytest.mark.parametrize("seed", [5, 6])
def test_stq_matches_literal_procedure(seed):
    videos = random_videos(seed) + random_videos(seed + 10, lengths=(4, 7), with_stuff=False)
    r = evaluate_stq(videos, THING, STUFF)
    script, fixed = literal_stq(videos, THING, STUFF), literal_stq(videos, THING, STUFF, script=False)
    assert {k: r[k] for k in ("stq", "aq", "iou")} == pytest.approx(script)
    assert {k: r[f"{k}_corrected"] for k in ("stq", "aq", "iou")} == pytest.approx(fixed)
    assert r["crowd_tubes"] == 2 and r["aq"] != pytest.approx(r["aq_corrected"])
    assert r["iou"] < r["iou_corrected"]


# ------------------------------------------------------------------------------ video consistency
def test_vc_last_window_skipped_hand_computed():
    gt = np.ones((10, 2, 3), np.int64)
    pred = gt.copy()
    pred[9, 0, 0] = 2  # only the never-scored last 8-frame window (frames 2-9) sees this change
    r = evaluate_video_consistency([(pred, gt)], windows=(8,))
    assert r["mvc_8"] == 1.0 and r["num_windows"] == {8: 2}
    assert r["mvc_8_corrected"] == pytest.approx((1 + 1 + 5 / 6) / 3)


def test_vc_windows_pool_across_sizes_hand_computed():
    gt = np.ones((20, 2, 3), np.int64)
    pred = gt.copy()
    pred[10:, 0, 0] = 2  # a change between frames 9 and 10
    r = evaluate_video_consistency([(pred, gt)])
    # 8: script starts 0..11, those 3..9 see the change; 16: starts 0..3, all see it
    assert r["mvc_8"] == pytest.approx((5 + 7 * 5 / 6) / 12)
    assert r["mvc_16"] == pytest.approx((5 + 11 * 5 / 6) / 16)  # 8- and 16-frame windows pooled
    assert r["mvc_8_corrected"] == pytest.approx((6 + 7 * 5 / 6) / 13)
    assert r["mvc_16_corrected"] == pytest.approx(5 / 6)
    assert r["num_windows"] == {8: 12, 16: 4}


def test_vc_ignored_pixels_and_short_videos():
    gt = np.ones((9, 2, 3), np.int64)
    gt[:, 0, 0] = 255
    pred = gt.copy()
    pred[::2, 0, 0] = 7  # flickers on the ignored pixel only
    short = (np.ones((8, 2, 3), np.int64), np.ones((8, 2, 3), np.int64))
    r = evaluate_video_consistency([(pred, gt)], windows=(8,))
    assert r["mvc_8"] == pytest.approx(5 / 6) and r["mvc_8_corrected"] == 1.0
    with pytest.warns(ShortVideoWarning, match="mvc_8 is NaN"):
        r = evaluate_video_consistency([short], windows=(8,))  # T == 8: the script skips it
    assert np.isnan(r["mvc_8"]) and r["mvc_8_corrected"] == 1.0 and r["num_windows"] == {8: 0}
    flicker = np.arange(10 * 6).reshape(10, 2, 3)  # no pixel keeps its label: NaN window, skipped
    r = evaluate_video_consistency([(pred, gt), (flicker, flicker)], windows=(8,))
    assert r["mvc_8"] == pytest.approx(5 / 6) and r["num_windows"] == {8: 3}


def test_vc_short_clip_warns_and_says_what_each_figure_is():
    clip = np.ones((8, 2, 3), np.int64)  # an 8-frame clip: no script window of 8, none of 16 at all
    with pytest.warns(ShortVideoWarning) as caught:
        r = evaluate_video_consistency([(clip, clip)])
    (message,) = [str(w.message) for w in caught]
    assert "mvc_8 is NaN" in message and "more than 8 frames" in message and "longest video here has 8" in message
    assert "mvc_16_corrected is NaN" in message and "mvc_8_corrected" not in message
    assert np.isnan(r["mvc_8"]) and np.isnan(r["mvc_16"]) and r["mvc_8_corrected"] == 1.0
    twelve = np.ones((12, 2, 3), np.int64)  # VC16 of a 12-frame clip pools the 8-frame windows alone: said so
    with pytest.warns(ShortVideoWarning, match="mvc_16 is the mean of the 4 shorter windows alone"):
        r = evaluate_video_consistency([(twelve, twelve)])
    assert r["mvc_16"] == 1.0 and r["num_windows"] == {8: 4, 16: 0}


def test_vc_long_enough_videos_do_not_warn():
    video = np.ones((17, 2, 3), np.int64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r = evaluate_video_consistency([(video, video)])
    assert r["num_windows"] == {8: 9, 16: 1}


@pytest.mark.parametrize("seed", [7, 8])
def test_vc_matches_literal_procedure(seed):
    rng = np.random.default_rng(seed)
    videos = []
    for t in (3, 6, 7, 12, 15):
        gt = np.repeat(rng.integers(0, 3, size=(1, 5, 6)), t, axis=0)
        gt[rng.random(gt.shape) < 0.03] = rng.integers(0, 3)
        gt[:, :1, :2] = 255
        pred = gt.copy()
        pred[rng.random(gt.shape) < 0.04] = rng.integers(0, 3)
        videos.append((pred, gt))
    r = evaluate_video_consistency(videos, windows=(4, 6))
    script, fixed = literal_vc(videos, (4, 6)), literal_vc(videos, (4, 6), script=False)
    for n in (4, 6):
        assert r[f"mvc_{n}"] == pytest.approx(script[n]) and r[f"mvc_{n}_corrected"] == pytest.approx(fixed[n])
    assert r["mvc_6"] != pytest.approx(r["mvc_6_corrected"])


# ------------------------------------------------------------------------------ bad input
def test_bad_inputs_raise():
    pred, gt = switch_video()
    with pytest.raises(ValueError, match="differ"):
        evaluate_vpq([(pred[:2], gt)], [1], [0])
    with pytest.raises(ValueError, match="neither thing nor stuff"):
        evaluate_stq([(pred, gt)], [1], [5])
    with pytest.raises(TypeError, match="integer"):
        evaluate_video_consistency([(pred.astype(float), gt)])
    with pytest.raises(ValueError, match="windows"):
        evaluate_video_consistency([(pred, gt)], windows=(1,))
    with pytest.raises(TypeError, match="pairs"):
        evaluate_vpq(np.stack([pred, gt]), [1], [0])
