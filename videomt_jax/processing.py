"""Video pre-processing: Hugging Face `VideomtVideoProcessor`'s pipeline, in JAX.

HF (torchvision backend) does, per video: grayscale -> RGB (repeat), RGBA -> RGB (alpha dropped
when fully opaque, else blended on white, which makes the video float), antialiased resize of the
uint8 frames back to uint8 (float videos are resized in float and not rounded), then
(x / 255 - mean) / std. The resize is `videomt_jax.ops.resize`, which reproduces torch's kernels bit
for bit: `uint8_resize="fixed"` (default) is torch's CPU uint8 kernel that torchvision uses on x86
CPUs, `"float"` its float32 path + round (GPU, CPUs without AVX2); they differ by one grey level on
some pixels (1/255/std <= 0.0175 in normalized units).

Options beyond HF: `keep_aspect=True` resizes the shorter side to `shortest_edge` (detectron2's
rounding, as the authors' evaluation), caps the longer side at `longest_edge`, and pads bottom/right
with zeros (in normalized units, like the authors' `ImageList`) to a multiple of `pad_multiple`;
`preprocess` returns each video's geometry so outputs can be cropped and mapped back.

Input: uint8 (T,H,W,C) or (B,T,H,W,C) arrays, a list of frames (H,W), (H,W,C) or PIL images (one
video), or a list of videos (batch; sizes may differ). C in {1, 3, 4}. Other integer dtypes are
accepted when their values lie in 0..255. Float input is read as 0..255 pixel values (HF's
semantics with do_rescale); it is not rounded after resizing (as HF). With `do_rescale=True`, float
input whose maximum is <= 1 is refused (it is almost surely already rescaled).

Letters: B videos, T frames, H/W input size, h/w resized size, Hp/Wp padded size, C channels, K taps.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from videomt_jax.ops.resize import ANTIALIAS_FILTERS, UINT8_MODES, resize_images, resize_images_uint8

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
PROCESSOR_CONFIG_NAME = "video_preprocessor_config.json"  # what HF's VideomtVideoProcessor saves
HF_CONFIG_NAMES: tuple[str, ...] = (PROCESSOR_CONFIG_NAME, "preprocessor_config.json")
PIL_RESAMPLE: dict[int, str] = {2: "bilinear", 3: "bicubic"}  # HF `resample` codes we support
JAX_SECTION = "videomt_jax"  # processor config key for the settings HF does not have
JAX_ONLY_FIELDS: tuple[str, ...] = ("uint8_resize", "pad_multiple", "max_pixels")


def _to_rgb(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """[B, T, H, W, C] -> float32 [B, T, H, W, 3] and whether each video is opaque [B]."""
    opaque = jnp.ones((x.shape[0],), bool)
    if x.shape[-1] == 1:
        return jnp.repeat(x.astype(jnp.float32), 3, axis=-1), opaque
    if x.shape[-1] == 3:
        return x.astype(jnp.float32), opaque
    x = x.astype(jnp.float32)
    alpha = x[..., 3:] / 255.0
    opaque = jnp.all(x[..., 3] >= 255.0, axis=(1, 2, 3))
    return x[..., :3] * alpha + (1.0 - alpha) * 255.0, opaque


@functools.partial(jax.jit, static_argnames=("out_hw", "pad_hw", "kernel", "uint8_mode"))
def _process(
    x: jax.Array,  # [B, T, H, W, C] uint8 (uint8_mode set) or float32 (uint8_mode None)
    scale: jax.Array,  # [3]
    offset: jax.Array,  # [3]
    *,
    out_hw: tuple[int, int],
    pad_hw: tuple[int, int],
    kernel: str,
    uint8_mode: str | None,
) -> jax.Array:
    rgb, opaque = _to_rgb(x)  # [B, T, H, W, 3] float32, [B]
    if out_hw != tuple(x.shape[2:4]):
        if uint8_mode is None:
            rgb = resize_images(rgb, out_hw, kernel)  # [B, T, h, w, 3]
        else:  # HF resizes uint8 frames and gets uint8 back; RGBA with transparency is float
            source = x[..., :3] if x.shape[-1] == 4 else jnp.broadcast_to(x, (*x.shape[:-1], 3))
            resized = resize_images_uint8(source, out_hw, kernel, uint8_mode).astype(jnp.float32)
            if x.shape[-1] == 4:
                resized = jnp.where(opaque[:, None, None, None, None], resized, resize_images(rgb, out_hw, kernel))
            rgb = resized
    out = rgb * scale + offset
    pad = ((0, 0), (0, 0), (0, pad_hw[0] - out_hw[0]), (0, pad_hw[1] - out_hw[1]), (0, 0))
    return jnp.pad(out, pad)  # [B, T, Hp, Wp, 3]


@dataclass(frozen=True)
class VideoGeometry:
    """Where a video's pixels went: original (H, W) -> resized (h, w) -> padded (Hp, Wp)."""

    original_size: tuple[int, int]
    resized_size: tuple[int, int]
    padded_size: tuple[int, int]

    def crop_valid(self, x: Any, axes: tuple[int, int] = (-3, -2)) -> Any:
        """Crop an array whose `axes` span the padded frame (at any resolution) to the valid part."""
        out = x
        for axis, valid, padded in zip(axes, self.resized_size, self.padded_size):
            n = x.shape[axis]
            keep = math.ceil(valid * n / padded)
            index = [slice(None)] * x.ndim
            index[axis] = slice(0, keep)
            out = out[tuple(index)]
        return out


