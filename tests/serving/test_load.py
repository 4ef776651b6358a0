"""The serving loader trusts nothing in a serving directory: serving.json is checked key by key, every
file it names stays inside the directory and matches the sha256 recorded at export, damaged
programs and weights are named, non-finite weights are refused; shape errors say what the batch is.

Letters: B videos, T frames, H/W pixels.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.helpers.serving import CONFIG, FRAMES, random_params
from videomt_jax.processing import VideoProcessor
from videomt_jax.serving.export import export_serving
from videomt_jax.serving.load import load_serving

MEAN, STD = (0.5, 0.25, 0.125), (0.2, 0.3, 0.4)  # a processor other than HF's defaults


@pytest.fixture(scope="module")
def artifact(tmp_path_factory) -> Path:
    processor = VideoProcessor.from_config(CONFIG, mean=MEAN, std=STD)
    path = tmp_path_factory.mktemp("serving") / "step"
    return export_serving(path, CONFIG, random_params(CONFIG), platforms=("cpu",), frames=FRAMES, processor=processor)


def _copy(artifact: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(artifact, tmp_path / "copy"))


def _edit_meta(path: Path, edit) -> None:
    meta = json.loads((path / "serving.json").read_text())
    meta = edit(meta) or meta
    (path / "serving.json").write_text(json.dumps(meta))


def test_serving_json_records_the_pixel_normalisation(artifact):
    pixels = json.loads((artifact / "serving.json").read_text())["pixels"]
    assert pixels["size"] == list(CONFIG.image_hw)
    assert pixels["mean"] == list(MEAN) and pixels["std"] == list(STD)
    assert pixels["resize"].startswith("bilinear") and pixels["rescale_factor"] == pytest.approx(1 / 255)
    assert VideoProcessor.from_hf_dict(pixels["processor"]).mean == MEAN  # the HF-format record reads back


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda m: [m], r"serving.json must hold a JSON object, got a list"),
        (lambda m: m.pop("inputs") and None, r"serving.json lacks the key 'inputs'"),
        (lambda m: m.update(format_version="one"), r"serving.json: key 'format_version' must be a positive int"),
        (lambda m: m.update(frames=0), r"serving.json: key 'frames' must be a positive int"),
        (lambda m: m["artifacts"]["cpu"].pop("file") and None, r"serving.json: key 'artifacts' must be an object"),
        (
            lambda m: m["artifacts"]["cpu"].update(file="../../../../etc/hostname"),
            r"key 'artifacts.cpu.file' names '../../../../etc/hostname'; it must be a file name inside",
        ),
        (lambda m: m["weights"].update(file="/etc/hostname"), r"key 'weights.file' names '/etc/hostname'"),
    ],
)
def test_hostile_serving_json_gives_one_line_naming_file_and_key(artifact, tmp_path, edit, message):
    path = _copy(artifact, tmp_path)
    _edit_meta(path, edit)
    with pytest.raises(ValueError, match=message) as error:
        load_serving(path)
    assert "\n" not in str(error.value) and str(path) in str(error.value)


def test_a_link_leading_out_of_the_directory_is_refused(artifact, tmp_path):
    path = _copy(artifact, tmp_path)
    (tmp_path / "elsewhere.npz").write_bytes((path / "weights.npz").read_bytes())
    os.symlink(tmp_path / "elsewhere.npz", path / "linked.npz")
    _edit_meta(path, lambda m: m["weights"].update(file="linked.npz"))
    with pytest.raises(ValueError, match=r"names 'linked.npz', which leads outside"):
        load_serving(path)


def test_damaged_files_are_named(artifact, tmp_path):
    path = _copy(artifact, tmp_path)
    program = path / "step.cpu.jaxexport"
    data = bytearray(program.read_bytes())
    data[len(data) // 2] ^= 0xFF
    program.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"step.cpu.jaxexport does not match the sha256 recorded in .*serving.json"):
        load_serving(path)
    # an export without checksums: the damage itself is reported, naming the file
    _edit_meta(path, lambda m: [e.pop("sha256") for e in (m["artifacts"]["cpu"], m["weights"])] and None)
    program.write_bytes(b"\x00" * 64)
    with pytest.raises(ValueError, match=r"step.cpu.jaxexport is not a readable jax.export artifact"):
        load_serving(path)
    program.write_bytes((artifact / "step.cpu.jaxexport").read_bytes())
    (path / "weights.npz").write_bytes(b"not a zip at all")
    with pytest.raises(ValueError, match=r"weights.npz is not a .npz archive"):
        load_serving(path)


def test_non_finite_weights_are_refused_naming_the_parameter(artifact, tmp_path):
    path = _copy(artifact, tmp_path)
    with np.load(path / "weights.npz") as data:
        weights = {k: data[k] for k in data.files}
    weights["heads.class_predictor.bias"][1] = np.nan
    with open(path / "weights.npz", "wb") as f:
        np.savez(f, **weights)
    _edit_meta(path, lambda m: m["weights"].pop("sha256") and None)
    with pytest.raises(ValueError, match=r"weights.npz: parameter 'heads.class_predictor.bias' holds NaN"):
        load_serving(path)


def test_shape_error_of_a_fixed_batch_artifact_says_the_fixed_size(artifact):
    serving = load_serving(artifact)
    frames = np.zeros((2, FRAMES, *CONFIG.image_hw, 3), np.float32)
    with pytest.raises(ValueError, match=r"expected \(1, 2, 32, 32, 3\) \(this artifact's batch size is fixed at 1;"):
        serving.step(frames, serving.init_state())
