"""Benchmark: analytic FLOPs vs XLA's cost analysis, HF's online step vs HF's forward, the CLI end to end.

Letters: B videos, T frames, H/W pixels, C channels, Q queries, K+1 classes, h/w mask grid.
"""

from __future__ import annotations

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from videomt_bench import flops, flops_breakdown, main
from videomt_bench.hf_runner import build_hf_model, online_step
from videomt_bench.jax_runner import random_params
from videomt_bench.report import MODE_KEYS, REQUIRED_KEYS, ROW_KEYS
from videomt_bench.settings import BenchSettings, preset_config
from videomt_jax.config import VideomtConfig
from videomt_jax.modeling import xla_options
from videomt_jax.modeling.family import init_params
from videomt_jax.modeling.videomt import VideomtModel

# Wide enough that matmuls dominate XLA's count (it also counts element-wise work, which the
# analytic count leaves out: about 8% here, under 4% for ViT-S at 320x320).
FLOP_CONFIG = VideomtConfig(
    hidden_size=384,
    num_hidden_layers=2,
    num_attention_heads=6,
    num_blocks=1,
    image_size=64,
    num_queries=16,
    attention_impl="einsum",
)


def test_flops_match_xla_cost_analysis():
    # One frame per video: XLA counts the body of the frame scan (a while loop) once, not T times.
    params = jax.eval_shape(lambda: init_params(FLOP_CONFIG, jax.random.PRNGKey(0)))
    videos = jax.ShapeDtypeStruct((2, 1, 64, 64, 3), jnp.float32)
    model = VideomtModel(FLOP_CONFIG)
    compiled = jax.jit(lambda p, x: model.apply({"params": p}, x)).lower(params, videos).compile()
    cost = compiled.cost_analysis()
    xla = (cost[0] if isinstance(cost, list) else cost)["flops"]
    ours = flops(FLOP_CONFIG, 64, 64, frames=1, batch=2)
    assert 0.9 <= xla / ours <= 1.1, (xla, ours)


def test_flops_parts_by_hand():
    cfg = VideomtConfig(
        hidden_size=8, num_hidden_layers=2, num_attention_heads=2, num_blocks=1, image_size=32, num_queries=3
    )
    parts = flops_breakdown(cfg, 32, 32, frames=2)
    # 2x2 patches of 16*16*3 inputs to 8 channels, two frames
    assert parts["patch_embed"] == 2 * 2 * (4 * 768 * 8)
    # one plain layer on 1 + 4 registers + 4 patches = 9 tokens:
    # qkv 9*8*24, out 9*8*8, scores+values 2*9*9*8, MLP 2*9*8*32
    plain = 2 * (9 * 8 * 24 + 9 * 8 * 8 + 2 * 9 * 9 * 8 + 2 * 9 * 8 * 32)
    assert parts["encoder"] == 2 * plain
    assert parts["query_updater"] == 2 * 3 * 8 * 8  # frame 1 only
    assert parts["mask_einsum"] == 2 * (2 * 3 * 64 * 8)  # 2x2 grid upscaled twice -> 8x8
    assert flops(cfg, 32, 32, frames=2, batch=3) == 3 * sum(parts.values())


def test_hf_online_step_equals_hf_forward():
    settings = BenchSettings.for_backend("cpu", presets=("tiny",), size=32)
    config = preset_config("tiny", settings)
    hf = build_hf_model(config, random_params(config, seed=1), "cpu", "eager")
    videos = torch.randn(1, 3, 3, 32, 32, generator=torch.Generator().manual_seed(0))  # [B, T, C, H, W]
    step = online_step(hf)
    with torch.no_grad():
        full = hf(pixel_values_videos=videos)
        propagated, masks, classes = None, [], []
        for t in range(3):
            m, c, propagated = step(videos[:, t], propagated)
            masks.append(m)
            classes.append(c)
    torch.testing.assert_close(torch.cat(masks), full.masks_queries_logits, rtol=0, atol=1e-5)
    torch.testing.assert_close(torch.cat(classes), full.class_queries_logits, rtol=0, atol=1e-5)
    assert not torch.allclose(classes[0], classes[1])  # the frames differ, so the check has teeth


def test_preset_names_and_config_files(tmp_path):
    settings = BenchSettings.for_backend("cpu")
    assert settings.size == 320 and settings.dtype == "float32" and settings.presets == ("small",)
    assert BenchSettings.for_backend("gpu").dtype == "bfloat16"
    path = tmp_path / "config.json"
    VideomtConfig(hidden_size=48, num_hidden_layers=2, num_attention_heads=3, num_blocks=1).to_json_file(str(path))
    config = preset_config(str(path), settings)
    assert (config.hidden_size, config.image_hw) == (48, (320, 320))
    with pytest.raises(ValueError, match="unknown preset 'huge'"):
        preset_config("huge", settings)
    with pytest.raises(ValueError, match="iters must be >= 1"):
        BenchSettings.for_backend("cpu", iters=0)


def test_bench_subcommand_forwards_to_the_harness(capsys):
    from videomt_bench.cli import build_parser
    from videomt_jax.cli import main as cli_main

    args = build_parser().parse_args(["--presets", "small,large", "--no-hf", "--size", "64"])
    assert args.presets == ("small", "large") and args.hf is False and args.size == 64
    # `videomt-jax bench ARGS` hands ARGS to the harness; its errors come back as one line and exit code 1
    assert cli_main(["bench", "--presets", "huge", "--no-hf"]) == 1
    assert "videomt-jax bench: error: unknown preset 'huge'" in capsys.readouterr().err


def test_cli_end_to_end_writes_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    argv = ["--presets", "tiny", "--size", "32", "--frames", "2", "--batch", "2", "--iters", "2"]
    assert main(argv + ["--torch-threads", "1", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert set(REQUIRED_KEYS) <= set(report)
    assert report["meta"]["backend"] == "cpu" and report["meta"]["versions"]["jax"] == jax.__version__
    assert report["meta"]["xla_compiler_options"] == xla_options.CPU_OPTIONS  # recorded with the results
    rows = {row["impl"]: row for row in report["results"]}
    assert set(rows) == {"videomt-jax", "hf-eager"}
    for row in rows.values():
        assert set(ROW_KEYS) <= set(row) and set(row["modes"]) == {"online", "online_sync", "clip", "batch"}
        for name, mode in row["modes"].items():
            assert set(MODE_KEYS) <= set(mode)
            assert len(mode["times_s"]) == 2 and all(t > 0 for t in mode["times_s"])
            assert mode["frames_per_rep"] == (4 if name == "batch" else 2)
            assert math.isclose(mode["fps"], mode["frames_per_rep"] / float(np.median(mode["times_s"])))
            assert mode["peak_mem_mb"] > 0
    assert rows["videomt-jax"]["modes"]["clip"]["compile_s"] > 0
    # HF ran the same weights on the same clip: its logits match ours
    assert rows["hf-eager"]["modes"]["clip"]["extra"]["max_abs_diff_mask_logits"] < 1e-4
    assert rows["hf-eager"]["modes"]["clip"]["extra"]["max_abs_diff_class_logits"] < 1e-4
    assert report["compile"][0]["preset"] == "tiny"
    printed = capsys.readouterr().out
    assert "online fps" in printed and "videomt-jax vs hf-eager" in printed
