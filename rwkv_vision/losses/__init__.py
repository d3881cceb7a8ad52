"""Training losses."""

from .depth import DepthLoss, GradientMatchingLoss, L1Loss, SILogLoss, SSIMLoss

__all__ = ["DepthLoss", "GradientMatchingLoss", "L1Loss", "SILogLoss", "SSIMLoss"]
