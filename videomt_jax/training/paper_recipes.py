"""The paper's recipes: the authors' DINOv2 configs (github tue-mps/videomt, `configs/`) as built-ins.

| recipe | authors' config | data | steps |
| --- | --- | --- | --- |
| ytvis19-vits / -vitb / -vitl | configs/ytvis19/videomt/dinov2/vit-{small,base,large}/videomt_online_ViT{S,B,L}.yaml | YouTube-VIS 2019 | 40k / 40k / 60k |
| ytvis21-vitl | configs/ytvis21/videomt/dinov2/vit-large/videomt_online_ViTL.yaml | YouTube-VIS 2021 | 160k |
| ytvis22-vitl | configs/ytvis22/videomt/dinov2/vit-large/videomt_online_ViTL.yaml | trains on 2021, evaluates 2022 | 160k |
| ovis-vitl | configs/ovis/videomt/dinov2/vit-large/videomt_online_ViTL.yaml | OVIS | 160k |
| vipseg-vitl | configs/VIPSeg/videomt/dinov2/vit-large/videomt_Online_ViTL.yaml | VIPSeg 720p | 40k |
| vspw-vitl | configs/VSPW/videomt/dinov2/vit-large/videomt_online_ViTL.yaml | VSPW 480p | 40k |

Solver values shared by all (their SOLVER / INPUT blocks): 8 clips of 5 frames (sampled within a
range of 2), AdamW, LR 1e-4, weight decay 0.05, layer-wise LR decay 0.6, warmup 500 (heads) then
1000 (encoder) steps, poly 0.9, full-model gradient clipping at 0.01, mixed precision (bfloat16
compute here), 200 queries, 12,544 loss points, deep supervision; remat `dots_no_batch` for ViT-B/L
(`REMAT`). Query blocks: the last 3 (ViT-S/B)
or 4 (ViT-L). Position embeddings at 640 (YouTube-VIS, OVIS) or 1280 (VIPSeg, VSPW). Input sizes:
see `data/sources.py` (training shorter edge and cap, test shorter edge: 448 YouTube-VIS, 544
OVIS, 720 VIPSeg / VSPW). Not reproduced: the authors add COCO images as pseudo-videos to
YouTube-VIS / OVIS training (`coco2ytvis*_train`, ratio 1:1).

Recipes are built lazily (each entry is a function), so importing this module costs nothing and
never imports `recipes.py` at import time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from videomt_jax.config import VideomtConfig
from videomt_jax.data.sources import (
    VIDEO_720P_MIN_SIZES,
    VideoDataConfig,
    VIPSegDataConfig,
    VSPWDataConfig,
    YTVISDataConfig,
)
from videomt_jax.training.config import TrainConfig

if TYPE_CHECKING:
    from videomt_jax.training.recipes import Recipe

SOLVER = dict(batch_size=8, num_frames=5, learning_rate=1e-4, weight_decay=0.05, layer_decay=0.6,
              warmup_head=500, warmup_encoder=1000, poly_power=0.9, grad_clip=0.01)
PRESET = {"vits": "small", "vitb": "base", "vitl": "large"}
# Rematerialisation per size, so that one clip per device fits 80 GB (docs/training.md, "Memory":
# by XLA's analysis ViT-B 84 GiB and ViT-L 197 GiB without remat; with dots_no_batch 10.0 and 21.8,
# VIPSeg / VSPW's ViT-L 42.9). A training setting only: `train` saves the model without it.
REMAT = {"vits": "none", "vitb": "dots_no_batch", "vitl": "dots_no_batch"}
VIDEO_720P = dict(min_size_train=VIDEO_720P_MIN_SIZES, max_size_train=1333, crop_prob=0.0,
                  canvas=(800, 1344), min_size_test=720, eval_split="val")
# Target slots per frame: more than any training clip of the dataset is expected to hold
# (a clip with more is an error that names the limit).
MAX_INSTANCES = {"ytvis": 32, "vipseg": 64, "vspw": 64}


def _recipe(name: str, size: str, steps: int, data: VideoDataConfig, pos_embed: int) -> "Recipe":
    from videomt_jax.training.recipes import Recipe

    model = VideomtConfig.preset(
        PRESET[size], image_size=pos_embed, num_queries=200, id2label=data.id2label, dtype="bfloat16",
        remat=REMAT[size],
    )
    train = TrainConfig(steps=steps, **SOLVER)
    return Recipe(name, model, train, data, augment=None, max_instances=MAX_INSTANCES[data.kind], panoptic_targets=False)


def _entry(name: str, size: str, steps: int, data: Callable[[], VideoDataConfig], pos_embed: int = 640):
    return lambda: _recipe(name, size, steps, data(), pos_embed)


_SPECS: list[tuple[str, str, int, Callable[[], VideoDataConfig], int]] = [
    ("ytvis19-vits", "vits", 40_000, lambda: YTVISDataConfig("ytvis_2019"), 640),
    ("ytvis19-vitb", "vitb", 40_000, lambda: YTVISDataConfig("ytvis_2019"), 640),
    ("ytvis19-vitl", "vitl", 60_000, lambda: YTVISDataConfig("ytvis_2019"), 640),
    ("ytvis21-vitl", "vitl", 160_000, lambda: YTVISDataConfig("ytvis_2021"), 640),
    ("ytvis22-vitl", "vitl", 160_000, lambda: YTVISDataConfig("ytvis_2021", eval_dataset="ytvis_2022"), 640),
    ("ovis-vitl", "vitl", 160_000, lambda: YTVISDataConfig("ovis", min_size_test=544), 640),
    ("vipseg-vitl", "vitl", 40_000, lambda: VIPSegDataConfig("vipseg", **VIDEO_720P), 1280),
    ("vspw-vitl", "vitl", 40_000, lambda: VSPWDataConfig("vspw", **VIDEO_720P), 1280),
]

PAPER_RECIPES: dict[str, Callable[[], Any]] = {spec[0]: _entry(*spec) for spec in _SPECS}
