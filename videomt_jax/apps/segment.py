"""The work of `videomt-jax segment` (parser in `videomt_jax.cli.segment`): overlay video + results.json.

Everything is written as the frames come, so memory stays flat in the video's length: each chunk
is decoded, segmented, drawn into the overlay (`VideoWriter`) and its per-frame results appended
to results.json (`ResultsWriter`), then dropped. With `--video-level` the model's small outputs
are kept as per-query running sums plus mask logits spilled to an unlinked temporary file in the
output folder (`postprocess.streamed`); after the last frame the video is decoded a second time to
draw the video-level overlay, and the tracks (one compressed RLE per frame each) are written.

Only OUT/overlay.<format> and OUT/results.json are written, each atomically; when either exists
the command refuses before any work unless `--overwrite` is given, and never touches other files.

Letters: T frames, t frames of a chunk, H/W frame size.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, overload

import numpy as np

RESULTS_NAME = "results.json"
OVERLAY_STEM = "overlay"
FALLBACK_FPS = 10.0  # when the container does not say


def output_paths(out: Path, fmt: str, overwrite: bool) -> tuple[Path, Path]:
    """(overlay, results) paths in `out`, checked before any work is done."""
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"--out {out} is a file; give a directory (overlay.{fmt} and {RESULTS_NAME} go in it)")
    paths = (out / f"{OVERLAY_STEM}.{fmt}", out / RESULTS_NAME)
    existing = [p.name for p in paths if p.exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{out} already holds {', '.join(existing)}; pass --overwrite to replace them")
    if any(p.exists() and not p.is_file() for p in paths):
        raise FileExistsError(f"{out} holds a directory named like an output ({', '.join(existing)}); not replacing it")
    return paths


class FrameRLEs(Sequence[dict[str, Any]]):
    """One track's per-frame RLEs, held as their count strings (the size is the video's)."""

    def __init__(self, size: list[int], counts: list[str]):
        self.size, self.counts = size, counts

    def __len__(self) -> int:
        return len(self.counts)

    @overload
    def __getitem__(self, t: int) -> dict[str, Any]: ...
    @overload
    def __getitem__(self, t: slice) -> list[dict[str, Any]]: ...
    def __getitem__(self, t: int | slice) -> dict[str, Any] | list[dict[str, Any]]:
        if isinstance(t, slice):
            return [self[i] for i in range(*t.indices(len(self)))]
        return {"size": self.size, "counts": self.counts[t]}


class TrackMasks:
    """Per-track compressed RLEs, one per frame, gathered chunk by chunk (tracks may start late)."""

    def __init__(self, size: tuple[int, int]):
        from videomt_jax.io.results_json import encode_rle

        self.encode = encode_rle
        self.size = [int(s) for s in size]
        self.empty = encode_rle(np.zeros(size, bool))["counts"]  # one shared string for empty frames
        self.counts: dict[int, list[str]] = {}
        self.num_frames = 0

    def add(self, masks: dict[int, np.ndarray], frames: int) -> None:
        """masks: track id -> bool [t, H, W] for this chunk's t frames (absent tracks: empty)."""
        for track, m in masks.items():
            self.counts.setdefault(track, [self.empty] * self.num_frames).extend(self.encode(x)["counts"] for x in m)
        self.num_frames += frames
        for counts in self.counts.values():
            counts.extend([self.empty] * (self.num_frames - len(counts)))

    def get(self, track: int) -> FrameRLEs:
        return FrameRLEs(self.size, self.counts.get(track, [self.empty] * self.num_frames))


def _chunks(args: argparse.Namespace) -> Iterable[np.ndarray]:
    from videomt_jax.io.video import iter_video_chunks

    return iter_video_chunks(args.video, args.chunk, max_frames=args.max_frames, stride=args.stride)


