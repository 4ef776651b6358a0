"""EoMT and EoMT-DINOv3 image models: fp32 parity with HF's models through `load_pretrained` (three
configs each, masked attention on and off, and an EoMT-DINOv3 gated MLP with gelu as with silu),
`export_hf` back to transformers, the image checkpoint as a VidEoMT (`model_type="videomt"`), and
`init_videomt_from` (full and backbone-only).

Letters: B images, T frames, Q queries, K+1 classes, h/w mask grid, D hidden.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

from tests.helpers.family import build_eomt, jitted_forward, max_logit_diff, random_images, run_eomt
from videomt_jax.config import VideomtConfig
from videomt_jax.modeling.family import model_for
from videomt_jax.weights.api import export_hf, load_pretrained, load_pretrained_with_report
from videomt_jax.weights.init_from import init_videomt_from
from videomt_jax.weights.tables import ConversionError

ATOL = 2e-5


def _labels(n: int) -> dict[int, str]:
    return {i: f"class_{i}" for i in range(n)}


# (kind, HF config fields, attn_mask_probs): sizes, registers and query blocks differ; masking on in some.
SPECS = {
    "eomt_nb2_masked": (
        "eomt",
        dict(
            hidden_size=32,
            num_hidden_layers=3,
            num_attention_heads=2,
            num_blocks=2,
            image_size=32,
            patch_size=8,
            num_queries=5,
            id2label=_labels(3),
        ),
        (1.0, 1.0),
    ),
    "eomt_swiglu_reg0": (
        "eomt",
        dict(
            hidden_size=48,
            num_hidden_layers=2,
            num_attention_heads=3,
            num_blocks=1,
            image_size=32,
            patch_size=8,
            num_queries=4,
            num_register_tokens=0,
            use_swiglu_ffn=True,
            id2label=_labels(2),
        ),
        (0.0,),
    ),
    "eomt_allquery_half_masked": (
        "eomt",
        dict(
            hidden_size=64,
            num_hidden_layers=3,
            num_attention_heads=4,
            num_blocks=3,
            image_size=64,
            patch_size=16,
            num_queries=6,
            num_register_tokens=2,
            num_upscale_blocks=1,
            id2label=_labels(4),
        ),
        (0.0, 1.0, 0.0),
    ),
    "v3_nb2_masked": (
        "eomt_dinov3",
        dict(
            hidden_size=32,
            num_hidden_layers=3,
            num_attention_heads=2,
            num_blocks=2,
            image_size=32,
            patch_size=8,
            num_queries=5,
            intermediate_size=64,
            id2label=_labels(3),
        ),
        (1.0, 1.0),
    ),
    "v3_gated_keybias_reg0": (
        "eomt_dinov3",
        dict(
            hidden_size=48,
            num_hidden_layers=2,
            num_attention_heads=3,
            num_blocks=1,
            image_size=32,
            patch_size=8,
            num_queries=4,
            num_register_tokens=0,
            key_bias=True,
            use_gated_mlp=True,
            hidden_act="silu",
            intermediate_size=80,
            id2label=_labels(2),
        ),
        (0.0,),
    ),
    "v3_gated_gelu_nb2": (
        "eomt_dinov3",
        dict(
            hidden_size=32,
            num_hidden_layers=3,
            num_attention_heads=2,
            num_blocks=2,
            image_size=32,
            patch_size=8,
            num_queries=5,
            use_gated_mlp=True,
            intermediate_size=48,
            id2label=_labels(3),
        ),
        (0.0, 0.0),
    ),
    "v3_allquery_last_masked": (
        "eomt_dinov3",
        dict(
            hidden_size=64,
            num_hidden_layers=3,
            num_attention_heads=4,
            num_blocks=3,
            image_size=64,
            patch_size=16,
            num_queries=6,
            num_register_tokens=2,
            num_upscale_blocks=1,
            intermediate_size=96,
            id2label=_labels(4),
        ),
        (0.0, 0.0, 1.0),
    ),
}
MEASURED: dict[str, float] = {}


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """name -> (HF model, its save_pretrained directory)."""
    built = {}

    def get(name: str):
        if name not in built:
            kind, fields, probs = SPECS[name]
            model = build_eomt(kind, seed=len(name), attn_mask_probs=probs, **fields)
            directory = tmp_path_factory.mktemp(name)
            model.save_pretrained(directory)
            built[name] = (model, directory)
        return built[name]

    return get


@pytest.mark.parametrize("name", list(SPECS))
def test_eomt_parity(saved, name: str):
    model, directory = saved(name)
    config, params = load_pretrained(directory)
    kind, _, probs = SPECS[name]
    assert config.model_type == "eomt" and config.backbone == ("dinov3" if kind == "eomt_dinov3" else "dinov2")
    assert config.attn_mask_probs == probs
    images = random_images(config, 2, 1, seed=5)
    ref = run_eomt(model, images)
    out = jitted_forward(config)(params, jnp.asarray(images))
    MEASURED[name] = max_logit_diff(out, ref)
    assert MEASURED[name] <= ATOL, MEASURED[name]
    if any(probs):  # the mask acts: without it the outputs differ clearly
        plain = jitted_forward(config.replace(attn_mask_probs=None))(params, jnp.asarray(images))
        assert max_logit_diff(plain, ref) > 1e-2


def test_random_masking_needs_an_rng(saved):
    model, directory = saved("eomt_nb2_masked")
    config, params = load_pretrained(directory)
    half = config.replace(attn_mask_probs=(0.5, 0.5))
    images = jnp.asarray(random_images(config, 1, 1))
    with pytest.raises(ValueError, match="attn_mask"):
        jax.eval_shape(lambda p: model_for(half).apply({"params": p}, images), params)
    apply = jax.jit(lambda p, k: model_for(half).apply({"params": p}, images, rngs={"attn_mask": k}))
    out = apply(params, jax.random.key(0))
    assert out.class_logits.shape == (1, 1, config.num_queries, config.num_labels + 1)


@pytest.mark.parametrize("name", ["eomt_allquery_half_masked", "v3_nb2_masked"])
def test_export_hf_loads_in_transformers(saved, tmp_path, name: str):
    model, directory = saved(name)
    config, params = load_pretrained(directory)
    export_hf(tmp_path / "out", config, params)
    cls = type(model)
    again, info = cls.from_pretrained(tmp_path / "out", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    for key, value in model.state_dict().items():
        assert torch.equal(again.state_dict()[key], value), key


@pytest.mark.parametrize("name", ["eomt_swiglu_reg0", "v3_nb2_masked"])
def test_image_checkpoint_as_videomt(saved, name: str):
    model, directory = saved(name)
    eomt_config, eomt_params = load_pretrained(directory)
    config, params, report = load_pretrained_with_report(directory, model_type="videomt")
    assert config.model_type == "videomt" and config.backbone == eomt_config.backbone and config.attn_mask_probs is None
    assert set(params["query_updater"]) == {"kernel", "bias"} and report.fresh == [
        "query_updater/kernel",
        "query_updater/bias",
    ]
    assert params["query_updater"]["kernel"].shape == (config.hidden_size, config.hidden_size)
    images = random_images(config, 1, 2, seed=7)
    video = jitted_forward(config)(params, jnp.asarray(images))
    image = jitted_forward(eomt_config.replace(attn_mask_probs=None))(eomt_params, jnp.asarray(images))
    np.testing.assert_allclose(
        video.class_logits[:, 0], image.class_logits[:, 0], atol=1e-5
    )  # frame 0: no propagation yet
    assert float(jnp.abs(video.class_logits[:, 1] - image.class_logits[:, 1]).max()) > 1e-3  # frame 1 uses the updater


def test_init_from_eomt_with_new_labels(saved):
    _, directory = saved("v3_nb2_masked")
    found, _ = load_pretrained(directory, model_type="videomt")
    config = found.replace(id2label=_labels(7))
    params, report = init_videomt_from(directory, config, jax.random.key(1))
    assert {"heads/class_predictor/kernel", "query_updater/kernel"} <= set(report.fresh)
    assert (
        "heads/mask_head/fc1/kernel" in report.from_checkpoint
        and params["heads"]["class_predictor"]["kernel"].shape[1] == 8
    )
    with pytest.raises(ConversionError, match="num_attention_heads"):
        init_videomt_from(directory, config.replace(num_attention_heads=4), jax.random.key(1))


@pytest.mark.parametrize("kind", ["dinov3_vit", "dinov2_with_registers"])
def test_backbone_only_init(tmp_path, kind: str):
    if kind == "dinov3_vit":
        hf = transformers.DINOv3ViTConfig(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            patch_size=8,
            image_size=32,
            num_register_tokens=4,
        )
        backbone = transformers.DINOv3ViTModel(hf)
        config = VideomtConfig.preset(
            "dinov3-small",
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_blocks=1,
            image_size=32,
            patch_size=8,
            num_queries=3,
            intermediate_size=64,
        )
    else:
        hf = transformers.Dinov2WithRegistersConfig(
            hidden_size=32, num_hidden_layers=2, num_attention_heads=2, patch_size=8, image_size=32
        )
        backbone = transformers.Dinov2WithRegistersModel(hf)
        config = VideomtConfig(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_blocks=1,
            image_size=32,
            patch_size=8,
            num_queries=3,
        )
    with torch.no_grad():
        for p in backbone.parameters():
            p.add_(0.1 * torch.randn(p.shape))
    backbone.save_pretrained(tmp_path / "bb")
    params, report = init_videomt_from(tmp_path / "bb", config, jax.random.key(0))
    assert (
        "query" in report.fresh
        and "heads/class_predictor/kernel" in report.fresh
        and "query_updater/kernel" in report.fresh
    )
    assert (
        "layernorm/scale" in report.from_checkpoint
        and "query_encoder/layers/block/attention/qkv/kernel" in report.from_checkpoint
    )
    sd = backbone.state_dict()
    layer0 = "model.layer.0." if kind == "dinov3_vit" else "encoder.layer.0."
    np.testing.assert_array_equal(
        params["encoder"]["layers"]["block"]["attention"]["qkv"]["kernel"][0][:, :32],
        sd[f"{layer0}attention.q_proj.weight"].numpy().T,
    )
    if kind == "dinov2_with_registers":  # CLS position folded into the CLS token
        want = sd["embeddings.cls_token"] + sd["embeddings.position_embeddings"][:, :1]
        np.testing.assert_allclose(params["embeddings"]["cls_token"], want.numpy(), rtol=1e-6)
    with pytest.raises(ConversionError, match="layer_norm_eps"):
        init_videomt_from(tmp_path / "bb", config.replace(layer_norm_eps=1e-3), jax.random.key(0))


def teardown_module(module):
    print("\n" + ", ".join(f"{k} {v:.2e}" for k, v in sorted(MEASURED.items())))
