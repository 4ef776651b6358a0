"""The paper's evaluation protocols on the benchmark datasets (the authors' inference, tue-mps/videomt).

Letters: T frames, Q queries, K classes, H/W original frame size, h/w resized input, Hp/Wp padded.

Every video is read whole, resized with its shorter edge to `min_size_test` (longer edge at most
1333; Pillow bilinear, as detectron2), normalised, padded at the bottom/right to a multiple of 32,
and fed to the model in windows of `window` frames that carry the propagated queries from one
window to the next (`VideoStreamer`; the authors' `run_window_inference` with `resume=True`: the
result does not depend on the window, only memory does). The last window is padded with copies
of the last frame, whose outputs are dropped (frames never see later ones). Then, per dataset:

- `ytvis19` / `ytvis21` / `ytvis22` / `ovis` (video instance): `video_instance` (top `MAX_NUM`
  (query, class) pairs: 10 for YouTube-VIS, 20 for OVIS) -> `results.json` in the YouTube-VIS
  format, zipped as `results.zip` (what the CodaLab servers take); with ground truth in the
  annotation file, also video AP. YouTube-VIS 2022 is scored as the authors' `yt2022_evaluate.py`:
  against the short videos' ground truth (`ytvis_2022/gt_short.json`) and the long videos'
  (`gt_long.json`) separately, AP = the mean of the two (`AP_short`, `AP_long`, ...: `metrics.vis`);
  without those files only the submission is written.
- `vipseg` (video panoptic): `video_panoptic` (object threshold 0.8, overlap 0.8, stuff merged per
  class) -> VPQ (tube lengths 1, 2, 4, 6, 8 frames) and STQ against the panoptic ground truth.
- `vspw` (video semantic): `video_semantic` -> mIoU (the authors' `eval_miou_vspw.py`: mean over the
  classes present in the ground truth) and mVC_8 / mVC_16 (`eval_vc_vspw.py`).
"""

from __future__ import annotations

import io
import json
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import jax
import numpy as np
from PIL import Image

from videomt_jax.config import VideomtConfig
from videomt_jax.data.clip_transforms import eval_input_size
from videomt_jax.data.sources import VideoDataConfig, VIPSegDataConfig, VSPWDataConfig, YTVISDataConfig
from videomt_jax.evaluation.runner import call_bytes, check_fits, model_streamer
from videomt_jax.metrics.consistency import evaluate_video_consistency
from videomt_jax.metrics.semantic import SemanticAccumulator
from videomt_jax.metrics.stq import evaluate_stq
from videomt_jax.metrics.vis import SubsetVideoInstanceAccumulator, VideoInstanceAccumulator
from videomt_jax.metrics.vpq import evaluate_vpq
from videomt_jax.modeling.outputs import VideomtOutput
from videomt_jax.ops.labels import IGNORE_INDEX, LABEL_DIVISOR, VOID_ID
from videomt_jax.postprocess.video import video_instance, video_panoptic, video_semantic
from videomt_jax.processing import VideoProcessor, default_processor
from videomt_jax.streaming import pad_frames
from videomt_jax.utils.io import atomic_write_bytes

# Frames per model call: it sets speed and memory, not the result (module docstring). Their code's
# TEST.WINDOW_SIZE default is 3; their configs and evaluation commands set 1.
WINDOW = 3
RESULTS_ZIP, RESULTS_JSON = "results.zip", "results.json"


@dataclass(frozen=True)
class EvalProtocol:
    data: VideoDataConfig  # the dataset (layout, classes, test size)
    split: str
    task: str  # "vis" | "vps" | "vss"
    top_k: int = 10  # vis: MAX_NUM
    # vis: (name, split) of video subsets scored alone on the protocol's split, AP = their mean
    subsets: tuple[tuple[str, str], ...] = ()
    # (backbone, test shorter edge) where the authors' configs for that backbone test at another size
    backbone_test_sizes: tuple[tuple[str, int], ...] = ()

    def test_size(self, backbone: str) -> int:
        """The test shorter edge for a model of `backbone` (the authors' config of that backbone)."""
        return dict(self.backbone_test_sizes).get(backbone, self.data.min_size_test)


# The authors' DINOv3 YouTube-VIS configs keep their base config's test size (480); DINOv2's set 448.
YTVIS_DINOV3 = (("dinov3", 480),)


