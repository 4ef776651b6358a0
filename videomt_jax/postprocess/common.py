"""Shared pieces of post-processing: input checks, threshold rounding, per-frame mapping, counting.

Letters: B batch, T frames, F = B*T frames, Q queries, K+1 classes (last = no object),
h/w mask grid, H/W target size.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from videomt_jax.config import VideomtConfig
from videomt_jax.modeling.outputs import check_logits as check_logit_shapes
from videomt_jax.ops.resize import as_size, linear_taps, resize_bilinear

# Input pixels per mask-logit pixel of the default model (patch 16, 2 upscale blocks): used only for
# outputs that do not carry their own (`VideomtOutput.mask_stride`, set by the model).
DEFAULT_MASK_STRIDE: int = VideomtConfig().mask_stride
# Frames post-processed per step of `lax.map`: 1 keeps one frame's (Q, H, W) masks in memory.
DEFAULT_FRAMES_PER_STEP: int = 1
# Bytes of [rows, W, C] float32 temporaries one piece of a frame may hold: a frame whose resized
# masks (H x W x Q, or K class scores) are larger is post-processed in pieces of rows (`piece_rows`),
# with the same results. 200 queries on a 4000x3000 frame: 40 rows a piece instead of 3000.
PIECE_BYTES: int = 256 * 2**20
PIECE_TEMPORARIES: int = 6  # [rows, W, C] float32 arrays alive at once in a piece (taps, sigmoid, products)


def check_logits(out: Any) -> tuple[jax.Array, jax.Array]:
    """(class_logits [B,T,Q,K+1], mask_logits [B,T,Q,h,w]) as float32, with their shapes checked."""
    for name in ("class_logits", "mask_logits"):
        if getattr(out, name, None) is None:
            raise TypeError(
                f"post-processing needs an output with `{name}` (e.g. VideomtOutput), got {type(out).__name__}"
            )
    class_logits = jnp.asarray(out.class_logits)
    mask_logits = jnp.asarray(out.mask_logits)
    check_logit_shapes(class_logits, mask_logits)
    return class_logits.astype(jnp.float32), mask_logits.astype(jnp.float32)


def resolve_stride(out: Any, mask_stride: int | None) -> int:
    """The mask stride of `out`: the one it carries (set by the model), else `mask_stride`, else the
    default model's. A `mask_stride` that contradicts the carried one is an error."""
    carried = getattr(out, "mask_stride", None)
    stride = mask_stride if mask_stride is not None else carried if carried is not None else DEFAULT_MASK_STRIDE
    if not isinstance(stride, (int, np.integer)) or isinstance(stride, bool) or stride < 1:
        raise ValueError(f"mask_stride must be a positive int, got {stride!r}")
    if carried is not None and stride != carried:
        raise ValueError(
            f"mask_stride={stride} contradicts the output's own mask_stride={carried} (set by the model "
            "that made it); leave mask_stride out"
        )
    return int(stride)


class Inputs(NamedTuple):
    """What every public post-processing function starts from (see `prepare`)."""

    class_logits: jax.Array  # [B, T, Q, K+1] float32
    mask_logits: jax.Array  # [B, T, Q, h, w] float32
    static: dict[str, Any]  # target, valid, stride, frames_per_step: static arguments of the jitted shells


def prepare(
    out: Any,
    target_size: Sequence[int],
    valid_size: Sequence[int] | None,
    mask_stride: int | None,
    frames_per_step: int,
) -> Inputs:
    """The input checks shared by the six public post-processing functions."""
    class_logits, mask_logits = check_logits(out)
    static = {
        "target": as_size(target_size, "target_size"),
        "valid": None if valid_size is None else as_size(valid_size, "valid_size"),
        "stride": resolve_stride(out, mask_stride),
        "frames_per_step": check_frames_per_step(frames_per_step),
    }
    return Inputs(class_logits, mask_logits, static)


def check_frames_per_step(frames_per_step: int) -> int:
    if not isinstance(frames_per_step, (int, np.integer)) or frames_per_step < 1:
        raise ValueError(f"frames_per_step must be a positive int, got {frames_per_step!r}")
    return int(frames_per_step)


def static_labels(labels: Sequence[int] | None, name: str) -> tuple[int, ...]:
    """A hashable, sorted tuple of label ids (static under jit); None or empty -> ()."""
    if labels is None:
        return ()
    try:
        return tuple(sorted({int(v) for v in labels}))
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a collection of int label ids, got {labels!r}") from None


