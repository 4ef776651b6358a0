"""The train step (training/step.py): both batch formats, batch checks, content regions."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from tests.helpers.batches import CFG, PROCESSOR, SLOTS, H, T, W, sized_clip, toy_clip
from videomt_jax.data.batching import collate
from videomt_jax.modeling.family import init_params
from videomt_jax.processing import VideoProcessor
from videomt_jax.training.config import TrainConfig
from videomt_jax.training.loop import check_normalization
from videomt_jax.training.step import (
    batch_arrays,
    check_batch,
    create_train_state,
    make_train_step,
    train_mesh,
)

pytestmark = pytest.mark.slow  # run first under xdist (conftest.py)


def test_one_train_step_is_bit_identical_in_both_formats():
    clips = [toy_clip(10), toy_clip(11)]
    lean = collate(clips, num_labels=2, max_instances=SLOTS, processor=PROCESSOR)
    plain = {
        "pixel_values": PROCESSOR.normalize(lean.frames),
        "mask_labels": np.zeros((2, T, SLOTS, H, W), bool),
        "class_labels": lean.class_labels,
        "valid": lean.valid,
    }
    for b, clip in enumerate(clips):  # the bool masks, built here from the clips (both instances present)
        plain["mask_labels"][b, :, :2] = clip.masks
    tc = TrainConfig(
        steps=1, batch_size=2, num_frames=T, learning_rate=1e-2, warmup_head=0, warmup_encoder=0, deep_supervision=False
    )
    params = init_params(CFG, jax.random.key(0), image_hw=(H, W))
    results = []
    for batch in (batch_arrays(lean), plain):
        check_batch(batch, CFG)
        state, tx = create_train_state(params, CFG, tc)
        step = make_train_step(CFG, tc, tx, processor=PROCESSOR)
        state, metrics = step(state, {k: np.asarray(v) for k, v in batch.items()})
        results.append((jax.device_get(metrics), jax.device_get(state.params)))
    (m_lean, p_lean), (m_plain, p_plain) = results
    assert set(batch_arrays(lean)) == {"frames", "mask_bits", "class_labels", "valid"}
    assert np.isfinite(m_lean["loss"]) and m_lean["loss_mask"] > 0
    for k in m_plain:
        assert np.array_equal(m_lean[k], m_plain[k]), k
    for a, b in zip(jax.tree.leaves(p_lean), jax.tree.leaves(p_plain)):
        np.testing.assert_array_equal(a, b)


def test_bad_batches_name_the_field_and_shape():
    lean = batch_arrays(collate([toy_clip(0), toy_clip(1)], num_labels=2, max_instances=SLOTS))
    masks = np.unpackbits(lean["mask_bits"], axis=-1, count=W).astype(bool)
    cases = [
        ({**lean, "mask_labels": masks}, ValueError, r"exactly one of \['mask_bits', 'mask_labels'\]"),
        ({k: v for k, v in lean.items() if k != "mask_bits"}, ValueError, r"exactly one of .*got none"),
        ({**lean, "pixel_values": lean["frames"] / 1.0}, ValueError, r"exactly one of \['frames', 'pixel_values'\]"),
        (
            {**lean, "mask_bits": lean["mask_bits"].astype(bool)},
            TypeError,
            r"mask_bits must be uint8.*\(2, 2, 3, 8, 2\)",
        ),
        (
            {**lean, "mask_bits": np.packbits(np.pad(masks, [(0, 0)] * 4 + [(0, 5)]), axis=-1)},
            ValueError,
            r"mask_bits must be \[B, T, M, H, ceil\(W/8\)\] = \[B, T, M, 8, 2\] for 8x12 frames, "
            r"got shape \(2, 2, 3, 8, 3\)",
        ),
        ({**lean, "frames": lean["frames"].astype(np.float32)}, TypeError, r"frames must be uint8"),
    ]
    for batch, error, message in cases:
        with pytest.raises(error, match=message):
            check_batch(batch, CFG)
    with pytest.raises(ValueError, match=r"exactly one of \['mask_bits', 'mask_labels'\], got none"):
        batch_arrays({k: v for k, v in lean.items() if k != "mask_bits"})
    other = collate([toy_clip(0)], num_labels=2, max_instances=SLOTS, processor=PROCESSOR)
    check_normalization(other, PROCESSOR)
    with pytest.raises(ValueError, match="another VideoProcessor"):
        check_normalization(other, VideoProcessor())


def test_a_train_step_on_a_bucket_canvas_runs_and_keeps_to_the_regions():
    clips = [sized_clip(1, (8, 12)), sized_clip(2, (4, 20))]
    batch = batch_arrays(collate(clips, num_labels=2, max_instances=SLOTS, processor=PROCESSOR, bucket=8, cap=(32, 32)))
    tc = TrainConfig(steps=1, batch_size=2, num_frames=T, learning_rate=1e-2, warmup_head=0, warmup_encoder=0)
    params = init_params(CFG, jax.random.key(0), image_hw=(H, W))
    losses = []
    for frames in (batch["frames"], np.where(batch["frames"] > 0, 255 - batch["frames"], 7).astype(np.uint8)):
        outside = frames.copy()
        for i, clip in enumerate(clips):  # change only the pixels outside each clip's own region
            h, w = clip.frames.shape[1:3]
            outside[i, :, :h, :w] = batch["frames"][i, :, :h, :w]
        state, tx = create_train_state(params, CFG, tc)
        _, metrics = make_train_step(CFG, tc, tx, processor=PROCESSOR)(state, {**batch, "frames": outside})
        losses.append(float(metrics["loss"]))
    assert np.isfinite(losses[0]) and losses[0] == pytest.approx(losses[1], rel=1e-5)


# ------------------------------------------------------------------------------------------ sharded state
FSDP = 4  # the state split over 4 of 8 host devices, the batch over all 8 (mesh data 2 x fsdp 4)
# After 3 steps at LR 1e-2 (float32; the sharded runs reduce in another order) parameters agree to
# SHARDED_PARAM_ATOL, losses to SHARDED_LOSS_RTOL. Adam's eps is raised to 1e-4 so that gradients that
# are zero up to rounding (the key bias: softmax ignores it) stay ~0 updates instead of +-LR ones.
SHARDED_PARAM_ATOL, SHARDED_LOSS_RTOL = 2e-5, 1e-5
SHARDED_TC = TrainConfig(
    steps=3,
    batch_size=8,
    num_frames=T,
    learning_rate=1e-2,
    warmup_head=0,
    warmup_encoder=0,
    adam_eps=1e-4,
    deep_supervision=False,
    log_every=1,
)
SHARDED_RUNS = {"one": (1, 1), "replicated": (8, 1), "fsdp": (8, FSDP)}  # name: (devices, fsdp)


def sharded_runs(out: str) -> None:
    """Run in a process with 8 host devices: `fit` SHARDED_TC on each of SHARDED_RUNS. Writes to `out`
    (npz) the losses and parameters of each, the fsdp run's log, and the (global, per-device) shapes of
    its state's leaves."""
    import io
    import json
    import os

    from videomt_jax.training.loop import fit

    batch = collate([toy_clip(i) for i in range(8)], num_labels=2, max_instances=SLOTS, processor=PROCESSOR)
    arrays, log = {}, io.StringIO()
    for name, (devices, fsdp) in SHARDED_RUNS.items():
        tc = SHARDED_TC.replace(fsdp=fsdp)
        run = fit(CFG, tc, lambda step: batch, None, num_devices=devices, processor=PROCESSOR, log=log)
        arrays[f"{name}/loss"] = np.asarray([h["loss"] for h in run.history])
        for path, leaf in jax.tree_util.tree_leaves_with_path(run.state.params):
            arrays[f"{name}/{jax.tree_util.keystr(path)}"] = np.asarray(leaf)
    # the fsdp run again, stopped after its first step and resumed from its checkpoint (sharded as saved)
    tc, resume_dir = SHARDED_TC.replace(fsdp=FSDP), os.path.join(os.path.dirname(out), "fsdp_run")
    fit(CFG, tc, lambda step: batch, resume_dir, num_devices=8, processor=PROCESSOR, log=None, stop_after=1)
    resumed = fit(CFG, tc, lambda step: batch, resume_dir, num_devices=8, processor=PROCESSOR, log=log)
    assert resumed.resumed_from == 1
    for path, leaf in jax.tree_util.tree_leaves_with_path(resumed.state.params):
        arrays[f"resumed/{jax.tree_util.keystr(path)}"] = np.asarray(leaf)
    shapes = {
        f"{part}{jax.tree_util.keystr(path)}": [leaf.shape, sorted({s.data.shape for s in leaf.addressable_shards})]
        for part, tree in (("params", resumed.state.params), ("opt_state", resumed.state.opt_state))
        for path, leaf in jax.tree_util.tree_leaves_with_path(tree)
    }
    np.savez(out, **arrays, info=np.asarray(json.dumps({"log": log.getvalue(), "shapes": shapes})))


