"""ONNX export of the streaming step: ONNX Runtime reproduces the JAX model over a 3-chunk video
with the state carried; the plain-JAX forward it is traced from equals the linen model; the bench
times the serving artifacts next to videomt-jax.

Letters: B videos, T frames, H/W pixels, Q queries, D hidden.
"""

from __future__ import annotations

import json

import jax
import numpy as np
import onnxruntime as ort
import pytest

from tests.helpers.serving import CONFIG, FRAMES, random_params
from videomt_jax.apps.pipeline import DEFAULT_MODEL_DIR
from videomt_jax.cli import main as cli_main
from videomt_jax.modeling.outputs import StreamState
from videomt_jax.modeling.videomt import VideomtModel
from videomt_jax.serving.onnx_export import INPUT_NAMES, OUTPUT_NAMES, export_onnx
from videomt_jax.serving.plain_forward import params_at_size, streaming_step
from videomt_jax.streaming import VideoStreamer


@pytest.fixture(scope="module")
def params():
    return random_params(CONFIG)


def _run_onnx(session, video, batch):
    """Feed video [B, 3*FRAMES, H, W, 3] FRAMES at a time, carrying queries/started; concatenated outputs."""
    queries = np.zeros((batch, CONFIG.num_queries, CONFIG.hidden_size), np.float32)
    started = np.zeros((batch,), bool)
    outs = []
    for start in range(0, video.shape[1], FRAMES):
        out = session.run(None, dict(zip(INPUT_NAMES, (video[:, start : start + FRAMES], queries, started))))
        queries, started = out[2], out[3]
        outs.append(out)
    return np.concatenate([o[0] for o in outs], 1), np.concatenate([o[1] for o in outs], 1), queries, started


def test_onnx_runtime_reproduces_jax_over_three_chunks(params, tmp_path):
    path = export_onnx(tmp_path / "step.onnx", CONFIG, params, frames=FRAMES, batch=None)
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["format"] == "videomt-jax-onnx" and meta["frames"] == FRAMES and meta["batch"] is None
    assert [i["name"] for i in meta["inputs"]] == list(INPUT_NAMES) and [o["name"] for o in meta["outputs"]] == list(
        OUTPUT_NAMES
    )
    assert meta["inputs"][0]["shape"] == ["B", FRAMES, 32, 32, 3] and meta["inputs"][2]["dtype"] == "bool"
    assert meta["pixels"]["size"] == [32, 32] and meta["pixels"]["std"] == [0.229, 0.224, 0.225]  # HF's ImageNet std
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == list(INPUT_NAMES)
    video = np.random.default_rng(0).standard_normal((2, 3 * FRAMES, 32, 32, 3)).astype(np.float32)
    class_logits, mask_logits, queries, started = _run_onnx(session, video, batch=2)  # any batch size
    streamer = VideoStreamer(VideomtModel(CONFIG), params)
    state, ref = streamer.init(2), []
    for start in range(0, video.shape[1], FRAMES):
        out, state = streamer.step(state, video[:, start : start + FRAMES])
        ref.append(jax.device_get(out))
    np.testing.assert_allclose(class_logits, np.concatenate([o.class_logits for o in ref], 1), rtol=0, atol=1e-4)
    np.testing.assert_allclose(mask_logits, np.concatenate([o.mask_logits for o in ref], 1), rtol=0, atol=1e-4)
    np.testing.assert_allclose(queries, np.asarray(state.queries), rtol=0, atol=1e-4)
    assert started.all()
    # the state was carried: the last chunk from a fresh state differs from what the ONNX loop gave
    fresh = session.run(
        None, dict(zip(INPUT_NAMES, (video[:1, -FRAMES:], np.zeros_like(queries[:1]), np.zeros(1, bool))))
    )
    assert np.abs(fresh[0] - class_logits[:1, -FRAMES:]).max() > 1e-3


