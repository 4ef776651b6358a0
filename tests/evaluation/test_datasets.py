"""The paper's evaluation protocols on fixture datasets: input sizing, windows carrying the queries,
the YouTube-VIS submission file, VPQ / STQ on VIPSeg, mIoU / mVC on VSPW (random tiny models)."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import jax
import numpy as np
import pycocotools.mask as mask_utils
import pytest

from tests.helpers.datasets import write_vipseg, write_vspw, write_ytvis
from videomt_jax.config import VideomtConfig
from videomt_jax.evaluation.datasets import PROTOCOLS, evaluate_dataset, prepare_video
from videomt_jax.metrics import evaluate_video_instance
from videomt_jax.modeling.family import init_params
from videomt_jax.processing import VideoProcessor


def _model(labels: int):
    cfg = VideomtConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_blocks=1,
        image_size=32,
        patch_size=16,
        num_queries=6,
        num_register_tokens=1,
        id2label={i: str(i) for i in range(labels)},
    )
    return cfg, jax.jit(lambda k: init_params(cfg, k, image_hw=(32, 32)))(jax.random.key(0))


def test_prepare_video_resizes_the_shorter_edge_and_pads_to_32():
    frames = np.full((2, 24, 40, 3), 255, np.uint8)
    pixels, valid = prepare_video(frames, 48, 1333, 32, VideoProcessor())
    assert valid == (48, 80) and pixels.shape == (2, 64, 96, 3)  # 24 -> 48, 40 -> 80; padded to 64 x 96
    assert (pixels[:, 48:] == 0).all() and (pixels[:, :, 80:] == 0).all()
    np.testing.assert_allclose(
        pixels[0, 0, 0], (1 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225]), rtol=1e-5
    )


def test_protocols_use_the_authors_test_sizes():
    assert {k: p.data.min_size_test for k, p in PROTOCOLS.items()} == {
        "ytvis19": 448,
        "ytvis21": 448,
        "ytvis22": 448,
        "ovis": 544,
        "vipseg": 720,
        "vspw": 720,
    }
    assert (PROTOCOLS["ytvis19"].top_k, PROTOCOLS["ovis"].top_k) == (10, 20)
    # their DINOv3 YouTube-VIS configs keep the base config's 480; other datasets keep one size
    assert {k: p.test_size("dinov3") for k, p in PROTOCOLS.items()} == {
        "ytvis19": 480,
        "ytvis21": 480,
        "ytvis22": 480,
        "ovis": 544,
        "vipseg": 720,
        "vspw": 720,
    }
    assert {p.test_size("dinov2") for k, p in PROTOCOLS.items() if k.startswith("ytvis")} == {448}


def test_ytvis_submission_and_window_independence(tmp_path):
    write_ytvis(tmp_path, split="valid")
    cfg, params = _model(40)
    runs = {}
    for window in (1, 3):
        out = tmp_path / f"w{window}"
        res = evaluate_dataset(cfg, params, "ytvis19", str(tmp_path), window=window, min_size_test=32, out_dir=out)
        with zipfile.ZipFile(out / "results.zip") as archive:
            assert archive.namelist() == ["results.json"]
            runs[window] = json.loads(archive.read("results.json"))
        assert 0.0 <= res["AP"] <= 1.0
    records = runs[1]
    assert len(records) == 2 * 10  # 2 videos x MAX_NUM 10
    assert {r["video_id"] for r in records} == {1, 2}
    lengths = {1: (4, [24, 32]), 2: (3, [32, 24])}  # frames and size of the fixture videos
    for r in records:
        frames, size = lengths[r["video_id"]]
        assert len(r["segmentations"]) == frames and all(s["size"] == size for s in r["segmentations"])
        assert 1 <= r["category_id"] <= 40 and 0.0 <= r["score"] <= 1.0
    # queries carried across windows: the window size changes nothing (up to float rounding: each
    # window size is its own compiled program, whose fused sums may round an ulp apart)
    assert len(runs[1]) == len(runs[3])
    for a, b in zip(runs[1], runs[3]):
        assert (a["video_id"], a["category_id"]) == (b["video_id"], b["category_id"])
        assert a["score"] == pytest.approx(b["score"], abs=1e-5)
        assert a["segmentations"] == b["segmentations"]


def _video_truth(truth: list, t: int, h: int, w: int) -> dict:
    """The fixture writer's instances of one video as metric ground truth (labels: category id - 1)."""
    masks = np.zeros((t, len(truth), h, w), bool)
    for m, (_, frames) in enumerate(truth):
        for i, mask in enumerate(frames):
            masks[i, m] = False if mask is None else mask
    return {"masks": masks, "classes": np.array([c - 1 for c, _ in truth])}


