"""The grain input pipeline (data/grain_pipeline.py): the recipe's batches, through worker processes, resumable."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from tests.helpers.datasets import write_coco, write_ytvis
from videomt_jax.data.grain_pipeline import GrainBatches
from videomt_jax.training.recipes import load_recipe


def program_params_init(model, recipe):
    """The initial parameters of the runs above (fit's default init: the train seed)."""
    import jax

    from videomt_jax.modeling.family import init_params

    return init_params(model, jax.random.key(recipe.train.seed), image_hw=recipe.data.image_hw)


@pytest.mark.parametrize("coco", [False, True])
def test_grain_pipeline_yields_the_recipes_batches(tmp_path, coco, small_recipe):
    write_ytvis(tmp_path)
    recipe = load_recipe(small_recipe("ytvis19-vits"), batch_size=2)
    recipe = dataclasses.replace(recipe, data=recipe.data.with_root(str(tmp_path)))
    if coco:  # COCO pseudo-clips mixed 1:1 into the videos, through the spawned worker too
        write_coco(tmp_path)
        recipe = dataclasses.replace(recipe, data=recipe.data.with_coco_root(str(tmp_path)))
    plain = recipe.batches("train")
    fed = GrainBatches(recipe.clip_fn("train"), recipe.collate, batch_size=2, steps=3, workers=1)
    try:
        for step in (0, 1, 2, 1):  # the last one restarts the pipeline (as a resume does)
            got, want = fed(step), plain(step)
            for field in ("pixel_values", "mask_labels", "class_labels", "valid", "track_ids"):
                assert np.array_equal(getattr(got, field), getattr(want, field)), (step, field)
    finally:
        fed.close()


def test_resume_with_the_grain_pipeline_is_bit_identical(tmp_path, small_recipe):
    import jax

    from videomt_jax.modeling.family import init_params
    from videomt_jax.training.loop import fit, make_program

    write_ytvis(tmp_path)
    recipe = load_recipe(small_recipe("ytvis19-vits"))
    recipe = dataclasses.replace(recipe, data=recipe.data.with_root(str(tmp_path)))
    model, tc = recipe.model, recipe.train
    shapes = jax.eval_shape(lambda k: init_params(model, k, image_hw=recipe.data.image_hw), jax.random.key(0))
    program = make_program(model, tc, shapes)  # one compiled step for the three calls

    def run(out, stop_after=None):
        fed = GrainBatches(recipe.clip_fn("train"), recipe.collate, batch_size=tc.batch_size, steps=tc.steps, workers=1)
        try:
            return fit(model, tc, fed, out, stop_after=stop_after, log=None, program=program)
        finally:
            fed.close()

    straight = run(None)
    assert run(tmp_path / "split", stop_after=1).state.step == 1
    resumed = run(tmp_path / "split")
    assert resumed.resumed_from == 1 and int(resumed.state.step) == tc.steps
    a, b = jax.tree.leaves(straight.state.params), jax.tree.leaves(resumed.state.params)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, jax.tree.leaves(program_params_init(model, recipe))))


def test_a_stop_signal_while_the_worker_starts_is_kept(tmp_path, small_recipe):
    """SIGINT to the parent and to its worker while the worker starts up (as Ctrl-C to the process
    group does): the worker lives on and delivers the batch, and the parent's handler saw the signal
    (it used to be ignored while the workers were spawned, so a stop asked for then was lost)."""
    import multiprocessing
    import os
    import signal
    import threading
    import time

    from videomt_jax.utils.signals import GracefulStop

    write_ytvis(tmp_path)
    recipe = load_recipe(small_recipe("ytvis19-vits"), batch_size=2)
    recipe = dataclasses.replace(recipe, data=recipe.data.with_root(str(tmp_path)))
    fed = GrainBatches(recipe.clip_fn("train"), recipe.collate, batch_size=2, steps=3, workers=1)
    before = {p.pid for p in multiprocessing.active_children()}
    sent: list[int] = []

    def interrupt_once_the_worker_exists() -> None:
        deadline = time.monotonic() + 120
        while not sent and time.monotonic() < deadline:
            for pid in {p.pid for p in multiprocessing.active_children()} - before:
                os.kill(pid, signal.SIGINT)
                os.kill(os.getpid(), signal.SIGINT)  # once: a second one would raise `Interrupted`
                sent.append(pid)
                break
            time.sleep(0.001)

    with GracefulStop((signal.SIGINT,)) as stop:
        sender = threading.Thread(target=interrupt_once_the_worker_exists)
        sender.start()
        try:
            batch = fed(0)
        finally:
            sender.join()
            fed.close()
    assert sent, "no worker process was started"
    assert stop.signum == signal.SIGINT
    assert np.array_equal(batch.pixel_values, recipe.batches("train")(0).pixel_values)
