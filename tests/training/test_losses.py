"""`videomt_loss` against Hugging Face's `VideomtLoss` with the same random draws, plus gradients and errors.

HF draws its points with `torch.rand`; the test replaces it by a recorder, reads back each draw and
hands the same numbers to the JAX side as `PointDraws` (re-ordered from HF's matched-pair order into
target slots). Letters: A aux, B batch, T frames, Q queries, M target slots, K classes, P points.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment
from transformers.models.videomt import modeling_videomt as hf
from transformers.models.videomt.configuration_videomt import VideomtConfig as HFVideomtConfig

from videomt_jax.config import VideomtConfig
from videomt_jax.training.losses import LOSS_TERMS, videomt_loss
from videomt_jax.training.matcher import LossTargets, match_frames
from videomt_jax.training.points import PointDraws, draw_points

NUM_LABELS = 5
H = W = 32  # target masks; predicted masks are 8 x 8 (1/4)
LOSS_JIT = jax.jit(videomt_loss, static_argnames=("config", "aux_indices", "aux_weights", "matching"))


def _config(points: int) -> VideomtConfig:
    return VideomtConfig(id2label={i: f"c{i}" for i in range(NUM_LABELS)}, train_num_points=points)


def _problem(seed: int, batch: int, frames: int, queries: int, counts: list[int], num_aux: int):
    rng = np.random.default_rng(seed)
    shape = (batch, frames, queries)
    class_logits = rng.normal(size=(num_aux + 1, *shape, NUM_LABELS + 1)).astype(np.float32) * 2
    mask_logits = rng.normal(size=(num_aux + 1, *shape, 8, 8)).astype(np.float32) * 3
    masks = [rng.random((n, H, W)) > 0.6 for n in counts]  # per frame, clip 0's frames first
    labels = [rng.integers(0, NUM_LABELS, n) for n in counts]
    return class_logits, mask_logits, masks, labels


class _RandRecorder:
    """Stands in for torch.rand: seeded draws, each one kept."""

    def __init__(self, seed: int):
        self.generator = torch.Generator().manual_seed(seed)
        self.calls: list[np.ndarray] = []
        self.rand = torch.rand

    def __call__(self, *size, device=None, **kwargs):
        out = self.rand(*size, generator=self.generator, **kwargs)
        self.calls.append(out.numpy().copy())
        return out


def _run_hf(class_logits, mask_logits, masks, labels, points, monkeypatch):
    """HF loss on frames flattened (B*T); aux = predictions 1.. .

    Returns the unweighted terms, the weighted total, its gradients w.r.t. the class and mask logits
    (shaped like the inputs), the recorded draws and the matcher's indices per prediction.
    """
    config = HFVideomtConfig(num_labels=NUM_LABELS, train_num_points=points)
    weights = {
        "loss_cross_entropy": config.class_weight,
        "loss_mask": config.mask_weight,
        "loss_dice": config.dice_weight,
    }
    loss = hf.VideomtLoss(config=config, weight_dict=weights)
    recorder = _RandRecorder(0)
    monkeypatch.setattr(torch, "rand", recorder)
    indices = []
    matcher_forward = loss.matcher.forward
    loss.matcher.forward = lambda *a, **k: indices.append(matcher_forward(*a, **k)) or indices[-1]
    cls, msk = [_flat_frames(x) for x in class_logits], [_flat_frames(x) for x in mask_logits]
    aux = [{"masks_queries_logits": m, "class_queries_logits": c} for c, m in zip(cls[1:], msk[1:])]
    terms = loss(
        masks_queries_logits=msk[0],
        class_queries_logits=cls[0],
        mask_labels=[torch.from_numpy(m.astype(np.float32)) for m in masks],
        class_labels=[torch.from_numpy(c.astype(np.int64)) for c in labels],
        auxiliary_predictions=aux or None,
    )
    monkeypatch.undo()
    # HF get_loss_dict: each term (aux included) times the weight whose name it contains, then summed
    total = sum(value * next(w for key, w in weights.items() if key in name) for name, value in terms.items())
    total.backward()
    grads = [
        np.stack([t.grad.numpy().reshape(x.shape) for t, x in zip(ts, xs)])
        for ts, xs in ((cls, class_logits), (msk, mask_logits))
    ]
    return {k: float(v.detach()) for k, v in terms.items()}, float(total.detach()), grads, recorder.calls, indices


def _flat_frames(x: np.ndarray) -> torch.Tensor:
    """[B, T, ...] numpy -> [B*T, ...] torch leaf with a gradient (the frames as the reference losses take them)."""
    return torch.tensor(x.reshape(-1, *x.shape[2:]), requires_grad=True)


def _draws_from_hf(calls, indices, batch, frames, slots, config):
    """Re-orders HF's draws (per frame, then per matched pair in query order) into PointDraws per prediction."""
    num_frames, draws, calls = batch * frames, [], list(calls)
    for frame_indices in indices:
        match = np.concatenate([calls.pop(0) for _ in range(num_frames)])  # [B*T, P, 2]
        candidates, extra = calls.pop(0), calls.pop(0)  # [pairs, C, 2], [pairs, R, 2]
        cand = np.zeros((num_frames, slots, *candidates.shape[1:]), np.float32)
        ext = np.zeros((num_frames, slots, *extra.shape[1:]), np.float32)
        pair = 0
        for f, (_, target) in enumerate(frame_indices):
            for slot in target.tolist():
                cand[f, slot], ext[f, slot] = candidates[pair], extra[pair]
                pair += 1
        assert pair == len(candidates)
        match, cand, ext = (jnp.asarray(x.reshape(batch, frames, *x.shape[1:])) for x in (match, cand, ext))
        draws.append(PointDraws(match=match, candidates=cand, extra=ext))
    assert not calls
    return draws


