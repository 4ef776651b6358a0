"""The paper's built-in recipes (values from the authors' configs); the grain pipeline yields the
recipe's batches; a run stopped and resumed on grain-fed fixture data ends bit-identical.
The command line on every dataset kind: test_train_datasets_cli.py."""

from __future__ import annotations

import dataclasses
import json

import pytest

from videomt_jax.data.categories import COCO_MAPS, COCO_TO_OVIS, COCO_TO_YTVIS_2019, COCO_TO_YTVIS_2021
from videomt_jax.training.recipes import load_recipe

SEGMENTERS = "https://huggingface.co/tue-mps/VidEoMT/resolve/main/dinov2_segmenter/"  # their model_zoo/dinov2.md
DINOV3_VITL = "facebook/dinov3-vitl16-pretrain-lvd1689m"  # their DINOv3 MODEL_NAME (no DINOv3 segmenter published)
# (recipe, backbone, layers, query blocks, steps, labels, pos-embed size, test shorter edge, NORM_QUERIES, init),
# from the authors' configs/<dataset>/videomt/<dinov2|dinov3>/<size>/*.yaml, their bases and model zoo
AUTHORS = [
    ("ytvis19-vits", "dinov2", 12, 3, 40_000, 40, 640, 448, False, SEGMENTERS + "yt_2019_small_segmenter.pth"),
    ("ytvis19-vitb", "dinov2", 12, 3, 40_000, 40, 640, 448, False, SEGMENTERS + "yt_2019_base_segmenter.pth"),
    ("ytvis19-vitl", "dinov2", 24, 4, 60_000, 40, 640, 448, False, SEGMENTERS + "yt_2019_large_segmenter.pth"),
    ("ytvis21-vitl", "dinov2", 24, 4, 160_000, 40, 640, 448, False, SEGMENTERS + "yt_2021_segmenter.pth"),
    ("ytvis22-vitl", "dinov2", 24, 4, 160_000, 40, 640, 448, False, SEGMENTERS + "yt_2022_segmenter.pth"),
    ("ovis-vitl", "dinov2", 24, 4, 160_000, 25, 640, 544, False, SEGMENTERS + "ovis_segmenter.pth"),
    ("vipseg-vitl", "dinov2", 24, 4, 40_000, 124, 1280, 720, False, SEGMENTERS + "vipseg_segmenter.pth"),
    ("vspw-vitl", "dinov2", 24, 4, 40_000, 124, 1280, 720, False, SEGMENTERS + "vspw_segmenter.pth"),
    ("ytvis19-dinov3-vitl", "dinov3", 24, 4, 160_000, 40, 640, 480, False, DINOV3_VITL),
    ("ytvis21-dinov3-vitl", "dinov3", 24, 4, 160_000, 40, 640, 480, False, DINOV3_VITL),
    ("ytvis22-dinov3-vitl", "dinov3", 24, 4, 160_000, 40, 640, 480, False, DINOV3_VITL),
    ("vipseg-dinov3-vitl", "dinov3", 24, 4, 40_000, 124, 1280, 720, True, DINOV3_VITL),
    ("vspw-dinov3-vitl", "dinov3", 24, 4, 40_000, 124, 1280, 720, True, DINOV3_VITL),
]
# Their trainer's optimizer: no clipping, decay on every parameter; the final LayerNorm in the encoder
# group at factor 1 (timm DINOv2) or block 0's factor (their DINOv3 lists it before the blocks)
FINAL_NORM_GROUP = {"dinov2": "encoder", "dinov3": "encoder_block0"}


