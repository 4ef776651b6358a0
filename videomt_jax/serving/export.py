"""`export_serving`: the streaming step as serialised `jax.export` artifacts, one per platform.

The step (state = propagated queries [B, Q, D] + started [B]):

    (pixels [B, T, H, W, 3] float32, queries, started) -> class_logits [B, T, Q, K+1],
        mask_logits [B, T, Q, h, w], queries, started

or, with `task` set, the jitted pre-processing and per-frame post-processing fused in:

    (frames [B, T, Hf, Wf, 3] uint8, queries, started) -> segmentation [B, T, Hf, Wf] int32
        (+ label_id, score, query, valid, fused, query_segment [B, T, Q] for instance/panoptic),
        queries, started

Weights are an argument of the program, stored once beside it as float32 `weights.npz`
(`WEIGHTS_REASON` says why). Each platform gets its own artifact, lowered with the attention path
that platform can lower here (`PLATFORM_ATTENTION`), since cuDNN attention only lowers on a
machine that has a GPU. `serving.json` records the config, the options, the pixel normalisation
(`pixel_record`), every input and output (name, shape with "B" for a symbolic batch, dtype), the
sha256 of every file (checked by the loader) and the versions. Image models (EoMT) are exported
frame by frame behind the same signature (`step_function`). Options and the output are checked
before any work (`check_call_options`, `check_options`, `export_serving`).

Letters: B videos, T frames per call, H/W model input, Hf/Wf frame size (fused), Q queries,
D hidden, K+1 classes, h/w mask grid.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from videomt_jax.config import DTYPES, IMAGE_MODEL_TYPES, VideomtConfig
from videomt_jax.modeling.family import model_for
from videomt_jax.modeling.outputs import StreamState
from videomt_jax.modeling.xla_options import OPTIONS as XLA_OPTIONS
from videomt_jax.postprocess import post_process_instance, post_process_panoptic, post_process_semantic
from videomt_jax.processing import VideoProcessor, default_processor
from videomt_jax.serving import load as fmt
from videomt_jax.utils.io import (
    atomic_directory,
    atomic_write_bytes,
    atomic_write_text,
    check_replaceable,
    output_lock,
)

PLATFORMS: tuple[str, ...] = ("cpu", "cuda", "tpu")
# Attention path per platform when the config says "auto" (as the model's own choice on that
# backend, except cuDNN: it needs a GPU at lowering time, so "cuda" gets einsum unless the
# exporting machine has one and the compute dtype is 16-bit).
PLATFORM_ATTENTION: dict[str, str] = {"cpu": "einsum_map", "cuda": "einsum", "tpu": "einsum"}
SYMBOLIC_BATCH_ATTENTION = "einsum"  # einsum_map sizes its frame groups from a concrete batch
TASKS: dict[str, Callable[..., Any]] = {
    "semantic": post_process_semantic,
    "instance": post_process_instance,
    "panoptic": post_process_panoptic,
}
WEIGHTS_REASON = (
    "passed as an argument: the program stays small (embedded, ViT-L's 1.2 GB of constants would "
    "approach the 2 GB limit of the serialised module and slow every compile), one artifact serves "
    "any fine-tune of the same shape, and the float32 weights are stored once for all platforms"
)
STATE_NAMES = ("queries", "started")
MAX_FRAMES = 4096  # frames per call
MAX_TOKENS = 2**16  # patches per model input frame (4096 x 4096 pixels at patch 16): attention is N^2


def _unit(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and 0.0 <= value <= 1.0


def _label_ids(value: Any) -> bool:
    return isinstance(value, (list, tuple)) and all(isinstance(v, int) and not isinstance(v, bool) for v in value)


# post-processing option -> (test, what it must be); a task accepts those its function takes
TASK_OPTIONS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "threshold": (_unit, "a score in [0, 1]"),
    "mask_threshold": (_unit, "a probability in [0, 1]"),
    "overlap_mask_area_threshold": (_unit, "a fraction in [0, 1]"),
    "label_ids_to_fuse": (_label_ids, "a list of label ids"),
}


@dataclasses.dataclass(frozen=True)
class ServingOptions:
    """What one export fixes. `batch` None = symbolic batch dimension (any B >= 1)."""

    platforms: tuple[str, ...]
    dtype: str
    frames: int
    input_size: tuple[int, int]
    batch: int | None
    task: str | None
    frame_size: tuple[int, int] | None
    task_options: dict[str, Any]


def _pair(value: int | Sequence[int], name: str) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, (int, np.integer)) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, (int, np.integer)) and v >= 1 for v in pair):
        raise ValueError(f"{name} must be a positive int or a (height, width) pair, got {value!r}")
    return int(pair[0]), int(pair[1])


def check_options(
    config: VideomtConfig,
    platforms: Sequence[str],
    dtype: str | None,
    frames: int,
    input_size: int | Sequence[int] | None,
    batch: int | None,
    task: str | None,
    frame_size: int | Sequence[int] | None,
    task_options: Mapping[str, Any] | None,
) -> ServingOptions:
    """Validate the export options against the config; raises ValueError naming the option."""
    check_call_options(platforms, dtype, frames, batch, task, frame_size, task_options)
    platforms, dtype = tuple(platforms), dtype or config.dtype
    size = config.image_hw if input_size is None else _pair(input_size, "input_size")
    ph, pw = config.patch_hw
    if size[0] % ph or size[1] % pw:
        raise ValueError(f"input_size {size} is not a multiple of the patch size {config.patch_hw}")
    if (size[0] // ph) * (size[1] // pw) > MAX_TOKENS:
        raise ValueError(
            f"input_size {size} gives {(size[0] // ph) * (size[1] // pw)} patches per frame, over the limit of "
            f"{MAX_TOKENS} (attention grows with its square); pass a smaller size"
        )
    fsize = None if task is None else (size if frame_size is None else _pair(frame_size, "frame_size"))
    return ServingOptions(platforms, dtype, int(frames), size, batch, task, fsize, dict(task_options or {}))


def check_call_options(
    platforms: Sequence[str],
    dtype: str | None,
    frames: int,
    batch: int | None,
    task: str | None,
    frame_size: int | Sequence[int] | None,
    task_options: Mapping[str, Any] | None,
) -> None:
    """The checks of `check_options` that need no model config (run before a model is read)."""
    platforms = tuple(platforms)
    unknown = [p for p in platforms if p not in PLATFORMS]
    if unknown or not platforms or len(set(platforms)) != len(platforms):
        raise ValueError(f"platforms must be distinct names from {PLATFORMS}, got {platforms}")
    if dtype is not None and dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    if not isinstance(frames, (int, np.integer)) or not 1 <= frames <= MAX_FRAMES:
        raise ValueError(f"frames (per call) must be an int in [1, {MAX_FRAMES}], got {frames!r}")
    if batch is not None and (not isinstance(batch, (int, np.integer)) or batch < 1):
        raise ValueError(f"batch must be a positive int or None (symbolic), got {batch!r}")
    if task is not None and task not in TASKS:
        raise ValueError(f"task must be one of {sorted(TASKS)} or None, got {task!r}")
    if task is None and (frame_size is not None or task_options):
        raise ValueError("frame_size and task_options fuse pre/post-processing in: they need a task")
    if frame_size is not None:
        fh, fw = _pair(frame_size, "frame_size")
        if fh * fw > VideoProcessor.max_pixels:
            raise ValueError(
                f"frame_size {(fh, fw)} is {fh * fw} pixels per frame, over the limit of {VideoProcessor.max_pixels} "
                "(VideoProcessor.max_pixels)"
            )
    _check_task_options(task, dict(task_options or {}))


def _check_task_options(task: str | None, options: dict[str, Any]) -> None:
    params = () if task is None else tuple(inspect.signature(TASKS[task]).parameters)
    accepted = tuple(name for name in TASK_OPTIONS if name in params)
    unknown_options = sorted(set(options) - set(accepted))
    if unknown_options:
        raise ValueError(
            f"task_options {unknown_options} are not options of {task} post-processing; it takes {accepted}"
        )
    for name, value in options.items():
        test, what = TASK_OPTIONS[name]
        if not test(value):
            raise ValueError(f"task option {name} must be {what}, got {value!r}")


def attention_for(config: VideomtConfig, platform: str, options: ServingOptions) -> str:
    """The attention path lowered for `platform` (an explicit config choice wins)."""
    if config.attention_impl != "auto":
        return config.attention_impl
    if options.batch is None and platform == "cpu":
        return SYMBOLIC_BATCH_ATTENTION
    on_gpu = jax.default_backend() == "gpu" and options.dtype in ("bfloat16", "float16")
    return "cudnn" if platform == "cuda" and on_gpu else PLATFORM_ATTENTION[platform]


def flatten_params(params: Any) -> dict[str, np.ndarray]:
    """{"embeddings.patch_embeddings.kernel": float32 array, ...} (the weights.npz layout)."""
    flat = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        flat[fmt.KEY_SEP.join(str(getattr(k, "key", k)) for k in path)] = np.asarray(leaf, np.float32)
    return flat


def unflatten_params(flat: Mapping[str, Any]) -> dict:
    tree: dict = {}
    for key, value in flat.items():
        *parents, leaf = key.split(fmt.KEY_SEP)
        node = tree
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return tree


def step_function(config: VideomtConfig, options: ServingOptions, processor: VideoProcessor | None = None) -> Callable:
    """(weights, pixels or uint8 frames, queries, started) -> dict of outputs, as exported.

    An image model (EoMT) segments every frame on its own: the state passes through (queries
    unchanged, started set), so one calling loop serves both kinds."""
    model = model_for(config)
    interpolate = options.input_size != config.image_hw

    def forward(weights: Mapping[str, jax.Array], pixels: jax.Array, queries: jax.Array, started: jax.Array) -> Any:
        variables = {"params": unflatten_params(weights)}
        if config.model_type in IMAGE_MODEL_TYPES:  # the state passes through
            out: Any = model.apply(variables, pixels, interpolate_pos_encoding=interpolate)
            return out.replace(state=StreamState(queries, jnp.ones_like(started)))  # flax struct's replace
        return model.apply(variables, pixels, StreamState(queries, started), interpolate_pos_encoding=interpolate)

    def state_out(out: Any) -> dict[str, jax.Array]:
        return {"queries": out.state.queries, "started": out.state.started}

    def step(weights, pixels, queries, started) -> dict[str, jax.Array]:
        out = forward(weights, pixels, queries, started)  # pixels [B, T, H, W, 3] float32
        return {"class_logits": out.class_logits, "mask_logits": out.mask_logits, **state_out(out)}

    if options.task is None:
        return step
    proc = serving_processor(config, options, processor)
    post = TASKS[options.task]

    def fused(weights, frames, queries, started) -> dict[str, jax.Array]:
        # frames [B, T, Hf, Wf, 3] uint8 -> [B, T, H, W, 3] float32, as VideoProcessor
        pixels = proc.process_device(frames, options.input_size, options.input_size)
        out = forward(weights, pixels, queries, started)
        result = post(out, options.frame_size, **options.task_options)  # maps at [Hf, Wf]
        maps = {"segmentation": result} if options.task == "semantic" else dataclasses.asdict(result)
        return {**maps, **state_out(out)}

    return fused


def serving_processor(
    config: VideomtConfig, options: ServingOptions, processor: VideoProcessor | None = None
) -> VideoProcessor:
    """The model's pixel normalisation (default: the config's) at the artifact's input size."""
    return dataclasses.replace(default_processor(config, processor), size=options.input_size)