MATCH_JIT = jax.jit(match_frames, static_argnames=("config", "matching"))


@functools.partial(jax.jit, static_argnames=("config", "matching"))
def _loss_and_grads(class_logits, mask_logits, targets, draws, config, matching="first_appearance"):
    """videomt_loss (default aux selection) and its gradient w.r.t. [final, *aux] logits stacked on axis 0."""

    def loss(c, m):
        return videomt_loss(c[0], m[0], c[1:], m[1:], targets, None, config, draws=draws, matching=matching)

    return jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(class_logits, mask_logits)


@pytest.mark.parametrize(
    "points,queries,counts,num_aux",
    [
        (128, 10, [3, 0, 2, 1, 4, 2], 1),  # B=2, T=3, one frame without targets; A=2, aux 0 in the loss
        (12544, 4, [6, 2, 1, 3], 0),  # default points; B=2, T=2, a frame with more targets than queries; A=1
    ],
)
def test_parity_with_hf_loss(points, queries, counts, num_aux, monkeypatch):
    batch, frames = 2, len(counts) // 2
    # JAX gets one more aux prediction than HF and drops it (the authors' default); HF gets the first ones.
    class_logits, mask_logits, masks, labels = _problem(points + queries, batch, frames, queries, counts, num_aux + 1)
    hf_terms, hf_total, hf_grads, calls, indices = _run_hf(
        class_logits[:-1], mask_logits[:-1], masks, labels, points, monkeypatch
    )
    config = _config(points)
    targets = LossTargets.from_frames(masks, labels, frames=frames)
    draws = _draws_from_hf(calls, indices, batch, frames, max(counts), config)
    logits = (jnp.asarray(class_logits), jnp.asarray(mask_logits))
    (total, terms), grads = _loss_and_grads(*logits, targets, draws, config, matching="per_frame")
    assert sorted(terms) == sorted(hf_terms)  # final + aux _0.._{num_aux-1}; the last aux is dropped
    for name, expected in hf_terms.items():
        np.testing.assert_allclose(float(terms[name]), expected, rtol=1e-5, err_msg=name)
    np.testing.assert_allclose(float(total), hf_total, rtol=1e-5)
    for ours, theirs in zip(grads, hf_grads):
        ours = np.asarray(ours)
        np.testing.assert_allclose(ours[:-1], theirs, rtol=0, atol=1e-5 * np.abs(theirs).max())
        assert np.abs(ours[-1]).max() == 0.0  # the dropped aux gets no gradient

    # the matching itself equals HF's, pair for pair
    final = (jnp.asarray(class_logits[0]), jnp.asarray(mask_logits[0]))
    matching = MATCH_JIT(*final, targets, draws[0].match, config=config, matching="per_frame")
    query_index = np.asarray(matching.query_index).reshape(batch * frames, -1)
    matched = np.asarray(matching.matched).reshape(batch * frames, -1)
    for f, (rows, cols) in enumerate(indices[0]):
        ours = sorted((int(query_index[f, m]), int(m)) for m in np.nonzero(matched[f])[0])
        assert sorted(zip(rows.tolist(), cols.tolist())) == ours


