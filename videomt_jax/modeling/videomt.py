"""VidEoMT: a ViT whose last `num_blocks` layers carry object queries from frame to frame.

Letters: B videos, T frames, H/W pixels, C channels, g grid (patches per side), Q queries,
P prefix tokens (CLS + registers), N = Q + P + g_h*g_w tokens, D hidden, K+1 classes,
h/w mask grid, A auxiliary predictions (one per query block), L layers.

Blocks [0, L - num_blocks) run on all B*T frames at once; the rest run inside a scan over frames:
frame 0 starts from the learned queries, frame t > 0 from
`query_updater(queries leaving the last block at t-1) + learned queries`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from videomt_jax.config import VideomtConfig
from videomt_jax.modeling.content import content_grid, key_mask, rescale_factor, rope_tables_traced
from videomt_jax.modeling.dinov3 import Rope, rope_tables
from videomt_jax.modeling.eomt import EomtModel, check_videos
from videomt_jax.modeling.layers import REMAT_POLICIES, dense
from videomt_jax.modeling.outputs import StreamState, VideomtOutput

# Frames per iteration of the frame loop: short clips (online, 8-frame clips) become straight-line
# code with no device-side loop; long chunks stay a loop so compile time does not grow with T.
FRAME_UNROLL = 8


def init_state(config: VideomtConfig, batch_size: int) -> StreamState:
    """The state before the first frame of a video."""
    return StreamState(
        queries=jnp.zeros((batch_size, config.num_queries, config.hidden_size), jnp.float32),
        started=jnp.zeros((batch_size,), bool),
    )


class VideomtModel(EomtModel):
    """`model.apply({"params": params}, videos)` with videos [B, T, H, W, C] normalized floats.

    EoMT's modules (same names, same parameter tree) plus the `query_updater`; `__call__` replaces
    EoMT's per-image pass by the frame loop.
    """

    model_type: ClassVar[str] = "videomt"

    def setup(self) -> None:
        super().setup()
        self.query_updater = dense(self.config, self.config.hidden_size, "query_updater")

    # ------------------------------------------------------------------ one frame
    def _frame(
        self,
        state: StreamState,
        tokens: jax.Array,
        rope: Rope | None,
        mask: jax.Array | None,
        return_aux: bool,
        return_blocks: bool,
    ) -> tuple[StreamState, dict[str, jax.Array]]:
        """tokens [B, P+g*g, D] of one frame -> new state and this frame's normed tokens.

        Only the recurrence lives here; the heads run afterwards on all frames at once.
        `mask` [B, 1, N]: the clips' content regions (`modeling/content.py`), or None.
        """
        cfg = self.config
        learned = jnp.broadcast_to(self.query, state.queries.shape)  # [B, Q, D]
        updated = self.query_updater(state.queries).astype(jnp.float32) + learned
        queries = jnp.where(state.started[:, None, None], updated, learned)
        x_in = jnp.concatenate([queries, tokens], axis=1)  # [B, N, D]
        x, block_outputs = self.query_encoder(x_in, rope, mask)  # [B, N, D], [A, B, N, D]
        normed = self.layernorm(x)
        out = {"last_hidden_state": normed}
        if return_blocks:
            out["query_hidden_states"] = block_outputs
        if return_aux:  # deep supervision: predict from the tokens entering every query block
            block_inputs = jnp.concatenate([x_in[None], block_outputs[:-1]], axis=0)  # [A, B, N, D]
            out["aux_tokens"] = self.layernorm(block_inputs) if cfg.norm_queries else block_inputs
        # The authors' NORM_QUERIES (on in their DINOv3 VIPSeg / VSPW configs) propagates normalized queries.
        queries_out = (normed if cfg.norm_queries else x)[:, : cfg.num_queries].astype(jnp.float32)
        return StreamState(queries=queries_out, started=jnp.ones_like(state.started)), out

    def _heads(
        self, tokens: jax.Array, grid_hw: tuple[int, int], content: jax.Array | None
    ) -> tuple[jax.Array, jax.Array]:
        """tokens [S, B, T, N, D] (S: 1, or one per prediction) -> class logits [S, B, T, Q, K+1],
        mask logits [S, B, T, Q, h, w]. `content` [B, 2]: each clip's own patch grid, or None.

        Without remat the heads see every frame at once. With `remat` set they run one
        (frame, prediction) step at a time in a rolled loop and are rematerialised: the backward
        pass keeps only each step's tokens. The upscaled maps of all frames and predictions at once
        (h x w x D each, float32 around the LayerNorms) otherwise held most of a deep-supervised
        train step's memory. Same numbers either way.
        """
        s, b, t = tokens.shape[:3]
        if REMAT_POLICIES[self.remat] is None:
            every = None if content is None else jnp.broadcast_to(content[None, :, None], (s, b, t, 2)).reshape(-1, 2)
            cls, mask = self.heads(tokens.reshape(-1, *tokens.shape[3:]), grid_hw, every)
            return cls.reshape(s, b, t, *cls.shape[1:]), mask.reshape(s, b, t, *mask.shape[1:])
        steps = jnp.moveaxis(tokens, 2, 0).reshape(t * s, b, *tokens.shape[3:])  # [T*S, B, N, D]
        step = nn.remat(lambda mdl, carry, x: (carry, mdl.heads(x, grid_hw, content)), prevent_cse=False)
        scan = nn.scan(step, variable_broadcast="params", split_rngs={"params": False})
        _, (cls, mask) = scan(self, None, steps)  # [T*S, B, ...]
        cls, mask = cls.reshape(t, s, *cls.shape[1:]), mask.reshape(t, s, *mask.shape[1:])
        return jnp.moveaxis(cls, 0, 2), jnp.moveaxis(mask, 0, 2)

    def _geometry(
        self, grid_hw: tuple[int, int], content: jax.Array | None, frames: int
    ) -> tuple[Rope | None, Rope | None, jax.Array | None, jax.Array | None]:
        """Rotary tables and attention masks of the query blocks (per clip, [B, ...]) and of the plain
        blocks (the same per frame, [B*T, ...]). Without content regions: the input grid's tables
        (DINOv3; DINOv2 None) and no masks."""
        cfg = self.config
        scale = None if self.deterministic else rescale_factor(cfg, self.make_rng("dropout"))  # DINOv3 training
        if content is None:
            if scale is None:
                rope = rope_tables(cfg, grid_hw)  # DINOv3: (cos, sin) [g*g, E]; DINOv2: None
            else:  # the input's own grid, coordinates rescaled: [1, g*g, E] each
                rope = rope_tables_traced(cfg, jnp.asarray([grid_hw], jnp.int32), grid_hw, scale)
            return rope, rope, None, None
        rope = frame_rope = None
        if cfg.backbone == "dinov3":
            cos, sin = rope_tables_traced(cfg, content, grid_hw, scale)  # [B, g*g, E] each
            rope, frame_rope = (cos, sin), (jnp.repeat(cos, frames, axis=0), jnp.repeat(sin, frames, axis=0))
        mask = key_mask(content, grid_hw, cfg.num_queries + cfg.num_prefix_tokens)  # [B, 1, N]
        frame_mask = jnp.repeat(mask[..., cfg.num_queries :], frames, axis=0)  # [B*T, 1, P+g*g]
        return rope, frame_rope, mask, frame_mask

    # ------------------------------------------------------------------ whole clip
    def __call__(
        self,
        videos: jax.Array,
        state: StreamState | None = None,
        *,
        interpolate_pos_encoding: bool = False,
        return_aux: bool = False,
        return_hidden_states: bool = False,
        content_hw: jax.Array | None = None,
    ) -> VideomtOutput:
        """videos [B, T, H, W, C] -> VideomtOutput (batch-major: [B, T, ...]).

        `state` continues a video fed in chunks (see `videomt_jax.streaming`); None starts one.
        `return_aux` adds the deep-supervision predictions (one per query block, made from the
        tokens entering it); `return_hidden_states` adds every layer's output.
        `content_hw` [B, 2] int: each clip's own (padded) size in pixels, a multiple of the patch size,
        at the top left of the frames (training on shape buckets, `modeling/content.py`): inside it the
        outputs equal the clip's alone at that size; outside they are not meaningful. Needs
        `interpolate_pos_encoding` for a DINOv2 backbone whose grid differs from the config's.
        """
        cfg = self.config
        check_videos(cfg, videos, interpolate_pos_encoding)
        b, t, h, w, c = videos.shape
        ph, pw = cfg.patch_hw
        grid_hw = (h // ph, w // pw)
        state = init_state(cfg, b) if state is None else state
        expected = (b, cfg.num_queries, cfg.hidden_size)
        if state.queries.shape != expected:
            raise ValueError(f"state.queries has shape {state.queries.shape}; expected {expected}")

        content, frame_content = None, None
        if content_hw is not None:
            if tuple(content_hw.shape) != (b, 2):
                raise ValueError(
                    f"content_hw must be [B, 2] = [{b}, 2] (height, width per clip), got {content_hw.shape}"
                )
            content = content_grid(content_hw, cfg.patch_hw)  # [B, 2] patches
            frame_content = jnp.repeat(content, t, axis=0)  # [B*T, 2]
        tokens = self.embeddings(videos.reshape(b * t, h, w, c), frame_content)  # [B*T, P+g*g, D]
        rope, frame_rope, mask, frame_mask = self._geometry(grid_hw, content, t)
        hidden: list[jax.Array] = [tokens]
        if cfg.query_start > 0:
            tokens, pre_outputs = self.encoder(tokens, frame_rope, frame_mask)  # [B*T, P+g*g, D], [L-nb, ...]
            hidden += list(pre_outputs) if return_hidden_states else []
        frames = jnp.swapaxes(tokens.reshape(b, t, *tokens.shape[1:]), 0, 1)  # [T, B, P+g*g, D]

        scan = nn.scan(
            lambda mdl, carry, x: mdl._frame(carry, x, rope, mask, return_aux, return_hidden_states),
            variable_broadcast="params",
            split_rngs={"params": False, "dropout": True},
            unroll=min(t, FRAME_UNROLL),
        )
        state, per_frame = scan(self, state, frames)  # per_frame values: [T, B, ...]
        normed = jnp.swapaxes(per_frame["last_hidden_state"], 0, 1)  # [B, T, N, D]
        class_logits, mask_logits = (y[0] for y in self._heads(normed[None], grid_hw, content))  # [B, T, Q, ...]
        out = VideomtOutput(
            class_logits=class_logits,
            mask_logits=mask_logits,
            last_hidden_state=normed,
            state=state,
            mask_stride=h // mask_logits.shape[-2],  # input pixels per mask pixel (patch / 2^upscale blocks)
        )
        if return_aux:  # [T, A, B, N, D] -> [A, B, T, N, D] -> heads
            aux_cls, aux_mask = self._heads(jnp.moveaxis(per_frame["aux_tokens"], 0, 2), grid_hw, content)
            out = dataclasses.replace(out, aux_class_logits=aux_cls, aux_mask_logits=aux_mask)
        if return_hidden_states:
            q_out = jnp.moveaxis(per_frame["query_hidden_states"], 0, 2)  # [A, B, T, N, D]
            q_out = q_out.reshape(q_out.shape[0], b * t, *q_out.shape[3:])
            out = dataclasses.replace(out, hidden_states=tuple(hidden) + tuple(q_out))
        return out


def inference_params(config: VideomtConfig, params: Any) -> Any:
    """`params` with every matmul kernel stored in the compute dtype, for repeated inference calls.

    The model casts kernels to `config.dtype` before every matmul anyway, so the outputs are
    bit-identical; done once here, each call skips reading float32 weights and writing 16-bit
    copies (for ViT-L in bf16, ~1.8 GB of memory traffic per call, 0.5 ms of the 5.3 ms an online
    frame took on the H100). Norms, biases and embeddings stay float32. Identity for float32 compute.
    """
    dtype = jnp.dtype(config.dtype)
    if dtype == jnp.float32:
        return params

    def cast(path: tuple, leaf: Any) -> Any:
        return leaf.astype(dtype) if getattr(path[-1], "key", None) == "kernel" else leaf

    return jax.jit(lambda p: jax.tree_util.tree_map_with_path(cast, p))(params)
