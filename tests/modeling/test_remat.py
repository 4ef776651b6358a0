"""The model's `remat` (a training setting, `TrainConfig.remat`): every named policy gives the same
parameter tree, loss and gradients as no remat, and lowers the compiled train step's temporary
memory (XLA's memory analysis)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from videomt_jax.config import VideomtConfig
from videomt_jax.modeling.family import init_params
from videomt_jax.modeling.videomt import VideomtModel

pytestmark = pytest.mark.slow  # run first under xdist (conftest.py)

CFG = VideomtConfig(
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    num_blocks=1,
    image_size=32,
    patch_size=8,
    num_queries=4,
    num_register_tokens=1,
    id2label={0: "a", 1: "b"},
)


def _loss_and_grads(cfg: VideomtConfig, params, videos, remat: str = "none"):
    model = VideomtModel(cfg, remat=remat)

    def loss(p):  # deep supervision on: the auxiliary predictions take the rematerialised head path too
        out = model.apply({"params": p}, videos, return_aux=True)
        final = jnp.mean(out.mask_logits**2) + jnp.mean(out.class_logits**2)
        return final + jnp.mean(jnp.sin(out.aux_mask_logits)) + jnp.mean(out.aux_class_logits**3)

    return jax.jit(jax.value_and_grad(loss))(params)


def test_every_policy_matches_no_remat():
    videos = jax.random.normal(jax.random.key(1), (2, 2, 32, 32, 3))
    params = jax.jit(lambda k: init_params(CFG, k, image_hw=(32, 32)))(jax.random.key(0))
    ref_loss, ref_grads = _loss_and_grads(CFG, params, videos)
    for name in ("full", "dots_no_batch"):  # "dots" keeps more than "dots_no_batch": between the two
        model = VideomtModel(CFG, remat=name)
        dummy = jnp.zeros((1, 1, 32, 32, 3))
        shapes = jax.eval_shape(lambda k, model=model, dummy=dummy: model.init(k, dummy)["params"], jax.random.key(0))
        assert jax.tree.structure(shapes) == jax.tree.structure(params)
        loss, grads = _loss_and_grads(CFG, params, videos, name)
        np.testing.assert_allclose(loss, ref_loss, rtol=1e-6)
        for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(ref_grads)):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def _hidden_loss(out):
    return jnp.mean(out.last_hidden_state**2)


def _deep_supervision_loss(out):
    return jnp.mean(jnp.sin(out.mask_logits)) + jnp.mean(jnp.sin(out.aux_mask_logits))


# Blocks dominate the first case (8 layers, 256 tokens, the loss on the hidden states): before
# remat implied the rolled layer loop, XLA merged the recomputation back in unrolled code and
# nothing was saved. Heads dominate the second (2 layers, a 64x64 mask grid, deep supervision): the
# upscaled maps of every frame and prediction must no longer be alive at once in the backward pass.
MEMORY_CASES = {
    "blocks": (dict(num_hidden_layers=8, hidden_size=64, image_size=128), (2, 2), False, _hidden_loss),
    "heads": (dict(num_blocks=2, hidden_size=64, image_size=128, num_queries=8), (1, 4), True, _deep_supervision_loss),
}


@pytest.mark.parametrize("case", sorted(MEMORY_CASES))
def test_full_remat_at_least_halves_the_backward_temporaries(case):
    changes, (batch, frames), aux, loss_of = MEMORY_CASES[case]
    videos = jax.ShapeDtypeStruct((batch, frames, 128, 128, 3), jnp.float32)
    temps = {}
    for name in ("none", "full"):
        c = CFG.replace(**changes)
        params = jax.eval_shape(lambda k, c=c: init_params(c, k), jax.random.key(0))
        model = VideomtModel(c, remat=name)
        loss = jax.grad(lambda p, x, model=model: loss_of(model.apply({"params": p}, x, return_aux=aux)))
        temps[name] = jax.jit(loss).lower(params, videos).compile().memory_analysis().temp_size_in_bytes
    assert temps["full"] < 0.5 * temps["none"], temps


def test_unknown_policy_is_an_error():
    from videomt_jax.training.config import TrainConfig

    with pytest.raises(ValueError, match="remat must be one of"):
        TrainConfig(remat="everything")
    with pytest.raises(ValueError, match="remat must be one of"):
        VideomtModel(CFG, remat="everything").init(jax.random.key(0), jnp.zeros((1, 1, 32, 32, 3)))
    with pytest.raises(TypeError):  # not a model setting any more
        CFG.replace(remat="full")
