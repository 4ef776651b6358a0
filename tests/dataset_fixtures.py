"""Tiny datasets in the real on-disk formats (YouTube-VIS / OVIS, VIPSeg 720p, VSPW 480p), written by tests.

Each writer returns what it drew (per video: the frame count, size, and the ground truth as the
writer defined it), so tests compare readers against values that do not come from the readers.
Letters: T frames, H/W frame size.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_utils
from PIL import Image

from videomt_jax.data.categories import OVIS_CLASSES, VSPW_CLASSES, VSPW_THING_IDS, YTVIS_2019_CLASSES, YTVIS_2021_CLASSES

YTVIS_TABLES = {"ytvis_2019": YTVIS_2019_CLASSES, "ytvis_2021": YTVIS_2021_CLASSES, "ytvis_2022": YTVIS_2021_CLASSES, "ovis": OVIS_CLASSES}
YTVIS_PATHS = {  # dataset -> split -> (annotation file, image folder), the authors' layout
    "ovis": lambda s: (f"annotations/annotations_{s}.json", s),
}


def _frame(rng: np.random.Generator, h: int, w: int) -> Image.Image:
    base = rng.integers(0, 255, (1, 1, 3))
    noise = rng.integers(-30, 30, (h, w, 3))
    return Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8))


def _box(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    mask = np.zeros((h, w), bool)
    y, x = int(rng.integers(0, h // 2)), int(rng.integers(0, w // 2))
    mask[y : y + h // 3 + 1, x : x + w // 3 + 1] = True
    return mask


def write_ytvis(root: Path, dataset: str = "ytvis_2019", split: str = "train", videos=((4, 24, 32), (3, 32, 24)), seed: int = 0) -> dict:
    """`root/<dataset>/` in the authors' layout; 2 instances per video (category ids 1 and 3)."""
    rng = np.random.default_rng(seed)
    folder = Path(root) / dataset
    ann_rel, img_rel = YTVIS_PATHS.get(dataset, lambda s: (f"{s}.json", f"{s}/JPEGImages"))(split)
    records, annotations, truth = [], [], {}
    for v, (t, h, w) in enumerate(videos, start=1):
        names = [f"vid{v}/{i:05d}.jpg" for i in range(t)]
        for name in names:
            path = folder / img_rel / name
            path.parent.mkdir(parents=True, exist_ok=True)
            _frame(rng, h, w).save(path, quality=95)
        records.append({"id": v, "file_names": names, "height": h, "width": w, "length": t})
        truth[v] = []
        for k, category in enumerate((1, 3)):
            masks = [_box(rng, h, w) if (i + k) % 3 else None for i in range(t)]  # absent in some frames
            segs = []
            for m in masks:
                if m is None:
                    segs.append(None)
                    continue
                rle = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
                segs.append({"size": [h, w], "counts": rle["counts"].decode("ascii")})
            annotations.append({"id": 10 * v + k, "video_id": v, "category_id": category, "segmentations": segs,
                                "iscrowd": 0, "areas": [None] * t, "bboxes": [None] * t})
            truth[v].append((category, masks))
    categories = [{"id": i + 1, "name": n} for i, n in enumerate(YTVIS_TABLES[dataset])]
    (folder / ann_rel).parent.mkdir(parents=True, exist_ok=True)
    (folder / ann_rel).write_text(json.dumps({"videos": records, "annotations": annotations, "categories": categories}))
    return {"folder": folder, "annotation_file": folder / ann_rel, "image_root": folder / img_rel, "truth": truth}