def _pair(value: int | Sequence[int], name: str) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, (int, np.integer)) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, (int, np.integer)) and v >= 1 for v in pair):
        raise ValueError(f"{name} must be a positive int or a (height, width) pair, got {value!r}")
    return int(pair[0]), int(pair[1])


@dataclass(frozen=True)
class VideoProcessor:
    """Frames -> normalized model input (B, T, Hp, Wp, 3) float32; defaults are HF's."""

    size: tuple[int, int] = (640, 640)
    resample: str = "bilinear"
    uint8_resize: str = "fixed"  # "fixed": torch's CPU uint8 kernel; "float": its GPU/float path
    do_resize: bool = True
    do_rescale: bool = True
    rescale_factor: float = 1.0 / 255.0
    do_normalize: bool = True
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    keep_aspect: bool = False
    shortest_edge: int | None = None  # keep_aspect: None -> min(size)
    longest_edge: int | None = None  # keep_aspect: cap on the longer side
    pad_multiple: int | tuple[int, int] = 16  # keep_aspect: the patch size
    max_pixels: int = 40_000_000  # per input frame; a little above 8K UHD (33.2 MP)

    def __post_init__(self) -> None:
        object.__setattr__(self, "size", _pair(self.size, "size"))
        object.__setattr__(self, "pad_multiple", _pair(self.pad_multiple, "pad_multiple"))
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))
        if self.uint8_resize not in UINT8_MODES:
            raise ValueError(f"uint8_resize must be one of {UINT8_MODES}, got {self.uint8_resize!r}")
        if self.resample not in ANTIALIAS_FILTERS:
            raise ValueError(f"resample must be one of {sorted(ANTIALIAS_FILTERS)}, got {self.resample!r}")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError(f"mean and std need 3 values with std > 0, got mean={self.mean} std={self.std}")
        for name in ("shortest_edge", "longest_edge"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, (int, np.integer)) or value < 1):
                raise ValueError(f"{name} must be a positive int or None, got {value!r}")
        if self.max_pixels < 1 or self.rescale_factor <= 0:
            raise ValueError(
                f"max_pixels and rescale_factor must be positive, got {self.max_pixels}, {self.rescale_factor}"
            )

    # ---- construction -------------------------------------------------------------------------
    @classmethod
    def from_config(cls, config: Any, **overrides: Any) -> VideoProcessor:
        """Size and pad multiple from a `VideomtConfig` (image_hw, patch_hw)."""
        return cls(**{"size": config.image_hw, "pad_multiple": config.patch_hw, **overrides})

    @classmethod
    def from_hf_dict(cls, d: Mapping[str, Any], **overrides: Any) -> VideoProcessor:
        """Settings from a HF (video_)preprocessor_config.json dict."""
        if d.get("do_center_crop") or d.get("do_pad"):
            raise ValueError("HF processor configs with do_center_crop/do_pad are not supported (VidEoMT uses neither)")
        kwargs: dict[str, Any] = {}
        size = d.get("size")
        if isinstance(size, Mapping) and "height" in size:
            kwargs["size"] = (size["height"], size["width"])
        elif isinstance(size, Mapping) and "shortest_edge" in size:
            kwargs.update(keep_aspect=True, shortest_edge=size["shortest_edge"], longest_edge=size.get("longest_edge"))
        elif size is not None:
            raise ValueError(f"unsupported HF size {size!r}; expected height/width or shortest_edge")
        resample = d.get("resample", 2)
        if resample not in PIL_RESAMPLE:
            raise ValueError(f"unsupported HF resample code {resample!r}; supported {PIL_RESAMPLE}")
        kwargs["resample"] = PIL_RESAMPLE[resample]
        renames = {"image_mean": "mean", "image_std": "std"}
        for key in ("do_resize", "do_rescale", "rescale_factor", "do_normalize", "image_mean", "image_std"):
            if d.get(key) is not None:
                kwargs[renames.get(key, key)] = d[key]
        jax_side = d.get(JAX_SECTION) or {}
        kwargs.update({k: jax_side[k] for k in JAX_ONLY_FIELDS if k in jax_side})
        return cls(**{**kwargs, **overrides})

    def to_hf_dict(self, *, hf_only: bool = False) -> dict[str, Any]:
        """The dict of an HF `video_preprocessor_config.json` (`from_hf_dict` reads it back).

        Settings HF has no key for (uint8 resize mode, pad multiple, pixel limit) go under a
        "videomt_jax" key unless `hf_only`."""
        if self.keep_aspect:
            size = {"shortest_edge": self.shortest_edge or min(self.size)}
            size.update({} if self.longest_edge is None else {"longest_edge": self.longest_edge})
        else:
            size = {"height": self.size[0], "width": self.size[1]}
        out: dict[str, Any] = {
            "video_processor_type": "VideomtVideoProcessor",
            "do_convert_rgb": True,
            "do_resize": self.do_resize,
            "size": size,
            "resample": {name: code for code, name in PIL_RESAMPLE.items()}[self.resample],
            "do_rescale": self.do_rescale,
            "rescale_factor": self.rescale_factor,
            "do_normalize": self.do_normalize,
            "image_mean": list(self.mean),
            "image_std": list(self.std),
            "do_center_crop": False,
        }
        if not hf_only:
            out[JAX_SECTION] = {k: _jsonable(getattr(self, k)) for k in JAX_ONLY_FIELDS}
        return out

    def save_pretrained(self, directory: str | Path, *, hf_only: bool = False) -> Path:
        """Write `directory/video_preprocessor_config.json` (the directory must exist), atomically."""
        from videomt_jax.utils.io import atomic_write_text

        path = Path(directory) / PROCESSOR_CONFIG_NAME
        atomic_write_text(path, json.dumps(self.to_hf_dict(hf_only=hf_only), indent=2, sort_keys=True) + "\n")
        return path

    @classmethod
    def from_pretrained(cls, path: str | Path, **overrides: Any) -> VideoProcessor:
        """Read the HF processor config next to a checkpoint (a directory or the json itself)."""
        path = Path(path)
        candidates = [path] if path.is_file() else [path / name for name in HF_CONFIG_NAMES]
        for candidate in candidates:
            if candidate.is_file():
                return cls.from_hf_dict(json.loads(candidate.read_text()), **overrides)
        raise FileNotFoundError(f"no processor config in {path} (looked for {', '.join(HF_CONFIG_NAMES)})")

    # ---- normalisation ------------------------------------------------------------------------
    @property
    def pixel_mean(self) -> tuple[float, float, float]:
        """The 0..255 pixel value that normalises to 0 (padding colour of augmented frames)."""
        scale, offset = (np.asarray(a, np.float64) for a in self._host_affine())
        red, green, blue = (float(v) for v in -offset / scale)
        return red, green, blue

    def normalize(self, frames: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Rescale + normalise frames already at model size (no resize), on the host, in numpy.

        frames [..., 3] uint8 (or floats on 0..255) -> float32, the same numbers `__call__` gives
        for frames that need no resize: training and evaluation batches go through here."""
        if frames.shape[-1] != 3:
            raise ValueError(f"frames must end with 3 colour channels, got shape {frames.shape}")
        # float32 coefficients, product and sum in float64, one rounding to float32: the fused
        # multiply-add XLA emits for `x * scale + offset` in `__call__`.
        scale, offset = (np.asarray(a, np.float64) for a in self._host_affine())  # [3] each
        out = np.empty(frames.shape, np.float32) if out is None else out
        out[...] = np.asarray(frames, np.float64) * scale + offset
        return out

    # ---- geometry -----------------------------------------------------------------------------
    def geometry(self, height: int, width: int) -> VideoGeometry:
        """Resized and padded size for an input frame of (height, width)."""
        resized = (height, width)
        if self.do_resize and not self.keep_aspect:
            resized = self.size
        elif self.do_resize:
            short = self.shortest_edge or min(self.size)
            scale = short / min(height, width)
            new_h, new_w = height * scale, width * scale
            if self.longest_edge is not None and max(new_h, new_w) > self.longest_edge:
                cap = self.longest_edge / max(new_h, new_w)
                new_h, new_w = new_h * cap, new_w * cap
            resized = (max(int(new_h + 0.5), 1), max(int(new_w + 0.5), 1))
        padded = resized
        if self.keep_aspect:
            mult_h, mult_w = _pair(self.pad_multiple, "pad_multiple")  # already a pair after __post_init__
            padded = (-(-resized[0] // mult_h) * mult_h, -(-resized[1] // mult_w) * mult_w)
        return VideoGeometry((height, width), resized, padded)

    # ---- processing ---------------------------------------------------------------------------
    def __call__(self, frames: Any) -> jax.Array:
        """Frames -> (B, T, Hp, Wp, 3) float32 (the public contract: the array only)."""
        return self.preprocess(frames)[0]

    def preprocess(self, frames: Any) -> tuple[jax.Array, tuple[VideoGeometry, ...]]:
        """Frames -> ((B, T, Hp, Wp, 3) float32, one `VideoGeometry` per video)."""
        groups = [self._check_pixels(g) for g in _as_video_groups(frames)]
        frame_counts = {g.shape[1] for g in groups}
        if len(frame_counts) != 1:
            raise ValueError(f"videos in a batch need the same number of frames, got {sorted(frame_counts)}")
        scale, offset = self._affine()
        outputs, geometries = [], []
        for pixels in groups:  # [b, T, H, W, C]
            geo = self.geometry(*pixels.shape[2:4])
            outputs.append(
                _process(
                    jnp.asarray(pixels),
                    scale,
                    offset,
                    out_hw=geo.resized_size,
                    pad_hw=geo.padded_size,
                    kernel=self.resample,
                    uint8_mode=self.uint8_resize if pixels.dtype == np.uint8 else None,
                )
            )
            geometries += [geo] * pixels.shape[0]
        if len(outputs) == 1:
            return outputs[0], tuple(geometries)
        sizes = {o.shape[2:4] for o in outputs}
        if len(sizes) > 1 and not self.keep_aspect:
            raise ValueError(
                f"videos of different sizes {sorted(sizes)} need do_resize=True (one size) "
                "or keep_aspect=True (padding)"
            )
        hp, wp = max(s[0] for s in sizes), max(s[1] for s in sizes)
        padded = [jnp.pad(o, ((0, 0), (0, 0), (0, hp - o.shape[2]), (0, wp - o.shape[3]), (0, 0))) for o in outputs]
        geometries = [dataclasses.replace(g, padded_size=(hp, wp)) for g in geometries]
        return jnp.concatenate(padded, axis=0), tuple(geometries)

    def process_device(self, frames: jax.Array, out_hw: tuple[int, int], pad_hw: tuple[int, int]) -> jax.Array:
        """Traceable: uint8 frames [B, T, H, W, 3] -> [B, T, Hp, Wp, 3] float32, as `preprocess` does.

        For code that fuses pre-processing into a jitted or exported function (`serving/export.py`);
        `out_hw` is the resized size, `pad_hw` the padded one (>= out_hw).
        """
        scale, offset = self._affine()
        return _process(
            frames, scale, offset, out_hw=out_hw, pad_hw=pad_hw, kernel=self.resample, uint8_mode=self.uint8_resize
        )

    def _affine(self) -> tuple[jax.Array, jax.Array]:
        """(x * rescale - mean) / std as x * scale + offset (HF fuses them the same way)."""
        scale, offset = self._host_affine()
        return jnp.asarray(scale), jnp.asarray(offset)

    def _host_affine(self) -> tuple[np.ndarray, np.ndarray]:
        """`_affine` as float32 numpy arrays: no JAX call, so that importing modules whose defaults
        derive from a processor leaves the backend alone (`jax.distributed.initialize` comes first)."""
        rescale = self.rescale_factor if self.do_rescale else 1.0
        mean = np.asarray(self.mean if self.do_normalize else (0.0,) * 3, np.float64)
        std = np.asarray(self.std if self.do_normalize else (1.0,) * 3, np.float64)
        return (rescale / std).astype(np.float32), (-mean / std).astype(np.float32)

    def _check_pixels(self, pixels: np.ndarray) -> np.ndarray:
        """Dtype/value checks on one [b, T, H, W, C] group; returns uint8 or float32."""
        _, t, h, w, c = pixels.shape
        if t == 0 or h == 0 or w == 0:
            raise ValueError(f"empty video: shape {pixels.shape} (need at least one frame of non-zero size)")
        if c not in (1, 3, 4):
            raise ValueError(
                f"frames need 1, 3 or 4 channels (gray, RGB, RGBA) on the last axis, got shape {pixels.shape}"
            )
        if h * w > self.max_pixels:
            raise ValueError(
                f"frame of {h}x{w} = {h * w} pixels exceeds max_pixels={self.max_pixels}; "
                "downscale it first or raise VideoProcessor(max_pixels=...)"
            )
        kind = pixels.dtype.kind
        low: float  # value range of the frames (ints for integer frames)
        high: float
        if pixels.dtype == np.uint8:
            return pixels
        if kind in "iu":
            low, high = int(pixels.min()), int(pixels.max())
            if low < 0 or high > 255:
                raise ValueError(f"{pixels.dtype} frames must hold 0..255 values, got range [{low}, {high}]")
            return pixels.astype(np.uint8)
        if kind == "f":
            low, high = float(pixels.min()), float(pixels.max())
            if not (np.isfinite(low) and np.isfinite(high)) or low < 0 or high > 255:
                raise ValueError(f"float frames are read as 0..255 pixel values, got range [{low}, {high}]")
            if self.do_rescale and 0 < high <= 1.0:
                raise ValueError(
                    "float frames look already rescaled to [0, 1] (max <= 1); pass 0..255 values or "
                    "use VideoProcessor(do_rescale=False)"
                )
            return pixels.astype(np.float32)
        raise TypeError(f"frames must be uint8 (or 0..255 integers / floats), got dtype {pixels.dtype}")


def _jsonable(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def default_processor(config: Any = None, processor: VideoProcessor | None = None, **overrides: Any) -> VideoProcessor:
    """The one rule for the processor of a model: `processor` when given, else the config's
    (`VideoProcessor.from_config`: its image size and patch multiple, HF's normalisation), else
    (no config) HF's defaults. `overrides` apply to the derived processor only."""
    if processor is not None:
        return processor
    return VideoProcessor(**overrides) if config is None else VideoProcessor.from_config(config, **overrides)


def load_processor(path: str | Path, config: Any, **overrides: Any) -> VideoProcessor:
    """The processor saved beside a checkpoint (`path` a directory), else `VideoProcessor.from_config`.

    `save_pretrained` and `export_hf` write one next to every model; HF Hub checkpoints have one."""
    path = Path(path)
    found = [path / name for name in HF_CONFIG_NAMES if path.is_dir() and (path / name).is_file()]
    if not found:
        return default_processor(config, **overrides)
    data = json.loads(found[0].read_text())
    if JAX_SECTION not in data:  # an HF file: padding (keep_aspect) follows the model's patch size
        overrides = {"pad_multiple": config.patch_hw, **overrides}
    return VideoProcessor.from_hf_dict(data, **overrides)


def _frame_array(frame: Any) -> np.ndarray:
    """One frame -> [H, W, C] array (PIL images are read in their own mode; palettes -> RGB)."""
    if hasattr(frame, "mode") and hasattr(frame, "convert"):  # PIL image
        frame = frame if frame.mode in ("L", "RGB", "RGBA") else frame.convert("RGB")
    arr = np.asarray(frame)
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3:
        raise ValueError(f"a frame must be (H, W) or (H, W, C), got shape {arr.shape}")
    return arr


def _stack_frames(frames: Sequence[Any]) -> np.ndarray:
    """List of frames -> [T, H, W, C]; all frames must share one shape."""
    arrays = [_frame_array(f) for f in frames]
    if not arrays:
        raise ValueError("empty video: the list of frames is empty")
    shapes = {a.shape for a in arrays}
    if len(shapes) != 1:
        raise ValueError(f"frames of one video must share a shape, got {sorted(shapes)}")
    return np.stack(arrays)


def _is_frame_like(item: Any) -> bool:
    return hasattr(item, "mode") or np.ndim(item) in (2, 3)


def _as_video_groups(frames: Any) -> list[np.ndarray]:
    """Any accepted input -> list of [b, T, H, W, C] arrays (one for an array, one per video for a list of videos)."""
    if isinstance(frames, (list, tuple)):
        if not frames:
            raise ValueError("empty input: no frames or videos given")
        if all(_is_frame_like(f) for f in frames):
            return [_stack_frames(frames)[None]]
        videos = [np.asarray(v) if np.ndim(v) == 4 else _stack_frames(v) for v in frames]
        return [v[None] for v in videos]
    arr = np.asarray(frames)
    if arr.ndim == 5:
        return [arr]
    if arr.ndim == 4:
        return [arr[None]]
    if arr.ndim == 3:
        raise ValueError(
            f"a 3-D array {arr.shape} is ambiguous: pass one frame as frame[None] (1, H, W, C), "
            "a grayscale video as video[..., None] (T, H, W, 1), or a list of frames"
        )
    raise ValueError(f"expected (T, H, W, C) or (B, T, H, W, C) frames, got an array of shape {arr.shape}")
