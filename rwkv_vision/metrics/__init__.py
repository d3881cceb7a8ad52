"""Evaluation metrics."""

from .depth import METRIC_NAMES, DepthMetrics, depth_metrics, eigen_crop_box, ssim_map, valid_mask

__all__ = ["METRIC_NAMES", "DepthMetrics", "depth_metrics", "eigen_crop_box", "ssim_map", "valid_mask"]
