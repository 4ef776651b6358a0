"""The paper's recipes: the authors' configs (github tue-mps/videomt) as built-ins.

Their config of recipe `<data>[-dinov3]-<size>` is configs/<DATA>/videomt/<dinov2|dinov3>/vit-<size>/
videomt_online_ViT<S|B|L>.yaml (VIPSeg: `videomt_Online_ViTL.yaml`):

| recipe | data | steps | test shorter edge |
| --- | --- | --- | --- |
| ytvis19-vits / -vitb / -vitl | YouTube-VIS 2019 | 40k / 40k / 60k | 448 |
| ytvis21-vitl | YouTube-VIS 2021 | 160k | 448 |
| ytvis22-vitl | trains on 2021, evaluates 2022 | 160k | 448 |
| ovis-vitl | OVIS | 160k | 544 |
| vipseg-vitl | VIPSeg 720p | 40k | 720 |
| vspw-vitl | VSPW 480p | 40k | 720 |
| ytvis19-dinov3-vitl | YouTube-VIS 2019 | 160k | 480 |
| ytvis21-dinov3-vitl | YouTube-VIS 2021 | 160k | 480 |
| ytvis22-dinov3-vitl | trains on 2021, evaluates 2022 | 160k | 480 |
| vipseg-dinov3-vitl | VIPSeg 720p, NORM_QUERIES | 40k | 720 |
| vspw-dinov3-vitl | VSPW 480p, NORM_QUERIES | 40k | 720 |

Solver values shared by all (their SOLVER / INPUT blocks): 8 clips of 5 frames (sampled within a
range of 2), LR 1e-4, weight decay 0.05, layer-wise LR decay 0.6, warmup 500 (heads) then 1000
(encoder) steps, poly 0.9, mixed precision (bfloat16 compute here), 200 queries, 12,544 loss points,
deep supervision, their clip matching (`matching="first_appearance"`); remat `dots_no_batch` for
ViT-B/L (`REMAT`). The optimizer is AdamW as their trainer runs it, which are `TrainConfig`'s
defaults: weight decay on every parameter, no gradient clipping (their YAML's 0.01 is never read),
the encoder's final LayerNorm in the encoder group; its LR factor is 1 with DINOv2 and block 0's
with DINOv3 (`BACKBONE_TRAIN`, training/optim.py). Query blocks: the last 3 (ViT-S/B) or 4 (ViT-L).
Position embeddings at 640 (YouTube-VIS, OVIS) or 1280 (VIPSeg, VSPW). Input sizes: see
`data/sources.py` (training shorter edges and cap); test shorter edge in the table (the DINOv3
YouTube-VIS configs keep their base's 480, where the DINOv2 ones set 448). YouTube-VIS / OVIS
training mixes in COCO pseudo-videos when a COCO root is given, as theirs.

DINOv3 recipes: backbone `facebook/dinov3-vitl16-pretrain-lvd1689m` (HF DINOv3ViT, rotary
positions); VIPSeg and VSPW turn NORM_QUERIES on (the final LayerNorm before propagation and the
auxiliary heads).

`init` names what each recipe expects `--init` to load: for DINOv2 the authors' per-dataset
"segmenter" (an image model trained the same way; their model_zoo/dinov2.md, "Init Weights"). The
authors publish no DINOv3 segmenter (model_zoo/dinov3.md lists trained models only), so the DINOv3
recipes name the backbone their configs build on (what their model starts from without one).

This module never imports `recipes.py`: it returns each recipe's parts (`PaperRecipe`), and
`recipes.py` builds the `Recipe` from them. Parts are built lazily (each entry is a function).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

from videomt_jax.config import VideomtConfig
from videomt_jax.data.sources import (
    VIDEO_720P_MIN_SIZES,
    VideoDataConfig,
    VIPSegDataConfig,
    VSPWDataConfig,
    YTVISDataConfig,
)
from videomt_jax.training.config import FIRST_APPEARANCE, TrainConfig

SOLVER: dict[str, Any] = dict(
    batch_size=8,
    num_frames=5,
    learning_rate=1e-4,
    weight_decay=0.05,
    layer_decay=0.6,
    warmup_head=500,
    warmup_encoder=1000,
    poly_power=0.9,
    matching=FIRST_APPEARANCE,
)
# TrainConfig values that differ by backbone (the rest: SOLVER and TrainConfig's defaults).
BACKBONE_TRAIN: dict[str, dict[str, Any]] = {"dinov2": {}, "dinov3": dict(final_norm_group="encoder_block0")}
PRESET = {"vits": "small", "vitb": "base", "vitl": "large"}
PRESET_PREFIX = {"dinov2": "", "dinov3": "dinov3-"}  # VideomtConfig.PRESETS name = prefix + PRESET[size]
# Rematerialisation per size, so that one clip per device fits 80 GB (docs/training.md, "Memory":
# by XLA's analysis ViT-B 84 GiB and ViT-L 197 GiB without remat; with dots_no_batch 10.0 and 21.8,
# VIPSeg / VSPW's ViT-L 42.9). A training setting (TrainConfig.remat), never saved with the model.
REMAT = {"vits": "none", "vitb": "dots_no_batch", "vitl": "dots_no_batch"}
VIDEO_720P: dict[str, Any] = dict(
    min_size_train=VIDEO_720P_MIN_SIZES,
    max_size_train=1333,
    crop_prob=0.0,
    canvas=(800, 1344),
    min_size_test=720,
    eval_split="val",
)
YTVIS_DINOV3_TEST = 480  # MIN_SIZE_TEST of their YouTube-VIS Base_R50.yaml, kept by the DINOv3 configs
# Target slots per clip: more than any training clip of the dataset is expected to hold. A crowded
# clip with more keeps its largest objects; `fit` counts and reports the dropped ones.
MAX_INSTANCES = {"ytvis": 32, "vipseg": 64, "vspw": 64}
SEGMENTERS = "https://huggingface.co/tue-mps/VidEoMT/resolve/main/dinov2_segmenter/"  # + <name>_segmenter.pth
DINOV3_VITL = "facebook/dinov3-vitl16-pretrain-lvd1689m"  # their MODEL.BACKBONE.MODEL_NAME


class PaperRecipe(NamedTuple):
    """A paper recipe's parts: `Recipe(name, **parts._asdict())` in recipes.py."""

    model: VideomtConfig
    train: TrainConfig
    data: VideoDataConfig
    max_instances: int
    panoptic_targets: bool
    init: str  # what `--init` should load: a segmenter URL or an HF Hub id (module docstring)


