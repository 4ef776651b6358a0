"""EoMT: the image segmenter VidEoMT grows from (HF `EomtForUniversalSegmentation`, `EomtDinov3...`).

The same ViT, queries and heads as `VideomtModel` (the same parameter tree, less `query_updater`),
run on every frame independently: the learned queries join the tokens before the last
`num_blocks` layers on every image, nothing propagates. Query blocks whose `attn_mask_probs` entry
is > 0 use EoMT's masked attention (`modeling/masking.py`), as HF's model does in eval mode; with
every entry 0 (released checkpoints) the query blocks run as one stack, exactly like VidEoMT's.
Like HF's loop (its `attention_mask` variable outlives the block that made it), a block with p = 0
that follows a masked block attends with that block's mask; the authors' EoMT instead unmasks it.
With masked blocks forming a suffix (EoMT anneals the first query block first) both agree.

Letters: B images (videos), T frames, H/W pixels, C channels, g grid, Q queries, P prefix tokens,
N = Q+P+g_h*g_w tokens, D hidden, K+1 classes, h/w mask grid.
"""

from __future__ import annotations

import operator
from typing import Any, ClassVar, cast

import flax.linen as nn
import jax
import jax.numpy as jnp

from videomt_jax.config import VideomtConfig
from videomt_jax.modeling.dinov3 import Rope, rope_tables
from videomt_jax.modeling.embeddings import Embeddings
from videomt_jax.modeling.heads import Heads
from videomt_jax.modeling.layers import REMAT_POLICIES, Block, BlockStack, layer_norm
from videomt_jax.modeling.masking import ATTN_MASK_RNG, query_patch_mask
from videomt_jax.modeling.outputs import VideomtOutput


def check_videos(config: VideomtConfig, videos: Any, interpolate_pos_encoding: bool) -> None:
    """Raise a clear error for input the model cannot take (shapes are static under jit)."""
    shape = getattr(videos, "shape", None)
    if shape is None or len(shape) != 5:
        raise ValueError(f"videos must be a 5-D array (B, T, H, W, C), got shape {shape}")
    b, t, h, w, c = shape
    if not jnp.issubdtype(videos.dtype, jnp.floating):
        raise TypeError(
            f"videos must be floating point (normalized pixels), got {videos.dtype}; run vm.VideoProcessor first"
        )
    if c != config.num_channels:
        raise ValueError(
            f"videos have {c} channels in the last axis; the config expects {config.num_channels} (B, T, H, W, C)"
        )
    if b == 0 or t == 0:
        raise ValueError(f"videos must hold at least one video and one frame, got B={b}, T={t}")
    ph, pw = config.patch_hw
    if h % ph or w % pw:
        raise ValueError(f"frame size {h}x{w} is not a multiple of the patch size {ph}x{pw}")
    # DINOv3's rotary tables are computed for every input grid: no flag needed.
    if (h, w) != config.image_hw and not interpolate_pos_encoding and config.backbone == "dinov2":
        raise ValueError(
            f"frame size {h}x{w} differs from the config's image_size {config.image_hw}; "
            "pass interpolate_pos_encoding=True to resample the position embeddings"
        )


