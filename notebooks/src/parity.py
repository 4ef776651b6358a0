# Source of notebooks/parity.ipynb (percent format: "# %%" starts a code cell, "# %% [markdown]" a
# markdown cell). Edit here, then run `python notebooks/build_notebooks.py`.

# %% [markdown]
# # Parity with Hugging Face `transformers`, layer by layer
#
# `videomt-jax` promises the same numbers as Hugging Face's `VideomtForUniversalSegmentation`.
# This notebook checks that promise from the inside out on a small model with **non-trivial random
# weights** (random biases, layer scales away from 1, random norms and query updater), so that no
# layer can hide behind an identity initialisation:
#
# 1. the patch embeddings and every encoder block's output, frame by frame;
# 2. the queries each frame hands to the next one (HF keeps them in a local variable, so we catch
#    them with forward hooks), and the query updater applied to them;
# 3. the heads (class and mask logits);
# 4. the post-processed maps (semantic, instance, panoptic) against HF's own video processor;
# 5. the stage-by-stage comparison again with bfloat16 compute;
# 6. the authors' original `.pth` layout, written from our parameters and loaded back.
#
# Every comparison shown below is also asserted, so the notebook fails (and the test suite with
# it) the moment parity breaks.

# %%
import functools
import sys
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import torch
import transformers
from transformers.models.videomt.video_processing_videomt import VideomtVideoProcessor

import videomt_jax as vm
from videomt_jax.weights.original_dinov2 import original_dinov2_rules
from videomt_jax.weights.shared_rules import AUTHORS_ATTN_MASK_PROBS, EMPTY_WEIGHT
from videomt_jax.weights.tables import params_to_source

# The HF helpers live with the tests (tests/helpers/hf.py, the package `tests` at the checkout's root);
# the notebook runs from notebooks/, so the checkout's root goes on the path.
ROOT = next(p for p in (Path.cwd(), *Path.cwd().parents) if (p / "tests" / "helpers" / "hf.py").is_file())
sys.path.insert(0, str(ROOT))
from tests.helpers.hf import build_hf_model, frame_major_to_batch_major, hf_to_original_state_dict, to_hf_pixels  # noqa: E402

torch.set_num_threads(1)
transformers.utils.logging.disable_progress_bar()
WORK = Path(tempfile.mkdtemp(prefix="videomt-parity-"))
print("jax", jax.__version__, "| torch", torch.__version__)

# %% [markdown]
# ## A small model with random weights
#
# The architecture is a scaled-down VidEoMT: 4 ViT blocks of width 64 (4 heads), 4 register
# tokens, patch 16 on 64x64 frames (a 4x4 grid), and the last 2 blocks carry 10 object queries.
# `build_hf_model` fills every parameter of the HF model with seeded random values of sensible
# scale. We save it with `save_pretrained` and load it with `vm.load_pretrained`, exactly as one
# would load a Hub checkpoint. The input is a batch of 2 videos of 3 frames (random pixels; the
# weights are random anyway).

# %%
config = vm.VideomtConfig(
    hidden_size=64, num_hidden_layers=4, num_attention_heads=4, num_blocks=2, image_size=64, patch_size=16,
    num_queries=10, num_register_tokens=4, id2label={i: f"class_{i}" for i in range(5)},
)
B, T, Q = 2, 3, config.num_queries
hf_model = build_hf_model(config, seed=0)
hf_model.save_pretrained(WORK / "hf")
loaded_config, params = vm.load_pretrained(WORK / "hf")
architecture = lambda c: {k: v for k, v in c.to_dict().items() if k != "extra"}  # noqa: E731  (extra: HF-only keys)
assert architecture(loaded_config) == architecture(config)

videos = np.random.default_rng(1).standard_normal((B, T, 64, 64, 3)).astype(np.float32)  # [B, T, H, W, C]
n_params = sum(x.size for x in jax.tree.leaves(params))
print(f"{n_params:,} parameters; query blocks = layers {config.query_start}..{config.num_hidden_layers - 1}")

