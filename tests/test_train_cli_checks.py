"""`videomt-jax train` refuses bad input before it writes anything (issue 18): a recipe value of the
wrong type is named, and an existing run is never continued (or its recipe.json rewritten) with a
different recipe."""

from __future__ import annotations

import json

import pytest

from videomt_jax.cli import main
from videomt_jax.cli.train import RECIPE_FILE
from videomt_jax.training.recipes import load_recipe


@pytest.fixture
def run_dir(tmp_path):
    """A run directory as `train` leaves it: the resolved recipe and a checkpoint step folder."""
    run = tmp_path / "run"
    (run / "checkpoints" / "250").mkdir(parents=True)
    (run / RECIPE_FILE).write_text(load_recipe("synthetic-tiny").to_json() + "\n")
    return run


def test_wrong_type_in_recipe_is_named(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"base": "synthetic-tiny", "train": {"steps": "five"}}))
    assert main(["train", str(bad), "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "recipe 'bad' train" in err and "steps must be an int, got 'five'" in err
    assert not (tmp_path / "out").exists()


def test_other_recipe_on_existing_run_changes_nothing(run_dir, tmp_path, capsys):
    before = (run_dir / RECIPE_FILE).read_bytes()
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"base": "synthetic-tiny", "train": {"learning_rate": 0.001}, "model": {"num_queries": 12}}))
    assert main(["train", str(other), "--out", str(run_dir)]) == 1
    err = capsys.readouterr().err
    assert "another recipe" in err and "train.learning_rate" in err and "model.num_queries" in err
    assert f"train {run_dir / RECIPE_FILE} --out {run_dir}" in err  # says how to continue
    assert (run_dir / RECIPE_FILE).read_bytes() == before  # not rewritten
    assert sorted(p.name for p in run_dir.iterdir()) == ["checkpoints", RECIPE_FILE]


def test_documented_resume_and_allowed_changes_pass(run_dir):
    from videomt_jax.cli.train import check_resumable

    check_resumable(run_dir, load_recipe(run_dir / RECIPE_FILE))  # `train RUN/recipe.json --out RUN`
    check_resumable(run_dir, load_recipe(run_dir / RECIPE_FILE, steps=9000))  # a longer schedule
    with pytest.raises(ValueError, match="train.batch_size"):
        check_resumable(run_dir, load_recipe(run_dir / RECIPE_FILE, batch_size=2))
