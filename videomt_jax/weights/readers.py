"""Read checkpoint files into flat {key: numpy array} dicts, and what a load read (`LoadReport`).

safetensors is parsed here directly (8-byte little-endian header length, JSON header, raw data), so
no torch is needed and bfloat16 / float8 work through `ml_dtypes`; every offset is checked so a
corrupt or truncated file fails with its name. `.bin` / `.pth` files go through torch, imported
only when such a file is read. Sharded checkpoints are read through their `*.index.json`. A Hugging
Face directory is `config.json` plus the first of `HF_WEIGHT_FILES` it holds (transformers' order).
"""

from __future__ import annotations

import dataclasses
import json
import math
import pickle
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np

from videomt_jax.config import VideomtConfig


class CheckpointReadError(ValueError):
    """A checkpoint file is missing, corrupt, truncated or not what it claims to be."""


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


Loaded = tuple[VideomtConfig, dict, LoadReport]  # what a format's loader returns
CONFIG_NAME = "config.json"  # the model config of an HF or a videomt-jax directory
PARAMS_DIR = "params"  # the orbax parameters of a videomt-jax directory


SAFETENSORS_DTYPES: dict[str, Any] = {
    "F64": np.float64,
    "F32": np.float32,
    "F16": np.float16,
    "BF16": ml_dtypes.bfloat16,
    "F8_E4M3": ml_dtypes.float8_e4m3fn,
    "F8_E5M2": ml_dtypes.float8_e5m2,
    "I64": np.int64,
    "I32": np.int32,
    "I16": np.int16,
    "I8": np.int8,
    "U64": np.uint64,
    "U32": np.uint32,
    "U16": np.uint16,
    "U8": np.uint8,
    "BOOL": np.bool_,
}
HEADER_LENGTH_BYTES = 8
MAX_HEADER_BYTES = 100 * 2**20  # the safetensors format's own limit