# %% [markdown]
# ## The reference: Hugging Face, with hooks
#
# HF runs the first `L - num_blocks` layers on all `B*T` frames at once, then loops over frames in
# Python: frame `t` prepends `query_updater(queries leaving the last block at t-1) + query.weight`
# to its tokens and runs the query blocks. Its outputs are stacked **frame-major** (row `t*B + b`);
# ours are batch-major `[B, T, ...]`.
#
# With `output_hidden_states=True`, HF records one entry per layer *call* (the query blocks once per
# frame), but then overwrites the last entry with `last_hidden_state`, so the last frame's
# last-block output is missing. Forward hooks on every layer and on `query_updater` record all
# calls, including the propagated queries that never leave `forward`.

# %%
calls: list[tuple[int, np.ndarray]] = []  # (layer index, output), in call order
updater_io: list[tuple[np.ndarray, np.ndarray]] = []  # (input, output) of query_updater, frames 1..T-1


def layer_hook(index):
    return lambda module, args, output: calls.append((index, output.detach().numpy().copy()))


handles = [layer.register_forward_hook(layer_hook(i)) for i, layer in enumerate(hf_model.layers)]
def updater_hook(module, args, output):
    updater_io.append((args[0].detach().numpy().copy(), output.detach().numpy().copy()))


handles.append(hf_model.query_updater.register_forward_hook(updater_hook))
with torch.no_grad():
    hf_out = hf_model(pixel_values_videos=to_hf_pixels(videos), output_hidden_states=True)
for handle in handles:
    handle.remove()

qs = config.query_start
hs = [h.numpy() for h in hf_out.hidden_states]
print(f"HF hidden_states: {len(hs)} entries; layer calls hooked: {len(calls)}; query_updater calls: {len(updater_io)}")
# the hooks agree with hidden_states wherever both exist, and the last entry is last_hidden_state
assert all(np.array_equal(out, hs[1 + k]) for k, (_, out) in enumerate(calls[:-1]))
assert np.array_equal(hs[-1], hf_out.last_hidden_state.numpy())

# %% [markdown]
# Now we arrange HF's tensors as `[B, T, ...]`, one entry per named stage. The plain blocks ran on
# `B*T` frames ordered batch-major (HF reshapes `[B, T]` to `B*T`); the query blocks ran once per
# frame on `[B, ...]`, so we stack their calls over frames. The carried queries of frame `t` are the
# first `Q` tokens leaving the last query block.

# %%
def per_frame_calls(layer: int) -> np.ndarray:
    """Outputs of a query block, one call per frame, stacked to [B, T, N, D]."""
    return np.stack([out for i, out in calls if i == layer], axis=1)


def batch_major(x: np.ndarray) -> np.ndarray:
    """[B*T, ...] (batch-major) -> [B, T, ...]."""
    return x.reshape(B, T, *x.shape[1:])


reference = {"embeddings": batch_major(hs[0])}
for layer in range(config.num_hidden_layers):
    if layer < qs:
        reference[f"block {layer}"] = batch_major(calls[layer][1])
    else:
        reference[f"block {layer} (queries)"] = per_frame_calls(layer)
reference["carried queries"] = per_frame_calls(config.num_hidden_layers - 1)[:, :, :Q]  # [B, T, Q, D]
reference["query_updater(q)"] = np.stack([out for _, out in updater_io], axis=1)  # [B, T-1, Q, D]
reference["last_hidden_state"] = frame_major_to_batch_major(hf_out.last_hidden_state, B)
reference["class logits"] = frame_major_to_batch_major(hf_out.class_queries_logits, B)
reference["mask logits"] = frame_major_to_batch_major(hf_out.masks_queries_logits, B)
# what HF fed the updater at frame t+1 is what left the last block at frame t
assert np.array_equal(np.stack([x for x, _ in updater_io], axis=1), reference["carried queries"][:, :-1])
for name, value in reference.items():
    print(f"{name:20s} {value.shape}")

# %% [markdown]
# ## Ours, the same stages
#
# `model.apply(..., return_hidden_states=True)` returns the embeddings and every layer's output,
# each `[B*T, N, D]` batch-major; the query blocks' entries have the `Q` query tokens prepended.
# The frames run inside one `lax.scan`, so the carried queries of every frame are the query tokens of
# the last block's output, and `out.state.queries` is what the last frame hands on (the streaming
# state). The query updater is a dense layer: we apply its parameters to our carried queries.