def _small():
    """The shapes of the first parity case (so `_loss_and_grads` is already compiled), draws from a key."""
    class_logits, mask_logits, masks, labels = _problem(0, 2, 3, 10, [3, 0, 2, 1, 4, 2], 2)
    targets = LossTargets.from_frames(masks, labels, frames=3)
    draws = draw_points(jax.random.PRNGKey(3), 2, 3, 4, CONFIG, count=2)  # final + aux 0
    return jnp.asarray(class_logits), jnp.asarray(mask_logits), targets, draws


CONFIG = _config(128)


def test_empty_targets():
    class_logits, mask_logits, targets, draws = _small()
    empty = targets.replace(valid=jnp.zeros_like(targets.valid))
    (total, terms), grads = _loss_and_grads(class_logits, mask_logits, empty, draws, CONFIG)
    for suffix, logits in (("", class_logits[0]), ("_0", class_logits[1])):
        assert float(terms["loss_mask" + suffix]) == 0.0 and float(terms["loss_dice" + suffix]) == 0.0
        logits = np.asarray(logits, np.float64)
        nll = np.log(np.exp(logits).sum(-1)) - logits[..., NUM_LABELS]  # every query -> no object, equal weights
        np.testing.assert_allclose(float(terms["loss_cross_entropy" + suffix]), nll.mean(), rtol=1e-5)
    ce = sum(float(terms[f"loss_cross_entropy{suffix}"]) for suffix in ("", "_0"))
    np.testing.assert_allclose(float(total), 2.0 * ce, rtol=1e-6)
    class_grad, mask_grad = (np.asarray(g) for g in grads)
    assert np.isfinite(class_grad).all() and np.abs(class_grad[:2]).max() > 0
    assert np.isfinite(mask_grad).all() and np.abs(mask_grad).max() == 0.0  # no mask supervision without targets


def test_aux_selection_and_weights():
    class_logits, mask_logits, targets, draws = _small()
    (_, default), _ = _loss_and_grads(class_logits, mask_logits, targets, draws, CONFIG)
    assert sorted(default) == sorted(LOSS_TERMS + tuple(f"{n}_0" for n in LOSS_TERMS))
    args = (class_logits[0], mask_logits[0], class_logits[1:], mask_logits[1:], targets, None)
    total, only_last = LOSS_JIT(*args, config=CONFIG, aux_indices=(1,), aux_weights=(0.5,), draws=draws)
    assert sorted(only_last) == sorted(LOSS_TERMS + tuple(f"{n}_1" for n in LOSS_TERMS))
    for name in LOSS_TERMS:  # same draws for the final prediction -> same final terms
        np.testing.assert_allclose(float(only_last[name]), float(default[name]), rtol=1e-6)
    w = {"loss_cross_entropy": 2.0, "loss_mask": 5.0, "loss_dice": 5.0}
    by_hand = sum(w[n] * (only_last[n] + 0.5 * only_last[f"{n}_1"]) for n in LOSS_TERMS)
    np.testing.assert_allclose(float(total), float(by_hand), rtol=1e-6)
    with pytest.raises(ValueError, match="aux_indices"):
        videomt_loss(*args, CONFIG, aux_indices=(2,), draws=draws)
    with pytest.raises(ValueError, match="aux_weights"):
        videomt_loss(*args, CONFIG, aux_indices=(0,), aux_weights=(1.0, 1.0), draws=draws)
    with pytest.raises(ValueError, match="needs a PRNG key"):
        videomt_loss(*args, CONFIG)


def test_draws_from_key():
    draws = draw_points(jax.random.PRNGKey(0), 2, 3, 4, CONFIG, count=2)
    shapes = {"match": (2, 3, 128, 2), "candidates": (2, 3, 4, 384, 2), "extra": (2, 3, 4, 32, 2)}
    for draw in draws:
        for name, shape in shapes.items():
            values = np.asarray(getattr(draw, name))
            assert values.shape == shape and values.min() >= 0.0 and values.max() < 1.0
    assert not np.array_equal(np.asarray(draws[0].match), np.asarray(draws[1].match))


