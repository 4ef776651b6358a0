"""Procedural video clips: textured shapes ("things") moving over textured regions ("stuff").

Letters: T frames, N objects drawn, M objects kept (visible in some frame), H/W image size,
S stuff regions.

Each thing class has its own shape, colour and texture (a tiny model can tell them apart); each
stuff class fills horizontal bands with wavy borders and its own texture. Objects move in straight
lines with their own velocity and spin, occlude one another by a fixed depth order, and may enter
or leave the frame (with `bounce` their centres reflect off the borders instead, so long clips keep
their objects). Everything is drawn with vectorised numpy from one `numpy.random.Generator` seeded
by (config seed, split, clip index), so a clip is a pure function of those three numbers and the
`train` / `heldout` splits are disjoint seed streams.

Class ids are contiguous: things first (`thing_ids`), then stuff (`stuff_ids`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from videomt_jax.data.augment import AugmentConfig, augment_clip
from videomt_jax.data.batching import Batch, Clip, collate
from videomt_jax.ops.labels import LABEL_DIVISOR

SPLITS: dict[str, int] = {"train": 0, "heldout": 1}

Shape = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (u, v) object coordinates -> inside
Texture = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (u, v) -> brightness factor in [-1, 1]

_TRIANGLE_NORMALS = [(np.cos(a), np.sin(a)) for a in np.deg2rad([90.0, 210.0, 330.0])]

SHAPES: dict[str, Shape] = {
    "circle": lambda u, v: u * u + v * v <= 1.0,
    "square": lambda u, v: np.maximum(np.abs(u), np.abs(v)) <= 0.8,
    "triangle": lambda u, v: np.all([u * a + v * b <= 0.5 for a, b in _TRIANGLE_NORMALS], axis=0),
    "diamond": lambda u, v: np.abs(u) + np.abs(v) <= 1.0,
    "cross": lambda u, v: (np.minimum(np.abs(u), np.abs(v)) <= 0.33) & (np.maximum(np.abs(u), np.abs(v)) <= 1.0),
}
SHAPE_REACH = 1.45  # every shape lies within this many radii of its centre
THING_TEXTURES: dict[str, Texture] = {
    "solid": lambda u, v: np.zeros_like(u),
    "stripes": lambda u, v: np.sign(np.sin(7.0 * u)),
    "checker": lambda u, v: np.sign(np.sin(6.0 * u) * np.sin(6.0 * v)),
    "rings": lambda u, v: np.sign(np.sin(9.0 * np.sqrt(u * u + v * v))),
    "dots": lambda u, v: np.where(np.cos(8.0 * u) * np.cos(8.0 * v) > 0.5, -1.0, 0.3),
}
# thing class name -> (shape, RGB colour, texture)
THING_CLASSES: dict[str, tuple[str, tuple[int, int, int], str]] = {
    "circle": ("circle", (225, 45, 40), "solid"),
    "square": ("square", (250, 215, 40), "stripes"),
    "triangle": ("triangle", (185, 55, 210), "checker"),
    "diamond": ("diamond", (250, 135, 20), "rings"),
    "cross": ("cross", (245, 245, 245), "dots"),
}
# stuff class name -> (RGB colour, texture); textures take (y, x, t, static noise [H, W])
StuffTexture = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], np.ndarray]
STUFF_TEXTURES: dict[str, StuffTexture] = {
    "gradient": lambda y, x, t, n: 0.6 - 1.2 * y / max(y.shape[-2], 1) + 0.1 * n,
    "blades": lambda y, x, t, n: np.clip(1.6 * n, -1.0, 1.0),
    "ripples": lambda y, x, t, n: np.sin(1.1 * y + 0.6 * np.sin(0.25 * x) - 0.9 * t),
    "speckle": lambda y, x, t, n: np.where(n > 1.2, -1.0, 0.15 * n),
}
STUFF_CLASSES: dict[str, tuple[tuple[int, int, int], str]] = {
    "sky": ((140, 195, 240), "gradient"),
    "grass": ((60, 150, 50), "blades"),
    "water": ((25, 85, 140), "ripples"),
    "sand": ((215, 190, 140), "speckle"),
}


@dataclass(frozen=True)
class SyntheticConfig:
    image_size: int | tuple[int, int] = 64  # square side or (height, width)
    num_frames: int = 5
    min_objects: int = 1
    max_objects: int = 6  # objects drawn per clip (those never visible are dropped)
    thing_classes: tuple[str, ...] = ("circle", "square", "triangle")
    stuff_classes: tuple[str, ...] = ("sky", "grass", "water")
    min_stuff_regions: int = 1  # distinct stuff classes per clip, bands from top to bottom
    object_radius: tuple[float, float] = (0.10, 0.22)  # fraction of the shorter image side
    speed: tuple[float, float] = (0.02, 0.08)  # pixels per frame, fraction of the shorter side
    spin: float = 0.15  # max rotation per frame (radians)
    bounce: bool = False  # centres reflect off the image borders, so long clips keep their objects
    texture_contrast: float = 0.25  # texture brightness amplitude (fraction of the colour)
    noise_std: float = 4.0  # per-pixel sensor noise (0-255 scale)
    seed: int = 0

    def __post_init__(self) -> None:
        unknown = [c for c in self.thing_classes if c not in THING_CLASSES]
        unknown += [c for c in self.stuff_classes if c not in STUFF_CLASSES]
        if unknown:
            raise ValueError(
                f"unknown synthetic classes {unknown}; things: {sorted(THING_CLASSES)}, stuff: {sorted(STUFF_CLASSES)}"
            )
        if not self.thing_classes or not self.stuff_classes:
            raise ValueError("SyntheticConfig needs at least one thing class and one stuff class")
        if not 0 <= self.min_objects <= self.max_objects:
            raise ValueError(f"need 0 <= min_objects <= max_objects, got {self.min_objects}, {self.max_objects}")
        if not 1 <= self.min_stuff_regions <= len(self.stuff_classes):
            raise ValueError(
                f"min_stuff_regions must be in [1, {len(self.stuff_classes)}], got {self.min_stuff_regions}"
            )
        if self.num_frames < 1 or min(self.image_hw) < 8:
            raise ValueError(f"need num_frames >= 1 and images of at least 8x8, got {self.num_frames}, {self.image_hw}")

    @property
    def image_hw(self) -> tuple[int, int]:
        size = self.image_size
        return (int(size[0]), int(size[1])) if isinstance(size, (tuple, list)) else (int(size), int(size))

    @property
    def id2label(self) -> dict[int, str]:
        return dict(enumerate(self.thing_classes + self.stuff_classes))

    @property
    def thing_ids(self) -> tuple[int, ...]:
        return tuple(range(len(self.thing_classes)))

    @property
    def stuff_ids(self) -> tuple[int, ...]:
        return tuple(range(len(self.thing_classes), self.num_classes))

    @property
    def num_classes(self) -> int:
        return len(self.thing_classes) + len(self.stuff_classes)


DEFAULT_CONFIG = SyntheticConfig()
ID2LABEL = DEFAULT_CONFIG.id2label
THING_IDS = DEFAULT_CONFIG.thing_ids
STUFF_IDS = DEFAULT_CONFIG.stuff_ids


def clip_rng(cfg: SyntheticConfig, split: str, index: int) -> np.random.Generator:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {sorted(SPLITS)}")
    if index < 0:
        raise ValueError(f"clip index must be >= 0, got {index}")
    return np.random.default_rng([cfg.seed, SPLITS[split], index])


def _stuff_layer(cfg: SyntheticConfig, rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray, tt: np.ndarray):
    """Stuff class map [H, W], base colour [T, H, W, 3] and texture pattern [T, H, W]."""
    h, w = cfg.image_hw
    n_regions = int(rng.integers(cfg.min_stuff_regions, len(cfg.stuff_classes) + 1))
    chosen = rng.choice(len(cfg.stuff_classes), size=n_regions, replace=False)
    borders = np.sort(rng.uniform(0.2, 0.8, n_regions - 1)) * h  # [S-1]
    amp = rng.uniform(0.0, 0.06 * h, (n_regions - 1, 1))
    freq = rng.uniform(0.5, 2.5, (n_regions - 1, 1)) * 2 * np.pi / w
    phase = rng.uniform(0, 2 * np.pi, (n_regions - 1, 1))
    border_y = borders[:, None] + amp * np.sin(freq * xx[0][None] + phase)  # [S-1, W]
    band = (yy[None] >= border_y[:, None, :]).sum(axis=0)  # [H, W] in [0, S)
    stuff_class = np.asarray(chosen, np.int32)[band] + len(cfg.thing_classes)  # [H, W]
    static_noise = rng.standard_normal((h, w)).astype(np.float32)
    palette = np.asarray([STUFF_CLASSES[cfg.stuff_classes[k]][0] for k in chosen], np.float32)  # [S, 3]
    base = np.repeat(palette[band][None], cfg.num_frames, axis=0)  # [T, H, W, 3]
    pattern = np.zeros((cfg.num_frames, h, w), np.float32)
    for region, k in enumerate(chosen):
        texture = STUFF_TEXTURES[STUFF_CLASSES[cfg.stuff_classes[k]][1]](yy, xx, tt, static_noise)
        pattern = np.where(band == region, texture, pattern)  # [T, H, W]
    return stuff_class, base, pattern


def _reflect(position: np.ndarray, size: int) -> np.ndarray:
    """Straight-line positions [T] folded back into [0, size], as if bouncing off both borders."""
    phase = np.mod(position, 2.0 * size)
    return size - np.abs(phase - size)


def _extent(centre: np.ndarray, reach: float, size: int) -> slice:
    """Pixel range [lo, hi) covering centre +- reach over all frames, clipped to the image."""
    lo = max(int(np.floor(centre.min() - reach)), 0)
    hi = min(int(np.ceil(centre.max() + reach)) + 1, size)
    return slice(lo, max(lo, hi))


def make_clip(cfg: SyntheticConfig, split: str, index: int) -> Clip:
    """Clip `index` of `split`: frames, tracked instance masks, semantic and panoptic maps."""
    rng = clip_rng(cfg, split, index)
    h, w = cfg.image_hw
    t_count = cfg.num_frames
    side = float(min(h, w))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)  # [H, W]
    tt = np.arange(t_count, dtype=np.float32)[:, None, None]  # [T, 1, 1]
    stuff_class, base, pattern = _stuff_layer(cfg, rng, yy, xx, tt)

    n = int(rng.integers(cfg.min_objects, cfg.max_objects + 1))
    classes = rng.integers(0, len(cfg.thing_classes), n).astype(np.int32)  # [N]
    radius = rng.uniform(*cfg.object_radius, n) * side
    mid = (t_count - 1) / 2.0  # objects are anywhere in the image at mid-clip
    centre = np.stack([rng.uniform(0, h, n), rng.uniform(0, w, n)], axis=1)  # [N, 2] (y, x)
    direction = rng.uniform(0, 2 * np.pi, n)
    speed = rng.uniform(*cfg.speed, n) * side
    velocity = np.stack([np.sin(direction), np.cos(direction)], axis=1) * speed[:, None]  # [N, 2]
    angle0 = rng.uniform(0, 2 * np.pi, n)
    spin = rng.uniform(-cfg.spin, cfg.spin, n)
    depth_order = rng.permutation(n)  # drawn back to front
    colour_jitter = rng.uniform(0.85, 1.1, (n, 3)).astype(np.float32)

    owner = np.full((t_count, h, w), -1, np.int64)  # [T, H, W] index of the visible object
    times = np.arange(t_count) - mid
    for i in depth_order:
        shape, colour, texture = THING_CLASSES[cfg.thing_classes[classes[i]]]
        cy = centre[i, 0] + velocity[i, 0] * times  # [T]
        cx = centre[i, 1] + velocity[i, 1] * times
        if cfg.bounce:
            cy, cx = _reflect(cy, h), _reflect(cx, w)
        reach = SHAPE_REACH * radius[i]
        ys, xs = _extent(cy, reach, h), _extent(cx, reach, w)  # box covering the object in every frame
        if ys.start == ys.stop or xs.start == xs.stop:
            continue
        angle = angle0[i] + spin[i] * times
        dy = (yy[None, ys, xs] - cy[:, None, None].astype(np.float32)) / np.float32(radius[i])  # [T, h', w']
        dx = (xx[None, ys, xs] - cx[:, None, None].astype(np.float32)) / np.float32(radius[i])
        cos = np.cos(angle).astype(np.float32)[:, None, None]
        sin = np.sin(angle).astype(np.float32)[:, None, None]
        u, v = dx * cos + dy * sin, -dx * sin + dy * cos
        inside = SHAPES[shape](u, v)  # [T, h', w']
        owner[:, ys, xs][inside] = i
        base[:, ys, xs][inside] = np.asarray(colour, np.float32) * colour_jitter[i]
        pattern[:, ys, xs][inside] = THING_TEXTURES[texture](u[inside], v[inside])

    masks_all = owner[:, None] == np.arange(n)[None, :, None, None]  # [T, N, H, W]
    kept = np.flatnonzero(masks_all.any(axis=(0, 2, 3)))  # objects visible in some frame
    masks = masks_all[:, kept]  # [T, M, H, W]
    track_ids = np.arange(1, len(kept) + 1, dtype=np.int32)
    track_of = np.zeros(n + 1, np.int32)  # object index (last = background) -> track id
    track_of[kept] = track_ids
    class_of = np.append(classes, -1)
    semantic = np.where(owner >= 0, class_of[owner], stuff_class[None]).astype(np.int32)  # [T, H, W]
    panoptic = (semantic * LABEL_DIVISOR + track_of[owner]).astype(np.int32)

    colours = base * (1.0 + np.float32(cfg.texture_contrast) * pattern[..., None]) + 0.5  # [T, H, W, 3]
    if cfg.noise_std > 0:  # uniform noise of standard deviation noise_std (cheaper than Gaussian)
        noise = np.frombuffer(rng.bytes(colours.size), np.uint8).reshape(colours.shape)
        colours += (noise.astype(np.float32) - 127.5) * np.float32(cfg.noise_std * np.sqrt(12.0) / 256.0)
    frames = np.clip(colours, 0, 255, out=colours).astype(np.uint8)
    return Clip(
        frames=frames,
        masks=masks,
        classes=classes[kept],
        track_ids=track_ids,
        semantic=semantic,
        panoptic=panoptic,
        frame_indices=np.arange(t_count, dtype=np.int32),
        video_id=int(index),
    )


def iterate_batches(
    cfg: SyntheticConfig,
    split: str,
    batch_size: int,
    *,
    start: int = 0,
    num_batches: int | None = None,
    max_instances: int | None = None,
    augment: AugmentConfig | None = None,
) -> Iterator[Batch]:
    """Batches of clips start, start+1, ... of `split` (forever when num_batches is None).

    Augmentation (when given) is seeded by the clip's own stream, so batches stay reproducible.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    slots = cfg.max_objects if max_instances is None else max_instances
    step = 0
    while num_batches is None or step < num_batches:
        clips = []
        for j in range(batch_size):
            index = start + step * batch_size + j
            clip = make_clip(cfg, split, index)
            if augment is not None:
                aug_rng = np.random.default_rng([cfg.seed, SPLITS[split], index, 1])
                clip = augment_clip(clip, augment, aug_rng)
            clips.append(clip)
        yield collate(clips, num_labels=cfg.num_classes, max_instances=slots)
        step += 1