# %%
@functools.lru_cache(maxsize=None)
def forward(cfg: vm.VideomtConfig):
    """The jitted model for a config, with every layer's output (compiled once per config)."""
    model = vm.VideomtModel(cfg)
    return jax.jit(lambda p, v: model.apply({"params": p}, v, return_hidden_states=True))


def our_stages(cfg: vm.VideomtConfig, params) -> tuple[dict[str, np.ndarray], vm.VideomtOutput]:
    out = forward(cfg)(params, jnp.asarray(videos))
    hidden = [batch_major(np.asarray(h, np.float32)) for h in out.hidden_states]
    stages = {"embeddings": hidden[0]}
    for layer in range(cfg.num_hidden_layers):
        stages[f"block {layer}" + (" (queries)" if layer >= qs else "")] = hidden[1 + layer]
    carried = hidden[-1][:, :, :Q]
    assert np.array_equal(carried[:, -1], np.asarray(out.state.queries))  # the streaming state = last frame's
    updater = params["query_updater"]
    stages["carried queries"] = carried
    stages["query_updater(q)"] = np.asarray(
        jnp.einsum("btqd,de->btqe", carried[:, :-1], updater["kernel"], precision="highest") + updater["bias"]
    )
    stages["last_hidden_state"] = np.asarray(out.last_hidden_state)
    stages["class logits"] = np.asarray(out.class_logits)
    stages["mask logits"] = np.asarray(out.mask_logits)
    return stages, out


def differences(stages: dict[str, np.ndarray]) -> dict[str, tuple[float, float, float]]:
    """stage -> (max |ours - HF|, mean |ours - HF|, max |HF|)."""
    rows = {}
    for name, ref in reference.items():
        assert stages[name].shape == ref.shape, (name, stages[name].shape, ref.shape)
        diff = np.abs(stages[name].astype(np.float64) - ref)
        rows[name] = (float(diff.max()), float(diff.mean()), float(np.abs(ref).max()))
    return rows


fp32_stages, ours_fp32 = our_stages(config, params)
bf16_stages, ours_bf16 = our_stages(config.replace(dtype="bfloat16"), params)
fp32, bf16 = differences(fp32_stages), differences(bf16_stages)

# %% [markdown]
# ## The table
#
# For each stage: the largest and the mean absolute difference to HF (fp32 reference), for our
# float32 model and for our model with bfloat16 compute (same float32 parameters; layer norms,
# softmax, the residual stream and the logits stay float32), next to the largest absolute value
# HF produces there, for scale.

# %%
header = (f"{'stage':20s} {'max|HF|':>9s} | {'fp32 max':>9s} {'fp32 mean':>9s} | "
          f"{'bf16 max':>9s} {'bf16 mean':>9s} {'bf16 rel':>8s}")
print(header)
print("-" * len(header))
for name, (mx, mean, scale) in fp32.items():
    bmx, bmean, _ = bf16[name]
    print(f"{name:20s} {scale:9.3f} | {mx:9.2e} {mean:9.2e} | {bmx:9.2e} {bmean:9.2e} {bmx / scale:8.2%}")

# %% [markdown]
# How to read it: in float32 every stage agrees to about `1e-6` relative to its scale, which is
# float32 rounding (the two frameworks sum in different orders). Nothing grows along the frames:
# the carried queries, which feed every later frame, agree as well as the first block does. In
# bfloat16 (8 bits of mantissa, a relative precision of about 0.4%) the differences are about four
# orders of magnitude larger: the last column (`bf16 max / max|HF|`) stays between a few tenths of
# a percent and a couple of percent, largest on the mask logits, which are dot products of two
# bfloat16 vectors.
#
# The bounds asserted below: **float32 max |difference| <= 1e-4 on every stage** (so on the class
# and mask logits too); **bfloat16 max |difference| <= 5% of the stage's max |HF value|**, the same
# bound the test suite uses.

# %%
FP32_ATOL = 1e-4
BF16_REL = 5e-2
assert all(mx <= FP32_ATOL for mx, _, _ in fp32.values()), fp32
assert all(bf16[name][0] <= BF16_REL * scale for name, (_, _, scale) in fp32.items()), bf16
assert fp32["mask logits"][2] > 1 and fp32["class logits"][2] > 1  # logits are not trivially small
print("fp32 worst:", max(fp32.items(), key=lambda kv: kv[1][0]))
print("bf16 worst relative:", max(((n, bf16[n][0] / s) for n, (_, _, s) in fp32.items()), key=lambda kv: kv[1]))

