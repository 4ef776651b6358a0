"""Point sampling for the set-prediction loss (PointRend style, as Mask2Former / EoMT / VidEoMT).

Points are normalised coordinates in [0, 1] x [0, 1], last axis ordered (x, y) = (width, height),
the convention of Hugging Face's `sample_point` (which feeds `2 * p - 1` to torch's `grid_sample`).
Sampling is bilinear with `align_corners=False` and zero padding, so a mask of any resolution can
be sampled at the same points: the predicted masks (1/4 of the input) and the targets (input size).

Letters: B batch, T frames, Q queries, M target slots per frame, h/w a map's height/width,
P points, C candidate points (oversampled), R random points, K+1 classes.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from videomt_jax.config import VideomtConfig


def _corner_weights(coords: jax.Array, height: int, width: int) -> tuple[jax.Array, jax.Array]:
    """Neighbour indices and bilinear weights of torch `grid_sample(align_corners=False)`.

    coords: [..., P, 2] in [0, 1]. Returns (flat index [..., P, 4], weight [..., P, 4]) over the
    north-west, north-east, south-west, south-east neighbours, the weight zeroed where the
    neighbour falls outside the map (zero padding).
    """
    coords = coords.astype(jnp.float32)
    grid = 2.0 * coords - 1.0  # what HF hands grid_sample
    x = ((grid[..., 0] + 1.0) * width - 1.0) / 2.0  # torch's unnormalise, align_corners=False
    y = ((grid[..., 1] + 1.0) * height - 1.0) / 2.0
    x0 = jnp.floor(x)
    y0 = jnp.floor(y)
    x1 = x0 + 1.0
    y1 = y0 + 1.0
    cx = jnp.stack([x0, x1, x0, x1], axis=-1)  # [..., P, 4]
    cy = jnp.stack([y0, y0, y1, y1], axis=-1)
    weight = jnp.stack([(x1 - x) * (y1 - y), (x - x0) * (y1 - y), (x1 - x) * (y - y0), (x - x0) * (y - y0)], axis=-1)
    inside = (cx >= 0) & (cx <= width - 1) & (cy >= 0) & (cy <= height - 1)
    ix = jnp.clip(cx, 0, width - 1).astype(jnp.int32)
    iy = jnp.clip(cy, 0, height - 1).astype(jnp.int32)
    return iy * width + ix, jnp.where(inside, weight, 0.0)


def sample_points(features: jax.Array, coords: jax.Array) -> jax.Array:
    """Bilinear values of `features` at `coords`, equal to torch `grid_sample(align_corners=False)`.

    features: [*lead, h, w] (any real or bool dtype; the result is float32)
    coords:   [P, 2]          -> the same points for every map, result [*lead, P]
              [*lead, P, 2]   -> points per map,                result [*lead, P]
    """
    if features.ndim < 2:
        raise ValueError(f"features must be [..., h, w], got shape {features.shape}")
    if coords.ndim < 2 or coords.shape[-1] != 2:
        raise ValueError(f"coords must be [..., P, 2], got shape {coords.shape}")
    lead = features.shape[:-2]
    shared = coords.ndim == 2
    if not shared and coords.shape[:-2] != lead:
        raise ValueError(f"coords {coords.shape} must be [P, 2] or share the leading axes of features {features.shape}")
    height, width = features.shape[-2:]
    num_points = coords.shape[-2]
    flat = features.reshape(*lead, height * width)  # [*lead, h*w]
    index, weight = _corner_weights(coords, height, width)  # [..., P, 4]
    index = index.reshape(*index.shape[:-2], num_points * 4)  # one gather for the four neighbours
    values = jnp.take(flat, index, axis=-1) if shared else jnp.take_along_axis(flat, index, axis=-1)  # [*lead, 4P]
    values = values.reshape(*lead, num_points, 4).astype(jnp.float32)
    # torch's order of summation: nw + ne + sw + se
    return ((values[..., 0] * weight[..., 0] + values[..., 1] * weight[..., 1]) + values[..., 2] * weight[..., 2]) + (
        values[..., 3] * weight[..., 3]
    )


# ------------------------------------------------------------------ point draws


def num_uncertain_points(config: VideomtConfig) -> int:
    """Points chosen by uncertainty per matched mask (HF: int(importance_sample_ratio * num_points))."""
    return int(config.importance_sample_ratio * config.train_num_points)


def num_candidate_points(config: VideomtConfig) -> int:
    """Oversampled candidates per matched mask (HF: int(num_points * oversample_ratio))."""
    return int(config.train_num_points * config.oversample_ratio)


@struct.dataclass
class PointDraws:
    """The uniform draws one prediction's loss uses; inject them to reproduce a reference run.

    match:      shared points of the matching cost, one set per frame        # [B, T, P, 2]
    candidates: oversampled candidates for uncertainty, per target slot      # [B, T, M, C, 2]
    extra:      the random (non-importance) points, per target slot          # [B, T, M, R, 2]
    Slot m's candidates/extra are used for the pair (matched query, target m); Hugging Face draws
    them per matched pair in (frame, query index) order, so a test re-orders its draws into slots.
    """

    match: jax.Array
    candidates: jax.Array
    extra: jax.Array


def _draw_shapes(batch: int, frames: int, targets: int, config: VideomtConfig) -> dict[str, tuple[int, ...]]:
    num_points = config.train_num_points
    return {
        "match": (batch, frames, num_points, 2),
        "candidates": (batch, frames, targets, num_candidate_points(config), 2),
        "extra": (batch, frames, targets, num_points - num_uncertain_points(config), 2),
    }


def draw_points(
    key: jax.Array, batch: int, frames: int, targets: int, config: VideomtConfig, count: int = 1
) -> list[PointDraws]:
    """`count` independent sets of uniform draws in [0, 1) (what `torch.rand` gives HF's matcher and loss).

    One `jax.random.uniform` call covers them all (each call is a separately compiled generator).
    """
    shapes = _draw_shapes(batch, frames, targets, config)
    sizes = [math.prod(shape) for shape in shapes.values()]
    flat = jax.random.uniform(key, (count, sum(sizes)), jnp.float32)
    offsets = np.cumsum([0] + sizes)
    parts = [(item, offsets[i], offsets[i + 1]) for i, item in enumerate(shapes.items())]
    return [
        PointDraws(**{name: row[start:stop].reshape(shape) for (name, shape), start, stop in parts}) for row in flat
    ]


def within_content(draws: PointDraws, content: jax.Array | None) -> PointDraws:
    """Draws in [0, 1) of each clip's own frame -> canvas coordinates; content [B, 2] = (height, width)
    fraction of the canvas (None: the clip is the canvas). A point then samples the same pixel of the
    clip as on its own padded frame, as the authors sample theirs."""
    if content is None:
        return draws
    xy = content[:, ::-1].astype(jnp.float32)  # [B, 2] as (x, y)
    return PointDraws(
        match=draws.match * xy[:, None, None],
        candidates=draws.candidates * xy[:, None, None, None],
        extra=draws.extra * xy[:, None, None, None],
    )


def zero_outside(mask_logits: jax.Array, content: jax.Array | None) -> jax.Array:
    """mask_logits [B, T, Q, h, w] with 0 outside each clip's own frame (content [B, 2] fractions of the
    canvas): a point near the region's border then interpolates with zeros, as `sample_points` does past
    the border of a clip on its own frame."""
    if content is None:
        return mask_logits
    h, w = mask_logits.shape[-2:]
    rows = jnp.arange(h)[None] < jnp.round(content[:, :1] * h)  # [B, h]
    cols = jnp.arange(w)[None] < jnp.round(content[:, 1:] * w)  # [B, w]
    region = rows[:, :, None] & cols[:, None, :]  # [B, h, w]
    return jnp.where(region[:, None, None], mask_logits, 0.0)


def check_draws(draws: PointDraws, batch: int, frames: int, targets: int, config: VideomtConfig) -> None:
    """Shapes the config asks for; raises ValueError naming the field otherwise."""
    for name, shape in _draw_shapes(batch, frames, targets, config).items():
        got = tuple(getattr(draws, name).shape)
        if got != shape:
            raise ValueError(f"PointDraws.{name} has shape {got}, expected {shape}")


def uncertain_points(logits: jax.Array, candidates: jax.Array, extra: jax.Array, num_uncertain: int) -> jax.Array:
    """Points where the mask logit is closest to 0, plus random ones (HF `sample_points_using_uncertainty`).

    logits:     mask logits to rank candidates with (no gradient flows)   # [*lead, h, w]
    candidates: uniform candidates                                        # [*lead, C, 2]
    extra:      uniform points appended after the chosen ones             # [*lead, R, 2]
    Returns [*lead, num_uncertain + R, 2]: the `num_uncertain` candidates of highest uncertainty
    -|logit| (the ranking of torch.topk; ties aside, order does not change the losses), then `extra`.
    """
    logits = jax.lax.stop_gradient(logits)
    chosen = candidates[..., :0, :]
    if num_uncertain > 0:
        uncertainty = -jnp.abs(sample_points(logits, candidates))  # [*lead, C]
        _, index = jax.lax.top_k(uncertainty, num_uncertain)  # [*lead, k]
        chosen = jnp.take_along_axis(candidates, index[..., None], axis=-2)  # [*lead, k, 2]
    return jnp.concatenate([chosen, extra.astype(chosen.dtype)], axis=-2)
