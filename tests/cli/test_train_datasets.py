"""`videomt-jax train <paper recipe> --data-root <fixture>` for every dataset kind (small model
override, grain-fed), and its errors. Resume and pipeline equality: test_paper_recipes.py."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.helpers.datasets import write_coco, write_vspw, write_ytvis
from videomt_jax.cli import main as cli_main

pytestmark = pytest.mark.slow  # run first under xdist (conftest.py)


def test_train_every_dataset_kind_from_the_command_line(data_root, small_recipe, capsys):
    tmp_path = data_root
    root = str(tmp_path)
    # 1: one worker process; 0: grain in this process
    for name, workers in (("ytvis19-vits", "1"), ("vipseg-vitl", "0"), ("vspw-vitl", "0")):
        out = tmp_path / name
        argv = [
            "train",
            small_recipe(name),
            "--data-root",
            root,
            "--out",
            str(out),
            "--workers",
            workers,
            "--steps",
            "2",
        ]
        coco = ["--coco-root", root] if name.startswith("ytvis") else []  # YouTube-VIS + COCO pseudo-videos, 1:1
        assert cli_main(argv + coco, commands=("train",)) == 0
        saved = json.loads((out / "recipe.json").read_text())
        assert saved["data"].get("coco_root") == (root if coco else None)
        assert saved["data"]["root"] == root and saved["data"]["kind"] == name.split("-")[0].replace("ytvis19", "ytvis")
        assert (out / "model" / "config.json").is_file() and (out / "checkpoints" / "2").is_dir()
        # the recipe's remat (ViT-L: dots_no_batch) is a training setting: never saved with the model
        assert saved["train"]["remat"] == ("none" if name.endswith("vits") else "dots_no_batch")
        assert "remat" not in json.loads((out / "model" / "config.json").read_text())["videomt_jax"]
    printed = capsys.readouterr().out
    assert "step 2/2" in printed
    assert "COCO pseudo-videos: 2 images (4 instances) of " in printed and "mixed 1:1 with ytvis_2019" in printed


def test_the_start_up_line_says_how_ytvis_recipes_use_coco(tmp_path):
    import dataclasses

    from videomt_jax.cli.train import _with_coco_root
    from videomt_jax.training.recipes import load_recipe

    _, note = _with_coco_root(load_recipe("ovis-vitl"), None)
    assert note.startswith("COCO pseudo-videos: off (no --coco-root): training on ovis alone")
    assert _with_coco_root(load_recipe("vspw-vitl"), None) == (load_recipe("vspw-vitl"), None)
    write_coco(tmp_path)
    one_slot = dataclasses.replace(load_recipe("ytvis19-vits"), max_instances=1)
    recipe, note = _with_coco_root(one_slot, str(tmp_path))
    assert recipe.data.coco_root == str(tmp_path) and recipe.max_instances == 1
    assert note.endswith("; 2 images hold more instances (up to 2) than the 1 target slots: their largest are kept")


def test_resume_lets_the_coco_root_move_but_not_appear(tmp_path):
    import dataclasses

    import pytest

    from videomt_jax.cli.train import check_resumable
    from videomt_jax.training.recipes import load_recipe

    recipe = load_recipe("ytvis19-vits")
    with_coco = dataclasses.replace(recipe, data=recipe.data.with_coco_root("/data/a"))
    (tmp_path / "checkpoints" / "100").mkdir(parents=True)
    (tmp_path / "recipe.json").write_text(with_coco.to_json())
    check_resumable(tmp_path, dataclasses.replace(recipe, data=recipe.data.with_coco_root("/mnt/b")))  # moved
    with pytest.raises(ValueError, match="data.coco_root: '/data/a' there, None here"):
        check_resumable(tmp_path, recipe)


def test_dataset_recipe_errors(tmp_path, capsys, small_recipe):
    assert cli_main(["train", small_recipe("vspw-vitl"), "--out", str(tmp_path / "x")], commands=("train",)) == 1
    assert "pass --data-root" in capsys.readouterr().err
    write_vspw(tmp_path)
    (tmp_path / "VSPW_480p" / "train.txt").write_text("missing_video\n")
    argv = ["train", small_recipe("vspw-vitl"), "--data-root", str(tmp_path), "--out", str(tmp_path / "y")]
    assert cli_main(argv, commands=("train",)) == 1
    assert "video 'missing_video': frame folder" in capsys.readouterr().err
    assert (
        cli_main(
            ["train", "synthetic-tiny", "--data-root", str(tmp_path), "--out", str(tmp_path / "z")], commands=("train",)
        )
        == 1
    )
    assert "--data-root does not apply" in capsys.readouterr().err
    argv = ["train", "synthetic-tiny", "--coco-root", str(tmp_path), "--out", str(tmp_path / "z")]
    assert cli_main(argv, commands=("train",)) == 1
    assert "--coco-root applies to YouTube-VIS / OVIS" in capsys.readouterr().err
    write_ytvis(tmp_path)
    argv = [
        "train",
        small_recipe("ytvis19-vits"),
        "--data-root",
        str(tmp_path),
        "--coco-root",
        str(tmp_path / "nowhere"),
        "--out",
        str(tmp_path / "w"),
    ]
    assert cli_main(argv, commands=("train",)) == 1
    assert "COCO pseudo-videos: data root" in capsys.readouterr().err and not (tmp_path / "w").exists()


def test_a_youtube_vis_recipe_with_coco_learns_end_to_end(data_root, small_recipe, capsys):
    """ytvis19-vits settings (the authors' matching, geometry, optimizer; a test-sized model) on the fixture
    YouTube-VIS 2019 + COCO datasets in their release formats: a few dozen steps, and the loss falls."""
    import re

    path = Path(small_recipe("ytvis19-vits"))
    spec = json.loads(path.read_text())
    spec["train"].update(steps=36, batch_size=2, learning_rate=2e-3, checkpoint_every=36)
    path.write_text(json.dumps(spec))
    root, out = str(data_root), data_root / "run"
    argv = ["train", str(path), "--data-root", root, "--coco-root", root, "--out", str(out), "--workers", "0"]
    assert cli_main(argv, commands=("train",)) == 0
    printed = capsys.readouterr().out
    assert "mixed 1:1 with ytvis_2019" in printed
    losses = [float(x) for x in re.findall(r"step \d+/36\s+loss (\d+\.\d+)", printed)]
    assert len(losses) == 36
    first, last = np.mean(losses[:8]), np.mean(losses[-8:])
    assert last < 0.85 * first, (first, last)
    saved = json.loads((out / "recipe.json").read_text())
    assert saved["train"]["matching"] == "first_appearance" and saved["data"]["bucket"] == 128
