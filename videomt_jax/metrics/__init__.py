"""Evaluation metrics on numpy arrays: semantic mIoU, YouTube-VIS video AP, panoptic quality,
and the paper's video metrics (VPQ, STQ, video consistency; see docs/metrics.md)."""

from videomt_jax.metrics.consistency import evaluate_video_consistency
from videomt_jax.metrics.panoptic import PanopticAccumulator, evaluate_panoptic, panoptic_from_segments
from videomt_jax.metrics.semantic import SemanticAccumulator, evaluate_semantic
from videomt_jax.metrics.stq import evaluate_stq
from videomt_jax.metrics.vis import (
    SubsetVideoInstanceAccumulator,
    VideoInstanceAccumulator,
    evaluate_video_instance,
    mask_iou,
)
from videomt_jax.metrics.vpq import evaluate_vpq

__all__ = [
    "PanopticAccumulator",
    "SemanticAccumulator",
    "SubsetVideoInstanceAccumulator",
    "VideoInstanceAccumulator",
    "evaluate_panoptic",
    "evaluate_semantic",
    "evaluate_stq",
    "evaluate_video_consistency",
    "evaluate_video_instance",
    "evaluate_vpq",
    "mask_iou",
    "panoptic_from_segments",
]
