"""Optimizer (training/optim.py): the authors' two-stage warmup + poly schedule, layer-wise LR factors,
the parameter groups, and the three choices TrainConfig makes between their trainer's behaviour and
ours (`grad_clip`, `decay_params`, `final_norm_group`); freezing the backbone.

Expected numbers come from the authors' formulas (TwoStageWarmupPolySchedule, LLRD 0.6^(L-1-i),
torch AdamW), written out by hand below. Letters: L layers.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from videomt_jax.config import VideomtConfig
from videomt_jax.modeling.family import init_params
from videomt_jax.training.config import TrainConfig
from videomt_jax.training.optim import decay_mask, is_encoder_tree, layer_factors, make_optimizer, schedules

LAYERS, QUERY_START = 3, 1  # the model below: 3 encoder layers, the last 2 carry queries
DECAY = 0.6  # layer-wise LR decay (theirs)
ENCODER_ROOTS = ("['embeddings']", "['encoder']", "['query_encoder']")
NORM = "['layernorm']"  # the encoder's final LayerNorm
# final_norm_group -> (follows the encoder schedule, LR factor), from the authors'
# build_optimizer: timm DINOv2 (norm listed after the blocks: factor 1), their DINOv3 (listed before
# the blocks: block 0's factor DECAY^(L-1)); "heads" is our earlier grouping.
NORM_GROUPS = {"encoder": (True, 1.0), "encoder_block0": (True, DECAY ** (LAYERS - 1)), "heads": (False, 1.0)}


@pytest.fixture(scope="module")
def config() -> VideomtConfig:
    return VideomtConfig(
        hidden_size=32,
        num_hidden_layers=LAYERS,
        num_attention_heads=2,
        num_blocks=LAYERS - QUERY_START,
        image_size=32,
        patch_size=8,
        num_queries=8,
        num_register_tokens=1,
    )


@pytest.fixture(scope="module")
def params(config):
    """Random float32 parameters with the model's tree (no model compile)."""
    shapes = jax.eval_shape(lambda k: init_params(config, k), jax.random.key(0))
    rng = np.random.default_rng(0)
    return jax.tree.map(lambda s: jnp.asarray(rng.standard_normal(s.shape), jnp.float32), shapes)


def _leaves(tree) -> dict[str, object]:
    return {jax.tree_util.keystr(p): v for p, v in jax.tree_util.tree_leaves_with_path(tree)}


def _root(path: str) -> str:
    return path.split("]")[0] + "]"


def expected_factor(path: str, leaf, final_norm_group: str) -> np.ndarray:
    """Authors' LLRD, broadcastable against `leaf`: block i -> DECAY^(L-1-i) along the stacked [L]
    axis; patch/position embeddings, CLS and registers -> block 0's factor; the final norm by its
    group; the rest -> 1."""
    blocks = {"['encoder']": range(QUERY_START), "['query_encoder']": range(QUERY_START, LAYERS)}
    root = _root(path)
    if root == "['embeddings']":
        return np.asarray(DECAY ** (LAYERS - 1))
    if root == NORM:
        return np.asarray(NORM_GROUPS[final_norm_group][1])
    if root in blocks:
        factors = np.asarray([DECAY ** (LAYERS - 1 - i) for i in blocks[root]])
        return factors.reshape((-1,) + (1,) * (leaf.ndim - 1))
    return np.asarray(1.0)


def _updates_at(tx, params, grads, *steps: int) -> list[dict[str, np.ndarray]]:
    """The optimizer's first update taken as if at each optimizer step (every step counter set to it)."""
    update = jax.jit(lambda g, s, p: tx.update(g, s, p)[0])  # one compile for all steps
    states = [optax.tree_utils.tree_set(tx.init(params), count=jnp.asarray(s, jnp.int32)) for s in steps]
    return [_leaves(update(grads, state, params)) for state in states]


def _random_grads(params, seed: int):
    """|g| in [1, 2) with random signs, so Adam's eps is negligible."""
    rng = np.random.default_rng(seed)
    return jax.tree.map(
        lambda p: jnp.asarray(rng.choice([-1.0, 1.0], p.shape) * (1 + rng.random(p.shape)), jnp.float32), params
    )


