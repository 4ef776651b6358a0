"""`init_videomt_from` with a patch-size change: a patch-14 DINOv2 backbone PI-resized into a patch-16 VidEoMT.

Letters: B videos, T frames, D features.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import torch
import torch.nn.functional as F
import transformers

from videomt_jax.config import VideomtConfig
from videomt_jax.modeling.embeddings import PatchEmbed
from videomt_jax.modeling.family import model_for
from videomt_jax.weights.init_from import init_videomt_from


def test_init_patch16_videomt_from_patch14_dinov2(tmp_path):
    hf = transformers.Dinov2WithRegistersConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, patch_size=14, image_size=56
    )
    torch.manual_seed(0)
    backbone = transformers.Dinov2WithRegistersModel(hf)
    backbone.save_pretrained(tmp_path / "bb")
    config = VideomtConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, num_blocks=1, image_size=64,
                           patch_size=16, num_queries=3)
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
    big = F.interpolate(torch.from_numpy(patches).double(), size=(16, 16), mode="bicubic", antialias=True,
                        align_corners=False).numpy()  # [N, C, 16, 16]
    big = big.reshape(4, 4, 3, 16, 16).transpose(0, 3, 1, 4, 2).reshape(1, 64, 64, 3).astype(np.float32)
    ours = PatchEmbed(config).apply({"params": embed}, jnp.asarray(big))  # [1, 4, 4, D]
    with torch.no_grad():
        ref = backbone.embeddings.patch_embeddings.projection(torch.from_numpy(image.transpose(0, 3, 1, 2)))
    np.testing.assert_allclose(np.asarray(ours), ref.numpy().transpose(0, 2, 3, 1), atol=1e-4)

    video = jnp.asarray(rng.standard_normal((1, 2, 64, 64, 3)), jnp.float32)  # [B, T, H, W, C]
    out = jax.jit(lambda p, x: model_for(config).apply({"params": p}, x))(params, video)
    assert out.class_logits.shape == (1, 2, 3, config.num_labels + 1)
    assert bool(jnp.isfinite(out.class_logits).all()) and bool(jnp.isfinite(out.mask_logits).all())
