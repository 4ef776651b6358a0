"""Weight converters: exact round trips, strictness, file formats, errors, native save/load.

No model is run here (that is modeling/test_videomt.py); every check compares arrays against the HF state
dict or hand-written expectations. Letters: D hidden, F MLP hidden, K classes.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import jax
import numpy as np
import pytest
import torch
from safetensors.numpy import save_file

from tests.helpers.hf import build_hf_model, hf_to_original_state_dict
from videomt_jax.config import VideomtConfig
from videomt_jax.weights import native
from videomt_jax.weights.api import CheckpointNotFoundError, export_hf, load_pretrained, save_pretrained
from videomt_jax.weights.hf_videomt import hf_state_dict_to_params, params_to_hf_state_dict
from videomt_jax.weights.original_dinov2 import infer_original_config
from videomt_jax.weights.readers import CheckpointReadError
from videomt_jax.weights.tables import SPLIT_GATE_UP_KERNEL, ConversionError

CONFIG = VideomtConfig(
    hidden_size=32,
    num_hidden_layers=3,
    num_attention_heads=2,
    num_blocks=2,
    image_size=32,
    patch_size=8,
    num_queries=5,
    use_swiglu_ffn=True,
    num_register_tokens=0,
    id2label={0: "a", 1: "b", 2: "c"},
)


@pytest.fixture(scope="module")
def hf_model():
    return build_hf_model(CONFIG, seed=7)


@pytest.fixture(scope="module")
def hf_sd(hf_model) -> dict[str, np.ndarray]:
    return {k: v.numpy() for k, v in hf_model.state_dict().items()}


@pytest.fixture(scope="module")
def hf_dir(hf_model, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("hf") / "model"
    hf_model.save_pretrained(path)
    return path


def _flat(params) -> dict[str, np.ndarray]:
    from flax import traverse_util

    return {k: np.asarray(v) for k, v in traverse_util.flatten_dict(params, sep="/").items()}


def _assert_same_params(a, b) -> None:
    fa, fb = _flat(a), _flat(b)
    assert fa.keys() == fb.keys()
    for k in fa:
        assert fa[k].dtype == fb[k].dtype and np.array_equal(fa[k], fb[k]), k


# ------------------------------------------------------------------ tables


def test_hf_round_trip_is_exact(hf_sd):
    back = params_to_hf_state_dict(CONFIG, hf_state_dict_to_params(CONFIG, hf_sd))
    assert back.keys() == hf_sd.keys()
    for key, value in hf_sd.items():
        if key == "attn_mask_probs":
            np.testing.assert_array_equal(back[key], np.ones(CONFIG.num_blocks))
        else:
            np.testing.assert_array_equal(back[key], value, err_msg=key)
    np.testing.assert_allclose(back["criterion.empty_weight"], [1, 1, 1, CONFIG.no_object_weight])


def test_hf_layouts_by_hand(hf_sd):
    params = hf_state_dict_to_params(CONFIG, hf_sd)
    # layer 2 is the second query block; fused kernel = [q.T | k.T | v.T]
    qkv = np.asarray(params["query_encoder"]["layers"]["block"]["attention"]["qkv"]["kernel"][1])
    d = CONFIG.hidden_size
    for i, p in enumerate("qkv"):
        np.testing.assert_array_equal(qkv[:, i * d : (i + 1) * d], hf_sd[f"layers.2.attention.{p}_proj.weight"].T)
    # layer 0 is the only plain encoder layer
    gate = params["encoder"]["layers"]["block"]["mlp"]["gate_proj"]["kernel"][0]
    np.testing.assert_array_equal(gate, hf_sd["layers.0.mlp.gate_proj.weight"].T)
    # ConvTranspose2d [in, out, a, b] -> [a, b, in, out]; depthwise Conv2d [D, 1, 3, 3] -> [3, 3, 1, D]
    up = params["heads"]["upscale_1"]
    w = hf_sd["upscale_block.block.1.conv1.weight"]
    assert up["conv1"]["kernel"][1, 0, 3, 5] == w[3, 5, 1, 0]
    assert up["conv2"]["kernel"][2, 1, 0, 7] == hf_sd["upscale_block.block.1.conv2.weight"][7, 0, 2, 1]
    patch = hf_sd["embeddings.patch_embeddings.projection.weight"]  # [D, C, p, p]
    assert params["embeddings"]["patch_embeddings"]["kernel"][4, 6, 2, 9] == patch[9, 2, 4, 6]


def test_timm_packed_swiglu_split_matches_gluMlp():
    """timm SwiGLUPacked (GluMlp, gate_last=False): silu(first half of fc1(x)) * second half."""
    rng = np.random.default_rng(0)
    d, f = 6, 4
    w, x = rng.standard_normal((2 * f, d)), rng.standard_normal((3, d))
    gate, up = SPLIT_GATE_UP_KERNEL.to_jax([w])  # [D, F] each
    silu = lambda z: z / (1 + np.exp(-z))
    packed = x @ w.T
    np.testing.assert_allclose(silu(x @ gate) * (x @ up), silu(packed[:, :f]) * packed[:, f:], rtol=1e-12)
    np.testing.assert_array_equal(SPLIT_GATE_UP_KERNEL.to_source([gate, up])[0], w)


@pytest.mark.parametrize(
    "edit, named",
    [
        (lambda sd: sd.update({"layers.0.attention.extra.weight": np.zeros(3)}), "layers.0.attention.extra.weight"),
        (lambda sd: sd.pop("query_updater.bias"), "query_updater.bias"),
        (lambda sd: sd.update({"query.weight": np.zeros((6, 32), np.float32)}), "query.weight"),
        (lambda sd: sd.update({"attn_mask_probs": np.ones(5, np.float32)}), "attn_mask_probs"),
        (lambda sd: sd.pop("layers.2.norm2.bias"), "layers.2.norm2.bias"),
    ],
    ids=["unconsumed key", "missing key", "shape mismatch", "buffer shape", "missing layer key"],
)
def test_strict_conversion_names_the_keys(hf_sd, edit, named):
    sd = dict(hf_sd)
    edit(sd)
    with pytest.raises(ConversionError, match=named.replace(".", r"\.")):
        hf_state_dict_to_params(CONFIG, sd)


def test_params_not_matching_config_are_refused(hf_sd):
    params = hf_state_dict_to_params(CONFIG, hf_sd)
    other = CONFIG.replace(num_queries=6)
    with pytest.raises(ConversionError, match="query"):
        params_to_hf_state_dict(other, params)


# ------------------------------------------------------------------ file formats


def test_sharded_and_bin_checkpoints_load_the_same(hf_model, hf_dir, tmp_path):
    _, reference = load_pretrained(hf_dir)
    sharded = tmp_path / "sharded"
    hf_model.save_pretrained(sharded, max_shard_size="60KB")
    assert (sharded / "model.safetensors.index.json").is_file() and not (sharded / "model.safetensors").exists()
    _assert_same_params(load_pretrained(sharded)[1], reference)
    binary = tmp_path / "bin"
    binary.mkdir()
    shutil.copy(hf_dir / "config.json", binary / "config.json")
    torch.save(hf_model.state_dict(), binary / "pytorch_model.bin")
    _assert_same_params(load_pretrained(binary)[1], reference)
    # an index pointing at a shard that is not there
    index = json.loads((sharded / "model.safetensors.index.json").read_text())
    gone = sorted(set(index["weight_map"].values()))[-1]
    (sharded / gone).unlink()
    with pytest.raises(CheckpointReadError, match=gone):
        load_pretrained(sharded)


def test_bfloat16_safetensors_are_read_without_torch(tmp_path):
    model = build_hf_model(CONFIG, seed=7).to(torch.bfloat16)
    model.save_pretrained(tmp_path / "bf16")
    _, params = load_pretrained(tmp_path / "bf16")
    want = {k: v.float().numpy() for k, v in model.state_dict().items()}
    got = params_to_hf_state_dict(CONFIG, params)
    for key in ("query.weight", "layers.1.attention.k_proj.weight", "upscale_block.block.0.conv1.weight"):
        np.testing.assert_array_equal(got[key], want[key])


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


@pytest.mark.parametrize(
    "damage",
    [
        lambda b: b[: len(b) - 100],  # truncated data
        lambda b: b[:5],  # shorter than the header length
        lambda b: b"garbage that is not a safetensors file at all" * 3,
        lambda b: b[:8] + b"{not json" + b[17:],  # corrupt header
    ],
    ids=["truncated", "tiny", "garbage", "bad header"],
)
def test_corrupt_safetensors_error_names_the_file(hf_dir, tmp_path, damage):
    path = _copy(hf_dir, tmp_path / "broken")
    weights = path / "model.safetensors"
    weights.write_bytes(damage(weights.read_bytes()))
    with pytest.raises(CheckpointReadError, match=str(weights)):
        load_pretrained(path)


@pytest.mark.parametrize("model_type", ["eomt", "vit"])
def test_other_architecture_config_is_refused(hf_dir, tmp_path, model_type):
    path = _copy(hf_dir, tmp_path / model_type)
    data = json.loads((path / "config.json").read_text())
    data["model_type"] = model_type
    (path / "config.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match=f"config.json.*{model_type}"):
        load_pretrained(path)


def test_state_dict_of_another_model_is_refused(tmp_path):
    torch.save({"model": {"encoder.layer.0.weight": torch.zeros(3)}}, tmp_path / "other.pth")
    with pytest.raises(ConversionError, match="not an authors' VidEoMT checkpoint"):
        load_pretrained(tmp_path / "other.pth")
    dinov3 = {"backbone.encoder.backbone.layer.0.attention.q_proj.weight": torch.zeros(3)}
    torch.save({"model": dinov3}, tmp_path / "v3.pth")
    with pytest.raises(ConversionError, match="DINOv3"):
        load_pretrained(tmp_path / "v3.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a torch file")
    with pytest.raises(CheckpointReadError, match="junk.pth"):
        load_pretrained(tmp_path / "junk.pth")


def test_hub_id_without_network_gives_a_clear_error(monkeypatch, tmp_path):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.chdir(tmp_path)
    unreachable = "neither a local file or directory nor reachable on the Hugging Face Hub"
    with pytest.raises(CheckpointNotFoundError, match=unreachable):
        load_pretrained("nobody-here/videomt-does-not-exist")
    with pytest.raises(CheckpointNotFoundError, match="does not exist"):
        load_pretrained(tmp_path / "missing" / "model.pth")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CheckpointReadError, match="not a VidEoMT checkpoint directory"):
        load_pretrained(empty)


# ------------------------------------------------------------------ authors' .pth: config inference


def _original_shapes(config: VideomtConfig) -> dict[str, np.ndarray]:
    model = build_hf_model(config, seed=0)
    return {k: v.numpy() for k, v in hf_to_original_state_dict(model.state_dict(), config).items()}


def test_original_config_inference():
    config = VideomtConfig(
        hidden_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_blocks=1,
        image_size=48,
        patch_size=8,
        num_queries=3,
        num_register_tokens=2,
        num_upscale_blocks=1,
        id2label={0: "x"},
        no_object_weight=0.25,
    )
    sd = _original_shapes(config)
    inferred = infer_original_config(sd, id2label={0: "x"})  # heads = 128 // 64; the rest from shapes
    assert inferred.to_dict() == config.to_dict()
    assert infer_original_config(sd).id2label == {0: "LABEL_0"}
    with pytest.raises(ConversionError, match="class head predicts 1"):
        infer_original_config(sd, id2label={0: "a", 1: "b"})
    small = VideomtConfig(
        hidden_size=48,
        num_hidden_layers=1,
        num_attention_heads=6,
        num_blocks=1,
        image_size=16,
        patch_size=8,
        num_queries=2,
        num_upscale_blocks=1,
    )
    sd_small = _original_shapes(small)
    assert infer_original_config(sd_small, model_name="vit_small_patch14_reg4_dinov2").num_attention_heads == 6
    with pytest.raises(ConversionError, match="--num-heads"):
        infer_original_config(sd_small)
    sd_small["backbone.encoder.backbone.pos_embed"] = np.zeros((1, 8, 48), np.float32)  # 8 positions: not square
    with pytest.raises(ConversionError, match="image_size"):
        infer_original_config(sd_small, model_name="vit_small")


# ------------------------------------------------------------------ native save / load, export


def test_save_pretrained_round_trip_is_bit_identical(hf_dir, tmp_path):
    config, params = load_pretrained(hf_dir, dtype="bfloat16")
    assert config.dtype == "bfloat16"
    config = config.replace(scan_layers=True, attention_impl="einsum")
    save_pretrained(tmp_path / "native", config, params)
    again_config, again = load_pretrained(tmp_path / "native")
    assert again_config == config and again_config.to_dict() == config.to_dict()
    _assert_same_params(again, params)
    # saving again over it replaces it (atomically), loading with a dtype overrides the saved one
    save_pretrained(tmp_path / "native", config.replace(dtype="float32"), params, overwrite=True)
    assert load_pretrained(tmp_path / "native", dtype="float16")[0].dtype == "float16"


def test_interrupted_save_leaves_old_checkpoint(hf_dir, tmp_path, monkeypatch):
    config, params = load_pretrained(hf_dir)
    target = tmp_path / "native"
    save_pretrained(target, config, params)
    before = {p.relative_to(target): p.read_bytes() for p in target.rglob("*") if p.is_file()}

    def crash(directory, params):
        directory.mkdir()
        (directory / "partial").write_bytes(b"half")
        raise RuntimeError("simulated crash while writing params")

    monkeypatch.setattr(native, "write_params", crash)
    with pytest.raises(RuntimeError, match="simulated"):
        save_pretrained(target, config, params, overwrite=True)
    with pytest.raises(RuntimeError, match="simulated"):
        save_pretrained(tmp_path / "fresh", config, params)
    assert not (tmp_path / "fresh").exists()
    after = {p.relative_to(target): p.read_bytes() for p in target.rglob("*") if p.is_file()}
    assert after == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["native"]  # no temporary leftovers


def test_export_refuses_params_of_another_config(hf_dir, tmp_path):
    config, params = load_pretrained(hf_dir)
    with pytest.raises(ConversionError, match="position_embeddings"):
        export_hf(tmp_path / "out", config.replace(image_size=64), params)
    assert not (tmp_path / "out").exists()
    del params["query_updater"]
    with pytest.raises(ConversionError, match="query_updater"):
        save_pretrained(tmp_path / "out", config, params)


def test_params_are_float32_jax_arrays(hf_dir):
    _, params = load_pretrained(hf_dir)
    assert all(isinstance(x, jax.Array) and x.dtype == np.float32 for x in jax.tree.leaves(params))


def test_safetensors_written_by_numpy_loads(hf_sd, tmp_path):
    """A minimal HF directory (our own safetensors writer, a bare config.json) loads too."""
    path = tmp_path / "minimal"
    path.mkdir()
    (path / "config.json").write_text(json.dumps(CONFIG.to_hf_dict()))
    save_file({k: np.ascontiguousarray(v) for k, v in hf_sd.items()}, str(path / "model.safetensors"))
    config, params = load_pretrained(path)
    assert config.id2label == CONFIG.id2label
    np.testing.assert_array_equal(params["query"], hf_sd["query.weight"])


def _flat(params) -> dict:
    return {
        "/".join(str(getattr(p, "key", p)) for p in path): leaf
        for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]
    }


SAVE_ON_DEVICE_5 = """
import sys, jax, numpy as np
from tests.weights.test_weights import _flat
from videomt_jax.config import VideomtConfig
from videomt_jax.modeling.family import init_params
from videomt_jax.weights.api import save_pretrained
cfg = VideomtConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, num_blocks=1, num_queries=4,
                    image_size=32, patch_size=8)
