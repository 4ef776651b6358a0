"""jax.export serving artifacts: lowered for cpu / cuda / tpu, run with nothing but jax in a fresh
process, equal to the model streamed chunk by chunk; fused pre/post-processing; clear input errors.

Letters: B videos, T frames, H/W pixels, Q queries, D hidden.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import numpy as np
import pytest

from tests.helpers.serving import CONFIG, FRAMES, random_params
from videomt_jax.apps.pipeline import DEFAULT_MODEL_DIR
from videomt_jax.cli import main as cli_main
from videomt_jax.modeling.family import model_for
from videomt_jax.modeling.videomt import VideomtModel
from videomt_jax.postprocess import post_process_panoptic
from videomt_jax.processing import VideoProcessor
from videomt_jax.serving.export import export_serving
from videomt_jax.serving.load import load_serving
from videomt_jax.streaming import VideoStreamer

# The child process may import these from videomt_jax and nothing else (and no flax at all).
ALLOWED = ("videomt_jax", "videomt_jax.serving", "videomt_jax.serving.load")
CHILD = textwrap.dedent(
    """
    import importlib.abc, sys
    ALLOWED = {allowed!r}

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "flax" or name.startswith("flax.") or (name.startswith("videomt_jax") and name not in ALLOWED):
                raise ImportError(f"blocked import of {{name}}")
            return None

    sys.meta_path.insert(0, Block())
    import numpy as np
    from videomt_jax.serving.load import load_serving

    serving = load_serving(sys.argv[1])
    video = np.load(sys.argv[2])
    state, outs = None, []
    for start in range(0, video.shape[1], serving.frames):
        out, state = serving.step(video[:, start : start + serving.frames], state)
        outs.append(out)
    np.savez(sys.argv[3], class_logits=np.concatenate([o["class_logits"] for o in outs], 1),
             mask_logits=np.concatenate([o["mask_logits"] for o in outs], 1), queries=np.asarray(state.queries))
    leaked = [m for m in sys.modules if m.startswith("flax") or (m.startswith("videomt_jax") and m not in ALLOWED)]
    print("LEAKED", leaked)
    """
)


@pytest.fixture(scope="module")
def model():
    return CONFIG, random_params(CONFIG)


@pytest.fixture(scope="module")
def artifact(model, tmp_path_factory):
    config, params = model
    return export_serving(tmp_path_factory.mktemp("serving") / "step", config, params, frames=FRAMES)


def _streamed(streamer, video):
    """The model fed the video FRAMES at a time (VideoStreamer), as numpy."""
    state, outs = streamer.init(video.shape[0]), []
    for start in range(0, video.shape[1], FRAMES):
        out, state = streamer.step(state, video[:, start : start + FRAMES])
        outs.append(jax.device_get(out))
    cat = {k: np.concatenate([getattr(o, k) for o in outs], 1) for k in ("class_logits", "mask_logits")}
    return cat, np.asarray(state.queries)


def test_lowered_for_cpu_cuda_tpu_with_a_json_description(artifact, model):
    config, _ = model
    meta = json.loads((artifact / "serving.json").read_text())
    assert set(meta["artifacts"]) == {"cpu", "cuda", "tpu"}
    assert (
        meta["artifacts"]["cpu"]["attention_impl"] == "einsum_map"
        and meta["artifacts"]["tpu"]["attention_impl"] == "einsum"
    )
    for platform, entry in meta["artifacts"].items():
        exported = jax.export.deserialize(bytearray((artifact / entry["file"]).read_bytes()))
        assert exported.platforms == (platform,)
    q, d = config.num_queries, config.hidden_size
    h, w = config.image_hw
    assert meta["inputs"] == [
        {"name": "pixels", "shape": [1, FRAMES, h, w, 3], "dtype": "float32"},
        {"name": "queries", "shape": [1, q, d], "dtype": "float32"},
        {"name": "started", "shape": [1], "dtype": "bool"},
    ]
    outputs = {o["name"]: o["shape"] for o in meta["outputs"]}
    stride = config.mask_stride
    assert outputs["class_logits"] == [1, FRAMES, q, config.num_labels + 1]
    assert outputs["mask_logits"] == [1, FRAMES, q, h // stride, w // stride]
    assert meta["weights"]["mode"] == "argument" and meta["config"]["hidden_size"] == d
    assert meta["videomt_jax_version"] and meta["jax_version"] == jax.__version__


def test_fresh_process_without_model_code_equals_the_model(artifact, model, tmp_path):
    config, params = model
    video = np.random.default_rng(0).standard_normal((1, 3 * FRAMES, *config.image_hw, 3)).astype(np.float32)
    np.save(tmp_path / "video.npy", video)
    child = subprocess.run(
        [
            sys.executable,
            "-c",
            CHILD.format(allowed=ALLOWED),
            str(artifact),
            str(tmp_path / "video.npy"),
            str(tmp_path / "out.npz"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert child.returncode == 0, child.stderr[-3000:]
    assert "LEAKED []" in child.stdout
    got = np.load(tmp_path / "out.npz")
    streamer = VideoStreamer(VideomtModel(config), params)
    expected, queries = _streamed(streamer, video)
    for key in ("class_logits", "mask_logits"):
        np.testing.assert_allclose(got[key], expected[key], rtol=0, atol=1e-6)
    np.testing.assert_allclose(got["queries"], queries, rtol=0, atol=1e-6)
    # the state was carried: the last chunk from a fresh state gives other logits
    fresh, _ = streamer.step(streamer.init(1), video[:, -FRAMES:])
    assert np.abs(np.asarray(fresh.class_logits) - got["class_logits"][:, -FRAMES:]).max() > 1e-3


def test_bad_input_gives_a_clear_error(artifact, model):
    config, _ = model
    serving = load_serving(artifact)
    good = np.zeros((1, FRAMES, *config.image_hw, 3), np.float32)
    with pytest.raises(ValueError, match=rf"holds 3 frames; this artifact takes exactly T={FRAMES}"):
        serving.step(np.zeros((1, 3, *config.image_hw, 3), np.float32))
    with pytest.raises(TypeError, match="pixels must have dtype float32, got float64"):
        serving.step(good.astype(np.float64))
    with pytest.raises(ValueError, match=r"pixels has shape \(1, 2, 16, 32, 3\), expected \(1, 2, 32, 32, 3\)"):
        serving.step(good[:, :, :16])
    with pytest.raises(ValueError, match=r"pixels must be 5-D \(B, T, H, W, C\)"):
        serving.step(good[0])
    with pytest.raises(ValueError, match="this artifact takes batch size 1, got 2"):
        serving.init_state(2)
    state = serving.init_state()
    with pytest.raises(ValueError, match=r"queries has shape \(1, 6, 31\), expected \(1, 6, 32\)"):
        serving.step(good, state._replace(queries=state.queries[..., :-1]))
    with pytest.raises(TypeError, match="started must have dtype bool, got float32"):
        serving.step(good, state._replace(started=np.zeros(1, np.float32)))


def test_bfloat16_artifact_equals_the_bfloat16_streamer(model, tmp_path):
    config, params = model
    path = export_serving(tmp_path / "bf16", config, params, platforms=("cpu",), dtype="bfloat16", frames=FRAMES)
    serving = load_serving(path)
    assert serving._weights["heads.class_predictor.kernel"].dtype == jax.numpy.bfloat16  # cast once at load
    video = np.random.default_rng(3).standard_normal((1, FRAMES, *config.image_hw, 3)).astype(np.float32)
    out, _ = serving.step(video)
    streamer = VideoStreamer(VideomtModel(config.replace(dtype="bfloat16")), params)
    expected, _ = streamer.step(streamer.init(1), video)
    np.testing.assert_array_equal(np.asarray(out["mask_logits"]), np.asarray(expected.mask_logits))
    assert (
        np.abs(
            np.asarray(out["mask_logits"])
            - _streamed(VideoStreamer(VideomtModel(config), params), video)[0]["mask_logits"]
        ).max()
        > 1e-4
    )


def test_fused_panoptic_symbolic_batch_matches_the_python_pipeline(model, tmp_path):
    config, params = model
    frame_hw = (24, 40)  # uint8 frames of another size: resized in, maps out at this size
    options = {"threshold": 0.0, "overlap_mask_area_threshold": 0.0}  # random weights: keep every query in play
    path = export_serving(
        tmp_path / "fused",
        config,
        params,
        platforms=("cpu",),
        frames=FRAMES,
        batch=None,
        task="panoptic",
        frame_size=frame_hw,
        task_options=options,
    )
    meta = json.loads((path / "serving.json").read_text())
    assert meta["inputs"][0] == {"name": "frames", "shape": ["B", FRAMES, *frame_hw, 3], "dtype": "uint8"}
    assert {"name": "segmentation", "shape": ["B", FRAMES, *frame_hw], "dtype": "int32"} in meta["outputs"]
    serving = load_serving(path)
    frames = np.random.default_rng(1).integers(0, 256, (2, FRAMES, *frame_hw, 3), dtype=np.uint8)
    out, state = serving.step(frames)  # batch 2 from an artifact with a symbolic batch
    pixels = VideoProcessor.from_config(config)(frames)
    expected = post_process_panoptic(
        jax.jit(VideomtModel(config).apply)({"params": params}, pixels), frame_hw, **options
    )
    assert out["segmentation"].shape == (2, FRAMES, *frame_hw) and state.queries.shape == (2, 6, 32)
    assert np.mean(np.asarray(out["segmentation"]) == np.asarray(expected.segmentation)) > 0.999
    np.testing.assert_array_equal(out["label_id"], expected.label_id)
    assert int(np.asarray(expected.valid).sum()) > 0  # segments were found, so the comparison has teeth
    with pytest.raises(TypeError, match="frames must have dtype uint8, got float32"):
        serving.step(frames.astype(np.float32))


def test_cli_export_serving(tmp_path, capsys):
    out = tmp_path / "cli"
    argv = [
        "export-serving",
        str(DEFAULT_MODEL_DIR),
        str(out),
        "--platforms",
        "cpu",
        "--batch",
        "any",
        "--dtype",
        "bfloat16",
    ]
    assert cli_main(argv) == 0
    meta = json.loads((out / "serving.json").read_text())
    assert meta["batch"] is None and meta["dtype"] == "bfloat16" and meta["frames"] == 1
    assert meta["artifacts"]["cpu"]["attention_impl"] == "einsum"  # einsum_map needs a concrete batch
    assert "wrote" in capsys.readouterr().out
    assert cli_main(argv) == 1  # exists: refuses without --overwrite
    assert "--overwrite" in capsys.readouterr().err
    assert cli_main(["export-serving", str(DEFAULT_MODEL_DIR), str(tmp_path / "x"), "--platforms", "metal"]) == 1
    assert "platforms must be distinct names from ('cpu', 'cuda', 'tpu')" in capsys.readouterr().err
    assert (
        cli_main(
            ["export-serving", str(DEFAULT_MODEL_DIR), str(tmp_path / "y"), "--task", "semantic", "--threshold", "0.3"]
        )
        == 1
    )
    assert "are not options of semantic post-processing" in capsys.readouterr().err


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(task="instance", task_options={"threshold": 5}), r"task option threshold must be a score in \[0, 1\]"),
        (dict(task="panoptic", frame_size=(20000, 20000)), r"frame_size \(20000, 20000\) is 400000000 pixels per"),
        (dict(input_size=100000), r"input_size \(100000, 100000\) gives 156250000 patches per frame, over the limit"),
        (dict(frames=0), r"frames \(per call\) must be an int in \[1, 4096\], got 0"),
    ],
)
def test_hostile_options_are_refused_before_any_work(tmp_path, options, message):
    with pytest.raises(ValueError, match=message):
        export_serving(tmp_path / "out", CONFIG, {}, platforms=("cpu",), **options)  # no params needed to refuse
    assert not any(tmp_path.iterdir())


def test_reexport_replaces_its_own_output_and_refuses_before_the_work(artifact, tmp_path, monkeypatch, model):
    config, params = model
    path = Path(shutil.copytree(artifact, tmp_path / "copy"))
    export_serving(path, config, params, platforms=("cpu",), frames=FRAMES, overwrite=True)
    assert json.loads((path / "serving.json").read_text())["artifacts"].keys() == {"cpu"}
    assert not (path / "step.cuda.jaxexport").exists()  # the whole earlier export was replaced

    def no_work(*args, **kwargs):
        raise AssertionError("the export started working before refusing")

    monkeypatch.setattr("videomt_jax.serving.export.flatten_params", no_work)
    with pytest.raises(FileExistsError, match="pass overwrite=True"):
        export_serving(path, config, params, platforms=("cpu",), frames=FRAMES)


def test_cli_checks_options_and_output_before_reading_the_model(tmp_path, capsys):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    assert cli_main(["export-serving", str(DEFAULT_MODEL_DIR), str(foreign), "--overwrite"]) == 1
    out, err = capsys.readouterr()
    assert "not (or no longer) exactly an output of this tool" in err and "reading" not in out
    assert (foreign / "notes.txt").read_text() == "mine"
    argv = ["export-serving", str(DEFAULT_MODEL_DIR), str(tmp_path / "new"), "--task", "instance", "--threshold", "5"]
    assert cli_main(argv) == 1
    out, err = capsys.readouterr()
    assert err.count("\n") == 1 and "task option threshold must be a score in [0, 1], got 5.0" in err
    assert "reading" not in out and sorted(p.name for p in tmp_path.iterdir()) == ["mine"]


# Runs `videomt-jax ARGS` with np.savez held open once it has written (the weights land in the
# temporary directory), so the parent can stop it mid-write.
SLOW_WRITE = textwrap.dedent(
    """
    import sys, time
    import numpy as np
    from videomt_jax.cli import main

    savez = np.savez

    def held(*args, **kwargs):
        savez(*args, **kwargs)
        print("WRITING", flush=True)
        time.sleep(120)

    np.savez = held
    sys.exit(main(sys.argv[1:]))
    """
)


def test_sigterm_while_writing_leaves_nothing(tmp_path):
    argv = ["export-serving", str(DEFAULT_MODEL_DIR), str(tmp_path / "out"), "--platforms", "cpu"]
    child = subprocess.Popen(
        [sys.executable, "-c", SLOW_WRITE, *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None
        lines = iter(child.stdout.readline, "")
        assert any(line.strip() == "WRITING" for line in lines), child.stderr.read()[-3000:] if child.stderr else ""
        child.send_signal(signal.SIGTERM)
        _, err = child.communicate(timeout=60)
    finally:
        child.kill()
    assert child.returncode == 128 + signal.SIGTERM, err[-3000:]
    assert "videomt-jax export-serving: interrupted by SIGTERM" in err
    assert list(tmp_path.iterdir()) == []  # no directory, no temporary one, no lock


def test_image_model_is_exported_frame_by_frame(tmp_path):
    config = CONFIG.replace(model_type="eomt")
    params = random_params(config)
    path = export_serving(tmp_path / "eomt", config, params, platforms=("cpu",), frames=FRAMES)
    assert json.loads((path / "serving.json").read_text())["frame_by_frame"] is True
    serving = load_serving(path)
    video = np.random.default_rng(4).standard_normal((1, FRAMES, *config.image_hw, 3)).astype(np.float32)
    out, state = serving.step(video)
    alone = jax.jit(lambda frame: model_for(config).apply({"params": params}, frame).mask_logits)
    for t in range(FRAMES):  # each frame alone gives the same logits: nothing is carried between frames
        np.testing.assert_allclose(out["mask_logits"][:, t], alone(video[:, t : t + 1])[:, 0], rtol=0, atol=1e-5)
    assert bool(state.started.all())
