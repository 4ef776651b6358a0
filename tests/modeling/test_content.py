"""`modeling/content.py`: a clip at the top left of a larger canvas, with `content_hw`, gives inside its
region what it gives alone at its own size (DINOv2 and DINOv3, deep supervision, remat)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from videomt_jax.config import VideomtConfig
from videomt_jax.modeling.family import init_params
from videomt_jax.modeling.videomt import VideomtModel
from videomt_jax.ops.resize import antialias_matrix_traced, antialias_taps, taps_matrix

pytestmark = pytest.mark.slow  # run first under xdist (conftest.py)

BASE = dict(
    hidden_size=32,
    num_hidden_layers=3,
    num_attention_heads=2,
    num_blocks=2,
    image_size=64,
    patch_size=8,
    num_queries=5,
    num_register_tokens=1,
    id2label={0: "a", 1: "b", 2: "c"},
)
CONFIGS = {
    "dinov2": VideomtConfig(**BASE),
    "dinov3": VideomtConfig(**BASE, backbone="dinov3", key_bias=False, layer_norm_eps=1e-5),
}
CANVAS = (64, 72)
SIZES = ((40, 56), (64, 24))  # each clip's own padded size (multiples of the patch)


@pytest.mark.parametrize("n_in", [16, 40])
def test_traced_matrix_equals_the_host_taps(n_in):
    for n_out in (7, 16, 24, 41, 48):
        for name in ("bicubic", "bilinear"):
            got = np.asarray(jax.jit(lambda n, name=name: antialias_matrix_traced(n_in, n, 50, name))(n_out))
            np.testing.assert_allclose(got[:n_out], taps_matrix(antialias_taps(n_in, n_out, name), n_in), atol=5e-7)
            assert not got[n_out:].any()


def _run(model, params, videos, **kwargs):
    fn = jax.jit(lambda p, v: model.apply({"params": p}, v, interpolate_pos_encoding=True, return_aux=True, **kwargs))
    return jax.device_get(fn(params, videos))


# both backbones, both head paths (all frames at once; per (frame, prediction) under remat)
@pytest.mark.parametrize(("backbone", "remat"), [("dinov2", "none"), ("dinov3", "full")])
def test_each_clip_on_a_canvas_equals_the_clip_alone(backbone, remat):
    cfg = CONFIGS[backbone]
    params = init_params(cfg, jax.random.key(0))
    params = jax.tree.map(lambda x: x + 0.05 * jax.random.normal(jax.random.key(1), x.shape), params)  # non-trivial
    rng = np.random.default_rng(0)
    canvas = rng.normal(size=(len(SIZES), 3, *CANVAS, 3)).astype(np.float32) * 3  # garbage outside the regions
    clips = []
    for i, (h, w) in enumerate(SIZES):
        clips.append(rng.normal(size=(1, 3, h, w, 3)).astype(np.float32))
        canvas[i, :, :h, :w] = clips[-1][0]
    model = VideomtModel(cfg, remat=remat)
    together = _run(model, params, jnp.asarray(canvas), content_hw=jnp.asarray(SIZES, jnp.int32))
    stride = together.mask_stride
    for i, (h, w) in enumerate(SIZES):
        alone = _run(VideomtModel(cfg), params, jnp.asarray(clips[i]))
        scale = np.abs(alone.class_logits).max()
        np.testing.assert_allclose(together.class_logits[i], alone.class_logits[0], atol=2e-5 * scale)
        np.testing.assert_allclose(together.aux_class_logits[:, i], alone.aux_class_logits[:, 0], atol=2e-5 * scale)
        mh, mw = h // stride, w // stride
        region = together.mask_logits[i, ..., :mh, :mw]
        np.testing.assert_allclose(region, alone.mask_logits[0], atol=2e-5 * np.abs(alone.mask_logits).max())
        aux_region = together.aux_mask_logits[:, i, ..., :mh, :mw]
        np.testing.assert_allclose(aux_region, alone.aux_mask_logits[:, 0], atol=2e-5 * np.abs(alone.mask_logits).max())


def test_full_content_equals_no_content():
    cfg = CONFIGS["dinov2"]
    params = init_params(cfg, jax.random.key(0))
    videos = jnp.asarray(np.random.default_rng(1).normal(size=(2, 2, *CANVAS, 3)), jnp.float32)
    model = VideomtModel(cfg)
    full = _run(model, params, videos, content_hw=jnp.asarray([CANVAS, CANVAS], jnp.int32))
    plain = _run(model, params, videos)
    np.testing.assert_allclose(full.mask_logits, plain.mask_logits, atol=1e-4 * np.abs(plain.mask_logits).max())
    np.testing.assert_allclose(full.class_logits, plain.class_logits, atol=1e-4 * np.abs(plain.class_logits).max())


def test_content_shape_is_checked():
    cfg = CONFIGS["dinov2"]
    params = init_params(cfg, jax.random.key(0))
    with pytest.raises(ValueError, match="content_hw must be"):
        VideomtModel(cfg).apply(
            {"params": params}, jnp.zeros((2, 1, 64, 64, 3)), content_hw=jnp.zeros((3, 2), jnp.int32)
        )


def test_dinov3_training_rescales_the_rotary_coordinates():
    from videomt_jax.modeling.content import rescale_factor, rope_tables_traced, trains_with_randomness
    from videomt_jax.modeling.dinov3 import rope_tables

    cfg = CONFIGS["dinov3"].replace(pos_embed_rescale=2.0)
    factors = np.asarray([rescale_factor(cfg, jax.random.key(i)) for i in range(200)])
    assert 0.5 <= factors.min() < 0.6 and 1.8 < factors.max() <= 2.0  # log-uniform in [1/2, 2]
    assert abs(np.log(factors).mean()) < 0.15
    assert rescale_factor(CONFIGS["dinov2"], jax.random.key(0)) is None
    assert rescale_factor(cfg.replace(pos_embed_rescale=None), jax.random.key(0)) is None
    assert trains_with_randomness(cfg) and not trains_with_randomness(CONFIGS["dinov2"])
    grid = jnp.asarray([[8, 9]], jnp.int32)
    plain = rope_tables(cfg, (8, 9))
    same = rope_tables_traced(cfg, grid, (8, 9))
    np.testing.assert_allclose(same[0][0], plain[0], atol=2e-5)  # float32 on the device vs float64 on the host
    half = rope_tables_traced(cfg, grid, (8, 9), jnp.float32(0.5))
    e = cfg.head_dim  # HF's formula: centres in [-1, 1] times the factor, 2 pi c / theta^(4i/E), tiled
    inv_freq = 1.0 / cfg.rope_theta ** (np.arange(0, e, 4) / e)
    yy, xx = np.meshgrid(*[(np.arange(n) + 0.5) / n * 2 - 1 for n in (8, 9)], indexing="ij")
    coords = 0.5 * np.stack([yy.ravel(), xx.ravel()], -1)  # [G, 2]
    angles = np.tile((2 * np.pi * coords[:, :, None] * inv_freq).reshape(len(coords), -1), (1, 2))
    np.testing.assert_allclose(half[0][0], np.cos(angles), atol=2e-5)
    np.testing.assert_allclose(half[1][0], np.sin(angles), atol=2e-5)
    # in training (deterministic=False) the draw changes the output; at inference nothing is drawn
    params = init_params(cfg, jax.random.key(0))
    videos = jnp.asarray(np.random.default_rng(0).normal(size=(1, 2, 64, 64, 3)), jnp.float32)
    train = VideomtModel(cfg, deterministic=False)
    a, b = (train.apply({"params": params}, videos, rngs={"dropout": jax.random.key(k)}).mask_logits for k in (1, 2))
    assert not np.allclose(a, b)
    ref = VideomtModel(cfg).apply({"params": params}, videos).mask_logits
    off = VideomtModel(cfg.replace(pos_embed_rescale=None), deterministic=False)
    np.testing.assert_allclose(
        off.apply({"params": params}, videos, rngs={"dropout": jax.random.key(1)}).mask_logits,
        ref,
        atol=1e-4 * float(np.abs(ref).max()),
    )
