"""Matcher pieces against independent references: torch grid_sample, scipy linear_sum_assignment, HF pair-wise costs.

Letters: B batch, T frames, Q queries, M target slots, P points, h/w map size.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment
from transformers.models.videomt import modeling_videomt as hf

from videomt_jax.training.config import MATCHINGS
from videomt_jax.training.matcher import (
    MATCHING_RULES,
    LossTargets,
    clip_sum_match,
    first_appearance_match,
    hungarian_match,
    matching_rule,
    pairwise_mask_costs,
)
from videomt_jax.training.points import sample_points, uncertain_points

HUNGARIAN = jax.jit(hungarian_match)


def _torch_sample(features: np.ndarray, coords: np.ndarray) -> np.ndarray:
    """HF sample_point: features [N, h, w], coords [N, P, 2] -> [N, P]."""
    out = hf.sample_point(torch.from_numpy(features)[:, None], torch.from_numpy(coords), align_corners=False)
    return out[:, 0].numpy()


def _coords(rng: np.random.Generator, shape) -> np.ndarray:
    coords = rng.random(shape).astype(np.float32)
    flat = coords.reshape(-1, 2)
    flat[:6] = [[0.0, 0.0], [0.999999, 0.999999], [0.0, 0.5], [0.5, 0.999], [1.0, 1.0], [0.03, 0.97]]  # borders
    return coords


@pytest.mark.parametrize("height,width", [(8, 8), (5, 11), (32, 24)])
def test_sample_points_matches_grid_sample(height, width):
    rng = np.random.default_rng(height * width)
    features = rng.normal(size=(3, height, width)).astype(np.float32)
    coords = _coords(rng, (3, 200, 2))
    expected = _torch_sample(features, coords)
    per_map = np.asarray(sample_points(jnp.asarray(features), jnp.asarray(coords)))
    np.testing.assert_allclose(per_map, expected, rtol=0, atol=2e-6)
    # one point set shared by all maps (the matcher's use)
    shared = np.asarray(sample_points(jnp.asarray(features), jnp.asarray(coords[0])))
    expected_shared = _torch_sample(features, np.broadcast_to(coords[:1], coords.shape).copy())
    np.testing.assert_allclose(shared, expected_shared, rtol=0, atol=2e-6)


def test_sample_points_bool_and_leading_axes():
    rng = np.random.default_rng(0)
    masks = rng.random((2, 3, 16, 16)) > 0.5  # [B, T, H, W]
    coords = _coords(rng, (2, 3, 50, 2))
    got = np.asarray(jax.jit(sample_points)(jnp.asarray(masks), jnp.asarray(coords)))
    expected = _torch_sample(masks.reshape(6, 16, 16).astype(np.float32), coords.reshape(6, 50, 2)).reshape(2, 3, 50)
    np.testing.assert_allclose(got, expected, atol=2e-6)


def test_sample_points_bad_shapes():
    with pytest.raises(ValueError, match="coords"):
        sample_points(jnp.zeros((2, 4, 4)), jnp.zeros((3, 5, 2)))
    with pytest.raises(ValueError, match="coords"):
        sample_points(jnp.zeros((2, 4, 4)), jnp.zeros((5, 3)))


def test_uncertain_points_picks_smallest_abs_logits():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(2, 6, 6)).astype(np.float32)
    candidates = rng.random((2, 40, 2)).astype(np.float32)
    extra = rng.random((2, 3, 2)).astype(np.float32)
    got = np.asarray(jax.jit(uncertain_points, static_argnums=3)(*map(jnp.asarray, (logits, candidates, extra)), 7))
    values = np.abs(_torch_sample(logits, candidates))
    for n in range(2):
        chosen = candidates[n, np.argsort(values[n])[:7]]
        np.testing.assert_array_equal(np.sort(got[n, :7], axis=0), np.sort(chosen, axis=0))
        np.testing.assert_array_equal(got[n, 7:], extra[n])


def test_pairwise_costs_match_hf():
    rng = np.random.default_rng(2)
    pred = (rng.normal(size=(7, 300)) * 3).astype(np.float32)
    target = (rng.random((4, 300)) > 0.6).astype(np.float32)
    bce, dice = pairwise_mask_costs(jnp.asarray(pred), jnp.asarray(target))
    ref_bce = hf.pair_wise_sigmoid_cross_entropy_loss(torch.from_numpy(pred), torch.from_numpy(target)).numpy()
    ref_dice = hf.pair_wise_dice_loss(torch.from_numpy(pred), torch.from_numpy(target)).numpy()
    np.testing.assert_allclose(np.asarray(bce), ref_bce, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(dice), ref_dice, rtol=1e-5, atol=1e-6)


def _total(cost: np.ndarray, query_index: np.ndarray, matched: np.ndarray) -> float:
    slots = np.nonzero(matched)[0]
    return float(cost[query_index[slots], slots].astype(np.float64).sum())


def _scipy_total(cost: np.ndarray) -> float:
    rows, cols = linear_sum_assignment(cost.astype(np.float64))
    return float(cost[rows, cols].astype(np.float64).sum())


@pytest.mark.parametrize("queries,slots", [(10, 3), (12, 12), (4, 9), (30, 7), (1, 5), (6, 1)])
def test_hungarian_equals_scipy_under_jit_vmap(queries, slots):
    rng = np.random.default_rng(queries * 100 + slots)
    cost = rng.normal(size=(2, 3, queries, slots)).astype(np.float32) * 4  # [B, T, Q, M]
    valid = np.ones((2, 3, slots), bool)
    matching = HUNGARIAN(jnp.asarray(cost), jnp.asarray(valid))
    query_index, matched = np.asarray(matching.query_index), np.asarray(matching.matched)
    for b in range(2):
        for t in range(3):
            assert matched[b, t].sum() == min(queries, slots)
            used = query_index[b, t][matched[b, t]]
            assert len(set(used.tolist())) == len(used)  # one query per target
            ours = _total(cost[b, t], query_index[b, t], matched[b, t])
            np.testing.assert_allclose(ours, _scipy_total(cost[b, t]), rtol=1e-6, atol=1e-5)


@pytest.mark.parametrize("queries,slots,num_valid", [(10, 6, 3), (4, 9, 3), (4, 9, 6), (5, 5, 0)])
def test_hungarian_ignores_padded_slots(queries, slots, num_valid):
    rng = np.random.default_rng(7 + num_valid)
    cost = rng.normal(size=(queries, slots)).astype(np.float32)
    valid = np.zeros(slots, bool)
    valid[rng.permutation(slots)[:num_valid]] = True
    garbage = cost.copy()
    garbage[:, ~valid] = rng.choice([-1e4, 1e4, np.nan, -np.inf], size=(queries, (~valid).sum()))
    matching = HUNGARIAN(jnp.asarray(garbage)[None], jnp.asarray(valid)[None])
    query_index, matched = np.asarray(matching.query_index[0]), np.asarray(matching.matched[0])
    assert not matched[~valid].any()
    assert matched.sum() == min(queries, num_valid)
    if num_valid:
        ours = _total(cost, query_index, matched)
        np.testing.assert_allclose(ours, _scipy_total(cost[:, valid]), rtol=1e-6, atol=1e-5)


def _first_appearance_reference(cost: np.ndarray, valid: np.ndarray) -> dict[int, int]:
    """The authors' rule on one clip with scipy: cost [T, Q, M], valid [T, M] -> {slot: query}.
    Frames in order; the slots first visible in frame t are matched among the queries still free."""
    pairs: dict[int, int] = {}
    seen = np.zeros(valid.shape[1], bool)
    for frame_cost, visible in zip(cost, valid):
        new = np.flatnonzero(visible & ~seen)
        seen |= visible
        free = np.array(sorted(set(range(cost.shape[1])) - set(pairs.values())), int)
        if len(new) and len(free):
            rows, cols = linear_sum_assignment(frame_cost[np.ix_(free, new)].astype(np.float64))
            pairs.update({int(new[c]): int(free[r]) for r, c in zip(rows, cols)})
    return pairs


@pytest.mark.parametrize("queries", [9, 4])  # Q > M; Q < objects of a clip (the extra objects stay unmatched)
def test_first_appearance_match_equals_frame_by_frame_scipy(queries):
    rng = np.random.default_rng(queries)
    b, t, m = 4, 5, 6
    cost = (rng.normal(size=(b, t, queries, m)) * 3).astype(np.float32)
    valid = rng.random((b, t, m)) < 0.4
    valid[:, :, 5] = False  # a padded slot
    valid[0] = False  # a clip without objects
    valid[1, 0] = False  # nothing in frame 0
    valid[2, :, :5] = True  # every object from frame 0
    cost[3, 1, 0, 2] = np.nan  # a non-finite cost is avoided, as HF does
    matching = jax.jit(first_appearance_match)(jnp.asarray(cost), jnp.asarray(valid))
    query_index, matched = np.asarray(matching.query_index), np.asarray(matching.matched)
    assert (query_index == query_index[:, :1]).all() and (matched == matched[:, :1]).all()  # one assignment per clip
    for i in range(b):
        ours = {int(s): int(query_index[i, 0, s]) for s in np.flatnonzero(matched[i, 0])}
        assert ours == _first_appearance_reference(np.nan_to_num(cost[i], nan=1e30), valid[i])
        assert len(ours) == min(queries, valid[i].any(0).sum()) and len(set(ours.values())) == len(ours)


def test_clip_sum_match_assigns_once_on_costs_summed_over_visible_frames():
    rng = np.random.default_rng(7)
    b, t, q, m = 3, 4, 7, 5
    cost = (rng.normal(size=(b, t, q, m)) * 3).astype(np.float32)
    valid = rng.random((b, t, m)) < 0.5
    valid[:, :, 4] = False  # a padded slot
    valid[0] = False  # a clip without objects
    matching = jax.jit(clip_sum_match)(jnp.asarray(cost), jnp.asarray(valid))
    query_index, matched = np.asarray(matching.query_index), np.asarray(matching.matched)
    for i in range(b):
        slots = np.flatnonzero(valid[i].any(0))
        summed = np.where(valid[i][:, None, :], cost[i], 0.0).sum(0)[:, slots]  # [Q, visible slots]
        rows, cols = linear_sum_assignment(summed)
        expected = {int(slots[c]): int(r) for r, c in zip(rows, cols)}
        assert {int(s): int(query_index[i, 0, s]) for s in slots} == expected
        assert (query_index[i] == query_index[i, :1]).all()  # the clip's assignment in every frame
        assert np.array_equal(matched[i], valid[i])  # targets only where visible


def test_matching_rules_are_the_config_names():
    assert tuple(MATCHING_RULES) == MATCHINGS
    with pytest.raises(ValueError, match="matching must be one of"):
        matching_rule("per_clip")


def test_hungarian_avoids_nonfinite_costs_like_hf():
    rng = np.random.default_rng(3)
    cost = rng.normal(size=(8, 5)).astype(np.float32)
    cost[[0, 2, 5], [1, 1, 3]] = [np.nan, np.inf, -np.inf]
    matching = HUNGARIAN(jnp.asarray(cost)[None], jnp.ones((1, 5), bool))
    query_index, matched = np.asarray(matching.query_index[0]), np.asarray(matching.matched[0])
    # HF: nan/inf -> float max, then scipy
    replaced = np.nan_to_num(cost.astype(np.float64), nan=3e38, posinf=3e38, neginf=3e38)
    picked = replaced[query_index, np.arange(5)]
    assert np.isfinite(cost[query_index, np.arange(5)]).all()
    np.testing.assert_allclose(picked.sum(), _scipy_total(replaced), rtol=1e-6)
    assert matched.all()


def test_loss_targets_from_frames():
    masks = [np.ones((2, 4, 6), bool), np.zeros((0, 4, 6), bool), np.zeros((1, 4, 6), bool), np.ones((3, 4, 6), bool)]
    labels = [np.array([1, 2]), np.array([], int), np.array([4]), np.array([0, 0, 3])]
    targets = LossTargets.from_frames(masks, labels, frames=2)
    assert targets.mask_labels.shape == (2, 2, 3, 4, 6) and targets.mask_labels.dtype == jnp.bool_
    np.testing.assert_array_equal(targets.valid.sum(-1), [[2, 0], [1, 3]])
    np.testing.assert_array_equal(targets.class_labels[1, 1], [0, 0, 3])
    np.testing.assert_array_equal(targets.class_labels[0, 0, :2], [1, 2])
    with pytest.raises(ValueError, match="max_targets"):
        LossTargets.from_frames(masks, labels, frames=2, max_targets=2)
    with pytest.raises(ValueError, match="clips of 3"):
        LossTargets.from_frames(masks, labels, frames=3)
    with pytest.raises(ValueError, match="labels per frame"):
        LossTargets.from_frames(masks, labels[:3] + [np.array([1])], frames=2)