def _f32_rounded(value: Any, direction: float) -> Any:
    if isinstance(value, jax.core.Tracer):  # traced threshold: plain float32 comparison
        return jnp.asarray(value, jnp.float32)
    exact = float(value)
    rounded = np.float32(exact)
    if (direction < 0 and float(rounded) > exact) or (direction > 0 and float(rounded) < exact):
        rounded = np.nextafter(rounded, np.float32(direction * np.inf))
    return jnp.asarray(rounded, jnp.float32)


def f32_floor(value: Any) -> Any:
    """Largest float32 <= value: for a float32 x, `x > f32_floor(t)` equals the float64 test `x > t`
    (Hugging Face compares `tensor.item()`, a float32 widened to a Python float, with the threshold)."""
    return _f32_rounded(value, -1.0)


def f32_ceil(value: Any) -> Any:
    """Smallest float32 >= value: for a float32 x, `x >= f32_ceil(t)` equals the float64 test `x >= t`."""
    return _f32_rounded(value, 1.0)


def f32(value: Any) -> jax.Array:
    """Threshold for a tensor-vs-scalar comparison (PyTorch rounds the scalar to float32)."""
    return jnp.asarray(value, jnp.float32)


def map_frames(fn: Callable, xs: Any, frames_per_step: int) -> Any:
    """Apply `fn` to each frame of the pytree `xs` (leading axis F), `frames_per_step` at a time."""
    return jax.lax.map(fn, xs, batch_size=None if frames_per_step == 1 else frames_per_step)


def flatten_frames(x: jax.Array) -> jax.Array:
    """[B, T, ...] -> [B*T, ...] (batch-major: frame t of video b is row b*T + t)."""
    return x.reshape((x.shape[0] * x.shape[1],) + x.shape[2:])


def frames_last(mask_logits: jax.Array) -> jax.Array:
    """[B, T, Q, h, w] -> [B*T, h, w, Q]: frames batch-major, queries channels-last."""
    return flatten_frames(mask_logits).transpose(0, 2, 3, 1)


def count_per_query(index: jax.Array, num_queries: int, weights: jax.Array | None = None) -> jax.Array:
    """Pixels per query id: index [...] int32 in [0, Q) -> [Q] int32 (optionally counting only `weights`)."""
    ones = jnp.ones(index.shape, jnp.int32) if weights is None else weights.astype(jnp.int32)
    return jax.ops.segment_sum(ones.reshape(-1), index.reshape(-1), num_segments=num_queries)


def first_in_group(valid: jax.Array, group: jax.Array, groupable: jax.Array) -> jax.Array:
    """For each valid, groupable item q: the first valid item q' <= q with the same group (else q).

    valid, groupable: [Q] bool; group: [Q] int. Returns [Q] int32 indices."""
    q = valid.shape[0]
    order = jnp.arange(q)
    same = (
        valid[None, :] & groupable[None, :] & (group[None, :] == group[:, None]) & (order[None, :] <= order[:, None])
    )  # [Q, Q'] earlier members of q's group
    first = jnp.argmax(same, axis=1).astype(jnp.int32)
    return jnp.where(valid & groupable & same.any(axis=1), first, order.astype(jnp.int32))