PROTOCOLS: dict[str, EvalProtocol] = {
    "ytvis19": EvalProtocol(
        YTVISDataConfig("ytvis_2019", min_size_test=448), "valid", "vis", 10, backbone_test_sizes=YTVIS_DINOV3
    ),
    "ytvis21": EvalProtocol(
        YTVISDataConfig("ytvis_2021", min_size_test=448), "valid", "vis", 10, backbone_test_sizes=YTVIS_DINOV3
    ),
    "ytvis22": EvalProtocol(
        YTVISDataConfig("ytvis_2022", min_size_test=448),
        "valid",
        "vis",
        10,
        subsets=(("short", "valid_short"), ("long", "valid_long")),
        backbone_test_sizes=YTVIS_DINOV3,
    ),
    "ovis": EvalProtocol(YTVISDataConfig("ovis", min_size_test=544), "valid", "vis", 20),
    "vipseg": EvalProtocol(VIPSegDataConfig("vipseg", canvas=(800, 1344), min_size_test=720), "val", "vps"),
    "vspw": EvalProtocol(VSPWDataConfig("vspw", canvas=(800, 1344), min_size_test=720), "val", "vss"),
}


def prepare_video(frames: np.ndarray, min_size: int, max_size: int, divisor: int, processor: VideoProcessor):
    """uint8 [T, H, W, 3] -> (normalised padded [T, Hp, Wp, 3], resized (h, w))."""
    (h, w), (hp, wp) = eval_input_size(frames.shape[1:3], min_size, max_size, divisor)
    resized = np.stack([np.asarray(Image.fromarray(f).resize((w, h), Image.Resampling.BILINEAR)) for f in frames])
    out = np.zeros((len(frames), hp, wp, 3), np.float32)  # padding: 0 after normalisation, as the authors'
    out[:, :h, :w] = processor.normalize(resized)
    return out, (h, w)


def run_windows(streamer: Any, pixels: np.ndarray, window: int) -> VideomtOutput:
    """Model outputs for all T frames of one video ([1, T, ...] on host), `window` frames a call."""
    t = pixels.shape[0]
    state = streamer.init(1)
    cls, masks = [], []
    for start in range(0, t, window):
        chunk = pixels[start : start + window]
        n = chunk.shape[0]
        out, state = streamer.step(state, pad_frames(chunk, window)[None])
        out = jax.device_get(out)
        cls.append(np.asarray(out.class_logits[:, :n], np.float32))
        masks.append(np.asarray(out.mask_logits[:, :n], np.float32))
    # the whole video stays in host memory; modeling/outputs.py types the fields jax.Array
    return VideomtOutput(
        class_logits=np.concatenate(cls, 1),  # type: ignore[arg-type]
        mask_logits=np.concatenate(masks, 1),  # type: ignore[arg-type]
    )


