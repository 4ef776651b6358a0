"""What travels with a model: its pixel normalisation (one processor for inference, training and
evaluation, round-tripping through save_pretrained / export_hf), its mask stride (on the output),
and attention dropout (HF semantics: dropout on the attention probabilities, training only).

Letters: B videos, T frames, H/W pixels, N tokens, D hidden, Q queries, K classes.
"""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import videomt_jax as vm
from videomt_jax.apps.pipeline import Segmenter
from videomt_jax.data.synthetic import SyntheticConfig
from videomt_jax.evaluation import synthetic
from videomt_jax.modeling.layers import Attention
from videomt_jax.modeling.outputs import VideomtOutput
from videomt_jax.postprocess import common
from videomt_jax.processing import PROCESSOR_CONFIG_NAME, VideoProcessor, load_processor
from videomt_jax.training.recipes import recipe_from_dict

SYN = SyntheticConfig(image_size=32, num_frames=2)
CFG = vm.VideomtConfig(
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    num_blocks=1,
    image_size=32,
    patch_size=8,
    num_queries=6,
    id2label=SYN.id2label,
)
# Not ImageNet's: every consumer must take these from the model's processor.
MEAN, STD = (0.25, 0.5, 0.75), (0.5, 0.25, 0.125)


class Seen(Exception):
    """Raised by the stand-in model once it has recorded its input (nothing compiles)."""


def random_params(config: vm.VideomtConfig, scale: float = 0.0) -> dict:
    """Parameters of the config's shapes (no init compile): zeros, or normal(0, scale) with scale > 0."""
    shapes = jax.eval_shape(lambda key: vm.init_params(config, key), jax.random.key(0))
    rng = np.random.default_rng(0)
    return jax.tree.map(lambda s: (scale * rng.standard_normal(s.shape)).astype(np.float32), shapes)


# ------------------------------------------------------------------------------------------ pixels
def test_processor_config_round_trips_through_save_pretrained_and_export_hf(tmp_path):
    from transformers.models.videomt.video_processing_videomt import VideomtVideoProcessor

    proc = VideoProcessor.from_config(CFG, mean=MEAN, std=STD, uint8_resize="float", max_pixels=12345)
    params = random_params(CFG)
    vm.save_pretrained(tmp_path / "native", CFG, params, processor=proc)
    assert VideoProcessor.from_pretrained(tmp_path / "native") == proc  # JAX-only fields too
    vm.export_hf(tmp_path / "hf", CFG, params, processor=proc)
    hf_dict = json.loads((tmp_path / "hf" / PROCESSOR_CONFIG_NAME).read_text())
    assert "videomt_jax" not in hf_dict  # the HF layout holds HF keys only
    hf = VideomtVideoProcessor.from_pretrained(tmp_path / "hf")
    assert tuple(hf.image_mean) == MEAN and tuple(hf.image_std) == STD
    assert (hf.size.height, hf.size.width) == (32, 32) and hf.resample == 2 and hf.rescale_factor == 1 / 255
    assert load_processor(tmp_path / "hf", CFG) == VideoProcessor.from_config(CFG, mean=MEAN, std=STD)
    # a checkpoint without a processor config gets the config's defaults
    assert load_processor(tmp_path, CFG) == VideoProcessor.from_config(CFG)


def test_one_normalisation_for_training_evaluation_and_segment(tmp_path, monkeypatch):
    frames = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)  # [T, H, W, 3]
    expected = (frames / 255.0 - np.asarray(MEAN)) / np.asarray(STD)  # by hand, float64
    # training: a recipe whose processor has the model's mean/std
    recipe = recipe_from_dict(
        {
            "model": {
                k: v
                for k, v in CFG.to_dict().items()
                if k
                in (
                    "hidden_size",
                    "num_hidden_layers",
                    "num_attention_heads",
                    "num_blocks",
                    "image_size",
                    "patch_size",
                    "num_queries",
                )
            },
            "train": {"num_frames": 2, "batch_size": 1},
            "data": {"image_size": 32},
            "augment": None,
            "processor": {"mean": list(MEAN), "std": list(STD)},
        }
    )
    from videomt_jax.data.synthetic import make_clip

    clip = make_clip(recipe.data, "train", 0)
    train_pixels = recipe.batches()(0).pixel_values[0]  # [T, H, W, 3]
    np.testing.assert_allclose(train_pixels, (clip.frames / 255.0 - MEAN) / STD, rtol=0, atol=2e-6)
    # the model directory carries that processor
    params = random_params(recipe.model)
    vm.save_pretrained(tmp_path / "model", recipe.model, params, processor=recipe.processor)
    processor = load_processor(tmp_path / "model", recipe.model)
    assert processor.mean == MEAN and processor.std == STD
    # evaluation: capture the pixels the jitted forward receives
    seen: list[np.ndarray] = []

    def record(*args):
        seen.append(np.asarray(args[-1]))
        raise Seen

    monkeypatch.setattr(synthetic, "jit_model", lambda fn: record)
    with pytest.raises(Seen):
        synthetic.evaluate_model(
            recipe.model, params, recipe.data, "train", num_clips=1, batch_size=1, processor=processor
        )
    # segment: capture what the streamer receives
    seg = Segmenter.from_pretrained(tmp_path / "model", task="semantic")
    seg.streamer.step = record
    with pytest.raises(Seen):
        seg.run([clip.frames])
    train_pixels, eval_pixels, segment_pixels = train_pixels, seen[0][0], seen[1][0]
    np.testing.assert_array_equal(eval_pixels, train_pixels)
    np.testing.assert_array_equal(segment_pixels, train_pixels)
    # and the processor itself, on arbitrary frames
    np.testing.assert_allclose(processor.normalize(frames), expected, rtol=0, atol=2e-6)
    np.testing.assert_array_equal(np.asarray(processor(frames))[0], processor.normalize(frames))


