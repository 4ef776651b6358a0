"""`videomt-jax eval`: its output is checked before the model is read (an existing file needs
--overwrite), a batch the machine cannot hold is refused up front with what it needs and what
there is, and an image model (EoMT) is read and run frame by frame (tests/evaluation/test_runner.py)
instead of crashing."""

from __future__ import annotations

from tests.helpers.serving import CONFIG
from videomt_jax.apps.pipeline import DEFAULT_MODEL_DIR
from videomt_jax.cli import main
from videomt_jax.cli.eval import read_model


def test_an_existing_out_file_is_refused_before_the_model_is_read(tmp_path, capsys):
    mine = tmp_path / "mine.json"
    mine.write_text("my notes")
    assert main(["eval", str(DEFAULT_MODEL_DIR), "--out", str(mine)], commands=("eval",)) == 1
    out, err = capsys.readouterr()
    assert err.strip() == f"videomt-jax eval: error: {mine} exists; pass --overwrite to replace it" and out == ""
    assert mine.read_text() == "my notes" and sorted(p.name for p in tmp_path.iterdir()) == ["mine.json"]


def test_a_batch_the_machine_cannot_hold_is_refused_before_the_work(capsys):
    argv = ["eval", str(DEFAULT_MODEL_DIR), "--clips", "100000", "--batch-size", "100000"]
    assert main(argv, commands=("eval",)) == 1
    err = capsys.readouterr().err
    assert "a batch of 100000 clips (5 frames of (64, 64)) needs about" in err
    assert "GiB (an estimate), but the RAM available on this host is" in err and "--batch-size" in err


def test_an_image_model_is_read_and_said_to_run_frame_by_frame(tmp_path, capsys, monkeypatch):
    config = CONFIG.replace(model_type="eomt")
    monkeypatch.setattr("videomt_jax.weights.api.load_pretrained", lambda path: (config, {}))  # what it reads
    read, _, processor = read_model(str(tmp_path))
    assert read.model_type == "eomt" and processor.size == config.image_hw
    assert (
        capsys.readouterr().out.strip() == f"{tmp_path} is an image model (eomt): every frame is segmented on its own"
    )
