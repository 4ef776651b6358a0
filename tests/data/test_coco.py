"""COCO images as pseudo-videos (data/coco.py) and the 1:1 mix with the video clips (data/mixing.py), on a tiny
COCO fixture in the real format (polygons, compressed and uncompressed RLE, crowd and unmapped annotations)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from PIL import Image

from tests.helpers.datasets import rewrite_json, write_coco, write_ytvis
from videomt_jax.data.categories import (
    COCO_MAPS,
    COCO_NAMES,
    OVIS_CLASSES,
    YTVIS_2019_CLASSES,
    YTVIS_2021_CLASSES,
)
from videomt_jax.data.clip_transforms import ClipAugment
from videomt_jax.data.coco import (
    CocoClips,
    CocoInstances,
    PseudoMotion,
    coco_labels,
    pseudo_clip,
    rotate_frame,
    rotate_masks,
)
from videomt_jax.data.mixing import MixedClips
from videomt_jax.data.sources import YTVISDataConfig

FILL = (123.675, 116.28, 103.53)
TABLES = {"ytvis_2019": YTVIS_2019_CLASSES, "ytvis_2021": YTVIS_2021_CLASSES, "ovis": OVIS_CLASSES}


@pytest.fixture()
def coco(tmp_path):
    return write_coco(tmp_path)


def _reader(coco, dataset: str = "ytvis_2019") -> CocoInstances:
    labels = coco_labels(dataset, dict(enumerate(TABLES[dataset])))
    return CocoInstances(coco["annotation_file"], coco["image_root"], labels)


# What the authors' maps make of the fixture's COCO categories, by class name (written by hand from their maps).
EXPECTED_NAMES = {
    "ytvis_2019": {1: "person", 3: "sedan", 18: "dog", 35: "snowboard"},
    "ytvis_2021": {1: "person", 3: "car", 18: "dog", 35: "snowboard"},
    "ovis": {1: "Person", 3: "Vehical", 18: "Dog"},  # skis: no OVIS class
}


@pytest.mark.parametrize("dataset", sorted(EXPECTED_NAMES))
def test_category_maps_give_the_authors_classes(dataset):
    labels = coco_labels(dataset, dict(enumerate(TABLES[dataset])))
    table = TABLES[dataset]
    assert {c: table[labels[c]] for c in (1, 3, 18, 35) if c in labels} == EXPECTED_NAMES[dataset]
    assert set(labels) <= set(COCO_NAMES) and 10 not in labels  # traffic light: mapped nowhere
    assert COCO_MAPS["ytvis_2022"] is COCO_MAPS["ytvis_2021"]  # 2022 uses the 2021 categories
    with pytest.raises(ValueError, match="no COCO category map for dataset 'vspw'"):
        coco_labels("vspw", {})


@pytest.mark.parametrize("dataset", ["ytvis_2019", "ovis"])
def test_reader_keeps_mapped_non_crowd_instances_with_their_masks(coco, dataset):
    reader = _reader(coco, dataset)
    names = EXPECTED_NAMES[dataset]
    assert reader.image_ids == [1, 2]  # image 3 holds only a traffic light
    for index, image_id in enumerate(reader.image_ids):
        kept = [a for a in coco["truth"][image_id] if a["category"] in names and not a["crowd"] and a["valid"]]
        clip = reader.load(index)
        assert clip.frames.shape[0] == 1 and clip.masks.shape[:2] == (1, len(kept))
        assert [TABLES[dataset][c] for c in clip.classes] == [names[a["category"]] for a in kept]
        for m, a in enumerate(kept):  # polygons, compressed and uncompressed RLE alike
            assert (clip.masks[0, m] == a["mask"]).all()
        assert clip.track_ids.tolist() == list(range(len(kept)))
    assert reader.instances_per_image.tolist() == [len(reader.load(i).classes) for i in range(len(reader))]


def test_rotation_follows_opencv_counter_clockwise():
    # a pixel 10 to the right of the centre, turned by +90 degrees, lands 10 above it (by hand)
    masks = np.zeros((1, 41, 41), bool)
    masks[0, 20, 30] = True
    frame = np.zeros((41, 41, 3), np.uint8)
    frame[20, 30] = 250
    center = (20.5, 20.5)  # the centre of pixel (20, 20)
    assert np.argwhere(rotate_masks(masks, 90.0, center)[0]).tolist() == [[10, 20]]
    assert np.argwhere(rotate_frame(frame, 90.0, center)[..., 0] > 200).tolist() == [[10, 20]]
    assert (rotate_masks(masks, 0.0, center) == masks).all()


def test_pseudo_clip_moves_frames_and_masks_together(coco):
    reader = _reader(coco)
    image = reader.load(0)
    aug = ClipAugment(min_sizes=(40,), max_size=1000, canvas=(64, 64), flip_prob=0.0, crop_prob=0.0)
    clip = pseudo_clip(image, 4, aug, PseudoMotion(), np.random.default_rng(3), FILL)
    assert clip.frames.shape == (4, 64, 64, 3) and clip.masks.shape == (4, 2, 64, 64)
    assert not (clip.frames[0] == clip.frames[-1]).all()  # the frames turn
    kept = [a for a in coco["truth"][1] if a["category"] in (1, 3) and not a["crowd"]]
    for t in range(4):
        for m, a in enumerate(kept):
            inner = clip.masks[t, m].copy()  # the mask's pixels 2 away from its border (JPEG, bilinear edges)
            for shift, axis in [(s, a) for s in (1, -1, 2, -2) for a in (0, 1)]:
                inner &= np.roll(clip.masks[t, m], shift, axis)
            assert inner.sum() > 30
            assert np.abs(clip.frames[t][inner].astype(int) - a["colour"]).max() <= 16  # its own colour
    angles = PseudoMotion(max_angle=0.0)  # no rotation: every frame is the image itself
    still = pseudo_clip(image, 3, aug, angles, np.random.default_rng(3), FILL)
    assert (still.masks[:, :, :40, :56] == image.masks).all() and not still.masks[:, :, 40:].any()
    assert all((f[:40, :56] == image.frames[0]).all() for f in still.frames)


def test_coco_clips_are_a_pure_function_of_the_index(coco):
    labels = coco_labels("ytvis_2019", dict(enumerate(YTVIS_2019_CLASSES)))
    aug = ClipAugment(min_sizes=(32, 48), max_size=64, canvas=(64, 64), crop_prob=0.5)
    files = str(coco["annotation_file"]), str(coco["image_root"])
    clips = CocoClips(*files, labels, num_frames=5, augment=aug, fill=FILL)
    a, b = clips(3), pickle.loads(pickle.dumps(clips))(3)
    assert all((x == y).all() for x, y in zip(a[:4], b[:4]))
    assert a.frames.shape[0] == a.masks.shape[0] == 5 and a.frames.shape[1:3] == a.masks.shape[2:]
    assert all(s % 32 == 0 and s <= 64 for s in a.image_hw)  # padded to a multiple of 32, within the canvas
    assert {clips(i).video_id for i in range(4)} == {1, 2}  # two epochs of two images


def _tagged(source: int):
    return lambda n: (source, n)


@pytest.mark.parametrize("weights", [(1.0, 1.0), (1.0, 3.0)])
def test_mixed_clips_draw_each_source_at_its_ratio_and_in_its_own_order(weights):
    mixed = MixedClips((_tagged(0), _tagged(1)), weights, seed=5)
    drawn = [mixed(g) for g in range(12_000)]
    share = np.mean([s for s, _ in drawn])
    assert abs(share - weights[1] / sum(weights)) < 0.02
    for source in (0, 1):  # each source's clips 0, 1, 2, ... in the order of the global numbers
        numbers = [n for s, n in drawn if s == source]
        assert numbers == list(range(len(numbers)))
    fresh = MixedClips((_tagged(0), _tagged(1)), weights, seed=5)
    assert [fresh(g) for g in (11_999, 5, 8_200)] == [drawn[g] for g in (11_999, 5, 8_200)]  # any order


def test_ytvis_config_with_a_coco_root_mixes_pseudo_clips_one_to_one(tmp_path):
    write_ytvis(tmp_path / "data")
    write_coco(tmp_path / "extra")
    cfg = YTVISDataConfig(
        "ytvis_2019",
        root=str(tmp_path / "data"),
        num_frames=3,
        frame_range=1,
        min_size_train=(32,),
        max_size_train=64,
        canvas=(64, 64),
    )
    assert cfg.coco_ratio == 1.0  # the authors' DATASET_RATIO [1.0, 1.0]
    clips = cfg.with_coco_root(str(tmp_path / "extra")).train_clips(FILL)
    drawn = [clips(g) for g in range(40)]
    from_coco = [c.video_id in (1, 2) and (c.frame_indices == 0).all() and c.track_ids.max() < 2 for c in drawn]
    assert 10 <= sum(from_coco) <= 30
    assert all(c.num_frames == 3 and all(s % 32 == 0 and s <= 64 for s in c.image_hw) for c in drawn)
    assert type(cfg.train_clips(FILL)).__name__ == "TrainClips"  # no COCO root: the videos alone


def test_errors_name_the_file(coco, tmp_path):
    labels = coco_labels("ytvis_2019", dict(enumerate(YTVIS_2019_CLASSES)))
    path, images = coco["annotation_file"], coco["image_root"]
    with pytest.raises(FileNotFoundError, match="missing.json not found"):
        CocoInstances(tmp_path / "missing.json", images, labels)
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    with pytest.raises(ValueError, match="bad.json is not valid JSON"):
        CocoInstances(bad, images, labels)
    cases = [
        (lambda d: d.pop("images"), "lacks \\['images'\\]"),
        (lambda d: d["categories"][0].update(name="human"), "categories \\{1: 'human'\\} are not COCO's"),
        (lambda d: d["annotations"][0].update(image_id=99), "annotation 11 refers to unknown image 99"),
        (lambda d: d["annotations"][0].update(category_id=77), "annotation 11 has category 77"),
        (lambda d: d["annotations"][0].update(segmentation=[[1, 2, "x", 4, 5, 6]]), "annotation 11: polygon"),
        (lambda d: d["annotations"][1].update(segmentation={"size": [40, 56]}), "annotation 12: RLE .* lacks"),
        (lambda d: d["annotations"][2].pop("image_id"), "annotation 13 lacks \\['image_id'\\]"),
    ]
    for edit, message in cases:
        broken = tmp_path / "broken.json"
        broken.write_text(path.read_text())
        rewrite_json(broken, edit)
        with pytest.raises(ValueError, match=f"broken.json.*{message}"):
            CocoInstances(broken, images, labels)
    Image.new("RGB", (50, 40)).save(images / "000000000001.jpg")
    with pytest.raises(ValueError, match="train2017.json: image 1: .* is \\(40, 50\\), the annotation says \\(40, 56"):
        CocoInstances(path, images, labels).load(0)
    (images / "000000000002.jpg").unlink()
    with pytest.raises(FileNotFoundError, match="instances_train2017.json: image 2: file .*000000000002.jpg not found"):
        CocoInstances(path, images, labels).load(1)


def test_image_size_errors_name_the_file_and_image(coco, tmp_path):
    labels = coco_labels("ytvis_2019", dict(enumerate(YTVIS_2019_CLASSES)))
    broken = tmp_path / "sizes.json"
    broken.write_text(coco["annotation_file"].read_text())
    rewrite_json(broken, lambda d: d["images"][0].update(height=-40))
    with pytest.raises(ValueError, match=r"sizes.json: image 1: height must be a positive int, got -40"):
        CocoInstances(broken, coco["image_root"], labels)