def pixel_record(processor: VideoProcessor) -> dict[str, Any]:
    """How to turn uint8 RGB frames into the `pixels` input, spelled out for a user without
    videomt-jax: resize to `size` (H, W), then `(x * rescale_factor - mean) / std` per channel;
    `processor` is the same as an HF video_preprocessor_config.json (`VideoProcessor.from_hf_dict`)."""
    return {
        "size": list(processor.size),
        "resize": f"{processor.resample} (antialiased as torch's interpolate, uint8 {processor.uint8_resize})"
        if processor.do_resize
        else None,
        "rescale_factor": processor.rescale_factor if processor.do_rescale else 1.0,
        "mean": list(processor.mean) if processor.do_normalize else [0.0, 0.0, 0.0],
        "std": list(processor.std) if processor.do_normalize else [1.0, 1.0, 1.0],
        "layout": "RGB, channels last",
        "processor": processor.to_hf_dict(),
    }


def input_structs(config: VideomtConfig, options: ServingOptions, weights: Mapping[str, np.ndarray]) -> tuple:
    """Abstract arguments: matmul kernels in the compute dtype (the loader casts them once, as
    `inference_params` does; the model casts them before every matmul anyway, so the numbers are
    the same), everything else float32; the pixels or uint8 frames and the state."""
    b = jax.export.symbolic_shape(fmt.BATCH_DIM)[0] if options.batch is None else options.batch
    h, w = options.frame_size or options.input_size
    pixel_dtype = jnp.uint8 if options.task else jnp.float32
    return (
        {k: jax.ShapeDtypeStruct(v.shape, fmt.weight_dtype(k, options.dtype)) for k, v in weights.items()},
        jax.ShapeDtypeStruct((b, options.frames, h, w, config.num_channels), pixel_dtype),
        jax.ShapeDtypeStruct((b, config.num_queries, config.hidden_size), jnp.float32),
        jax.ShapeDtypeStruct((b,), jnp.bool_),
    )


