"""`load_pretrained`, `save_pretrained`, `export_hf`: the public face of the checkpoint formats.

Each format is one module that recognises, reads and (where it can) writes its files:
`native.py` (ours, orbax), `hf_videomt.py`, `hf_eomt.py`, `hf_backbone.py` (refused here: see
`init_from.py`), `original_dinov2.py`, `original_dinov3.py`. This module only dispatches over them
through tables: `PATH_FORMATS` for what a path is (a directory written by `save_pretrained`, a
Hugging Face directory by its config.json model_type, an HF weight file inside one, an authors'
torch file, and finally a Hub repo id, downloaded when the network is there), `AUTHORS_FORMATS` for
what an authors' state dict holds, and `EXPORTERS` for the HF layout of a (model_type, backbone).
Parameters always come back float32; `dtype` sets only the compute dtype in the config.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from videomt_jax.config import VideomtConfig
from videomt_jax.processing import VideoProcessor, default_processor
from videomt_jax.utils.io import recover
from videomt_jax.weights import hf_backbone, hf_eomt, hf_videomt, native, original_dinov2, original_dinov3
from videomt_jax.weights.readers import (
    CONFIG_NAME,
    HF_WEIGHT_FILES,
    CheckpointReadError,
    Loaded,
    LoadReport,
    hf_model_type,
    hf_weight_file,
    is_hf_dir,
    torch_state_dict,
)
from videomt_jax.weights.shapes import check_finite, check_params, param_bytes
from videomt_jax.weights.tables import ConversionError

TORCH_SUFFIXES = (".pth", ".pt", ".ckpt", ".bin")
HUB_PATTERNS = ["config.json", "*.safetensors", "*.json", "*.bin"]
MODEL_NAME = "model_name"  # the override only authors' files take (their config has no head count)


class CheckpointNotFoundError(FileNotFoundError):
    """The path is neither a local checkpoint nor a Hub repo that could be reached."""


@dataclasses.dataclass(frozen=True)
class PathFormat:
    """A checkpoint `load_pretrained` recognises by its path."""

    matches: Callable[[Path], bool]
    load: Callable[[Path, dict[str, Any]], Loaded]
    takes_model_name: bool = False


@dataclasses.dataclass(frozen=True)
class StateDictFormat:
    """An authors' checkpoint, recognised by the keys of its state dict."""

    name: str  # the LoadReport's source
    matches: Callable[[Mapping[str, Any]], bool]
    load: Callable[[Mapping[str, np.ndarray], str, Mapping[str, Any]], tuple[VideomtConfig, dict, list[str]]]


# An authors' state dict: the first that matches loads; none matching, the DINOv2 loader (their main
# layout) names what the file lacks.
AUTHORS_FORMATS: tuple[StateDictFormat, ...] = (
    StateDictFormat(original_dinov3.NAME, original_dinov3.matches, original_dinov3.load_state_dict),
    StateDictFormat(original_dinov2.SEGMENTER_NAME, original_dinov2.is_segmenter, original_dinov2.load_state_dict),
    StateDictFormat(original_dinov2.NAME, original_dinov2.matches, original_dinov2.load_state_dict),
)
AUTHORS_FALLBACK = AUTHORS_FORMATS[-1]


def _is_torch_file(path: Path) -> bool:
    return path.is_file() and path.suffix in TORCH_SUFFIXES


def _load_authors(path: Path, overrides: dict[str, Any]) -> Loaded:
    state_dict = torch_state_dict(path)
    fmt = next((f for f in AUTHORS_FORMATS if f.matches(state_dict)), AUTHORS_FALLBACK)
    config, params, buffers = fmt.load(state_dict, str(path), overrides)
    return config, params, LoadReport(fmt.name, [str(path)], len(state_dict), buffers)


def _is_hf_weight_file(path: Path) -> bool:
    """model.safetensors (or another HF weight file) inside an HF directory: that directory is meant."""
    return path.is_file() and path.name in HF_WEIGHT_FILES and is_hf_dir(path.parent)


def _load_hf_weight_file(path: Path, overrides: dict[str, Any]) -> Loaded:
    chosen = hf_weight_file(path.parent) or path  # `path` is there: some weight file is
    if chosen != path:
        raise CheckpointReadError(
            f"{path.parent} holds {chosen.name} as well as {path.name}, and Hugging Face loads {chosen.name}; "
            f"pass the directory {path.parent} instead"
        )
    return _resolve(path.parent, overrides)


