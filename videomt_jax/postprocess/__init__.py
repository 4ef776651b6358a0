"""Jitted, fixed-shape post-processing: per frame (Hugging Face parity) and per video (authors' semantics).

- `post_process_semantic / _instance / _panoptic`: frame by frame, as `VideomtVideoProcessor`;
  `to_hf` turns their results into HF's list of per-frame dicts.
- `video_instance / video_panoptic / video_semantic`: one answer per video, query index = track id.
"""

from videomt_jax.postprocess.frame import post_process_instance, post_process_panoptic, post_process_semantic
from videomt_jax.postprocess.hf_format import to_hf
from videomt_jax.postprocess.results import SegmentResult, VideoInstanceResult, VideoPanopticResult
from videomt_jax.postprocess.video import video_instance, video_panoptic, video_semantic

__all__ = [
    "SegmentResult",
    "VideoInstanceResult",
    "VideoPanopticResult",
    "post_process_instance",
    "post_process_panoptic",
    "post_process_semantic",
    "to_hf",
    "video_instance",
    "video_panoptic",
    "video_semantic",
]
