"""The converters' command lines: `convert/to_jax.py`, `convert/to_hf.py` and the `videomt-jax`
`convert` / `export` subcommands: summaries, results, overwrite rules and atomicity."""

from __future__ import annotations

import importlib.util
import json
import re
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers

from tests.helpers.hf import build_hf_model, hf_to_original_state_dict
from tests.helpers.processes import start_python
from videomt_jax import cli
from videomt_jax.config import VideomtConfig
from videomt_jax.weights import api, native, writers
from videomt_jax.weights.api import load_pretrained

CONFIG = VideomtConfig(
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    num_blocks=1,
    image_size=32,
    patch_size=8,
    num_queries=4,
    id2label={0: "cat", 1: "dog"},
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
    path = Path(__file__).resolve().parents[2] / "convert" / f"{name}.py"
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
    assert to_jax.main([str(hf_dir), str(out)]) == 0
    before = _files(out)
    assert to_jax.main([str(hf_dir), str(out)]) == 1
    assert "--overwrite" in capsys.readouterr().err
    assert _files(out) == before
    assert to_jax.main([str(hf_dir), str(out), "--overwrite", "--dtype", "bfloat16"]) == 0  # a checkpoint: replaced
    assert load_pretrained(out)[0].dtype == "bfloat16"


@pytest.mark.parametrize("script", [to_jax, to_hf], ids=["convert", "export"])
def test_overwrite_never_deletes_unrelated_files(hf_dir, tmp_path, capsys, script):
    """Issue 18: `convert SRC DIR --overwrite` deleted every file in DIR."""
    out = tmp_path / "mixed"
    out.mkdir()
    (out / "keep.txt").write_text("old")
    (out / "config.json").write_text("{}")
    assert script.main([str(hf_dir), str(out), "--overwrite"]) == 1
    captured = capsys.readouterr()
    assert "keep.txt" in captured.err and "not replacing" in captured.err
    assert "reading" not in captured.out  # refused before the source was read
    assert _files(out) == {Path("keep.txt"): b"old", Path("config.json"): b"{}"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mixed"]


@pytest.mark.parametrize("mine", ["params/holiday.jpg", "config.json"])
@pytest.mark.parametrize("script", [to_jax, to_hf], ids=["convert", "export"])
def test_overwrite_checks_every_file_at_any_depth(hf_dir, tmp_path, capsys, script, mine):
    """Issue 24: only top-level names were checked, so OUT/params/holiday.jpg and the user's own
    OUT/config.json were deleted by `--overwrite`."""
    out = tmp_path / "out"
    assert script.main([str(hf_dir), str(out)]) == 0
    (out / mine).parent.mkdir(exist_ok=True)
    (out / mine).write_text('{"the user\'s": 1}')
    before = _files(out)
    capsys.readouterr()
    assert script.main([str(hf_dir), str(out), "--overwrite"]) == 1
    captured = capsys.readouterr()
    assert f"{out / mine}" in captured.err and "not replacing" in captured.err
    assert len(captured.err.splitlines()) == 1 and "reading" not in captured.out
    assert _files(out) == before


@pytest.mark.parametrize("writer", [api.save_pretrained, api.export_hf], ids=["save_pretrained", "export_hf"])
def test_python_api_does_not_overwrite_by_default(hf_dir, tmp_path, writer):
    config, params = load_pretrained(hf_dir)
    out = tmp_path / "out"
    writer(out, config, params)
    before = _files(out)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        writer(out, config, params)
    assert _files(out) == before
    writer(out, config, params, overwrite=True)  # its own checkpoint: replaced
    (out / "notes.txt").write_text("unrelated")
    with pytest.raises(FileExistsError, match="notes.txt"):
        writer(out, config, params, overwrite=True)
    assert (out / "notes.txt").read_text() == "unrelated" and (out / "config.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temporary directories left


def test_exported_files_have_normal_permissions(hf_dir, tmp_path):
    import os

    config, params = load_pretrained(hf_dir)
    api.export_hf(tmp_path / "hf", config, params)
    api.save_pretrained(tmp_path / "native", config, params)
    mask = os.umask(0)
    os.umask(mask)
    files = [p for d in ("hf", "native") for p in (tmp_path / d).rglob("*") if p.is_file()]
    modes = {p.name: oct(p.stat().st_mode & 0o777) for p in files}
    assert set(modes.values()) == {oct(0o666 & ~mask)}, modes  # safetensors' writer made 0600 files


def test_bare_safetensors_path_loads(hf_dir, tmp_path):
    config, params = load_pretrained(hf_dir / "model.safetensors")
    assert config.id2label == CONFIG.id2label
    assert _same_params(params, load_pretrained(hf_dir)[1])
    alone = tmp_path / "model.safetensors"
    alone.write_bytes((hf_dir / "model.safetensors").read_bytes())
    with pytest.raises(ValueError, match="without a config.json"):
        load_pretrained(alone)


SIGNAL_CHILD = """
import sys, time
import orbax.checkpoint as ocp
from videomt_jax.cli import main

real = ocp.StandardCheckpointer.save
def save(self, *args, **kwargs):  # the signal arrives while orbax's background write is under way
    real(self, *args, **kwargs)
    print("ready", flush=True)
    time.sleep(1)
ocp.StandardCheckpointer.save = save
sys.exit(main(["convert", *sys.argv[1:]]))
"""


def _convert_signalled(hf_dir: Path, out: Path, signum: int) -> tuple[int, str, int]:
    """`convert hf_dir out --overwrite` in a child that gets `signum` in the middle of orbax's write:
    (exit code, stderr, pid)."""
    child = start_python(SIGNAL_CHILD, str(hf_dir), str(out), "--overwrite")
    child.send_signal(signum)
    _, stderr = child.communicate(timeout=120)
    return child.returncode, stderr, child.pid


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_during_convert_cleans_up(hf_dir, tmp_path, signum):
    """Issues 18, 24: SIGTERM left hidden temporary directories, SIGINT printed a traceback; a signal
    during orbax's background write left `.OUT.*.tmp` (the write went on after the cleanup), printed
    orbax tracebacks and claimed "partial output removed"."""
    out = tmp_path / "out"
    assert to_jax.main([str(hf_dir), str(out)]) == 0  # a previous result that must survive
    before = _files(out)
    code, stderr, _ = _convert_signalled(hf_dir, out, signum)
    assert code == 128 + signum, stderr[-2000:]
    name = signal.Signals(signum).name
    assert stderr.strip().splitlines() == [f"videomt-jax convert: interrupted by {name}; nothing half-written left"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no hidden temporary directory, no lock
    assert _files(out) == before


def test_killed_convert_leftovers_are_cleaned_by_the_next_run(hf_dir, tmp_path):
    """Issue 24: after SIGKILL the temporary folder stayed forever; the next run removes it (its
    writer is gone), and only it."""
    out = tmp_path / "out"
    assert to_jax.main([str(hf_dir), str(out)]) == 0
    before = _files(out)
    code, _, pid = _convert_signalled(hf_dir, out, signal.SIGKILL)
    assert code == -signal.SIGKILL
    left = sorted(p.name for p in tmp_path.iterdir())  # its temporary folder and lock stay
    assert len(left) == 3 and left[1:] == [".out.lock", "out"], left
    assert re.fullmatch(rf"\.out\.{pid}-\w{{8}}\.tmp", left[0]), left
    (tmp_path / ".out.12345678-abcdefgh.tmp.bak").write_text("not a name our writers use")
    assert _files(out) == before
    assert to_jax.main([str(hf_dir), str(out), "--overwrite"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [".out.12345678-abcdefgh.tmp.bak", "out"]


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
    [(to_jax, native, "write_params", _crash_params), (to_hf, writers, "save_file", _crash_safetensors)],
    ids=["to_jax", "to_hf"],
)
def test_interrupted_conversion_is_atomic(hf_dir, tmp_path, monkeypatch, script, module, name, crash):
    monkeypatch.setattr(module, name, crash)
    out = tmp_path / "out"
    with pytest.raises(RuntimeError, match="simulated"):
        script.main([str(hf_dir), str(out)])
    assert not out.exists()
    monkeypatch.undo()
    assert script.main([str(hf_dir), str(out)]) == 0  # a previous result
    before = _files(out)
    monkeypatch.setattr(module, name, crash)
    with pytest.raises(RuntimeError, match="simulated"):
        script.main([str(hf_dir), str(out), "--overwrite"])
    assert _files(out) == before
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
