"""`vm.segment_video`: a video file in, per-frame and video-level results out (and, given `out`, the
overlay video + results.json). `videomt-jax segment` is this function with a command line.

Everything is written as the frames come, so memory stays flat in the video's length: each chunk
is decoded, segmented, drawn into the overlay (`VideoWriter`) and its per-frame results appended
to results.json (`ResultsWriter`), then dropped (kept in the returned value only with
`keep_frames=True`, the Python default). With `video_level` the model's small outputs are kept as
per-query running sums plus mask logits spilled to an unlinked temporary file in the output folder
(`postprocess.streamed`); after the last frame the video is decoded a second time to draw the
video-level overlay, and the tracks (one compressed RLE per frame each) are written.

Before any work: the options are checked, the outputs (OUT/overlay.<format>, OUT/results.json)
must not exist unless `overwrite`, the video and the model must open, and the memory the run
needs (`apps.memory`, linear in `chunk`) must fit what the machine has. Then OUT is claimed
(`utils.io.output_lock`: a second run into the same OUT stops with one line) and checked again;
only those two files are written, each atomically (never replacing a file that appeared meanwhile
unless `overwrite`), and a run that fails or is stopped removes the folders it created.

Image models (EoMT) segment every frame on its own: their maps and results carry per-frame ids
(no tracks, no `track_id`), and `video_level` is refused.

Letters: T frames, t frames of a chunk, H/W frame size.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, overload

import numpy as np

from videomt_jax.apps.pipeline import DEFAULT_MODEL_DIR, FRAME_TASKS, Segmenter

RESULTS_NAME = "results.json"
OVERLAY_STEM = "overlay"
OVERLAY_FORMATS = ("mp4", "gif", "webm")
DTYPES = ("float32", "bfloat16")
FALLBACK_FPS = 10.0  # when the container does not say
VIDEO_LEVEL_PIECE = 8  # frames per video-level map in the second pass (its memory, whatever --chunk is)


@dataclass(frozen=True)
class SegmentOptions:
    """How `segment_video` runs; every default of `videomt-jax segment` lives here."""

    task: str = "panoptic"  # one of FRAME_TASKS
    video_level: bool = False  # also the video-level results (tracks); the overlay shows them
    threshold: float | None = None  # score threshold in [0, 1] (instance / panoptic; None: the post-processor's)
    chunk: int = 8  # frames per model call (streaming; the queries carry over)
    max_frames: int | None = None  # stop after this many frames (None: all)
    stride: int = 1  # keep every n-th frame
    keep_aspect: bool = False  # shorter side to the model size, pad to the patch size
    dtype: str | None = None  # compute dtype (None: the checkpoint's)
    overlay_format: str = "mp4"  # one of OVERLAY_FORMATS
    overwrite: bool = False  # replace overlay.<format> / results.json when OUT holds them

    def __post_init__(self) -> None:
        choices = {"task": FRAME_TASKS, "overlay_format": OVERLAY_FORMATS, "dtype": (None, *DTYPES)}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {sorted(map(str, allowed))}, got {getattr(self, name)!r}")
        for name in ("chunk", "stride", "max_frames"):
            value = getattr(self, name)
            if not (value is None and name == "max_frames") and (
                not isinstance(value, int) or isinstance(value, bool) or value < 1
            ):
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        t = self.threshold
        if t is not None and not (isinstance(t, (int, float)) and math.isfinite(t) and 0.0 <= t <= 1.0):
            raise ValueError(f"threshold must be a number in [0, 1], got {t!r}")


@dataclass
class VideoSegmentation:
    """What `segment_video` returns."""

    task: str
    image_model: bool  # True: ids are per frame (EoMT), no tracks
    num_frames: int
    size: tuple[int, int]  # (H, W) of the frames
    fps: float  # of the frames kept (source fps / stride)
    # HF-style per frame ({"segmentation": [H, W], "segments_info": [{"id", "label_id", "score", "track_id"}]};
    # semantic: [H, W] class maps), empty with keep_frames=False
    frames: list[Any] = field(default_factory=list)
    # video_level: one dict per track ({"id", "label_id", "score", ...} + "segmentations": one COCO RLE per
    # frame, `vm.decode_rle` gives the mask); None without video_level
    tracks: list[dict[str, Any]] | None = None
    seconds: float = 0.0  # all of the work, from the call to the last file written
    model_seconds: float = 0.0  # the first pass (decode, model, per-frame results, per-frame overlay)
    video_level_seconds: float = 0.0  # the video-level pass (second decode, maps, overlay, tracks)
    overlay_path: Path | None = None
    results_path: Path | None = None

    def summary(self) -> str:
        """The one-line report of `videomt-jax segment`."""
        h, w = self.size
        passes = f"first pass {self.model_seconds:.2f} s"
        if self.tracks is not None:
            passes += f", video-level pass {self.video_level_seconds:.2f} s"
        wrote = f"; wrote {self.overlay_path} and {self.results_path}" if self.results_path else ""
        return (
            f"segmented {self.num_frames} frames of {w}x{h} in {self.seconds:.2f} s "
            f"({self.num_frames / max(self.seconds, 1e-9):.1f} frames/s, all the work: {passes}; "
            f"compile included){wrote}"
        )


# --------------------------------------------------------------------------------------- tracks
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


# --------------------------------------------------------------------------------------- outputs
def output_paths(out: Path, options: SegmentOptions) -> tuple[Path, Path]:
    """(overlay, results) paths in `out`, checked before any work is done."""
    from videomt_jax.utils.io import check_new_file

    fmt = options.overlay_format
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"--out {out} is a file; give a directory (overlay.{fmt} and {RESULTS_NAME} go in it)")
    paths = (out / f"{OVERLAY_STEM}.{fmt}", out / RESULTS_NAME)
    for path in paths:
        check_new_file(path, overwrite=options.overwrite)
    return paths


@contextlib.contextmanager
def claimed_output(out: Path, paths: Sequence[Path], overwrite: bool) -> Iterator[None]:
    """Hold `out` for this run (`output_lock`) and create it; the outputs are checked again under the
    lock. When the block fails (or is stopped), the folders this call created are removed again if
    they are empty (a folder another run writes into never is: it holds that run's lock or files)."""
    from videomt_jax.utils.io import check_new_file, output_lock

    out = out.absolute()
    missing = [p for p in (out, *out.parents) if not p.exists()]  # deepest first
    try:
        with output_lock(out):
            for path in paths:
                check_new_file(path, overwrite=overwrite)
            out.mkdir(parents=True, exist_ok=True)
            yield
    except BaseException:
        for folder in missing:
            with contextlib.suppress(OSError):
                folder.rmdir()  # only when empty
        raise


# --------------------------------------------------------------------------------------- helpers
def _load(model: Any, options: SegmentOptions) -> Segmenter:
    kwargs: dict[str, Any] = {"task": options.task, "keep_aspect": options.keep_aspect}
    if options.threshold is not None and options.task != "semantic":
        kwargs["task_kwargs"] = {"threshold": options.threshold}
    if isinstance(model, Segmenter):
        return Segmenter(model.config, model.params, processor=model.processor, **kwargs)
    if isinstance(model, tuple) and len(model) == 2:
        config, params = model
        if options.dtype is not None:
            config = dataclasses.replace(config, dtype=options.dtype)
        return Segmenter(config, params, **kwargs)
    try:
        return Segmenter.from_pretrained(model, dtype=options.dtype, **kwargs)
    except (OSError, ValueError, KeyError) as e:
        raise ValueError(f"cannot load model {str(model)!r}: {e}") from None


def _params_bytes(params: Any) -> int:
    import jax

    return sum(
        int(np.prod(np.shape(x))) * np.dtype(getattr(x, "dtype", np.float32)).itemsize for x in jax.tree.leaves(params)
    )


def _check_memory(segmenter: Segmenter, info: Any, options: SegmentOptions, video: Any) -> None:
    """Refuse, before the work, a run whose estimated peak memory exceeds what the machine has."""
    from videomt_jax.apps.memory import check_fits, footprint
    from videomt_jax.postprocess.common import piece_bytes
    from videomt_jax.utils import memory

    if info.height is None or info.width is None or segmenter.processor is None:
        return  # the size is known only after decoding: the first chunk is checked by the OS
    frames = (
        info.num_frames
        if options.max_frames is None
        else min(info.num_frames or options.max_frames, options.max_frames)
    )
    chunk = options.chunk if frames is None else max(1, min(options.chunk, -(-frames // options.stride)))
    geo = segmenter.processor.geometry(info.height, info.width)
    config = segmenter.config
    num_classes = len(config.id2label or {}) or 1
    channels = num_classes if options.task == "semantic" else config.num_queries
    fp = footprint(
        config,
        _params_bytes(segmenter.params),
        (info.height, info.width),
        geo.padded_size,
        video_level=options.video_level,
        piece_bytes=piece_bytes(info.height, info.width, channels),
        video_level_piece=min(chunk, VIDEO_LEVEL_PIECE),
    )
    what = f"segmenting {info.width}x{info.height} frames of {Path(str(video)).name}"
    check_fits(fp, chunk, what, memory.host_available_bytes())


def _paint(painter: Any, frames: np.ndarray, seg: np.ndarray, labels: Any, id2label: Any) -> np.ndarray:
    """Overlay frames [t, H, W + P, 3]; labels: one mapping per frame (id -> class id), or None (class maps)."""
    if labels is None or isinstance(labels, Mapping):
        return painter.paint(frames, seg, labels, id2label)
    return np.concatenate([painter.paint(f[None], s[None], lab, id2label) for f, s, lab in zip(frames, seg, labels)])


# --------------------------------------------------------------------------------------- the run
def segment_video(
    video: str | Path,
    model: Any = DEFAULT_MODEL_DIR,
    task: str = SegmentOptions.task,
    out: str | Path | None = None,
    *,
    keep_frames: bool = True,
    log: Callable[[str], None] | None = None,
    progress: bool = False,
    checkpoint: Callable[[], None] | None = None,
    **options: Any,
) -> VideoSegmentation:
    """Segment a video file (or a folder of frames) with any model `load_pretrained` reads.

    model: a checkpoint path / Hub id, a `(config, params)` pair, or a `Segmenter`.
    task: "semantic", "instance" or "panoptic". out: a folder for overlay.<format> + results.json
    (None: nothing is written). options: the fields of `SegmentOptions` (video_level, threshold,
    chunk, max_frames, stride, keep_aspect, dtype, overlay_format, overwrite).
    keep_frames: keep every frame's result in the returned value (False: memory flat in the
    video's length; the results are in OUT/results.json). log: called with notes (an image model
    segments frame by frame); progress: tqdm bars on stderr; checkpoint: called between chunks,
    may raise to stop the run cleanly (the command line's stop signals do).
    Returns a `VideoSegmentation` (per-frame results, video-level tracks, timings, paths).
    """
    from videomt_jax.io.video import probe_video

    t0 = time.perf_counter()
    opts = SegmentOptions(task=task, **options)
    out_dir = None if out is None else Path(out)
    paths = None if out_dir is None else output_paths(out_dir, opts)
    try:
        info = probe_video(video)
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot read video {str(video)!r}: {e}") from None
    segmenter = _load(model, opts)
    if segmenter.image_model and opts.video_level:
        raise ValueError(
            f"model {str(model)!r} is an image model ({segmenter.config.model_type}): it has no tracks, so no "
            "video-level results; leave out --video-level"
        )
    _check_memory(segmenter, info, opts, video)
    if segmenter.image_model and log is not None:
        log(
            f"{segmenter.config.model_type} is an image model: every frame is segmented on its own, "
            "ids are per frame (no tracks)"
        )
    fps = info.fps / opts.stride if info.fps else FALLBACK_FPS
    claim = (
        contextlib.nullcontext() if out_dir is None or paths is None else claimed_output(out_dir, paths, opts.overwrite)
    )
    with claim:
        return _run(segmenter, video, info, opts, fps, paths, keep_frames, progress, checkpoint or (lambda: None), t0)


def _chunks(video: Any, opts: SegmentOptions) -> Iterable[np.ndarray]:
    from videomt_jax.io.video import iter_video_chunks

    try:
        return iter_video_chunks(video, opts.chunk, max_frames=opts.max_frames, stride=opts.stride)
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot read video {str(video)!r}: {e}") from None


def _run(
    segmenter: Segmenter,
    video: Any,
    info: Any,
    opts: SegmentOptions,
    fps: float,
    paths: tuple[Path, Path] | None,
    keep_frames: bool,
    progress: bool,
    checkpoint: Callable[[], None],
    t0: float,
) -> VideoSegmentation:
    import sys

    from tqdm import tqdm

    from videomt_jax.io.overlay import OverlayPainter, legend_texts_for
    from videomt_jax.io.results_json import ResultsWriter
    from videomt_jax.io.video import VideoWriter
    from videomt_jax.postprocess.streamed import VideoLevel

    config = segmenter.config
    max_id = None if opts.task == "semantic" else config.num_queries - 1
    total = info.num_frames if opts.max_frames is None else min(info.num_frames or opts.max_frames, opts.max_frames)
    total = None if total is None else -(-total // opts.stride)
    painter: OverlayPainter | None = None
    size: tuple[int, int] | None = None  # (H, W) of the frames
    video_level: VideoLevel | None = None
    result = VideoSegmentation(opts.task, segmenter.image_model, 0, (0, 0), fps)
    with contextlib.ExitStack() as stack:
        results = overlay = None
        if paths is not None:
            overlay_path, results_path = paths
            result.overlay_path, result.results_path = paths
            results = stack.enter_context(
                ResultsWriter(
                    results_path,
                    video_id=Path(str(video)).name,
                    id2label=config.id2label,
                    fps=fps,
                    overwrite=opts.overwrite,
                )
            )
            if not opts.video_level:
                overlay = stack.enter_context(VideoWriter(overlay_path, fps, overwrite=opts.overwrite))
        bar = stack.enter_context(
            tqdm(total=total, unit="frame", desc=f"segment ({opts.task})", file=sys.stderr, disable=not progress)
        )
        # a stop or an error closes the stream (and the decoder) at once, not at interpreter exit
        stream = stack.enter_context(contextlib.closing(segmenter.stream(_chunks(video, opts), progress=bar.update)))
        for r in stream:
            checkpoint()
            if results is not None:
                results.add_frames(r.frames_hf)
            if keep_frames:
                result.frames.extend(r.frames_hf)
            if painter is None:  # the first chunk tells the frame size
                size = (r.segmentation.shape[1], r.segmentation.shape[2])
                painter = OverlayPainter(size[0], legend_texts_for(config.id2label, max_id))
                if opts.video_level:
                    video_level = stack.enter_context(
                        VideoLevel(
                            opts.task,
                            size,
                            valid=segmenter.valid_size(r.geometry),
                            stride=config.mask_stride,
                            spill_dir=paths[0].parent if paths is not None else None,
                            threshold=opts.threshold,
                            frames_per_piece=VIDEO_LEVEL_PIECE,
                        )
                    )
            if video_level is not None:
                video_level.add(r.output)
            if overlay is not None:
                overlay.write(_paint(painter, r.frames, r.segmentation, r.frame_labels, config.id2label))
            result.num_frames += r.frames.shape[0]
        checkpoint()
        if painter is None or size is None:  # `Segmenter.stream` raises first for a video without frames
            raise ValueError("the video has no frames")
        result.size = size
        result.model_seconds = time.perf_counter() - t0
        if video_level is not None:
            t1 = time.perf_counter()
            if paths is not None and results is not None:
                overlay = stack.enter_context(VideoWriter(paths[0], fps, overwrite=opts.overwrite))
            piece = dataclasses.replace(opts, chunk=min(opts.chunk, VIDEO_LEVEL_PIECE))
            frames = _chunks(video, piece) if overlay is not None else None
            result.tracks = write_video_level(
                video_level, frames, painter, overlay, results, config.id2label, size, progress, checkpoint
            )
            result.video_level_seconds = time.perf_counter() - t1
        checkpoint()  # the last point to stop: after it the files are put in place
    result.seconds = time.perf_counter() - t0
    return result


def write_video_level(
    video_level: Any,
    frames: Iterable[np.ndarray] | None,
    painter: Any,
    overlay: Any,
    results: Any,
    id2label: Mapping[int, str] | None,
    size: tuple[int, int],
    progress: bool = False,
    checkpoint: Callable[[], None] = lambda: None,
) -> list[dict[str, Any]]:
    """Second pass: the video-level maps chunk by chunk (drawn over the video decoded again when
    there is an overlay); the tracks go to `results` (when given) and are returned with their RLEs."""
    import sys

    from tqdm import tqdm

    tracks = TrackMasks(size)
    chunks = video_level.chunks()
    with tqdm(
        total=video_level.num_frames, unit="frame", desc="video-level", file=sys.stderr, disable=not progress
    ) as bar:
        decoded = None if frames is None else (frame for chunk in frames for frame in chunk)  # [H, W, 3] each
        for vc in chunks:
            checkpoint()
            if decoded is not None:
                n = vc.segmentation.shape[0]
                chunk = list(itertools.islice(decoded, n))
                if len(chunk) != n:
                    raise ValueError(f"the video decoded differently the second time ({len(chunk)} frames, not {n})")
                overlay.write(painter.paint(np.stack(chunk), vc.segmentation, video_level.labels, id2label))
            tracks.add(vc.masks, vc.segmentation.shape[0])
            bar.update(vc.segmentation.shape[0])
        if decoded is not None and next(decoded, None) is not None:
            raise ValueError("the video decoded differently the second time (more frames)")
    if results is not None:
        results.expect_tracks()
    out = []
    for info in video_level.tracks:
        rles = tracks.get(info["id"])
        if results is not None:
            results.add_track_rles(info, rles)
        out.append({**info, "segmentations": rles})
    return out


def run_segment(args: Any, checkpoint: Callable[[], None] | None = None) -> int:
    """`videomt-jax segment`: `segment_video` with the parsed options; prints what it did."""
    names = SegmentOptions.__dataclass_fields__
    options = {name: getattr(args, name) for name in names if name != "task"}
    result = segment_video(
        args.video,
        args.model,
        args.task,
        args.out,
        keep_frames=False,
        log=print,
        progress=True,
        checkpoint=checkpoint,
        **options,
    )
    print(result.summary())
    return 0
