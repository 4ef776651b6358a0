"""`load_pretrained`, `save_pretrained`, `export_hf`: the public face of the weight converters.

`load_pretrained` recognises, in this order: a directory written by `save_pretrained` (orbax), a
Hugging Face directory (config.json + model.safetensors, a sharded index, or pytorch_model.bin),
an authors' torch checkpoint file (`.pth`), and finally a Hub repo id (downloaded when the network
is there). Parameters always come back float32; `dtype` sets only the compute dtype in the config.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from safetensors.numpy import save_file

from videomt_jax.config import VideomtConfig
from videomt_jax.processing import VideoProcessor
from videomt_jax.utils.io import atomic_directory
from videomt_jax.weights.family_io import (
    check_dinov2_backbone,
    export_hf_family,
    load_hf_family,
    load_original_dinov3,
    to_model_type,
)
from videomt_jax.weights.hf import hf_buffers, hf_rules, params_to_hf_state_dict
from videomt_jax.weights.original_dinov3 import is_original_dinov3
from videomt_jax.weights.native import (
    CONFIG_NAME,
    is_checkpoint_entry,
    is_native_dir,
    load_native,
    param_bytes,
    save_native,
)
from videomt_jax.weights.original import infer_original_config, original_state_dict_to_params
from videomt_jax.weights.readers import CheckpointReadError, read_safetensors, read_sharded, torch_state_dict
from videomt_jax.weights.tables import expected_shapes, source_to_params

SAFETENSORS_NAME = "model.safetensors"
# HF weight files, in the order transformers prefers them: name -> reader returning (state dict, files read)
HF_WEIGHT_FILES: dict[str, Callable[[Path], tuple[dict[str, np.ndarray], list[Path]]]] = {
    SAFETENSORS_NAME: lambda p: (read_safetensors(p), [p]),
    "model.safetensors.index.json": read_sharded,
    "pytorch_model.bin": lambda p: (torch_state_dict(p), [p]),
    "pytorch_model.bin.index.json": read_sharded,
}
TORCH_SUFFIXES = (".pth", ".pt", ".ckpt", ".bin")
HUB_PATTERNS = ["config.json", "*.safetensors", "*.json", "*.bin"]


class CheckpointNotFoundError(FileNotFoundError):
    """The path is neither a local checkpoint nor a Hub repo that could be reached."""


@dataclasses.dataclass
class LoadReport:
    """What `load_pretrained_with_report` read: for the converters' summaries."""

    source: str  # the format that was recognised
    files: list[str]  # files read
    source_keys: int  # source tensors consumed (0 for orbax checkpoints)
    buffers: list[str]  # consumed source keys that are not parameters (values unused)
    num_params: int = 0
    num_bytes: int = 0
    seconds: float = 0.0
    fresh: list[str] = dataclasses.field(default_factory=list)  # parameters not from the checkpoint


Loaded = tuple[VideomtConfig, dict, LoadReport]


def _only_config_fields(overrides: dict[str, Any], path: Path) -> dict[str, Any]:
    if "model_name" in overrides:
        raise ValueError(f"model_name only applies to authors' .pth checkpoints; {path} has its own config.json")
    return overrides


def _load_native(path: Path, overrides: dict[str, Any]) -> Loaded:
    overrides = _only_config_fields(overrides, path)
    config, params = load_native(path, **overrides)
    files = [str(path / CONFIG_NAME), str(path / "params")]
    return config, params, LoadReport("videomt-jax (orbax)", files, 0, [])


def _hf_weight_file(path: Path) -> Path | None:
    return next((path / name for name in HF_WEIGHT_FILES if (path / name).is_file()), None)


def _is_hf_dir(path: Path) -> bool:
    return path.is_dir() and (path / CONFIG_NAME).is_file()


def _load_hf(path: Path, overrides: dict[str, Any]) -> Loaded:
    overrides = _only_config_fields(overrides, path)
    config_file = path / CONFIG_NAME
    data = _read_json(config_file)
    if data.get("model_type", "videomt") != "videomt":  # EoMT, EoMT-DINOv3, DINOv3 VidEoMT, backbones
        return _load_hf_family(path, data, overrides)
    try:
        config = VideomtConfig.from_json_file(str(config_file), **overrides)
    except (ValueError, TypeError) as e:
        raise ValueError(f"{config_file}: {e}") from e
    weights = _hf_weight_file(path)
    if weights is None:
        raise CheckpointReadError(f"{path} has a config.json but no weights (looked for {', '.join(HF_WEIGHT_FILES)})")
    state_dict, files = HF_WEIGHT_FILES[weights.name](weights)
    params, buffers = source_to_params(
        state_dict, hf_rules(config), expected_shapes(config), source=str(weights), buffers=hf_buffers(config)
    )
    return config, params, LoadReport("hugging face", [str(config_file), *map(str, files)], len(state_dict), buffers)


