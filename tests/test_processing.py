"""VideoProcessor vs. a torch re-creation of Hugging Face's VideomtVideoProcessor pipeline.

torchvision is not installed, so the reference is written with torch directly, step for step as
HF/torchvision do it: RGB conversion, `interpolate(antialias=True)` on uint8 (torch's CPU uint8
kernel, what torchvision uses on AVX2 CPUs) or on float + clamp + round (GPU path), then the fused
(x - 255 mean) / (255 std).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from videomt_jax.config import VideomtConfig
from videomt_jax.processing import IMAGENET_MEAN, IMAGENET_STD, VideoGeometry, VideoProcessor

MEAN = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
STD = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
BOUND = 0.03  # required parity, normalized units
ONE_LEVEL = 1.0 / 255.0 / min(IMAGENET_STD)  # one grey level in normalized units (0.0175)


def hf_reference(video: np.ndarray, size=(640, 640), mode="fixed", kernel="bilinear") -> np.ndarray:
    """(T, H, W, C) uint8 or float -> (T, h, w, 3) as HF's processor (torchvision backend)."""
    t = torch.from_numpy(np.ascontiguousarray(video)).permute(0, 3, 1, 2).contiguous()
    if t.shape[1] == 1:
        t = t.repeat(1, 3, 1, 1)
    if t.shape[1] == 4:
        if (t[:, 3] < 255).any():
            alpha = t[:, 3:] / 255.0
            t = (1 - alpha) * 255 + alpha * t[:, :3]
        else:
            t = t[:, :3]
    if tuple(t.shape[-2:]) != tuple(size):
        if t.dtype == torch.uint8 and mode == "fixed":
            t = F.interpolate(t, size, mode=kernel, antialias=True, align_corners=False)
        elif t.dtype == torch.uint8:
            t = F.interpolate(t.float(), size, mode=kernel, antialias=True, align_corners=False)
            t = t.clamp(0, 255).round().to(torch.uint8)
        else:
            t = F.interpolate(t.float(), size, mode=kernel, antialias=True, align_corners=False)
    out = (t.float() - MEAN * 255) / (STD * 255)
    return out.permute(0, 2, 3, 1).numpy()