def id_to_rgb(ids: np.ndarray) -> np.ndarray:
    """Segment ids -> RGB (R + 256 G + 256^2 B), the inverse of panopticapi's rgb2id, by hand."""
    return np.stack([ids % 256, (ids // 256) % 256, ids // 65536], axis=-1).astype(np.uint8)


def write_vipseg(root: Path, split: str = "train", videos=((4, 24, 32), (3, 24, 32)), seed: int = 0) -> dict:
    """`root/VIPSeg/VIPSeg_720P/`: per frame a wall (stuff, category 0) band, two doors (thing,
    category 2, segment ids 201/202), a crowd car (category 48, segment 300) and unlabeled 0."""
    rng = np.random.default_rng(seed)
    base = Path(root) / "VIPSeg" / "VIPSeg_720P"
    videos_json, annotations, truth = [], [], {}
    for v, (t, h, w) in enumerate(videos):
        vid = f"{split}_{v + 1}"
        images, frames, ids_all = [], [], []
        for i in range(t):
            ids = np.zeros((h, w), np.int64)
            ids[: h // 2] = 1  # wall segment id 1
            ids[h // 2 :, : w // 4] = 201  # door 1
            if i % 2 == 0:
                ids[h // 2 :, w // 2 : 3 * w // 4] = 202  # door 2 in even frames only
            ids[h - 2 :, w - 4 :] = 300  # crowd
            stem = f"{i:08d}"
            img = base / "images" / vid / f"{stem}.jpg"
            png = base / "panomasksRGB" / vid / f"{stem}.png"
            img.parent.mkdir(parents=True, exist_ok=True)
            png.parent.mkdir(parents=True, exist_ok=True)
            _frame(rng, h, w).save(img, quality=95)
            Image.fromarray(id_to_rgb(ids)).save(png)
            images.append({"id": stem, "file_name": f"{stem}.jpg", "height": h, "width": w})
            segs = [{"id": 1, "category_id": 0, "iscrowd": 0}, {"id": 201, "category_id": 2, "iscrowd": 0},
                    {"id": 300, "category_id": 48, "iscrowd": 1}]
            if i % 2 == 0:
                segs.append({"id": 202, "category_id": 2, "iscrowd": 0})
            frames.append({"image_id": stem, "file_name": f"{stem}.png", "segments_info": segs})
            ids_all.append(ids)
        videos_json.append({"video_id": vid, "images": images})
        annotations.append({"video_id": vid, "annotations": frames})
        truth[vid] = np.stack(ids_all)
    thing = set(VSPW_THING_IDS)
    categories = [{"id": i, "name": n, "isthing": int(i in thing)} for i, n in enumerate(VSPW_CLASSES)]
    path = base / f"panoptic_gt_VIPSeg_{split}.json"
    path.write_text(json.dumps({"videos": videos_json, "annotations": annotations, "categories": categories}))
    return {"base": base, "annotation_file": path, "truth": truth}


def write_vspw(root: Path, split: str = "train", videos=((4, 24, 32), (3, 24, 32)), seed: int = 0) -> dict:
    """`root/VSPW_480p/`: raw label values 1 (wall) top half, 3 (door) bottom-left, 0 and 255 unlabeled."""
    rng = np.random.default_rng(seed)
    base = Path(root) / "VSPW_480p"
    names, truth = [], {}
    for v, (t, h, w) in enumerate(videos):
        name = f"{split}_{v + 1}"
        names.append(name)
        raws = []
        for i in range(t):
            raw = np.zeros((h, w), np.uint8)
            raw[: h // 2] = 1
            raw[h // 2 :, : w // 2] = 3
            raw[h - 1, :] = 255
            for sub, save in (("origin", lambda p: _frame(rng, h, w).save(p, quality=95)),
                              ("mask", lambda p, r=raw: Image.fromarray(r).save(p))):
                path = base / "data" / name / sub / f"{i:08d}.{'jpg' if sub == 'origin' else 'png'}"
                path.parent.mkdir(parents=True, exist_ok=True)
                save(path)
            raws.append(raw)
        truth[name] = np.stack(raws)
    base.mkdir(parents=True, exist_ok=True)
    (base / f"{split}.txt").write_text("".join(n + "\n" for n in names))
    return {"base": base, "truth": truth}


def rewrite_json(path: os.PathLike, edit) -> None:
    """Load a JSON file, apply `edit(data)` in place, write it back."""
    data = json.loads(Path(path).read_text())
    edit(data)
    Path(path).write_text(json.dumps(data))
