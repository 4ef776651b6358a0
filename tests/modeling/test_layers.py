"""Attention forms against XLA's reference attention; the per-backend XLA compiler options."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import videomt_jax as vm
from videomt_jax.modeling import layers, xla_options


def reference_attention(q: jax.Array, k: jax.Array, v: jax.Array) -> jax.Array:
    """[B, H, N, E] inputs through `jax.nn.dot_product_attention` (which takes [B, N, H, E])."""
    swap = lambda t: jnp.swapaxes(t, 1, 2)
    return swap(jax.nn.dot_product_attention(swap(q), swap(k), swap(v), implementation="xla"))


def qkv(shape: tuple[int, ...], dtype=jnp.float32, seed: int = 0) -> tuple[jax.Array, ...]:
    rng = np.random.default_rng(seed)
    return tuple(jnp.asarray(3 * rng.normal(size=shape), dtype) for _ in range(3))


@pytest.mark.parametrize("budget_items", [1, 2, 3, 4, 6])
def test_grouped_attention_equals_reference(monkeypatch, budget_items):
    """Group sizes 1, 2, 3, 3 (largest divisor of 6 that fits 4) and the whole batch."""
    b, h, n, e = 6, 2, 9, 4
    monkeypatch.setattr(layers, "SCORES_BYTES_PER_GROUP", budget_items * h * n * n * 4)
    q, k, v = qkv((b, h, n, e))
    got = layers.EINSUM_ATTENTION["einsum_map"](q, k, v, e**-0.5)
    np.testing.assert_allclose(np.asarray(got), np.asarray(reference_attention(q, k, v)), rtol=1e-5, atol=1e-5)
    grads = [
        jax.grad(lambda q, k, v, f=f: jnp.sum(jnp.sin(f(q, k, v))), argnums=(0, 1, 2))(q, k, v)
        for f in (lambda q, k, v: layers.EINSUM_ATTENTION["einsum_map"](q, k, v, e**-0.5), reference_attention)
    ]
    for ours, want in zip(*grads):
        np.testing.assert_allclose(np.asarray(ours), np.asarray(want), rtol=1e-4, atol=1e-4)


def test_einsum_attention_bfloat16_close_to_float32():
    q, k, v = qkv((2, 2, 16, 8))
    want = reference_attention(q, k, v)
    got = layers.EINSUM_ATTENTION["einsum"](*(t.astype(jnp.bfloat16) for t in (q, k, v)), 8**-0.5)
    assert got.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(got, np.float32), np.asarray(want), atol=0.06 * float(jnp.abs(want).max()))


def test_auto_attention_on_cpu_is_grouped_einsum():
    assert jax.default_backend() == "cpu"
    assert layers.resolve_attention_impl(vm.VideomtConfig(attention_impl="auto")) == "einsum_map"
    assert layers.resolve_attention_impl(vm.VideomtConfig(attention_impl="xla")) == "xla"


@pytest.fixture
def fresh_options(monkeypatch):
    xla_options.compiler_options.cache_clear()
    yield monkeypatch
    xla_options.compiler_options.cache_clear()


def test_cpu_options_apply_and_change_the_executable(fresh_options):
    fresh_options.delenv("XLA_FLAGS", raising=False)
    assert xla_options.compiler_options() == xla_options.CPU_OPTIONS
    assert xla_options.compiler_options("gpu") == {}
    x = jnp.ones((256, 256))
    ours = xla_options.jit_model(lambda x: x @ x).lower(x).compile().as_text()
    plain = jax.jit(lambda x: x @ x).lower(x).compile().as_text()
    assert "ynn_fusion" in plain and "ynn_fusion" not in ours  # the product left YNNPACK


def test_user_xla_flags_win(fresh_options):
    fresh_options.setenv("XLA_FLAGS", "--xla_cpu_experimental_ynn_fusion_type=-dot")
    assert xla_options.compiler_options() == {}


def test_unknown_option_is_dropped(fresh_options):
    fresh_options.delenv("XLA_FLAGS", raising=False)
    fresh_options.setitem(xla_options.OPTIONS, "cpu", {"xla_cpu_experimental_ynn_fusion_type": "NOT_A_FUSION_TYPE"})
    assert xla_options.compiler_options() == {}
    assert float(xla_options.jit_model(lambda x: x + 1)(1.0)) == 2.0


def test_gelu_matches_torch_and_float64():
    import torch

    x = np.random.default_rng(0).normal(scale=4.0, size=(4096,)).astype(np.float32)
    exact = torch.nn.functional.gelu(torch.from_numpy(x.astype(np.float64))).numpy()
    ours = np.asarray(layers.ACTIVATIONS["gelu"](jnp.asarray(x)))
    np.testing.assert_allclose(ours, exact, rtol=0, atol=2e-6)
    np.testing.assert_allclose(ours, torch.nn.functional.gelu(torch.from_numpy(x)).numpy(), rtol=0, atol=2e-6)
    # bfloat16 in, bfloat16 out, evaluated in float32: the negative tail keeps its relative accuracy
    tail = jnp.asarray([-4.0, -3.0, -2.0, -1.0], jnp.bfloat16)
    got = np.asarray(layers.ACTIVATIONS["gelu"](tail), np.float32)
    want = torch.nn.functional.gelu(torch.tensor(np.asarray(tail, np.float32), dtype=torch.float64)).numpy()
    assert layers.ACTIVATIONS["gelu"](tail).dtype == jnp.bfloat16
    np.testing.assert_allclose(got, want, rtol=1e-2)
