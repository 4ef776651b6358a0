"""The hand-written head convolutions against XLA's own convolution (the definition)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import videomt_jax as vm
from videomt_jax.modeling.heads import DepthwiseConv3x3

D = 8
CFG = vm.VideomtConfig(hidden_size=D, num_hidden_layers=2, num_attention_heads=2, num_blocks=1, num_queries=4)


def grouped_conv(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """3x3 depthwise cross-correlation with zero padding 1, as a grouped `lax.conv`."""
    return jax.lax.conv_general_dilated(
        x,
        kernel,
        (1, 1),
        ((1, 1), (1, 1)),
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
        feature_group_count=x.shape[-1],
        precision=jax.lax.Precision.HIGHEST,
    )


@pytest.mark.parametrize("hw", [(5, 7), (7, 5), (1, 1), (4, 4)])
def test_depthwise_conv_equals_grouped_conv(hw):
    """Non-square maps too: the row-flattened shifts must not leak across rows or the border."""
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(2, *hw, D)).astype(np.float32))
    kernel = jnp.asarray(rng.normal(size=(3, 3, 1, D)).astype(np.float32))
    module = DepthwiseConv3x3(CFG)
    ours = lambda x, k: module.apply({"params": {"kernel": k}}, x)
    np.testing.assert_allclose(np.asarray(ours(x, kernel)), np.asarray(grouped_conv(x, kernel)), rtol=1e-6, atol=1e-6)
    weight = jnp.asarray(rng.normal(size=(2, *hw, D)).astype(np.float32))
    grads = [
        jax.grad(lambda x, k, f=f: jnp.sum(f(x, k) * weight), argnums=(0, 1))(x, kernel) for f in (ours, grouped_conv)
    ]
    for got, want in zip(*grads):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-5)
