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
    other.write_text(
        json.dumps({"base": "synthetic-tiny", "train": {"learning_rate": 0.001}, "model": {"num_queries": 12}})
    )
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


def test_init_reports_what_came_from_an_eomt_and_a_dinov2_checkpoint(tmp_path):
    """`--init` (issue 16): an HF EoMT image model gives everything but a fresh query updater; a
    patch-14 Dinov2WithRegisters backbone gives the backbone (patch kernel resized to 16) and fresh
    queries and heads; anything that does not fit is refused, naming the field."""
    import torch
    import transformers

    from tests.helpers.family import build_eomt
    from videomt_jax.cli.train import _init_params
    from videomt_jax.config import VideomtConfig

    eomt = build_eomt(
        "eomt",
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_blocks=1,
        image_size=32,
        patch_size=8,
        num_queries=3,
        num_register_tokens=1,
        num_labels=2,
    )
    eomt.save_pretrained(tmp_path / "eomt")
    config = VideomtConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_blocks=1,
        image_size=32,
        patch_size=8,
        num_queries=3,
        num_register_tokens=1,
    )
    params, summary = _init_params(str(tmp_path / "eomt"), config, seed=0)
    assert "(eomt)]" in summary and "2 fresh (query_updater/bias, query_updater/kernel)" in summary
    assert params["query_updater"]["kernel"].shape == (32, 32)

    hf = transformers.Dinov2WithRegistersConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, patch_size=14, image_size=28, num_register_tokens=1
    )
    torch.manual_seed(0)
    transformers.Dinov2WithRegistersModel(hf).save_pretrained(tmp_path / "dinov2")
    backbone_config = config.replace(patch_size=16, image_size=32)
    params, summary = _init_params(str(tmp_path / "dinov2"), backbone_config, seed=0)
    assert "dinov2_with_registers backbone" in summary and "query_updater/kernel" in summary
    assert "resampled embeddings/patch_embeddings/kernel: patch (14, 14) -> (16, 16)" in summary
    assert params["embeddings"]["patch_embeddings"]["kernel"].shape[:2] == (16, 16)
    with pytest.raises(ValueError, match="--init weights do not fit the recipe's model: .*hidden_size"):
        _init_params(str(tmp_path / "eomt"), config.replace(hidden_size=64, num_attention_heads=2), seed=0)


def test_train_without_init_names_the_recipes_init(tmp_path, capsys):
    """A paper recipe starts from the authors' segmenter: without --init, train says so in one line
    (here before it refuses the missing --data-root), and `train --help` tells about it."""
    from videomt_jax.cli.train import init_note

    url = load_recipe("ytvis19-vits").init
    assert url.endswith("yt_2019_small_segmenter.pth")
    assert main(["train", "ytvis19-vits", "--out", str(tmp_path / "run")]) == 1
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if url in line]
    assert len(lines) == 1, out
    assert "recipe ytvis19-vits starts from the authors' segmenter" in lines[0] and "--init PATH" in lines[0]
    assert init_note(load_recipe("synthetic-tiny")) is None  # no init named: nothing to say
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    assert "segmenter" in " ".join(capsys.readouterr().out.split())
