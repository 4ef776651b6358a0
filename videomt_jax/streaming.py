"""Streaming: feed a video in chunks of any size, carrying the propagated queries between calls.

Letters: B videos, t frames in a chunk, H/W pixels, C channels, Q queries, D hidden.

The whole state of a video between two calls is a `StreamState` (the query tokens that left the
last encoder layer on the latest frame, and whether a frame was seen). Feeding a video chunk by
chunk equals one call on the whole video, and memory stays flat however long the video is.

    streamer = VideoStreamer(model, params)
    state = streamer.init(batch_size=1)
    for chunk in chunks:                       # chunk [B, t, H, W, C], t may vary
        out, state = streamer.step(state, chunk)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import jax
import numpy as np

from videomt_jax.modeling.outputs import StreamState, VideomtOutput
from videomt_jax.modeling.videomt import VideomtModel, inference_params, init_state
from videomt_jax.modeling.xla_options import jit_model


@dataclass
class VideoStreamer:
    """Jitted chunk step with the state buffers donated (updated in place on device)."""

    model: VideomtModel
    params: Any
    interpolate_pos_encoding: bool = False
    _step: Callable = field(init=False, repr=False)
    _run_params: Any = field(init=False, repr=False)

    def __post_init__(self) -> None:
        model, interp = self.model, self.interpolate_pos_encoding
        self._run_params = inference_params(model.config, self.params)  # kernels cast once, not per call

        def step(params: Any, state: StreamState, chunk: jax.Array) -> tuple[VideomtOutput, StreamState]:
            out = model.apply({"params": params}, chunk, state, interpolate_pos_encoding=interp)
            if not isinstance(out, VideomtOutput) or out.state is None:  # checked once, while tracing
                raise TypeError(f"{type(model).__name__} returned no VideomtOutput with a stream state")
            return dataclasses.replace(out, state=None, last_hidden_state=None), out.state  # flax's .replace, typed

        self._step = jit_model(step, donate_argnums=(1,))

    def init(self, batch_size: int = 1) -> StreamState:
        return init_state(self.model.config, batch_size)

    def step(self, state: StreamState, chunk: Any) -> tuple[VideomtOutput, StreamState]:
        """chunk [B, t, H, W, C] normalized floats -> (outputs for its t frames, next state)."""
        chunk = jax.numpy.asarray(chunk)
        if chunk.ndim != 5:
            raise ValueError(f"a chunk must be 5-D (B, t, H, W, C), got shape {chunk.shape}")
        if chunk.shape[0] != state.queries.shape[0]:
            raise ValueError(f"chunk batch {chunk.shape[0]} differs from the state's batch {state.queries.shape[0]}")
        return self._step(self._run_params, state, chunk)

    def run(self, chunks: Iterable[Any], state: StreamState | None = None) -> Iterator[VideomtOutput]:
        """Yield one output per chunk; the state flows through. Outputs are moved to host memory."""
        for chunk in chunks:
            chunk = np.asarray(chunk)
            if state is None:
                state = self.init(chunk.shape[0])
            out, state = self.step(state, chunk)
            yield jax.device_get(out)


def pad_frames(frames: np.ndarray, length: int, axis: int = 0) -> np.ndarray:
    """A short last chunk padded to `length` frames along `axis` with copies of its last frame.

    Every call then has one shape per video size (one compile); the copies come after everything
    kept, so the recurrence of the real frames is unchanged and the caller drops their outputs.
    """
    n = frames.shape[axis]
    if n > length:
        raise ValueError(f"a chunk of {n} frames is longer than the window of {length}")
    if n == length:
        return frames
    last = np.take(frames, [n - 1], axis=axis)
    return np.concatenate([frames, np.repeat(last, length - n, axis=axis)], axis=axis)


def split_chunks(videos: Any, chunk_size: int) -> Iterator[np.ndarray]:
    """[B, T, ...] -> chunks [B, <=chunk_size, ...] along time."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    for start in range(0, videos.shape[1], chunk_size):
        yield videos[:, start : start + chunk_size]