@pytest.mark.parametrize(
    "changes, size",
    [
        (dict(use_swiglu_ffn=True, hidden_act="gelu_new"), (32, 32)),
        (dict(norm_queries=True, num_hidden_layers=3, num_blocks=2), (24, 40)),  # resampled position embeddings
    ],
)
def test_plain_forward_equals_the_linen_model(changes, size):
    config = CONFIG.replace(**changes)
    params = random_params(config, seed=1)
    rng = np.random.default_rng(2)
    video = rng.standard_normal((2, 2, *size, 3)).astype(np.float32)
    queries = rng.standard_normal((2, config.num_queries, config.hidden_size)).astype(np.float32)
    started = np.array([True, False])  # one video continues, one starts
    model = VideomtModel(config)
    ref = jax.jit(
        lambda p, x, q, s: model.apply(
            {"params": p}, x, StreamState(q, s), interpolate_pos_encoding=size != config.image_hw
        )
    )(params, video, queries, started)
    got = jax.jit(streaming_step(config, params_at_size(config, params, size)))(video, queries, started)
    for mine, theirs in zip(got, (ref.class_logits, ref.mask_logits, ref.state.queries, ref.state.started)):
        np.testing.assert_allclose(np.asarray(mine), np.asarray(theirs), rtol=1e-5, atol=1e-5)


def test_refuses_other_backbones_and_existing_files(params, tmp_path):
    dinov3 = CONFIG.replace(backbone="dinov3", key_bias=False)
    with pytest.raises(ValueError, match="supports backbones \\('dinov2',\\), got 'dinov3'"):
        export_onnx(tmp_path / "x.onnx", dinov3, params)
    with pytest.raises(ValueError, match="must end in .onnx"):
        export_onnx(tmp_path / "x.bin", CONFIG, params)
    (tmp_path / "y.onnx").write_bytes(b"")
    with pytest.raises(FileExistsError, match="pass overwrite=True"):
        export_onnx(tmp_path / "y.onnx", CONFIG, params)


def test_cli_export_onnx(tmp_path, capsys):
    out = tmp_path / "tiny.onnx"
    assert cli_main(["export-onnx", str(DEFAULT_MODEL_DIR), str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    meta = json.loads(out.with_suffix(".json").read_text())
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    q, d = meta["config"]["num_queries"], meta["config"]["hidden_size"]
    outputs = session.run(
        None,
        {
            "pixels": np.zeros((1, 1, 64, 64, 3), np.float32),
            "queries": np.zeros((1, q, d), np.float32),
            "started": np.zeros(1, bool),
        },
    )
    assert [o.shape for o in outputs] == [tuple(o["shape"]) for o in meta["outputs"]]
    assert cli_main(["export-onnx", str(DEFAULT_MODEL_DIR), str(out)]) == 1
    assert "--overwrite" in capsys.readouterr().err


def test_bench_has_serving_rows(tmp_path):
    from videomt_bench import main as bench_main

    out = tmp_path / "bench.json"
    argv = [
        "--presets",
        "tiny",
        "--size",
        "32",
        "--frames",
        "2",
        "--iters",
        "1",
        "--modes",
        "clip",
        "--no-hf",
        "--serving",
    ]
    assert bench_main(argv + ["--json", str(out)]) == 0
    rows = {row["impl"]: row for row in json.loads(out.read_text())["results"]}
    assert set(rows) == {"videomt-jax", "jax-export", "onnxruntime-cpu"}
    for impl in ("jax-export", "onnxruntime-cpu"):
        clip = rows[impl]["modes"]["clip"]
        assert clip["fps"] > 0 and clip["frames_per_rep"] == 2
        assert clip["extra"]["max_abs_diff_mask_logits"] < 1e-4 and clip["extra"]["max_abs_diff_class_logits"] < 1e-4


def test_opset_and_foreign_files_are_refused_before_the_work(params, tmp_path, capsys):
    argv = ["export-onnx", str(DEFAULT_MODEL_DIR), str(tmp_path / "a.onnx"), "--opset", "3"]
    assert cli_main(argv) == 1
    out, err = capsys.readouterr()
    assert "opset must be an int in [17, " in err and "reading" not in out
    (tmp_path / "b.onnx").write_bytes(b"mine")
    (tmp_path / "b.json").write_text(json.dumps({"notes": "mine"}))
    with pytest.raises(FileExistsError, match=r"b.json is not one export-onnx wrote .*; not replacing it"):
        export_onnx(tmp_path / "b.onnx", CONFIG, params, overwrite=True)
    assert (tmp_path / "b.json").read_text() == json.dumps({"notes": "mine"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.json", "b.onnx"]
