"""Evaluation metrics on numpy arrays: semantic mIoU, YouTube-VIS video AP, panoptic quality."""

from videomt_jax.metrics.panoptic import PanopticAccumulator, evaluate_panoptic, panoptic_from_segments
from videomt_jax.metrics.semantic import SemanticAccumulator, evaluate_semantic
from videomt_jax.metrics.vis import VideoInstanceAccumulator, evaluate_video_instance, mask_iou

__all__ = [
    "PanopticAccumulator",
    "SemanticAccumulator",
    "VideoInstanceAccumulator",
    "evaluate_panoptic",
    "evaluate_semantic",
    "evaluate_video_instance",
    "mask_iou",
    "panoptic_from_segments",
]
