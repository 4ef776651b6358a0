"""`init_videomt_from`: a patch-14 DINOv2 backbone PI-resized into a patch-16 VidEoMT, and the
authors' per-dataset segmenter `.pth` (their VidEoMT layout without `query_updater`).

Letters: B videos, T frames, D features.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F
import transformers
from flax import traverse_util

from tests.helpers.hf import build_hf_model, hf_to_original_state_dict
from videomt_jax.cli.train import _init_params
from videomt_jax.config import VideomtConfig
from videomt_jax.modeling.embeddings import PatchEmbed
from videomt_jax.modeling.family import model_for
from videomt_jax.weights.api import load_pretrained
from videomt_jax.weights.hf_videomt import hf_state_dict_to_params
from videomt_jax.weights.init_from import init_videomt_from
from videomt_jax.weights.original_dinov2 import SEGMENTER_NAME
from videomt_jax.weights.shapes import expected_shapes

# A small DINOv2 VidEoMT; hidden 128 = 2 heads of 64, the head count an authors' file implies.
SEGMENTER_CONFIG = VideomtConfig(
    hidden_size=128,
    num_hidden_layers=2,
    num_attention_heads=2,
    num_blocks=1,
    image_size=32,
    patch_size=8,
    num_queries=3,
    num_register_tokens=1,
    id2label={0: "a", 1: "b"},
)
QUERY_UPDATER = ["query_updater/bias", "query_updater/kernel"]
MASK_TOKEN = "embeddings/mask_token"  # timm has none: filled with zeros (original_dinov2.DEFAULTS)


def test_init_patch16_videomt_from_patch14_dinov2(tmp_path):
    hf = transformers.Dinov2WithRegistersConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, patch_size=14, image_size=56
    )
    torch.manual_seed(0)
    backbone = transformers.Dinov2WithRegistersModel(hf)
    backbone.save_pretrained(tmp_path / "bb")
    config = VideomtConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_blocks=1,
        image_size=64,
        patch_size=16,
        num_queries=3,
    )
    params, report = init_videomt_from(tmp_path / "bb", config, jax.random.key(0))
    kernel_path = "embeddings/patch_embeddings/kernel"
    assert kernel_path in report.from_checkpoint and kernel_path not in report.fresh
    assert "(14, 14) -> (16, 16)" in report.resampled[kernel_path]
    assert "query" in report.fresh and "layernorm/scale" in report.from_checkpoint
    embed = params["embeddings"]["patch_embeddings"]
    assert embed["kernel"].shape == (16, 16, 3, 32)

    # A 64x64 image made of 16x16 upsampled copies (torch bicubic, antialias, as timm) of a 56x56
    # image's 14x14 patches: our patch embedding of it equals HF's patch-14 convolution of the original.
    rng = np.random.default_rng(3)
    image = rng.standard_normal((1, 56, 56, 3)).astype(np.float32)
    patches = image.reshape(4, 14, 4, 14, 3).transpose(0, 2, 4, 1, 3).reshape(16, 3, 14, 14)  # [N, C, 14, 14]
    big = F.interpolate(
        torch.from_numpy(patches).double(), size=(16, 16), mode="bicubic", antialias=True, align_corners=False
    ).numpy()  # [N, C, 16, 16]
    big = big.reshape(4, 4, 3, 16, 16).transpose(0, 3, 1, 4, 2).reshape(1, 64, 64, 3).astype(np.float32)
    ours = PatchEmbed(config).apply({"params": embed}, jnp.asarray(big))  # [1, 4, 4, D]
    with torch.no_grad():
        ref = backbone.embeddings.patch_embeddings.projection(torch.from_numpy(image.transpose(0, 3, 1, 2)))
    np.testing.assert_allclose(np.asarray(ours), ref.numpy().transpose(0, 2, 3, 1), atol=1e-4)

    video = jnp.asarray(rng.standard_normal((1, 2, 64, 64, 3)), jnp.float32)  # [B, T, H, W, C]
    out = jax.jit(lambda p, x: model_for(config).apply({"params": p}, x))(params, video)
    assert out.class_logits.shape == (1, 2, 3, config.num_labels + 1)
    assert bool(jnp.isfinite(out.class_logits).all()) and bool(jnp.isfinite(out.mask_logits).all())


@pytest.fixture(scope="module")
def segmenter(tmp_path_factory):
    """(path, expected params): an authors' segmenter `.pth` as detectron2 saves it ({"model": ...}
    beside the trainer's entries), built from a random HF VidEoMT by dropping `query_updater`; the
    expected params are the HF model's, converted by the HF reader (another table than the authors')."""
    hf = build_hf_model(SEGMENTER_CONFIG, seed=5)
    state_dict = hf_to_original_state_dict(hf.state_dict(), SEGMENTER_CONFIG)
    dropped = [k for k in state_dict if k.startswith("backbone.query_updater.")]
    assert len(dropped) == 2
    state_dict = {k: v for k, v in state_dict.items() if k not in dropped}
    path = tmp_path_factory.mktemp("segmenter") / "yt_2019_small_segmenter.pth"
    torch.save({"model": state_dict, "iteration": 39999}, path)
    hf_sd = {k: v.numpy() for k, v in hf.state_dict().items()}
    return path, traverse_util.flatten_dict(hf_state_dict_to_params(SEGMENTER_CONFIG, hf_sd), sep="/")


def test_segmenter_inits_everything_but_the_query_updater(segmenter):
    """The authors' recipes start from a segmenter (their image model, `MODEL.WEIGHTS`): detectron2
    loads every key into VidEoMT and leaves the missing `query_updater` as built; so do we, and say so."""
    path, want = segmenter
    config, _ = load_pretrained(path)
    assert config.model_type == "eomt" and config.attn_mask_probs is None  # their segmenter never masks

    params, report = init_videomt_from(path, SEGMENTER_CONFIG, jax.random.key(1))
    assert report.source == SEGMENTER_NAME
    assert report.fresh == QUERY_UPDATER
    every = expected_shapes(SEGMENTER_CONFIG)
    assert sorted(report.from_checkpoint) == sorted(p for p in every if p not in QUERY_UPDATER)
    got = traverse_util.flatten_dict(params, sep="/")
    for p in report.from_checkpoint:
        expected = np.zeros_like(want[p]) if p == MASK_TOKEN else want[p]
        np.testing.assert_array_equal(np.asarray(got[p]), expected, err_msg=p)
    kernel = np.asarray(got["query_updater/kernel"])
    assert kernel.shape == (128, 128) and np.all(np.isfinite(kernel)) and kernel.std() > 0
    assert not np.allclose(kernel, want["query_updater/kernel"])  # not the model the file was cut from

    _, summary = _init_params(str(path), SEGMENTER_CONFIG, seed=0)  # `videomt-jax train --init PATH`
    assert f"[{SEGMENTER_NAME}]: {len(report.from_checkpoint)} parameters from the checkpoint" in summary
    assert "2 fresh (query_updater/bias, query_updater/kernel)" in summary

    # Another label set: the class head starts fresh too (detectron2 skips tensors of another shape).
    other = SEGMENTER_CONFIG.replace(id2label={i: str(i) for i in range(5)})
    _, report = init_videomt_from(path, other, jax.random.key(1))
    assert report.fresh == ["heads/class_predictor/bias", "heads/class_predictor/kernel", *QUERY_UPDATER]