def test_bad_inputs():
    class_logits, mask_logits, targets, _ = _small()
    c, m, key = class_logits[0], mask_logits[0], jax.random.PRNGKey(0)
    call = functools.partial(videomt_loss, aux_class_logits=None, aux_mask_logits=None, key=key, config=CONFIG)
    bad_labels = targets.replace(class_labels=targets.class_labels.at[0, 0, 0].set(NUM_LABELS))
    with pytest.raises(ValueError, match="class_labels"):
        call(c, m, targets=bad_labels)
    with pytest.raises(ValueError, match="B, T, Q"):
        call(c, m[:, :, :5], targets=targets)
    with pytest.raises(ValueError, match="num_labels"):
        call(c[..., :-1], m, targets=targets)
    with pytest.raises(ValueError, match="mask_labels"):
        call(c, m, targets=targets.replace(mask_labels=targets.mask_labels[:, :1]))
    with pytest.raises(ValueError, match="valid"):
        call(c, m, targets=targets.replace(valid=targets.valid[..., :1]))
    with pytest.raises(TypeError, match="class_labels"):
        call(c, m, targets=targets.replace(class_labels=targets.class_labels.astype(jnp.float32)))
    with pytest.raises(TypeError, match="mask_labels"):
        call(c, m, targets=targets.replace(mask_labels=targets.mask_labels.astype(jnp.int32)))
    with pytest.raises(TypeError, match="valid"):
        call(c, m, targets=targets.replace(valid=targets.valid.astype(jnp.int32)))
    with pytest.raises(TypeError, match="mask_logits"):
        call(c, m.astype(jnp.int32), targets=targets)
    with pytest.raises(ValueError, match="PointDraws"):
        call(c, m, targets=targets, draws=[])
    with pytest.raises(ValueError, match="together"):
        videomt_loss(c, m, class_logits, None, targets, key, CONFIG)


# ------------------------------------------------------------------------------------------------
# The authors' criterion in torch, written from reading tue-mps/videomt (`videomt_online`:
# `prepare_targets` + `frame_decoder_loss_reshape` in videomt.py, `VideoHungarianMatcher_Consistent`
# in modeling/matcher.py, `VideoSetCriterion` in criterion_videomt.py, detectron2's `point_sample` and
# `get_uncertain_point_coords_with_randomness`). It uses nothing of videomt_jax: its random numbers
# (their torch.rand calls) are read from the same uniform draws the JAX loss gets.
# ------------------------------------------------------------------------------------------------

AUTHORS_WEIGHTS = {"loss_ce": 2.0, "loss_mask": 5.0, "loss_dice": 5.0}  # cost weights = loss weights
AUTHORS_TERMS = {"loss_ce": "loss_cross_entropy", "loss_mask": "loss_mask", "loss_dice": "loss_dice"}


def _authors_point_sample(features, coords):
    """point_sample: features [N, C, h, w], coords [N, P, 2] (x, y) in [0, 1] -> [N, C, P]."""
    grid = 2.0 * coords[:, :, None, :] - 1.0
    return torch.nn.functional.grid_sample(features, grid, align_corners=False)[..., 0]


def _authors_targets(masks, labels, valid):
    """One clip's per-frame target dicts: its objects are the slots visible in some frame (slot order),
    each in every frame (class every frame, id -1 and an empty mask where hidden).

    masks [T, M, H, W], labels [T, M], valid [T, M] (numpy). Returns (frame dicts, slot of each object)."""
    slots = np.flatnonzero(valid.any(0))
    classes = torch.as_tensor(labels[valid[:, slots].argmax(0), slots], dtype=torch.int64)
    ids = torch.as_tensor(np.where(valid[:, slots], slots[None], -1).T)  # [N, T]
    shown = np.where(valid[:, slots, None, None], masks[:, slots], 0).astype(np.float32)  # [T, N, H, W]
    video = torch.as_tensor(shown.transpose(1, 0, 2, 3))  # [N, T, H, W]
    frames = [{"labels": classes, "ids": ids[:, [f]], "masks": video[:, [f]]} for f in range(valid.shape[0])]
    return frames, slots


