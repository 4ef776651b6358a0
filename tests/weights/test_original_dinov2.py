"""An authors' .pth holds no class names and (DINOv2) nothing that fixes the head count: the class
names come from the dataset it was trained on (`--dataset`, the file name, or the class count when
one dataset has it), the head count from the weights where they fix it, else from a name or the
released size of the width; every guess is said in a `CheckpointConfigWarning`."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from flax import traverse_util

from videomt_jax.cli import main
from videomt_jax.config import VideomtConfig
from videomt_jax.data.categories import DATASET_LABELS
from videomt_jax.evaluation.datasets import PROTOCOLS
from videomt_jax.weights.api import load_pretrained
from videomt_jax.weights.original_dinov2 import CheckpointConfigWarning, authors_heads, authors_labels
from videomt_jax.weights.original_dinov3 import INV_FREQ, save_original_dinov3
from videomt_jax.weights.shapes import expected_shapes
from videomt_jax.weights.tables import SEP, ConversionError


def _no_warning(fn, *args):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return fn(*args)


def test_dataset_names_are_the_eval_names():
    assert set(DATASET_LABELS) == set(PROTOCOLS)


def test_class_names_from_dataset_file_name_or_count():
    # --dataset: that list, no warning
    assert _no_warning(authors_labels, 40, None, "ytvis21", "f.pth")[0] == "airplane"
    assert _no_warning(authors_labels, 40, None, "ytvis19", "f.pth")[39] == "tennis_racket"
    # the authors' file names say the dataset (40 classes fit three lists)
    with pytest.warns(CheckpointConfigWarning, match="ytvis19 .from the file name"):
        assert authors_labels(40, "yt_2019_vit_small_52.8.pth", None, "f")[0] == "person"
    with pytest.warns(CheckpointConfigWarning, match="ytvis22 .from the file name"):
        assert authors_labels(40, "yt_2022_vit_large_42.6.pth", None, "f")[0] == "airplane"
    # the count alone when one list has it: OVIS 25, VIPSeg / VSPW 124 (one shared table)
    with pytest.warns(CheckpointConfigWarning, match="class names of ovis, the authors' only list of 25"):
        labels = authors_labels(25, "model.pth", None, "f")
    assert labels[0] == "Person" and len(labels) == 25
    with pytest.warns(CheckpointConfigWarning, match="vipseg/vspw"):
        assert len(authors_labels(124, None, None, "f")) == 124
    # ambiguous or unknown: LABEL_i, and the warning names the way out
    with pytest.warns(CheckpointConfigWarning, match="40 classes fit ytvis19, ytvis21, ytvis22.*--dataset"):
        assert authors_labels(40, "model.pth", None, "f")[0] == "LABEL_0"
    with pytest.warns(CheckpointConfigWarning, match="no authors' dataset has 7 classes.*--id2label-json"):
        assert authors_labels(7, "ovis_tiny.pth", None, "f") == {i: f"LABEL_{i}" for i in range(7)}


def test_bad_dataset_is_one_clear_error():
    with pytest.raises(ConversionError, match="dataset ovis has 25 classes but the checkpoint's class head predicts 4"):
        authors_labels(40, None, "ovis", "f.pth")
    with pytest.raises(ConversionError, match="unknown dataset 'coco'; choose one of ytvis19"):
        authors_labels(40, None, "coco", "f.pth")


def test_head_count_from_name_or_width_with_a_warning():
    assert _no_warning(authors_heads, 384, "yt_2019_vit_small_52.8.pth", "f") == 6
    with pytest.warns(CheckpointConfigWarning, match="16 attention heads assumed .*width 1024.*--num-heads"):
        assert authors_heads(1024, "yt_2021_segmenter.pth", "f") == 16
    with pytest.warns(CheckpointConfigWarning, match="5 attention heads guessed .*--num-heads"):
        assert authors_heads(320, None, "f") == 5
    with pytest.raises(ConversionError, match="--num-heads"):
        authors_heads(100, None, "f")


# ------------------------------------------------------------------ end to end: a DINOv3 .pth
CONFIG = VideomtConfig(
    backbone="dinov3",
    hidden_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,  # head dim 16: not the 64 a guess from the width would give
    num_blocks=1,
    image_size=16,
    patch_size=8,
    num_queries=3,
    intermediate_size=64,
    num_register_tokens=0,
    id2label={i: f"c{i}" for i in range(25)},
)


@pytest.fixture(scope="module")
def authors_pth(tmp_path_factory):
    """An authors' DINOv3 VidEoMT file named as their OVIS release is, and the same with the rotary buffer."""
    rng = np.random.default_rng(0)  # random weights of the right shapes (no model init to compile)
    shapes = expected_shapes(CONFIG).items()
    flat = {tuple(k.split(SEP)): rng.normal(0, 0.02, shape).astype(np.float32) for k, shape in shapes}
    params = traverse_util.unflatten_dict(flat)
    folder = tmp_path_factory.mktemp("pth")
    plain = save_original_dinov3(folder / "ovis_dinov3_tiny.pth", CONFIG, params)
    import torch

    state = torch.load(plain, weights_only=True)
    head_dim = CONFIG.hidden_size // CONFIG.num_attention_heads
    freqs = 1.0 / 100.0 ** (np.arange(0, head_dim, 4) / head_dim)  # HF DINOv3's [E/4], theta 100
    state["model"][INV_FREQ] = torch.tensor(freqs, dtype=torch.float32)
    with_buffer = folder / "model_with_rope.pth"
    torch.save(state, with_buffer)
    return plain, with_buffer


def test_pth_heads_from_rope_buffer_else_warned(authors_pth):
    plain, with_buffer = authors_pth
    with pytest.warns(CheckpointConfigWarning) as caught:
        config, _ = load_pretrained(with_buffer)
    assert config.num_attention_heads == 4 and not any("heads" in str(w.message) for w in caught)
    with pytest.warns(CheckpointConfigWarning, match="1 attention heads guessed"):
        assert load_pretrained(plain)[0].num_attention_heads == 1  # nothing in these weights fixes it
    config, _ = load_pretrained(plain, num_attention_heads=4, dataset="ovis")
    assert config.id2label[1] == "Bird" and config.num_labels == 25


def test_convert_cli_dataset_option_and_one_line_notes(authors_pth, tmp_path, capsys):
    plain, _ = authors_pth
    assert main(["convert", str(plain), str(tmp_path / "a"), "--num-heads", "4"]) == 0
    err = capsys.readouterr().err
    assert "videomt-jax: warning: " in err and "class names of ovis (from the file name" in err
    labels = json.loads((tmp_path / "a" / "config.json").read_text())["id2label"]
    assert labels["0"] == "Person" and labels["24"] == "Vehical"
    assert main(["convert", str(plain), str(tmp_path / "b"), "--num-heads", "4", "--dataset", "ytvis19"]) == 1
    assert "dataset ytvis19 has 40 classes but the checkpoint's class head predicts 25" in capsys.readouterr().err
