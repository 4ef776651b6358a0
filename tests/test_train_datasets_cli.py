"""`videomt-jax train <paper recipe> --data-root <fixture>` for every dataset kind (small model
override, grain-fed), and its errors. Resume and pipeline equality: test_paper_recipes.py."""

from __future__ import annotations

import json

from dataset_fixtures import write_vipseg, write_vspw, write_ytvis
from test_paper_recipes import _small
from videomt_jax.cli import main as cli_main


def test_train_every_dataset_kind_from_the_command_line(tmp_path, capsys):
    write_ytvis(tmp_path)
    write_vipseg(tmp_path)
    write_vspw(tmp_path)
    root = str(tmp_path)
    # 1: one worker process; 0: grain in this process
    for name, workers in (("ytvis19-vits", "1"), ("vipseg-vitl", "0"), ("vspw-vitl", "0")):
        out = tmp_path / name
        argv = ["train", _small(tmp_path, name), "--data-root", root, "--out", str(out), "--workers", workers, "--steps", "2"]
        assert cli_main(argv, commands=("train",)) == 0
        saved = json.loads((out / "recipe.json").read_text())
        assert saved["data"]["root"] == root and saved["data"]["kind"] == name.split("-")[0].replace("ytvis19", "ytvis")
        assert (out / "model" / "config.json").is_file() and (out / "checkpoints" / "2").is_dir()
        # the recipe's remat (ViT-L: dots_no_batch) trains; the saved model runs without it
        assert saved["model"]["remat"] == ("none" if name.endswith("vits") else "dots_no_batch")
        assert json.loads((out / "model" / "config.json").read_text())["videomt_jax"]["remat"] == "none"
    assert "step 2/2" in capsys.readouterr().out


def test_dataset_recipe_errors(tmp_path, capsys):
    assert cli_main(["train", _small(tmp_path, "vspw-vitl"), "--out", str(tmp_path / "x")], commands=("train",)) == 1
    assert "pass --data-root" in capsys.readouterr().err
    write_vspw(tmp_path)
    (tmp_path / "VSPW_480p" / "train.txt").write_text("missing_video\n")
    argv = ["train", _small(tmp_path, "vspw-vitl"), "--data-root", str(tmp_path), "--out", str(tmp_path / "y")]
    assert cli_main(argv, commands=("train",)) == 1
    assert "video 'missing_video': frame folder" in capsys.readouterr().err
    assert cli_main(["train", "synthetic-tiny", "--data-root", str(tmp_path), "--out", str(tmp_path / "z")], commands=("train",)) == 1
    assert "--data-root does not apply" in capsys.readouterr().err