def _authors_match_clip(logits, pred_masks, frames, match_points):
    """VideoHungarianMatcher_Consistent on one clip: logits [T, Q, K+1], pred_masks [T, Q, 1, h, w],
    match_points [T, P, 2] (the points of each frame that matches). -> (queries, objects), every frame."""
    first_seen: dict[int, int] = {}
    for f, target in enumerate(frames):
        for obj in torch.nonzero(target["ids"][:, 0] != -1)[:, 0].tolist():
            first_seen.setdefault(obj, f)
    queries, objects, taken = [], [], []
    for f in sorted(set(first_seen.values())):
        new = [obj for obj, g in first_seen.items() if g == f]
        cost_class = -logits[f].softmax(-1)[:, frames[f]["labels"][new]]
        coords = match_points[f][None]
        tgt = _authors_point_sample(frames[f]["masks"][new], coords.repeat(len(new), 1, 1)).flatten(1)
        out = _authors_point_sample(pred_masks[f], coords.repeat(pred_masks.shape[1], 1, 1)).flatten(1)
        bce = torch.nn.functional.binary_cross_entropy_with_logits
        pos, neg = bce(out, torch.ones_like(out), reduction="none"), bce(out, torch.zeros_like(out), reduction="none")
        cost_mask = (torch.einsum("nc,mc->nm", pos, tgt) + torch.einsum("nc,mc->nm", neg, 1 - tgt)) / out.shape[1]
        prob = out.sigmoid()
        denominator = prob.sum(-1)[:, None] + tgt.sum(-1)[None, :]
        cost_dice = 1 - (2 * torch.einsum("nc,mc->nm", prob, tgt) + 1) / (denominator + 1)
        w = AUTHORS_WEIGHTS
        cost = w["loss_mask"] * cost_mask + w["loss_ce"] * cost_class + w["loss_dice"] * cost_dice
        if taken:
            cost[taken, :] = 1e6
        rows, cols = linear_sum_assignment(cost.numpy())
        taken += rows.tolist()
        queries += rows.tolist()
        objects += np.asarray(new)[cols].tolist()
    return queries, objects


def _authors_criterion(logits, pred_masks, clips, draws, num_labels, no_object_weight, num_points):
    """VideoSetCriterion (labels + masks) of one prediction. logits [B*T, Q, K+1], pred_masks
    [B*T, Q, 1, h, w] (torch); clips: `_authors_targets` of each clip; draws: numpy match [B, T, P, 2],
    candidates [B, T, M, C, 2], extra [B, T, M, R, 2]. -> (loss dict, per-clip (queries, objects))."""
    frames = len(clips[0][0])
    targets, indices, pair_draws, matches = [], [], [], []
    for b, (clip_frames, slots) in enumerate(clips):
        part = slice(b * frames, (b + 1) * frames)
        queries, objects = _authors_match_clip(
            logits.detach()[part], pred_masks.detach()[part], clip_frames, torch.as_tensor(draws["match"][b])
        )
        matches.append((queries, objects))
        for f in range(frames):
            targets.append(clip_frames[f])
            indices.append((torch.as_tensor(queries, dtype=torch.int64), torch.as_tensor(objects, dtype=torch.int64)))
            pair_draws += [(draws["candidates"][b, f, slots[o]], draws["extra"][b, f, slots[o]]) for o in objects]
    num_masks = max(float(sum(len(t["labels"]) for t in targets)), 1.0)  # one device: all-reduce / world = itself

    target_classes = torch.full(logits.shape[:2], num_labels, dtype=torch.int64)
    for i, (queries, objects) in enumerate(indices):
        target_classes[i, queries] = targets[i]["labels"][objects]
    empty_weight = torch.ones(num_labels + 1)
    empty_weight[-1] = no_object_weight
    loss_ce = torch.nn.functional.cross_entropy(logits.transpose(1, 2), target_classes, empty_weight)

    src = torch.cat([pred_masks[i][queries] for i, (queries, _) in enumerate(indices)]).flatten(0, 1)[:, None]
    tgt = torch.cat([targets[i]["masks"][objects] for i, (_, objects) in enumerate(indices)]).flatten(0, 1)[:, None]
    num_uncertain = int(0.75 * num_points)
    with torch.no_grad():
        candidates = torch.as_tensor(np.stack([c for c, _ in pair_draws])) if pair_draws else torch.zeros(0, 1, 2)
        extra = torch.as_tensor(np.stack([e for _, e in pair_draws])) if pair_draws else torch.zeros(0, 1, 2)
        uncertainty = -torch.abs(_authors_point_sample(src.float(), candidates))  # [N, 1, C]
        top = torch.topk(uncertainty[:, 0, :], k=num_uncertain, dim=1)[1]
        chosen = torch.gather(candidates, 1, top[..., None].expand(-1, -1, 2))
        coords = torch.cat([chosen, extra], dim=1)
        point_labels = _authors_point_sample(tgt, coords).squeeze(1)
    point_logits = _authors_point_sample(src, coords).squeeze(1)
    loss_mask = torch.nn.functional.binary_cross_entropy_with_logits(point_logits, point_labels, reduction="none")
    prob = point_logits.sigmoid()
    dice = 1 - (2 * (prob * point_labels).sum(-1) + 1) / (prob.sum(-1) + point_labels.sum(-1) + 1)
    terms = {"loss_ce": loss_ce, "loss_mask": loss_mask.mean(1).sum() / num_masks, "loss_dice": dice.sum() / num_masks}
    return terms, matches