params = jax.device_put(init_params(cfg, jax.random.PRNGKey(3)), jax.devices()[5])
save_pretrained(sys.argv[1], cfg, params)
np.savez(sys.argv[2], **{k: np.asarray(v) for k, v in _flat(params).items()})
"""


def test_checkpoint_saved_on_other_devices_loads_here(tmp_path):
    """Saved from device 5 of 8 (as from a GPU box), loaded in a 1-device process: same numbers, on our device."""
    import os
    import subprocess
    import sys

    env = dict(
        os.environ,
        XLA_FLAGS="--xla_force_host_platform_device_count=8",
        JAX_PLATFORMS="cpu",
        PYTHONPATH=os.pathsep.join([str(Path(__file__).resolve().parents[2]), os.environ.get("PYTHONPATH", "")]),
    )
    subprocess.run(
        [sys.executable, "-c", SAVE_ON_DEVICE_5, str(tmp_path / "m"), str(tmp_path / "ref.npz")], env=env, check=True
    )
    _, params = load_pretrained(tmp_path / "m")
    ref = np.load(tmp_path / "ref.npz")
    flat = _flat(params)
    assert set(flat) == set(ref.files)
    for key, leaf in flat.items():
        assert leaf.devices() == {jax.local_devices()[0]}, key
        np.testing.assert_array_equal(np.asarray(leaf), ref[key], err_msg=key)


def test_config_json_round_trip_of_a_fresh_config(tmp_path):
    """to_json_file writes HF's "architectures"; reading it back gives the same config (nothing in extra)."""
    config = VideomtConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, num_blocks=1, num_queries=4)
    config.to_json_file(str(tmp_path / "a.json"))
    again = VideomtConfig.from_json_file(str(tmp_path / "a.json"))
    assert again == config and again.extra == {}
    other = config.replace(extra={"architectures": ["SomethingElse"], "torch_dtype": "float32"})
    other.to_json_file(str(tmp_path / "b.json"))
    assert VideomtConfig.from_json_file(str(tmp_path / "b.json")) == other


