"""Video-level results over a stream (`postprocess.streamed.VideoLevel`) equal the whole-video
post-processing, and video-level instance tracks have unique ids (issue 18)."""

from __future__ import annotations

import numpy as np
import pytest

import videomt_jax as vm
from videomt_jax.modeling.outputs import VideomtOutput
from videomt_jax.postprocess.streamed import VideoLevel

T, Q, K, GRID, STRIDE = 7, 5, 3, (6, 8), 4
TARGET = (20, 30)


def random_output(seed: int = 0) -> VideomtOutput:
    rng = np.random.default_rng(seed)
    class_logits = rng.normal(size=(1, T, Q, K + 1)).astype(np.float32) * 2
    class_logits[..., :2, :] += np.array([4.0, 0.0, 0.0, -2.0], np.float32)  # two confident queries of class 0
    mask_logits = rng.normal(size=(1, T, Q, *GRID)).astype(np.float32) * 3
    return VideomtOutput(class_logits=class_logits, mask_logits=mask_logits)


def stream(task: str, out: VideomtOutput, chunk: int, tmp_path, **kwargs) -> tuple[np.ndarray, VideoLevel]:
    """Feed `out` in chunks, then collect the maps: [T, H, W] and the finished accumulator."""
    level = VideoLevel(task, TARGET, valid=None, stride=STRIDE, spill_dir=tmp_path, **kwargs)
    with level:
        for start in range(0, T, chunk):
            level.add(
                VideomtOutput(out.class_logits[:, start : start + chunk], out.mask_logits[:, start : start + chunk])
            )
        chunks = list(level.chunks())
    assert [c.segmentation.shape[0] for c in chunks] == [min(chunk, T - s) for s in range(0, T, chunk)]
    return np.concatenate([c.segmentation for c in chunks]), level, chunks


def test_semantic_stream_equals_whole_video(tmp_path):
    out = random_output(1)
    seg, level, chunks = stream("semantic", out, 3, tmp_path)
    whole = np.asarray(vm.video_semantic(out, TARGET, mask_stride=STRIDE))[0]  # [T, H, W]
    np.testing.assert_array_equal(seg, whole)
    classes, counts = np.unique(whole, return_counts=True)
    assert [t["id"] for t in level.tracks] == classes.tolist()  # one track per class present, id = class
    assert all(t["label_id"] == t["id"] for t in level.tracks)
    np.testing.assert_allclose([t["score"] for t in level.tracks], counts / whole.size)  # share of the video's pixels
    assert level.labels is None
    # the per-frame semantic map is a different thing (per-frame class probabilities)
    per_frame = np.asarray(vm.post_process_semantic(out, TARGET, mask_stride=STRIDE))[0]
    assert not np.array_equal(per_frame, whole)


def test_instance_stream_equals_whole_video_with_unique_tracks(tmp_path):
    out = random_output(2)
    seg, level, chunks = stream("instance", out, 2, tmp_path, top_k=4)
    whole = vm.video_instance(out, TARGET, 4, unique_queries=True, mask_stride=STRIDE)
    ids = [t["id"] for t in level.tracks]
    assert ids == np.asarray(whole.query[0]).tolist() and len(set(ids)) == len(ids)
    assert [t["label_id"] for t in level.tracks] == np.asarray(whole.label_id[0]).tolist()
    np.testing.assert_allclose([t["score"] for t in level.tracks], np.asarray(whole.score[0]), rtol=1e-6)
    masks = np.asarray(whole.masks[0])  # [N, T, H, W]
    for n, track in enumerate(ids):
        got = np.concatenate([c.masks[track] for c in chunks])
        np.testing.assert_array_equal(got, masks[n])
    expect = np.full(masks.shape[1:], -1, np.int32)
    for n in range(len(ids) - 1, -1, -1):  # higher scores painted on top
        expect[masks[n]] = ids[n]
    np.testing.assert_array_equal(seg, expect)


