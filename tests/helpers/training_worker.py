"""Heavy training runs for tests/training/test_loop.py, each in a fresh Python process.

`python tests/helpers/training_worker.py TASK OUT` with TASK one of:
  main    the first 10 steps of a split run (checkpoints in OUT/split), then starts `resume` in a
          new process and goes on: 20 steps straight; 30 steps on one fixed batch (loss curve);
          3 steps on 8 devices vs 1 device; 2 steps on a batch whose targets are all invalid.
          The single-device runs share one `TrainProgram` (the 8-device run has its own); the
          number of times each traced the train step is recorded.
          Results: OUT/main.npz, OUT/main.json (after `resume` has finished).
  resume  the last 10 steps of the split run, in a new process. Results: OUT/resume.npz/json.
  cli     `videomt-jax train` (a recipe JSON) then `eval` through `videomt_jax.cli.main`.
`worker_env(cache)` gives the environment: 8 host devices, fast XLA compilation (-O0: only the
speed of the generated code changes) and a compilation cache shared by the workers. The tiny model
(hidden 32, 3 layers of which 2 query blocks, 32x32 frames) keeps every run to a few seconds of
compute; compilation dominates.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

NUM_DEVICES = 8
WORKER_TIMEOUT_S = 1500
COMPILED = "compiled"  # marker file: `main` has compiled (and cached) the single-device train step
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
        "dtype": "float32",
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
        "log_every": 10,
        "checkpoint_every": 10,
    },
    "data": {
        "image_size": 32,
        "max_objects": 3,
        "thing_classes": ["circle", "square"],
        "stuff_classes": ["sky", "grass"],
    },
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


def task_main(out: Path, *flags: str) -> None:
    import time

    import jax
    import numpy as np

    import videomt_jax.training.step as step_module
    from videomt_jax.modeling.family import init_params
    from videomt_jax.training.loop import fit, fit_mesh, make_program

    clock = [time.process_time()]

    def lap(name: str) -> None:  # CPU seconds per phase, for the test log
        info.setdefault("cpu_s", {})[name] = round(time.process_time() - clock[0], 2)
        clock[0] = time.process_time()

    recipe = _recipe(out)
    cfg, tc, batches = recipe.model, recipe.train, recipe.batches()
    arrays, info = {}, {"devices": jax.device_count()}
    # count the traces of the train step: `loss_and_metrics` runs once per trace
    traces = {"current": None}
    loss_fn = step_module.loss_and_metrics

    def counted(*args, **kwargs):
        info.setdefault("train_step_traces", {}).setdefault(traces["current"], 0)
        info["train_step_traces"][traces["current"]] += 1
        return loss_fn(*args, **kwargs)

    step_module.loss_and_metrics = counted
    shapes = jax.eval_shape(lambda key: init_params(cfg, key, image_hw=recipe.data.image_hw), jax.random.key(0))
    programs = {n: make_program(cfg, tc, shapes, fit_mesh(n)) for n in (1, NUM_DEVICES)}
    quiet = {"log": None, "program": programs[1]}
    traces["current"] = "single"
    # resume identity: the first half of a split run, continued by a new process (`resume`, started
    # now so that it runs beside the rest), and 20 steps straight
    try:
        first = fit(cfg, tc, batches, out / "split", stop_after=10, **quiet)
    finally:
        (out / COMPILED).touch()  # the train step is in the compilation cache now: `cli --after-main` goes
    info["split_first_step"] = int(first.state.step)
    with open(out / "resume.log", "w") as log:
        resume = subprocess.Popen([sys.executable, __file__, "resume", str(out)], stdout=log, stderr=log)
    straight = fit(cfg, tc, batches, None, stop_after=20, **quiet)
    arrays.update({f"straight/{k}": v for k, v in _flat(straight.state.params).items()})
    info["straight_step"] = int(straight.state.step)
    lap("split+straight")
    # loss curve: every step on the same batch, from parameters the caller keeps using
    fixed = batches(0)
    init = jax.jit(lambda key: init_params(cfg, key, image_hw=recipe.data.image_hw))(jax.random.key(1))
    init_copy = _flat(init)
    curve = fit(cfg, tc.replace(log_every=1), lambda step: fixed, None, params=init, **quiet)
    info["curve"] = curve.history
    info["caller_params_intact"] = all(np.array_equal(v, init_copy[k]) for k, v in _flat(init).items())
    arrays.update({f"curve/{k}": v for k, v in _flat(curve.state.params).items()})
    lap("curve")
    # data parallel: 8 devices vs 1, 3 steps, global batch 8
    for name, n in (("single", 1), ("sharded", NUM_DEVICES)):
        traces["current"] = name
        res = fit(
            cfg, tc.replace(log_every=1), batches, None, num_devices=n, stop_after=3, log=None, program=programs[n]
        )
        info[name] = res.history
        arrays.update({f"{name}/{k}": v for k, v in _flat(res.state.params).items()})
        if name == "sharded":
            info["sharded_param_devices"] = len(jax.tree.leaves(res.state.params)[0].sharding.device_set)
        lap(name)
    # no valid target at all: the loss must stay finite
    empty = fixed._replace(
        valid=np.zeros_like(fixed.valid), class_labels=np.full_like(fixed.class_labels, cfg.num_labels)
    )
    traces["current"] = "single"
    res = fit(cfg, tc.replace(log_every=1), lambda step: empty, None, stop_after=2, **quiet)
    info["empty"] = res.history
    info["empty_params_finite"] = bool(all(np.isfinite(v).all() for v in _flat(res.state.params).values()))
    lap("empty")
    info["resume_returncode"] = resume.wait()
    _save(out, "main", arrays, info)


def task_resume(out: Path, *flags: str) -> None:
    from videomt_jax.training.loop import fit

    recipe = _recipe(out)
    res = fit(recipe.model, recipe.train, recipe.batches(), out / "split", stop_after=10, log=None)
    _save(out, "resume", _flat(res.state.params), {"resumed_from": res.resumed_from, "step": int(res.state.step)})


def task_cli(out: Path, *flags: str) -> None:
    """The recipe's own train step (30-step schedule, batch 8), so that after `main` has compiled
    it (`--after-main`) this process finds it in the compilation cache; --stop-after keeps runs short."""
    import contextlib
    import io
    import time

    if "--after-main" in flags:
        deadline = time.monotonic() + WORKER_TIMEOUT_S
        while not (out / COMPILED).exists() and time.monotonic() < deadline:
            time.sleep(0.5)
    import videomt_jax.cli as cli

    recipe_path = out / "cli_recipe.json"
    recipe_path.write_text(json.dumps(TINY_RECIPE))
    run = out / "cli_run"
    wider = out / "cli_wider.json"  # a recipe whose model the trained weights do not fit
    wider.write_text(json.dumps({**TINY_RECIPE, "model": {**TINY_RECIPE["model"], "hidden_size": 64}}))
    calls = {
        "train": ["train", str(recipe_path), "--out", str(run), "--stop-after", "3"],
        "again": ["train", str(run / "recipe.json"), "--out", str(run), "--stop-after", "1"],
        "no_resume": ["train", str(recipe_path), "--out", str(run), "--no-resume"],
        "init": [
            "train",
            str(run / "recipe.json"),
            "--out",
            str(out / "cli_init"),
            "--init",
            str(run / "model"),
            "--stop-after",
            "1",
        ],
        "init_mismatch": ["train", str(wider), "--out", str(out / "cli_wider"), "--init", str(run / "model")],
        "eval": ["eval", str(run / "model"), "--clips", "3", "--batch-size", "2", "--out", str(out / "results.json")],
    }
    info = {}
    for name, argv in calls.items():
        stdout, stderr = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            rc = cli.main(argv, commands=("train", "eval"))  # the others are tested elsewhere
        info[name] = {"rc": rc, "stdout": stdout.getvalue(), "stderr": stderr.getvalue()}
    (out / "cli.json").write_text(json.dumps(info))


TASKS = {"main": task_main, "resume": task_resume, "cli": task_cli}
REPO = Path(__file__).resolve().parents[2]


class Workers:
    """The test side: starts tasks as subprocesses in `root` (logs in root/TASK.log), waits, loads results."""

    def __init__(self, root: Path):
        self.root = root
        self.env = worker_env(root / "cache")
        self.env["PYTHONPATH"] = f"{REPO}:{self.env.get('PYTHONPATH', '')}"
        self.procs: dict[str, subprocess.Popen] = {}
        self.logs: list = []

    def start(self, task: str, *flags: str) -> None:
        if task not in self.procs:
            # open for the subprocess's whole life; `close` shuts every log
            self.logs.append(open(self.root / f"{task}.log", "w"))  # noqa: SIM115
            self.procs[task] = subprocess.Popen(
                [sys.executable, __file__, task, str(self.root), *flags],
                env=self.env,
                cwd=REPO,
                stdout=self.logs[-1],
                stderr=self.logs[-1],
            )

    def wait(self, task: str) -> None:
        self.start(task)
        rc = self.procs[task].wait(timeout=WORKER_TIMEOUT_S)
        if rc:
            tail = (self.root / f"{task}.log").read_text()[-4000:]
            raise RuntimeError(f"training worker {task!r} exited with {rc}:\n{tail}")

    def load(self, name: str) -> tuple[dict, dict]:
        import numpy as np

        info = json.loads((self.root / f"{name}.json").read_text())
        with np.load(self.root / f"{name}.npz") as arrays:
            return info, dict(arrays)

    def close(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        for log in self.logs:
            log.close()


if __name__ == "__main__":
    TASKS[sys.argv[1]](Path(sys.argv[2]), *sys.argv[3:])
