"""Weight initialisation shared by the layers and models."""

from __future__ import annotations

import torch.nn as nn


def init_linear(linear: nn.Linear, std: float = 0.02) -> None:
    """Vision-RWKV / ViT Linear init: truncated normal with ``std`` (cut at +-2 absolute, as mmcv and timm), zero
    bias."""
    nn.init.trunc_normal_(linear.weight, std=std)
    if linear.bias is not None:
        nn.init.zeros_(linear.bias)
