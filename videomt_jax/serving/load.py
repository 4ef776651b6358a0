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
Nothing in the directory is trusted: serving.json is checked key by key (`read_meta`), the files
it names must lie inside the directory (`member_path`) and match the sha256 it records
(`read_member`), and the weights must be a numeric .npz of finite numbers (`load_weights`).

Letters: B videos, T frames per call, H/W model input, Hf/Wf frame size of fused artifacts,
Q queries, D hidden, K+1 classes, h/w mask grid.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from collections.abc import Callable, Mapping, Sequence
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


HASH_CHUNK = 2**22  # bytes hashed at a time
KERNEL_NAME = "kernel"  # matmul weights: passed in the compute dtype, everything else float32
SHA256_KEY = "sha256"  # serving.json: the checksum of each file it names, written at export, checked at load
INPUT_SPECS_TEXT = "a list of 3 input specs (pixels or frames, queries, started)"


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


def _is_int(v: Any, low: int = 1) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= low


def _is_dtype(v: Any) -> bool:
    if not isinstance(v, str):
        return False
    try:
        jax.numpy.dtype(v)
    except TypeError:
        return False
    return True


def _is_spec(v: Any) -> bool:
    """{"name": str, "shape": [int >= 0 or "B", ...], "dtype": a numpy dtype name}."""
    return (
        isinstance(v, dict)
        and isinstance(v.get("name"), str)
        and isinstance(v.get("shape"), list)
        and all(_is_int(d, 0) or d == BATCH_DIM for d in v["shape"])
        and _is_dtype(v.get("dtype"))
    )


def _is_file_entry(v: Any) -> bool:
    return isinstance(v, dict) and isinstance(v.get("file"), str) and isinstance(v.get(SHA256_KEY, ""), str)


# key -> (test, what it must be): the keys every reader of an export's JSON relies on
META_KEYS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "format_version": (lambda v: _is_int(v), "a positive int"),
    "config": (lambda v: isinstance(v, dict), "an object (the model config)"),
    "frames": (lambda v: _is_int(v), "a positive int (frames per call)"),
    "batch": (lambda v: v is None or _is_int(v), "a positive int or null (any batch size)"),
    "inputs": (lambda v: isinstance(v, list) and len(v) == 3 and all(map(_is_spec, v)), INPUT_SPECS_TEXT),
    "outputs": (lambda v: isinstance(v, list) and bool(v) and all(map(_is_spec, v)), "a list of output specs"),
}
# and those only a jax.export directory's serving.json has
SERVING_KEYS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "task": (lambda v: v is None or isinstance(v, str), "a task name or null"),
    "artifacts": (
        lambda v: (
            isinstance(v, dict)
            and bool(v)
            and all(_is_file_entry(e) and isinstance(e.get("compiler_options", {}), dict) for e in v.values())
        ),
        'an object mapping each platform to {"file": NAME, "compiler_options": {...}, ...}',
    ),
    "weights": (
        lambda v: (
            _is_file_entry(v)
            and isinstance(v.get("keys"), list)
            and all(isinstance(k, str) for k in v["keys"])
            and _is_dtype(v.get("kernel_dtype", "float32"))
        ),
        'an object {"file": NAME, "keys": [parameter names], "kernel_dtype": ...}',
    ),
}


def read_meta(path: str | Path, expected_format: str = FORMAT) -> dict[str, Any]:
    """The JSON description of an export (a directory's serving.json, or a .json file), checked:
    every key a reader relies on is there with the right type, else one ValueError naming the
    file and the key."""
    path = Path(path)
    meta_path = path / META_NAME if path.is_dir() else path
    if not meta_path.is_file():
        raise FileNotFoundError(f"{meta_path} not found: {path} is not a `videomt-jax export-serving` directory")
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{meta_path} is not valid JSON: {e}") from None
    if not isinstance(meta, dict):
        raise ValueError(f"{meta_path} must hold a JSON object, got a {type(meta).__name__}")
    if meta.get("format") != expected_format:
        raise ValueError(f"{meta_path} has format {meta.get('format')!r}, expected {expected_format!r}")
    keys = {**META_KEYS, **(SERVING_KEYS if expected_format == FORMAT else {})}
    for key, (test, what) in keys.items():
        if key not in meta:
            raise ValueError(f"{meta_path} lacks the key {key!r} ({what})")
        if not test(meta[key]):
            raise ValueError(f"{meta_path}: key {key!r} must be {what}, got {str(meta[key])[:120]}")
    if meta["format_version"] > FORMAT_VERSION:
        raise ValueError(
            f"{meta_path} has format_version {meta['format_version']}; this loader reads up to {FORMAT_VERSION}"
        )
    return meta


