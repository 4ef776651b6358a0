"""What `segment` will hold in memory, estimated before the work and checked against the machine.

The footprint is linear in the frames of a chunk: a fixed part (the process with its compiled
programs, the weights twice, one frame's post-processing piece) plus, per frame of a chunk, every
copy `segment` keeps of it (decoded uint8 frames and their padded copy, the model input and
activations, the mask logits, the maps, HF-style results and overlay frames; with `--video-level`
the video-level masks of the second pass). The per-pixel costs below are byte counts of those
arrays; `PROCESS_BASE` and `SLACK` were fitted on CPU runs (the README's measured figures).

Letters: t frames of a chunk, H/W frame size, h_in/w_in model input, h/w mask grid, Q queries,
K classes, N tokens, D hidden size, N_top video-level instance tracks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from videomt_jax.utils.memory import GIB

FLOAT = 4
PROCESS_BASE = 700 * 2**20  # python + jax + the compiled programs of a small model (measured ~650-900 MiB)
SLACK = 1.25  # allocator and XLA temporaries over the arrays counted
# bytes per frame pixel of a chunk: decoded frame + stacked + padded copy (3 x 3 uint8), device copy (3),
# maps: post-processed int32 on device and host (8), HF int64 (8), track map int32 (4), overlay RGB (3)
FRAME_BYTES_PER_PIXEL = 9 + 3 + 8 + 8 + 4 + 3
VIDEO_LEVEL_BYTES_PER_PIXEL = 3 + 3 + 4 + 3  # second pass: decoded frame, padded, map, overlay (+ masks)
VIDEO_LEVEL_TRACKS = 20  # masks per pixel of a video-level instance map (the authors' top-k)
ACTIVATION_COPIES = 8  # tokens x hidden arrays alive in a block (residual, norms, MLP at mlp_ratio 4)


@dataclass(frozen=True)
class Footprint:
    """Estimated peak bytes of a `segment` run: fixed + per_frame x frames per chunk."""

    fixed: int
    per_frame: int

    def total(self, chunk: int) -> int:
        return self.fixed + self.per_frame * chunk

    def max_chunk(self, budget: int) -> int:
        """The largest chunk that fits `budget` bytes (0: not even one frame)."""
        return max(0, (budget - self.fixed) // max(self.per_frame, 1))


def footprint(
    config: Any,
    params_bytes: int,
    frame_hw: tuple[int, int],
    input_hw: tuple[int, int],
    *,
    video_level: bool,
    piece_bytes: int,
    video_level_piece: int = 1,
) -> Footprint:
    """The footprint of segmenting frames of `frame_hw` through a model input of `input_hw`.

    piece_bytes: the post-processing temporaries of one frame (bounded by `postprocess.common`);
    video_level_piece: frames per video-level map of the second pass."""
    height, width = frame_hw
    pixels = height * width
    ph, pw = config.patch_hw
    stride = config.mask_stride
    grid = (input_hw[0] // stride) * (input_hw[1] // stride)
    tokens = (input_hw[0] // ph) * (input_hw[1] // pw) + config.num_queries + config.num_prefix_tokens
    q, k1 = config.num_queries, len(config.id2label or {}) + 1
    per_frame = (
        pixels * FRAME_BYTES_PER_PIXEL
        + input_hw[0] * input_hw[1] * 3 * FLOAT * 2  # model input (and its padded copy)
        + tokens * config.hidden_size * FLOAT * ACTIVATION_COPIES
        + tokens * tokens * config.num_attention_heads * FLOAT  # attention weights
        + (q * grid + q * k1) * FLOAT * 3  # outputs on device, on the host, cut to the real frames
    )
    fixed = PROCESS_BASE + 2 * params_bytes + piece_bytes
    if video_level:  # the spilled logits stay on disk; the second pass works `video_level_piece` frames at a time
        per_frame += q * grid * FLOAT
        fixed += video_level_piece * pixels * (VIDEO_LEVEL_BYTES_PER_PIXEL + min(q, VIDEO_LEVEL_TRACKS))
    return Footprint(int(fixed * SLACK), int(math.ceil(per_frame * SLACK)))


def check_fits(fp: Footprint, chunk: int, what: str, budget: int | None) -> None:
    """One-line ValueError when `chunk` frames at a time need more than `budget` bytes (None: unknown, pass)."""
    if budget is None:
        return
    need = fp.total(chunk)
    if need <= budget:
        return
    fits = fp.max_chunk(budget)
    advice = f"use --chunk {fits} or less" if fits >= 1 else "use a smaller video or a machine with more memory"
    raise ValueError(
        f"{what} with --chunk {chunk} needs about {need / GIB:.1f} GiB "
        f"({fp.per_frame / 2**20:.1f} MiB per frame of a chunk + {fp.fixed / GIB:.1f} GiB), "
        f"this machine has {budget / GIB:.1f} GiB available; {advice}"
    )