def run_segment(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from videomt_jax.apps.pipeline import Segmenter
    from videomt_jax.io.overlay import OverlayPainter, legend_texts_for
    from videomt_jax.io.results_json import ResultsWriter
    from videomt_jax.io.video import VideoWriter, probe_video
    from videomt_jax.postprocess.streamed import VideoLevel

    out = Path(args.out)
    overlay_path, results_path = output_paths(out, args.format, args.overwrite)
    try:
        info = probe_video(args.video)
        chunks = _chunks(args)
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot read video {args.video!r}: {e}") from None
    kwargs = {} if args.threshold is None or args.task == "semantic" else {"threshold": args.threshold}
    try:
        segmenter = Segmenter.from_pretrained(
            args.model, dtype=args.dtype, task=args.task, keep_aspect=args.keep_aspect, task_kwargs=kwargs
        )
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot load model {args.model!r}: {e}") from None
    config = segmenter.config
    fps = info.fps / args.stride if info.fps else FALLBACK_FPS
    max_id = None if args.task == "semantic" else config.num_queries - 1
    labels: dict[int, int] = {}
    segment_labels = None if args.task == "semantic" else labels
    out.mkdir(parents=True, exist_ok=True)
    total = info.num_frames if args.max_frames is None else min(info.num_frames or args.max_frames, args.max_frames)
    if total is not None:
        total = -(-total // args.stride)
    t0 = time.perf_counter()
    painter: OverlayPainter | None = None
    size: tuple[int, int] | None = None  # (H, W) of the frames
    video_level: VideoLevel | None = None
    num_frames = 0
    with contextlib.ExitStack() as stack:
        results = stack.enter_context(
            ResultsWriter(results_path, video_id=Path(args.video).name, id2label=config.id2label, fps=fps)
        )
        overlay = None if args.video_level else stack.enter_context(VideoWriter(overlay_path, fps))
        with tqdm(total=total, unit="frame", desc=f"segment ({args.task})", file=sys.stderr) as bar:
            for r in segmenter.stream(chunks, labels, progress=bar.update):
                results.add_frames(r.frames_hf)
                if painter is None:  # the first chunk tells the frame size
                    size = (r.segmentation.shape[1], r.segmentation.shape[2])
                    painter = OverlayPainter(size[0], legend_texts_for(config.id2label, max_id))
                    if args.video_level:
                        video_level = stack.enter_context(
                            VideoLevel(
                                args.task,
                                size,
                                valid=segmenter.valid_size(r.geometry),
                                stride=config.mask_stride,
                                spill_dir=out,
                            )
                        )
                if video_level is not None:
                    video_level.add(r.output)
                elif overlay is not None:
                    overlay.write(painter.paint(r.frames, r.segmentation, segment_labels, config.id2label))
                else:
                    raise RuntimeError("--video-level run without its video-level accumulator")
                num_frames += r.frames.shape[0]
        seconds = time.perf_counter() - t0
        if painter is None or size is None:  # `Segmenter.stream` raises first for a video without frames
            raise ValueError("the video has no frames")
        if video_level is not None:
            overlay = stack.enter_context(VideoWriter(overlay_path, fps))
            write_video_level(video_level, _chunks(args), painter, overlay, results, config.id2label, size)
    print(
        f"segmented {num_frames} frames of {size[1]}x{size[0]} in {seconds:.2f} s "
        f"({num_frames / max(seconds, 1e-9):.1f} frames/s, compile included); wrote {overlay_path} and {results_path}"
    )
    return 0


def write_video_level(
    video_level: Any,
    frames: Iterable[np.ndarray],
    painter: Any,
    overlay: Any,
    results: Any,
    id2label: Mapping[int, str] | None,
    size: tuple[int, int],
) -> None:
    """Second pass: the video decoded again, drawn with the video-level maps; the tracks to results."""
    from tqdm import tqdm

    tracks = TrackMasks(size)
    with tqdm(total=video_level.num_frames, unit="frame", desc="video-level", file=sys.stderr) as bar:
        for chunk, vc in zip(frames, video_level.chunks(), strict=True):
            if chunk.shape[0] != vc.segmentation.shape[0]:
                raise ValueError(
                    "the video decoded differently the second time "
                    f"({chunk.shape[0]} vs {vc.segmentation.shape[0]} frames)"
                )
            overlay.write(painter.paint(chunk, vc.segmentation, video_level.labels, id2label))
            tracks.add(vc.masks, chunk.shape[0])
            bar.update(chunk.shape[0])
    results.expect_tracks()
    for info in video_level.tracks:
        results.add_track_rles(info, tracks.get(info["id"]))