@pytest.fixture(scope="module")
def sharded(tmp_path_factory):
    import json
    import subprocess
    import sys

    from tests.helpers.training_worker import REPO, worker_env

    root = tmp_path_factory.mktemp("sharded")
    env = {**worker_env(root / "cache"), "PYTHONPATH": str(REPO)}
    code = "import sys; from tests.training.test_step import sharded_runs; sharded_runs(sys.argv[1])"
    done = subprocess.run([sys.executable, "-c", code, str(root / "runs.npz")], env=env, cwd=REPO, capture_output=True)
    assert done.returncode == 0, done.stderr.decode()[-4000:]
    with np.load(root / "runs.npz") as runs:
        arrays = dict(runs)
    return arrays, json.loads(str(arrays.pop("info")))


def test_fsdp_trains_as_the_replicated_state_and_as_one_device(sharded):
    arrays, _ = sharded
    for name in ("replicated", "fsdp"):
        np.testing.assert_allclose(arrays[f"{name}/loss"], arrays["one/loss"], rtol=SHARDED_LOSS_RTOL)
        for key in (k[4:] for k in arrays if k.startswith("one/") and k != "one/loss"):
            np.testing.assert_allclose(
                arrays[f"{name}/{key}"], arrays[f"one/{key}"], rtol=0, atol=SHARDED_PARAM_ATOL, err_msg=f"{name} {key}"
            )
    assert len(arrays["one/loss"]) == 3 and arrays["one/loss"][2] < arrays["one/loss"][0]
    moved = [k for k in arrays if k.startswith("one/[") and np.abs(arrays[k] - arrays["fsdp/" + k[4:]]).max() > 0]
    assert moved, "the sharded run must not be bit-identical (else it did not run sharded)"


