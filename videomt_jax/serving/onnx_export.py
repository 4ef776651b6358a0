"""`export_onnx`: the VidEoMT streaming step as an ONNX model that ONNX Runtime runs.

    inputs:  pixels [B, T, H, W, 3] float32 (normalised), queries [B, Q, D] float32, started [B] bool
    outputs: class_logits [B, T, Q, K+1], mask_logits [B, T, Q, h, w], queries_out [B, Q, D], started_out [B]

Feed `queries_out` / `started_out` back as `queries` / `started` for the next chunk (zeros and
False before a video's first frame). The graph is traced from `plain_forward` (the linen model's
`nn.scan` does not convert) by `jax2onnx`, with the float32 weights as initializers; frames per
call are fixed, the batch may be symbolic. A JSON beside the model (same name, .json) records
the config, the shapes and dtypes, and the versions. Needs the `onnx` extra (jax2onnx,
onnxruntime).

Letters: B videos, T frames per call, H/W model input, Q queries, D hidden, K+1 classes, h/w mask grid.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from videomt_jax.config import VideomtConfig
from videomt_jax.processing import VideoProcessor
from videomt_jax.serving import load as fmt
from videomt_jax.serving.export import (
    ServingOptions,
    check_options,
    flatten_params,
    pixel_record,
    serving_processor,
    unflatten_params,
)
from videomt_jax.serving.plain_forward import check_supported, params_at_size, streaming_step
from videomt_jax.utils.io import atomic_write_bytes, atomic_write_text, check_new_file, output_lock, signals_deferred

INPUT_NAMES = ("pixels", "queries", "started")
OUTPUT_NAMES = ("class_logits", "mask_logits", "queries_out", "started_out")
OPSET = 21  # ONNX Runtime 1.17+ runs it
MIN_OPSET = 17  # the first with LayerNormalization, which the graph uses
EXTRA = "onnx"  # pip install videomt-jax[onnx]


def require_exporter() -> Any:
    """The jax2onnx module, or an ImportError naming the extra to install."""
    try:
        import jax2onnx
    except ImportError as e:
        raise ImportError(
            f"ONNX export needs jax2onnx and onnxruntime: pip install 'videomt-jax[{EXTRA}]' ({e})"
        ) from e
    return jax2onnx


@contextlib.contextmanager
def _quiet_serializer() -> Iterator[None]:
    """onnx_ir logs one warning per untyped shape constant while serialising; they are harmless."""
    logger = logging.getLogger("onnx_ir")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def onnx_options(
    config: VideomtConfig, frames: int, input_size: int | Sequence[int] | None, batch: int | None
) -> ServingOptions:
    check_supported(config.replace(dtype="float32"))
    return check_options(config, ("cpu",), "float32", frames, input_size, batch, None, None, None)


def build_onnx(config: VideomtConfig, params: Any, options: ServingOptions, opset: int = OPSET) -> Any:
    """The ONNX ModelProto of the streaming step (float32)."""
    to_onnx = require_exporter().to_onnx
    config = config.replace(dtype="float32")
    # float32 numpy weights (they become initializers), position embeddings at the input's grid
    weights = jax.tree_util.tree_map(np.asarray, unflatten_params(flatten_params(params)))
    step = streaming_step(
        config, jax.tree_util.tree_map(np.asarray, params_at_size(config, weights, options.input_size))
    )
    b = fmt.BATCH_DIM if options.batch is None else options.batch
    h, w = options.input_size
    inputs = [
        jax.ShapeDtypeStruct((b, options.frames, h, w, config.num_channels), jnp.float32),
        jax.ShapeDtypeStruct((b, config.num_queries, config.hidden_size), jnp.float32),
        jax.ShapeDtypeStruct((b,), jnp.bool_),
    ]
    with _quiet_serializer():
        return to_onnx(
            step,
            inputs=inputs,
            input_names=list(INPUT_NAMES),
            output_names=list(OUTPUT_NAMES),
            model_name="videomt_streaming_step",
            opset=opset,
        )


def _value_spec(value: Any, batch: int | None) -> dict[str, Any]:
    """An ONNX graph input/output -> {"name", "shape" (ints, "B" for the batch), "dtype"}."""
    from onnx import helper

    tensor = value.type.tensor_type
    shape = [d.dim_value if d.HasField("dim_value") else fmt.BATCH_DIM for d in tensor.shape.dim]
    if batch is None and shape:
        shape[0] = fmt.BATCH_DIM  # jax2onnx names some derived batch dims itself; it is B everywhere
    return {"name": value.name, "shape": shape, "dtype": str(helper.tensor_dtype_to_np_dtype(tensor.elem_type))}


def check_opset(opset: Any) -> int:
    """`opset` if the installed onnx knows it and the graph can use it, else one ValueError."""
    from onnx.defs import onnx_opset_version

    newest = onnx_opset_version()
    if not isinstance(opset, int) or isinstance(opset, bool) or not MIN_OPSET <= opset <= newest:
        raise ValueError(
            f"opset must be an int in [{MIN_OPSET}, {newest}] ({MIN_OPSET}: LayerNormalization; {newest}: the "
            f"newest the installed onnx knows), got {opset!r}"
        )
    return opset


def check_targets(path: str | Path, *, overwrite: bool, flag: str = "overwrite=True") -> tuple[Path, Path]:
    """(model path, JSON path), refused before any work: the model must end in .onnx; an existing
    file needs `overwrite`, and an existing JSON beside it is replaced only when it is the
    description an export-onnx wrote of this model."""
    path = Path(path)
    meta_path = path.with_suffix(".json")
    if path.suffix != ".onnx":
        raise ValueError(f"the ONNX model path must end in .onnx, got {path}")
    for target in (path, meta_path):
        check_new_file(target, overwrite=overwrite, flag=flag)
    if meta_path.exists():
        try:
            owner = fmt.read_meta(meta_path, fmt.ONNX_FORMAT).get("file")
        except ValueError as e:
            raise FileExistsError(f"{meta_path} is not one export-onnx wrote ({e}); not replacing it") from None
        if owner != path.name:
            raise FileExistsError(f"{meta_path} describes {owner!r}, not {path.name!r}; not replacing it")
    return path, meta_path


def export_onnx(
    path: str | Path,
    config: VideomtConfig,
    params: Any,
    *,
    frames: int = 1,
    input_size: int | Sequence[int] | None = None,
    batch: int | None = 1,
    opset: int = OPSET,
    processor: VideoProcessor | None = None,
    overwrite: bool = False,
    overwrite_flag: str = "overwrite=True",
) -> Path:
    """Write the streaming step as an ONNX model at `path` (and `path` with suffix .json).

    frames: T per call; input_size: model input (H, W) (default config.image_size); batch: videos
    per call, None for a symbolic batch dimension; processor: the model's pixel normalisation,
    recorded in the JSON (default the config's). DINOv2 backbones only; computes in float32.
    Everything is checked before the work (`check_targets`, `check_opset`, the options) and the
    output is claimed for the run (`output_lock`).
    """
    with output_lock(path):
        path, meta_path = check_targets(path, overwrite=overwrite, flag=overwrite_flag)
        options = onnx_options(config, frames, input_size, batch)
        opset = check_opset(opset)
        model = build_onnx(config, params, options, opset)
        import videomt_jax

        meta = {
            "format": fmt.ONNX_FORMAT,
            "format_version": fmt.FORMAT_VERSION,
            "file": path.name,
            "videomt_jax_version": videomt_jax.__version__,
            "jax_version": jax.__version__,
            "jax2onnx_version": metadata.version("jax2onnx"),
            "opset": opset,
            "config": config.replace(dtype="float32").to_dict(),
            "dtype": "float32",
            "frames": options.frames,
            "batch": options.batch,
            "input_size": list(options.input_size),
            "pixels": pixel_record(serving_processor(config, options, processor)),
            "weights": {"mode": "embedded", "reason": "ONNX initializers: one self-contained file for ONNX Runtime"},
            "inputs": [_value_spec(v, options.batch) for v in model.graph.input],
            "outputs": [_value_spec(v, options.batch) for v in model.graph.output],
        }
        data = model.SerializeToString()
        meta_text = json.dumps(meta, indent=2) + "\n"
        with signals_deferred():  # the pair lands whole: a stop signal waits until both are written
            atomic_write_bytes(path, data, overwrite=overwrite)
            atomic_write_text(meta_path, meta_text, overwrite=overwrite)
    return path