# ------------------------------------------------------------------------------------------ stride
@pytest.mark.parametrize("patch", [8, 32])
def test_output_carries_its_mask_stride(patch):
    cfg = CFG.replace(image_size=64, patch_size=patch)
    params = random_params(cfg, 0.2)
    videos = np.random.default_rng(2).normal(size=(1, 2, 64, 32, 3)).astype(np.float32)
    model = vm.VideomtModel(cfg)
    out = jax.jit(lambda p, v: model.apply({"params": p}, v, interpolate_pos_encoding=True))(params, videos)
    stride = patch // 4  # 2 upscale blocks
    assert out.mask_stride == stride and out.mask_logits.shape[-2:] == (64 // stride, 32 // stride)
    by_hand = VideomtOutput(class_logits=out.class_logits, mask_logits=out.mask_logits)  # no stride
    target, valid = (50, 40), (40, 20)  # crop the padding off the input, resize to another size
    for fn in (vm.post_process_semantic, vm.video_instance):  # per frame, per video
        carried = jax.tree.leaves(fn(out, target, valid_size=valid))
        explicit = jax.tree.leaves(fn(by_hand, target, valid_size=valid, mask_stride=stride))
        assert all(np.array_equal(a, b) for a, b in zip(carried, explicit)), fn.__name__
    # the default model's stride (4) is wrong geometry here: other cells cropped (patch 8), or an
    # input too small for the valid size (patch 32)
    assert common.DEFAULT_MASK_STRIDE == 4 != stride
    if patch == 8:
        wrong = vm.video_instance(by_hand, target, valid_size=valid).masks
        assert not np.array_equal(wrong, vm.video_instance(out, target, valid_size=valid).masks)
    else:
        with pytest.raises(ValueError, match=r"valid_size \(40, 20\) exceeds the model input 32x16"):
            vm.video_instance(by_hand, target, valid_size=valid)
    with pytest.raises(ValueError, match=f"contradicts the output's own mask_stride={stride}"):
        vm.post_process_semantic(out, target, mask_stride=4)
    assert jax.device_get(out).mask_stride == stride  # survives tree maps / host transfer


# ------------------------------------------------------------------------------------------ dropout
def _attention(rate: float) -> tuple[Attention, dict, jax.Array]:
    cfg = CFG.replace(attention_dropout=rate, attention_impl="xla")  # a fused kernel without dropout
    module = Attention(cfg)
    x = jax.random.normal(jax.random.key(0), (2, 5, 32))  # [B, N, D]
    params = module.init(jax.random.key(1), x)["params"]
    return module, params, x


def test_attention_dropout_acts_on_probabilities_in_training_only():
    module, params, x = _attention(0.5)
    plain = module.apply({"params": params}, x)
    assert np.array_equal(module.apply({"params": params}, x, deterministic=True), plain)
    no_rate, p0, _ = _attention(0.0)
    assert np.array_equal(no_rate.apply({"params": p0}, x, deterministic=False), plain)  # rate 0: no rng needed
    a = module.apply({"params": params}, x, deterministic=False, rngs={"dropout": jax.random.key(2)})
    b = module.apply({"params": params}, x, deterministic=False, rngs={"dropout": jax.random.key(3)})
    assert not np.allclose(a, plain) and not np.allclose(a, b)
    with pytest.raises(Exception, match="dropout"):  # flax: the "dropout" rng is required
        module.apply({"params": params}, x, deterministic=False)
    # By hand: q = k = 0 makes the probabilities uniform (1/N), v = 1 makes the attention output
    # (before out_proj) the sum of the kept probabilities / keep = (#kept / N) / 0.5, per query and head.
    d, n = 32, 5
    zero = jax.tree.map(jnp.zeros_like, params)
    qkv_bias = np.zeros(3 * d, np.float32)
    qkv_bias[2 * d :] = 1.0  # v = 1
    eye = np.eye(d, dtype=np.float32)
    zero["qkv"]["bias"] = jnp.asarray(qkv_bias)
    zero["out_proj"]["kernel"] = jnp.asarray(eye)
    values = np.asarray(module.apply({"params": zero}, x, deterministic=False, rngs={"dropout": jax.random.key(4)}))
    kept = values * n * 0.5  # [B, N, D]: integer counts 0..N
    np.testing.assert_allclose(kept, np.round(kept), atol=1e-5)
    assert kept.min() >= -1e-5 and kept.max() <= n + 1e-5 and len(np.unique(np.round(kept))) > 1
    heads = kept.reshape(2, n, 2, 16)
    assert np.allclose(heads, heads[..., :1])  # one dropout mask per (query, head), shared by its E dims