def test_ytvis22_scores_short_and_long_videos_alone_and_averages(tmp_path):
    videos = {1: (3, 24, 32), 2: (4, 24, 32), 3: (6, 24, 32)}  # video 3: the long one
    written = write_ytvis(tmp_path, dataset="ytvis_2022", split="valid", videos=tuple(videos.values()))
    cfg, params = _model(40)
    res = evaluate_dataset(cfg, params, "ytvis22", str(tmp_path), min_size_test=32, out_dir=tmp_path / "a")
    assert [Path(f).name for f in res["subsets_missing"]] == ["gt_short.json", "gt_long.json"]
    assert "AP_short" not in res and 0.0 <= res["AP"] <= 1.0  # the annotation file's own ground truth, pooled
    valid = json.loads(written["annotation_file"].read_text())
    for name, ids in (("gt_short.json", {1, 2}), ("gt_long.json", {3})):  # the official ground-truth files
        part = dict(
            valid,
            videos=[v for v in valid["videos"] if v["id"] in ids],
            annotations=[a for a in valid["annotations"] if a["video_id"] in ids],
        )
        (written["folder"] / name).write_text(json.dumps(part))
    res = evaluate_dataset(cfg, params, "ytvis22", str(tmp_path), min_size_test=32, out_dir=tmp_path / "b")
    with zipfile.ZipFile(tmp_path / "b" / "results.zip") as archive:
        records = json.loads(archive.read("results.json"))
    expected = {}
    for name, ids in (("short", (1, 2)), ("long", (3,))):
        gts, preds = [], []
        for v in ids:
            mine = [r for r in records if r["video_id"] == v]
            masks = np.stack(
                [
                    np.stack(
                        [
                            mask_utils.decode({"size": s["size"], "counts": s["counts"].encode()})
                            for s in r["segmentations"]
                        ]
                    )
                    for r in mine
                ],
                axis=1,
            ).astype(bool)
            preds.append(
                {
                    "masks": masks,
                    "scores": np.array([r["score"] for r in mine]),
                    "classes": np.array([r["category_id"] - 1 for r in mine]),
                }
            )
            gts.append(_video_truth(written["truth"][v], *videos[v]))
        expected[name] = evaluate_video_instance(gts, preds)["AP"]
    assert (res["AP_short"], res["AP_long"]) == pytest.approx((expected["short"], expected["long"]), abs=1e-12)
    assert res["AP"] == pytest.approx((expected["short"] + expected["long"]) / 2, abs=1e-12)
    assert "AP_all" in res and "subsets_missing" not in res
    assert len(PROTOCOLS["ytvis22"].data.with_root(str(tmp_path)).open("valid_short")) == 2  # also a split of its own


@pytest.mark.parametrize(
    "dataset, writer, keys", [("vipseg", write_vipseg, ("vpq", "stq")), ("vspw", write_vspw, ("miou",))]
)
def test_panoptic_and_semantic_protocols_score(tmp_path, dataset, writer, keys):
    writer(tmp_path, split="val", videos=((8, 24, 32), (8, 24, 32)))  # VPQ tubes reach 8 frames
    cfg, params = _model(124)
    res = evaluate_dataset(cfg, params, dataset, str(tmp_path), min_size_test=32)
    assert res["num_videos"] == 2
    for key in keys:
        assert 0.0 <= res[key] <= 1.0, (key, res[key])


def test_eval_command_line_writes_the_submission(tmp_path, capsys):
    from videomt_jax.cli import main
    from videomt_jax.weights.api import save_pretrained

    write_ytvis(tmp_path, dataset="ovis", split="valid")
    cfg, params = _model(25)
    model_dir = save_pretrained(tmp_path / "model", cfg, params)
    argv = [
        "eval",
        str(model_dir),
        "--dataset",
        "ovis",
        "--data-root",
        str(tmp_path),
        "--submission-dir",
        str(tmp_path / "sub"),
        "--max-videos",
        "1",
        "--out",
        str(tmp_path / "metrics.json"),
    ]
    assert main(argv, commands=("eval",)) == 0
    assert json.loads((tmp_path / "metrics.json").read_text())["num_videos"] == 1
    assert main(argv, commands=("eval",)) == 1  # results.zip exists: needs --overwrite
    assert "--overwrite" in capsys.readouterr().err
