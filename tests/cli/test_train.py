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


def _stored_checkpoint(run, recipe) -> None:
    """A checkpoint folder carrying its recipe in orbax's step metadata, as `train` writes it."""
    from videomt_jax.training.checkpoint import STEP_METADATA
    from videomt_jax.training.loop import run_metadata

    meta = run_metadata(recipe.model, recipe.train, {"recipe": json.loads(recipe.to_json())})
    (run / "checkpoints" / "250" / STEP_METADATA).write_text(json.dumps({"custom_metadata": meta}))


def test_checkpoints_remember_their_recipe_without_recipe_json(run_dir, tmp_path, capsys):
    """Issue 24 (5): with OUT/recipe.json gone, the recipe stored in the checkpoints still refuses
    another learning rate, seed or model shape, before anything is written."""
    _stored_checkpoint(run_dir, load_recipe("synthetic-tiny"))
    (run_dir / RECIPE_FILE).unlink()
    other = tmp_path / "other.json"
    other.write_text(
        json.dumps(
            {"base": "synthetic-tiny", "train": {"learning_rate": 0.001, "seed": 7}, "model": {"num_queries": 12}}
        )
    )
    before = sorted(p.relative_to(run_dir) for p in run_dir.rglob("*"))
    assert main(["train", str(other), "--out", str(run_dir)]) == 1
    err = capsys.readouterr().err
    assert "recipe stored in the checkpoints" in err
    assert all(k in err for k in ("train.learning_rate", "train.seed", "model.num_queries")), err
    assert sorted(p.relative_to(run_dir) for p in run_dir.rglob("*")) == before  # nothing written


def test_resume_check_reads_the_checkpoint_recipe_first(run_dir):
    """The stored recipe outranks OUT/recipe.json (which a user may have edited)."""
    from videomt_jax.cli.train import check_resumable

    stored = load_recipe("synthetic-tiny", batch_size=2)
    _stored_checkpoint(run_dir, stored)
    check_resumable(run_dir, stored.with_train(steps=9000))  # a longer schedule of the same run
    with pytest.raises(ValueError, match=r"train.batch_size: 2 there, 4 here"):
        check_resumable(run_dir, load_recipe(run_dir / RECIPE_FILE))


def test_users_recipe_json_is_not_replaced(tmp_path, capsys):
    """Issue 24 (6): OUT/recipe.json written by a user (not a resolved recipe) is refused, untouched."""
    out = tmp_path / "out"
    out.mkdir()
    mine = json.dumps({"base": "synthetic-tiny", "train": {"steps": 5}})
    (out / RECIPE_FILE).write_text(mine)
    assert main(["train", str(out / RECIPE_FILE), "--out", str(out)]) == 1
    assert "is not a recipe this command wrote; not replacing it" in capsys.readouterr().err
    assert (out / RECIPE_FILE).read_text() == mine and sorted(p.name for p in out.iterdir()) == [RECIPE_FILE]


def test_foreign_file_in_the_model_folder_is_refused_before_training(tmp_path, capsys):
    """Issue 24 (6): OUT/model is checked before the work, not after training."""
    out = tmp_path / "out"
    (out / "model").mkdir(parents=True)
    (out / "model" / "notes.txt").write_text("mine")
    assert main(["train", "synthetic-tiny", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert f"{out / 'model'} is not (or no longer) exactly an output of this tool" in err
    assert sorted(p.name for p in out.iterdir()) == ["model"]  # no recipe.json, no checkpoints


def test_failed_start_leaves_nothing(tmp_path, capsys):
    """Issue 25: a bad --devices is refused before anything is written."""
    assert main(["train", "synthetic-tiny", "--out", str(tmp_path / "runs" / "x"), "--devices", "999"]) == 1
    assert "--devices: asked for 999 devices" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_help_lists_the_recipes(capsys):
    from videomt_jax.training.recipes import RECIPES

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = capsys.readouterr().out
    assert "built-in recipes (CONFIG):" in out and all(name in out for name in RECIPES)