def _read_json(path: Path) -> dict[str, Any]:
    import json

    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointReadError(f"cannot read {path}: {e}") from e
    if not isinstance(data, dict):
        raise CheckpointReadError(f"{path} does not hold a JSON object")
    return data


def _load_hf_family(path: Path, data: dict[str, Any], overrides: dict[str, Any]) -> Loaded:
    weights = _hf_weight_file(path)
    if weights is None:
        raise CheckpointReadError(f"{path} has a config.json but no weights (looked for {', '.join(HF_WEIGHT_FILES)})")
    state_dict, files = HF_WEIGHT_FILES[weights.name](weights)
    config, params = load_hf_family(data, state_dict, str(weights), overrides)
    buffers = sorted(k for k in ("attn_mask_probs", "criterion.empty_weight") if k in state_dict)
    files = [str(path / CONFIG_NAME), *map(str, files)]
    return config, params, LoadReport(f"hugging face ({data['model_type']})", files, len(state_dict), buffers)


def _is_hf_weight_file(path: Path) -> bool:
    """model.safetensors (or another HF weight file) inside an HF directory: that directory is meant."""
    return path.is_file() and path.name in HF_WEIGHT_FILES and _is_hf_dir(path.parent)


def _load_hf_weight_file(path: Path, overrides: dict[str, Any]) -> Loaded:
    chosen = _hf_weight_file(path.parent)
    if chosen != path:
        raise CheckpointReadError(
            f"{path.parent} holds {chosen.name} as well as {path.name}, and Hugging Face loads {chosen.name}; "
            f"pass the directory {path.parent} instead"
        )
    return _load_hf(path.parent, overrides)


def _is_torch_file(path: Path) -> bool:
    return path.is_file() and path.suffix in TORCH_SUFFIXES


def _load_original(path: Path, overrides: dict[str, Any]) -> Loaded:
    state_dict = torch_state_dict(path)
    buffers = sorted(k for k in ("backbone.attn_mask_probs", "criterion.empty_weight") if k in state_dict)
    if is_original_dinov3(state_dict):
        config, params = load_original_dinov3(state_dict, str(path), overrides)
        return config, params, LoadReport("authors' DINOv3 .pth", [str(path)], len(state_dict), buffers)
    check_dinov2_backbone(overrides, str(path))
    overrides = dict(overrides)
    model_name = overrides.pop("model_name", None) or path.name
    config = infer_original_config(state_dict, model_name=model_name, source=str(path), **overrides)
    params = original_state_dict_to_params(config, state_dict, source=str(path))
    return config, params, LoadReport("authors' .pth", [str(path)], len(state_dict), buffers)


# Recognised local formats, tried in order: (predicate, loader)
FORMATS: tuple[tuple[Callable[[Path], bool], Callable[[Path, dict[str, Any]], Loaded]], ...] = (
    (is_native_dir, _load_native),
    (_is_hf_dir, _load_hf),
    (_is_hf_weight_file, _load_hf_weight_file),  # before .bin files are taken for authors' checkpoints
    (_is_torch_file, _load_original),
)


def _looks_like_repo_id(text: str) -> bool:
    path = Path(text)
    local_looking = path.is_absolute() or text.startswith(".") or path.suffix in TORCH_SUFFIXES
    return not local_looking and text.count("/") <= 1


