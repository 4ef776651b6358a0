"""Per-frame post-processing against Hugging Face's VideomtVideoProcessor, run on the same logits.

Letters: B batch, T frames, Q queries, K classes (+1 no object), h/w mask grid, H/W target size.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from transformers.models.videomt.modeling_videomt import VideomtForUniversalSegmentationOutput
from transformers.models.videomt.video_processing_videomt import VideomtVideoProcessor

from videomt_jax.modeling.outputs import VideomtOutput
from videomt_jax.postprocess import (
    SegmentResult,
    post_process_instance,
    post_process_panoptic,
    post_process_semantic,
    to_hf,
)

# (B, T, Q, K, h, w, target): up, down, non-square; the last has H + W <= 128 (torch's other kernel)
CASES = [
    (1, 3, 12, 5, 16, 16, (150, 170)),
    (2, 1, 10, 4, 40, 48, (90, 50)),
    (2, 3, 8, 3, 12, 20, (33, 70)),
]


@pytest.fixture(scope="module")
def hf() -> VideomtVideoProcessor:
    return object.__new__(VideomtVideoProcessor)  # post-processing needs no attributes


def make_logits(case, seed: int, class_scale: float = 3.0, mask_scale: float = 6.0):
    b, t, q, k, h, w, _ = case
    rng = np.random.default_rng(seed)
    c = (rng.standard_normal((b, t, q, k + 1)) * class_scale).astype(np.float32)
    m = (rng.standard_normal((b, t, q, h, w)) * mask_scale).astype(np.float32)
    return c, m


def ours(c, m) -> VideomtOutput:
    return VideomtOutput(class_logits=jnp.asarray(c), mask_logits=jnp.asarray(m))


def theirs(c, m) -> VideomtForUniversalSegmentationOutput:
    """HF's model output: frames stacked frame-major (row t*B + b)."""

    def frame_major(x):
        return torch.from_numpy(np.ascontiguousarray(np.swapaxes(x, 0, 1).reshape((-1,) + x.shape[2:])))

    return VideomtForUniversalSegmentationOutput(
        class_queries_logits=frame_major(c), masks_queries_logits=frame_major(m)
    )


def batch_major(frames: list, b: int, t: int) -> list:
    return [frames[ti * b + bi] for bi in range(b) for ti in range(t)]


def assert_segments_equal(got: list, want: list, score_tol: float) -> int:
    """Maps bit-exact, ids and labels equal, scores within score_tol. Returns the number of segments."""
    assert len(got) == len(want)
    total = 0
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g["segmentation"], w["segmentation"].numpy())
        assert [(s["id"], s["label_id"]) for s in g["segments_info"]] == [
            (s["id"], s["label_id"]) for s in w["segments_info"]
        ]
        for gs, ws in zip(g["segments_info"], w["segments_info"]):
            assert abs(gs["score"] - ws["score"]) <= score_tol
        total += len(w["segments_info"])
    return total


# ----------------------------------------------------------------------------------------- parity
@pytest.mark.parametrize("case", CASES)
def test_semantic_matches_hf(hf, case):
    b, t, *_, size = case
    c, m = make_logits(case, seed=1)
    got = to_hf(post_process_semantic(ours(c, m), size))
    want = batch_major(hf.post_process_semantic_segmentation(theirs(c, m), [size] * (b * t)), b, t)
    assert len(got) == b * t
    for g, w in zip(got, want):
        assert g.dtype == np.int64 and g.shape == size
        np.testing.assert_array_equal(g, w.numpy())


@pytest.mark.parametrize("case", CASES)
def test_instance_matches_hf(hf, case):
    b, t, *_, size = case
    c, m = make_logits(case, seed=2)
    segments = 0
    for threshold in (0.0, 0.2, 0.45):
        got = to_hf(post_process_instance(ours(c, m), size, threshold=threshold))
        want = hf.post_process_instance_segmentation(theirs(c, m), [size] * (b * t), threshold=threshold)
        want = batch_major(want, b, t)
        # scores: float32 sums in another order, then rounded to 6 decimals: one rounding step
        segments += assert_segments_equal(got, want, score_tol=1.5e-6)
    assert segments > 2 * b * t  # the comparison covered real segments