# %%
names = list(fp32)
x = np.arange(len(names))
fig, ax = plt.subplots(figsize=(10, 4.2))
for table, label, color in ((fp32, "float32", "tab:blue"), (bf16, "bfloat16", "tab:orange")):
    ax.semilogy(x, [table[n][0] for n in names], "o-", color=color, label=f"{label}: max |diff|")
    ax.semilogy(x, [table[n][1] for n in names], "s--", color=color, alpha=0.6, label=f"{label}: mean |diff|")
ax.axhline(FP32_ATOL, color="tab:blue", lw=0.8, ls=":", label="fp32 bound 1e-4")
ax.set_xticks(x, names, rotation=35, ha="right")
ax.set_ylabel("|ours - HF|")
ax.set_title("Difference to Hugging Face per stage (2 videos x 3 frames)")
ax.grid(True, which="major", alpha=0.3)
ax.legend(fontsize=8, ncol=3, loc="upper left")
fig.tight_layout()
plt.show()

# %% [markdown]
# ## Post-processed maps
#
# Logits that agree to `1e-6` should give the same segmentations. We run HF's own
# `VideomtVideoProcessor` post-processing on HF's output and ours on our output, at a target size
# that is neither square nor a multiple of the mask grid. (The HF processor's post-processing needs
# no configuration, so `object.__new__` gives us one without downloading a processor config.)
# `vm.to_hf` turns our fixed-shape results into HF's list of per-frame dicts, video 0's frames first;
# HF's list is frame-major, so we reorder it.
#
# With random weights the class scores are low (0.2 to 0.6) and the random masks overlap a lot, so
# we lower the thresholds to keep a fair number of segments: instance score 0.3 (HF's default 0.5),
# panoptic score 0.2 and overlap ratio 0.2 (defaults 0.8, 0.8), and we fuse the segments of class 4
# (`label_ids_to_fuse`, as for "stuff" classes). The comparison holds at any setting.

# %%
hf_proc = object.__new__(VideomtVideoProcessor)
size = (90, 70)
sizes = [size] * (B * T)
to_batch_major = lambda frames: [frames[t * B + b] for b in range(B) for t in range(T)]  # noqa: E731
INSTANCE = dict(threshold=0.3)
PANOPTIC = dict(threshold=0.2, overlap_mask_area_threshold=0.2, label_ids_to_fuse={4})

hf_maps = {
    "semantic": to_batch_major(hf_proc.post_process_semantic_segmentation(hf_out, sizes)),
    "instance": to_batch_major(hf_proc.post_process_instance_segmentation(hf_out, sizes, **INSTANCE)),
    "panoptic": to_batch_major(hf_proc.post_process_panoptic_segmentation(hf_out, sizes, **PANOPTIC)),
}
our_maps = {  # the mask stride (input pixels per mask pixel) travels on the output
    "semantic": vm.to_hf(vm.post_process_semantic(ours_fp32, size)),
    "instance": vm.to_hf(vm.post_process_instance(ours_fp32, size, **INSTANCE)),
    "panoptic": vm.to_hf(vm.post_process_panoptic(ours_fp32, size, **PANOPTIC)),
}

print(f"{'task':9s} {'frames':>6s} {'pixels equal':>13s} {'segments':>9s} "
      f"{'same ids/labels':>16s} {'max score diff':>15s}")
for task in hf_maps:
    theirs, ours = hf_maps[task], our_maps[task]
    seg = lambda r: np.asarray(r["segmentation"] if isinstance(r, dict) else r)  # noqa: E731
    equal = np.mean([np.array_equal(seg(a), seg(b)) for a, b in zip(ours, theirs)])
    pixels = np.mean(np.concatenate([(seg(a) == seg(b)).ravel() for a, b in zip(ours, theirs)]))
    if task == "semantic":
        print(f"{task:9s} {len(ours):6d} {pixels:13.4%} {'-':>9s} {'-':>16s} {'-':>15s}")
        assert equal == 1.0
        continue
    info = lambda r: [(s["id"], s["label_id"]) for s in r["segments_info"]]  # noqa: E731
    same = all(info(a) == info(b) for a, b in zip(ours, theirs))
    count = sum(len(r["segments_info"]) for r in theirs)
    pairs = [(s, u) for a, b in zip(ours, theirs) for s, u in zip(a["segments_info"], b["segments_info"])]
    score_diff = max((abs(s["score"] - u["score"]) for s, u in pairs), default=0.0)
    print(f"{task:9s} {len(ours):6d} {pixels:13.4%} {count:9d} {str(same):>16s} {score_diff:15.1e}")
    assert equal == 1.0 and same and count > 0 and score_diff <= 1e-5

