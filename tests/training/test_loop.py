"""Training stack: loss descent, resume identity across processes, 8-device data parallel = 1 device,
input errors, recipes, CLI. The optimizer (schedule, groups, freezing): test_optim.py.

Whatever compiles the train step runs in subprocesses (tests/helpers/training_worker.py: 8 host devices,
fast XLA compilation, a shared compilation cache); they start with the module's first test and
run while the light tests here go on.
Letters: L layers, B clips, T frames, M target slots, H/W pixels.
"""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.helpers.training_worker import NUM_DEVICES, TINY_RECIPE, Workers
from videomt_jax.modeling.family import init_params
from videomt_jax.training.config import TrainConfig
from videomt_jax.training.loop import DroppedObjects, fit
from videomt_jax.training.recipes import load_recipe
from videomt_jax.training.step import batch_arrays, check_batch, data_mesh

pytestmark = pytest.mark.slow  # run first under xdist (conftest.py)

# worker task -> the fixtures that need it (`main` starts `resume` itself)
HEAVY = {"main": ("main_run", "resume_run"), "cli": ("cli_run",)}


# ------------------------------------------------------------------------------------------ workers
@pytest.fixture(scope="module", autouse=True)
def workers(request, tmp_path_factory):
    w = Workers(tmp_path_factory.mktemp("training_runs"))
    wanted = {f for item in request.session.items if item.module is request.module for f in item.fixturenames}
    needed = [task for task, fixtures in HEAVY.items() if wanted & set(fixtures)]
    for task in needed:  # the CLI reuses the train step `main` compiles, when `main` runs too
        w.start(task, *(["--after-main"] if task == "cli" and "main" in needed else []))
    yield w
    w.close()


@pytest.fixture(scope="module")
def main_run(workers):
    workers.wait("main")
    return workers.load("main")


@pytest.fixture(scope="module")
def resume_run(workers, main_run):
    if main_run[0]["resume_returncode"]:
        pytest.fail("resume worker failed:\n" + (workers.root / "resume.log").read_text()[-4000:])
    return workers.load("resume")


@pytest.fixture(scope="module")
def cli_run(workers):
    workers.wait("cli")
    return json.loads((workers.root / "cli.json").read_text()), workers.root


# ------------------------------------------------------------------------------------------ helpers
@pytest.fixture(scope="module")
def recipe(tmp_path_factory):
    path = tmp_path_factory.mktemp("recipe") / "tiny.json"
    path.write_text(json.dumps(TINY_RECIPE))
    return load_recipe(path)


@pytest.fixture(scope="module")
def params(recipe):
    """Random float32 parameters with the tiny model's tree (no model compile)."""
    shapes = jax.eval_shape(lambda k: init_params(recipe.model, k), jax.random.key(0))
    rng = np.random.default_rng(0)
    return jax.tree.map(lambda s: jnp.asarray(rng.standard_normal(s.shape), jnp.float32), shapes)


# ------------------------------------------------------------------------------------------ (b)-(d) runs
def test_loss_falls_on_a_fixed_batch(main_run):
    info, arrays = main_run
    losses = np.asarray([h["loss"] for h in info["curve"]])
    norms = np.asarray([h["grad_norm"] for h in info["curve"]])
    assert len(losses) == 30 and np.isfinite(losses).all()
    assert np.isfinite(norms).all() and (norms > 0).all()
    assert losses[-3:].mean() < 0.7 * losses[0], losses
    assert all(np.isfinite(v).all() for k, v in arrays.items() if k.startswith("curve/"))
    assert info["caller_params_intact"]  # the donated train state never aliases the caller's params