@pytest.mark.parametrize("case", CASES)
def test_panoptic_matches_hf(hf, case):
    b, t, q, k, *_, size = case
    # large class logits: most queries pass the thresholds, so many segments compete
    c, m = make_logits(case, seed=3, class_scale=8.0)
    settings = [  # (the defaults are covered by test_panoptic_overlap_ratio_compared_like_hf)
        dict(threshold=0.8, mask_threshold=0.7, overlap_mask_area_threshold=0.3),
        dict(threshold=0.5, mask_threshold=0.4, overlap_mask_area_threshold=0.6, label_ids_to_fuse={0, k - 1}),
    ]
    segments = 0
    for kwargs in settings:
        got = to_hf(post_process_panoptic(ours(c, m), size, **kwargs))
        want = batch_major(hf.post_process_panoptic_segmentation(theirs(c, m), [size] * (b * t), **kwargs), b, t)
        segments += assert_segments_equal(got, want, score_tol=1e-6)
    assert segments > 2 * b * t


def test_panoptic_overlap_ratio_compared_like_hf(hf):
    """won / own = 4 / 5 exactly: HF keeps it (float32 0.8 widened to a Python float is > 0.8)."""
    c = np.full((1, 1, 2, 3), -10.0, np.float32)
    c[0, 0, 0, 0] = c[0, 0, 1, 1] = 10.0  # query 0: class 0, query 1: class 1, both confident
    m = np.full((1, 1, 2, 4, 4), -20.0, np.float32)
    m[0, 0, 0, 0, :] = 5.0  # query 0 owns 4 pixels of row 0 ...
    m[0, 0, 0, 1, 0] = 5.0  # ... and one of row 1,
    m[0, 0, 1, 1, 0] = 8.0  # which query 1 wins
    m[0, 0, 1, 2, :] = 8.0
    got = to_hf(post_process_panoptic(ours(c, m), (4, 4)))  # same size: no resize
    want = hf.post_process_panoptic_segmentation(theirs(c, m), [(4, 4)])
    assert [s["label_id"] for s in want[0]["segments_info"]] == [0, 1]
    assert_segments_equal(got, want, score_tol=0.0)


def test_valid_size_crops_before_resize(hf):
    """valid_size (input pixels) keeps ceil(valid / stride) mask cells: HF on pre-cropped logits."""
    case = (1, 2, 6, 3, 16, 20, (120, 90))
    c, m = make_logits(case, seed=4, class_scale=6.0)
    valid, stride = (50, 70), 4  # -> 13 x 18 cells
    cropped = m[..., :13, :18]
    got = to_hf(post_process_panoptic(ours(c, m), (120, 90), threshold=0.5, valid_size=valid, mask_stride=stride))
    want = hf.post_process_panoptic_segmentation(theirs(c, cropped), [(120, 90)] * 2, threshold=0.5)
    assert_segments_equal(got, want, score_tol=1e-6)
    sem = to_hf(post_process_semantic(ours(c, m), (120, 90), valid_size=valid))
    for g, w in zip(sem, hf.post_process_semantic_segmentation(theirs(c, cropped), [(120, 90)] * 2)):
        np.testing.assert_array_equal(g, w.numpy())


# ----------------------------------------------------------------------------------------- format
def test_to_hf_format_and_order(hf):
    case = (2, 2, 6, 3, 8, 8, (20, 30))
    c, m = make_logits(case, seed=5, class_scale=6.0)
    result = post_process_panoptic(ours(c, m), (20, 30), threshold=0.5)
    assert isinstance(result, SegmentResult)
    assert result.segmentation.shape == (2, 2, 20, 30) and result.segmentation.dtype == jnp.int32
    assert result.label_id.shape == result.score.shape == result.valid.shape == (2, 2, 6)
    frames = to_hf(result)
    want = batch_major(hf.post_process_panoptic_segmentation(theirs(c, m), [(20, 30)] * 4, threshold=0.5), 2, 2)
    for frame, ref in zip(frames, want):
        assert set(frame) == set(ref) == {"segmentation", "segments_info"}
        assert frame["segmentation"].dtype == np.int64 and ref["segmentation"].dtype == torch.int64
        for s, r in zip(frame["segments_info"], ref["segments_info"]):
            assert set(s) == set(r) == {"id", "label_id", "score"}
            assert [type(s[key]) for key in ("id", "label_id", "score")] == [int, int, float]
    # frame 1 of video 0 is our entry 1 and HF's entry t*B + b = 2
    np.testing.assert_array_equal(frames[1]["segmentation"], np.asarray(result.segmentation[0, 1]))
    # several frames per lax.map step (4 frames, 3 per step: a remainder step too) change nothing
    stepped = post_process_panoptic(ours(c, m), (20, 30), threshold=0.5, frames_per_step=3)
    for name in ("segmentation", "label_id", "score", "valid", "query_segment"):
        np.testing.assert_array_equal(np.asarray(getattr(stepped, name)), np.asarray(getattr(result, name)))


