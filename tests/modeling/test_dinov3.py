"""DINOv3 VidEoMT: fp32 parity with a reference built from HF's EoMT-DINOv3 layers in the authors'
forward (tests/helpers/family.py), on four configs (gated MLPs with gelu and with silu); any input size
without resampling; the authors' `.pth` layout (plain and fused q|k|v) both ways, checked against a
torch module laid out as theirs; clear errors for mixed or truncated checkpoints.

Letters: B videos, T frames, Q queries, K+1 classes, h/w mask grid, N tokens, D hidden.
"""

from __future__ import annotations

import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

from tests.helpers.family import (
    build_eomt,
    jitted_forward,
    max_logit_diff,
    numpy_state_dict,
    random_images,
    random_updater,
    reference_videomt_dinov3,
)
from tests.helpers.hf import build_hf_model, hf_to_original_state_dict
from videomt_jax.config import VideomtConfig
from videomt_jax.weights.api import export_hf, load_pretrained, load_pretrained_with_report
from videomt_jax.weights.hf_eomt import config_from_eomt_dict, eomt_state_dict_to_params
from videomt_jax.weights.original_dinov3 import params_to_original_dinov3, save_original_dinov3
from videomt_jax.weights.tables import ConversionError

ATOL = 2e-5  # class and mask logits vs the reference (fp32)


def _labels(n: int) -> dict[int, str]:
    return {i: f"class_{i}" for i in range(n)}


# (HF EomtDinov3Config fields, batch, frames): sizes, register counts, query blocks, biases, MLPs differ.
SPECS = {
    "nokeybias_reg4_nb2": (
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
        2,
        3,
    ),
    "keybias_gated_reg0_nb1": (
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
            rope_parameters={"rope_theta": 50.0, "rope_type": "default"},
            id2label=_labels(2),
        ),
        1,
        3,
    ),
    # gated MLP with HF's default hidden_act: the gate applies gelu (HF DINOv3), not DINOv2's fixed SiLU
    "gated_gelu_nb2": (
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
        1,
        2,
    ),
    "allquery_reg2_patch16_up1": (
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
            layer_norm_eps=1e-5,
            id2label=_labels(4),
        ),
        2,
        2,
    ),
}
MEASURED: dict[str, float] = {}


@functools.cache
def _case(name: str):
    """(HF EoMT-DINOv3 layers, query updater, our config, our params) for one spec."""
    fields, _, _ = SPECS[name]
    model = build_eomt("eomt_dinov3", seed=len(name), **fields)
    updater = random_updater(fields["hidden_size"], len(name))
    config = config_from_eomt_dict(model.config.to_dict(), name).replace(model_type="videomt", attn_mask_probs=None)
    config, params = eomt_state_dict_to_params(config, numpy_state_dict(model, {"query_updater": updater}), name)
    return model, updater, config, params


@pytest.mark.parametrize("name", list(SPECS))
def test_dinov3_videomt_parity(name: str):
    model, updater, config, params = _case(name)
    assert config.backbone == "dinov3" and config.model_type == "videomt"
    _, batch, frames = SPECS[name]
    videos = random_images(config, batch, frames, seed=2)
    ref = reference_videomt_dinov3(model, updater, videos)
    out = jitted_forward(config)(params, jnp.asarray(videos))
    MEASURED[name] = max_logit_diff(out, ref)
    assert MEASURED[name] <= ATOL, MEASURED[name]
    assert np.abs(ref["mask_logits"]).max() > 0.5  # not trivially small


def test_any_input_size_needs_no_resampling():
    """DINOv3 weights do not depend on the image size: the same weights at 48x32 match HF's rotary
    tables computed for that grid (an HF model built with that image size)."""
    model, updater, config, params = _case("nokeybias_reg4_nb2")
    fields = {**SPECS["nokeybias_reg4_nb2"][0], "image_size": 48}
    other = build_eomt("eomt_dinov3", seed=0, **fields)
    other.load_state_dict(model.state_dict())
    videos = random_images(config, 1, 2, seed=3, size=(48, 48))
    ref = reference_videomt_dinov3(other, updater, videos)
    out = jitted_forward(config)(params, jnp.asarray(videos))  # no interpolate flag needed
    MEASURED["any_size_48"] = max_logit_diff(out, ref)
    assert MEASURED["any_size_48"] <= ATOL


def _authors_module(config: VideomtConfig) -> torch.nn.Module:
    """An empty torch module laid out as the authors' DINOv3 VidEoMT (detectron2 meta-arch + HF backbone
    renamed as their `vit.py` does), to check that our export loads into their structure strictly."""
    hf = transformers.DINOv3ViTConfig(
        hidden_size=config.hidden_size,
        num_hidden_layers=config.num_hidden_layers,
        num_attention_heads=config.num_attention_heads,
        intermediate_size=config.mlp_hidden_size,
        patch_size=config.patch_size,
        num_register_tokens=config.num_register_tokens,
        key_bias=config.key_bias,
        use_gated_mlp=config.use_swiglu_ffn,
        rope_theta=config.rope_theta,
    )
    vit = transformers.DINOv3ViTModel(hf)
    vit.patch_embed, vit.blocks = vit.embeddings, vit.model.layer
    del vit.embeddings, vit.patch_embed.mask_token, vit.model
    d = config.hidden_size
    scale = lambda: torch.nn.ModuleDict(
        dict(
            conv1=torch.nn.ConvTranspose2d(d, d, 2, 2),
            conv2=torch.nn.Conv2d(d, d, 3, padding=1, groups=d, bias=False),
            norm=torch.nn.LayerNorm(d),
        )
    )
    head = torch.nn.Module()
    head.encoder = torch.nn.Module()
    head.encoder.backbone = vit
    head.register_buffer("attn_mask_probs", torch.ones(config.num_blocks))
    head.q = torch.nn.Embedding(config.num_queries, d)
    head.query_updater = torch.nn.Linear(d, d)
    head.class_head = torch.nn.Linear(d, config.num_labels + 1)
    head.mask_head = torch.nn.Sequential(
        torch.nn.Linear(d, d), torch.nn.GELU(), torch.nn.Linear(d, d), torch.nn.GELU(), torch.nn.Linear(d, d)
    )
    head.upscale = torch.nn.Sequential(*[scale() for _ in range(config.num_upscale_blocks)])
    root = torch.nn.Module()
    root.backbone = head
    root.criterion = torch.nn.Module()
    root.criterion.register_buffer("empty_weight", torch.ones(config.num_labels + 1))
    return root