# %% [markdown]
# Every map is identical pixel for pixel, every segment has the same id and class, and the scores
# agree to float32 rounding (HF rounds them to 6 decimals). Below: the panoptic maps of video 0,
# HF on top, ours below (colours are segment ids; white: no segment).

# %%
cmap = plt.get_cmap("tab10").with_extremes(bad="white")
fig, axes = plt.subplots(2, T, figsize=(2.2 * T, 4.8))
for t in range(T):
    for row, (who, maps) in enumerate((("HF", hf_maps), ("ours", our_maps))):
        segments = np.ma.masked_less(np.asarray(maps["panoptic"][t]["segmentation"]), 0)
        axes[row, t].imshow(segments, cmap=cmap, vmin=0, vmax=9, interpolation="nearest")
        axes[row, t].set_title(f"{who}, frame {t}", fontsize=9)
        axes[row, t].axis("off")
fig.tight_layout()
plt.show()

# %% [markdown]
# ## The authors' `.pth` layout
#
# The authors release detectron2 checkpoints (`{"model": state_dict}`) built on a timm DINOv2: fused
# `attn.qkv`, `ls1.gamma`, `pos_embed` with a batch axis, heads under `backbone.` and two buffers
# (`attn_mask_probs`, `criterion.empty_weight`). `videomt_jax.weights.original_dinov2` holds that key
# table; its inverse (`params_to_source`) writes our parameters in the authors' layout. We check it
# against `hf_to_original_state_dict` (an independent rewrite of the HF state dict, written from the
# authors' module names in the tests), save it with `torch.save`, and load it back with
# `vm.load_pretrained`. A `.pth` does not say how many heads the ViT has (timm derives it from the
# model name), so we pass `num_attention_heads`, and the class names with `id2label`.

# %%
# timm has no mask token (it is unused at inference); the loader fills ours with zeros
authors_params = {**params, "embeddings": {k: v for k, v in params["embeddings"].items() if k != "mask_token"}}
state_dict = params_to_source(authors_params, original_dinov2_rules(config, None), what="the authors' layout")
state_dict[AUTHORS_ATTN_MASK_PROBS] = np.zeros(config.num_blocks, np.float32)
state_dict[EMPTY_WEIGHT] = np.append(np.ones(config.num_labels, np.float32), np.float32(config.no_object_weight))
independent = hf_to_original_state_dict(hf_model.state_dict(), config)
assert sorted(state_dict) == sorted(independent)
assert all(np.array_equal(state_dict[k], independent[k].numpy()) for k in state_dict)

pth = WORK / "videomt_authors.pth"
torch.save({"model": {k: torch.tensor(v) for k, v in state_dict.items()}, "iteration": 0}, pth)
pth_config, pth_params = vm.load_pretrained(
    pth, num_attention_heads=config.num_attention_heads, id2label=config.id2label
)
assert not np.asarray(pth_params["embeddings"]["mask_token"]).any()
pth_params_cmp = {**pth_params, "embeddings": {k: v for k, v in pth_params["embeddings"].items() if k != "mask_token"}}
same_params = jax.tree.all(jax.tree.map(lambda a, b: bool(np.array_equal(a, b)), authors_params, pth_params_cmp))
pth_stages, _ = our_stages(pth_config, pth_params)
pth_diff = {name: float(np.abs(pth_stages[name] - reference[name]).max()) for name in ("class logits", "mask logits")}
print(f"{len(state_dict)} tensors, {pth.stat().st_size / 1e3:.0f} kB; config recovered: "
      f"{architecture(pth_config) == architecture(config)}; parameters bit-identical: {same_params}")