def video_bytes(config: VideomtConfig, padded_hw: tuple[int, int]) -> int:
    """Host bytes per frame of a whole video kept for scoring: its pixels and its logits (`run_windows`)."""
    hp, wp = padded_hw
    stride = config.mask_stride
    return hp * wp * 3 * 4 + config.num_queries * ((hp // stride) * (wp // stride) + config.num_labels + 1) * 4


def _mask_stride(config: VideomtConfig) -> int:
    return config.mask_stride


class _VIS:
    """YouTube-VIS / OVIS: results.json (+ AP when the annotation file has ground truth)."""

    def __init__(self, protocol: EvalProtocol, reader: Any, config: VideomtConfig):
        self.protocol, self.reader, self.config = protocol, reader, config
        self.records: list[dict[str, Any]] = []
        self.acc = VideoInstanceAccumulator()
        self.has_gt = any(reader.num_annotations(i) for i in range(len(reader)))
        self.subsets: dict[str, tuple[Any, dict[int, int]]] = {}  # name -> (reader, video id -> index)
        self.missing: list[str] = []
        for name, split in protocol.subsets:
            try:
                sub = protocol.data.open(split)
            except FileNotFoundError as e:
                self.missing.append(str(e.filename or e))
                continue
            self.subsets[name] = (sub, {int(v["id"]): i for i, v in enumerate(sub.videos)})
        self.subset_acc = SubsetVideoInstanceAccumulator([n for n, _ in protocol.subsets]) if protocol.subsets else None

    def update(self, index: int, out: VideomtOutput, valid: tuple[int, int], clip: Any) -> None:
        h, w = clip.image_hw
        pairs = out.class_logits.shape[2] * (out.class_logits.shape[3] - 1)
        res = jax.device_get(
            video_instance(
                out, (h, w), min(self.protocol.top_k, pairs), valid_size=valid, mask_stride=_mask_stride(self.config)
            )
        )
        masks = np.asarray(res.masks[0]).transpose(1, 0, 2, 3)  # [T, N, H, W]
        scores, labels = np.asarray(res.score[0]), np.asarray(res.label_id[0])
        self.records += self.reader.results_json(index, scores, labels, masks)
        pred = {"masks": masks, "scores": scores, "classes": labels}
        if self.has_gt:
            self.acc.update({"masks": clip.masks, "classes": clip.classes}, pred)
        if self.subset_acc is None or self.missing:
            return
        for name, (sub, ids) in self.subsets.items():
            if clip.video_id in ids:
                gt_masks, gt_classes, _, _ = sub.load_targets(ids[clip.video_id])
                if gt_masks.shape[0] != masks.shape[0] or gt_masks.shape[2:] != masks.shape[2:]:
                    raise ValueError(
                        f"{sub.annotation_file}: video {clip.video_id} is {gt_masks.shape[0]} frames of "
                        f"{gt_masks.shape[2:]}, in {self.reader.annotation_file} {masks.shape[0]} of {masks.shape[2:]}"
                    )
                self.subset_acc.update(name, {"masks": gt_masks, "classes": gt_classes}, pred)

    def finish(self, out_dir: Path | None) -> dict[str, Any]:
        result: dict[str, Any] = {"num_predictions": len(self.records)}
        pooled = {k: v for k, v in self.acc.compute().items() if k != "per_class_ap"} if self.has_gt else {}
        if self.subset_acc is not None and not self.missing:  # subsets scored: AP is their mean
            result.update({f"{k}_all": v for k, v in pooled.items()})
            result.update(self.subset_acc.compute())
        else:
            result.update(pooled)
        if self.missing:
            result["subsets_missing"] = self.missing
        if out_dir is not None:
            payload = json.dumps(self.records).encode()
            buffer = io.BytesIO()
            with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
                archive.writestr(RESULTS_JSON, payload)
            atomic_write_bytes(Path(out_dir) / RESULTS_ZIP, buffer.getvalue())
            result["submission"] = str(Path(out_dir) / RESULTS_ZIP)
        return result


class _VPS:
    """VIPSeg: VPQ and STQ of the video panoptic maps against the ground truth."""

    def __init__(self, protocol: EvalProtocol, reader: Any, config: VideomtConfig):
        self.reader, self.config = reader, config
        self.things, self.stuff = reader.thing_ids, reader.stuff_ids
        self.videos: list[tuple[np.ndarray, np.ndarray]] = []

    def update(self, index: int, out: VideomtOutput, valid: tuple[int, int], clip: Any) -> None:
        res = jax.device_get(
            video_panoptic(
                out, clip.image_hw, stuff_label_ids=self.stuff, valid_size=valid, mask_stride=_mask_stride(self.config)
            )
        )
        seg = np.asarray(res.segmentation[0])  # [T, H, W] segment slot, -1 void
        label, thing = np.asarray(res.label_id[0]), np.asarray(res.isthing[0])
        slot = np.maximum(seg, 0)
        pan = label[slot] * LABEL_DIVISOR + np.where(thing[slot], slot + 1, 0)
        self.videos.append((np.where(seg >= 0, pan, VOID_ID).astype(np.int32), clip.panoptic))

    def finish(self, out_dir: Path | None) -> dict[str, Any]:
        vpq = evaluate_vpq(self.videos, self.things, self.stuff)
        stq = evaluate_stq(self.videos, self.things, self.stuff)
        return {"vpq": vpq["vpq"], "stq": stq["stq"], "aq": stq["aq"], "iou": stq["iou"], "vpq_detail": vpq}


class _VSS:
    """VSPW: mIoU over the classes present in the ground truth, mVC_8 / mVC_16."""

    def __init__(self, protocol: EvalProtocol, reader: Any, config: VideomtConfig):
        self.config = config
        self.acc = SemanticAccumulator(reader.num_classes, IGNORE_INDEX)
        self.videos: list[tuple[np.ndarray, np.ndarray]] = []

    def update(self, index: int, out: VideomtOutput, valid: tuple[int, int], clip: Any) -> None:
        sem = np.asarray(video_semantic(out, clip.image_hw, valid_size=valid, mask_stride=_mask_stride(self.config))[0])
        self.acc.update(clip.semantic, sem)
        self.videos.append((sem.astype(np.int32), clip.semantic))

    def finish(self, out_dir: Path | None) -> dict[str, Any]:
        conf = self.acc.compute()["confusion"].astype(np.float64)
        present = conf.sum(1) > 0  # the authors' `isval`: classes with ground-truth pixels
        tp = np.diag(conf)
        union = conf.sum(0) + conf.sum(1) - tp
        iou = np.divide(tp, union, out=np.zeros_like(tp), where=union > 0)
        vc = evaluate_video_consistency(self.videos, windows=(8, 16), ignore_index=IGNORE_INDEX)
        miou = float(iou[present].mean()) if present.any() else float("nan")
        return {"miou": miou, "mvc_8": vc["mvc_8"], "mvc_16": vc["mvc_16"]}


TASKS: dict[str, Callable[..., Any]] = {"vis": _VIS, "vps": _VPS, "vss": _VSS}


def evaluate_dataset(
    config: VideomtConfig,
    params: Any,
    dataset: str,
    data_root: str,
    *,
    split: str | None = None,
    processor: VideoProcessor | None = None,
    window: int = WINDOW,
    max_videos: int | None = None,
    min_size_test: int | None = None,
    out_dir: str | Path | None = None,
    log: Callable[[str], None] = lambda line: None,
) -> dict[str, Any]:
    """Run the paper's protocol for `dataset` (a `PROTOCOLS` name) on `data_root` (module docstring).

    min_size_test overrides the protocol's test shorter edge for the model's backbone
    (`EvalProtocol.test_size`; quick checks; the paper's figures use the protocol's).
    `out_dir`: where a video instance dataset's results.zip goes (None: not written).
    """
    if dataset not in PROTOCOLS:
        raise ValueError(f"unknown dataset {dataset!r}; choose one of {sorted(PROTOCOLS)}")
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    protocol = PROTOCOLS[dataset]
    size = protocol.test_size(config.backbone) if min_size_test is None else int(min_size_test)
    data = replace(protocol.data.with_root(data_root), min_size_test=size)
    if config.num_labels != data.num_classes:
        raise ValueError(f"the model predicts {config.num_labels} labels, {dataset} has {data.num_classes} classes")
    split = split or protocol.split
    reader = data.open(split)
    processor = default_processor(config, processor)
    streamer = model_streamer(config, params, interpolate_pos_encoding=True)
    subsets = protocol.subsets if split == protocol.split else ()  # the subsets divide the protocol's split
    task = TASKS[protocol.task](replace(protocol, data=data, split=split, subsets=subsets), reader, config)
    count = len(reader) if max_videos is None else min(max_videos, len(reader))
    start = time.perf_counter()
    for index in range(count):
        clip = reader.load_clip(index)
        (_, _), (hp, wp) = eval_input_size(
            clip.image_hw, data.min_size_test, data.max_size_test, data.size_divisibility
        )
        check_fits(
            call_bytes(config, 1, window, (hp, wp)) + clip.num_frames * video_bytes(config, (hp, wp)),
            f"video {index} ({clip.num_frames} frames at {hp}x{wp}) in windows of {window} frames",
            "lower the window (eval --window)",
        )
        pixels, valid = prepare_video(
            clip.frames, data.min_size_test, data.max_size_test, data.size_divisibility, processor
        )
        task.update(index, run_windows(streamer, pixels, window), valid, clip)
        log(
            f"{dataset} {split}: video {index + 1}/{count} "
            f"({clip.num_frames} frames, input {pixels.shape[1]}x{pixels.shape[2]})"
        )
    results = task.finish(None if out_dir is None else Path(out_dir))
    return {"dataset": dataset, "split": split, "num_videos": count, **results, "seconds": time.perf_counter() - start}