def test_resume_in_a_new_process_matches_the_straight_run(main_run, resume_run):
    info, arrays = main_run
    resumed_info, resumed = resume_run
    assert info["split_first_step"] == 10 and info["straight_step"] == 20
    assert resumed_info == {"resumed_from": 10, "step": 20}
    for key, value in resumed.items():
        np.testing.assert_allclose(value, arrays[f"straight/{key}"], rtol=0, atol=1e-6, err_msg=key)
    moved = max(np.abs(value - arrays[f"single/{key}"]).max() for key, value in resumed.items())
    assert moved > 1e-3  # steps 4..20 changed the parameters


def test_data_parallel_on_8_devices_matches_one_device(main_run):
    info, arrays = main_run
    assert info["devices"] == NUM_DEVICES and info["sharded_param_devices"] == NUM_DEVICES
    single = np.asarray([h["loss"] for h in info["single"]])
    sharded = np.asarray([h["loss"] for h in info["sharded"]])
    assert len(single) == 3
    np.testing.assert_allclose(sharded, single, rtol=1e-5)
    for key in (k for k in arrays if k.startswith("single/")):
        np.testing.assert_allclose(arrays["sharded/" + key[7:]], arrays[key], rtol=0, atol=1e-5, err_msg=key)


def test_shared_program_traces_the_train_step_once_across_fits(main_run):
    info, _ = main_run
    # five single-device fit calls (split, straight, curve, single, empty) share one TrainProgram
    assert info["train_step_traces"] == {"single": 1, "sharded": 1}


def test_program_refuses_another_run(recipe, params):
    from videomt_jax.training.loop import make_program

    program = make_program(recipe.model, recipe.train, params)
    program.check(recipe.model, recipe.train.replace(log_every=7, seed=3), params, None)  # host-only fields
    with pytest.raises(ValueError, match=r"train config differs in \['learning_rate'\]"):
        program.check(recipe.model, recipe.train.replace(learning_rate=1.0), params, None)
    with pytest.raises(ValueError, match="model config differs"):
        program.check(recipe.model.replace(dtype="bfloat16"), recipe.train, params, None)
    with pytest.raises(ValueError, match="mesh differs"):
        program.check(recipe.model, recipe.train, params, data_mesh(1))  # one device, but a mesh


def test_moved_recipe_keys_are_read_once(tmp_path):
    with pytest.raises(ValueError, match="unknown TrainConfig keys.*compute_dtype"):
        TrainConfig.from_dict({"compute_dtype": "bfloat16"})
    moved = tmp_path / "moved.json"  # remat was a model setting: read as the training setting
    moved.write_text(json.dumps({**TINY_RECIPE, "model": {"remat": "full"}}))
    assert load_recipe(moved).train.remat == "full"
    old = tmp_path / "old.json"  # a recipe written before the move: read as the model's dtype
    old.write_text(json.dumps({**TINY_RECIPE, "model": {}, "train": {"compute_dtype": "bfloat16"}}))
    assert load_recipe(old).model.dtype == "bfloat16"
    clash = tmp_path / "clash.json"
    clash.write_text(json.dumps({"model": {"dtype": "float32"}, "train": {"compute_dtype": "bfloat16"}}))
    with pytest.raises(ValueError, match="compute_dtype='bfloat16' and model.dtype='float32' differ"):
        load_recipe(clash)
    assert load_recipe("synthetic-tiny").model.dtype == "float32"


def test_all_invalid_targets_give_a_finite_loss(main_run):
    info, _ = main_run
    for h in info["empty"]:
        assert np.isfinite([h["loss"], h["grad_norm"]]).all()
        assert h["loss_mask"] == 0.0 and h["loss_dice"] == 0.0 and h["loss_cross_entropy"] > 0
    assert info["empty_params_finite"]