# ------------------------------------------------------------------ the format modules and their dispatch


def test_conversion_engine_does_not_import_the_model():
    """Only `shapes.py` asks the model (for the parameter shapes); the engine runs on tables alone."""
    import ast

    import videomt_jax.weights as weights

    for name in ("tables", "shared_rules", "readers", "writers"):
        tree = ast.parse((Path(weights.__file__).parent / f"{name}.py").read_text())
        modules = {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        modules |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        assert not [m for m in modules if m.startswith("videomt_jax.modeling")], name


def test_every_model_has_an_hf_layout():
    import itertools

    from videomt_jax.config import BACKBONES, MODEL_TYPES
    from videomt_jax.weights import api, hf_eomt

    assert set(api.EXPORTERS) == set(itertools.product(MODEL_TYPES, BACKBONES))
    assert set(hf_eomt.EMBEDDINGS_BY_BACKBONE) == set(hf_eomt.LAYERS_BY_BACKBONE) == set(BACKBONES)


@pytest.mark.parametrize("model_type", ["dinov3_vit", "dinov2_with_registers"])
def test_backbone_alone_is_refused_with_what_reads_it(tmp_path, model_type):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": model_type}))
    with pytest.raises(ConversionError, match=f"{model_type} backbone alone.*init_videomt_from"):
        load_pretrained(tmp_path)
    with pytest.raises(ValueError, match="model_name only applies to authors' .pth"):
        load_pretrained(tmp_path, model_name="vit_small")


# ------------------------------------------------------------------ integrity (issue 24, cases 8 and 10)


def _largest_file(root: Path) -> Path:
    return max((p for p in root.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)


def _xor_middle(data: bytes) -> bytes:
    middle = len(data) // 2
    return data[:middle] + bytes(b ^ 0x5A for b in data[middle : middle + 64]) + data[middle + 64 :]


@pytest.mark.parametrize(
    "damage, named",
    [(_xor_middle, "does not match its checksum"), (lambda b: b[: len(b) // 2], "has \\d+ bytes, the manifest says")],
    ids=["bytes-xored", "truncated"],
)
def test_damaged_native_checkpoint_names_the_file(tmp_path, damage, named):
    """Issue 24: XOR-ed orbax data of the shipped model loaded with 282 non-finite weights; a truncated
    data file printed thousands of lines of tracebacks."""
    from videomt_jax.apps.pipeline import DEFAULT_MODEL_DIR

    model = _copy(DEFAULT_MODEL_DIR, tmp_path / "model")
    victim = _largest_file(model / "params")
    victim.write_bytes(damage(victim.read_bytes()))
    with pytest.raises(CheckpointReadError, match=f"{victim}.* {named}") as caught:
        load_pretrained(model)
    assert "\n" not in str(caught.value)


def test_legacy_native_checkpoint_without_manifest_loads_and_damage_is_one_line(hf_dir, tmp_path):
    from videomt_jax.utils.io import MANIFEST_NAME

    config, params = load_pretrained(hf_dir)
    save_pretrained(tmp_path / "native", config, params)
    (tmp_path / "native" / MANIFEST_NAME).unlink()  # as written before manifests
    _assert_same_params(load_pretrained(tmp_path / "native")[1], params)
    victim = _largest_file(tmp_path / "native" / "params")
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])
    with pytest.raises(CheckpointReadError, match="cannot restore params") as caught:
        load_pretrained(tmp_path / "native")
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("value", [np.nan, np.inf], ids=["nan", "inf"])
def test_non_finite_weights_are_refused_in_every_format(hf_dir, hf_sd, tmp_path, value):
    """Issue 24: a safetensors file full of NaN converted without a word."""
    poisoned = {k: np.ascontiguousarray(v) for k, v in hf_sd.items()}
    poisoned["query.weight"] = np.full_like(poisoned["query.weight"], value)
    hf = _copy(hf_dir, tmp_path / "hf")
    save_file(poisoned, str(hf / "model.safetensors"))
    pth = tmp_path / "authors.pth"
    torch.save({"model": hf_to_original_state_dict({k: torch.from_numpy(v) for k, v in poisoned.items()}, CONFIG)}, pth)
    config, params = load_pretrained(hf_dir)
    params["query"] = np.full(np.shape(params["query"]), value, np.float32)
    save_pretrained(tmp_path / "native", config, params)  # e.g. a diverged training's model
    named = f"parameter query holds {poisoned['query.weight'].size} non-finite value"
    for source, overrides in ((hf, {}), (pth, {"num_attention_heads": 2}), (tmp_path / "native", {})):
        with pytest.raises(CheckpointReadError, match=named):
            load_pretrained(source, **overrides)


def test_refused_pickle_gives_our_own_advice(tmp_path):
    """Issue 24: torch's message advised re-running with weights_only=False (running the file's code)."""
    torch.save({"model": {"w": torch.zeros(2)}, "optimizer": shutil.Error("not a tensor")}, tmp_path / "obj.pth")
    with pytest.raises(CheckpointReadError, match="obj.pth is refused.*shutil.Error") as caught:
        load_pretrained(tmp_path / "obj.pth")
    message = str(caught.value)
    assert "weights_only" not in message and "\n" not in message and "state_dict()" in message


def test_load_restores_a_checkpoint_a_killed_save_moved_aside(hf_dir, tmp_path):
    """A save killed between its two renames leaves only `.K.old-<pid>`: load_pretrained(K) puts it back."""
    from tests.helpers.processes import dead_pid

    config, params = load_pretrained(hf_dir)
    target = save_pretrained(tmp_path / "K", config, params)
    target.rename(tmp_path / f".K.old-{dead_pid()}")
    _assert_same_params(load_pretrained(target)[1], params)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["K"]