def test_panoptic_stream_equals_whole_video(tmp_path):
    out = random_output(3)
    seg, level, _ = stream("panoptic", out, 3, tmp_path, threshold=0.3, overlap_threshold=0.3)
    whole = vm.video_panoptic(out, TARGET, threshold=0.3, overlap_threshold=0.3, mask_stride=STRIDE)
    np.testing.assert_array_equal(seg, np.asarray(whole.segmentation[0]))
    valid = np.asarray(whole.valid[0])
    assert valid.sum() >= 1
    assert [t["id"] for t in level.tracks] == list(range(int(valid.sum())))
    assert [t["query"] for t in level.tracks] == np.asarray(whole.query[0])[valid].tolist()
    assert [t["label_id"] for t in level.tracks] == np.asarray(whole.label_id[0])[valid].tolist()


def test_unique_queries_hand_computed():
    """Query 0 is the likeliest for classes 0 and 1: the authors' pairs take it twice, unique once."""
    probs = np.array([[0.50, 0.40, 0.05, 0.05], [0.30, 0.10, 0.10, 0.50], [0.05, 0.05, 0.20, 0.70]])  # [Q, K+1]
    class_logits = np.log(probs)[None, None].astype(np.float32)  # [1, 1, Q, K+1]
    mask_logits = np.zeros((1, 1, 3, 2, 2), np.float32)
    out = VideomtOutput(class_logits=class_logits, mask_logits=mask_logits)
    pairs = vm.video_instance(out, (8, 8), 3, mask_stride=4)
    assert np.asarray(pairs.query[0]).tolist() == [0, 0, 1]  # (0, c0) .50, (0, c1) .40, (1, c0) .30
    unique = vm.video_instance(out, (8, 8), 3, unique_queries=True, mask_stride=4)
    assert np.asarray(unique.query[0]).tolist() == [0, 1, 2]  # best class each: .50, .30, .20
    assert np.asarray(unique.label_id[0]).tolist() == [0, 0, 2]
    np.testing.assert_allclose(np.asarray(unique.score[0]), [0.50, 0.30, 0.20], rtol=1e-5)
    with pytest.raises(ValueError, match="Q = 3"):
        vm.video_instance(out, (8, 8), 4, unique_queries=True, mask_stride=4)


def test_instance_threshold_keeps_tracks_scoring_at_least_it(tmp_path):
    """Issue 25.6: a threshold drops the video-level instance tracks below it, from tracks and maps."""
    out = random_output(2)
    _, everything, _ = stream("instance", out, 2, tmp_path, top_k=5)
    scores = [t["score"] for t in everything.tracks]
    threshold = float(np.median(scores))
    seg, level, chunks = stream("instance", out, 2, tmp_path, top_k=5, threshold=threshold)
    kept = [t for t in everything.tracks if t["score"] >= threshold]
    assert 0 < len(kept) < len(scores)
    assert level.tracks == kept
    assert set(np.unique(seg).tolist()) <= {-1} | {t["id"] for t in kept}
    assert all(set(c.masks) == {t["id"] for t in kept} for c in chunks)


def test_second_pass_in_pieces_equals_the_added_chunks(tmp_path):
    """Issue 24.7: the maps come `frames_per_piece` frames at a time, whatever chunk was added."""
    out = random_output(4)
    whole, _, _ = stream("panoptic", out, T, tmp_path, threshold=0.3, overlap_threshold=0.3)
    with VideoLevel(
        "panoptic",
        TARGET,
        valid=None,
        stride=STRIDE,
        spill_dir=tmp_path,
        threshold=0.3,
        overlap_threshold=0.3,
        frames_per_piece=3,
    ) as level:
        level.add(out)
        pieces = list(level.chunks())
    assert [c.segmentation.shape[0] for c in pieces] == [3, 3, 1]
    np.testing.assert_array_equal(np.concatenate([c.segmentation for c in pieces]), whole)
