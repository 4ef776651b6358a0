"""YouTube-VIS-format loader on a tiny dataset written here (PNG/JPEG frames, RLE and polygons)."""

from __future__ import annotations

import json

import numpy as np
import pycocotools.mask as mask_utils
import pytest
from PIL import Image

from videomt_jax.data.batching import validate_clip
from videomt_jax.data.ytvis import YTVISDataset, decode_segmentation, sample_frame_indices
from videomt_jax.metrics.vis import evaluate_video_instance

H, W = 12, 16


def _uncompressed_rle(mask: np.ndarray) -> dict:
    """Column-major run lengths starting with a run of zeros (COCO's uncompressed RLE), by hand."""
    flat = mask.T.reshape(-1).astype(np.int8)
    change = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    runs = np.diff(bounds).tolist()
    if flat[0] == 1:
        runs = [0] + runs
    return {"size": [mask.shape[0], mask.shape[1]], "counts": runs}


def _compressed_rle(mask: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": rle["size"], "counts": rle["counts"].decode("ascii")}


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("ytvis")
    rng = np.random.default_rng(0)
    frames = {}
    for vid, length, ext in (("vidA", 4, "png"), ("vidB", 3, "jpg")):
        (root / "JPEGImages" / vid).mkdir(parents=True)
        frames[vid] = rng.integers(0, 256, (length, H, W, 3), dtype=np.uint8)
        if ext == "jpg":
            frames[vid] = np.full_like(frames[vid], 90)  # flat colour survives JPEG almost exactly
        for t in range(length):
            Image.fromarray(frames[vid][t]).save(root / "JPEGImages" / vid / f"{t:05d}.{ext}")
    # Instance 10 (category 7): a moving 3x4 box, compressed RLE, absent (null) in frame 2.
    box = np.zeros((4, H, W), bool)
    for t in range(4):
        box[t, 2:5, 1 + 2 * t : 5 + 2 * t] = True
    box[2] = False
    # Instance 11 (category 3): an L shape as uncompressed RLE in frames 0-1, a polygon in frame 3.
    ell = np.zeros((4, H, W), bool)
    ell[0, 6:11, 10:12] = True
    ell[0, 9:11, 12:15] = True
    ell[1] = ell[0]
    segs_ell = [
        _uncompressed_rle(ell[0]),
        _uncompressed_rle(ell[1]),
        None,
        [[8.0, 6.0, 14.0, 6.0, 14.0, 11.0, 8.0, 11.0]],
    ]
    annotations = [
        {
            "id": 10,
            "video_id": 1,
            "category_id": 7,
            "iscrowd": 0,
            "segmentations": [_compressed_rle(box[t]) if box[t].any() else None for t in range(4)],
        },
        {"id": 11, "video_id": 1, "category_id": 3, "iscrowd": 0, "segmentations": segs_ell},
        {"id": 12, "video_id": 1, "category_id": 3, "iscrowd": 1, "segmentations": [_compressed_rle(box[0])] * 4},
        {
            "id": 20,
            "video_id": 2,
            "category_id": 3,
            "iscrowd": 0,
            "segmentations": [[[1.0, 1.0, 5.0, 1.0, 5.0]], None, [[2.0, 2.0, 6.0, 2.0, 6.0, 6.0, 2.0, 6.0]]],
        },
    ]
    data = {
        "videos": [
            {"id": 2, "file_names": [f"vidB/{t:05d}.jpg" for t in range(3)], "height": H, "width": W, "length": 3},
            {"id": 1, "file_names": [f"vidA/{t:05d}.png" for t in range(4)], "height": H, "width": W, "length": 4},
        ],
        "annotations": annotations,
        "categories": [{"id": 7, "name": "zebra"}, {"id": 3, "name": "cat"}],
    }
    (root / "train.json").write_text(json.dumps(data))
    return root, frames, box, ell, data


def test_round_trip(dataset_dir):
    root, frames, box, ell, _ = dataset_dir
    ds = YTVISDataset(root / "train.json", root / "JPEGImages")
    assert len(ds) == 2 and ds.num_classes == 2
    assert ds.id2label == {0: "cat", 1: "zebra"}  # sorted category ids 3, 7 -> 0, 1
    clip = validate_clip(ds.load_clip(0))  # videos sorted by id: video 1 first
    assert clip.video_id == 1
    np.testing.assert_array_equal(clip.frames, frames["vidA"])  # PNG is lossless
    np.testing.assert_array_equal(clip.track_ids, [10, 11])  # crowd annotation 12 skipped
    np.testing.assert_array_equal(clip.classes, [1, 0])
    np.testing.assert_array_equal(clip.masks[:, 0], box)
    np.testing.assert_array_equal(clip.masks[:3, 1], ell[:3])
    np.testing.assert_array_equal(clip.present, [[True, True], [True, True], [False, False], [True, True]])
    poly = clip.masks[3, 1]  # polygon x 8..14, y 6..11
    assert poly[7:11, 9:14].all(), "pixels well inside the polygon must be set"
    outside = np.ones((H, W), bool)
    outside[5:13, 7:16] = False
    assert not poly[outside].any(), "pixels well outside the polygon must be clear"
    assert clip.semantic is None and clip.panoptic is None


def test_jpeg_video_and_invalid_polygons(dataset_dir):
    root, frames, *_ = dataset_dir
    ds = YTVISDataset(root / "train.json", root / "JPEGImages")
    clip = ds.load_clip(1, [0, 2])
    assert np.abs(clip.frames.astype(int) - frames["vidB"][[0, 2]]).max() <= 2
    np.testing.assert_array_equal(clip.frame_indices, [0, 2])
    # frame 0 polygon has 2.5 points -> no segmentation; frame 2 a 4x4 square
    np.testing.assert_array_equal(clip.present[:, 0], [False, True])


def test_frame_sampling():
    rng = np.random.default_rng(0)
    starts = set()
    for _ in range(300):
        idx = sample_frame_indices(10, rng)  # authors' 5 frames within range 2: consecutive window
        assert idx.dtype == np.int32 and len(idx) == 5
        np.testing.assert_array_equal(np.diff(idx), 1)
        starts.add(int(idx[0]))
    assert starts == set(range(6))
    short = sample_frame_indices(3, rng)
    assert len(short) == 5 and set(short.tolist()) == {0, 1, 2} and (np.diff(short) >= 0).all()
    for _ in range(100):
        idx = sample_frame_indices(20, rng, num_frames=3, frame_range=4)
        assert len(idx) == 3 and idx.max() - idx.min() <= 8 and (np.diff(idx) >= 0).all()
    one = sample_frame_indices(1, rng, num_frames=3, frame_range=1)
    np.testing.assert_array_equal(one, [0, 0, 0])


def test_sample_clip_is_deterministic(dataset_dir):
    root, *_ = dataset_dir
    ds = YTVISDataset(root / "train.json", root / "JPEGImages")
    a = ds.sample_clip(0, np.random.default_rng(5), num_frames=3, frame_range=1)
    b = ds.sample_clip(0, np.random.default_rng(5), num_frames=3, frame_range=1)
    np.testing.assert_array_equal(a.frame_indices, b.frame_indices)
    np.testing.assert_array_equal(a.masks, b.masks)
    assert a.frames.shape == (3, H, W, 3)


def test_results_json_round_trip_and_perfect_ap(dataset_dir):
    root, *_ = dataset_dir
    ds = YTVISDataset(root / "train.json", root / "JPEGImages")
    clip = ds.load_clip(0)
    results = ds.results_json(0, np.array([0.9, 0.8]), clip.classes, clip.masks)
    assert [r["category_id"] for r in results] == [7, 3] and results[0]["video_id"] == 1
    for k, r in enumerate(results):
        decoded = np.stack([decode_segmentation(s, H, W) for s in r["segmentations"]])
        np.testing.assert_array_equal(decoded, clip.masks[:, k])
    gt = {"masks": clip.masks, "classes": clip.classes}
    pred = {"masks": clip.masks, "scores": np.array([0.9, 0.8]), "classes": clip.classes}
    assert evaluate_video_instance([gt], [pred])["AP"] == pytest.approx(1.0, abs=1e-12)
    with pytest.raises(ValueError, match="results_json"):
        ds.results_json(0, np.array([0.9]), clip.classes, clip.masks)


def test_errors(dataset_dir, tmp_path):
    root, _, _, _, data = dataset_dir
    bad = dict(data, annotations=data["annotations"] + [dict(data["annotations"][0], id=99, category_id=5)])
    (tmp_path / "a.json").write_text(json.dumps(bad))
    with pytest.raises(ValueError, match="annotation 99 has unknown category 5"):
        YTVISDataset(tmp_path / "a.json", root / "JPEGImages")
    (tmp_path / "b.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        YTVISDataset(tmp_path / "b.json", root / "JPEGImages")
    (tmp_path / "c.json").write_text(json.dumps({"videos": []}))
    with pytest.raises(ValueError, match=r"lacks the keys \['categories'\]"):
        YTVISDataset(tmp_path / "c.json", root / "JPEGImages")
    wrong_size = dict(data, videos=[dict(v, height=H + 1) for v in data["videos"]])
    (tmp_path / "d.json").write_text(json.dumps(dict(wrong_size, annotations=[])))
    ds = YTVISDataset(tmp_path / "d.json", root / "JPEGImages")
    with pytest.raises(ValueError, match=r"00000.png is \(12, 16\), the annotation says \(13, 16\)"):
        ds.load_clip(0)
    ds = YTVISDataset(root / "train.json", root / "JPEGImages")
    with pytest.raises(IndexError, match="frame indices"):
        ds.load_clip(0, [0, 4])
    with pytest.raises(ValueError, match="RLE size"):
        decode_segmentation({"size": [3, 3], "counts": [9]}, H, W)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda d: d["videos"][1].update(height=-4), r"train.json: video 1: height must be a positive int, got -4"),
        (lambda d: d["videos"][0].update(width="16"), r"train.json: video 2: width must be a positive int, got '16'"),
        (lambda d: d["videos"].append([1, 2]), r"train.json: video 2 must be a JSON object, got list"),
        (lambda d: d.update(annotations={"id": 1}), r"train.json: 'annotations' must be a list, got dict"),
    ],
)
def test_hostile_video_records_name_file_and_video(dataset_dir, tmp_path, edit, message):
    root, _, _, _, data = dataset_dir
    broken = json.loads(json.dumps(data))
    edit(broken)
    (tmp_path / "train.json").write_text(json.dumps(broken))
    with pytest.raises(ValueError, match=message):
        YTVISDataset(tmp_path / "train.json", root / "JPEGImages")


