"""Category tables of the benchmark datasets (names in dataset id order), as the datasets define them.

YouTube-VIS 2019 / 2021 and OVIS number their categories from 1; the model's contiguous label i is the
category with the i-th smallest id (the authors' mapping). VSPW and VIPSeg share one table of 124
categories with ids 0..123 and a thing/stuff flag; the model's labels put the things first (in id
order), then the stuff (in id order), as the authors' data registration does. YouTube-VIS 2022 uses
the 2021 categories.
"""

from __future__ import annotations

YTVIS_2019_CLASSES = (
    "person", "giant_panda", "lizard", "parrot", "skateboard", "sedan", "ape", "dog", "snake", "monkey",
    "hand", "rabbit", "duck", "cat", "cow", "fish", "train", "horse", "turtle", "bear", "motorbike",
    "giraffe", "leopard", "fox", "deer", "owl", "surfboard", "airplane", "truck", "zebra", "tiger",
    "elephant", "snowboard", "boat", "shark", "mouse", "frog", "eagle", "earless_seal", "tennis_racket",
)

YTVIS_2021_CLASSES = (
    "airplane", "bear", "bird", "boat", "car", "cat", "cow", "deer", "dog", "duck", "earless_seal",
    "elephant", "fish", "flying_disc", "fox", "frog", "giant_panda", "giraffe", "horse", "leopard",
    "lizard", "monkey", "motorbike", "mouse", "parrot", "person", "rabbit", "shark", "skateboard",
    "snake", "snowboard", "squirrel", "surfboard", "tennis_racket", "tiger", "train", "truck", "turtle",
    "whale", "zebra",
)

OVIS_CLASSES = (
    "Person", "Bird", "Cat", "Dog", "Horse", "Sheep", "Cow", "Elephant", "Bear", "Zebra", "Giraffe",
    "Poultry", "Giant_panda", "Lizard", "Parrot", "Monkey", "Rabbit", "Tiger", "Fish", "Turtle",
    "Bicycle", "Motorcycle", "Airplane", "Boat", "Vehical",
)

# VSPW / VIPSeg: names of category ids 0..123
VSPW_CLASSES = (
    "wall", "ceiling", "door", "stair", "ladder", "escalator", "Playground_slide", "handrail_or_fence",
    "window", "rail", "goal", "pillar", "pole", "floor", "ground", "grass", "sand", "athletic_field",
    "road", "path", "crosswalk", "building", "house", "bridge", "tower", "windmill", "well_or_well_lid",
    "other_construction", "sky", "mountain", "stone", "wood", "ice", "snowfield", "grandstand", "sea",
    "river", "lake", "waterfall", "water", "billboard_or_Bulletin_Board", "sculpture", "pipeline",
    "flag", "parasol_or_umbrella", "cushion_or_carpet", "tent", "roadblock", "car", "bus", "truck",
    "bicycle", "motorcycle", "wheeled_machine", "ship_or_boat", "raft", "airplane", "tyre",
    "traffic_light", "lamp", "person", "cat", "dog", "horse", "cattle", "other_animal", "tree",
    "flower", "other_plant", "toy", "ball_net", "backboard", "skateboard", "bat", "ball",
    "cupboard_or_showcase_or_storage_rack", "box", "traveling_case_or_trolley_case", "basket",
    "bag_or_package", "trash_can", "cage", "plate", "tub_or_bowl_or_pot", "bottle_or_cup", "barrel",
    "fishbowl", "bed", "pillow", "table_or_desk", "chair_or_seat", "bench", "sofa", "shelf", "bathtub",
    "gun", "commode", "roaster", "other_machine", "refrigerator", "washing_machine", "Microwave_oven",
    "fan", "curtain", "textiles", "clothes", "painting_or_poster", "mirror", "flower_pot_or_vase",
    "clock", "book", "tool", "blackboard", "tissue", "screen_or_television", "computer", "printer",
    "Mobile_phone", "keyboard", "other_electronic_product", "fruit", "food", "instrument", "train",
)

# VSPW / VIPSeg: the category ids that are things (the rest are stuff)
VSPW_THING_IDS = (
    2, 4, 8, 10, 41, 43, 44, 46, 47, 48, 49, 50, 51, 52, 54, 55, 56, 60, 61, 62, 63, 64, 65, 72, 74, 76,
    77, 78, 79, 82, 83, 84, 85, 86, 87, 88, 89, 90, 91, 92, 95, 96, 97, 99, 100, 101, 102, 106, 107,
    108, 109, 114, 115, 116, 117, 118, 122, 123,
)


def things_first(names: tuple[str, ...], thing_ids: tuple[int, ...]) -> tuple[tuple[int, ...], tuple[str, ...]]:
    """(dataset id of each contiguous label, label names): things in id order, then stuff in id order."""
    things = [i for i in range(len(names)) if i in set(thing_ids)]
    stuff = [i for i in range(len(names)) if i not in set(thing_ids)]
    order = tuple(things + stuff)
    return order, tuple(names[i] for i in order)

# COCO images as pseudo-videos (data/coco.py): COCO category id -> the video dataset's category id, the
# authors' maps (`COCO_TO_YTVIS_2019`, `COCO_TO_YTVIS_2021`, `COCO_TO_OVIS`). COCO annotations of any other
# category are dropped. YouTube-VIS 2022 shares the 2021 categories, hence the 2021 map.
COCO_TO_YTVIS_2019 = {
    1: 1, 2: 21, 3: 6, 4: 21, 5: 28, 7: 17, 8: 29, 9: 34, 17: 14, 18: 8, 19: 18, 21: 15, 22: 32, 23: 20, 24: 30,
    25: 22, 35: 33, 36: 33, 41: 5, 42: 27, 43: 40,
}
COCO_TO_YTVIS_2021 = {
    1: 26, 2: 23, 3: 5, 4: 23, 5: 1, 7: 36, 8: 37, 9: 4, 16: 3, 17: 6, 18: 9, 19: 19, 21: 7, 22: 12, 23: 2, 24: 40,
    25: 18, 34: 14, 35: 31, 36: 31, 41: 29, 42: 33, 43: 34,
}
COCO_TO_OVIS = {
    1: 1, 2: 21, 3: 25, 4: 22, 5: 23, 6: 25, 8: 25, 9: 24, 17: 3, 18: 4, 19: 5, 20: 6, 21: 7, 22: 8, 23: 9, 24: 10,
    25: 11,
}
COCO_MAPS: dict[str, dict[int, int]] = {
    "ytvis_2019": COCO_TO_YTVIS_2019,
    "ytvis_2021": COCO_TO_YTVIS_2021,
    "ytvis_2022": COCO_TO_YTVIS_2021,
    "ovis": COCO_TO_OVIS,
}

# The COCO categories the maps use, by COCO id (a file whose categories carry other names is not COCO's numbering).
COCO_NAMES = {
    1: "person", 2: "bicycle", 3: "car", 4: "motorcycle", 5: "airplane", 6: "bus", 7: "train", 8: "truck", 9: "boat",
    16: "bird", 17: "cat", 18: "dog", 19: "horse", 20: "sheep", 21: "cow", 22: "elephant", 23: "bear", 24: "zebra",
    25: "giraffe", 34: "frisbee", 35: "skis", 36: "snowboard", 41: "skateboard", 42: "surfboard", 43: "tennis racket",
}
