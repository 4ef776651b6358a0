"""Test (and notebook) helpers around the Hugging Face reference model.

Build a `transformers.VideomtForUniversalSegmentation` from our `VideomtConfig` with non-trivial
random weights (random biases, layer scales != 1, random norms, a random query updater), run it on
our channels-last videos, and return its outputs batch-major like ours. Also rewrite an HF state
dict into the authors' `.pth` key layout (written here from the authors' module names, independently
of `videomt_jax.weights`), so the `.pth` converter can be checked against the HF model.

Letters: B videos, T frames, H/W pixels, C channels, Q queries, K+1 classes, N tokens, D hidden,
h/w mask grid, F MLP hidden.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping

import numpy as np
import torch
import transformers

from videomt_jax.config import VideomtConfig

HF_ONLY_KEYS = ("model_type", "architectures", "label2id")


def hf_config(config: VideomtConfig, attn_implementation: str = "eager") -> transformers.VideomtConfig:
    data = {k: v for k, v in config.to_hf_dict().items() if k not in HF_ONLY_KEYS}
    hf = transformers.VideomtConfig(**data)
    hf._attn_implementation = attn_implementation
    return hf


def _fan_in(p: torch.Tensor, transposed: bool) -> int:
    # Linear/Conv2d [O, I, ...]: I * taps; ConvTranspose2d [I, O, a, b]: each output sums over I only.
    return p.shape[0] if transposed else int(np.prod(p.shape[1:]))


# (regex on the parameter name, init(param, generator)), first match wins.
def _init_rules() -> list[tuple[str, Callable[[torch.Tensor, torch.Generator], torch.Tensor]]]:
    def normal(std: float, mean: float = 0.0):
        return lambda p, g: mean + std * torch.randn(p.shape, generator=g)

    def uniform(lo: float, hi: float):
        return lambda p, g: lo + (hi - lo) * torch.rand(p.shape, generator=g)

    def scaled(transposed: bool):
        return lambda p, g: torch.randn(p.shape, generator=g) / math.sqrt(max(_fan_in(p, transposed), 1))

    return [
        (r".*lambda1$", uniform(0.3, 1.2)),  # layer scales, not 1
        (r".*(norm1|norm2|layernorm|layernorm2d)\.weight$", normal(0.2, 1.0)),
        (r".*\.bias$", normal(0.2)),
        (r"^embeddings\.(cls_token|register_tokens|mask_token|position_embeddings\.weight)$", normal(0.5)),
        (r"^query\.weight$", normal(1.0)),
        (r".*conv1\.weight$", scaled(transposed=True)),  # ConvTranspose2d
        (r".*weight$", scaled(transposed=False)),  # Linear, Conv2d, query_updater
    ]


@torch.no_grad()
def randomize_(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Fill every parameter (not the buffers) with seeded random values of sensible scale."""
    gen = torch.Generator().manual_seed(seed)
    rules = _init_rules()
    for name, param in model.named_parameters():
        init = next(fn for pattern, fn in rules if re.match(pattern, name))
        param.copy_(init(param, gen).to(param.dtype))
    return model


def build_hf_model(config: VideomtConfig, seed: int = 0, attn_implementation: str = "eager"):
    """An HF VidEoMT (eval mode, float32) for `config` with non-trivial seeded random weights."""
    torch.manual_seed(seed)
    model = transformers.VideomtForUniversalSegmentation(hf_config(config, attn_implementation))
    return randomize_(model, seed).eval()


def to_hf_pixels(videos: np.ndarray) -> torch.Tensor:
    """[B, T, H, W, C] (ours) -> [B, T, C, H, W] (HF)."""
    return torch.from_numpy(np.ascontiguousarray(videos, np.float32)).permute(0, 1, 4, 2, 3)


def frame_major_to_batch_major(x: torch.Tensor | np.ndarray, batch: int) -> np.ndarray:
    """HF stacks frames frame-major ([T*B, ...], index t*B + b); ours are [B, T, ...]."""
    x = np.asarray(x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else x)
    return x.reshape(-1, batch, *x.shape[1:]).swapaxes(0, 1)


@torch.no_grad()
def run_hf(model, videos: np.ndarray) -> dict[str, np.ndarray]:
    """HF outputs for our videos [B, T, H, W, C], batch-major:
    class_logits [B, T, Q, K+1], mask_logits [B, T, Q, h, w], last_hidden_state [B, T, N, D]."""
    out = model(pixel_values_videos=to_hf_pixels(videos))
    b = videos.shape[0]
    return {
        "class_logits": frame_major_to_batch_major(out.class_queries_logits, b),
        "mask_logits": frame_major_to_batch_major(out.masks_queries_logits, b),
        "last_hidden_state": frame_major_to_batch_major(out.last_hidden_state, b),
    }


