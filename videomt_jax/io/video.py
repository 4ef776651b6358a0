"""Video files and image folders <-> uint8 frames (T, H, W, 3), RGB.

Reading: mp4/webm/mkv/mov/avi... through PyAV (FFmpeg), GIF through Pillow (disposal and palettes
handled by Pillow), and folders of images (png/jpg/jpeg/bmp/webp, natural sort: 2.png < 10.png).
`iter_video_chunks` streams a long video in chunks without holding all frames in memory.
Writing: .mp4/.mkv/.mov (libx264, mpeg4 if libx264 is missing), .webm (VP9) through PyAV and .gif
through Pillow's GIF block writers; `VideoWriter` takes the frames chunk by chunk (memory one frame
large), always into a temporary file in the target folder, then `os.replace`, so a crash never
leaves a half-written video. x264 uses yuv420p when both sides are even, else yuv444p (so odd
sizes round-trip without padding).

GIF timing: Pillow's own writer merges identical consecutive frames into one longer frame (ours
writes every frame). Our GIFs carry a comment "videomt-jax frame_ms=N"; when reading such a file,
frames are repeated by duration / N so the frame count round-trips. Other GIFs are read frame by
frame, fps from the first frame's duration.

Letters: T frames, H/W height/width.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
from collections.abc import Callable, Generator, Iterator
from fractions import Fraction
from pathlib import Path
from typing import NamedTuple

import numpy as np

from videomt_jax.utils.io import atomic_path

DEFAULT_FPS = 25.0  # image folders and GIFs without timing
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
GIF_TAG = "videomt-jax frame_ms="
DEFAULT_CRF = 18  # x264/VP9 constant quality: visually near-lossless
# suffix -> (container format, encoders to try in order)
AV_FORMATS: dict[str, tuple[str, tuple[str, ...]]] = {
    ".mp4": ("mp4", ("libx264", "mpeg4")),
    ".mkv": ("matroska", ("libx264", "mpeg4")),
    ".mov": ("mov", ("libx264", "mpeg4")),
    ".webm": ("webm", ("libvpx-vp9", "libvpx")),
}
FULL_CHROMA_CODECS = ("libx264", "libvpx-vp9")  # can encode yuv444p (odd frame sizes)


class VideoClip(NamedTuple):
    frames: np.ndarray  # [T, H, W, 3] uint8
    fps: float  # frames per second of the returned frames (source fps / stride)


class _Source(NamedTuple):
    fps: float
    frames: Generator[np.ndarray, None, None]  # each [H, W, 3] uint8
    close: Callable[[], None]  # frees the file even when `frames` was never started


def _natural_key(name: str) -> list:
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def _open_folder(path: Path) -> _Source:
    files = sorted(
        (p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES), key=lambda p: _natural_key(p.name)
    )
    if not files:
        raise ValueError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in folder {path}")
    from PIL import Image, UnidentifiedImageError

    def frames() -> Generator[np.ndarray, None, None]:
        for file in files:
            try:
                with Image.open(file) as im:
                    yield np.asarray(im.convert("RGB"))
            except (UnidentifiedImageError, OSError) as e:
                raise ValueError(f"cannot read image {file}: {e}") from e

    return _Source(DEFAULT_FPS, frames(), lambda: None)


def _gif_base_ms(comment: object) -> int | None:
    text = comment.decode("latin-1") if isinstance(comment, bytes) else str(comment or "")
    match = re.search(re.escape(GIF_TAG) + r"(\d+)", text)
    return int(match.group(1)) if match and int(match.group(1)) > 0 else None


def _open_gif(path: Path) -> _Source:
    from PIL import Image, ImageSequence, UnidentifiedImageError

    try:
        im = Image.open(path)
    except (UnidentifiedImageError, OSError) as e:
        raise ValueError(f"cannot read GIF {path}: {e}") from e
    base_ms = _gif_base_ms(im.info.get("comment"))
    first_ms = im.info.get("duration") or 0
    fps = 1000.0 / (base_ms or first_ms) if (base_ms or first_ms) else DEFAULT_FPS

    def frames() -> Generator[np.ndarray, None, None]:
        try:
            for frame in ImageSequence.Iterator(im):
                rgb = np.asarray(frame.convert("RGB"))
                repeats = max(1, round((frame.info.get("duration") or 0) / base_ms)) if base_ms else 1
                for _ in range(repeats):
                    yield rgb
        except (OSError, EOFError, ValueError) as e:
            raise ValueError(f"cannot decode GIF {path}: {e}") from e
        finally:
            im.close()

    return _Source(fps, frames(), im.close)


def _open_av(path: Path) -> _Source:
    import av

    try:
        container = av.open(str(path))
    except av.error.FFmpegError as e:
        raise ValueError(f"cannot open video {path}: {e}") from e
    if not container.streams.video:
        container.close()
        raise ValueError(f"{path} has no video stream")
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    rate = stream.average_rate or stream.guessed_rate
    fps = float(rate) if rate else DEFAULT_FPS

    def frames() -> Generator[np.ndarray, None, None]:
        try:
            for frame in container.decode(stream):
                yield frame.to_ndarray(format="rgb24")
        except av.error.FFmpegError as e:
            raise ValueError(f"cannot decode video {path}: {e}") from e
        finally:
            container.close()

    return _Source(fps, frames(), container.close)


def _open(path: str | os.PathLike) -> _Source:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such video file or image folder: {path}")
    if path.is_dir():
        return _open_folder(path)
    if path.suffix.lower() == ".gif":
        return _open_gif(path)
    return _open_av(path)


def _chunks(source: _Source, path: object, chunk: int, max_frames: int | None, stride: int) -> Iterator[np.ndarray]:
    try:
        selected = itertools.islice(source.frames, 0, None, stride)
        if max_frames is not None:
            selected = itertools.islice(selected, max_frames)
        shape, count = None, 0
        while block := list(itertools.islice(selected, chunk)):
            shape = shape or block[0].shape
            odd = next((i for i, f in enumerate(block) if f.shape != shape), None)
            if odd is not None:
                raise ValueError(f"{path}: frame {count + odd} has shape {block[odd].shape}, earlier frames {shape}")
            count += len(block)
            yield np.stack(block)
        if count == 0:
            raise ValueError(f"no frames decoded from {path} (empty video)")
    finally:
        source.frames.close()
        source.close()


def _check_counts(chunk: int, max_frames: int | None, stride: int) -> None:
    for name, value in (("chunk", chunk), ("stride", stride), ("max_frames", max_frames)):
        if not (value is None and name == "max_frames") and (not isinstance(value, int) or value < 1):
            raise ValueError(f"{name} must be a positive int, got {value!r}")


def iter_video_chunks(
    path: str | os.PathLike, chunk: int, *, max_frames: int | None = None, stride: int = 1
) -> Iterator[np.ndarray]:
    """Yield uint8 [t, H, W, 3] chunks (t = `chunk`, the last may be shorter), decoding lazily.

    The file is opened (and missing/unreadable files reported) when this is called.
    """
    _check_counts(chunk, max_frames, stride)
    return _chunks(_open(path), path, chunk, max_frames, stride)


def read_video(path: str | os.PathLike, max_frames: int | None = None, stride: int = 1) -> VideoClip:
    """Whole video -> VideoClip(frames uint8 [T, H, W, 3], fps / stride). Keeps every `stride`-th frame."""
    _check_counts(1, max_frames, stride)
    source = _open(path)
    frames = np.concatenate(list(_chunks(source, path, 256, max_frames, stride)))
    return VideoClip(frames, source.fps / stride)


class VideoInfo(NamedTuple):
    fps: float
    num_frames: int | None  # None where the container does not say
    height: int | None = None  # frame size (None where it cannot be told without decoding)
    width: int | None = None


def _folder_size(path: Path) -> tuple[int, int] | None:
    from PIL import Image, UnidentifiedImageError

    files = sorted(
        (p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES), key=lambda p: _natural_key(p.name)
    )
    if not files:
        return None
    try:
        with Image.open(files[0]) as im:  # reads the header only
            return im.size[1], im.size[0]
    except (UnidentifiedImageError, OSError):
        return None


def probe_video(path: str | os.PathLike) -> VideoInfo:
    """fps, frame count (folders: image count; GIF: expanded count; others: container header) and
    frame size, without decoding the frames (GIF: counted by walking them)."""
    path = Path(path)
    source = _open(path)
    count: int | None
    size: tuple[int, int] | None = None
    try:
        if path.is_dir():
            count = sum(1 for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            size = _folder_size(path)
        elif path.suffix.lower() == ".gif":
            frames = iter(source.frames)
            first = next(frames, None)
            count = 0 if first is None else 1 + sum(1 for _ in frames)
            size = None if first is None else (int(first.shape[0]), int(first.shape[1]))
        else:
            import av

            with av.open(str(path)) as container:
                stream = container.streams.video[0]
                count = stream.frames or None
                if stream.codec_context.height and stream.codec_context.width:
                    size = (int(stream.codec_context.height), int(stream.codec_context.width))
    finally:
        source.frames.close()
        source.close()
    return VideoInfo(source.fps, count, *(size or (None, None)))


# ------------------------------------------------------------------------------------ writing
def _check_frames(frames: np.ndarray, fps: float) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.ndim == 3:
        frames = frames[..., None]
    if frames.ndim != 4 or frames.shape[-1] not in (1, 3) or frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 (T, H, W, 3) or (T, H, W); got {frames.dtype} {frames.shape}")
    if 0 in frames.shape[:3]:
        raise ValueError(f"cannot write an empty video: frames of shape {frames.shape}")
    if not fps > 0:
        raise ValueError(f"fps must be positive, got {fps!r}")
    return np.ascontiguousarray(np.broadcast_to(frames, (*frames.shape[:3], 3)))


def _pick_codec(candidates: tuple[str, ...]) -> str:
    import av

    for name in candidates:
        with contextlib.suppress(av.error.FFmpegError, ValueError):
            av.codec.Codec(name, "w")
            return name
    raise RuntimeError(f"none of the encoders {candidates} is available in this FFmpeg build")


class _AVEncoder:
    """Frames -> an mp4/mkv/mov/webm file through PyAV, one frame at a time."""

    def __init__(self, tmp: Path, suffix: str, fps: float, crf: int, height: int, width: int):
        import av

        container_format, candidates = AV_FORMATS[suffix]
        codec = _pick_codec(candidates)
        even = height % 2 == 0 and width % 2 == 0
        if not even and codec not in FULL_CHROMA_CODECS:
            raise ValueError(f"encoder {codec} needs even frame sizes, got {height}x{width}")
        self.container = av.open(str(tmp), mode="w", format=container_format)
        stream = self.container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
        if not isinstance(stream, av.VideoStream):
            raise RuntimeError(f"FFmpeg made a {type(stream).__name__} for encoder {codec}, not a video stream")
        self.stream = stream
        self.stream.width, self.stream.height = width, height
        self.stream.pix_fmt = "yuv420p" if even else "yuv444p"
        if codec in FULL_CHROMA_CODECS:
            self.stream.options = {"crf": str(crf), **({"b": "0"} if codec == "libvpx-vp9" else {})}

    def add(self, frame: np.ndarray) -> None:  # [H, W, 3] uint8
        import av

        for packet in self.stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
            self.container.mux(packet)

    def close(self, ok: bool) -> None:
        try:
            if ok:
                for packet in self.stream.encode():
                    self.container.mux(packet)
        finally:
            self.container.close()


class _GifEncoder:
    """Frames -> a GIF, one frame at a time: each frame gets its own adaptive palette (a local colour
    table), written with Pillow's GIF block writers (`getheader` / `getdata`). Identical consecutive
    frames are merged into one longer frame (as Pillow's own writer does), so one frame is held back."""

    def __init__(self, tmp: Path, suffix: str, fps: float, crf: int, height: int, width: int):
        self.frame_ms = max(1, round(100.0 / fps)) * 10  # GIF stores centiseconds
        self.file = open(tmp, "wb")  # noqa: SIM115 - open across add() calls, closed by close()
        self.pending: tuple[np.ndarray, int] | None = None  # (frame, repeats) not written yet

    def _flush(self) -> None:
        from PIL import GifImagePlugin, Image

        if self.pending is None:
            raise RuntimeError("_GifEncoder._flush called with no frame pending")
        frame, repeats = self.pending
        image = Image.fromarray(frame).convert("P", palette=Image.Palette.ADAPTIVE)
        if self.file.tell() == 0:
            info = {"loop": 0, "duration": self.frame_ms, "comment": f"{GIF_TAG}{self.frame_ms}"}
            self.file.write(b"".join(GifImagePlugin.getheader(image, info=info)[0]))
        data = GifImagePlugin.getdata(image, duration=self.frame_ms * repeats, include_color_table=True)
        self.file.write(b"".join(data))

    def add(self, frame: np.ndarray) -> None:  # [H, W, 3] uint8
        if self.pending is not None and np.array_equal(self.pending[0], frame):
            self.pending = (self.pending[0], self.pending[1] + 1)
            return
        if self.pending is not None:
            self._flush()
        self.pending = (frame.copy(), 1)

    def close(self, ok: bool) -> None:
        try:
            if ok and self.pending is not None:
                self._flush()
                self.file.write(b";")  # GIF trailer
        finally:
            self.file.close()


ENCODERS: dict[str, Callable[..., _AVEncoder | _GifEncoder]] = {
    **{suffix: _AVEncoder for suffix in AV_FORMATS},
    ".gif": _GifEncoder,
}


class VideoWriter:
    """Write a video chunk by chunk, atomically: `path` appears (or is replaced) only on a clean close.

        with VideoWriter("overlay.mp4", fps=25) as writer:
            for chunk in chunks:          # uint8 [t, H, W, 3], every chunk the same H, W
                writer.write(chunk)

    Memory stays one frame large whatever the video's length. An exception inside the `with` block
    removes the temporary file and leaves `path` as it was. overwrite=False: an existing `path` is
    never replaced (FileExistsError, also when one appears while writing).
    """

    def __init__(
        self, path: str | os.PathLike, fps: float = DEFAULT_FPS, *, crf: int = DEFAULT_CRF, overwrite: bool = True
    ):
        self.path, self.overwrite = Path(path), overwrite
        self.suffix = self.path.suffix.lower()
        if self.suffix not in ENCODERS:
            raise ValueError(f"cannot write {self.path.suffix!r} videos; supported: {', '.join(sorted(ENCODERS))}")
        if not fps > 0:
            raise ValueError(f"fps must be positive, got {fps!r}")
        self.fps, self.crf = float(fps), crf
        self.num_frames = 0
        self._atomic: contextlib.AbstractContextManager[Path] | None = None
        self._encoder: _AVEncoder | _GifEncoder | None = None
        self._size: tuple[int, int] | None = None

    def __enter__(self) -> VideoWriter:
        self._atomic = atomic_path(self.path, overwrite=self.overwrite)
        self._tmp = self._atomic.__enter__()
        return self

    def write(self, frames: np.ndarray) -> None:
        """Append uint8 frames [t, H, W, 3] (or [t, H, W]; one frame [H, W, 3] is not accepted)."""
        if self._atomic is None:
            raise RuntimeError("use VideoWriter in a `with` block")
        frames = _check_frames(frames, self.fps)
        size = frames.shape[1:3]
        if self._encoder is None:
            self._size = size
            self._encoder = ENCODERS[self.suffix](self._tmp, self.suffix, self.fps, self.crf, *size)
        elif size != self._size:
            raise ValueError(f"frame size {size} differs from the first frames' {self._size} in {self.path}")
        for frame in frames:
            self._encoder.add(frame)
        self.num_frames += len(frames)

    def __exit__(self, exc_type, exc, tb) -> None:
        if self._atomic is None:
            raise RuntimeError("VideoWriter.__exit__ without __enter__")
        ok = exc_type is None
        try:
            if self._encoder is not None:
                self._encoder.close(ok)
            if ok and self._encoder is None:
                raise ValueError(f"cannot write an empty video: no frames were written to {self.path}")
        except BaseException as e:
            self._atomic.__exit__(type(e), e, e.__traceback__)
            raise
        self._atomic.__exit__(exc_type, exc, tb)


def write_video(
    path: str | os.PathLike, frames: np.ndarray, fps: float = DEFAULT_FPS, *, crf: int = DEFAULT_CRF
) -> Path:
    """Write uint8 [T, H, W, 3] frames to `path` (.mp4/.mkv/.mov/.webm/.gif), atomically."""
    frames = _check_frames(frames, fps)
    with VideoWriter(path, fps, crf=crf) as writer:
        writer.write(frames)
    return Path(path)