def _clips_that_enter_and_leave(rng, batch, frames, slots):
    """valid [B, T, M]: clip 0 by hand (an object absent in frame 0, one that leaves, one seen in one
    middle frame, one that returns, an empty slot); clip 1 random with nothing in frame 0; the rest random."""
    valid = rng.random((batch, frames, slots)) < 0.5
    valid[0] = np.array([[1, 0, 1, 0, 1, 0], [1, 1, 1, 0, 0, 0], [1, 1, 0, 1, 1, 0], [1, 1, 0, 0, 1, 0]], bool)
    valid[1, 0] = False
    return valid


def _authors_problem(seed, batch, queries, num_aux):
    frames, slots, rng = 4, 6, np.random.default_rng(seed)
    shape = (num_aux + 1, batch, frames, queries)
    class_logits = (rng.normal(size=(*shape, NUM_LABELS + 1)) * 2).astype(np.float32)
    mask_logits = (rng.normal(size=(*shape, 8, 8)) * 3).astype(np.float32)
    valid = _clips_that_enter_and_leave(rng, batch, frames, slots)
    # one class per object; hidden frames carry other labels and masks, which the loss must not read
    labels = np.where(valid, rng.integers(0, NUM_LABELS, (batch, 1, slots)), rng.integers(0, NUM_LABELS, valid.shape))
    masks = rng.random((batch, frames, slots, H, W)) > 0.6
    targets = LossTargets(jnp.asarray(masks), jnp.asarray(labels, jnp.int32), jnp.asarray(valid))
    return class_logits, mask_logits, targets


def _run_authors(class_logits, mask_logits, targets, draws, config):
    """The authors' loss of [final, *aux] predictions with our draws: (terms, weighted total, grads, matches)."""
    cls, msk = [_flat_frames(x) for x in class_logits], [_flat_frames(x) for x in mask_logits]
    masks, labels, valid = (np.asarray(x) for x in (targets.mask_labels, targets.class_labels, targets.valid))
    clips = [_authors_targets(masks[b], labels[b], valid[b]) for b in range(valid.shape[0])]
    terms, total, matches = {}, 0.0, []
    for i, (c, m, draw) in enumerate(zip(cls, msk, draws)):
        numpy_draws = {name: np.array(getattr(draw, name)) for name in ("match", "candidates", "extra")}
        one, match = _authors_criterion(
            c, m[:, :, None], clips, numpy_draws, NUM_LABELS, config.no_object_weight, config.train_num_points
        )
        matches.append(match)
        suffix = "" if i == 0 else f"_{i - 1}"
        for name, value in one.items():
            terms[AUTHORS_TERMS[name] + suffix] = value
            total = total + AUTHORS_WEIGHTS[name] * value
    total.backward()
    grads = [
        np.stack([t.grad.numpy().reshape(x.shape) for t, x in zip(ts, xs)])
        for ts, xs in ((cls, class_logits), (msk, mask_logits))
    ]
    return {k: float(v.detach()) for k, v in terms.items()}, float(total.detach()), grads, matches