def test_jit_and_traced_thresholds():
    case = (1, 1, 4, 2, 8, 8, (16, 16))
    c, m = make_logits(case, seed=6)
    direct = post_process_instance(ours(c, m), (16, 16), threshold=0.25)

    @jax.jit
    def run(c, m, threshold):
        return post_process_instance(VideomtOutput(class_logits=c, mask_logits=m), (16, 16), threshold=threshold)

    traced = run(jnp.asarray(c), jnp.asarray(m), jnp.float32(0.25))
    np.testing.assert_array_equal(np.asarray(traced.segmentation), np.asarray(direct.segmentation))


def test_bad_input_raises():
    c, m = make_logits((1, 1, 4, 2, 8, 8, None), seed=7)
    with pytest.raises(ValueError, match="disagree"):
        post_process_semantic(ours(c, m[:, :, :3]), (8, 8))
    with pytest.raises(ValueError, match=r"\[B, T, Q, K\+1\]"):
        post_process_semantic(ours(c[0], m), (8, 8))
    with pytest.raises(ValueError, match="target_size"):
        post_process_instance(ours(c, m), (0, 8))
    with pytest.raises(ValueError, match="valid_size"):
        post_process_panoptic(ours(c, m), (8, 8), valid_size=(40, 8))
    with pytest.raises(TypeError, match="class_logits"):
        post_process_panoptic(object(), (8, 8))
    with pytest.raises(TypeError, match="to_hf"):
        to_hf({"segmentation": 1})


# ------------------------------------------------------------------------------- pieces and track ids
PIECE_CASE = (1, 2, 7, 3, 6, 5, (37, 29))  # 37 rows: pieces of 5 leave a short last one


PANOPTIC_LOOSE = {"threshold": 0.0, "overlap_mask_area_threshold": 0.0}  # random logits still make segments


@pytest.mark.parametrize(
    "fn, kwargs",
    [(post_process_semantic, {}), (post_process_instance, {"threshold": 0.1}), (post_process_panoptic, PANOPTIC_LOOSE)],
    ids=["semantic", "instance", "panoptic"],
)
def test_frame_in_pieces_of_rows_equals_whole_frame(fn, kwargs):
    """Issue 24.7: large frames are post-processed a few rows at a time, with identical results."""
    c, m = make_logits(PIECE_CASE, 11)
    target, valid = PIECE_CASE[-1], (20, 14)  # a crop too
    whole = jax.device_get(fn(ours(c, m), target, valid_size=valid, mask_stride=4, **kwargs))
    pieces = jax.device_get(fn(ours(c, m), target, valid_size=valid, mask_stride=4, rows_per_step=5, **kwargs))
    for got, want in zip(jax.tree.leaves(pieces), jax.tree.leaves(whole)):
        np.testing.assert_array_equal(got, want)
    seg = whole if fn is post_process_semantic else whole.segmentation
    assert len(np.unique(np.asarray(seg))) > 2  # something to compare


def test_to_hf_adds_the_track_id_beside_hfs_fields():
    """Issue 25.2: every segment carries its query index (stable over a video); HF's fields unchanged."""
    c, m = make_logits(CASES[0], 5)
    result = post_process_panoptic(ours(c, m), CASES[0][-1], **PANOPTIC_LOOSE)
    frames = to_hf(result)
    query = np.asarray(result.query[0])  # [T, Q]
    assert any(f["segments_info"] for f in frames)
    for t, frame in enumerate(frames):
        for info in frame["segments_info"]:
            assert set(info) == {"id", "label_id", "score", "track_id"}
            assert info["track_id"] == int(query[t, info["id"]]) >= 0
