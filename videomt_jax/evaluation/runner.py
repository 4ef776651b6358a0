"""What the evaluation protocols share: running any model `load_pretrained` reads chunk by chunk, and
the memory a call needs, estimated before the work against what the machine has.

- `model_streamer`: VidEoMT streams with its queries carried over (`VideoStreamer`); an image model
  (EoMT) segments every frame on its own behind the same `init` / `step` interface (its state is None).
- `call_bytes` / `check_fits`: an option that would need more memory than the machine has (e.g.
  `eval --batch-size 100000`) is refused in one line that says what it needs and what there is.

Letters: B clips, T frames, H/W frame size, N tokens per frame, Q queries, D hidden.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jax

from videomt_jax.config import IMAGE_MODEL_TYPES, VideomtConfig
from videomt_jax.modeling.family import model_for
from videomt_jax.modeling.outputs import VideomtOutput
from videomt_jax.modeling.videomt import VideomtModel, inference_params
from videomt_jax.modeling.xla_options import jit_model
from videomt_jax.streaming import VideoStreamer
from videomt_jax.utils.memory import GIB, device_memory

# float32 [Q, H, W] arrays alive at once in the post-processing (sigmoid masks, scores x masks, the
# binary masks, the video-level top-k masks)
POST_COPIES = 4
LAYER_WIDTHS = 4  # [N, D] float32 arrays alive in one encoder layer besides its MLP (input, q / k / v)


def frame_by_frame(config: VideomtConfig) -> bool:
    """Whether `config` is an image model, run on every frame on its own."""
    return config.model_type in IMAGE_MODEL_TYPES


@dataclass
class FrameStreamer:
    """`VideoStreamer`'s interface for an image model: `step` segments each frame of the chunk on its own."""

    config: VideomtConfig
    params: Any
    interpolate_pos_encoding: bool = False

    def __post_init__(self) -> None:
        model, interp = model_for(self.config), self.interpolate_pos_encoding
        self._params = inference_params(self.config, self.params)  # kernels cast once, as VideoStreamer
        self._apply = jit_model(lambda p, x: model.apply({"params": p}, x, interpolate_pos_encoding=interp))

    def init(self, batch_size: int = 1) -> None:
        return None

    def step(self, state: None, chunk: Any) -> tuple[VideomtOutput, None]:
        """chunk [B, t, H, W, C] normalised floats -> (outputs for its t frames, None)."""
        return self._apply(self._params, chunk), state


def model_streamer(config: VideomtConfig, params: Any, interpolate_pos_encoding: bool = False) -> Any:
    """A `VideoStreamer` for VidEoMT, a `FrameStreamer` for an image model."""
    if frame_by_frame(config):
        return FrameStreamer(config, params, interpolate_pos_encoding)
    return VideoStreamer(VideomtModel(config), params, interpolate_pos_encoding=interpolate_pos_encoding)


def call_bytes(config: VideomtConfig, batch: int, frames: int, hw: tuple[int, int]) -> int:
    """An estimate of the peak bytes of one evaluation call: `batch` clips of `frames` frames at
    `hw` through the model (one layer's activations and attention of every frame) and the
    per-frame post-processing at the frame size (the largest part for small models)."""
    h, w = hw
    (ph, pw), q, d = config.patch_hw, config.num_queries, config.hidden_size
    tokens = -(-h // ph) * -(-w // pw) + config.num_prefix_tokens + q  # N
    per_frame = (
        h * w * 3 * (1 + 4)  # uint8 frames and normalised float32 pixels
        + tokens * (LAYER_WIDTHS * d + 2 * config.mlp_hidden_size) * 4  # one layer's activations
        + 2 * config.num_attention_heads * tokens * tokens * 4  # attention scores and probabilities
        + POST_COPIES * q * h * w * 4  # per-query masks at the frame size
    )
    return int(batch) * int(frames) * per_frame


def check_fits(need: int, what: str, advice: str) -> None:
    """ValueError, before the work, when `need` bytes exceed the free memory (`utils.memory.device_memory`)."""
    have, where = device_memory(jax.devices()[0], free=True)
    if have is not None and need > have:
        raise ValueError(
            f"{what} needs about {need / GIB:.1f} GiB (an estimate), but the {where} is {have / GIB:.1f} GiB; {advice}"
        )
