"""`videomt_jax.evaluation.synthetic`: scoring plumbing checked with hand-built "oracle" outputs.

An oracle output has one query per ground-truth segment (thing instance or stuff class) with a
confident class logit and mask logits +-10 on the ground-truth mask, at full resolution (mask
stride 1, so every resize is the identity); the other queries say no-object. Such an output must
score mIoU = AP = PQ = 1 exactly, and swapping the two thing classes must drop the thing scores
to 0 while stuff stays perfect. Letters: B clips, T frames, Q queries, K classes, H/W pixels.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from videomt_jax.config import VideomtConfig
from videomt_jax.data.synthetic import SyntheticConfig, make_clip
from videomt_jax.evaluation.synthetic import (
    EvalAccumulator,
    evaluate_model,
    json_ready,
    load_data_config,
    save_data_config,
    video_metrics,
)
from videomt_jax.modeling.outputs import VideomtOutput

DATA = SyntheticConfig(
    image_size=16, num_frames=2, max_objects=3, thing_classes=("circle", "square"), stuff_classes=("sky", "grass")
)
NUM_QUERIES = 8
CONFIDENT = 10.0


def _clips(count: int = 2) -> list:
    """Held-out clips that contain at least one thing instance."""
    clips, index = [], 0
    while len(clips) < count:
        clip = make_clip(DATA, "heldout", index)
        if clip.num_instances:
            clips.append(clip)
        index += 1
    return clips


def _oracle(clips: list, swap_things: bool = False, padding: int = 1) -> VideomtOutput:
    b, (t, h, w), k = len(clips) + padding, (DATA.num_frames, *DATA.image_hw), DATA.num_classes
    class_logits = np.zeros((b, t, NUM_QUERIES, k + 1), np.float32)
    class_logits[..., k] = CONFIDENT  # no object unless set below
    mask_logits = np.full((b, t, NUM_QUERIES, h, w), -CONFIDENT, np.float32)
    for i, clip in enumerate(clips):
        segments = [(int(c), clip.masks[:, m]) for m, c in enumerate(clip.classes)]
        segments += [(s, clip.semantic == s) for s in DATA.stuff_ids if (clip.semantic == s).any()]
        assert len(segments) <= NUM_QUERIES
        for q, (label, mask) in enumerate(segments):
            if swap_things and label in DATA.thing_ids:
                label = DATA.thing_ids[1 - DATA.thing_ids.index(label)]
            class_logits[i, :, q, :] = 0.0
            class_logits[i, :, q, label] = CONFIDENT
            mask_logits[i, :, q] = np.where(mask, CONFIDENT, -CONFIDENT)  # [T, H, W]
    return VideomtOutput(class_logits=class_logits, mask_logits=mask_logits)


def test_oracle_output_scores_perfectly():
    clips = _clips()
    acc = EvalAccumulator(DATA, mask_stride=1)
    acc.update(_oracle(clips[:1], padding=2), clips[:1])  # padded rows are ignored
    acc.update(_oracle(clips[1:]), clips[1:])
    results = acc.compute()
    assert results["num_clips"] == 2
    assert results["semantic"]["miou"] == 1.0 and results["semantic"]["pixel_accuracy"] == 1.0
    one = pytest.approx(1.0, abs=1e-12)  # means of exact ones
    assert results["video_instance"]["AP"] == one and results["video_instance"]["AR10"] == one
    assert results["panoptic"]["pq"] == one and results["panoptic"]["things"]["pq"] == one
    present = {DATA.id2label[int(c)] for clip in clips for c in np.unique(clip.semantic)}
    assert set(results["panoptic"]["per_class"]) == present


def test_swapped_thing_classes_score_zero_on_things():
    clips = _clips()
    acc = EvalAccumulator(DATA, mask_stride=1)
    acc.update(_oracle(clips, swap_things=True), clips)
    results = acc.compute()
    assert results["video_instance"]["AP"] == 0.0
    assert results["panoptic"]["things"]["pq"] == 0.0
    assert results["panoptic"]["stuff"]["pq"] == pytest.approx(1.0, abs=1e-12)
    sem = results["semantic"]["iou"]
    assert sem["sky"] == 1.0 or math.isnan(sem["sky"])
    assert results["semantic"]["miou"] < 1.0


def test_data_config_round_trip_and_errors(tmp_path):
    save_data_config(tmp_path, DATA)
    assert load_data_config(tmp_path) == DATA
    with pytest.raises(FileNotFoundError, match="data.json"):
        load_data_config(tmp_path / "missing")
    config = VideomtConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_blocks=1,
        image_size=16,
        patch_size=8,
        num_queries=4,
        id2label={0: "a", 1: "b"},
    )
    with pytest.raises(ValueError, match="2 labels but the data has 4 classes"):
        evaluate_model(config, {}, DATA, num_clips=1)
    with pytest.raises(ValueError, match="unknown split"):
        evaluate_model(config.replace(id2label=DATA.id2label), {}, DATA, split="val")


def test_json_ready_makes_plain_json():
    out = json_ready({"a": float("nan"), 1: np.float32(0.5), "b": np.arange(3), "c": {"d": np.int64(2)}, "e": (1.0,)})
    assert out == {"a": None, "1": 0.5, "b": [0, 1, 2], "c": {"d": 2}, "e": [1.0]}


def test_video_metrics_of_an_oracle_and_of_an_identity_switch():
    """VPQ / STQ / mVC of whole videos: an oracle scores 1; swapping two thing queries' masks
    halfway through (an identity switch that per-frame metrics cannot see) lowers VPQ and AQ."""
    data = dataclasses.replace(DATA, num_frames=10, min_objects=2)
    clips, index = [], 0
    while len(clips) < 2:
        clip = make_clip(data, "heldout", index)
        index += 1
        same = [m for m in range(clip.num_instances) if clip.classes[m] == clip.classes[0]]
        if clip.num_instances >= 2 and len(same) >= 2 and clip.masks[:, same[:2]].any(axis=(2, 3)).all():
            clips.append(clip)
    oracle = _oracle_for(data, clips)
    perfect = video_metrics(oracle, clips, data)
    assert perfect["vpq"] == pytest.approx(1.0) and perfect["stq"] == pytest.approx(1.0)
    assert perfect["mvc_8"] == pytest.approx(1.0)
    switched = _oracle_for(data, clips, switch_at=5)
    worse = video_metrics(switched, clips, data)
    assert worse["vpq"] < 0.99 and worse["aq"] < 0.99
    assert worse["vpq_detail"]["by_tube"][1]["all"]["pq"] == pytest.approx(1.0)  # each frame alone is perfect


def _oracle_for(data: SyntheticConfig, clips: list, switch_at: int | None = None) -> VideomtOutput:
    """Oracle logits at full resolution; `switch_at`: from that frame on, the first two instances
    of the first thing class trade queries (same class, so only the identity changes)."""
    b, (t, h, w), k = len(clips), (data.num_frames, *data.image_hw), data.num_classes
    class_logits = np.zeros((b, t, NUM_QUERIES, k + 1), np.float32)
    class_logits[..., k] = CONFIDENT
    mask_logits = np.full((b, t, NUM_QUERIES, h, w), -CONFIDENT, np.float32)
    for i, clip in enumerate(clips):
        segments = [(int(c), clip.masks[:, m]) for m, c in enumerate(clip.classes)]
        segments += [(s, clip.semantic == s) for s in data.stuff_ids if (clip.semantic == s).any()]
        for q, (label, mask) in enumerate(segments):
            class_logits[i, :, q, :] = 0.0
            class_logits[i, :, q, label] = CONFIDENT
            mask_logits[i, :, q] = np.where(mask, CONFIDENT, -CONFIDENT)
        if switch_at is not None:
            a, c = [m for m in range(clip.num_instances) if clip.classes[m] == clip.classes[0]][:2]
            mask_logits[i, switch_at:, [a, c]] = mask_logits[i, switch_at:, [c, a]]
    return VideomtOutput(class_logits=class_logits, mask_logits=mask_logits, mask_stride=1)