@pytest.mark.parametrize("name, backbone, layers, blocks, steps, labels, pos, test_size, norm_queries, init", AUTHORS)
def test_recipes_carry_the_authors_solver(
    name, backbone, layers, blocks, steps, labels, pos, test_size, norm_queries, init
):
    r = load_recipe(name)
    m, t, d = r.model, r.train, r.data
    assert (m.num_hidden_layers, m.num_blocks, m.num_queries) == (layers, blocks, 200)
    assert (m.num_labels, m.image_size) == (labels, pos)
    assert (m.backbone, m.norm_queries, r.init) == (backbone, norm_queries, init)
    assert (t.steps, t.batch_size, t.num_frames, d.frame_range) == (steps, 8, 5, 2)
    assert (t.learning_rate, t.weight_decay, t.layer_decay, t.poly_power) == (1e-4, 0.05, 0.6, 0.9)
    assert (t.grad_clip, t.decay_params, t.final_norm_group) == (None, "all", FINAL_NORM_GROUP[backbone])
    assert (t.warmup_head, t.warmup_encoder, t.deep_supervision, m.train_num_points) == (500, 1000, True, 12544)
    assert t.matching == "first_appearance"  # their VideoHungarianMatcher_Consistent
    assert d.min_size_test == test_size and d.max_size_test == 1333
    if d.kind == "ytvis":
        assert d.min_size_train == (320, 352, 392, 416, 448, 480, 512, 544, 576, 608, 640) and d.max_size_train == 768
        assert d.crop_prob == 0.5
    else:
        assert d.min_size_train == (480, 512, 544, 576, 608, 640, 672, 704, 736, 768, 800) and d.max_size_train == 1333
        assert d.crop_prob == 0.0
    assert json.loads(r.to_json())["data"]["kind"] == {"ytvis": "ytvis", "vipseg": "vipseg", "vspw": "vspw"}[d.kind]
    assert load_recipe(name) == r


def test_dinov3_recipes_differ_from_dinov2_only_where_their_configs_do():
    """The DINOv3 configs copy the DINOv2 ViT-L ones but for the backbone, YouTube-VIS steps (160k for
    2019) and test size (their base's 480), NORM_QUERIES on VIPSeg / VSPW and the init."""
    for data in ("ytvis19", "ytvis21", "ytvis22", "vipseg", "vspw"):
        v2, v3 = load_recipe(f"{data}-vitl"), load_recipe(f"{data}-dinov3-vitl")
        assert dataclasses.replace(v3.data, min_size_test=v2.data.min_size_test) == v2.data, data
        assert v3.train.replace(steps=v2.train.steps, final_norm_group="encoder") == v2.train, data
        assert v3.model.key_bias is False and v3.model.layer_norm_eps == 1e-5 and v2.model.layer_norm_eps == 1e-6


def test_recipe_init_round_trips_and_is_checked(tmp_path):
    r = load_recipe("vspw-dinov3-vitl")
    path = tmp_path / "r.json"
    path.write_text(r.to_json())
    assert load_recipe(path).init == DINOV3_VITL
    path.write_text(json.dumps({"base": "vspw-vitl", "init": "runs/mine/model"}))
    assert load_recipe(path).init == "runs/mine/model"
    path.write_text(json.dumps({"base": "vspw-vitl", "init": 3}))
    with pytest.raises(ValueError, match="init must be a path, URL or Hub id"):
        load_recipe(path)
    assert load_recipe("synthetic-tiny").init is None  # trained from scratch


def test_youtube_vis_and_ovis_recipes_mix_coco_one_to_one_with_the_authors_maps():
    # their Base_R50.yaml: coco2ytvis2019 / coco2ytvis2021 (also for 2022) / coco2ovis, DATASET_RATIO [1.0, 1.0]
    for name, coco_map in (
        ("ytvis19-vits", COCO_TO_YTVIS_2019),
        ("ytvis21-vitl", COCO_TO_YTVIS_2021),
        ("ytvis22-vitl", COCO_TO_YTVIS_2021),
        ("ovis-vitl", COCO_TO_OVIS),
    ):
        data = load_recipe(name).data
        assert data.coco_ratio == 1.0 and data.coco_root is None and COCO_MAPS[data.dataset] is coco_map, name
