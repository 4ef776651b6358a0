"""Strict, table-driven conversion between a flat source state dict and our parameter tree.

A `Rule` ties source keys (torch layout) to parameter slots (JAX layout) through a `Layout`: a pair
of pure functions that turn the source arrays into the parameter arrays and back. Each checkpoint
format module (`hf_videomt.py`, `hf_eomt.py`, `original_dinov2.py`, ...) builds its rules from
`Entry` lines (the lines several formats share are in `shared_rules.py`); this module only runs
them, strictly: every source key consumed, every parameter filled, every shape checked. Anything
else raises one `ConversionError` that names all offending keys. It knows neither the model nor the
config: the expected parameter shapes come in as an argument (`shapes.expected_shapes`).

Letters: D hidden, F MLP hidden, C channels, O/I output/input channels, p patch, a/b kernel taps,
N positions, L stacked layers.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from flax import traverse_util

Arrays = Sequence[np.ndarray]
Slot = tuple[str, "int | None"]  # (parameter path "a/b/c", index on the stacked layer axis or None)
SEP = "/"
MAX_LISTED = 20  # keys named per problem in an error message


class ConversionError(ValueError):
    """A checkpoint does not fit the model: names the keys that are missing, extra or misshapen."""


@dataclasses.dataclass(frozen=True)
class Layout:
    """How source arrays (torch layout) become parameter arrays (JAX layout), and back."""

    name: str
    to_jax: Callable[[Arrays], list[np.ndarray]]
    to_source: Callable[[Arrays], list[np.ndarray]]


def _halves(x: np.ndarray, axis: int) -> list[np.ndarray]:
    if x.shape[axis] % 2:
        raise ValueError(f"cannot split axis {axis} of shape {x.shape} into two halves")
    return list(np.split(x, 2, axis=axis))


def _thirds(x: np.ndarray, axis: int) -> list[np.ndarray]:
    if x.shape[axis] % 3:
        raise ValueError(f"cannot split axis {axis} of shape {x.shape} into q, k, v")
    return list(np.split(x, 3, axis=axis))


IDENTITY = Layout("identity", lambda xs: [xs[0]], lambda ys: [ys[0]])
# torch Linear weight [O, I] <-> Dense kernel [I, O]
LINEAR = Layout("linear", lambda xs: [xs[0].T], lambda ys: [ys[0].T])
# torch Conv2d weight [O, I, p, p] <-> Conv kernel [p, p, I, O] (also depthwise: I = 1)
CONV = Layout("conv", lambda xs: [xs[0].transpose(2, 3, 1, 0)], lambda ys: [ys[0].transpose(3, 2, 0, 1)])
# torch ConvTranspose2d weight [I, O, a, b] <-> our kernel [a, b, I, O] (the permutation is its own inverse)
DECONV = Layout("deconv", lambda xs: [xs[0].transpose(2, 3, 0, 1)], lambda ys: [ys[0].transpose(2, 3, 0, 1)])
# q, k, v Linear weights 3 x [D, D] <-> one fused kernel [D, 3D] (q | k | v along the output axis)
FUSE_QKV_KERNEL = Layout(
    "fuse_qkv_kernel",
    lambda xs: [np.concatenate([x.T for x in xs], axis=1)],
    lambda ys: [y.T for y in _thirds(ys[0], axis=1)],
)
# q, k, v biases 3 x [D] <-> one fused bias [3D]
FUSE_QKV_BIAS = Layout("fuse_qkv_bias", lambda xs: [np.concatenate(list(xs))], lambda ys: _thirds(ys[0], axis=0))
# packed gate|up Linear weight [2F, D] (timm SwiGLUPacked: first half gate) <-> gate, up kernels [D, F]
SPLIT_GATE_UP_KERNEL = Layout(
    "split_gate_up_kernel",
    lambda xs: [h.T for h in _halves(xs[0], axis=0)],
    lambda ys: [np.concatenate([y.T for y in ys], axis=0)],
)
SPLIT_GATE_UP_BIAS = Layout(
    "split_gate_up_bias", lambda xs: _halves(xs[0], axis=0), lambda ys: [np.concatenate(list(ys))]
)
# timm pos_embed [1, N, D] <-> [N, D]
SQUEEZE_BATCH = Layout("squeeze_batch", lambda xs: [xs[0][0]], lambda ys: [ys[0][None]])


@dataclasses.dataclass(frozen=True)
class Rule:
    sources: tuple[str, ...]
    targets: tuple[Slot, ...]
    layout: Layout


@dataclasses.dataclass(frozen=True)
class Entry:
    """One table line: parameter sub-paths <- source sub-keys, through a layout."""

    ours: tuple[str, ...]
    theirs: tuple[str, ...]
    layout: Layout = IDENTITY

    def rule(self, source_prefix: str, target_prefix: str, index: int | None = None) -> Rule:
        return Rule(
            tuple(source_prefix + s for s in self.theirs),
            tuple((target_prefix + o, index) for o in self.ours),
            self.layout,
        )


def one(ours: str, theirs: str, layout: Layout = IDENTITY) -> Entry:
    return Entry((ours,), (theirs,), layout)


def dense(ours: str, theirs: str) -> list[Entry]:
    """A torch Linear `theirs.{weight,bias}` <-> a Dense `ours/{kernel,bias}`."""
    return [one(f"{ours}/kernel", f"{theirs}.weight", LINEAR), one(f"{ours}/bias", f"{theirs}.bias")]


def norm(ours: str, theirs: str) -> list[Entry]:
    """A torch LayerNorm `theirs.{weight,bias}` <-> a flax LayerNorm `ours/{scale,bias}`."""
    return [one(f"{ours}/scale", f"{theirs}.weight"), one(f"{ours}/bias", f"{theirs}.bias")]


Table = tuple[Entry, ...]


def rules_under(
    entries: Iterable[Entry], source_prefix: str, target_prefix: str = "", index: int | None = None
) -> list[Rule]:
    """`entries` as rules: source keys below `source_prefix`, parameters below `target_prefix` (at `index`
    of the stacked layer axis, when given)."""
    return [e.rule(source_prefix, target_prefix, index) for e in entries]


def flatten(params: Mapping) -> dict[str, Any]:
    """{"a/b/c": leaf} of a nested parameter tree (numpy or jax leaves)."""
    return traverse_util.flatten_dict(dict(params), sep=SEP)


def listing(keys: Iterable[str]) -> str:
    keys = sorted(keys)
    shown = ", ".join(keys[:MAX_LISTED])
    return shown + (f", ... ({len(keys) - MAX_LISTED} more)" if len(keys) > MAX_LISTED else "")


def source_to_params(
    state_dict: Mapping[str, np.ndarray],
    rules: Sequence[Rule],
    expected: Mapping[str, tuple[int, ...]],
    *,
    source: str,
    buffers: Mapping[str, tuple[int, ...]] | None = None,
    defaults: Mapping[str, Callable[[tuple[int, ...]], np.ndarray]] | None = None,
) -> tuple[dict, list[str]]:
    """Fill every parameter in `expected` from `state_dict` through `rules`, strictly.

    `buffers`: source keys that are not parameters (consumed, shape-checked, values unused).
    `defaults`: parameters the source format does not have, filled by a function of their shape.
    Returns the nested float32 parameter tree and the buffer keys that were found.
    """
    buffers, defaults = buffers or {}, defaults or {}
    stacked_paths = {slot[0] for r in rules for slot in r.targets if slot[1] is not None}
    out: dict[str, np.ndarray] = {p: np.zeros(s, np.float32) for p, s in expected.items() if p in stacked_paths}
    filled: dict[str, np.ndarray] = {p: np.zeros(expected[p][0], bool) for p in out}
    missing: list[str] = []
    bad_shape: list[str] = []
    unknown_targets: list[str] = []
    consumed: set[str] = set()
    for rule in rules:
        absent = [k for k in rule.sources if k not in state_dict]
        if absent:
            missing += absent
            continue
        consumed.update(rule.sources)
        arrays = [np.asarray(state_dict[k]) for k in rule.sources]
        try:
            values = rule.layout.to_jax(arrays)
        except ValueError as e:
            bad_shape.append(f"{'+'.join(rule.sources)} {[a.shape for a in arrays]} ({rule.layout.name}: {e})")
            continue
        for (path, index), value in zip(rule.targets, values):
            if path not in expected:
                unknown_targets.append(path)
                continue
            want = expected[path] if index is None else expected[path][1:]
            if tuple(value.shape) != want:
                bad_shape.append(f"{'+'.join(rule.sources)} gives {tuple(value.shape)} for {path}, expected {want}")
                continue
            if index is None:
                out[path] = np.array(value, dtype=np.float32)
            else:
                out[path][index] = value
                filled[path][index] = True
    for key, shape in buffers.items():
        if key in state_dict:
            consumed.add(key)
            if tuple(np.shape(state_dict[key])) != tuple(shape):
                bad_shape.append(f"{key} has shape {tuple(np.shape(state_dict[key]))}, expected {tuple(shape)}")
    for path, make in defaults.items():
        if path not in out and path in expected:
            out[path] = np.asarray(make(expected[path]), np.float32)
    unfilled = [p for p in expected if p not in out]
    unfilled += [f"{p}[layer {i}]" for p, done in filled.items() for i in np.flatnonzero(~done)]
    unused = set(state_dict) - consumed
    problems = [
        (f"source keys the table expects but {source} lacks", missing),
        (f"source keys in {source} that no rule consumes", unused),
        ("shape mismatches", bad_shape),
        ("parameters left unfilled", unfilled),
        ("table targets that the model does not have (a table bug)", unknown_targets),
    ]
    message = "; ".join(f"{what} ({len(keys)}): {listing(keys)}" for what, keys in problems if keys)
    if message:
        raise ConversionError(f"cannot convert {source}: {message}")
    return traverse_util.unflatten_dict(out, sep=SEP), sorted(k for k in buffers if k in state_dict)


def params_to_source(params: Mapping, rules: Sequence[Rule], *, what: str) -> dict[str, np.ndarray]:
    """The inverse of `source_to_params`: every parameter must be used by some rule."""
    flat = {k: np.asarray(v, dtype=np.float32) for k, v in flatten(params).items()}
    used: set[str] = set()
    out: dict[str, np.ndarray] = {}
    missing: list[str] = []
    for rule in rules:
        absent = [p for p, _ in rule.targets if p not in flat]
        if absent:
            missing += absent
            continue
        used.update(p for p, _ in rule.targets)
        values = [flat[p] if i is None else flat[p][i] for p, i in rule.targets]
        for key, value in zip(rule.sources, rule.layout.to_source(values)):
            out[key] = np.ascontiguousarray(value, dtype=np.float32)
    unused = set(flat) - used
    if missing or unused:
        raise ConversionError(
            f"cannot write {what}: parameters the table needs but the tree lacks: {listing(missing) or 'none'}; "
            f"parameters no rule writes: {listing(unused) or 'none'}"
        )
    return out
