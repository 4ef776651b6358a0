# Source of notebooks/quickstart.ipynb (percent format: "# %%" starts a code cell, "# %% [markdown]" a
# markdown cell). Edit here, then run `python notebooks/build_notebooks.py`.

# %% [markdown]
# # Quickstart: segment a video with `videomt-jax`
#
# VidEoMT is a plain ViT whose last few blocks also carry a set of object queries; each frame hands
# its queries to the next, so a query follows the same object through the video. This notebook
#
# 1. loads the small model shipped with the package (trained on procedurally generated videos),
# 2. segments held-out clips it has never seen and shows the result over the frames,
# 3. feeds a clip in chunks, as a live stream would arrive, and checks that nothing changes,
# 4. turns the per-frame predictions into video-level tracks,
# 5. shows how to load a real checkpoint from the Hugging Face Hub.
#
# Everything runs on a CPU in well under a minute.

# %%
import dataclasses
import os
import time
from importlib.resources import files
from pathlib import Path

import jax
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import Patch

import videomt_jax as vm
from videomt_jax.io.overlay import segment_colors
from videomt_jax.streaming import split_chunks
from videomt_jax.evaluation.synthetic import load_data_config

print("jax", jax.__version__, "on", jax.devices()[0].platform)

# %% [markdown]
# ## The shipped model
#
# `videomt_jax/assets/synthetic-tiny/` is a directory written by `vm.save_pretrained`: a
# `config.json` (the keys of a Hugging Face VidEoMT config, plus a `videomt_jax` section) and the
# parameters as an orbax checkpoint. `vm.load_pretrained` reads it, as it reads Hugging Face
# directories, Hub ids and the authors' `.pth` files. Next to it, `data.json` records the
# `vm.SyntheticConfig` the model was trained on: textured shapes ("things": circle, square,
# triangle) moving over bands of "stuff" (sky, grass, water), in clips of 3 frames of 64x64.

# %%
MODEL_DIR = Path(str(files("videomt_jax") / "assets" / "synthetic-tiny"))
config, params = vm.load_pretrained(MODEL_DIR)
train_data = load_data_config(MODEL_DIR)  # data.json -> vm.SyntheticConfig

n_params = sum(x.size for x in jax.tree.leaves(params))
print(f"{n_params:,} parameters: {config.num_hidden_layers} blocks of width {config.hidden_size}, the last "
      f"{config.num_blocks} with {config.num_queries} queries; input {config.image_hw}, patch {config.patch_hw}")
print("classes:", config.id2label)
assert config.id2label == train_data.id2label

# %% [markdown]
# ## A held-out clip
#
# Synthetic clips are a pure function of (config, split, index); the `heldout` split uses a seed
# stream disjoint from training. We ask for 6 frames, twice as many as the model saw per training
# clip: the queries simply keep propagating. `make_clip` also returns the ground truth (semantic
# maps, tracked instance masks), which lets us score the predictions. We take the first held-out
# clip, a busy one with six objects.

# %%
data = dataclasses.replace(train_data, num_frames=6)
clip = vm.make_clip(data, "heldout", 0)
T, H, W = clip.frames.shape[:3]
print(f"frames {clip.frames.shape} {clip.frames.dtype}; {clip.num_instances} objects:",
      [data.id2label[int(c)] for c in clip.classes])

ZOOM = 4  # the frames are 64x64: enlarge them (nearest neighbour) for display


def zoom(x: np.ndarray) -> np.ndarray:
    """[T, H, W, 3] frames or [T, H, W] maps, ZOOM times larger."""
    return x.repeat(ZOOM, axis=1).repeat(ZOOM, axis=2)


def show_rows(rows: dict[str, np.ndarray], title: str, key: dict[int, str] | None = None) -> None:
    """One row of frames per entry; `key` maps segment ids to the names shown in the legend."""
    fig, axes = plt.subplots(len(rows), T, figsize=(1.9 * T, 2.0 * len(rows) + 0.5), squeeze=False)
    for r, (name, frames) in enumerate(rows.items()):
        for t in range(T):
            axes[r, t].imshow(frames[t], interpolation="nearest")  # pixels as pixels (and small PNGs)
            axes[r, t].set_xticks([]), axes[r, t].set_yticks([])
            axes[r, 0].set_ylabel(name)
            axes[0, t].set_title(f"frame {t}", fontsize=9)
    if key:
        colors = segment_colors(list(key)) / 255.0
        handles = [Patch(color=c, label=text) for c, text in zip(colors, key.values())]
        fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 6), fontsize=8, frameon=False)
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.07 if key else 0, 1, 1))
    plt.show()


show_rows({"input": zoom(clip.frames)}, "held-out clip 0")

