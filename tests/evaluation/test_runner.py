"""`videomt_jax.evaluation.runner`: image models stream frame by frame behind VideoStreamer's interface
(so every protocol runs them), and the memory estimate of an evaluation call scales as it should.

Letters: B clips, T frames, H/W pixels.
"""

from __future__ import annotations

import numpy as np

from tests.helpers.serving import CONFIG, random_params
from videomt_jax.evaluation.runner import FrameStreamer, call_bytes, check_fits, model_streamer
from videomt_jax.streaming import VideoStreamer


def test_an_image_model_streams_every_frame_on_its_own():
    config = CONFIG.replace(model_type="eomt")
    assert isinstance(model_streamer(CONFIG, random_params(CONFIG)), VideoStreamer)
    streamer = model_streamer(config, random_params(config))
    assert isinstance(streamer, FrameStreamer)
    video = np.random.default_rng(0).standard_normal((2, 2, *config.image_hw, 3)).astype(np.float32)  # [B, T, H, W, 3]
    state = streamer.init(2)
    out, state = streamer.step(state, video)
    swapped, state = streamer.step(state, video[:, ::-1])  # after a chunk, with the frames in the other order
    # each frame's logits depend on that frame alone: nothing is carried across frames or chunks
    np.testing.assert_allclose(swapped.mask_logits[:, ::-1], out.mask_logits, rtol=0, atol=1e-6)
    assert np.abs(np.asarray(out.mask_logits[:, 0] - out.mask_logits[:, 1])).max() > 1e-3  # the frames differ


def test_call_estimate_scales_with_clips_and_frames_and_refuses_what_does_not_fit():
    one = call_bytes(CONFIG, 1, 1, (64, 64))
    assert call_bytes(CONFIG, 8, 5, (64, 64)) == 40 * one
    assert call_bytes(CONFIG, 1, 1, (128, 128)) > 4 * one  # attention grows faster than the pixels
    check_fits(one, "one frame", "")  # a few MiB fit anywhere
    try:
        check_fits(2**60, "an exabyte", "do less")
    except ValueError as e:
        assert str(e).startswith("an exabyte needs about 1073741824.0 GiB (an estimate), but the ")
        assert str(e).endswith("; do less")
    else:
        raise AssertionError("an exabyte was said to fit")