@pytest.mark.parametrize(
    "segmentation, message",
    [
        ({"size": [H, W], "counts": "zzzz!!"}, rf"compressed RLE counts do not describe {H}\*{W} pixels"),
        ({"size": [H, W], "counts": "o1"}, rf"compressed RLE counts do not describe {H}\*{W} pixels"),  # 63 pixels
        ({"size": [H, W], "counts": [5, 7]}, rf"uncompressed RLE counts must be non-negative ints summing to {H}\*{W}"),
        ({"size": H, "counts": [H * W]}, rf"RLE size {H} does not match the video size \({H}, {W}\)"),
        ([[1, 2, "x", 4, 5, 6]], r"polygon coordinates must be numbers"),
    ],
)
def test_bad_segmentations_name_file_video_annotation_and_frame(dataset_dir, tmp_path, segmentation, message):
    root, _, _, _, data = dataset_dir
    broken = json.loads(json.dumps(data))
    broken["annotations"][1]["segmentations"][3] = segmentation
    (tmp_path / "train.json").write_text(json.dumps(broken))
    ds = YTVISDataset(tmp_path / "train.json", root / "JPEGImages")
    with pytest.raises(ValueError, match=r"train.json: video 1 annotation 11 frame 3: " + message) as error:
        ds.load_targets(ds.videos.index(next(v for v in ds.videos if v["id"] == 1)))
    assert "\n" not in str(error.value)