@pytest.mark.parametrize("fused", [False, True])
@pytest.mark.parametrize("name", ["nokeybias_reg4_nb2", "keybias_gated_reg0_nb1"])
def test_authors_pth_both_ways(tmp_path, name: str, fused: bool):
    model, updater, config, params = _case(name)
    path = save_original_dinov3(tmp_path / "authors.pth", config, params, fused=fused)
    if not fused:  # the layout the authors' code builds: every key, every shape
        sd = {k: torch.from_numpy(v) for k, v in params_to_original_dinov3(config, params).items()}
        _authors_module(config).load_state_dict(sd, strict=True)
        hf_sd = model.state_dict()
        np.testing.assert_array_equal(
            sd["backbone.encoder.backbone.blocks.0.attention.q_proj.weight"], hf_sd["layers.0.attention.q_proj.weight"]
        )
    got, got_params, report = load_pretrained_with_report(
        path,
        num_attention_heads=config.num_attention_heads,
        id2label=config.id2label,
        image_size=config.image_size,
        layer_norm_eps=config.layer_norm_eps,
        hidden_act=config.hidden_act,
        rope_theta=config.rope_theta,
    )  # not stored in their files
    assert report.source == "authors' DINOv3 .pth"
    assert (got.backbone, got.key_bias, got.rope_theta, got.num_blocks) == (
        "dinov3",
        config.key_bias,
        config.rope_theta,
        config.num_blocks,
    )
    for a, b in zip(jax.tree.leaves(got_params), jax.tree.leaves(params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_export_hf_layout_round_trip(tmp_path):
    model, updater, config, params = _case("allquery_reg2_patch16_up1")
    export_hf(tmp_path / "hf", config, params)
    hf, info = transformers.EomtDinov3ForUniversalSegmentation.from_pretrained(
        tmp_path / "hf", output_loading_info=True
    )
    assert set(info["unexpected_keys"]) == {"query_updater.weight", "query_updater.bias"} and not info["missing_keys"]
    for key, value in model.state_dict().items():
        if key != "attn_mask_probs":
            assert torch.equal(hf.state_dict()[key], value), key
    again, again_params = load_pretrained(tmp_path / "hf")
    assert again.model_type == "videomt" and again.backbone == "dinov3"
    for a, b in zip(jax.tree.leaves(again_params), jax.tree.leaves(params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_dinov2_file_with_dinov3_config_fails(tmp_path):
    config = VideomtConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_blocks=1,
        image_size=32,
        patch_size=8,
        num_queries=3,
    )
    hf = build_hf_model(config)
    path = tmp_path / "dinov2.pth"
    torch.save({"model": hf_to_original_state_dict(hf.state_dict(), config)}, path)
    with pytest.raises(ConversionError, match="DINOv2 backbone.*backbone='dinov3'"):
        load_pretrained(path, backbone="dinov3")


def test_truncated_rotary_settings_fail(tmp_path):
    _, _, config, params = _case("nokeybias_reg4_nb2")
    sd = {k: torch.from_numpy(v) for k, v in params_to_original_dinov3(config, params).items()}
    sd["backbone.encoder.backbone.rope_embeddings.inv_freq"] = torch.ones(2)  # head_dim 16 needs 4
    torch.save({"model": sd}, tmp_path / "bad.pth")
    with pytest.raises(ConversionError, match="inv_freq holds 2 rotary frequencies; head_dim 16"):
        load_pretrained(tmp_path / "bad.pth", num_attention_heads=2)
    data = json.loads(json.dumps(build_eomt("eomt_dinov3", **SPECS["nokeybias_reg4_nb2"][0]).config.to_dict()))
    data["rope_parameters"] = {"rope_type": "default"}  # rope_theta cut off
    with pytest.raises(ConversionError, match="rope_parameters must hold rope_theta"):
        config_from_eomt_dict(data, "config.json")


def test_dinov3_config_on_dinov2_weights_fails(tmp_path):
    """An EoMT-DINOv3 config.json next to DINOv2 EoMT weights: the error names the keys."""
    model = build_eomt(
        "eomt",
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_blocks=1,
        image_size=32,
        patch_size=8,
        num_queries=3,
    )
    model.save_pretrained(tmp_path / "ckpt")
    v3 = build_eomt(
        "eomt_dinov3",
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_blocks=1,
        image_size=32,
        patch_size=8,
        num_queries=3,
        intermediate_size=128,
    )
    v3.config.save_pretrained(tmp_path / "ckpt")
    with pytest.raises(ConversionError, match="position_embeddings"):
        load_pretrained(tmp_path / "ckpt")


def teardown_module(module):
    print("\n" + ", ".join(f"{k} {v:.2e}" for k, v in sorted(MEASURED.items())))
