"""Heavy training runs for tests/test_training.py, each in a fresh Python process.

`python tests/training_worker.py TASK OUT` with TASK one of:
  main    30 steps on one fixed batch (loss curve); 20 steps straight; the first 10 steps of a
          split run (checkpoints in OUT/split); 3 steps on 8 devices vs 1 device; 2 steps on a
          batch whose targets are all invalid. Results: OUT/main.npz, OUT/main.json.
  resume  the last 10 steps of the split run, in this new process. Results: OUT/resume.npz/json.
  cli     `videomt-jax train` (a recipe JSON) then `eval` through `videomt_jax.cli.main`.
`worker_env(cache)` gives the environment: 8 host devices, fast XLA compilation (-O0: only the
speed of the generated code changes) and a compilation cache shared by the workers. The tiny model
(hidden 32, 3 layers of which 2 query blocks, 32x32 frames) keeps every run to a few seconds of
compute; compilation dominates.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

NUM_DEVICES = 8
TINY_RECIPE = {
    "name": "test-tiny",
    "model": {
        "hidden_size": 32,
        "num_hidden_layers": 3,
        "num_attention_heads": 2,
        "num_blocks": 2,
        "image_size": 32,
        "patch_size": 8,
        "num_queries": 8,
        "num_register_tokens": 1,
        "train_num_points": 64,
    },
    "train": {
        "steps": 30,
        "batch_size": 8,
        "num_frames": 2,
        "learning_rate": 2e-3,
        "layer_decay": 0.6,
        "warmup_head": 2,
        "warmup_encoder": 2,
        "grad_clip": 1.0,
        "compute_dtype": "float32",
        "log_every": 10,
        "checkpoint_every": 10,
    },
    "data": {"image_size": 32, "max_objects": 3, "thing_classes": ["circle", "square"], "stuff_classes": ["sky", "grass"]},
    "augment": {"flip_prob": 0.5, "scale_range": [0.8, 1.2]},
    "max_instances": 6,
}


def worker_env(cache_dir: str | Path) -> dict[str, str]:
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={NUM_DEVICES} --xla_backend_optimization_level=0"
    env["JAX_PLATFORMS"] = "cpu"
    env["JAX_COMPILATION_CACHE_DIR"] = str(cache_dir)
    env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    env["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"
    return env


def _recipe(out: Path):
    from videomt_jax.training.recipes import load_recipe

    path = out / "tiny_recipe.json"
    if not path.exists():
        path.write_text(json.dumps(TINY_RECIPE))
    return load_recipe(path)


def _flat(params) -> dict:
    import jax
    import numpy as np

    return {jax.tree_util.keystr(p): np.asarray(v) for p, v in jax.tree_util.tree_leaves_with_path(params)}


def _save(out: Path, name: str, arrays: dict, info: dict) -> None:
    import numpy as np

    np.savez(out / f"{name}.npz", **arrays)
    (out / f"{name}.json").write_text(json.dumps(info))


def task_main(out: Path) -> None:
    import time

    import jax
    import numpy as np

    from videomt_jax.training.loop import fit

    clock = [time.process_time()]

    def lap(name: str) -> None:  # CPU seconds per phase, for the test log
        info.setdefault("cpu_s", {})[name] = round(time.process_time() - clock[0], 2)
        clock[0] = time.process_time()

    recipe = _recipe(out)
    cfg, tc, batches = recipe.model, recipe.train, recipe.batches()
    quiet = {"log": None}
    arrays, info = {}, {"devices": jax.device_count()}
    # loss curve: every step on the same batch, from parameters the caller keeps using
    from videomt_jax.modeling.videomt import init_params

    fixed = batches(0)
    init = jax.jit(lambda key: init_params(cfg, key, image_hw=recipe.data.image_hw))(jax.random.key(1))
    init_copy = _flat(init)
    curve = fit(cfg, tc.replace(log_every=1), lambda step: fixed, None, params=init, **quiet)
    info["curve"] = curve.history
    info["caller_params_intact"] = all(np.array_equal(v, init_copy[k]) for k, v in _flat(init).items())
    lap("curve")
    arrays.update({f"curve/{k}": v for k, v in _flat(curve.state.params).items()})
    # resume identity: 20 steps straight, and the first half of a split run
    straight = fit(cfg, tc, batches, None, stop_after=20, **quiet)
    arrays.update({f"straight/{k}": v for k, v in _flat(straight.state.params).items()})
    info["straight_step"] = int(straight.state.step)
    first = fit(cfg, tc, batches, out / "split", stop_after=10, **quiet)
    info["split_first_step"] = int(first.state.step)
    lap("straight+split")
    # data parallel: 8 devices vs 1, 3 steps, global batch 8
    for name, n in (("single", 1), ("sharded", NUM_DEVICES)):
        res = fit(cfg, tc.replace(log_every=1), batches, None, num_devices=n, stop_after=3, **quiet)
        info[name] = res.history
        arrays.update({f"{name}/{k}": v for k, v in _flat(res.state.params).items()})
        if name == "sharded":
            info["sharded_param_devices"] = len(jax.tree.leaves(res.state.params)[0].sharding.device_set)
        lap(name)
    # no valid target at all: the loss must stay finite
    empty = fixed._replace(valid=np.zeros_like(fixed.valid), class_labels=np.full_like(fixed.class_labels, cfg.num_labels))
    res = fit(cfg, tc.replace(log_every=1), lambda step: empty, None, stop_after=2, **quiet)
    info["empty"] = res.history
    info["empty_params_finite"] = bool(all(np.isfinite(v).all() for v in _flat(res.state.params).values()))
    lap("empty")
    _save(out, "main", arrays, info)


def task_resume(out: Path) -> None:
    from videomt_jax.training.loop import fit

    recipe = _recipe(out)
    res = fit(recipe.model, recipe.train, recipe.batches(), out / "split", stop_after=10, log=None)
    _save(out, "resume", _flat(res.state.params), {"resumed_from": res.resumed_from, "step": int(res.state.step)})


def task_cli(out: Path) -> None:
    import contextlib
    import io

    import videomt_jax.cli as cli

    cli.SUBCOMMANDS = ("videomt_jax.training.cli",)  # only this command set; the others are tested elsewhere
    recipe_path = out / "cli_recipe.json"
    recipe_path.write_text(json.dumps(TINY_RECIPE))
    run = out / "cli_run"
    calls = {
        "train": ["train", str(recipe_path), "--out", str(run), "--steps", "3", "--batch-size", "2"],
        "again": ["train", str(run / "recipe.json"), "--out", str(run)],
        "no_resume": ["train", str(recipe_path), "--out", str(run), "--no-resume"],
        "eval": ["eval", str(run / "model"), "--clips", "3", "--batch-size", "2", "--out", str(out / "results.json")],
    }
    info = {}
    for name, argv in calls.items():
        stdout, stderr = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            rc = cli.main(argv)
        info[name] = {"rc": rc, "stdout": stdout.getvalue(), "stderr": stderr.getvalue()}
    (out / "cli.json").write_text(json.dumps(info))


TASKS = {"main": task_main, "resume": task_resume, "cli": task_cli}

if __name__ == "__main__":
    TASKS[sys.argv[1]](Path(sys.argv[2]))