class Spec(NamedTuple):
    size: str  # vits | vitb | vitl
    backbone: str  # dinov2 | dinov3
    steps: int  # SOLVER.MAX_ITER
    data: Callable[[], VideoDataConfig]
    pos_embed: int  # MODEL.BACKBONE.IMG_SIZE
    init: str  # PaperRecipe.init
    norm_queries: bool = False  # MODEL.BACKBONE.NORM_QUERIES


def _segmenter(name: str) -> str:
    return f"{SEGMENTERS}{name}_segmenter.pth"


def _ytvis(dataset: str, **fields: Any) -> Callable[[], VideoDataConfig]:
    return functools.partial(YTVISDataConfig, dataset, **fields)


VIPSEG = functools.partial(VIPSegDataConfig, "vipseg", **VIDEO_720P)
VSPW = functools.partial(VSPWDataConfig, "vspw", **VIDEO_720P)

SPECS: dict[str, Spec] = {
    "ytvis19-vits": Spec("vits", "dinov2", 40_000, _ytvis("ytvis_2019"), 640, _segmenter("yt_2019_small")),
    "ytvis19-vitb": Spec("vitb", "dinov2", 40_000, _ytvis("ytvis_2019"), 640, _segmenter("yt_2019_base")),
    "ytvis19-vitl": Spec("vitl", "dinov2", 60_000, _ytvis("ytvis_2019"), 640, _segmenter("yt_2019_large")),
    "ytvis21-vitl": Spec("vitl", "dinov2", 160_000, _ytvis("ytvis_2021"), 640, _segmenter("yt_2021")),
    "ytvis22-vitl": Spec(
        "vitl", "dinov2", 160_000, _ytvis("ytvis_2021", eval_dataset="ytvis_2022"), 640, _segmenter("yt_2022")
    ),
    "ovis-vitl": Spec("vitl", "dinov2", 160_000, _ytvis("ovis", min_size_test=544), 640, _segmenter("ovis")),
    "vipseg-vitl": Spec("vitl", "dinov2", 40_000, VIPSEG, 1280, _segmenter("vipseg")),
    "vspw-vitl": Spec("vitl", "dinov2", 40_000, VSPW, 1280, _segmenter("vspw")),
    "ytvis19-dinov3-vitl": Spec(
        "vitl", "dinov3", 160_000, _ytvis("ytvis_2019", min_size_test=YTVIS_DINOV3_TEST), 640, DINOV3_VITL
    ),
    "ytvis21-dinov3-vitl": Spec(
        "vitl", "dinov3", 160_000, _ytvis("ytvis_2021", min_size_test=YTVIS_DINOV3_TEST), 640, DINOV3_VITL
    ),
    "ytvis22-dinov3-vitl": Spec(
        "vitl",
        "dinov3",
        160_000,
        _ytvis("ytvis_2021", eval_dataset="ytvis_2022", min_size_test=YTVIS_DINOV3_TEST),
        640,
        DINOV3_VITL,
    ),
    "vipseg-dinov3-vitl": Spec("vitl", "dinov3", 40_000, VIPSEG, 1280, DINOV3_VITL, norm_queries=True),
    "vspw-dinov3-vitl": Spec("vitl", "dinov3", 40_000, VSPW, 1280, DINOV3_VITL, norm_queries=True),
}


def paper_recipe(spec: Spec) -> PaperRecipe:
    """The parts of the recipe `spec` describes."""
    data = spec.data()
    model = VideomtConfig.preset(
        PRESET_PREFIX[spec.backbone] + PRESET[spec.size],
        image_size=spec.pos_embed,
        num_queries=200,
        id2label=data.id2label,
        dtype="bfloat16",
        norm_queries=spec.norm_queries,
    )
    train = TrainConfig(steps=spec.steps, remat=REMAT[spec.size], **SOLVER, **BACKBONE_TRAIN[spec.backbone])
    return PaperRecipe(model, train, data, MAX_INSTANCES[data.kind], panoptic_targets=False, init=spec.init)


PAPER_RECIPES: dict[str, Callable[[], PaperRecipe]] = {
    name: functools.partial(paper_recipe, spec) for name, spec in SPECS.items()
}
