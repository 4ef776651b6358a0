"""The converters' command lines: `convert/to_jax.py`, `convert/to_hf.py` and the `videomt-jax`
`convert` / `export` subcommands: summaries, results, overwrite rules and atomicity."""

from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers
from hf_utils import build_hf_model, hf_to_original_state_dict

from videomt_jax import cli
from videomt_jax.config import VideomtConfig
from videomt_jax.weights import api, native
from videomt_jax.weights.api import load_pretrained

CONFIG = VideomtConfig(
    hidden_size=32, num_hidden_layers=2, num_attention_heads=2, num_blocks=1, image_size=32, patch_size=8,
    num_queries=4, id2label={0: "cat", 1: "dog"},
)


@pytest.fixture(scope="module")
def hf_model():
    return build_hf_model(CONFIG, seed=11)


@pytest.fixture(scope="module")
def hf_dir(hf_model, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cli") / "hf"
    hf_model.save_pretrained(path)
    return path


def _script(name: str):
    """A converter script of the repository's convert/ folder, loaded by path (it is not a package)."""
    path = Path(__file__).resolve().parents[1] / "convert" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"convert_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


to_jax, to_hf = _script("to_jax"), _script("to_hf")


def _files(root: Path) -> dict[Path, bytes]:
    return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _same_params(a, b) -> bool:
    from flax import traverse_util

    fa, fb = traverse_util.flatten_dict(a, sep="/"), traverse_util.flatten_dict(b, sep="/")
    return fa.keys() == fb.keys() and all(np.array_equal(fa[k], fb[k]) for k in fa)


def test_to_jax_prints_summary_and_round_trips(hf_model, hf_dir, tmp_path, capsys):
    out = tmp_path / "jax"
    assert to_jax.main([str(hf_dir), str(out), "--dtype", "bfloat16"]) == 0
    text = capsys.readouterr().out
    n_params = sum(p.numel() for p in hf_model.parameters())  # HF's count; buffers are not params
    assert f"source keys consumed: {len(hf_model.state_dict())}" in text
    assert f"params: {n_params:,}" in text and "compute dtype bfloat16" in text
    assert "attn_mask_probs" in text and "time: load" in text
    config, params = load_pretrained(out)
    assert config.dtype == "bfloat16" and config.id2label == CONFIG.id2label
    assert _same_params(params, load_pretrained(hf_dir)[1])


def test_to_hf_exports_what_transformers_loads(hf_model, hf_dir, tmp_path, capsys):
    assert to_jax.main([str(hf_dir), str(tmp_path / "jax")]) == 0
    assert to_hf.main([str(tmp_path / "jax"), str(tmp_path / "hf")]) == 0
    assert "exported" in capsys.readouterr().out
    model, info = transformers.VideomtForUniversalSegmentation.from_pretrained(
        tmp_path / "hf", output_loading_info=True
    )
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    original = hf_model.state_dict()
    assert all(torch.equal(model.state_dict()[k], v) for k, v in original.items() if k != "attn_mask_probs")
    assert model.config.id2label == CONFIG.id2label
    assert "videomt_jax" not in json.loads((tmp_path / "hf" / "config.json").read_text())


def test_existing_output_needs_overwrite(hf_dir, tmp_path, capsys):
    out = tmp_path / "jax"
    out.mkdir()
    (out / "keep.txt").write_text("old")
    assert to_jax.main([str(hf_dir), str(out)]) == 1
    assert "--overwrite" in capsys.readouterr().err
    assert _files(out) == {Path("keep.txt"): b"old"}
    assert to_jax.main([str(hf_dir), str(out), "--overwrite"]) == 0
    assert not (out / "keep.txt").exists() and (out / "config.json").is_file()


def test_bad_source_is_one_line_error(tmp_path, capsys):
    assert to_jax.main([str(tmp_path / "nothing.pth"), str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("videomt-jax convert: error:") and "does not exist" in err
    assert not (tmp_path / "out").exists()


def _crash_params(directory, params):
    directory.mkdir()
    (directory / "half-written").write_bytes(b"\0" * 10)
    raise RuntimeError("simulated crash in the middle of the conversion")


def _crash_safetensors(tensors, filename, metadata=None):
    Path(filename).write_bytes(b"\0" * 10)
    raise RuntimeError("simulated crash in the middle of the conversion")


@pytest.mark.parametrize(
    "script, module, name, crash",
    [(to_jax, native, "write_params", _crash_params), (to_hf, api, "save_file", _crash_safetensors)],
    ids=["to_jax", "to_hf"],
)
def test_interrupted_conversion_is_atomic(hf_dir, tmp_path, monkeypatch, script, module, name, crash):
    monkeypatch.setattr(module, name, crash)
    out = tmp_path / "out"
    with pytest.raises(RuntimeError, match="simulated"):
        script.main([str(hf_dir), str(out)])
    assert not out.exists()
    out.mkdir()
    (out / "old.txt").write_text("previous result")
    with pytest.raises(RuntimeError, match="simulated"):
        script.main([str(hf_dir), str(out), "--overwrite"])
    assert _files(out) == {Path("old.txt"): b"previous result"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temporary directories left


def test_authors_pth_with_overrides(hf_model, hf_dir, tmp_path, capsys):
    pth = tmp_path / "videomt_tiny.pth"
    torch.save({"model": hf_to_original_state_dict(hf_model.state_dict(), CONFIG)}, pth)
    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps(["cat", "dog"]))
    out = tmp_path / "jax"
    assert to_jax.main([str(pth), str(out), "--num-heads", "2", "--id2label-json", str(labels)]) == 0
    assert "authors' .pth" in capsys.readouterr().out
    config, params = load_pretrained(out)
    assert config.id2label == {0: "cat", 1: "dog"} and config.num_attention_heads == 2
    _, from_hf = load_pretrained(hf_dir)  # the same weights; timm has no mask_token (ours: zeros)
    assert not np.asarray(params["embeddings"].pop("mask_token")).any()
    from_hf["embeddings"].pop("mask_token")
    assert _same_params(params, from_hf)
    labels.write_text(json.dumps(["only-one"]))
    assert to_jax.main([str(pth), str(tmp_path / "bad"), "--num-heads", "2", "--id2label-json", str(labels)]) == 1
    assert "class head predicts 2" in capsys.readouterr().err


def test_subcommands_registered_on_a_parser(hf_dir, tmp_path, capsys):
    parser = cli.build_parser(("convert", "export"))
    args = parser.parse_args(["convert", str(hf_dir), str(tmp_path / "jax"), "--dtype", "float16"])
    assert args.func(args) == 0
    assert load_pretrained(tmp_path / "jax")[0].dtype == "float16"
    args = parser.parse_args(["export", str(tmp_path / "jax"), str(tmp_path / "hf")])
    assert args.func(args) == 0
    assert (tmp_path / "hf" / "model.safetensors").is_file()
    with pytest.raises(SystemExit):
        parser.parse_args(["export", str(tmp_path / "jax"), str(tmp_path / "hf"), "--dtype", "float16"])
    assert "converted" in capsys.readouterr().out