# ------------------------------------------------------------------------------------------ (e) errors
def test_bad_batches_raise_clear_errors(recipe):
    cfg = recipe.model
    lean = recipe.batches()(0)
    check_batch(batch_arrays(lean), cfg)  # the lean format collate gives (uint8 frames, packed masks)
    # the float / bool format a caller may hand fit
    good = {
        "pixel_values": lean.pixel_values,
        "mask_labels": lean.mask_labels,
        "class_labels": lean.class_labels,
        "valid": lean.valid,
    }
    check_batch(good, cfg)  # padded slots carry the no-object label; only valid slots are checked

    def broken(**changes):
        return {**good, **changes}

    labels = good["class_labels"].copy()
    labels[good["valid"]] = cfg.num_labels  # out of range for a real target
    with pytest.raises(ValueError, match=r"class_labels \[4\] of valid targets are outside \[0, num_labels=4\)"):
        check_batch(broken(class_labels=labels), cfg)
    with pytest.raises(ValueError, match=r"class_labels \[-1\]"):
        check_batch(broken(class_labels=np.where(good["valid"], -1, labels)), cfg)
    with pytest.raises(ValueError, match="mask_labels must be"):
        check_batch(broken(mask_labels=good["mask_labels"][:, :1]), cfg)
    with pytest.raises(ValueError, match=r"valid must be \[B, T, M\]"):
        check_batch(broken(valid=good["valid"][..., :2]), cfg)
    with pytest.raises(TypeError, match="pixel_values must be floating"):
        check_batch(broken(pixel_values=good["pixel_values"].astype(np.uint8)), cfg)
    with pytest.raises(ValueError, match="multiple of the patch size"):
        check_batch(broken(pixel_values=good["pixel_values"][:, :, :30]), cfg)
    with pytest.raises(TypeError, match="valid must be bool"):
        check_batch(broken(valid=good["valid"].astype(np.int32)), cfg)
    with pytest.raises(ValueError, match=r"lacks the fields \['valid'\]"):
        batch_arrays({k: v for k, v in good.items() if k != "valid"})
    with pytest.raises(ValueError, match="class_labels"):  # fit checks before it builds anything
        fit(cfg, recipe.train, lambda step: broken(class_labels=labels), None, log=None)
    with pytest.raises(ValueError, match="devices"):
        data_mesh(len(jax.devices()) + 1)
    with pytest.raises(ValueError, match="steps must be >= 1"):
        TrainConfig(steps=0)
    with pytest.raises(ValueError, match="unknown TrainConfig keys"):
        TrainConfig.from_dict({"stepz": 3})
    with pytest.raises(ValueError, match="matching must be one of"):
        TrainConfig(matching="per_clip")
    with pytest.raises(ValueError, match="match_per_clip was removed"):
        TrainConfig.from_dict({"match_per_clip": True})


def test_crowded_clips_are_counted_and_reported(recipe):
    counter = DroppedObjects()
    counter.add(recipe.batches()(0))  # a collated batch whose clips all fit: nothing dropped
    assert counter.report() == ""
    counter.add({"dropped": np.array([0, 2, 1], np.int32)})
    counter.add({"dropped": np.array([3], np.int32)})
    counter.add({"class_labels": np.zeros((1, 2, 3))})  # a hand-made batch without the count
    assert (counter.objects, counter.clips) == (6, 3)
    assert "dropped 6 objects from 3 crowded clips" in counter.report()


# ------------------------------------------------------------------------------------------ (f) recipes
def test_recipe_json_fills_from_base_and_converts_lists(tmp_path):
    path = tmp_path / "mine.json"
    path.write_text(
        json.dumps(
            {
                "model": {"hidden_size": 64, "num_attention_heads": 2, "image_size": [32, 48]},
                "train": {"steps": 7},
                "data": {
                    "kind": "synthetic",
                    "num_frames": 4,
                    "thing_classes": ["circle", "cross"],
                    "stuff_classes": ["sand"],
                },
                "augment": None,
            }
        )
    )
    r = load_recipe(path, batch_size=2)
    assert r.name == "mine" and r.train.steps == 7 and r.train.batch_size == 2
    assert r.train.num_frames == r.data.num_frames == 4  # one value, given on either side
    assert r.data.thing_classes == ("circle", "cross") and r.data.stuff_classes == ("sand",)
    assert r.model.id2label == {0: "circle", 1: "cross", 2: "sand"} and r.model.image_size == (32, 48)
    assert r.model.hidden_size == 64 and r.model.num_hidden_layers == 6  # the rest from synthetic-tiny
    assert r.augment is None
    batch = r.batches()(0)
    assert batch.pixel_values.shape == (2, 4, 64, 64, 3)  # data image size from the base (64)
    again = tmp_path / "again.json"
    again.write_text(r.to_json())
    assert load_recipe(again) == r  # the resolved form loads back to the same recipe


