"""Host-side conversion of fixed-shape results to Hugging Face's per-frame lists (no torch needed).

Order: the frames of video 0 first (t = 0..T-1), then video 1, ... (HF's own model output is
frame-major, index t*B + b; for B = 1 the two orders agree).

- semantic [B, T, H, W] array -> list of [H, W] int64 arrays (HF: list of long tensors);
- SegmentResult -> list of {"segmentation": [H, W] int64 array (-1 = none),
  "segments_info": [{"id": int, "label_id": int, "score": float rounded to 6 decimals,
  "track_id": int}, ...]}. HF's three fields keep HF's values exactly; `track_id` is ours: the query
  that opened the segment, stable over a video (VidEoMT's track identity), so the same object keeps
  it from frame to frame while its per-frame `id` may change.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from videomt_jax.postprocess.results import SegmentResult

SCORE_DECIMALS = 6  # HF: round(score, 6)
TRACK_ID = "track_id"  # our field beside HF's: the query index that opened the segment


def _semantic_to_hf(segmentation: Any) -> list[np.ndarray]:
    seg = np.asarray(jax.device_get(segmentation))
    if seg.ndim != 4 or not np.issubdtype(seg.dtype, np.integer):
        raise ValueError(f"expected a semantic map [B, T, H, W] of ints, got shape {seg.shape} dtype {seg.dtype}")
    return [frame.astype(np.int64) for frame in seg.reshape((-1,) + seg.shape[2:])]


def _segments_to_hf(result: SegmentResult) -> list[dict]:
    host = jax.device_get(result)
    seg = np.asarray(host.segmentation)
    b, t = seg.shape[:2]
    flat = lambda x: np.asarray(x).reshape((b * t,) + np.shape(x)[2:])
    seg, labels, scores, valid = flat(host.segmentation), flat(host.label_id), flat(host.score), flat(host.valid)
    queries = flat(host.query)
    frames = []
    for f in range(b * t):
        count = int(valid[f].sum())
        info = [
            {
                "id": s,
                "label_id": int(labels[f, s]),
                "score": round(float(scores[f, s]), SCORE_DECIMALS),
                TRACK_ID: int(queries[f, s]),
            }
            for s in range(count)
        ]
        frames.append({"segmentation": seg[f].astype(np.int64), "segments_info": info})
    return frames


def to_hf(result: SegmentResult | jax.Array | np.ndarray) -> list:
    """Hugging Face's output format, one entry per frame (video 0's frames first)."""
    if isinstance(result, SegmentResult):
        return _segments_to_hf(result)
    if isinstance(result, (jax.Array, np.ndarray)):
        return _semantic_to_hf(result)
    raise TypeError(
        "to_hf expects a SegmentResult (post_process_instance / post_process_panoptic) or the "
        f"[B, T, H, W] array of post_process_semantic, got {type(result).__name__}"
    )