def _download(repo_id: str) -> Path:
    """Snapshot of a Hub repo (config + weights only); a clear error when the Hub cannot be reached."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError, HfHubHTTPError, OfflineModeIsEnabled

    try:
        return Path(snapshot_download(repo_id, allow_patterns=HUB_PATTERNS))
    except (HFValidationError, HfHubHTTPError, OfflineModeIsEnabled, OSError) as e:
        raise CheckpointNotFoundError(
            f"{repo_id!r} is neither a local file or directory nor reachable on the Hugging Face Hub "
            f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
        ) from e


def _resolve(path: Path, overrides: dict[str, Any]) -> Loaded:
    for matches, loader in FORMATS:
        if matches(path):
            return loader(path, overrides)
    if path.is_dir():
        contents = sorted(p.name for p in path.iterdir())[:12]
        raise CheckpointReadError(
            f"{path} is not a VidEoMT checkpoint directory: no config.json (HF layout) or params/ (videomt-jax); "
            f"it holds {contents}"
        )
    if path.exists() and path.name in HF_WEIGHT_FILES:
        raise CheckpointReadError(f"{path} is a Hugging Face weight file without a {CONFIG_NAME} beside it")
    if path.exists():
        raise CheckpointReadError(f"{path} is not a checkpoint file this loader knows (suffixes: {TORCH_SUFFIXES})")
    if not _looks_like_repo_id(str(path)):
        raise CheckpointNotFoundError(f"{path} does not exist")
    return _resolve_downloaded(_download(str(path)), overrides)


def _resolve_downloaded(local: Path, overrides: dict[str, Any]) -> Loaded:
    if not _is_hf_dir(local):
        raise CheckpointReadError(f"the Hub snapshot at {local} has no config.json; it is not an HF VidEoMT repo")
    return _load_hf(local, overrides)


def load_pretrained_with_report(
    path: str | Path, dtype: str | None = None, **config_overrides: Any
) -> tuple[VideomtConfig, dict, LoadReport]:
    """`load_pretrained` plus a `LoadReport` of what was read (format, files, keys, size, time)."""
    start = time.perf_counter()
    overrides = dict(config_overrides)
    if dtype is not None:  # a name, or a numpy / jax dtype; VideomtConfig checks it is supported
        overrides["dtype"] = dtype if isinstance(dtype, str) else jnp.dtype(dtype).name
    model_type = overrides.pop("model_type", None)  # e.g. "videomt": an EoMT checkpoint as a VidEoMT
    config, params, report = _resolve(Path(path), overrides)
    if model_type is not None:
        config, params, report.fresh = to_model_type(config, params, model_type)
    params = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), params)
    report.num_params, report.num_bytes = param_bytes(params)
    report.seconds = time.perf_counter() - start
    return config, params, report


def load_pretrained(path: str | Path, dtype: str | None = None, **config_overrides: Any) -> tuple[VideomtConfig, dict]:
    """Load (config, float32 params) from an HF dir, a `save_pretrained` dir, an authors' .pth or a Hub id.

    dtype: the compute dtype to put in the config ("float32", "bfloat16", "float16"); None keeps the
        checkpoint's (float32 for HF and authors' checkpoints). Parameters stay float32 either way.
    config_overrides: VideomtConfig fields that replace what the checkpoint says or implies (for an
        authors' .pth, e.g. num_attention_heads, image_size, id2label; `model_name` picks the heads).
        `model_type="videomt"` turns an EoMT / EoMT-DINOv3 image checkpoint into a VidEoMT of the same
        backbone with a fresh `query_updater` (the report's `fresh` lists it).
    Raises ConversionError (a ValueError) naming keys when the weights do not fit the config,
    CheckpointReadError for corrupt files, CheckpointNotFoundError when nothing is found.
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
    Nothing is replaced unless `overwrite=True`, and then only a directory holding checkpoint files
    alone (`weights.native.is_checkpoint_entry`); one holding anything else is refused, untouched.
    """
    processor = VideoProcessor.from_config(config) if processor is None else processor
    return save_native(path, config, params, overwrite=overwrite, processor=processor)


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

    `transformers.VideomtForUniversalSegmentation.from_pretrained(path)` loads it with no missing or
    unexpected keys, `VideomtVideoProcessor.from_pretrained(path)` the processor. JAX-only settings
    (compute dtype, attention kernel, uint8 resize mode, ...) are not written.
    A model that propagates normalised queries (`norm_queries`) is refused: Hugging Face has no such
    option, so it would load the weights without complaint and compute something else after frame 0.
    Nothing is replaced unless `overwrite=True`, and then only a directory holding checkpoint files
    alone (`weights.native.is_checkpoint_entry`); one holding anything else is refused, untouched.
    """
    if config.model_type != "videomt" or config.backbone != "dinov2":  # EoMT, DINOv3 VidEoMT
        processor = VideoProcessor.from_config(config) if processor is None else processor
        return export_hf_family(Path(path), config, params, overwrite=overwrite, processor=processor)
    if config.norm_queries:
        raise ValueError(
            f"cannot export to {path}: the model propagates normalised queries (norm_queries=True), which "
            "Hugging Face VidEoMT cannot express (transformers would load it and give different outputs "
            "from the second frame on); keep it in the native format (save_pretrained)"
        )
    processor = VideoProcessor.from_config(config) if processor is None else processor
    state_dict = params_to_hf_state_dict(config, params)
    hf_config = config.replace(extra={**config.extra, "dtype": "float32"})  # the arrays written are float32
    with atomic_directory(Path(path), overwrite=overwrite, replaceable=is_checkpoint_entry) as tmp:
        hf_config.to_json_file(str(tmp / CONFIG_NAME), hf_only=True)
        save_file(state_dict, str(tmp / SAFETENSORS_NAME), metadata={"format": "pt"})
        processor.save_pretrained(tmp, hf_only=True)
    return Path(path)