def video(rng, t, h, w, c=3, dtype=np.uint8) -> np.ndarray:
    """Smooth gradients plus noise, so resizing is exercised on structure and on ties."""
    yy, xx = np.mgrid[0:h, 0:w]
    base = (yy * 255 // max(h - 1, 1) + xx * 127 // max(w - 1, 1)) % 256
    noise = rng.integers(0, 256, (t, h, w, c))
    return ((base[None, ..., None] + noise) // 2).astype(dtype)


SIZES = [(37, 53), (481, 855), (701, 333), (640, 640), (641, 639), (1080, 1920), (9, 1200)]


@pytest.mark.parametrize("hw", SIZES)
def test_parity_bilinear(hw):
    rng = np.random.default_rng(sum(hw))
    v = video(rng, 2, *hw)
    fixed = np.asarray(VideoProcessor()(v))[0]
    floaty = np.asarray(VideoProcessor(uint8_resize="float")(v))[0]
    assert fixed.shape == floaty.shape == (2, 640, 640, 3) and fixed.dtype == np.float32
    ref_fixed, ref_float = hf_reference(v, mode="fixed"), hf_reference(v, mode="float")
    assert np.abs(fixed - ref_fixed).max() < 1e-5  # torch's CPU uint8 kernel, bit for bit
    assert np.abs(fixed - ref_float).max() <= BOUND  # the required bound vs. the float path
    assert np.abs(floaty - ref_float).max() <= ONE_LEVEL + 1e-5
    assert np.mean(np.abs(floaty - ref_float) > 1e-5) < 1e-3  # only float32 summation-order ties differ


@pytest.mark.parametrize("hw,size", [((50, 70), (32, 96)), ((333, 200), (640, 640))])
def test_parity_bicubic_and_other_sizes(hw, size):
    v = video(np.random.default_rng(1), 1, *hw)
    out = np.asarray(VideoProcessor(size=size, resample="bicubic")(v))[0]
    assert np.abs(out - hf_reference(v, size, "fixed", "bicubic")).max() < 1e-5
    out = np.asarray(VideoProcessor(size=size, resample="bicubic", uint8_resize="float")(v))[0]
    assert np.abs(out - hf_reference(v, size, "float", "bicubic")).max() <= ONE_LEVEL + 1e-5


def test_gray_and_rgba_conversion():
    rng = np.random.default_rng(2)
    gray = video(rng, 2, 30, 41, c=1)
    rgb = np.repeat(gray, 3, axis=-1)
    proc = VideoProcessor(size=(48, 64))
    np.testing.assert_array_equal(proc(gray), proc(rgb))
    np.testing.assert_array_equal(proc(list(gray[..., 0])), proc(rgb))  # list of (H, W) frames
    opaque = np.concatenate([rgb, np.full_like(gray, 255)], axis=-1)
    np.testing.assert_array_equal(proc(opaque), proc(rgb))  # alpha dropped
    transparent = np.concatenate([rgb, rng.integers(0, 256, gray.shape).astype(np.uint8)], axis=-1)
    out = np.asarray(proc(transparent))[0]
    assert np.abs(out - hf_reference(transparent, (48, 64))).max() < 1e-5  # blended on white, float resize


def test_list_batch_and_float_inputs():
    rng = np.random.default_rng(3)
    a, b = video(rng, 3, 45, 60), video(rng, 3, 45, 60)
    proc = VideoProcessor(size=(32, 48))
    single = np.asarray(proc(a))
    assert single.shape == (1, 3, 32, 48, 3)
    np.testing.assert_array_equal(proc(list(a)), single)
    np.testing.assert_array_equal(proc([Image.fromarray(f) for f in a]), single)  # PIL frames
    batch = np.asarray(proc(np.stack([a, b])))
    assert batch.shape == (2, 3, 32, 48, 3)
    np.testing.assert_array_equal(batch[0], single[0])
    np.testing.assert_array_equal(batch[1], np.asarray(proc(b))[0])
    c = video(rng, 3, 70, 30)  # a list of videos of different sizes
    mixed = np.asarray(proc([a, c]))
    np.testing.assert_array_equal(mixed[1], np.asarray(proc(c))[0])
    np.testing.assert_array_equal(proc(a.astype(np.int64)), single)  # 0..255 integers
    as_float = np.asarray(proc(a.astype(np.float32)))[0]  # float: resized in float, not rounded
    assert np.abs(as_float - hf_reference(a.astype(np.float32), (32, 48))).max() < 1e-4
    no_norm = np.asarray(VideoProcessor(size=(45, 60), do_normalize=False)(a))[0]
    np.testing.assert_allclose(no_norm, a / 255.0, atol=1e-6)


def test_keep_aspect_geometry_and_values():
    rng = np.random.default_rng(4)
    v = video(rng, 2, 120, 213)
    proc = VideoProcessor(keep_aspect=True, shortest_edge=64, pad_multiple=16)
    out, geo = proc.preprocess(v)
    # hand-computed: scale 64/120, width 213*64/120 = 113.6 -> 114 (detectron2 rounding), pad to 16
    assert geo == (VideoGeometry((120, 213), (64, 114), (64, 128)),)
    out = np.asarray(out)[0]
    assert out.shape == (2, 64, 128, 3)
    assert np.abs(out[:, :, :114] - hf_reference(v, (64, 114))).max() < 1e-5
    assert np.all(out[:, :, 114:] == 0)
    np.testing.assert_array_equal(geo[0].crop_valid(out), out[:, :, :114])
    masks = np.zeros((2, 5, 16, 32))  # [T, Q, h, w] at 1/4 of the padded size
    assert geo[0].crop_valid(masks, axes=(-2, -1)).shape == (2, 5, 16, 29)
    capped = VideoProcessor(keep_aspect=True, shortest_edge=64, longest_edge=100, pad_multiple=32)
    assert capped.geometry(120, 213) == VideoGeometry((120, 213), (56, 100), (64, 128))  # 64*100/113.6 = 56.3
    videos, geos = proc.preprocess([v, video(rng, 2, 200, 100)])  # padded to the batch's largest
    assert videos.shape == (2, 2, 128, 128, 3) and geos[1].resized_size == (128, 64)
    assert proc.preprocess(v)[0].shape == proc(v).shape


def test_default_settings_equal_hf_processor_and_config():
    from transformers.models.videomt.video_processing_videomt import VideomtVideoProcessor

    hf = VideomtVideoProcessor().to_dict()
    assert VideoProcessor.from_hf_dict(hf) == VideoProcessor()
    assert VideoProcessor.from_hf_dict({"size": {"shortest_edge": 448}}).keep_aspect
    cfg = VideomtConfig(image_size=320, patch_size=16)
    assert VideoProcessor.from_config(cfg) == VideoProcessor(size=(320, 320), pad_multiple=16)


def test_from_pretrained(tmp_path):
    (tmp_path / "video_preprocessor_config.json").write_text('{"size": {"height": 32, "width": 48}, "resample": 3}')
    assert VideoProcessor.from_pretrained(tmp_path) == VideoProcessor(size=(32, 48), resample="bicubic")
    with pytest.raises(FileNotFoundError, match="no processor config"):
        VideoProcessor.from_pretrained(tmp_path / "missing")


@pytest.mark.parametrize(
    "frames,error,match",
    [
        (np.zeros((0, 8, 8, 3), np.uint8), ValueError, "empty video"),
        ([], ValueError, "empty input"),
        (np.zeros((8, 8, 3), np.uint8), ValueError, "ambiguous"),
        (np.zeros((2, 8), np.uint8), ValueError, r"\(T, H, W, C\)"),
        (np.zeros((1, 8, 8, 2), np.uint8), ValueError, "1, 3 or 4 channels"),
        (np.full((1, 8, 8, 3), 0.5, np.float32), ValueError, "already rescaled"),
        (np.full((1, 8, 8, 3), 300.0, np.float32), ValueError, "0..255"),
        (np.full((1, 8, 8, 3), 256, np.int32), ValueError, "0..255"),
        (np.zeros((1, 8, 8, 3), bool), TypeError, "dtype bool"),
        ([np.zeros((8, 8, 3), np.uint8), np.zeros((9, 8, 3), np.uint8)], ValueError, "share a shape"),
        ([np.zeros((2, 8, 8, 3), np.uint8), np.zeros((3, 8, 8, 3), np.uint8)], ValueError, "number of frames"),
    ],
)
def test_input_errors(frames, error, match):
    with pytest.raises(error, match=match):
        VideoProcessor(size=(16, 16))(frames)


def test_settings_errors_and_pixel_limit():
    with pytest.raises(ValueError, match="max_pixels"):
        VideoProcessor(max_pixels=100)(np.zeros((1, 11, 10, 3), np.uint8))
    for bad in (dict(resample="lanczos"), dict(uint8_resize="exact"), dict(size=(0, 4)), dict(std=(1, 0, 1))):
        with pytest.raises(ValueError):
            VideoProcessor(**bad)
    out = VideoProcessor(do_rescale=False, size=(4, 4))(np.full((1, 4, 4, 3), 0.5, np.float32))
    np.testing.assert_allclose(np.asarray(out)[0, 0, 0, 0], (0.5 - np.array(IMAGENET_MEAN)) / IMAGENET_STD, rtol=1e-6)