def _spec(name: str, aval: Any) -> dict[str, Any]:
    shape = [d if isinstance(d, int) else str(d) for d in aval.shape]
    return {"name": name, "shape": shape, "dtype": str(np.dtype(aval.dtype))}


def describe(
    config: VideomtConfig,
    options: ServingOptions,
    args: tuple,
    outputs: Mapping[str, Any],
    processor: VideoProcessor | None = None,
) -> dict[str, Any]:
    """serving.json minus the artifact list: config, options, pixel normalisation, inputs and outputs."""
    import videomt_jax

    first = "frames" if options.task else "pixels"
    return {
        "format": fmt.FORMAT,
        "format_version": fmt.FORMAT_VERSION,
        "videomt_jax_version": videomt_jax.__version__,
        "jax_version": jax.__version__,
        "config": config.to_dict(),
        "dtype": options.dtype,
        "frames": options.frames,
        "batch": options.batch,
        "input_size": list(options.input_size),
        "task": options.task,
        "frame_size": None if options.frame_size is None else list(options.frame_size),
        "task_options": options.task_options,
        "frame_by_frame": config.model_type in IMAGE_MODEL_TYPES,
        # fused artifacts apply it themselves; plain ones take pixels normalised this way
        "pixels": pixel_record(serving_processor(config, options, processor)),
        "inputs": [_spec(n, a) for n, a in zip((first, *STATE_NAMES), args[1:])],
        "outputs": [_spec(n, a) for n, a in outputs.items()],
    }


