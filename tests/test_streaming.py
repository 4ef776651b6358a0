"""Streaming equals one call; any resolution (position embeddings resampled as timm does)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import videomt_jax as vm
from videomt_jax.modeling.embeddings import resample_pos_embed
from videomt_jax.modeling.xla_options import jit_model
from videomt_jax.streaming import split_chunks

CFG = vm.VideomtConfig(
    hidden_size=32,
    num_hidden_layers=3,
    num_attention_heads=2,
    num_blocks=2,
    image_size=32,
    patch_size=8,
    num_queries=6,
    id2label={0: "a", 1: "b", 2: "c"},
)


@pytest.fixture(scope="module")
def model_params():
    params = vm.init_params(CFG, jax.random.key(0))
    # non-trivial values everywhere: random biases, layer scales, query updater
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(1), len(leaves))
    leaves = [x + 0.1 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)]
    return vm.VideomtModel(CFG), jax.tree.unflatten(tree, leaves)


def apply(model, params, x, **kw):
    """The model's forward compiled as `VideoStreamer` compiles it (same XLA options)."""
    return jit_model(lambda p, v: model.apply({"params": p}, v, **kw))(params, x)


@pytest.fixture(scope="module")
def videos():
    return np.random.default_rng(0).normal(size=(2, 7, 32, 32, 3)).astype(np.float32)


@pytest.mark.parametrize("chunk", [1, 3, 7])
def test_chunks_equal_one_call(model_params, videos, chunk):
    model, params = model_params
    full = apply(model, params, videos)
    streamer = vm.VideoStreamer(model, params)
    outs = list(streamer.run(split_chunks(videos, chunk)))
    cls = np.concatenate([o.class_logits for o in outs], axis=1)
    msk = np.concatenate([o.mask_logits for o in outs], axis=1)
    scale = float(np.abs(full.mask_logits).max())
    assert cls.shape == full.class_logits.shape and msk.shape == full.mask_logits.shape
    assert np.abs(cls - full.class_logits).max() <= 1e-5 * max(1.0, float(np.abs(full.class_logits).max()))
    assert np.abs(msk - full.mask_logits).max() <= 1e-5 * max(1.0, scale)


def test_state_carries_queries(model_params, videos):
    """A chunk started from a fresh state differs from one continuing the video."""
    model, params = model_params
    streamer = vm.VideoStreamer(model, params)
    state = streamer.init(2)
    _, state = streamer.step(state, videos[:, :3])
    assert bool(np.all(np.asarray(state.started)))
    cont, _ = streamer.step(state, videos[:, 3:5])
    fresh, _ = streamer.step(streamer.init(2), videos[:, 3:5])
    assert np.abs(np.asarray(cont.class_logits) - np.asarray(fresh.class_logits)).max() > 1e-3


def test_stream_errors(model_params, videos):
    model, params = model_params
    streamer = vm.VideoStreamer(model, params)
    with pytest.raises(ValueError, match="5-D"):
        streamer.step(streamer.init(2), videos[0])
    with pytest.raises(ValueError, match="batch"):
        streamer.step(streamer.init(1), videos)
    with pytest.raises(ValueError, match="chunk_size"):
        list(split_chunks(videos, 0))


@pytest.mark.parametrize("src,dst", [((4, 4), (6, 10)), ((8, 8), (4, 6)), ((5, 7), (9, 3))])
def test_pos_embed_resample_matches_timm(src, dst):
    """timm's resample_abs_pos_embed = F.interpolate(bicubic, antialias=True, align_corners=False)."""
    pos = np.random.default_rng(0).normal(size=(src[0] * src[1], 16)).astype(np.float32)
    ref = (
        F.interpolate(
            torch.from_numpy(pos).reshape(1, *src, 16).permute(0, 3, 1, 2),
            size=dst,
            mode="bicubic",
            antialias=True,
            align_corners=False,
        )
        .permute(0, 2, 3, 1)
        .reshape(-1, 16)
        .numpy()
    )
    ours = np.asarray(resample_pos_embed(jnp.asarray(pos), src, dst))
    assert np.abs(ours - ref).max() < 1e-5


def test_pos_embed_identity_at_native_size():
    pos = jnp.asarray(np.random.default_rng(1).normal(size=(16, 8)), jnp.float32)
    assert resample_pos_embed(pos, (4, 4), (4, 4)) is pos


def test_any_resolution(model_params):
    model, params = model_params
    x = np.random.default_rng(2).normal(size=(1, 2, 48, 24, 3)).astype(np.float32)
    with pytest.raises(ValueError, match="interpolate_pos_encoding"):
        apply(model, params, x)
    out = apply(model, params, x, interpolate_pos_encoding=True)
    stride = CFG.mask_stride
    assert out.mask_logits.shape == (1, 2, CFG.num_queries, 48 // stride, 24 // stride)
    assert np.isfinite(np.asarray(out.mask_logits)).all()
    # at the native size the flag changes nothing
    y = np.random.default_rng(3).normal(size=(1, 2, 32, 32, 3)).astype(np.float32)
    a = apply(model, params, y)
    b = apply(model, params, y, interpolate_pos_encoding=True)
    assert np.array_equal(np.asarray(a.mask_logits), np.asarray(b.mask_logits))


def test_inference_params_cast_kernels_only_and_change_nothing(model_params, videos):
    """bf16 compute: kernels pre-cast once give bit-identical outputs; norms, biases, embeddings stay float32."""
    from videomt_jax.modeling.videomt import inference_params

    _, params = model_params
    cfg = CFG.replace(dtype="bfloat16")
    cast = inference_params(cfg, params)
    for path, leaf in jax.tree_util.tree_flatten_with_path(cast)[0]:
        want = jnp.bfloat16 if path[-1].key == "kernel" else jnp.float32
        assert leaf.dtype == want, jax.tree_util.keystr(path)
    assert inference_params(CFG, params) is params  # float32 compute: untouched
    model = vm.VideomtModel(cfg)
    ref, got = apply(model, params, videos[:, :3]), apply(model, cast, videos[:, :3])
    np.testing.assert_array_equal(np.asarray(got.class_logits), np.asarray(ref.class_logits))
    np.testing.assert_array_equal(np.asarray(got.mask_logits), np.asarray(ref.mask_logits))
    streamed = next(vm.VideoStreamer(model, params).run([videos[:, :3]]))
    np.testing.assert_array_equal(streamed.mask_logits, np.asarray(ref.mask_logits))