def number_segments(valid: jax.Array, merge_into: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Segment ids in query order. valid [Q] bool; merge_into [Q] int32 (q itself unless q joins an
    earlier query's segment). Returns (new [Q] bool: q opens a segment, segment [Q] int32: id or -1)."""
    order = jnp.arange(valid.shape[0], dtype=jnp.int32)
    new = valid & (merge_into == order)
    opened = jnp.cumsum(new.astype(jnp.int32)) - 1  # [Q] id of the segment opened at q
    segment = jnp.where(valid, opened[merge_into], -1)
    return new, segment.astype(jnp.int32)


def scatter_slots(new: jax.Array, segment: jax.Array, values: jax.Array, fill: Any) -> jax.Array:
    """Per-query values -> per-segment slots [Q]: slot s gets the value of the query opening segment s."""
    q = new.shape[0]
    slot = jnp.where(new, segment, q)  # out of range -> dropped
    base = jnp.full((q,) + values.shape[1:], fill, values.dtype)
    return base.at[slot].set(values, mode="drop")


# ------------------------------------------------------------------------------------ pieces of rows
def piece_rows(height: int, width: int, channels: int, rows_per_step: int | None = None) -> int:
    """Rows of the target post-processed at a time: `rows_per_step`, else as many as PIECE_BYTES allows."""
    if rows_per_step is not None:
        if not isinstance(rows_per_step, (int, np.integer)) or isinstance(rows_per_step, bool) or rows_per_step < 1:
            raise ValueError(f"rows_per_step must be a positive int, got {rows_per_step!r}")
        return min(int(rows_per_step), height)
    per_row = width * channels * 4 * PIECE_TEMPORARIES
    return max(1, min(height, PIECE_BYTES // max(per_row, 1)))


def piece_bytes(height: int, width: int, channels: int) -> int:
    """Bytes of the temporaries of one piece of a frame (H, W) with `channels` masks / class scores."""
    return piece_rows(height, width, channels) * width * channels * 4 * PIECE_TEMPORARIES


def _source_window(index: np.ndarray, height: int, rows: int) -> int:
    """Most source rows any piece of `rows` target rows reads (taps rise with the target row)."""
    starts = np.arange(0, height, rows)
    ends = np.minimum(starts + rows, height) - 1
    return int((index[ends, -1] - index[starts, 0]).max()) + 1


def resized_rows(x: jax.Array, target: tuple[int, int], start: Any, rows: int) -> jax.Array:
    """Rows [start, start + rows) of `resize_bilinear(x, target)`: x [h, w, C] -> [rows, W, C].

    `start` is a multiple of `rows` (traced or not); rows past the target's end repeat its last row
    (callers drop them). As `resize_bilinear`: the width pass of the source rows the piece reads
    (a window of them), then the height taps, with the same operations, so a frame put together
    from pieces equals the whole-frame resize bit for bit (one piece: the window is all of x).
    """
    height, width = target
    y = jnp.minimum(start + jnp.arange(rows), height - 1)  # [rows]
    if x.shape[0] == height:  # no height pass in resize_bilinear
        return resize_bilinear(jnp.take(x, y, axis=0), (rows, width))
    index, weights = linear_taps(x.shape[0], height)  # [H, K] each
    window = _source_window(index, height, rows)
    low = jnp.minimum(jnp.asarray(index[:, 0])[y[0]], x.shape[0] - window)  # the window fits in x
    source = resize_bilinear(jax.lax.dynamic_slice_in_dim(x, low, window, axis=0), (window, width))  # [R, W, C]
    taps, tap_weights = jnp.asarray(index)[y] - low, jnp.asarray(weights)[y]  # [rows, K]
    total = jnp.take(source, taps[:, 0], axis=0) * tap_weights[:, 0].reshape(rows, 1, 1)
    for k in range(1, index.shape[1]):  # first tap first, as resize_bilinear
        total = total + jnp.take(source, taps[:, k], axis=0) * tap_weights[:, k].reshape(rows, 1, 1)
    return total


def tree_sum(x: jax.Array, axis: int) -> jax.Array:
    """Sum along `axis` in a fixed pairwise order (zero-padded to a power of two, halved step by step).

    Element-wise additions only, so the result does not depend on how XLA tiles a reduction for a
    given shape: sums of a frame's pieces equal those of the whole frame bit for bit."""
    x = jnp.moveaxis(x, axis, 0)
    size = 1 << max(x.shape[0] - 1, 0).bit_length()
    x = jnp.pad(x, [(0, size - x.shape[0])] + [(0, 0)] * (x.ndim - 1))
    while x.shape[0] > 1:
        x = x.reshape((x.shape[0] // 2, 2) + x.shape[1:])
        x = x[:, 0] + x[:, 1]
    return x[0]


def map_rows(fn: Callable[[Any, jax.Array], Any], height: int, rows: int) -> Any:
    """`fn(start, valid)` on every piece of `rows` rows of a `height`-row target, pieces stacked:
    each leaf [rows, ...] (per-row values) becomes [height, ...], any other leaf [n, ...] becomes
    [pieces * n, ...] (per-piece values). valid: [rows] bool, the piece's rows inside the target.
    One piece: a direct call (no loop)."""
    if rows >= height:
        return fn(0, jnp.ones((height,), bool))
    pieces = -(-height // rows)

    def piece(start: jax.Array) -> Any:
        return fn(start, start + jnp.arange(rows) < height)

    stacked = jax.lax.map(piece, jnp.arange(pieces, dtype=jnp.int32) * rows)

    def joined(x: jax.Array) -> jax.Array:
        flat = x.reshape((-1,) + x.shape[2:])
        return flat[:height] if x.shape[1] == rows else flat

    return jax.tree.map(joined, stacked)
