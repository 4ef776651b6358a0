"""`VideomtConfig` validation: a wrong type, an out-of-range value or fields that do not fit together
give one ValueError line naming the field, never an arithmetic error or a huge allocation later."""

from __future__ import annotations

import pytest

from videomt_jax.config import MAX_PARAMS, VideomtConfig


@pytest.mark.parametrize(
    "fields, message",
    [
        (dict(num_attention_heads=0), r"num_attention_heads must be in \[1, 65536\], got 0"),
        (dict(hidden_size=10**7), r"hidden_size must be in \[1, 65536\], got 10000000"),
        (dict(hidden_size="128"), r"hidden_size must be an int, got '128'"),
        (dict(num_hidden_layers=6.5), r"num_hidden_layers must be an int, got 6.5"),
        (dict(patch_size=0), r"patch_size must be in \[1, 1024\], got 0"),
        (dict(image_size=[640, -1]), r"image_size must be in \[1, 32768\], got \(640, -1\)"),
        (dict(mlp_ratio=0), r"mlp_ratio must be in \(0, 64\], got 0"),
        (dict(use_swiglu_ffn="yes"), r"use_swiglu_ffn must be true or false, got 'yes'"),
        (dict(layer_norm_eps=float("nan")), r"layer_norm_eps must be a finite number, got nan"),
        (dict(hidden_size=100, num_attention_heads=3), r"hidden_size 100 is not divisible by num_attention_heads 3"),
        (dict(num_blocks=30), r"num_blocks must be in \[1, num_hidden_layers=24\], got 30"),
        (dict(num_upscale_blocks=5), r"num_upscale_blocks 5 upscales past the pixels of patch_size 16"),
        (dict(hidden_size=16384, num_hidden_layers=64), r"about 206 billion parameters .* over the limit of 64"),
        (dict(id2label=["a", "b"]), r"id2label must map integer ids to names"),
        (dict(dtype="float64"), r"dtype must be one of \('float32', 'bfloat16', 'float16'\), got 'float64'"),
    ],
)
def test_hostile_fields_give_one_line_naming_the_field(fields, message):
    with pytest.raises(ValueError, match=message) as error:
        VideomtConfig(**fields)
    assert str(error.value).startswith("invalid VideomtConfig: ") and "\n" not in str(error.value)


def test_real_configs_pass_and_the_size_estimate_is_close():
    large = VideomtConfig.preset("large")  # ViT-L VidEoMT: 304 M encoder + head parameters
    assert 0.28e9 < large.approx_num_params < 0.33e9 < MAX_PARAMS
    assert VideomtConfig.from_hf_dict(large.to_hf_dict()) == large
