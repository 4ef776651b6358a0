"""Run a `videomt-jax export-serving` directory with nothing but `jax` and `numpy`.

This module is the whole runtime of a serving artifact: it imports jax, numpy and the standard
library only (no flax, no model code, nothing else from videomt_jax), and it holds the file
format's names, which the exporter imports from here.

    serving = load_serving("videomt-serving")
    state = serving.init_state(batch_size=1)
    for chunk in chunks:                 # [B, T, H, W, 3]: T = serving.frames frames per call
        outputs, state = serving.step(chunk, state)
        outputs["class_logits"]          # [B, T, Q, K+1] (fused artifacts: "segmentation" [B, T, Hf, Wf], ...)

A directory holds `serving.json` (config, options, input/output shapes and dtypes, versions),
`weights.npz` (float32 parameters, passed to the program as an argument) and one
`step.<platform>.jaxexport` per platform it was lowered for; the one for JAX's backend runs.

Letters: B videos, T frames per call, H/W model input, Hf/Wf frame size of fused artifacts,
Q queries, D hidden, K+1 classes, h/w mask grid.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np

FORMAT = "videomt-jax-serving"  # serving.json "format" of a jax.export directory
ONNX_FORMAT = "videomt-jax-onnx"  # the JSON beside an ONNX export
FORMAT_VERSION = 1
META_NAME = "serving.json"
WEIGHTS_NAME = "weights.npz"
ARTIFACT_SUFFIX = ".jaxexport"
BATCH_DIM = "B"  # name of the symbolic batch dimension in recorded shapes
KEY_SEP = "."  # weights.npz keys: parameter paths joined with this
PIXEL_AXES = "(B, T, H, W, C)"
FRAMES_AXIS = 1  # T in the first input's shape
# JAX backend -> jax.export platform names that run on it
PLATFORMS_OF_BACKEND: dict[str, tuple[str, ...]] = {"cpu": ("cpu",), "gpu": ("cuda", "rocm"), "tpu": ("tpu",)}


KERNEL_NAME = "kernel"  # matmul weights: passed in the compute dtype, everything else float32


def artifact_name(platform: str) -> str:
    return f"step.{platform}{ARTIFACT_SUFFIX}"


def weight_dtype(key: str, kernel_dtype: str) -> Any:
    """The dtype a weights.npz entry is passed to the program in."""
    return jax.numpy.dtype(kernel_dtype) if key.rsplit(KEY_SEP, 1)[-1] == KERNEL_NAME else np.dtype(np.float32)


class ServingState(NamedTuple):
    """What one call hands the next: the queries that left the last block on the latest frame, and
    whether a frame was seen (frame 0 starts from the learned queries)."""

    queries: Any  # [B, Q, D] float32
    started: Any  # [B] bool


def read_meta(path: str | Path, expected_format: str = FORMAT) -> dict[str, Any]:
    """The JSON description of an export (a directory's serving.json, or a .json file)."""
    path = Path(path)
    meta_path = path / META_NAME if path.is_dir() else path
    if not meta_path.is_file():
        raise FileNotFoundError(f"{meta_path} not found: {path} is not a `videomt-jax export-serving` directory")
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{meta_path} is not valid JSON: {e}") from e
    if meta.get("format") != expected_format:
        raise ValueError(f"{meta_path} has format {meta.get('format')!r}, expected {expected_format!r}")
    if int(meta.get("format_version", 0)) > FORMAT_VERSION:
        raise ValueError(
            f"{meta_path} has format_version {meta['format_version']}; this loader reads up to {FORMAT_VERSION}"
        )
    return meta


def _shape_text(shape: list) -> str:
    return "(" + ", ".join(str(d) for d in shape) + ")"


def check_inputs(specs: Sequence[Mapping[str, Any]], values: Sequence[Any]) -> int:
    """Check arrays against the recorded input specs (shape with "B" free, exact dtype); returns B.

    The first input is the pixels (or uint8 frames) [B, T, H, W, C]; a wrong T gets its own message.
    """
    batch: dict[str, int] = {}
    for spec, value in zip(specs, values):
        name, shape, dtype = spec["name"], list(spec["shape"]), np.dtype(spec["dtype"])
        got_shape = tuple(getattr(value, "shape", np.shape(value)))
        got_dtype = np.dtype(getattr(value, "dtype", np.asarray(value).dtype))
        axes = f" {PIXEL_AXES}" if spec is specs[0] else ""
        if len(got_shape) != len(shape):
            raise ValueError(f"{name} must be {len(shape)}-D{axes} {_shape_text(shape)}, got shape {got_shape}")
        if spec is specs[0] and got_shape[FRAMES_AXIS] != shape[FRAMES_AXIS]:
            raise ValueError(
                f"{name} holds {got_shape[FRAMES_AXIS]} frames; this artifact takes exactly T={shape[FRAMES_AXIS]} "
                f"frames per call {_shape_text(shape)}: feed the video in chunks of {shape[FRAMES_AXIS]} "
                "(or export again with another --frames)"
            )
        for want, got in zip(shape, got_shape):
            if isinstance(want, str):
                batch.setdefault(want, got)
                if batch[want] != got or got < 1:
                    raise ValueError(
                        f"{name} has {want}={got} but an earlier input has {want}={batch[want]}; "
                        f"inputs {', '.join(s['name'] for s in specs)} must agree on the batch size "
                        "(and it must be >= 1)"
                    )
            elif want != got:
                raise ValueError(
                    f"{name} has shape {got_shape}, expected {_shape_text(shape)} ({BATCH_DIM} = any batch size)"
                )
        if got_dtype != dtype:
            raise TypeError(f"{name} must have dtype {dtype}, got {got_dtype}")
    fixed = [d for s in specs for d in s["shape"][:1] if isinstance(d, int)]
    return batch.get(BATCH_DIM, fixed[0] if fixed else 1)


class ServingModel:
    """A loaded artifact: `step(chunk, state) -> (outputs, state)`, jitted once per input shape."""

    def __init__(self, meta: dict[str, Any], exported: Any, weights: dict[str, Any], platform: str) -> None:
        self.meta = meta
        self.platform = platform
        self.exported = exported
        self.device = jax.devices()[0]
        self._weights = jax.device_put(weights, self.device)
        # the XLA options videomt-jax's own jit uses on this platform (same numbers as the model)
        self.compiler_options: dict[str, Any] = dict(meta["artifacts"][platform].get("compiler_options") or {})
        self._call = jax.jit(exported.call, compiler_options=self.compiler_options or None)
        self.input_specs: list[dict[str, Any]] = list(meta["inputs"])
        self.output_names: tuple[str, ...] = tuple(o["name"] for o in meta["outputs"])

    @property
    def frames(self) -> int:
        """T: frames each call takes."""
        return int(self.meta["frames"])

    @property
    def batch(self) -> int | None:
        """Videos per call, or None when the artifact takes any batch size."""
        return self.meta["batch"]

    @property
    def task(self) -> str | None:
        """None: pixels in, logits out; else the fused post-processing (uint8 frames in, maps out)."""
        return self.meta["task"]

    def init_state(self, batch_size: int | None = None) -> ServingState:
        """The state before the first frame of `batch_size` videos (default: the artifact's batch)."""
        batch_size = batch_size or self.batch or 1
        if self.batch is not None and batch_size != self.batch:
            raise ValueError(f"this artifact takes batch size {self.batch}, got {batch_size}")
        queries = self.input_specs[1]
        shape = (batch_size, *queries["shape"][1:])
        return ServingState(np.zeros(shape, np.dtype(queries["dtype"])), np.zeros((batch_size,), bool))

    def step(self, chunk: Any, state: ServingState | None = None) -> tuple[dict[str, jax.Array], ServingState]:
        """chunk [B, T, H, W, 3] (pixels float32, or uint8 frames for a fused artifact) -> (outputs, next state).

        `state` None starts new videos. Raises ValueError / TypeError for a wrong shape, frame
        count, batch size or dtype, naming the input and what the artifact expects.
        """
        chunk = chunk if hasattr(chunk, "shape") else np.asarray(chunk)
        if state is None:
            state = self.init_state(check_inputs(self.input_specs[:1], [chunk]))
        state = ServingState(*state)
        check_inputs(self.input_specs, [chunk, state.queries, state.started])
        # every argument committed to one device, so host and device inputs share one executable
        args = jax.device_put((chunk, state.queries, state.started), self.device)
        try:
            out = self._call(self._weights, *args)
        except jax.errors.JaxRuntimeError:
            if not self.compiler_options:
                raise
            # a jaxlib that does not know a recorded option: compile without them, once
            self.compiler_options = {}
            self._call = jax.jit(self.exported.call)
            out = self._call(self._weights, *args)
        return out, ServingState(out["queries"], out["started"])

    __call__ = step


def _pick_platform(meta: Mapping[str, Any], directory: Path) -> str:
    backend = jax.default_backend()
    lowered = tuple(meta["artifacts"])
    for platform in PLATFORMS_OF_BACKEND.get(backend, (backend,)):
        if platform in lowered:
            return platform
    raise ValueError(
        f"{directory} was lowered for {', '.join(lowered)}; JAX runs on {backend} here. "
        f"Export again with --platforms including {PLATFORMS_OF_BACKEND.get(backend, (backend,))[0]}"
    )


def load_weights(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found (the weights of this artifact are passed as an argument)")
    with np.load(path, allow_pickle=False) as data:
        return {key: data[key] for key in data.files}


def load_serving(path: str | Path) -> ServingModel:
    """Load a directory written by `export_serving` / `videomt-jax export-serving`."""
    directory = Path(path)
    meta = read_meta(directory)
    platform = _pick_platform(meta, directory)
    artifact = directory / meta["artifacts"][platform]["file"]
    if not artifact.is_file():
        raise FileNotFoundError(f"{artifact} not found (listed in {directory / META_NAME})")
    exported = jax.export.deserialize(bytearray(artifact.read_bytes()))
    weights = load_weights(directory / meta["weights"]["file"])
    expected = set(meta["weights"]["keys"])
    if set(weights) != expected:
        missing, extra = sorted(expected - set(weights)), sorted(set(weights) - expected)
        raise ValueError(
            f"{directory / meta['weights']['file']} does not match the artifact: "
            f"missing {missing[:5]}, unexpected {extra[:5]}"
        )
    kernel_dtype = meta["weights"].get("kernel_dtype", "float32")
    weights = {k: np.asarray(v).astype(weight_dtype(k, kernel_dtype)) for k, v in weights.items()}
    return ServingModel(meta, exported, weights, platform)