class EomtModel(nn.Module):
    """`model.apply({"params": params}, images)` with images [B, T, H, W, C] (T = 1 for one image each)."""

    config: VideomtConfig
    deterministic: bool = True  # False turns on dropout / drop-path (needs a "dropout" rng)
    remat: str = "none"  # training: rematerialise blocks and heads (`layers.REMAT_POLICIES`), same numbers
    model_type: ClassVar[str] = "eomt"  # the `config.model_type` this module runs

    def setup(self) -> None:
        cfg = self.config
        if cfg.model_type != self.model_type:
            raise ValueError(
                f"{type(self).__name__} needs a config with model_type={self.model_type!r}, got {cfg.model_type!r}"
            )
        if self.remat not in REMAT_POLICIES:
            raise ValueError(f"remat must be one of {sorted(REMAT_POLICIES)}, got {self.remat!r}")
        self.embeddings = Embeddings(cfg, self.deterministic)
        if cfg.query_start > 0:
            self.encoder = BlockStack(cfg, cfg.query_start, self.deterministic, self.remat)
        self.query_encoder = BlockStack(cfg, cfg.num_blocks, self.deterministic, self.remat)
        self.layernorm = layer_norm(cfg, "layernorm")
        self.query = self.param("query", nn.initializers.normal(1.0), (cfg.num_queries, cfg.hidden_size), jnp.float32)
        self.heads = Heads(cfg)

    def _masked_query_blocks(self, x: jax.Array, rope: Rope | None, grid_hw: tuple[int, int]) -> jax.Array:
        """x [B, N, D] through the query blocks, one at a time, masking where attn_mask_probs > 0."""
        cfg = self.config
        probs = cfg.attn_mask_probs or (0.0,) * cfg.num_blocks
        if self.is_initializing() or not any(p > 0 for p in probs):
            return self.query_encoder(x, rope)[0]  # at init this also creates the stacked block params
        if not self.deterministic:
            raise ValueError("EoMT masked attention (attn_mask_probs > 0) runs in inference mode only")
        if any(0 < p < 1 for p in probs) and not self.has_rng(ATTN_MASK_RNG):
            raise ValueError(
                f"attn_mask_probs {probs} has values in (0, 1): HF drops masks at random there; "
                f"pass rngs={{'{ATTN_MASK_RNG}': key}} to apply"
            )
        stacked = self.query_encoder.variables["params"]["layers"]["block"]  # leaves [num_blocks, ...]
        mask = None  # as HF: a block with p = 0 after a masked one keeps using the last mask made
        for i, prob in enumerate(probs):
            if prob > 0:  # predict from the tokens entering block i, as HF's `predict(layernorm(x))`
                _, mask_logits = self.heads(self.layernorm(x), grid_hw)  # [B, Q, h, w]
                key = self.make_rng(ATTN_MASK_RNG) if prob < 1 else None
                mask = query_patch_mask(mask_logits, grid_hw, cfg.num_prefix_tokens, prob, key)  # [B, N, N]
            layer = jax.tree.map(operator.itemgetter(i), stacked)  # block i's leaves
            # a pure function of the slice; `apply` without `mutable` returns the output alone
            x = cast(jax.Array, Block(cfg, parent=None).apply({"params": layer}, x, True, rope, mask))
        return x

    def __call__(
        self, images: jax.Array, *, interpolate_pos_encoding: bool = False, return_hidden_states: bool = False
    ) -> VideomtOutput:
        """images [B, T, H, W, C] -> VideomtOutput ([B, T, ...]); every frame is segmented on its own.

        `return_hidden_states` adds the tokens after the embeddings and after the plain encoder layers.
        """
        cfg = self.config
        check_videos(cfg, images, interpolate_pos_encoding)
        b, t, h, w, c = images.shape
        ph, pw = cfg.patch_hw
        grid_hw = (h // ph, w // pw)
        tokens = self.embeddings(images.reshape(b * t, h, w, c))  # [B*T, P+g*g, D]
        rope = rope_tables(cfg, grid_hw)
        hidden = [tokens]
        if cfg.query_start > 0:
            tokens, pre_outputs = self.encoder(tokens, rope)  # [B*T, P+g*g, D]
            hidden += list(pre_outputs) if return_hidden_states else []
        queries = jnp.broadcast_to(self.query, (b * t, *self.query.shape))  # [B*T, Q, D]
        x = self._masked_query_blocks(jnp.concatenate([queries, tokens], axis=1), rope, grid_hw)  # [B*T, N, D]
        normed = self.layernorm(x)
        class_logits, mask_logits = self.heads(normed, grid_hw)  # [B*T, Q, K+1], [B*T, Q, h, w]
        return VideomtOutput(
            class_logits=class_logits.reshape(b, t, *class_logits.shape[1:]),
            mask_logits=mask_logits.reshape(b, t, *mask_logits.shape[1:]),
            last_hidden_state=normed.reshape(b, t, *normed.shape[1:]),
            hidden_states=tuple(hidden) if return_hidden_states else None,
            mask_stride=h // mask_logits.shape[-2],
        )
