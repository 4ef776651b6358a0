"""fp32 parity with Hugging Face's VidEoMT through every weight path, on four tiny configs.

For each config an HF model with non-trivial random weights is saved with `save_pretrained`, then
(1) `load_pretrained` of that directory, (2) the same weights rewritten as an authors' `.pth`, and
(3) `export_hf` back to transformers must all give HF's outputs. Plus: `scan_layers` = unrolled,
bf16 compute close to fp32, and clear errors for bad model input.

Letters: B videos, T frames, Q queries, K+1 classes, h/w mask grid, N tokens, D hidden.
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

from tests.helpers.hf import build_hf_model, hf_to_original_state_dict, random_videos, run_hf
from videomt_jax.config import VideomtConfig
from videomt_jax.modeling.videomt import VideomtModel
from videomt_jax.weights.api import export_hf, load_pretrained

OUTPUTS = ("class_logits", "mask_logits", "last_hidden_state")
FP32_ATOL = 1e-4  # max-abs difference to HF, every output
SCAN_ATOL = 1e-5  # scan_layers=True vs unrolled, same params
BF16_REL = 5e-2  # bf16 compute vs fp32: max-abs difference / max-abs fp32 value, per output


@dataclasses.dataclass(frozen=True)
class Spec:
    config: dict
    batch: int
    frames: int


def _labels(n: int) -> dict[int, str]:
    return {i: f"class_{i}" for i in range(n)}


SPECS = {
    # SwiGLU, 4 registers, 2 of 3 layers carry queries, patch 8, 2 upscale blocks
    "swiglu": Spec(
        dict(
            hidden_size=32,
            num_hidden_layers=3,
            num_attention_heads=2,
            num_blocks=2,
            image_size=32,
            patch_size=8,
            num_queries=5,
            use_swiglu_ffn=True,
            id2label=_labels(3),
        ),
        batch=2,
        frames=3,
    ),
    # no registers, 1 query block, patch 16, 1 upscale block
    "noreg_nb1_up1": Spec(
        dict(
            hidden_size=48,
            num_hidden_layers=2,
            num_attention_heads=3,
            num_blocks=1,
            image_size=64,
            patch_size=16,
            num_queries=4,
            num_register_tokens=0,
            num_upscale_blocks=1,
            id2label=_labels(2),
        ),
        batch=1,
        frames=3,
    ),
    # every layer carries queries (no plain encoder), 3 upscale blocks
    "all_query_up3": Spec(
        dict(
            hidden_size=64,
            num_hidden_layers=3,
            num_attention_heads=4,
            num_blocks=3,
            image_size=32,
            patch_size=8,
            num_queries=6,
            num_register_tokens=2,
            num_upscale_blocks=3,
            id2label=_labels(4),
        ),
        batch=2,
        frames=1,
    ),
    # 3 of 4 layers carry queries, patch 4, mlp_ratio 2
    "nb3_patch4": Spec(
        dict(
            hidden_size=32,
            num_hidden_layers=4,
            num_attention_heads=4,
            num_blocks=3,
            image_size=32,
            patch_size=4,
            num_queries=7,
            num_register_tokens=1,
            mlp_ratio=2,
            id2label=_labels(5),
        ),
        batch=1,
        frames=1,
    ),
}
MEASURED: dict[str, dict[str, float]] = {}  # filled by the tests, printed at the end (pytest -s)


@dataclasses.dataclass
class Case:
    name: str
    config: VideomtConfig
    model: torch.nn.Module
    directory: Path
    videos: np.ndarray
    reference: dict[str, np.ndarray]


def _build_case(name: str, directory: Path) -> Case:
    spec = SPECS[name]
    config = VideomtConfig(**spec.config)
    model = build_hf_model(config, seed=len(name))
    model.save_pretrained(directory / "hf")
    videos = random_videos(config, spec.batch, spec.frames, seed=1)
    return Case(name, config, model, directory, videos, run_hf(model, videos))


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    """name -> Case, each built (HF model, its save_pretrained dir, reference outputs) once per module."""
    built: dict[str, Case] = {}

    def get(name: str) -> Case:
        if name not in built:
            built[name] = _build_case(name, tmp_path_factory.mktemp(name))
        return built[name]

    return get


@functools.cache
def _forward(config: VideomtConfig):
    model = VideomtModel(config)
    return jax.jit(lambda params, videos: model.apply({"params": params}, videos))


def _architecture(config: VideomtConfig) -> dict:
    return {k: v for k, v in config.to_dict().items() if k != "extra"}


def _max_diffs(case: Case, config: VideomtConfig, params) -> dict[str, float]:
    out = _forward(config)(params, jnp.asarray(case.videos))
    diffs = {}
    for name in OUTPUTS:
        ours = np.asarray(getattr(out, name))
        assert ours.shape == case.reference[name].shape, name
        diffs[name] = float(np.abs(ours - case.reference[name]).max())
    return diffs


@pytest.mark.parametrize("name", list(SPECS))
def test_hf_checkpoint_parity(cases, name: str):
    case = cases(name)
    config, params = load_pretrained(case.directory / "hf")
    assert _architecture(config) == _architecture(case.config)
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(params))
    diffs = _max_diffs(case, case.config, params)  # same architecture; one compiled forward per case
    MEASURED[f"hf/{case.name}"] = diffs
    assert max(diffs.values()) <= FP32_ATOL, diffs
    # the logits are not trivially small: a 1e-4 bound means something
    assert np.abs(case.reference["mask_logits"]).max() > 0.5


# (case, timm SwiGLU layout): every case with its MLP as timm packs it, and the split layout once.
PTH_CASES = [(name, "packed") for name in SPECS] + [("swiglu", "split")]


@pytest.mark.parametrize("name, swiglu", PTH_CASES)
def test_original_pth_parity(cases, name: str, swiglu: str):
    case = cases(name)
    path = case.directory / f"authors_{swiglu}.pth"
    state_dict = hf_to_original_state_dict(case.model.state_dict(), case.config, swiglu=swiglu)
    torch.save({"model": state_dict, "iteration": 123}, path)
    config, params = load_pretrained(
        path, num_attention_heads=case.config.num_attention_heads, id2label=case.config.id2label
    )
    assert _architecture(config) == _architecture(case.config)
    diffs = _max_diffs(case, case.config, params)
    MEASURED[f"pth-{swiglu}/{case.name}"] = diffs
    assert max(diffs.values()) <= FP32_ATOL, diffs


@pytest.mark.parametrize("name", list(SPECS))
def test_export_hf_loads_in_transformers(cases, name: str):
    case = cases(name)
    config, params = load_pretrained(case.directory / "hf")
    export_hf(case.directory / "exported", config, params)
    model, info = transformers.VideomtForUniversalSegmentation.from_pretrained(
        case.directory / "exported", output_loading_info=True, attn_implementation="eager"
    )
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    original, exported = case.model.state_dict(), model.state_dict()
    assert set(exported) == set(original)
    for key, value in original.items():
        if key == "attn_mask_probs":  # written as ones (unused by the model)
            assert torch.equal(exported[key], torch.ones_like(value))
        else:
            assert torch.equal(exported[key], value), key
    again = run_hf(model.eval(), case.videos)
    for name in OUTPUTS:
        np.testing.assert_array_equal(again[name], case.reference[name])


def test_scan_layers_matches_unrolled(cases):
    case = cases("nb3_patch4")
    config = case.config
    _, params = load_pretrained(case.directory / "hf")
    videos = jnp.asarray(case.videos)
    unrolled = _forward(config)(params, videos)
    scanned = _forward(config.replace(scan_layers=True))(params, videos)
    for name in OUTPUTS:
        diff = float(jnp.abs(getattr(unrolled, name) - getattr(scanned, name)).max())
        MEASURED.setdefault("scan_vs_unrolled", {})[name] = diff
        assert diff <= SCAN_ATOL, (name, diff)


def test_bf16_compute_close_to_fp32(cases):
    case = cases("swiglu")
    config, params = load_pretrained(case.directory / "hf", dtype="bfloat16")
    assert config.dtype == "bfloat16" and all(x.dtype == jnp.float32 for x in jax.tree.leaves(params))
    out = _forward(config)(params, jnp.asarray(case.videos))
    for name in ("class_logits", "mask_logits"):
        ours = np.asarray(getattr(out, name))
        assert ours.dtype == np.float32  # logits come out float32 whatever the compute dtype
        rel = float(np.abs(ours - case.reference[name]).max() / np.abs(case.reference[name]).max())
        MEASURED.setdefault("bf16_rel", {})[name] = rel
        assert rel <= BF16_REL, (name, rel)


BAD_INPUTS = {
    "4-D input": (lambda c: np.zeros((1, *c.image_hw, 3), np.float32), ValueError, "5-D"),
    "wrong channel count": (lambda c: np.zeros((1, 1, *c.image_hw, 4), np.float32), ValueError, "channels"),
    "spatial size not the config's": (lambda c: np.zeros((1, 1, 16, 16, 3), np.float32), ValueError, "image_size"),
    "T = 0": (lambda c: np.zeros((1, 0, *c.image_hw, 3), np.float32), ValueError, "T=0"),
    "int dtype": (lambda c: np.zeros((1, 1, *c.image_hw, 3), np.uint8), TypeError, "floating"),
}


@pytest.mark.parametrize("what", list(BAD_INPUTS))
def test_bad_model_input_raises_clearly(what: str):
    config = VideomtConfig(**SPECS["swiglu"].config)
    make, error, text = BAD_INPUTS[what]
    params = jax.eval_shape(lambda: _init(config))
    with pytest.raises(error, match=text):
        VideomtModel(config).apply({"params": params}, make(config))


def _init(config: VideomtConfig):
    from videomt_jax.modeling.family import init_params

    return init_params(config, jax.random.key(0))


def teardown_module(module):
    for name, diffs in sorted(MEASURED.items()):
        print(f"\n{name}: " + ", ".join(f"{k} {v:.2e}" for k, v in diffs.items()), end="")