def test_recipe_errors_name_the_problem(tmp_path):
    cases = {
        "top": ({"trian": {}}, r"unknown keys \['trian'\]"),
        "train": ({"train": {"stepz": 1}}, r"unknown TrainConfig keys: \['stepz'\]"),
        "data": ({"data": {"colour": 1}}, r"unknown SyntheticConfig keys \['colour'\]"),
        "kind": ({"data": {"kind": "kitti"}}, "unknown data kind 'kitti'"),
        "frames": ({"train": {"num_frames": 2}, "data": {"num_frames": 3}}, "num_frames differ"),
        "labels": ({"model": {"id2label": {"0": "a"}}}, "1 labels but the data 6 classes"),
        "model": ({"model": {"hiden_size": 3}}, "bad model keys"),
        "base": ({"base": "huge"}, "unknown base 'huge'"),
    }
    for name, (spec, message) in cases.items():
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(spec))
        with pytest.raises(ValueError, match=message):
            load_recipe(path)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_recipe(tmp_path / "bad.json")
    with pytest.raises(FileNotFoundError, match="neither a recipe name"):
        load_recipe("no-such-recipe")


def test_recipe_batches_split_over_processes(recipe):
    whole = recipe.batches()(3)
    parts = [recipe.batches(process_index=p, process_count=2)(3) for p in range(2)]
    for field in ("pixel_values", "mask_labels", "class_labels", "valid"):
        np.testing.assert_array_equal(np.concatenate([getattr(p, field) for p in parts]), getattr(whole, field))
    with pytest.raises(ValueError, match="cannot be split over 3 processes"):
        recipe.batches(process_index=0, process_count=3)


# ------------------------------------------------------------------------------------------ CLI
def test_cli_parser_flags():
    from videomt_jax.cli import build_parser

    parser = build_parser(("train", "eval"))
    args = parser.parse_args(["train", "r.json", "--no-resume", "--devices", "all", "--distributed", "--steps", "5"])
    assert (args.resume, args.devices, args.distributed, args.steps) == (False, None, True, 5)
    args = parser.parse_args(["eval", "m", "--clips", "3"])
    assert (args.split, args.clips, args.out) == (None, 3, None)  # None: heldout (synthetic) or the dataset's own
    with pytest.raises(SystemExit):
        parser.parse_args(["train", "r.json", "--devices", "0"])


