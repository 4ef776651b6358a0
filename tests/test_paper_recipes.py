"""The paper's built-in recipes (values from the authors' configs); the grain pipeline yields the
recipe's batches; a run stopped and resumed on grain-fed fixture data ends bit-identical.
The command line on every dataset kind: test_train_datasets_cli.py."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from dataset_fixtures import write_ytvis
from videomt_jax.data.grain_pipeline import GrainBatches
from videomt_jax.training.recipes import load_recipe

# (recipe, layers, queries blocks, steps, labels, pos-embed size, test shorter edge), from the authors'
# configs/<dataset>/videomt/dinov2/<size>/*.yaml and their bases
AUTHORS = [
    ("ytvis19-vits", 12, 3, 40_000, 40, 640, 448),
    ("ytvis19-vitb", 12, 3, 40_000, 40, 640, 448),
    ("ytvis19-vitl", 24, 4, 60_000, 40, 640, 448),
    ("ytvis21-vitl", 24, 4, 160_000, 40, 640, 448),
    ("ytvis22-vitl", 24, 4, 160_000, 40, 640, 448),
    ("ovis-vitl", 24, 4, 160_000, 25, 640, 544),
    ("vipseg-vitl", 24, 4, 40_000, 124, 1280, 720),
    ("vspw-vitl", 24, 4, 40_000, 124, 1280, 720),
]


@pytest.mark.parametrize("name, layers, blocks, steps, labels, pos, test_size", AUTHORS)
def test_recipes_carry_the_authors_solver(name, layers, blocks, steps, labels, pos, test_size):
    r = load_recipe(name)
    m, t, d = r.model, r.train, r.data
    assert (m.num_hidden_layers, m.num_blocks, m.num_queries, m.num_labels, m.image_size) == (layers, blocks, 200, labels, pos)
    assert (t.steps, t.batch_size, t.num_frames, d.frame_range) == (steps, 8, 5, 2)
    assert (t.learning_rate, t.weight_decay, t.layer_decay, t.poly_power, t.grad_clip) == (1e-4, 0.05, 0.6, 0.9, 0.01)
    assert (t.warmup_head, t.warmup_encoder, t.deep_supervision, m.train_num_points) == (500, 1000, True, 12544)
    assert d.min_size_test == test_size and d.max_size_test == 1333
    if d.kind == "ytvis":
        assert d.min_size_train == (320, 352, 392, 416, 448, 480, 512, 544, 576, 608, 640) and d.max_size_train == 768
        assert d.crop_prob == 0.5
    else:
        assert d.min_size_train == (480, 512, 544, 576, 608, 640, 672, 704, 736, 768, 800) and d.max_size_train == 1333
        assert d.crop_prob == 0.0
    assert json.loads(r.to_json())["data"]["kind"] == {"ytvis": "ytvis", "vipseg": "vipseg", "vspw": "vspw"}[d.kind]
    assert load_recipe(name) == r


SMALL = {
    "model": {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "num_blocks": 1, "num_queries": 6,
              "image_size": 32, "dtype": "float32", "num_register_tokens": 1, "train_num_points": 32},
    "train": {"steps": 3, "batch_size": 1, "num_frames": 2, "warmup_head": 1, "warmup_encoder": 1,
              "checkpoint_every": 1, "log_every": 1, "deep_supervision": False},
    "data": {"min_size_train": [24], "max_size_train": 32, "canvas": [32, 32], "frame_range": 1},
}


def _small(tmp_path, base: str) -> str:
    path = tmp_path / f"{base}.json"
    path.write_text(json.dumps({"base": base, **SMALL}))
    return str(path)


def test_grain_pipeline_yields_the_recipes_batches(tmp_path):
    write_ytvis(tmp_path)
    recipe = load_recipe(_small(tmp_path, "ytvis19-vits"), batch_size=2)
    recipe = dataclasses.replace(recipe, data=recipe.data.with_root(str(tmp_path)))
    plain = recipe.batches("train")
    fed = GrainBatches(recipe.clip_fn("train"), recipe.collate, batch_size=2, steps=3, workers=1)
    try:
        for step in (0, 1, 2, 1):  # the last one restarts the pipeline (as a resume does)
            got, want = fed(step), plain(step)
            for field in ("pixel_values", "mask_labels", "class_labels", "valid", "track_ids"):
                assert np.array_equal(getattr(got, field), getattr(want, field)), (step, field)
    finally:
        fed.close()


def test_resume_with_the_grain_pipeline_is_bit_identical(tmp_path):
    import jax

    from videomt_jax.modeling.videomt import init_params
    from videomt_jax.training.loop import fit, make_program

    write_ytvis(tmp_path)
    recipe = load_recipe(_small(tmp_path, "ytvis19-vits"))
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


def program_params_init(model, recipe):
    """The initial parameters of the runs above (fit's default init: the train seed)."""
    import jax

    from videomt_jax.modeling.videomt import init_params

    return init_params(model, jax.random.key(recipe.train.seed), image_hw=recipe.data.image_hw)