def read_safetensors(path: str | Path) -> dict[str, np.ndarray]:
    """All tensors of one .safetensors file (memory-mapped, read-only views)."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as e:
        raise CheckpointReadError(f"cannot read {path}: {e}") from e
    with open(path, "rb") as f:
        head = f.read(HEADER_LENGTH_BYTES)
        if len(head) < HEADER_LENGTH_BYTES:
            raise CheckpointReadError(f"{path} is not a safetensors file: only {size} bytes")
        n = int.from_bytes(head, "little")
        if n > min(size - HEADER_LENGTH_BYTES, MAX_HEADER_BYTES):
            raise CheckpointReadError(f"{path} is corrupt or truncated: header claims {n} bytes, file has {size}")
        try:
            header = json.loads(f.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise CheckpointReadError(f"{path} is corrupt: its header is not JSON ({e})") from e
    if not isinstance(header, dict):
        raise CheckpointReadError(f"{path} is corrupt: its header is not a JSON object")
    start = HEADER_LENGTH_BYTES + n
    data_len = size - start
    data = np.memmap(path, np.uint8, mode="r", offset=start) if data_len else np.zeros(0, np.uint8)
    out: dict[str, np.ndarray] = {}
    covered = 0
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype = np.dtype(SAFETENSORS_DTYPES[info["dtype"]])
            shape = tuple(int(s) for s in info["shape"])
            begin, end = (int(o) for o in info["data_offsets"])
        except (KeyError, TypeError, ValueError) as e:
            raise CheckpointReadError(f"{path} is corrupt: bad header entry for {name!r}: {info!r}") from e
        if not 0 <= begin <= end or end - begin != math.prod(shape) * dtype.itemsize:
            raise CheckpointReadError(f"{path} is corrupt: offsets {begin}..{end} do not fit {name} {shape} {dtype}")
        if end > data_len:
            raise CheckpointReadError(
                f"{path} is truncated: tensor {name} ends at byte {end} of the data but only {data_len} bytes are there"
            )
        out[name] = data[begin:end].view(dtype).reshape(shape)
        covered = max(covered, end)
    if covered != data_len:
        raise CheckpointReadError(f"{path} is corrupt: {data_len - covered} trailing bytes no tensor covers")
    return out


def _to_numpy(value: Any) -> Any:
    """torch tensors -> numpy (floating tensors as float32); other values unchanged."""
    import torch

    if not isinstance(value, torch.Tensor):
        return value
    value = value.detach().cpu()
    return (value.float() if value.is_floating_point() else value).numpy()


def read_torch_file(path: str | Path) -> Any:
    """torch.load (weights only, CPU) with tensors turned into numpy; torch is imported here only."""
    path = Path(path)
    try:
        import torch
    except ImportError as e:
        raise CheckpointReadError(f"reading {path} needs torch (pip install 'videomt-jax[torch]')") from e
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:  # torch's safe unpickler refused it: say why in our own words
        raise CheckpointReadError(_refused_pickle(path, str(e))) from None
    except Exception as e:  # torch raises many types for bad files (zip, runtime errors)
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise CheckpointReadError(f"cannot read {path} with torch.load: {type(e).__name__}: {first}") from None

    def convert(o: Any) -> Any:
        if isinstance(o, dict):
            return {k: convert(v) for k, v in o.items()}
        return _to_numpy(o)

    return convert(obj)


def _refused_pickle(path: Path, message: str) -> str:
    """One line for a torch file the safe (weights-only) unpickler refused. torch's own message
    advises loading it unsafely, which can run any code the file carries: that is not relayed."""
    found = re.search(r"WeightsUnpickler error:\s*(.+?)(?:\. Please|\n\n|$)", message, re.DOTALL)
    detail = " ".join(found[1].split()) if found else "an object that is not a tensor"
    return (
        f"{path} is refused: it holds more than tensors, dicts and lists (the safe unpickler stopped at: "
        f"{detail}); other pickled objects can run code when loaded, so they are never read. Ask for a plain "
        "state dict (torch.save(model.state_dict(), ...)) or a .safetensors file"
    )


def torch_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """The state dict in a torch file: the file itself, or its "model" / "state_dict" entry."""
    obj = read_torch_file(path)
    if not isinstance(obj, dict):
        raise CheckpointReadError(f"{path} holds a {type(obj).__name__}, not a state dict")
    for wrapper in ("model", "state_dict"):
        if isinstance(obj.get(wrapper), dict):
            obj = obj[wrapper]
            break
    tensors = {k: v for k, v in obj.items() if isinstance(v, np.ndarray)}
    if not tensors or len(tensors) != len(obj):
        others = sorted(str(k) for k, v in obj.items() if not isinstance(v, np.ndarray))[:8]
        raise CheckpointReadError(f"{path} is not a state dict of tensors (non-tensor entries: {others})")
    return tensors


SHARD_READERS: dict[str, Callable[[Path], dict[str, np.ndarray]]] = {
    ".safetensors": read_safetensors,
    ".bin": torch_state_dict,
}


def read_sharded(index_path: str | Path) -> tuple[dict[str, np.ndarray], list[Path]]:
    """A sharded checkpoint through its index JSON ({"weight_map": {key: shard file}})."""
    index_path = Path(index_path)
    try:
        weight_map = json.loads(index_path.read_text())["weight_map"]
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as e:
        raise CheckpointReadError(f"{index_path} is not a valid shard index: {e}") from e
    out: dict[str, np.ndarray] = {}
    shards = [index_path.parent / name for name in sorted(set(weight_map.values()))]
    for shard in shards:
        reader = SHARD_READERS.get(shard.suffix)
        if reader is None:
            raise CheckpointReadError(f"{index_path} names a shard of unknown format: {shard.name}")
        if not shard.is_file():
            raise CheckpointReadError(f"{index_path} names {shard.name}, which does not exist")
        tensors = reader(shard)
        dup = sorted(set(tensors) & set(out))
        if dup:
            raise CheckpointReadError(f"{shard} repeats keys of another shard: {dup[:8]}")
        out.update(tensors)
    absent = sorted(k for k, f in weight_map.items() if k not in out)
    if absent:
        raise CheckpointReadError(f"{index_path} maps keys that its shards lack: {absent[:8]}")
    return out, [index_path, *shards]


SAFETENSORS_NAME = "model.safetensors"
# HF weight files, in the order transformers prefers them: name -> reader returning (state dict, files read)
HF_WEIGHT_FILES: dict[str, Callable[[Path], tuple[dict[str, np.ndarray], list[Path]]]] = {
    SAFETENSORS_NAME: lambda p: (read_safetensors(p), [p]),
    "model.safetensors.index.json": read_sharded,
    "pytorch_model.bin": lambda p: (torch_state_dict(p), [p]),
    "pytorch_model.bin.index.json": read_sharded,
}


def read_json_object(path: str | Path) -> dict[str, Any]:
    """A JSON file that must hold an object."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointReadError(f"cannot read {path}: {e}") from e
    if not isinstance(data, dict):
        raise CheckpointReadError(f"{path} does not hold a JSON object")
    return data


def is_hf_dir(path: Path) -> bool:
    return path.is_dir() and (path / CONFIG_NAME).is_file()


def hf_model_type(path: Path) -> str | None:
    """The `model_type` of an HF directory's config.json ("videomt" when unstated); None for anything
    that is not an HF directory."""
    if not is_hf_dir(path):
        return None
    return str(read_json_object(path / CONFIG_NAME).get("model_type", "videomt"))


def hf_weight_file(path: Path) -> Path | None:
    """The weight file transformers would load from the directory `path`."""
    return next((path / name for name in HF_WEIGHT_FILES if (path / name).is_file()), None)


def read_hf_weights(path: Path) -> tuple[dict[str, np.ndarray], list[Path]]:
    """(state dict, files read) of the HF directory `path`."""
    weights = hf_weight_file(path)
    if weights is None:
        raise CheckpointReadError(f"{path} has a config.json but no weights (looked for {', '.join(HF_WEIGHT_FILES)})")
    return HF_WEIGHT_FILES[weights.name](weights)


def read_id2label_json(path: str | Path) -> dict[int, str]:
    """A JSON file {"0": "person", ...} (or a list of names) -> {0: "person", ...}."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"cannot read id2label JSON {path}: {e}") from e
    items = enumerate(data) if isinstance(data, list) else data.items() if isinstance(data, dict) else None
    if items is None:
        raise ValueError(f"{path} must hold a JSON object {{id: name}} or a list of names")
    return {int(k): str(v) for k, v in items}
