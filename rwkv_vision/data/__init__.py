"""Data sets and joint image/target transforms."""

from .nyu import (CenterCrop, ColorJitter, Compose, Normalize, NYUDepthCSV, NYUDepthV2Labeled, RandomCrop,
                  RandomHorizontalFlip, Resize, read_depth_png, read_rgb)

__all__ = ["CenterCrop", "ColorJitter", "Compose", "NYUDepthCSV", "NYUDepthV2Labeled", "Normalize", "RandomCrop",
           "RandomHorizontalFlip", "Resize", "read_depth_png", "read_rgb"]