# ------------------------------------------------------------------------------------------ schedule
def test_two_stage_warmup_poly_schedule_matches_authors():
    tc = TrainConfig(steps=100, warmup_head=10, warmup_encoder=20, learning_rate=1e-3, poly_power=0.9)
    head, enc = schedules(tc)
    steps = jnp.arange(101)
    h, e = np.asarray(head(steps), np.float64), np.asarray(enc(steps), np.float64)
    # head: linear from 0 over 10 steps, then (1 - (s-10)/90)^0.9 down to 0 at the end
    np.testing.assert_allclose(h[:11], 1e-4 * np.arange(11), rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(h[55], 1e-3 * 0.5**0.9, rtol=1e-6)
    np.testing.assert_allclose(h[99], 1e-3 * (1 / 90) ** 0.9, rtol=1e-5)
    assert h[100] == 0.0
    # encoder: 0 through the head warmup (step 10 included), linear over 20 steps, then poly to 0
    assert np.all(e[:11] == 0.0)
    np.testing.assert_allclose(e[10:31], 5e-5 * np.arange(21), rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(e[65], 1e-3 * 0.5**0.9, rtol=1e-6)
    assert e[100] == 0.0
    assert np.all(np.diff(h[10:]) <= 0) and np.all(np.diff(e[30:]) <= 0)
    frozen_head, frozen_enc = schedules(tc.replace(freeze_backbone=True))
    assert np.all(np.asarray(frozen_enc(steps)) == 0.0)
    np.testing.assert_array_equal(np.asarray(frozen_head(steps)), np.asarray(head(steps)))


# ------------------------------------------------------------------------------------------ groups
@pytest.mark.parametrize("final_norm_group", sorted(NORM_GROUPS))
def test_layer_factors_and_groups(config, params, final_norm_group):
    factors = _leaves(layer_factors(params, config, DECAY, final_norm_group))
    encoder = _leaves(is_encoder_tree(params, final_norm_group))
    others = {NORM, "['query']", "['query_updater']", "['heads']"}
    assert {_root(path) for path in factors} == set(ENCODER_ROOTS) | others
    norm_in_encoder = NORM_GROUPS[final_norm_group][0]
    for path, leaf in _leaves(params).items():
        want = np.broadcast_to(expected_factor(path, leaf, final_norm_group), leaf.shape)
        np.testing.assert_allclose(np.broadcast_to(factors[path], leaf.shape), want, rtol=1e-6, err_msg=path)
        assert encoder[path] == (path.startswith(ENCODER_ROOTS) or (_root(path) == NORM and norm_in_encoder)), path


@pytest.mark.parametrize("decay_params", ["all", "kernels"])
def test_decay_masks(params, decay_params):
    decayed = _leaves(decay_mask(params, decay_params))
    for path in _leaves(params):
        assert decayed[path] == (decay_params == "all" or path.endswith("['kernel']")), path
    assert decayed[f"{NORM}['bias']"] == (decay_params == "all")  # a bias / norm parameter


def test_defaults_are_the_authors_trainer():
    """Their trainer: no clipping (the YAML's 0.01 is never read), AdamW decay on every parameter,
    the final norm in the encoder group at factor 1 (DINOv2)."""
    tc = TrainConfig()
    assert (tc.grad_clip, tc.decay_params, tc.final_norm_group) == (None, "all", "encoder")


def test_bad_choices_name_the_field():
    with pytest.raises(ValueError, match=r"decay_params must be one of \['all', 'kernels'\], got 'biases'"):
        TrainConfig(decay_params="biases")
    with pytest.raises(ValueError, match="final_norm_group must be one of .*'heads'.*got 'neck'"):
        TrainConfig(final_norm_group="neck")
    with pytest.raises(ValueError, match=r"grad_clip must be > 0, or None \(null\) for no clipping, got 0"):
        TrainConfig(grad_clip=0.0)
    with pytest.raises(ValueError, match="grad_clip must be a number or null"):
        TrainConfig(grad_clip="0.01")


# ------------------------------------------------------------------------------------------ AdamW step
@pytest.mark.parametrize("decay_params", ["all", "kernels"])
def test_adamw_step_uses_group_lr_layer_factor_and_decay(config, params, decay_params):
    """Step 0 with no warmup: both groups at the base LR. Zero gradients leave only the decoupled
    decay (torch AdamW: p -= lr * wd * p, per group LR); unit-free Adam on non-zero gradients
    gives -lr * factor * sign(g) at the first step (bias-corrected m / sqrt(v) = g / |g|)."""
    lr, wd = 1e-3, 0.05
    tc = TrainConfig(
        steps=10, warmup_head=0, warmup_encoder=0, learning_rate=lr, weight_decay=wd, decay_params=decay_params
    )
    tx = make_optimizer(params, config, tc)
    (decay_only,) = _updates_at(tx, params, jax.tree.map(jnp.zeros_like, params), 0)
    grads = _random_grads(params, 1)
    (sign,) = _updates_at(make_optimizer(params, config, tc.replace(weight_decay=0.0)), params, grads, 0)
    grads = _leaves(grads)
    for path, p in _leaves(params).items():
        factor = expected_factor(path, p, tc.final_norm_group)
        if decay_params == "all" or path.endswith("['kernel']"):
            want = -lr * factor * wd * np.asarray(p)
            np.testing.assert_allclose(decay_only[path], want, rtol=1e-5, atol=1e-12, err_msg=path)
        else:
            assert np.all(np.asarray(decay_only[path]) == 0.0), path
        want = -lr * factor * np.sign(np.asarray(grads[path]))
        np.testing.assert_allclose(sign[path], want, rtol=1e-4, err_msg=path)


def test_grad_clip_none_leaves_a_large_gradient_unclipped(config, params):
    """Adam's first moment after one step is (1 - b1) * g: the raw gradient without clipping,
    rescaled to global norm `grad_clip` with it."""
    grads = jax.tree.map(lambda g: 1e3 * g, _random_grads(params, 3))
    norm = float(optax.tree.norm(grads))
    assert norm > 1e4

    def first_moment(grad_clip):
        tx = make_optimizer(params, config, TrainConfig(steps=10, grad_clip=grad_clip))
        _, state = jax.jit(tx.update)(grads, tx.init(params), params)
        return _leaves(optax.tree_utils.tree_get(state, "mu"))

    plain, clipped = first_moment(None), first_moment(0.01)
    for path, g in _leaves(grads).items():
        np.testing.assert_allclose(plain[path], 0.1 * np.asarray(g), rtol=1e-6, err_msg=path)
        np.testing.assert_allclose(clipped[path], 0.1 * np.asarray(g) * 0.01 / norm, rtol=1e-4, err_msg=path)


def test_final_norm_group_sets_its_schedule_and_factor(config, params):
    """In the encoder group the final norm gets LR 0 through the 500 head-warmup steps (step 500
    included), then warms up; with the heads it moves from step 1. In "encoder_block0" it moves
    by block 0's factor times what "encoder" moves it."""
    tc = TrainConfig(steps=40_000, warmup_head=500, warmup_encoder=1000, weight_decay=0.0)
    grads = _random_grads(params, 4)
    scale = f"{NORM}['scale']"
    by_group = {g: make_optimizer(params, config, tc.replace(final_norm_group=g)) for g in NORM_GROUPS}
    steps = (1, 250, 499, 500, 501, 2000)
    ups = {g: [u[scale] for u in _updates_at(tx, params, grads, *steps)] for g, tx in by_group.items()}
    for i, step in enumerate(steps):
        moved = {g: np.abs(u[i]).max() for g, u in ups.items()}
        assert moved["heads"] > 0.0, (step, moved)
        if step <= 500:
            assert moved["encoder"] == 0.0 and moved["encoder_block0"] == 0.0, (step, moved)
        else:
            assert np.abs(ups["encoder"][i]).min() > 0.0, step
            want = NORM_GROUPS["encoder_block0"][1] * ups["encoder"][i]
            np.testing.assert_allclose(ups["encoder_block0"][i], want, rtol=1e-5, err_msg=str(step))


# ------------------------------------------------------------------------------------------ freezing
@pytest.mark.parametrize("final_norm_group", ["encoder", "heads"])
def test_freeze_backbone_keeps_encoder_exactly_and_clips_without_it(config, params, final_norm_group):
    tc = TrainConfig(
        steps=10,
        warmup_head=0,
        warmup_encoder=0,
        learning_rate=1e-2,
        grad_clip=1.0,
        freeze_backbone=True,
        final_norm_group=final_norm_group,
    )
    tx = make_optimizer(params, config, tc)
    encoder = is_encoder_tree(params, final_norm_group)
    rng = np.random.default_rng(2)
    grads = jax.tree.map(lambda p: jnp.asarray(rng.standard_normal(p.shape), jnp.float32), params)

    @jax.jit
    def run(grads, params):
        state = tx.init(params)
        for _ in range(3):
            updates, state = tx.update(grads, state, params)
            params = jax.tree.map(lambda p, u: p + u, params, updates)
        return params

    big = jax.tree.map(lambda g, enc: g * 1e4 if enc else g, grads, encoder)  # huge frozen gradients
    none = jax.tree.map(lambda g, enc: jnp.zeros_like(g) if enc else g, grads, encoder)
    after_big, after_none = _leaves(run(big, params)), _leaves(run(none, params))
    frozen = ENCODER_ROOTS + ((NORM,) if NORM_GROUPS[final_norm_group][0] else ())
    for path, p in _leaves(params).items():
        if path.startswith(frozen):
            assert np.array_equal(after_big[path], p), path
        else:
            assert not np.array_equal(after_big[path], p), path
            # frozen gradients take no part in the clipping norm
            np.testing.assert_array_equal(after_big[path], after_none[path], err_msg=path)
