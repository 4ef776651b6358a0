"""Evaluate a model on synthetic clips: semantic mIoU, video instance AP, panoptic PQ.

Letters: B clips per batch, T frames, H/W frame size, Q queries, N top-k instances,
M ground-truth thing instances.

- semantic: `post_process_semantic` (per frame, HF semantics) against `Clip.semantic`, mIoU over
  all classes (things and stuff).
- video instance: `video_instance` (the authors' YouTube-VIS inference: frame-averaged class
  scores, top-k (query, class) pairs, the query is the track) against the clip's thing instances,
  YouTube-VIS AP (`metrics.vis`). Only thing classes are evaluated: predicted pairs of stuff
  classes are dropped before matching.
- panoptic: `post_process_panoptic` per frame (stuff classes fused into one segment per class)
  against `Clip.panoptic`, PQ accumulated over all frames (`metrics.panoptic`).
- long clips: `LONG_CLIPS` clips of `LONG_FRAMES` frames (objects bounce off the borders, so every
  frame has some), streamed through `VideoStreamer` in chunks of `LONG_CHUNK` with the state carried
  across chunks, as online use does; semantic mIoU over all frames and pixel accuracy of the first
  and last `LONG_WINDOW` frames. The short clips only test the first few steps of the recurrence; a
  model whose carried queries drift shows here (`evaluate_long`).
The data config a model was trained on is stored next to it (`DATA_CONFIG_NAME`), so `eval` and
the demo rebuild the same kind of clips from the model directory alone.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np

from videomt_jax.config import VideomtConfig
from videomt_jax.data.batching import Clip
from videomt_jax.data.synthetic import SPLITS, SyntheticConfig, make_clip
from videomt_jax.evaluation.runner import call_bytes, check_fits, model_streamer
from videomt_jax.metrics.consistency import evaluate_video_consistency
from videomt_jax.metrics.panoptic import PanopticAccumulator, panoptic_from_segments
from videomt_jax.metrics.semantic import SemanticAccumulator
from videomt_jax.metrics.stq import evaluate_stq
from videomt_jax.metrics.vis import VideoInstanceAccumulator
from videomt_jax.metrics.vpq import evaluate_vpq
from videomt_jax.modeling.family import model_for
from videomt_jax.modeling.outputs import VideomtOutput
from videomt_jax.modeling.xla_options import jit_model
from videomt_jax.postprocess.frame import post_process_panoptic, post_process_semantic
from videomt_jax.postprocess.video import TOP_K, video_instance, video_panoptic, video_semantic
from videomt_jax.processing import VideoProcessor, default_processor
from videomt_jax.streaming import split_chunks
from videomt_jax.utils.io import add_to_manifest, atomic_write_text
from videomt_jax.utils.structs import dataclass_from_dict

EVAL_CLIPS = 32  # held-out clips scored by `evaluate_model` / `videomt-jax eval`
EVAL_BATCH = 4  # clips per forward pass there
DATA_CONFIG_NAME = "data.json"  # SyntheticConfig of the training data, inside a saved model directory
LONG_CLIPS = 4  # long held-out clips scored by `evaluate_long` (all streamed as one batch)
LONG_FRAMES = 64  # frames per long clip
LONG_CHUNK = 8  # frames per streamed call
LONG_WINDOW = 16  # pixel accuracy is reported for the first and the last this many frames


def save_data_config(model_dir: str | Path, data: SyntheticConfig) -> Path:
    """Write `data` as `model_dir/data.json` (the directory must exist)."""
    path = Path(model_dir) / DATA_CONFIG_NAME
    spec = {"kind": "synthetic", **dataclasses.asdict(data)}
    atomic_write_text(path, json.dumps(spec, indent=2, sort_keys=True) + "\n")
    add_to_manifest(model_dir, DATA_CONFIG_NAME)  # still exactly the model's own files
    return path


def load_data_config(model_dir: str | Path) -> SyntheticConfig:
    """The SyntheticConfig stored by `save_data_config` in `model_dir`."""
    path = Path(model_dir) / DATA_CONFIG_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: the model directory holds no data config (pass --recipe)")
    spec = json.loads(path.read_text())
    kind = spec.pop("kind", "synthetic")
    if kind != "synthetic":
        raise ValueError(f"{path}: data kind {kind!r} is not supported (only 'synthetic')")
    return dataclass_from_dict(SyntheticConfig, spec, str(path))


def json_ready(value: Any) -> Any:
    """Metric dicts -> plain JSON: numpy to lists/numbers, NaN to None, keys to str."""
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        return json_ready(value.tolist())
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return None if math.isnan(float(value)) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    return value


def _named(values: dict[int, Any], id2label: dict[int, str]) -> dict[str, Any]:
    return {id2label.get(int(k), str(k)): v for k, v in values.items()}


class EvalAccumulator:
    """Scores model outputs against synthetic clips, batch by batch; `compute` gives the metrics."""

    def __init__(self, data_cfg: SyntheticConfig, mask_stride: int | None = None, top_k: int = TOP_K):
        """mask_stride: for outputs that do not carry theirs (built by hand); None reads `out.mask_stride`."""
        self.data_cfg = data_cfg
        self.mask_stride = mask_stride
        self.top_k = int(top_k)
        self.num_clips = 0
        self.semantic = SemanticAccumulator(data_cfg.num_classes)
        self.instances = VideoInstanceAccumulator()
        self.panoptic = PanopticAccumulator(data_cfg.thing_ids, data_cfg.stuff_ids)

    def update(self, out: Any, clips: list[Clip]) -> None:
        """out: class_logits [B', T, Q, K+1] and mask_logits [B', T, Q, h, w] with B' >= len(clips)
        (extra rows are padding and ignored)."""
        target, stride, stuff_ids = self.data_cfg.image_hw, self.mask_stride, self.data_cfg.stuff_ids
        pairs = out.class_logits.shape[2] * (out.class_logits.shape[3] - 1)
        sem = np.asarray(post_process_semantic(out, target, mask_stride=stride))  # [B, T, H, W]
        inst = jax.device_get(video_instance(out, target, min(self.top_k, pairs), mask_stride=stride))
        pan = jax.device_get(post_process_panoptic(out, target, label_ids_to_fuse=stuff_ids, mask_stride=stride))
        for b, clip in enumerate(clips):
            self.semantic.update(_semantic_of(clip), sem[b])
            thing = np.isin(inst.label_id[b], self.data_cfg.thing_ids)  # [N]
            self.instances.update(
                {"masks": clip.masks, "classes": clip.classes},
                {
                    "masks": np.ascontiguousarray(inst.masks[b][thing].transpose(1, 0, 2, 3)),  # [T, N', H, W]
                    "scores": inst.score[b][thing],
                    "classes": inst.label_id[b][thing],
                },
            )
            frames = [
                panoptic_from_segments(pan.segmentation[b, t], pan.label_id[b, t], stuff_ids)
                for t in range(clip.num_frames)
            ]
            self.panoptic.update(_panoptic_of(clip), np.stack(frames))
        self.num_clips += len(clips)

    def compute(self) -> dict[str, Any]:
        names = self.data_cfg.id2label
        sem = self.semantic.compute()
        vis = self.instances.compute()
        pan = self.panoptic.compute()
        return {
            "num_clips": self.num_clips,
            "semantic": {
                "miou": sem["miou"],
                "pixel_accuracy": sem["pixel_accuracy"],
                "iou": {names[k]: float(v) for k, v in enumerate(sem["iou"])},
            },
            "video_instance": {**vis, "per_class_ap": _named(vis["per_class_ap"], names)},
            "panoptic": {**pan, "per_class": _named(pan["per_class"], names)},
        }


def evaluate_model(
    config: VideomtConfig,
    params: Any,
    data_cfg: SyntheticConfig,
    split: str = "heldout",
    num_clips: int = EVAL_CLIPS,
    batch_size: int = EVAL_BATCH,
    processor: VideoProcessor | None = None,
    long_clips: int = LONG_CLIPS,
) -> dict[str, Any]:
    """Run the model (jitted) on clips 0 .. num_clips-1 of `split` and score it.

    processor: the model's pixel normalisation (`processing.load_processor(model_dir, config)`);
    None: `VideoProcessor.from_config(config)`. An image model (EoMT) segments every frame on its
    own. Memory is bounded: a batch holds at most `num_clips` clips, and a batch the machine cannot
    hold (`runner.call_bytes` against `runner.available_bytes`) is refused before any work.

    Returns {"split", "num_clips", "semantic": {"miou", "pixel_accuracy", "iou": {class: IoU}},
    "video_instance": {"AP", "AP50", "AP75", "AR1", "AR10", "AR100", "per_class_ap"},
    "panoptic": {"pq", "sq", "rq", "n", "things", "stuff", "per_class"}, "long": `evaluate_long`'s
    dict (absent when long_clips is 0), "seconds"} (NaN where a metric is undefined, e.g. no thing
    instance in any clip).
    """
    _check_eval_args(config, data_cfg, split, num_clips, batch_size)
    if long_clips < 0:
        raise ValueError(f"long_clips must be >= 0, got {long_clips}")
    batch_size = min(batch_size, num_clips)  # a larger batch would only hold padding
    check_fits(
        call_bytes(config, batch_size, data_cfg.num_frames, data_cfg.image_hw),
        f"a batch of {batch_size} clips ({data_cfg.num_frames} frames of {data_cfg.image_hw})",
        "lower the batch size (eval --batch-size)",
    )
    if long_clips:
        check_fits(
            call_bytes(config, long_clips, LONG_CHUNK, data_cfg.image_hw),
            f"streaming {long_clips} long clips",
            "score fewer long clips",
        )
    start = time.perf_counter()
    model = model_for(config)
    forward = jit_model(lambda p, x: _logits(model.apply({"params": p}, x, interpolate_pos_encoding=True)))
    processor = default_processor(config, processor)
    acc = EvalAccumulator(data_cfg)
    for first in range(0, num_clips, batch_size):
        clips = [make_clip(data_cfg, split, i) for i in range(first, min(first + batch_size, num_clips))]
        padded = clips + [clips[-1]] * (batch_size - len(clips))  # one static shape for every batch
        pixels = processor.normalize(np.stack([c.frames for c in padded]))  # [B, T, H, W, 3]
        acc.update(forward(params, pixels), clips)
    results = {"split": split, **acc.compute()}
    if long_clips:
        results["long"] = evaluate_long(config, params, data_cfg, split, long_clips, processor=processor)
    return {**results, "seconds": time.perf_counter() - start}


def _check_eval_args(
    config: VideomtConfig, data_cfg: SyntheticConfig, split: str, num_clips: int, batch_size: int
) -> None:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {sorted(SPLITS)}")
    if num_clips < 1 or batch_size < 1:
        raise ValueError(f"num_clips and batch_size must be >= 1, got {num_clips}, {batch_size}")
    if config.num_labels != data_cfg.num_classes:
        raise ValueError(
            f"the model predicts {config.num_labels} labels but the data has {data_cfg.num_classes} classes"
        )


def long_clip_config(data_cfg: SyntheticConfig, num_frames: int = LONG_FRAMES) -> SyntheticConfig:
    """The long-clip version of a data config: `num_frames` frames, objects bouncing off the borders
    (moving in straight lines, most objects leave a 64-frame clip within ~20 frames of its middle)."""
    return dataclasses.replace(data_cfg, num_frames=num_frames, bounce=True)


def evaluate_long(
    config: VideomtConfig,
    params: Any,
    data_cfg: SyntheticConfig,
    split: str = "heldout",
    num_clips: int = LONG_CLIPS,
    num_frames: int = LONG_FRAMES,
    chunk: int = LONG_CHUNK,
    window: int = LONG_WINDOW,
    processor: VideoProcessor | None = None,
) -> dict[str, Any]:
    """Stream clips 0 .. num_clips-1 of `long_clip_config(data_cfg, num_frames)` in chunks of `chunk`
    frames (the state carried across chunks) and score the per-frame semantic maps.

    Returns {"num_clips", "num_frames", "chunk", "window", "miou" (all frames), "pixel_accuracy"
    (all frames), "first_accuracy" / "last_accuracy" (pixel accuracy of the first / last `window`
    frames), "per_frame_accuracy" [T], "video" (the paper's video metrics, `video_metrics`), "seconds"}.
    """
    _check_eval_args(config, data_cfg, split, num_clips, 1)
    if not 1 <= window <= num_frames or chunk < 1:
        raise ValueError(f"need 1 <= window <= num_frames and chunk >= 1, got {window}, {num_frames}, {chunk}")
    start = time.perf_counter()
    long_cfg = long_clip_config(data_cfg, num_frames)
    processor = default_processor(config, processor)
    clips = [make_clip(long_cfg, split, i) for i in range(num_clips)]
    pixels = processor.normalize(np.stack([c.frames for c in clips]))  # [B, T, H, W, 3]
    streamer = model_streamer(config, params, interpolate_pos_encoding=True)
    semantic = jax.jit(lambda out: post_process_semantic(out, long_cfg.image_hw, mask_stride=config.mask_stride))
    state = streamer.init(num_clips)
    maps, outs = [], []
    for part in split_chunks(pixels, chunk):
        out, state = streamer.step(state, part)
        maps.append(np.asarray(semantic(_logits(out))))  # [B, t, H, W]
        outs.append(jax.device_get(_logits(out)))
    pred = np.concatenate(maps, axis=1)  # [B, T, H, W]
    whole = jax.tree.map(lambda *xs: np.concatenate(xs, axis=1), *outs)  # the whole videos' logits
    gt = np.stack([_semantic_of(c) for c in clips])  # [B, T, H, W]
    acc = SemanticAccumulator(data_cfg.num_classes)
    acc.update(gt, pred)
    per_frame = (pred == gt).mean(axis=(0, 2, 3))  # [T] (every pixel of a synthetic clip is labelled)
    return {
        "num_clips": num_clips,
        "num_frames": num_frames,
        "chunk": chunk,
        "window": window,
        "miou": acc.compute()["miou"],
        "pixel_accuracy": float(per_frame.mean()),
        "first_accuracy": float(per_frame[:window].mean()),
        "last_accuracy": float(per_frame[-window:].mean()),
        "per_frame_accuracy": per_frame,
        "video": video_metrics(whole, clips, data_cfg),
        "seconds": time.perf_counter() - start,
    }


def video_metrics(out: VideomtOutput, clips: list[Clip], data_cfg: SyntheticConfig) -> dict[str, Any]:
    """The paper's video metrics of whole videos (`out` [B, T, ...] logits of `clips`):
    VPQ and STQ of the video-level panoptic result (segment ids stable over the video, so an
    identity switch costs), mVC of the video-level semantic maps (docs/metrics.md)."""
    image_hw = clips[0].frames.shape[1:3]
    stuff = tuple(data_cfg.stuff_ids)
    pan = jax.device_get(video_panoptic(out, image_hw, stuff_label_ids=stuff))
    sem = np.asarray(video_semantic(out, image_hw))  # [B, T, H, W]
    pan_videos = [
        (panoptic_from_segments(pan.segmentation[b], pan.label_id[b], stuff), _panoptic_of(clip))
        for b, clip in enumerate(clips)
    ]
    vpq = evaluate_vpq(pan_videos, data_cfg.thing_ids, stuff)
    stq = evaluate_stq(pan_videos, data_cfg.thing_ids, stuff)
    vc = evaluate_video_consistency([(sem[b], _semantic_of(clip)) for b, clip in enumerate(clips)])
    return {
        "vpq": vpq["vpq"],
        "stq": stq["stq"],
        "aq": stq["aq"],
        "mvc_8": vc["mvc_8"],
        "mvc_16": vc["mvc_16"],
        "vpq_detail": vpq,
        "stq_detail": stq,
        "mvc_detail": vc,
    }


def _semantic_of(clip: Clip) -> np.ndarray:
    """The clip's class map [T, H, W] (synthetic clips always carry one)."""
    if clip.semantic is None:
        raise ValueError(f"clip {clip.video_id} has no semantic map; synthetic evaluation scores against it")
    return clip.semantic


def _panoptic_of(clip: Clip) -> np.ndarray:
    """The clip's panoptic map [T, H, W] (synthetic clips always carry one)."""
    if clip.panoptic is None:
        raise ValueError(f"clip {clip.video_id} has no panoptic map; synthetic evaluation scores against it")
    return clip.panoptic


def _logits(out: object) -> VideomtOutput:
    """Only what post-processing reads leaves the device."""
    if not isinstance(out, VideomtOutput):  # what `model.apply` returns, its type unknown to flax
        raise TypeError(f"expected the model's VideomtOutput, got {type(out).__name__}")
    return VideomtOutput(class_logits=out.class_logits, mask_logits=out.mask_logits, mask_stride=out.mask_stride)


def format_results(results: dict[str, Any]) -> str:
    """One line per task, for the command line."""
    sem, vis, pan = results["semantic"], results["video_instance"], results["panoptic"]

    def pct(x: Any) -> str:
        return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}"

    lines = [
        f"{results['split']}: {results['num_clips']} clips, {results['seconds']:.1f} s",
        f"  semantic   mIoU {pct(sem['miou'])}  pixel acc {pct(sem['pixel_accuracy'])}",
        f"  video inst AP {pct(vis['AP'])}  AP50 {pct(vis['AP50'])}  AP75 {pct(vis['AP75'])}  AR10 {pct(vis['AR10'])}",
        f"  panoptic   PQ {pct(pan['pq'])}  SQ {pct(pan['sq'])}  RQ {pct(pan['rq'])}  "
        f"PQ things {pct(pan['things']['pq'])}  PQ stuff {pct(pan['stuff']['pq'])}",
    ]
    if "long" in results:
        lg = results["long"]
        lines.append(
            f"  long clips {lg['num_clips']} x {lg['num_frames']} frames (chunks of {lg['chunk']}): "
            f"mIoU {pct(lg['miou'])}  pixel acc first {lg['window']} {pct(lg['first_accuracy'])}  "
            f"last {lg['window']} {pct(lg['last_accuracy'])}"
        )
        vid = lg["video"]
        lines.append(
            f"  long clips video metrics: VPQ {pct(vid['vpq'])}  STQ {pct(vid['stq'])}  AQ {pct(vid['aq'])}  "
            f"mVC8 {pct(vid['mvc_8'])}  mVC16 {pct(vid['mvc_16'])}"
        )
    return "\n".join(lines)