print("max |pth model - HF|:", {k: f"{v:.1e}" for k, v in pth_diff.items()})
assert architecture(pth_config) == architecture(config) and same_params
assert max(pth_diff.values()) <= FP32_ATOL

# %% [markdown]
# The round trip through the authors' layout is lossless: the same keys and tensors as the
# independent rewrite, the architecture inferred from the tensor shapes (layers, width, registers,
# query blocks from `attn_mask_probs`, image size from `pos_embed`), bit-identical parameters (all
# but the mask token, which timm does not have and inference never uses), and therefore the same
# logits as HF.
#
# **Summary.** Float32: every stage within `1e-4` of HF (measured above: about `1e-6` relative to
# each stage's scale) and identical post-processed maps. Bfloat16 compute: within 5% of each
# stage's scale. The HF and the authors' checkpoint layouts load to the same parameters.

# %% [markdown]
# ## DINOv3 backbone, layer by layer
#
# The authors also release VidEoMT on a DINOv3 ViT (HF `DINOv3ViTModel` inside their code). Its
# blocks differ from DINOv2's in three ways: no absolute position embeddings, but rotary embeddings
# on the queries and keys of the *patch tokens* only (object queries, CLS and registers are not
# rotated; the rotary tables are computed from the input's own grid); no key bias; and HF's layer
# names. The reference below is assembled from HF's EoMT-DINOv3 layers following the authors'
# forward (`tests/helpers/family.py`: queries concatenated before CLS, registers and patches; the
# frame recurrence through `query_updater`). We compare every layer's output, frame by frame.

# %%
from tests.helpers.family import build_eomt, numpy_state_dict, random_updater  # noqa: E402

from videomt_jax.modeling.family import model_for  # noqa: E402
from videomt_jax.weights.hf_eomt import config_from_eomt_dict, eomt_state_dict_to_params  # noqa: E402

v3_hf = build_eomt("eomt_dinov3", seed=0, hidden_size=64, num_hidden_layers=4, num_attention_heads=4, num_blocks=2,
                   image_size=64, patch_size=16, num_queries=10, intermediate_size=128, id2label=config.id2label)
v3_updater = random_updater(64, 0)
v3_config = config_from_eomt_dict(v3_hf.config.to_dict(), "EoMT-DINOv3").replace(model_type="videomt", attn_mask_probs=None)
v3_config, v3_params = eomt_state_dict_to_params(v3_config, numpy_state_dict(v3_hf, {"query_updater": v3_updater}), "HF")


@torch.no_grad()
def v3_reference_layers(videos: np.ndarray) -> list[np.ndarray]:
    """Tokens after the embeddings and after every layer, [B*T, N_l, D] batch-major (the authors' order)."""
    pixels = to_hf_pixels(videos).flatten(0, 1)
    x = v3_hf.embeddings(pixels)
    rope = v3_hf.rope_embeddings(pixels)  # (cos, sin) over the patch tokens only
    out = [x.numpy()]
    start = v3_config.query_start
    for layer in v3_hf.layers[:start]:
        x = layer(x, position_embeddings=rope)
        out.append(x.numpy())
    frames = x.view(B, T, *x.shape[1:])
    learned = v3_hf.query.weight[None].expand(B, -1, -1)
    queries, per_layer = learned, [[] for _ in v3_hf.layers[start:]]
    for t in range(T):
        y = torch.cat([queries, frames[:, t]], dim=1)
        for i, layer in enumerate(v3_hf.layers[start:]):
            y = layer(y, position_embeddings=rope)
            per_layer[i].append(y)
        queries = v3_updater(y[:, :Q]) + learned
    return out + [torch.stack(ys, dim=1).flatten(0, 1).numpy() for ys in per_layer]


v3_ours = model_for(v3_config).apply({"params": v3_params}, jnp.asarray(videos), return_hidden_states=True)
for i, (ref, ours) in enumerate(zip(v3_reference_layers(videos), v3_ours.hidden_states)):
    where = "embeddings" if i == 0 else f"layer {i - 1}" + (" (queries)" if i > v3_config.query_start else "")
    diff = float(np.abs(np.asarray(ours) - ref).max())
    print(f"{where:20s} max |ours - HF| {diff:.1e}   (scale {np.abs(ref).max():.1f})")
    assert diff <= FP32_ATOL
