"""The work of `videomt-jax segment` (parser in `videomt_jax.cli.segment`): overlay video + results.json."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

from videomt_jax.apps.pipeline import SegmentationRun, video_instance_map


def _fail(message: str) -> int:
    print(f"videomt-jax segment: error: {message}", file=sys.stderr)
    return 1


def video_level_map(run: SegmentationRun) -> tuple[np.ndarray, dict[int, int] | None, Any]:
    """The map to draw and the tracks to write when video-level results were computed."""
    video = run.video
    if run.task == "semantic":
        return np.asarray(video[0]), None, None
    if run.task == "instance":
        seg, labels = video_instance_map(video)
        tracks = [
            {"id": int(video.query[0, n]), "label_id": int(video.label_id[0, n]), "score": float(video.score[0, n]),
             "masks": np.asarray(video.masks[0, n])}
            for n in range(video.masks.shape[1])
        ]
        return seg, labels, tracks
    seg = np.asarray(video.segmentation[0])
    infos = [
        {"id": int(s), "label_id": int(video.label_id[0, s]), "score": float(video.score[0, s]), "isthing": bool(video.isthing[0, s])}
        for s in np.flatnonzero(np.asarray(video.valid[0]))
    ]
    return seg, {i["id"]: i["label_id"] for i in infos}, {"segmentation": seg, "segments_info": infos}


def run_segment(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from videomt_jax.apps.pipeline import Segmenter
    from videomt_jax.data.overlay import overlay_video
    from videomt_jax.data.results_json import write_results_json
    from videomt_jax.data.video_io import iter_video_chunks, probe_video, write_video
    from videomt_jax.weights.api import load_pretrained

    try:
        info = probe_video(args.video)
        chunks = iter_video_chunks(args.video, args.chunk, max_frames=args.max_frames, stride=args.stride)
    except (OSError, ValueError) as e:
        return _fail(f"cannot read video {args.video!r}: {e}")
    try:
        config, params = load_pretrained(args.model, dtype=args.dtype)
    except (OSError, ValueError) as e:
        return _fail(f"cannot load model {args.model!r}: {e}")
    kwargs = {} if args.threshold is None or args.task == "semantic" else {"threshold": args.threshold}
    segmenter = Segmenter(config, params, task=args.task, keep_aspect=args.keep_aspect, task_kwargs=kwargs)

    frames: list[np.ndarray] = []

    def keep(chunk_iter: Any) -> Any:
        for chunk in chunk_iter:
            frames.append(chunk)
            yield chunk

    total = info.num_frames if args.max_frames is None else min(info.num_frames or args.max_frames, args.max_frames)
    with tqdm(total=total, unit="frame", desc=f"segment ({args.task})", file=sys.stderr) as bar:
        try:
            run = segmenter.run(keep(chunks), video_level=args.video_level, progress=bar.update)
        except ValueError as e:
            return _fail(f"{args.video}: {e}")
    video = np.concatenate(frames)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    seg, labels, tracks = run.segmentation, run.segment_labels, None
    if args.video_level:
        seg, labels, tracks = video_level_map(run)
    overlay = overlay_video(video, seg, labels, config.id2label)
    fps = info.fps / args.stride if info.fps else 10.0
    overlay_path = write_video(out / f"overlay.{args.format}", overlay, fps=fps)
    frames_hf = run.frames_hf
    if args.task == "semantic":  # class maps as one segment per class present
        frames_hf = [
            {"segmentation": m, "segments_info": [{"id": int(c), "label_id": int(c), "score": 1.0} for c in np.unique(m)]}
            for m in run.segmentation
        ]
    write_results_json(
        out / "results.json", frames=frames_hf, tracks=tracks, video_id=Path(args.video).name,
        id2label=config.id2label, fps=fps,
    )
    print(
        f"segmented {run.num_frames} frames of {video.shape[2]}x{video.shape[1]} in {run.seconds:.2f} s "
        f"({run.fps:.1f} frames/s, compile included); wrote {overlay_path} and {out / 'results.json'}"
    )
    return 0