# Local checkpoints, tried in order: the first that matches loads.
PATH_FORMATS: tuple[PathFormat, ...] = (
    PathFormat(native.is_native_dir, native.load),
    PathFormat(hf_videomt.matches, hf_videomt.load),
    PathFormat(hf_eomt.matches, hf_eomt.load),
    PathFormat(hf_backbone.matches, hf_backbone.load),
    PathFormat(_is_hf_weight_file, _load_hf_weight_file, takes_model_name=True),  # before .bin files as authors'
    PathFormat(_is_torch_file, _load_authors, takes_model_name=True),
)
READABLE_HF_TYPES = (hf_videomt.MODEL_TYPE, *hf_eomt.EOMT_TYPES)  # named when a config.json says otherwise
ExportFn = Callable[..., Path]
# export_hf's layout by (model_type, backbone): HF VidEoMT is DINOv2 only; the rest go in EoMT's layout.
EXPORTERS: dict[tuple[str, str], ExportFn] = {
    ("videomt", "dinov2"): hf_videomt.export,
    ("videomt", "dinov3"): hf_eomt.export,
    ("eomt", "dinov2"): hf_eomt.export,
    ("eomt", "dinov3"): hf_eomt.export,
}


def _looks_like_repo_id(text: str) -> bool:
    path = Path(text)
    local_looking = path.is_absolute() or text.startswith(".") or path.suffix in TORCH_SUFFIXES
    return not local_looking and text.count("/") <= 1


