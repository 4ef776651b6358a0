"""Analytic FLOP count of one VidEoMT forward pass (multiply-add = 2 FLOPs).

Letters: T frames, H/W pixels, C channels, p patch side, g_h/g_w patch grid, P prefix tokens
(CLS + registers), Q queries, N tokens in a block (P + g_h*g_w, plus Q in the query blocks),
D hidden, F MLP hidden, K+1 classes, G_h/G_w mask grid (g * 2^num_upscale_blocks).

Counted: every matmul/convolution (patch embedding, q|k|v, attention scores and values, output
projection, MLP, query updater, class head, mask MLP, transposed convolutions, mask einsum) and the
3x3 depthwise convolutions of the upscale blocks. Element-wise work (norms, activations, softmax,
residual adds) is left out, as in the usual "model FLOPs" convention; it is a few percent of the
total for real sizes. Pure Python (no jax), so the command line can import it for free.
"""

from __future__ import annotations

from videomt_jax.config import VideomtConfig

FLOP_PARTS = ("patch_embed", "encoder", "query_blocks", "query_updater", "heads", "upscale", "mask_einsum")


def _block_flops(config: VideomtConfig, tokens: int) -> int:
    """One pre-norm ViT block on `tokens` tokens of one frame: attention + MLP matmuls."""
    d, n = config.hidden_size, tokens
    projections = 2 * n * d * (3 * d) + 2 * n * d * d  # q|k|v and out_proj
    attention = 2 * (2 * n * n * d)  # scores [N, N] over all heads, then probs @ v
    mlp_mats = 3 if config.use_swiglu_ffn else 2  # gate/up/down or fc1/fc2
    mlp = mlp_mats * 2 * n * d * config.mlp_hidden_size
    return projections + attention + mlp


def flops_breakdown(config: VideomtConfig, height: int, width: int, frames: int, batch: int = 1) -> dict[str, int]:
    """FLOPs per part for `batch` videos of `frames` frames of height x width pixels.

    The query updater runs on frames 1.. of each video (frame 0 starts from the learned queries).
    """
    ph, pw = config.patch_hw
    if height % ph or width % pw:
        raise ValueError(f"frame size {height}x{width} is not a multiple of the patch size {ph}x{pw}")
    if frames < 1 or batch < 1:
        raise ValueError(f"frames and batch must be >= 1, got frames={frames}, batch={batch}")
    d, q = config.hidden_size, config.num_queries
    g_h, g_w = height // ph, width // pw
    frame_tokens = config.num_prefix_tokens + g_h * g_w  # N before the query blocks
    # upscale: each block is a 2x2/2 transposed conv (a [D, 4D] matmul per input pixel) + 3x3 depthwise
    upscale, grid = 0, g_h * g_w
    for _ in range(config.num_upscale_blocks):
        upscale += 2 * grid * d * (4 * d)
        grid *= 4
        upscale += 2 * 9 * grid * d
    per_frame = {
        "patch_embed": 2 * g_h * g_w * (ph * pw * config.num_channels) * d,
        "encoder": config.query_start * _block_flops(config, frame_tokens),
        "query_blocks": config.num_blocks * _block_flops(config, frame_tokens + q),
        "heads": 2 * q * d * (config.num_labels + 1) + 3 * 2 * q * d * d,  # class head + 3-layer mask MLP
        "upscale": upscale,
        "mask_einsum": 2 * q * grid * d,
    }
    out = {k: v * frames * batch for k, v in per_frame.items()}
    out["query_updater"] = 2 * q * d * d * (frames - 1) * batch
    return {k: out[k] for k in FLOP_PARTS}


def flops(config: VideomtConfig, height: int, width: int, frames: int, batch: int = 1) -> int:
    """Total FLOPs of one forward pass over `batch` videos of `frames` frames (see `flops_breakdown`)."""
    return sum(flops_breakdown(config, height, width, frames, batch).values())