def member_path(directory: Path, name: str, meta_path: Path, key: str) -> Path:
    """`directory / name` for a file named in serving.json: a plain name that stays inside the
    directory (no folder part, no "..", no absolute path, no link leading out), else ValueError."""
    if not name or Path(name).name != name or name in (".", ".."):
        raise ValueError(f"{meta_path}: key {key!r} names {name!r}; it must be a file name inside {directory}")
    path = directory / name
    if path.resolve().parent != directory.resolve():
        raise ValueError(f"{meta_path}: key {key!r} names {name!r}, which leads outside {directory}")
    return path


def file_sha256(path: Path) -> str:
    """The sha256 of a file (`utils.io.file_sha256` again: this module imports nothing of the package,
    so that it serves alone next to jax and numpy)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def read_member(directory: Path, entry: Mapping[str, Any], meta_path: Path, key: str, what: str) -> Path:
    """The checked path of the file an entry of serving.json names: present, and equal to the
    sha256 recorded at export (exports without one are not checked)."""
    path = member_path(directory, entry["file"], meta_path, key)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found ({what} listed in {meta_path})")
    want = entry.get(SHA256_KEY)
    if want is not None and file_sha256(path) != want:
        raise ValueError(f"{path} does not match the sha256 recorded in {meta_path}: the file changed or is corrupt")
    return path


def _shape_text(shape: list) -> str:
    return "(" + ", ".join(str(d) for d in shape) + ")"


def _batch_note(shape: list) -> str:
    """What the first axis of a recorded shape allows."""
    if BATCH_DIM in shape:
        return f" ({BATCH_DIM} = any batch size)"
    return f" (this artifact's batch size is fixed at {shape[0]}; export with --batch any for any)" if shape else ""


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
                raise ValueError(f"{name} has shape {got_shape}, expected {_shape_text(shape)}{_batch_note(shape)}")
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
    """The arrays of a weights.npz (a zip of .npy files, no pickles); finite numbers only."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found (the weights of this artifact are passed as an argument)")
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{path} is not a .npz archive (numpy's zip of arrays): the file is corrupt or another format")
    weights, key = {}, "(index)"
    try:
        with np.load(path, allow_pickle=False) as data:
            for key in data.files:
                weights[key] = data[key]
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, KeyError) as e:
        raise ValueError(f"{path}: cannot read entry {key!r}: {e}") from None
    for key, value in weights.items():
        if value.dtype.kind != "f":
            raise ValueError(f"{path}: parameter {key!r} has dtype {value.dtype}; weights are floating point")
        if not np.isfinite(value).all():
            raise ValueError(f"{path}: parameter {key!r} holds NaN or infinite values; refusing to run them")
    return weights


def deserialize(path: Path) -> Any:
    """The jax.export program in `path`, or one ValueError naming the file."""
    try:
        return jax.export.deserialize(bytearray(path.read_bytes()))
    except Exception as e:  # flatbuffers / MLIR raise struct, Unicode, index... errors on damaged bytes
        raise ValueError(f"{path} is not a readable jax.export artifact ({type(e).__name__}: {e})") from None


def load_serving(path: str | Path) -> ServingModel:
    """Load a directory written by `export_serving` / `videomt-jax export-serving`.

    Every file is taken from the directory itself (names in serving.json cannot lead out of it)
    and checked against the sha256 serving.json records; ValueError / FileNotFoundError name the
    file (and the key) at fault."""
    directory = Path(path)
    meta = read_meta(directory)
    meta_path = directory / META_NAME
    platform = _pick_platform(meta, directory)
    artifact = read_member(directory, meta["artifacts"][platform], meta_path, f"artifacts.{platform}.file", "artifact")
    exported = deserialize(artifact)
    weights_path = read_member(directory, meta["weights"], meta_path, "weights.file", "weights")
    weights = load_weights(weights_path)
    expected = set(meta["weights"]["keys"])
    if set(weights) != expected:
        missing, extra = sorted(expected - set(weights)), sorted(set(weights) - expected)
        raise ValueError(f"{weights_path} does not match the artifact: missing {missing[:5]}, unexpected {extra[:5]}")
    kernel_dtype = meta["weights"].get("kernel_dtype", "float32")
    weights = {k: np.asarray(v).astype(weight_dtype(k, kernel_dtype)) for k, v in weights.items()}
    return ServingModel(meta, exported, weights, platform)