# %% [markdown]
# ## Segment it in one call
#
# `vm.VideoProcessor` reproduces Hugging Face's video processor (resize, rescale, ImageNet
# normalisation); `from_config` sets its size to the model's input. The model is a Flax module:
# `model.apply({"params": params}, videos)`, with `videos` shaped `(B, T, H, W, 3)` (channels
# last), returns per-frame class logits `(B, T, Q, K+1)` (the last class means "no object") and
# mask logits `(B, T, Q, h, w)` at `1/out.mask_stride` of the input resolution (the output carries
# its stride, so post-processing gets the geometry of the model that made it).

# %%
processor = vm.VideoProcessor.from_config(config)
videos = processor(clip.frames)  # (1, T, 64, 64, 3) float32
model = vm.VideomtModel(config)
forward = jax.jit(lambda p, v: model.apply({"params": p}, v))

out = jax.block_until_ready(forward(params, videos))  # the first call compiles
start = time.perf_counter()
out = jax.block_until_ready(forward(params, videos))
print(f"class_logits {out.class_logits.shape}, mask_logits {out.mask_logits.shape} "
      f"(mask stride {out.mask_stride}); {T / (time.perf_counter() - start):.0f} frames/s on this CPU once compiled")

# %% [markdown]
# ### Semantic segmentation
#
# `vm.post_process_semantic` weighs each query's mask by its class probabilities (exactly Hugging
# Face's `post_process_semantic_segmentation`) and returns a class id per pixel, `(B, T, H, W)`,
# at the size we ask for. `vm.overlay_video` blends one colour per class into the frames (it can
# also draw a legend into them; at this size we put it below the figure instead).

# %%
semantic = np.asarray(vm.post_process_semantic(out, (H, W)))[0]  # (T, H, W) class ids
show_rows(
    {
        "ground truth": vm.overlay_video(zoom(clip.frames), zoom(clip.semantic), legend=False),
        "prediction": vm.overlay_video(zoom(clip.frames), zoom(semantic), legend=False),
    },
    "semantic segmentation (colour = class)",
    key={k: name for k, name in data.id2label.items() if np.isin(k, clip.semantic) or np.isin(k, semantic)},
)

# %% [markdown]
# `vm.evaluate_semantic` scores it: the IoU of each class over the clip and their mean (mIoU). One
# clip is an anecdote, so we also score the first 8 held-out clips (same shapes, so the compiled
# model and post-processing are reused).

# %%
scores = vm.evaluate_semantic(clip.semantic, semantic, data.num_classes)
print(f"clip 0: mIoU {scores['miou']:.3f}, pixel accuracy {scores['pixel_accuracy']:.3f}; IoU per class:",
      {data.id2label[k]: round(float(v), 3) for k, v in enumerate(scores["iou"]) if not np.isnan(v)})

clips = [clip] + [vm.make_clip(data, "heldout", i) for i in range(1, 8)]
outputs = [out] + [forward(params, processor(c.frames)) for c in clips[1:]]
predicted = [np.asarray(vm.post_process_semantic(o, (H, W)))[0] for o in outputs]
overall = vm.evaluate_semantic([c.semantic for c in clips], predicted, data.num_classes)
print(f"8 held-out clips of 6 frames: mIoU {overall['miou']:.3f}, pixel accuracy {overall['pixel_accuracy']:.3f}")
assert overall["miou"] > 0.8

# %% [markdown]
# ## Streaming: the same video, a chunk at a time
#
# A camera does not hand over the whole video at once. `vm.VideoStreamer` runs the model on one
# chunk and returns, with its outputs, a small `StreamState` (the queries leaving the last frame);
# passing it to the next call continues the video where the last chunk ended. Memory stays flat
# however long the video gets. Feeding our 6 frames as 3 chunks of 2 must give what the one-shot
# call gave.

# %%
streamer = vm.VideoStreamer(model, params)
chunk_outputs = list(streamer.run(split_chunks(np.asarray(videos), 2)))
streamed = vm.VideomtOutput(
    class_logits=np.concatenate([o.class_logits for o in chunk_outputs], axis=1),
    mask_logits=np.concatenate([o.mask_logits for o in chunk_outputs], axis=1),
    mask_stride=chunk_outputs[0].mask_stride,  # an output built by hand says its stride itself
)
diffs = {k: float(np.abs(np.asarray(getattr(streamed, k)) - np.asarray(getattr(out, k))).max())
         for k in ("class_logits", "mask_logits")}
streamed_semantic = np.asarray(vm.post_process_semantic(streamed, (H, W)))[0]
print(f"{len(chunk_outputs)} chunks of {[o.class_logits.shape[1] for o in chunk_outputs]} frames")
print("max |streamed - one call|:", {k: f"{v:.1e}" for k, v in diffs.items()},
      "| semantic maps identical:", np.array_equal(streamed_semantic, semantic))
