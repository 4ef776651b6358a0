"""Label-map conventions shared by the data sources, augmentation, evaluation and metrics."""

from __future__ import annotations

IGNORE_INDEX = 255  # semantic maps: pixel without a label
LABEL_DIVISOR = 1000  # panoptic maps: id = class * LABEL_DIVISOR + instance (stuff: instance 0)
VOID_ID = -1  # panoptic maps: void / unlabeled pixel (ground truth) or no segment (prediction)