def export_serving(
    path: str | Path,
    config: VideomtConfig,
    params: Any,
    *,
    platforms: Sequence[str] = PLATFORMS,
    dtype: str | None = None,
    frames: int = 1,
    input_size: int | Sequence[int] | None = None,
    batch: int | None = 1,
    task: str | None = None,
    frame_size: int | Sequence[int] | None = None,
    task_options: Mapping[str, Any] | None = None,
    processor: VideoProcessor | None = None,
    overwrite: bool = False,
    overwrite_flag: str = "overwrite=True",
) -> Path:
    """Write a serving directory at `path` (atomically): serving.json, weights.npz, one
    step.<platform>.jaxexport per platform. Returns `path`.

    dtype: compute dtype (default the config's); frames: T per call; input_size: model input
    (H, W) (default config.image_size; another size resamples the position embeddings);
    batch: videos per call, None for a symbolic batch dimension; task: "semantic" | "instance" |
    "panoptic" fuses the pre-processing (uint8 frames of frame_size, default input_size) and the
    per-frame post-processing (at frame_size; task_options go to the post-processing function);
    processor: the model's pixel normalisation (`processing.load_processor`; default the config's),
    fused in with a task and recorded in serving.json either way. An image model (EoMT) is
    exported frame by frame (`step_function`).

    The options and the output are checked before any work: an existing non-empty `path` needs
    `overwrite` and must be exactly an earlier export (its manifest). The output is claimed
    (`output_lock`) for the whole run; serving.json records the sha256 of every file.
    """
    options = check_options(config, platforms, dtype, frames, input_size, batch, task, frame_size, task_options)
    with output_lock(path):
        check_replaceable(path, overwrite=overwrite, flag=overwrite_flag)
        weights = flatten_params(params)
        bad = next((k for k, v in weights.items() if not np.isfinite(v).all()), None)
        if bad is not None:
            raise ValueError(f"parameter {bad!r} holds NaN or infinite values; not exporting it")
        artifacts: dict[str, bytearray] = {}
        meta: dict[str, Any] = {}
        for platform in options.platforms:
            cfg = config.replace(dtype=options.dtype, attention_impl=attention_for(config, platform, options))
            args = input_structs(cfg, options, weights)
            try:
                exported = jax.export.export(jax.jit(step_function(cfg, options, processor)), platforms=(platform,))(
                    *args
                )
            except RuntimeError as e:  # e.g. cuDNN attention lowered on a machine without a GPU
                raise ValueError(
                    f"lowering for {platform} with attention_impl={cfg.attention_impl!r} failed: {e}"
                ) from e
            artifacts[platform] = exported.serialize()
            outputs = jax.tree_util.tree_unflatten(exported.out_tree, exported.out_avals)
            meta = meta or describe(
                cfg.replace(attention_impl=config.attention_impl), options, args, outputs, processor
            )
            meta.setdefault("artifacts", {})[platform] = {
                "file": fmt.artifact_name(platform),
                "attention_impl": cfg.attention_impl,
                "bytes": len(artifacts[platform]),
                fmt.SHA256_KEY: hashlib.sha256(artifacts[platform]).hexdigest(),
                # what videomt-jax's own jit compiles with on this platform; the loader passes them on
                "compiler_options": XLA_OPTIONS.get(platform, {}),
            }
        meta["weights"] = {
            "file": fmt.WEIGHTS_NAME,
            "mode": "argument",
            "dtype": "float32",
            "kernel_dtype": options.dtype,
            "keys": sorted(weights),
            "num_params": int(sum(v.size for v in weights.values())),
            "reason": WEIGHTS_REASON,
        }
        with atomic_directory(path, overwrite=overwrite, flag=overwrite_flag) as tmp:
            for platform, data in artifacts.items():
                atomic_write_bytes(tmp / fmt.artifact_name(platform), data)
            np.savez(tmp / fmt.WEIGHTS_NAME, allow_pickle=False, **weights)  # numeric arrays; read back without pickle
            meta["weights"][fmt.SHA256_KEY] = fmt.file_sha256(tmp / fmt.WEIGHTS_NAME)
            atomic_write_text(tmp / fmt.META_NAME, json.dumps(meta, indent=2) + "\n")
    return Path(path)
