"""Video files, image folders, overlays and RLE/JSON results."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from videomt_jax.io.overlay import contour_mask, overlay_video, segment_colors
from videomt_jax.io.results_json import decode_rle, encode_rle, read_results_json, write_results_json
from videomt_jax.io.video import iter_video_chunks, probe_video, read_video, write_video


def smooth_clip(t=9, h=48, w=64) -> np.ndarray:
    """Moving gradients: friendly to lossy codecs, so round trips can be bounded tightly."""
    yy, xx = np.mgrid[0:h, 0:w]
    return np.stack(
        [np.stack([(xx * 3 + 7 * k) % 256, (yy * 4) % 256, (xx + yy + 5 * k) % 256], -1) for k in range(t)]
    ).astype(np.uint8)


def few_colour_clip(t=6, h=20, w=30) -> np.ndarray:
    """At most 64 colours per frame: a GIF stores it exactly."""
    yy, xx = np.mgrid[0:h, 0:w]
    frames = [np.stack([(xx // 4) * 40, (yy // 5) * 60, np.full_like(xx, 30 * k)], -1) for k in range(t)]
    return np.stack(frames).astype(np.uint8)


@pytest.mark.parametrize("suffix,fps,mean_tol", [(".mp4", 10, 3.0), (".webm", 12, 3.0), (".mkv", 25, 3.0)])
def test_lossy_round_trip(tmp_path, suffix, fps, mean_tol):
    clip = smooth_clip()
    path = write_video(tmp_path / f"clip{suffix}", clip, fps)
    frames, got_fps = read_video(path)
    assert frames.shape == clip.shape and frames.dtype == np.uint8
    assert got_fps == pytest.approx(fps)
    assert np.abs(frames.astype(int) - clip).mean() < mean_tol
    assert probe_video(path).fps == pytest.approx(fps)
    assert [p.name for p in tmp_path.iterdir()] == [f"clip{suffix}"]  # no temporary file left behind


def test_odd_size_mp4_keeps_shape(tmp_path):
    clip = smooth_clip(t=4, h=33, w=47)
    frames, _ = read_video(write_video(tmp_path / "odd.mp4", clip, 30))
    assert frames.shape == clip.shape and np.abs(frames.astype(int) - clip).mean() < 3.0


def test_gif_round_trip_exact_with_repeated_frames(tmp_path):
    clip = few_colour_clip()
    clip = np.repeat(clip, [1, 3, 1, 2, 1, 1], axis=0)  # Pillow merges equal neighbours; we expand them back
    path = write_video(tmp_path / "clip.gif", clip, 20)
    with Image.open(path) as im:
        assert im.n_frames == 6  # stored merged
    frames, fps = read_video(path)
    np.testing.assert_array_equal(frames, clip)
    assert fps == pytest.approx(20.0)
    assert probe_video(path).num_frames == len(clip)


def test_stride_max_frames_and_chunks(tmp_path):
    clip = few_colour_clip(t=6)
    path = write_video(tmp_path / "c.gif", clip, 10)
    frames, fps = read_video(path, max_frames=2, stride=2)
    np.testing.assert_array_equal(frames, clip[[0, 2]])
    assert fps == pytest.approx(5.0)
    mp4 = write_video(tmp_path / "c.mp4", smooth_clip(t=11), 25)
    full = read_video(mp4).frames
    chunks = list(iter_video_chunks(mp4, 4))
    assert [len(c) for c in chunks] == [4, 4, 3]
    np.testing.assert_array_equal(np.concatenate(chunks), full)
    np.testing.assert_array_equal(np.concatenate(list(iter_video_chunks(mp4, 3, stride=3))), full[::3])


def test_image_folder(tmp_path):
    clip = smooth_clip(t=11, h=16, w=24)
    for k, frame in enumerate(clip):  # natural order: 2 before 10; other files ignored
        Image.fromarray(frame).save(tmp_path / f"frame_{k}.png")
    (tmp_path / "notes.txt").write_text("not a frame")
    frames, fps = read_video(tmp_path)
    np.testing.assert_array_equal(frames, clip)
    assert fps > 0 and probe_video(tmp_path).num_frames == 11
    Image.fromarray(clip[0, :8]).save(tmp_path / "frame_99.png")
    with pytest.raises(ValueError, match="frame 11 has shape"):
        read_video(tmp_path)


def test_read_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such video"):
        read_video(tmp_path / "missing.mp4")
    with pytest.raises(FileNotFoundError):
        iter_video_chunks(tmp_path / "missing.mp4", 4)  # reported at the call, not at first next()
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no images"):
        read_video(tmp_path / "empty")
    (tmp_path / "bad.mp4").write_bytes(b"\x00\x01 this is not a video" * 50)
    with pytest.raises(ValueError, match="cannot (open|decode) video"):
        read_video(tmp_path / "bad.mp4")
    (tmp_path / "bad.gif").write_bytes(b"GIF89a garbage")
    with pytest.raises(ValueError, match="GIF"):
        read_video(tmp_path / "bad.gif")
    with pytest.raises(ValueError, match="stride"):
        read_video(tmp_path / "empty", stride=0)


def test_write_errors(tmp_path):
    with pytest.raises(ValueError, match="cannot write '.avi'"):
        write_video(tmp_path / "x.avi", smooth_clip(t=2), 10)
    with pytest.raises(ValueError, match="uint8"):
        write_video(tmp_path / "x.mp4", smooth_clip(t=2).astype(np.float32), 10)
    with pytest.raises(ValueError, match="empty video"):
        write_video(tmp_path / "x.mp4", np.zeros((0, 8, 8, 3), np.uint8), 10)
    target = tmp_path / "keep.mp4"
    target.write_bytes(b"old")
    with pytest.raises(ValueError, match="fps"):
        write_video(target, smooth_clip(t=2), 0)
    assert target.read_bytes() == b"old"  # a failed write leaves the old file alone


# ------------------------------------------------------------------------------------ overlay
def test_overlay_colours_blend_and_contours():
    frames = np.random.default_rng(0).integers(0, 256, (2, 40, 50, 3)).astype(np.uint8)
    seg = np.full((2, 40, 50), -1, np.int32)
    seg[:, 10:30, 5:20] = 4
    seg[1, 20:35, 30:45] = 17
    out = overlay_video(frames, seg, {4: 0, 17: 1}, {0: "a", 1: "b"}, alpha=0.3, legend=False)
    assert out.shape == frames.shape and out.dtype == np.uint8
    colour = segment_colors([4, 17]).astype(np.float64)
    expect_4 = np.round(0.7 * frames[:, 15, 10].astype(np.float64) + 0.3 * colour[0])  # interior pixel
    np.testing.assert_array_equal(out[:, 15, 10], expect_4)
    expect_17 = np.round(0.7 * frames[1, 27, 37].astype(np.float64) + 0.3 * colour[1])
    np.testing.assert_array_equal(out[1, 27, 37], expect_17)
    np.testing.assert_array_equal(out[0, 10, 10], colour[0])  # top border of segment 4: full colour
    none = seg < 0
    np.testing.assert_array_equal(out[none], frames[none])  # -1 pixels unchanged
    assert not np.array_equal(segment_colors([4]), segment_colors([17]))
    np.testing.assert_array_equal(segment_colors([4, 17]), segment_colors([4, 17]))  # deterministic


def test_contour_mask_hand_computed():
    seg = np.array([[-1, -1, -1, -1], [-1, 2, 2, -1], [-1, 2, 2, 2], [-1, -1, -1, -1]])
    expect = np.array([[0, 0, 0, 0], [0, 1, 1, 0], [0, 1, 1, 1], [0, 0, 0, 0]], bool)
    np.testing.assert_array_equal(contour_mask(seg), expect)
    assert not contour_mask(np.full((3, 3), 5)).any()


def test_overlay_legend_and_errors():
    """The legend is a panel beside the frame (issue 18: it covered half of a 160x120 frame)."""
    frames = np.full((2, 120, 160, 3), 128, np.uint8)
    seg = np.full((2, 120, 160), -1, np.int32)
    seg[0, 80:110, 100:150] = 2
    seg[:, 0:40, 0:60] = 0  # an object in the top-left corner, where the legend used to be
    plain = overlay_video(frames, seg, [5, -1, 7], {5: "ant", 7: "zebra"}, legend=False)
    drawn = overlay_video(frames, seg, [5, -1, 7], {5: "ant", 7: "zebra"})
    assert plain.shape == frames.shape
    assert drawn.shape[:2] == (2, 120) and drawn.shape[2] > 160 and drawn.shape[2] % 2 == 0
    np.testing.assert_array_equal(drawn[:, :, :160], plain)  # every object pixel untouched by the legend
    panel = drawn[:, :, 160:]
    swatch_2 = (panel == segment_colors([2])[0]).all(-1)
    assert swatch_2[0].any() and not swatch_2[1].any()  # each frame lists its own segments: 2 is gone in frame 1
    assert (panel == segment_colors([0])[0]).all(-1)[1].any()
    assert (panel.min(-1) > 200).any()  # light text on the dark panel
    with pytest.raises(ValueError, match="segmentation"):
        overlay_video(frames, seg[:, :10])
    with pytest.raises(ValueError, match="uint8"):
        overlay_video(frames.astype(np.float32), seg)


# ------------------------------------------------------------------------------------ RLE / JSON
def test_rle_round_trip_against_pycocotools():
    rng = np.random.default_rng(5)
    mask = rng.random((37, 53)) > 0.6
    rle = encode_rle(mask)
    assert isinstance(rle["counts"], str) and rle["size"] == [37, 53]
    np.testing.assert_array_equal(decode_rle(rle), mask)
    coco = {"size": rle["size"], "counts": rle["counts"].encode()}
    assert mask_utils.area(coco) == mask.sum()
    json.dumps(rle)  # JSON-serialisable
    # uncompressed RLE (column-major run lengths, starting with zeros): 2x3 mask [[0,1,1],[0,0,1]]
    np.testing.assert_array_equal(decode_rle({"size": [2, 3], "counts": [2, 1, 1, 2]}), [[0, 1, 1], [0, 0, 1]])
    with pytest.raises(ValueError, match=r"\(H, W\)"):
        encode_rle(np.zeros((2, 3, 4), bool))


def test_results_json_frames_and_tracks(tmp_path):
    seg = np.full((3, 12, 16), -1, np.int32)
    seg[:, 2:6, 3:9] = 0
    seg[1:, 7:11, 10:15] = 1
    frames = [
        {
            "segmentation": seg[t],
            "segments_info": [{"id": 0, "label_id": 2, "score": np.float32(0.9)}]
            + ([{"id": 1, "label_id": 5, "score": 0.75}] if t else []),
        }
        for t in range(3)
    ]
    tracks = [
        {"id": 11, "label_id": 2, "score": 0.8, "masks": seg == 0},
        {"id": 40, "label_id": 5, "score": 0.6, "masks": seg == 1},
    ]
    path = tmp_path / "out" / "results.json"
    write_results_json(path, frames=frames, tracks=tracks, video_id=7, id2label={2: "cat", 5: "dog"}, category_offset=1)
    doc = read_results_json(path, decode=True)
    assert (doc["height"], doc["width"], doc["num_frames"], doc["video_id"]) == (12, 16, 3, 7)
    seg1 = doc["frames"][1]["segments"][1]
    assert seg1["label"] == "dog" and seg1["area"] == 20 and seg1["bbox"] == [10.0, 7.0, 5.0, 4.0]
    np.testing.assert_array_equal(seg1["mask"], seg[1] == 1)
    t0, t1 = doc["tracks"]
    assert (t0["id"], t0["category_id"], t0["label"], t1["areas"]) == (11, 3, "cat", [0, 20, 20])
    np.testing.assert_array_equal(t1["masks"], seg == 1)
    video_map = {"segmentation": seg, "segments_info": [{"id": 1, "label_id": 5, "score": 0.6}]}
    doc2 = write_results_json(tmp_path / "v.json", tracks=video_map)
    assert doc2["tracks"][0]["areas"] == [0, 20, 20] and doc2["num_frames"] == 3
    with pytest.raises(ValueError, match="nothing to write"):
        write_results_json(tmp_path / "none.json")
    with pytest.raises(ValueError, match="number of frames"):
        write_results_json(tmp_path / "bad.json", frames=frames[:2], tracks=tracks)
    assert not (tmp_path / "bad.json").exists()