assert max(diffs.values()) <= 1e-4 and np.array_equal(streamed_semantic, semantic)

# %% [markdown]
# The logits agree to float32 rounding at worst (on this CPU, bit for bit: the chunked calls do the
# same arithmetic), and the segmentation is identical.
#
# ## Video-level tracks
#
# Because a query follows its object from frame to frame, the query index *is* a track id.
# `vm.video_instance` follows the authors' video instance inference: it averages each query's class
# probabilities over all frames, picks the best (query, class) pairs and returns one mask per frame
# for each, i.e. a track with one class and one score for the whole video. Video instance
# segmentation is about things, so we keep the thing classes, draw the confident tracks
# (score >= 0.5) each in its own colour, and score all kept tracks against the true ones with
# YouTube-VIS average precision (`vm.evaluate_video_instance`, the mean over IoU thresholds 0.5 to
# 0.95 of a track's masks over the whole clip), on the same 8 clips.

# %%
def thing_tracks(output) -> dict:
    """Top-10 (query, class) pairs of video 0, thing classes only: masks (N, T, H, W), scores, classes, queries."""
    result = jax.device_get(vm.video_instance(output, (H, W), top_k=10))
    keep = np.isin(result.label_id[0], data.thing_ids)
    return {"masks": result.masks[0][keep], "scores": result.score[0][keep],
            "classes": result.label_id[0][keep], "queries": result.query[0][keep]}


tracks = thing_tracks(out)
track_map = np.full((T, H, W), -1, np.int32)
track_names = {}
for n in reversed(range(len(tracks["scores"]))):  # best last, so on top
    if tracks["scores"][n] >= 0.5:
        query = int(tracks["queries"][n])
        track_map[tracks["masks"][n]] = query
        track_names[query] = f"{data.id2label[int(tracks['classes'][n])]} (query {query}, {tracks['scores'][n]:.2f})"
truth_map = np.full((T, H, W), -1, np.int32)
for m, track_id in enumerate(clip.track_ids):
    truth_map[clip.masks[:, m]] = track_id
show_rows(
    {
        "true tracks": vm.overlay_video(zoom(clip.frames), zoom(truth_map), legend=False),
        "predicted": vm.overlay_video(zoom(clip.frames), zoom(track_map), legend=False),
    },
    "video instance segmentation (colour = track)",
    key=dict(sorted(track_names.items())),
)

predictions = []
for output in outputs:
    t = thing_tracks(output)
    predictions.append({"masks": t["masks"].transpose(1, 0, 2, 3), "scores": t["scores"], "classes": t["classes"]})
vis = vm.evaluate_video_instance([{"masks": c.masks, "classes": c.classes} for c in clips], predictions)
print("8 held-out clips:", {k: round(float(v), 3) for k, v in vis.items() if np.isscalar(v)})

# %% [markdown]
# The true tracks are numbered 1, 2, ... and the predicted ones by query, so the two rows use
# different colours; what matters is that each object keeps one colour across the frames. The
# legend gives each confident track's class, query and score.
#
# Tracking is the hard part for a model this small, trained briefly on 3-frame clips: compare the
# AP with the mIoU above. The failure to look for in the figure is a query that covers several
# objects of the same class at once (a semantic mask rather than an instance), or one that drifts
# to a neighbour over the 6 frames; both cost AP, not mIoU.
#
# ## A real checkpoint from the Hugging Face Hub
#
# The released VidEoMT models load the same way: `vm.load_pretrained` accepts a Hub id, downloads
# the `config.json` and `model.safetensors` and converts them (strictly: every tensor used, every
# shape checked). They take 640x640 frames, so `vm.VideoProcessor()` (Hugging Face's defaults) is
# the right pre-processing, and the post-processing is unchanged. The cell below needs network
# access and downloads about 100 MB, so it only runs when you set `VIDEOMT_HUB_DEMO=1`; otherwise
# it says so and moves on.

# %%
HUB_ID = "tue-mps/videomt-dinov2-small-ytvis2019"
if os.environ.get("VIDEOMT_HUB_DEMO") == "1":
    hub_config, hub_params = vm.load_pretrained(HUB_ID)
    hub_videos = vm.VideoProcessor()(clip.frames[:2])  # (1, 2, 640, 640, 3)
    hub_out = vm.VideomtModel(hub_config).apply({"params": hub_params}, hub_videos)
    frames_hf = vm.to_hf(vm.post_process_instance(hub_out, (H, W)))  # HF's list of per-frame dicts
    print(f"{HUB_ID}: {hub_config.num_hidden_layers} blocks, {hub_config.num_queries} queries, "
          f"{hub_config.num_labels} classes; frame 0 segments:", frames_hf[0]["segments_info"])
else:
    print(f"skipped loading {HUB_ID}: set VIDEOMT_HUB_DEMO=1 (with network access) to run this cell")