def test_an_fsdp_run_resumes_from_its_checkpoint_bit_identically(sharded):
    arrays, _ = sharded
    keys = [k[len("fsdp/") :] for k in arrays if k.startswith("fsdp/[")]
    assert len(keys) > 40
    for key in keys:
        np.testing.assert_array_equal(arrays[f"resumed/{key}"], arrays[f"fsdp/{key}"], err_msg=key)


def test_fsdp_splits_parameters_gradients_and_moments(sharded):
    _, info = sharded
    shapes = info["shapes"]
    assert "data parallel over 8 devices" in info["log"] and "mesh data 2 x fsdp 4" in info["log"]
    assert "moments split over 4 devices (fsdp)" in info["log"]
    fc1 = "['encoder']['layers']['block']['mlp']['fc1']['kernel']"
    assert shapes["params" + fc1] == [[1, 32, 128], [[1, 32, 32]]]  # [L, D, 4D]: the widest axis split
    moments = [v for k, v in shapes.items() if k.startswith("opt_state") and k.endswith(fc1)]
    assert moments == [[[1, 32, 128], [[1, 32, 32]]]] * 2  # Adam's mu and nu, split as their parameter
    for key, (whole, (shard, *more)) in shapes.items():
        assert not more, key  # every device holds a piece of the same shape
        divisible = any(n % FSDP == 0 for n in whole)
        assert np.prod(shard) * (FSDP if divisible else 1) == np.prod(whole), (key, whole, shard)
    split = [k for k, (whole, _) in shapes.items() if k.startswith("params") and any(n % FSDP == 0 for n in whole)]
    assert len(split) > 40


def test_fsdp_must_divide_the_devices():
    with pytest.raises(ValueError, match=r"fsdp=3 must be a positive divisor of the 1 devices of the mesh"):
        train_mesh(1, 3)
    with pytest.raises(ValueError, match=r"fsdp must be >= 1, got 0"):
        TrainConfig(fsdp=0)
    assert train_mesh(1, 1).shape == {"data": 1, "fsdp": 1}
