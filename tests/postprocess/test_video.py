"""Video-level results: constructed logits with known answers, and a PyTorch transcription of the
authors' video inference (tue-mps/videomt `inference_video_{vis,vps,vss}`) on random logits.

Letters: B batch, T frames, Q queries, K classes (+1 no object), h/w mask grid, H/W target size.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from videomt_jax.modeling.outputs import VideomtOutput
from videomt_jax.postprocess import VideoPanopticResult, video_instance, video_panoptic, video_semantic

BIG = 12.0  # a confident logit


def output(c, m) -> VideomtOutput:
    return VideomtOutput(class_logits=jnp.asarray(c, jnp.float32), mask_logits=jnp.asarray(m, jnp.float32))


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


# ------------------------------------------------------------------- constructed: known answers
def two_tracks():
    """One video, 2 frames, 4 queries, 3 classes, 8x8 mask grid (stride 4 -> 32x32 input).

    query 0: frame 0 favours class 1, frame 1 class 2 more strongly (the mean picks class 2);
             mask = left half in frame 0, right half in frame 1.
    query 1: class 0; mask = right half in frame 0, left half in frame 1.
    queries 2, 3: no object, empty masks."""
    c = np.full((1, 2, 4, 4), -BIG, np.float32)
    c[0, 0, 0, 1], c[0, 1, 0, 2] = 4.0, 9.0
    c[0, :, 1, 0] = 6.0
    c[0, :, 2:, 3] = BIG
    m = np.full((1, 2, 4, 8, 8), -BIG, np.float32)
    m[0, 0, 0, :, :4] = m[0, 1, 0, :, 4:] = BIG
    m[0, 0, 1, :, 4:] = m[0, 1, 1, :, :4] = BIG
    return c, m


def halves(size):
    left = np.zeros(size, bool)
    left[:, : size[1] // 2] = True  # antisymmetric logits: the zero crossing is the exact middle
    return left, ~left


def test_video_instance_known_tracks():
    c, m = two_tracks()
    res = video_instance(output(c, m), (16, 24), top_k=3)
    probs = softmax(c[0].mean(axis=0))[:, :-1]  # [Q, K]: authors' mean of logits, then softmax
    order = np.argsort(-probs.reshape(-1), kind="stable")[:3]
    np.testing.assert_array_equal(np.asarray(res.query[0]), order // 3)
    np.testing.assert_array_equal(np.asarray(res.label_id[0]), order % 3)
    np.testing.assert_allclose(np.asarray(res.score[0]), probs.reshape(-1)[order], rtol=1e-6)
    assert list(np.asarray(res.query[0, :2])) == [1, 0] and list(np.asarray(res.label_id[0, :2])) == [0, 2]
    left, right = halves((16, 24))
    masks = np.asarray(res.masks)  # [B, N, T, H, W]
    assert masks.shape == (1, 3, 2, 16, 24)
    np.testing.assert_array_equal(masks[0, 0], np.stack([right, left]))  # query 1
    np.testing.assert_array_equal(masks[0, 1], np.stack([left, right]))  # query 0: the track moves


def test_video_panoptic_known_segments():
    """query 0: thing (class 0), left half; queries 1 and 2: stuff class 2, the top and bottom of
    the right half (merged into one segment); query 3: class 1 everywhere at a lower score, so it
    wins only column 7 of the grid where nobody else is confident, and won / own < 0.8 drops it;
    query 4: below the threshold; query 5: no object."""
    q, k, t = 6, 3, 2
    c = np.full((1, t, q, k + 1), -BIG, np.float32)
    c[0, :, 0, 0] = c[0, :, 1, 2] = c[0, :, 2, 2] = BIG
    c[0, :, 3, 1] = 1.0  # confident enough: the other logits are -BIG
    c[0, :, 4, 1], c[0, :, 4, 0] = 1.0, 1.0  # two tied classes: probability < 0.5
    c[0, :, 5, 3] = BIG
    m = np.full((1, t, q, 8, 8), -BIG, np.float32)
    m[0, :, 0, :, :4] = BIG
    m[0, :, 1, :4, 4:7] = BIG
    m[0, :, 2, 4:, 4:7] = BIG
    m[0, :, 3] = BIG
    m[0, :, 4] = BIG
    probs = softmax(c[0].mean(axis=0))
    assert probs[3].max() > 0.8 > probs[4].max()  # query 3 passes the object threshold, 4 does not
    res = video_panoptic(output(c, m), (8, 8), threshold=0.8, overlap_threshold=0.8, stuff_label_ids=[2], mask_stride=1)
    assert isinstance(res, VideoPanopticResult)
    count = int(res.num_segments[0])
    assert count == 2
    assert list(np.asarray(res.label_id[0, :count])) == [0, 2]
    assert list(np.asarray(res.query[0, :count])) == [0, 1]
    assert list(np.asarray(res.isthing[0, :count])) == [True, False]
    assert list(np.asarray(res.query_segment[0])) == [0, 1, 1, -1, -1, -1]
    np.testing.assert_allclose(np.asarray(res.score[0, :count]), probs[[0, 1], [0, 2]], rtol=1e-6)
    want = np.full((8, 8), -1)
    want[:, :4], want[:, 4:7] = 0, 1  # column 7: won by the dropped query 3 -> void
    for frame in np.asarray(res.segmentation[0]):
        np.testing.assert_array_equal(frame, want)
    # with a lax overlap threshold query 3 keeps column 7 (8 of its 64 pixels)
    lax = video_panoptic(output(c, m), (8, 8), threshold=0.8, overlap_threshold=0.1, stuff_label_ids=[2], mask_stride=1)
    assert list(np.asarray(lax.query[0, :3])) == [0, 1, 3]
    assert (np.asarray(lax.segmentation[0, :, :, 7]) == 2).all()


def test_video_semantic_known_classes():
    c, m = two_tracks()
    got = np.asarray(video_semantic(output(c, m), (16, 24)))
    # query 0's averaged class is 2, query 1's is 0; queries 2, 3 add ~nothing anywhere
    left, _ = halves((16, 24))
    np.testing.assert_array_equal(got[0, 0], np.where(left, 2, 0))
    np.testing.assert_array_equal(got[0, 1], np.where(left, 0, 2))


# ------------------------------------------------------------------- the authors' procedure
def authors_masks(mask_logits, valid, stride, size, sigmoid):
    """[N, T, h, w] -> resize to the padded input, crop `valid`, (sigmoid), resize to `size`."""
    pad = (mask_logits.shape[-2] * stride, mask_logits.shape[-1] * stride)
    x = F.interpolate(mask_logits, size=pad, mode="bilinear", align_corners=False)[:, :, : valid[0], : valid[1]]
    x = x.sigmoid() if sigmoid else x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def authors_vis(c, m, valid, stride, size, top_k):
    scores = F.softmax(c.mean(0), dim=-1)[:, :-1]  # [Q, K]
    num_labels = scores.shape[1]
    top, index = scores.flatten().topk(top_k)
    chosen = m.transpose(0, 1)[index // num_labels]  # [N, T, h, w]
    return top, index % num_labels, index // num_labels, authors_masks(chosen, valid, stride, size, False) > 0


def authors_vps(c, m, valid, stride, size, threshold, overlap, stuff):
    probs = F.softmax(c.mean(0), dim=-1)
    scores, labels = probs.max(-1)
    keep = (labels != probs.shape[1] - 1) & (scores > threshold)
    masks = authors_masks(m.transpose(0, 1)[keep], valid, stride, size, True)  # [n, T, H, W]
    winner = (scores[keep].view(-1, 1, 1, 1) * masks).argmax(0)
    seg = torch.zeros(masks.shape[1:], dtype=torch.int32)
    info, merged, current = [], {}, 0
    for i, (label, query) in enumerate(zip(labels[keep].tolist(), torch.nonzero(keep)[:, 0].tolist())):
        won, own = winner == i, masks[i] >= 0.5
        both = won & own
        if not (won.sum() > 0 and own.sum() > 0 and both.sum() > 0) or won.sum().item() / own.sum().item() < overlap:
            continue
        if label in stuff and label in merged:
            seg[both] = merged[label]
            continue
        current += 1
        merged.setdefault(label, current) if label in stuff else None
        seg[both] = current
        info.append((current, label, label not in stuff, query))
    return seg, info


def authors_vss(c, m, valid, stride, size):
    probs = F.softmax(c.mean(0), dim=-1)[:, :-1]
    masks = authors_masks(m.transpose(0, 1), valid, stride, size, True)  # [Q, T, H, W]
    return torch.einsum("qc,qthw->cthw", probs, masks).argmax(0)


# (T, Q, K, h, w, valid input pixels, target): the padded input is (h, w) x 4
RANDOM_CASES = [(3, 10, 4, 24, 20, (90, 80), (70, 100)), (2, 12, 5, 20, 32, (80, 128), (150, 90))]


@pytest.mark.parametrize("case", RANDOM_CASES)
def test_video_results_match_authors_procedure(case):
    t, q, k, h, w, valid, size = case
    rng = np.random.default_rng(sum(case[:5]))
    c = (rng.standard_normal((2, t, q, k + 1)) * 4).astype(np.float32)  # two videos
    m = (rng.standard_normal((2, t, q, h, w)) * 6 - 6).astype(np.float32)  # each mask covers ~1/6
    out = output(c, m)
    inst = video_instance(out, size, top_k=6, valid_size=valid)
    pan = video_panoptic(out, size, threshold=0.3, overlap_threshold=0.3, stuff_label_ids=(1, 2), valid_size=valid)
    sem = np.asarray(video_semantic(out, size, valid_size=valid))
    segments = 0
    for b in range(2):
        ct, mt = torch.from_numpy(c[b]), torch.from_numpy(m[b])
        score, label, query, masks = authors_vis(ct, mt, valid, 4, size, 6)
        np.testing.assert_allclose(np.asarray(inst.score[b]), score.numpy(), rtol=1e-6)
        np.testing.assert_array_equal(np.asarray(inst.label_id[b]), label.numpy())
        np.testing.assert_array_equal(np.asarray(inst.query[b]), query.numpy())
        np.testing.assert_array_equal(np.asarray(inst.masks[b]), masks.numpy())

        seg, info = authors_vps(ct, mt, valid, 4, size, 0.3, 0.3, {1, 2})
        np.testing.assert_array_equal(np.asarray(pan.segmentation[b]) + 1, seg.numpy())  # theirs: 1-based, 0 = void
        n = int(pan.num_segments[b])
        fields = (np.asarray(x[b, :n]).tolist() for x in (pan.label_id, pan.isthing, pan.query))
        ours = list(zip(range(1, n + 1), *fields))
        assert ours == info
        segments += n

        np.testing.assert_array_equal(sem[b], authors_vss(ct, mt, valid, 4, size).numpy())
    assert segments >= 6  # the comparison covered real segments (11 and 14 here)


def test_video_bad_input_raises():
    c, m = two_tracks()
    with pytest.raises(ValueError, match="top_k"):
        video_instance(output(c, m), (8, 8), top_k=13)  # Q*K = 12
    with pytest.raises(ValueError, match="valid_size"):
        video_semantic(output(c, m), (8, 8), valid_size=(33, 8))
    with pytest.raises(TypeError, match="stuff_label_ids"):
        video_panoptic(output(c, m), (8, 8), stuff_label_ids=["sky"])
