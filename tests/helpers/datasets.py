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

from videomt_jax.data.categories import (
    OVIS_CLASSES,
    VSPW_CLASSES,
    VSPW_THING_IDS,
    YTVIS_2019_CLASSES,
    YTVIS_2021_CLASSES,
)

YTVIS_TABLES = {
    "ytvis_2019": YTVIS_2019_CLASSES,
    "ytvis_2021": YTVIS_2021_CLASSES,
    "ytvis_2022": YTVIS_2021_CLASSES,
    "ovis": OVIS_CLASSES,
}
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


def write_ytvis(
    root: Path, dataset: str = "ytvis_2019", split: str = "train", videos=((4, 24, 32), (3, 32, 24)), seed: int = 0
) -> dict:
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
            annotations.append(
                {
                    "id": 10 * v + k,
                    "video_id": v,
                    "category_id": category,
                    "segmentations": segs,
                    "iscrowd": 0,
                    "areas": [None] * t,
                    "bboxes": [None] * t,
                }
            )
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
            segs = [
                {"id": 1, "category_id": 0, "iscrowd": 0},
                {"id": 201, "category_id": 2, "iscrowd": 0},
                {"id": 300, "category_id": 48, "iscrowd": 1},
            ]
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
            for sub, save in (
                ("origin", lambda p, h=h, w=w: _frame(rng, h, w).save(p, quality=95)),
                ("mask", lambda p, r=raw: Image.fromarray(r).save(p)),
            ):
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


# COCO categories of the fixture: mapped for YouTube-VIS 2019 (person, car, dog, skis), and one mapped nowhere
COCO_FIXTURE_CATEGORIES = {1: "person", 3: "car", 10: "traffic light", 18: "dog", 35: "skis"}


def _rect(x0: int, y0: int, x1: int, y1: int) -> list[float]:
    return [x0, y0, x1, y0, x1, y1, x0, y1]


def write_coco(root: Path, seed: int = 0) -> dict:
    """`root/coco/` in the authors' layout (annotations/instances_train2017.json, train2017/*.jpg).

    Image 1: a person (polygon), a car (compressed RLE), a crowd person (RLE), a traffic light (polygon);
    image 2: a dog (two polygons), a person whose only polygon has 2 points, skis (uncompressed RLE);
    image 3: a traffic light alone. Every object is painted in its own colour over a grey noise
    background. Returns per image the annotations as written: id, category, mask (pycocotools'
    rasterisation of the polygons / the drawn box), colour, crowd, and whether its polygons are valid."""
    rng = np.random.default_rng(seed)
    folder = Path(root) / "coco"
    sizes = {1: (40, 56), 2: (48, 40), 3: (36, 36)}
    # image -> (annotation id, category, segmentation kind, boxes (x0, y0, x1, y1), crowd)
    specs = {
        1: [
            (11, 1, "polygon", [(4, 6, 20, 30)], 0),
            (12, 3, "rle", [(28, 10, 50, 26)], 0),
            (13, 1, "rle", [(0, 34, 56, 40)], 1),
            (14, 10, "polygon", [(40, 28, 54, 33)], 0),
        ],
        2: [
            (21, 18, "polygon", [(2, 2, 14, 14), (16, 2, 24, 10)], 0),
            (22, 1, "short", [(20, 30, 30, 40)], 0),
            (23, 35, "raw_rle", [(10, 20, 36, 44)], 0),
        ],
        3: [(31, 10, "polygon", [(5, 5, 20, 20)], 0)],
    }
    images, annotations, truth = [], [], {}
    for image_id, (h, w) in sizes.items():
        pixels = np.clip(128 + rng.integers(-20, 20, (h, w, 3)), 0, 255).astype(np.uint8)
        truth[image_id] = []
        for k, (ann_id, category, kind, boxes, crowd) in enumerate(specs[image_id]):
            if kind in ("polygon", "short"):
                polygons = [_rect(*b) for b in boxes] if kind == "polygon" else [[20, 30, 30, 40]]
                segmentation = polygons
                mask = np.zeros((h, w), bool)
                if kind == "polygon":
                    rle = mask_utils.merge(mask_utils.frPyObjects(polygons, h, w))
                    mask = mask_utils.decode(rle).astype(bool)
            else:
                mask = np.zeros((h, w), bool)
                for x0, y0, x1, y1 in boxes:
                    mask[y0:y1, x0:x1] = True
                rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
                if kind == "rle":
                    segmentation = {"size": [h, w], "counts": rle["counts"].decode("ascii")}
                else:  # uncompressed: run lengths in column-major order, starting with zeros
                    counts, value, run = [], False, 0
                    for v in mask.T.reshape(-1):
                        if v != value:
                            counts.append(run)
                            value, run = v, 0
                        run += 1
                    segmentation = {"size": [h, w], "counts": counts + [run]}
            colour = np.array([(60 * k + 40) % 256, (90 * k + 200) % 256, (150 * k + 20) % 256], np.uint8)
            pixels[mask] = colour
            annotations.append(
                {
                    "id": ann_id,
                    "image_id": image_id,
                    "category_id": category,
                    "iscrowd": crowd,
                    "segmentation": segmentation,
                    "area": float(mask.sum()),
                    "bbox": [0, 0, 1, 1],
                }
            )
            truth[image_id].append(
                {
                    "id": ann_id,
                    "category": category,
                    "mask": mask,
                    "colour": colour,
                    "crowd": bool(crowd),
                    "valid": kind != "short",
                }
            )
        path = folder / "train2017" / f"{image_id:012d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(path, quality=95)
        images.append({"id": image_id, "file_name": path.name, "height": h, "width": w})
    categories = [{"id": i, "name": n, "supercategory": "x"} for i, n in COCO_FIXTURE_CATEGORIES.items()]
    annotation_file = folder / "annotations" / "instances_train2017.json"
    annotation_file.parent.mkdir(parents=True, exist_ok=True)
    annotation_file.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return {"folder": folder, "annotation_file": annotation_file, "image_root": folder / "train2017", "truth": truth}
