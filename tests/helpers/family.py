"""Test helpers for the VidEoMT family: HF EoMT / EoMT-DINOv3 references with random weights.

`reference_videomt_dinov3` assembles a DINOv3 VidEoMT from HF's EoMT-DINOv3 layers following the
authors' forward (tue-mps/videomt `videomt/modeling/backbone/videomt.py`, DINOv3 path): embeddings
and rotary tables from the frame, plain layers on all frames, then per frame the queries
(learned at t = 0, `query_updater(previous output queries) + learned` after) concatenated *before*
CLS, registers and patches, the query layers, the final LayerNorm and `predict`. The rotary tables
cover the trailing patch tokens only, so queries, CLS and registers are not rotated.

Letters: B videos, T frames, H/W pixels, C channels, Q queries, K+1 classes, N tokens, D hidden.
"""

from __future__ import annotations

import functools

import jax
import numpy as np
import torch
import transformers

from tests.helpers.hf import randomize_, to_hf_pixels
from videomt_jax.config import VideomtConfig
from videomt_jax.modeling.family import model_for

OUTPUTS = ("class_logits", "mask_logits")


@functools.cache
def jitted_forward(config: VideomtConfig):
    """The jitted forward of `model_for(config)`, one per config."""
    return jax.jit(lambda p, x: model_for(config).apply({"params": p}, x))


def max_logit_diff(out, ref: dict) -> float:
    """Largest |ours - reference| over the class and mask logits."""
    return max(float(np.abs(np.asarray(getattr(out, k)) - ref[k]).max()) for k in OUTPUTS)


def eomt_hf_config(kind: str, **fields) -> transformers.PretrainedConfig:
    """An HF EomtConfig ("eomt") or EomtDinov3Config ("eomt_dinov3"), eager attention."""
    cls = {"eomt": transformers.EomtConfig, "eomt_dinov3": transformers.EomtDinov3Config}[kind]
    config = cls(**fields)
    config._attn_implementation = "eager"
    return config


def build_eomt(kind: str, seed: int = 0, attn_mask_probs: tuple[float, ...] | None = None, **fields):
    """An HF EoMT / EoMT-DINOv3 (eval, float32) with seeded non-trivial random weights."""
    torch.manual_seed(seed)
    model_cls = {
        "eomt": transformers.EomtForUniversalSegmentation,
        "eomt_dinov3": transformers.EomtDinov3ForUniversalSegmentation,
    }[kind]
    model = randomize_(model_cls(eomt_hf_config(kind, **fields)), seed).eval()
    probs = attn_mask_probs if attn_mask_probs is not None else (0.0,) * model.config.num_blocks
    model.attn_mask_probs.copy_(torch.tensor(probs, dtype=torch.float32))
    return model


def random_updater(hidden: int, seed: int) -> torch.nn.Linear:
    gen = torch.Generator().manual_seed(seed + 1000)
    layer = torch.nn.Linear(hidden, hidden)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(hidden, hidden, generator=gen) / np.sqrt(hidden))
        layer.bias.copy_(0.2 * torch.randn(hidden, generator=gen))
    return layer


@torch.no_grad()
def reference_videomt_dinov3(model, updater: torch.nn.Linear, videos: np.ndarray) -> dict[str, np.ndarray]:
    """The authors' DINOv3 VidEoMT forward on HF EoMT-DINOv3 layers; outputs batch-major [B, T, ...]."""
    cfg = model.config
    b, t = videos.shape[:2]
    pixels = to_hf_pixels(videos).flatten(0, 1)  # [B*T, C, H, W], batch-major
    hidden = model.embeddings(pixels)  # [B*T, P+G, D]
    rope = model.rope_embeddings(pixels)  # (cos, sin) [G, E]
    start = cfg.num_hidden_layers - cfg.num_blocks
    for layer in model.layers[:start]:
        hidden = layer(hidden, position_embeddings=rope)
    hidden = hidden.view(b, t, *hidden.shape[1:])
    learned = model.query.weight[None].expand(b, -1, -1)
    queries, classes, masks, normed_all = learned, [], [], []
    for i in range(t):
        x = torch.cat([queries, hidden[:, i]], dim=1)  # queries first, then CLS, registers, patches
        for layer in model.layers[start:]:
            x = layer(x, position_embeddings=rope)
        queries = updater(x[:, : cfg.num_queries]) + learned
        normed = model.layernorm(x)
        mask_logits, class_logits = model.predict(normed)
        classes.append(class_logits)
        masks.append(mask_logits)
        normed_all.append(normed)
    stack = lambda xs: torch.stack(xs, dim=1).numpy()
    return {"class_logits": stack(classes), "mask_logits": stack(masks), "last_hidden_state": stack(normed_all)}


@torch.no_grad()
def run_eomt(model, images: np.ndarray) -> dict[str, np.ndarray]:
    """HF EoMT outputs for images [B, 1, H, W, C] as [B, 1, ...]."""
    out = model(pixel_values=to_hf_pixels(images)[:, 0])
    return {
        "class_logits": out.class_queries_logits.numpy()[:, None],
        "mask_logits": out.masks_queries_logits.numpy()[:, None],
        "last_hidden_state": out.last_hidden_state.numpy()[:, None],
    }


def numpy_state_dict(model: torch.nn.Module, extra: dict[str, torch.nn.Module] | None = None) -> dict[str, np.ndarray]:
    """A torch model's state dict as numpy, plus `extra` modules' parameters under their names."""
    out = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
    for name, module in (extra or {}).items():
        out.update({f"{name}.{k}": v.detach().numpy().copy() for k, v in module.state_dict().items()})
    return out


def random_images(config: VideomtConfig, batch: int, frames: int, seed: int = 0, size: tuple[int, int] | None = None):
    h, w = size or config.image_hw
    return np.random.default_rng(seed).standard_normal((batch, frames, h, w, config.num_channels)).astype(np.float32)