def test_cli_train_resume_and_eval(cli_run):
    from videomt_jax.evaluation.synthetic import load_data_config
    from videomt_jax.weights.api import load_pretrained

    info, root = cli_run
    train = info["train"]
    assert train["rc"] == 0, train["stderr"][-2000:]
    assert "step 3/30  loss" in train["stdout"] and "steps/s  ETA" in train["stdout"]
    run = root / "cli_run"
    recipe = load_recipe(run / "recipe.json")
    assert recipe.name == "test-tiny" and recipe.train.steps == 30 and recipe.train.batch_size == 8
    config, params = load_pretrained(run / "model")
    assert config.replace(extra=recipe.model.extra) == recipe.model  # save_pretrained adds HF's "architectures"
    assert jax.tree.structure(params) == jax.tree.structure(
        jax.eval_shape(lambda k: init_params(config, k), jax.random.key(0))
    )
    assert load_data_config(run / "model") == recipe.data
    assert info["again"]["rc"] == 0 and "resumed from step 3" in info["again"]["stdout"]
    assert info["no_resume"]["rc"] == 1 and "pass --resume" in info["no_resume"]["stderr"]
    assert "step 4/30  loss" in info["again"]["stdout"]
    assert info["init"]["rc"] == 0 and "step 1/30  loss" in info["init"]["stdout"]
    mismatch = info["init_mismatch"]
    assert mismatch["rc"] == 1 and "--init weights do not fit" in mismatch["stderr"]
    assert "hidden_size: checkpoint 32, config 64" in mismatch["stderr"]
    assert "parameters from the checkpoint, 0 fresh" in info["init"]["stdout"]
    ev = info["eval"]
    assert ev["rc"] == 0, ev["stderr"][-2000:]
    assert "mIoU" in ev["stdout"] and "AP" in ev["stdout"] and "PQ" in ev["stdout"]
    results = json.loads((root / "results.json").read_text())
    assert results["num_clips"] == 3 and results["split"] == "heldout"
    assert 0.0 <= results["semantic"]["miou"] <= 1.0
    assert set(results["semantic"]["iou"]) == {"circle", "square", "sky", "grass"}
    for value in (results["video_instance"]["AP"], results["panoptic"]["pq"]):
        assert value is None or 0.0 <= value <= 1.0


def test_checkpoint_round_trip_without_register_tokens(recipe, tmp_path):
    """A model with no register tokens has a zero-size parameter, which orbax alone refuses."""
    from videomt_jax.training.checkpoint import Checkpointer
    from videomt_jax.training.step import create_train_state

    config = recipe.model.replace(num_register_tokens=0)
    shapes = jax.eval_shape(lambda k: init_params(config, k), jax.random.key(0))
    rng = np.random.default_rng(1)
    params = jax.tree.map(lambda s: jnp.asarray(rng.standard_normal(s.shape), jnp.float32), shapes)
    state, _ = create_train_state(params, config, recipe.train)
    assert state.params["embeddings"]["register_tokens"].shape == (1, 0, config.hidden_size)
    ckpt = Checkpointer(tmp_path / "ckpt", every=1, keep=1)
    assert ckpt.save(state, step=3, force=True)
    ckpt.close()
    again = Checkpointer(tmp_path / "ckpt", every=1, keep=1).restore(state)
    for (path, want), got in zip(jax.tree_util.tree_leaves_with_path(state), jax.tree.leaves(again)):
        assert got.shape == want.shape and got.dtype == want.dtype, jax.tree_util.keystr(path)
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want), err_msg=jax.tree_util.keystr(path))


def test_fit_refuses_checkpoints_of_another_config(tmp_path):
    """`fit` itself (the Python API) refuses before orbax would fail on other shapes."""
    from videomt_jax.training.loop import check_resume, run_metadata

    recipe = load_recipe("synthetic-tiny")
    stored = run_metadata(recipe.model, recipe.train)
    check_resume(stored, recipe.model, recipe.train.replace(steps=9000, log_every=1), tmp_path)
    check_resume(None, recipe.model.replace(hidden_size=64), recipe.train, tmp_path)  # old checkpoints: unchecked
    with pytest.raises(ValueError, match=r"model.hidden_size, train.seed differ"):
        check_resume(stored, recipe.model.replace(hidden_size=64), recipe.train.replace(seed=3), tmp_path)


def test_eta_leaves_the_compiling_step_out():
    from videomt_jax.training.loop import _eta

    assert _eta(None, 100.0, 1, 10) == "--"  # only the compiling step so far
    # first step done at t=50 s (compilation); steps 2..5 took 1 s each: 5 left -> 5 s
    assert _eta((50.0, 1), 54.0, 5, 10) == "0:00:05"
    assert _eta((50.0, 1), 54.0, 10, 10) == "0:00:00"