@pytest.mark.parametrize("seed,points,batch", [(0, 128, 3), (1, 128, 3), (2, 128, 3), (3, 128, 3), (4, 12544, 2)])
def test_first_appearance_matches_the_authors_criterion(seed, points, batch):
    """videomt_loss (default matching) equals the authors' criterion on clips where objects enter and
    leave: Q = 10 > M = 6, two aux predictions (the last dropped, as theirs), terms, total, gradients
    and the per-clip matching."""
    class_logits, mask_logits, targets = _authors_problem(seed, batch, queries=10, num_aux=2)
    config = _config(points)
    draws = draw_points(jax.random.PRNGKey(seed), batch, 4, 6, config, count=2)  # final + aux 0
    logits = (jnp.asarray(class_logits), jnp.asarray(mask_logits))
    (total, terms), grads = _loss_and_grads(*logits, targets, draws, config)
    theirs, their_total, their_grads, their_matches = _run_authors(
        class_logits[:-1], mask_logits[:-1], targets, draws, config
    )
    assert sorted(terms) == sorted(theirs)
    for name, expected in theirs.items():
        np.testing.assert_allclose(float(terms[name]), expected, rtol=1e-5, err_msg=name)
    np.testing.assert_allclose(float(total), their_total, rtol=1e-5)
    for ours, expected in zip(grads, their_grads):
        ours = np.asarray(ours)
        np.testing.assert_allclose(ours[:-1], expected, rtol=0, atol=1e-5 * np.abs(expected).max())
        assert np.abs(ours[-1]).max() == 0.0
    for i, (draw, clip_matches) in enumerate(zip(draws, their_matches)):  # each prediction matched on its own
        matching = MATCH_JIT(logits[0][i], logits[1][i], targets, draw.match, config=config)
        query_index, matched = np.asarray(matching.query_index), np.asarray(matching.matched)
        for b, (queries, objects) in enumerate(clip_matches):
            slots = np.flatnonzero(np.asarray(targets.valid)[b].any(0))
            expected = sorted((q, int(slots[o])) for q, o in zip(queries, objects))
            for t in range(4):  # the same pairs in every frame, hidden frames included
                assert sorted((int(query_index[b, t, m]), int(m)) for m in np.flatnonzero(matched[b, t])) == expected


# --------------------------------------------------------------------------- content regions
@pytest.mark.parametrize("matching", ["first_appearance", "per_frame"])
def test_content_region_equals_the_clip_on_its_own_frame(matching):
    """A clip of 24 x 16 pixels top-left on a 32 x 32 canvas (garbage predictions outside, empty targets),
    with `LossTargets.content`, has the loss (and the matching) of the clip on its own 24 x 16 frame."""
    rng = np.random.default_rng(3)
    config, (b, t, q, m), (h, w) = _config(64), (2, 3, 6, 3), (24, 16)
    cls = jnp.asarray(rng.normal(size=(b, t, q, NUM_LABELS + 1)), jnp.float32)
    own_masks = jnp.asarray(rng.normal(size=(b, t, q, h // 4, w // 4)) * 3, jnp.float32)
    valid = jnp.asarray(rng.random((b, t, m)) > 0.3)
    own_targets = LossTargets(
        mask_labels=jnp.asarray(rng.random((b, t, m, h, w)) > 0.5),
        class_labels=jnp.asarray(rng.integers(0, NUM_LABELS, (b, t, m)), jnp.int32),
        valid=valid,
    )
    canvas_masks = jnp.asarray(rng.normal(size=(b, t, q, H // 4, W // 4)) * 50, jnp.float32)  # garbage
    canvas_masks = canvas_masks.at[..., : h // 4, : w // 4].set(own_masks)
    canvas_labels = jnp.zeros((b, t, m, H, W), bool).at[..., :h, :w].set(own_targets.mask_labels)
    content = jnp.asarray([[h / H, w / W]] * b, jnp.float32)
    canvas_targets = own_targets.replace(mask_labels=canvas_labels, content=content)
    draws = draw_points(jax.random.key(4), b, t, m, config)
    own = LOSS_JIT(cls, own_masks, None, None, own_targets, None, config, draws=draws, matching=matching)
    on_canvas = LOSS_JIT(cls, canvas_masks, None, None, canvas_targets, None, config, draws=draws, matching=matching)
    for name in LOSS_TERMS:
        np.testing.assert_allclose(on_canvas[1][name], own[1][name], rtol=1e-5, err_msg=name)
    without = LOSS_JIT(
        cls,
        canvas_masks,
        None,
        None,
        canvas_targets.replace(content=None),
        None,
        config,
        draws=draws,
        matching=matching,
    )
    assert abs(float(without[0]) - float(own[0])) > 1e-3 * abs(float(own[0]))  # the region matters