def random_videos(config: VideomtConfig, batch: int, frames: int, seed: int = 0) -> np.ndarray:
    h, w = config.image_hw
    return np.random.default_rng(seed).standard_normal((batch, frames, h, w, config.num_channels)).astype(np.float32)


def hf_to_original_state_dict(
    hf_state_dict: Mapping[str, torch.Tensor], config: VideomtConfig, swiglu: str = "packed"
) -> dict[str, torch.Tensor]:
    """An HF state dict rewritten in the authors' layout (detectron2 meta-arch + timm DINOv2-reg).

    swiglu: "packed" (timm SwiGLUPacked: `mlp.fc1` = [gate; up], silu on the first half) or
    "split" (timm SwiGLU: `mlp.fc1_g` gate, `mlp.fc1_x` up). `attn_mask_probs` is written as zeros,
    as training leaves it (annealed), so loaders must not depend on its values.
    """
    sd = {k: v.detach().clone() for k, v in hf_state_dict.items()}
    vit, head = "backbone.encoder.backbone.", "backbone."
    out = {
        f"{vit}cls_token": sd["embeddings.cls_token"],
        f"{vit}pos_embed": sd["embeddings.position_embeddings.weight"][None],
        f"{vit}patch_embed.proj.weight": sd["embeddings.patch_embeddings.projection.weight"],
        f"{vit}patch_embed.proj.bias": sd["embeddings.patch_embeddings.projection.bias"],
        f"{vit}norm.weight": sd["layernorm.weight"],
        f"{vit}norm.bias": sd["layernorm.bias"],
        f"{head}q.weight": sd["query.weight"],
        f"{head}attn_mask_probs": torch.zeros(config.num_blocks),
        "criterion.empty_weight": torch.cat([torch.ones(config.num_labels), torch.tensor([config.no_object_weight])]),
    }
    if config.num_register_tokens:
        out[f"{vit}reg_token"] = sd["embeddings.register_tokens"]
    renames = {
        "query_updater": "query_updater",
        "class_head": "class_predictor",
        "mask_head.0": "mask_head.fc1",
        "mask_head.2": "mask_head.fc2",
        "mask_head.4": "mask_head.fc3",
    }
    for i in range(config.num_upscale_blocks):
        renames[f"upscale.{i}.conv1"] = f"upscale_block.block.{i}.conv1"
        renames[f"upscale.{i}.norm"] = f"upscale_block.block.{i}.layernorm2d"
        out[f"{head}upscale.{i}.conv2.weight"] = sd[f"upscale_block.block.{i}.conv2.weight"]
    for i in range(config.num_hidden_layers):
        hf, ours = f"layers.{i}.", f"{vit}blocks.{i}."
        attn = [sd[f"{hf}attention.{p}_proj.weight"] for p in "qkv"]
        out[f"{ours}attn.qkv.weight"] = torch.cat(attn, dim=0)
        out[f"{ours}attn.qkv.bias"] = torch.cat([sd[f"{hf}attention.{p}_proj.bias"] for p in "qkv"])
        out[f"{ours}ls1.gamma"] = sd[f"{hf}layer_scale1.lambda1"]
        out[f"{ours}ls2.gamma"] = sd[f"{hf}layer_scale2.lambda1"]
        for a, b in (("norm1", "norm1"), ("norm2", "norm2"), ("attn.proj", "attention.out_proj")):
            for p in ("weight", "bias"):
                out[f"{ours}{a}.{p}"] = sd[f"{hf}{b}.{p}"]
        for p in ("weight", "bias"):
            if not config.use_swiglu_ffn:
                out[f"{ours}mlp.fc1.{p}"] = sd[f"{hf}mlp.fc1.{p}"]
                out[f"{ours}mlp.fc2.{p}"] = sd[f"{hf}mlp.fc2.{p}"]
                continue
            gate, up = sd[f"{hf}mlp.gate_proj.{p}"], sd[f"{hf}mlp.up_proj.{p}"]
            if swiglu == "packed":
                out[f"{ours}mlp.fc1.{p}"] = torch.cat([gate, up], dim=0)
            else:
                out[f"{ours}mlp.fc1_g.{p}"], out[f"{ours}mlp.fc1_x.{p}"] = gate, up
            out[f"{ours}mlp.fc2.{p}"] = sd[f"{hf}mlp.down_proj.{p}"]
    for theirs, hf_name in renames.items():
        for p in ("weight", "bias"):
            out[f"{head}{theirs}.{p}"] = sd[f"{hf_name}.{p}"]
    return out