def _download(repo_id: str) -> Path:
    """Snapshot of a Hub repo (config + weights only); a clear error when the Hub cannot be reached."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, HFValidationError, OfflineModeIsEnabled

    try:
        return Path(snapshot_download(repo_id, allow_patterns=HUB_PATTERNS))
    except (HFValidationError, HfHubHTTPError, OfflineModeIsEnabled, OSError) as e:
        raise CheckpointNotFoundError(
            f"{repo_id!r} is neither a local file or directory nor reachable on the Hugging Face Hub "
            f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
        ) from e


def _unrecognised(path: Path) -> Exception:
    """The error for a path no format matches."""
    if is_hf_dir(path):
        return ConversionError(
            f"{path / CONFIG_NAME}: model_type {hf_model_type(path)!r} is not a checkpoint load_pretrained reads "
            f"({', '.join(READABLE_HF_TYPES)}; a backbone alone ({', '.join(hf_backbone.BACKBONES)}) initialises "
            "a VidEoMT through init_videomt_from)"
        )
    if path.is_dir():
        contents = sorted(p.name for p in path.iterdir())[:12]
        return CheckpointReadError(
            f"{path} is not a VidEoMT checkpoint directory: no config.json (HF layout) or params/ (videomt-jax); "
            f"it holds {contents}"
        )
    if path.name in HF_WEIGHT_FILES:
        return CheckpointReadError(f"{path} is a Hugging Face weight file without a {CONFIG_NAME} beside it")
    return CheckpointReadError(f"{path} is not a checkpoint file this loader knows (suffixes: {TORCH_SUFFIXES})")


def _resolve(path: Path, overrides: dict[str, Any]) -> Loaded:
    fmt = next((f for f in PATH_FORMATS if f.matches(path)), None)
    if fmt is not None:
        for key in (MODEL_NAME, original_dinov2.DATASET):  # overrides only authors' files take
            if key in overrides and not fmt.takes_model_name:
                raise ValueError(f"{key} only applies to authors' .pth checkpoints; {path} has its own config.json")
        return fmt.load(path, overrides)
    if path.exists():
        raise _unrecognised(path)
    if not _looks_like_repo_id(str(path)):
        raise CheckpointNotFoundError(f"{path} does not exist")
    local = _download(str(path))
    if not is_hf_dir(local):
        raise CheckpointReadError(f"the Hub snapshot at {local} has no config.json; it is not an HF VidEoMT repo")
    return _resolve(local, overrides)


def fresh_query_updater(hidden_size: int, key: jax.Array) -> dict[str, jax.Array]:
    """A new `query_updater` Dense (kernel [D, D], bias [D]), initialised as `VideomtModel` does."""
    kernel = nn.initializers.lecun_normal()(key, (hidden_size, hidden_size), jnp.float32)
    return {"kernel": kernel, "bias": jnp.zeros((hidden_size,), jnp.float32)}


def to_model_type(
    config: VideomtConfig, params: Mapping, model_type: str, key: jax.Array | None = None
) -> tuple[VideomtConfig, dict, list[str]]:
    """(config, params) as `model_type`; returns the parameter paths that start fresh.

    eomt -> videomt: the same backbone, queries and heads, masking off, a fresh `query_updater`
    (seeded by `key`, default key 0). Asking a VidEoMT for `eomt` is refused (that would drop the
    trained propagation silently).
    """
    if model_type == config.model_type:
        return config, dict(params), []
    if (config.model_type, model_type) != ("eomt", "videomt"):
        raise ValueError(f"cannot turn a {config.model_type!r} checkpoint into model_type={model_type!r}")
    new = config.replace(model_type="videomt", attn_mask_probs=None)
    key = jax.random.key(0) if key is None else key
    out = {**params, "query_updater": fresh_query_updater(config.hidden_size, key)}
    check_params(new, out)
    return new, out, ["query_updater/kernel", "query_updater/bias"]


def load_pretrained_with_report(
    path: str | Path, dtype: str | None = None, **config_overrides: Any
) -> tuple[VideomtConfig, dict, LoadReport]:
    """`load_pretrained` plus a `LoadReport` of what was read (format, files, keys, size, time)."""
    start = time.perf_counter()
    overrides = dict(config_overrides)
    if dtype is not None:  # a name, or a numpy / jax dtype; VideomtConfig checks it is supported
        overrides["dtype"] = dtype if isinstance(dtype, str) else jnp.dtype(dtype).name
    model_type = overrides.pop("model_type", None)  # e.g. "videomt": an EoMT checkpoint as a VidEoMT
    if not Path(path).exists():
        recover(path)  # a save_pretrained killed halfway through replacing it: the old one comes back
    config, params, report = _resolve(Path(path), overrides)
    if model_type is not None:
        config, params, report.fresh = to_model_type(config, params, model_type)
    params = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), params)
    check_finite(params, str(path))
    report.num_params, report.num_bytes = param_bytes(params)
    report.seconds = time.perf_counter() - start
    return config, params, report


def load_pretrained(path: str | Path, dtype: str | None = None, **config_overrides: Any) -> tuple[VideomtConfig, dict]:
    """Load (config, float32 params) from an HF dir, a `save_pretrained` dir, an authors' .pth or a Hub id.

    dtype: the compute dtype to put in the config ("float32", "bfloat16", "float16"); None keeps the
        checkpoint's (float32 for HF and authors' checkpoints). Parameters stay float32 either way.
    config_overrides: VideomtConfig fields that replace what the checkpoint says or implies (for an
        authors' .pth, e.g. num_attention_heads, image_size, id2label; `model_name` picks the heads).
        `model_type="videomt"` turns an EoMT / EoMT-DINOv3 image checkpoint (or an authors' segmenter
        `.pth`) into a VidEoMT of the same backbone with a fresh `query_updater` (the report's `fresh` lists it).
    Raises ConversionError (a ValueError) naming keys when the weights do not fit the config,
    CheckpointReadError for corrupt files (a file of a `save_pretrained` directory that differs from
    its manifest, parameters holding NaN or Inf), CheckpointNotFoundError when nothing is found.
    """
    config, params, _ = load_pretrained_with_report(path, dtype, **config_overrides)
    return config, params


def save_pretrained(
    path: str | Path,
    config: VideomtConfig,
    params: Mapping,
    *,
    overwrite: bool = False,
    processor: VideoProcessor | None = None,
) -> Path:
    """JAX-native checkpoint (orbax params + config.json + video_preprocessor_config.json), atomically.

    `load_pretrained(path)` gives back the same config and bit-identical parameters;
    `VideoProcessor.from_pretrained(path)` the processor (default `VideoProcessor.from_config(config)`),
    so the pixel normalisation travels with the model.
    Nothing is replaced unless `overwrite=True`, and then only a directory holding exactly the files
    its manifest lists (an earlier output, unchanged); one holding anything else, at any depth, is
    refused, untouched. The manifest (size and sha256 of every file) is written last.
    """
    processor = default_processor(config, processor)
    return native.save_native(path, config, params, overwrite=overwrite, processor=processor)


def export_hf(
    path: str | Path,
    config: VideomtConfig,
    params: Mapping,
    *,
    overwrite: bool = False,
    processor: VideoProcessor | None = None,
) -> Path:
    """Hugging Face layout (config.json + model.safetensors, float32, torch layout, and the processor's
    video_preprocessor_config.json, default `VideoProcessor.from_config(config)`), written atomically.

    A DINOv2 VidEoMT: `transformers.VideomtForUniversalSegmentation.from_pretrained(path)` loads it with
    no missing or unexpected keys, `VideomtVideoProcessor.from_pretrained(path)` the processor; a model
    that propagates normalised queries (`norm_queries`) is refused (HF has no such option and would
    compute something else from the second frame on). An EoMT: transformers' EoMT / EoMT-DINOv3 loads
    it strictly. A DINOv3 VidEoMT: EoMT-DINOv3's layout plus `query_updater.*` (`hf_eomt.py`).
    JAX-only settings (compute dtype, attention kernel, uint8 resize mode, ...) are not written.
    Nothing is replaced unless `overwrite=True`, and then only a directory holding exactly the files
    its manifest lists (an earlier output, unchanged); one holding anything else, at any depth, is
    refused, untouched. The manifest (size and sha256 of every file) is written last.
    """
    export = EXPORTERS.get((config.model_type, config.backbone))
    if export is None:
        raise ValueError(
            f"no Hugging Face layout for model_type={config.model_type!r}, backbone={config.backbone!r} "
            f"(known: {sorted(EXPORTERS)})"
        )
    return export(Path(path), config, params, overwrite=overwrite, processor=default_processor(config, processor))
