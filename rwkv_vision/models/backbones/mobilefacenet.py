"""MobileFaceNet as the facial-landmark stream of POSTER V2: ``MobileFaceNet([112, 112], 136)`` up to ``conv_6_sep``.

Module names follow the official POSTER V2 ``mobilefacenet.py`` so that ``mobilefacenet_model_best.pth.tar`` (a
68-point landmark regressor) loads strictly through :mod:`rwkv_vision.convert.poster`. The official GDC
``output_layer`` (the 136 landmark coordinates) is computed by the official forward and then thrown away; it is left
out here.

The backbone is frozen by default: its parameters do not require grad and it stays in eval mode when the parent model
is put in training mode, so its BatchNorm statistics keep their pretrained values. The official code freezes the
weights but leaves the module in train mode, so its statistics drift during fine-tuning; ``drift_bn_stats=True``
reproduces that.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from ...convert.poster import convert_mobilefacenet_checkpoint, log_dropped, read_poster_file


class ConvBlock(nn.Module):
    """conv (no bias) - BN - PReLU."""

    def __init__(self, in_chs: int, out_chs: int, kernel: int = 1, stride: int = 1, padding: int = 0,
                 groups: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(in_chs, out_chs, kernel, stride, padding, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(out_chs)
        self.prelu = nn.PReLU(out_chs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.prelu(self.bn(self.conv(x)))


class LinearBlock(nn.Module):
    """conv (no bias) - BN, no activation (the linear bottleneck projection)."""

    def __init__(self, in_chs: int, out_chs: int):
        super().__init__()
        self.conv = nn.Conv2d(in_chs, out_chs, 1, bias=False)
        self.bn = nn.BatchNorm2d(out_chs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x))


class DepthWise(nn.Module):
    """Inverted residual: 1x1 expand to ``hidden`` - depthwise 3x3 (stride) - 1x1 linear projection (+ input)."""

    def __init__(self, in_chs: int, out_chs: int, hidden: int, stride: int, residual: bool):
        super().__init__()
        self.conv = ConvBlock(in_chs, hidden)
        self.conv_dw = ConvBlock(hidden, hidden, kernel=3, stride=stride, padding=1, groups=hidden)
        self.project = LinearBlock(hidden, out_chs)
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.conv_dw(self.conv(x)))
        return x + y if self.residual else y


class Residual(nn.Module):
    """``num_block`` stride-1 residual :class:`DepthWise` units of width ``chs``."""

    def __init__(self, chs: int, num_block: int, hidden: int):
        super().__init__()
        self.model = nn.Sequential(*[DepthWise(chs, chs, hidden, 1, residual=True) for _ in range(num_block)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class MobileFaceNet(nn.Module):
    """MobileFaceNet feature extractor (POSTER V2 landmark stream).

    Input [B, 3, 112, 112]; returns ``conv_3`` [B, 64, 28, 28], ``conv_4`` [B, 128, 14, 14] and
    ``conv_6_sep`` [B, 512, 7, 7] (the sizes scale with the input; the pretrained landmark weights expect 112).

    Args:
        frozen: parameters do not require grad and the module stays in eval mode (see ``drift_bn_stats``).
        drift_bn_stats: when frozen, still follow the parent's train/eval mode so that BatchNorm running statistics
            update in training, as the official code does (for exact reproduction only).
    """

    out_channels = (64, 128, 512)
    checkpoint_reader = staticmethod(read_poster_file)     # restricted unpickler for official files

    def __init__(self, frozen: bool = True, drift_bn_stats: bool = False):
        super().__init__()
        self.frozen = frozen
        self.drift_bn_stats = drift_bn_stats
        self.conv1 = ConvBlock(3, 64, kernel=3, stride=2, padding=1)
        self.conv2_dw = ConvBlock(64, 64, kernel=3, padding=1, groups=64)
        self.conv_23 = DepthWise(64, 64, hidden=128, stride=2, residual=False)
        self.conv_3 = Residual(64, num_block=4, hidden=128)
        self.conv_34 = DepthWise(64, 128, hidden=256, stride=2, residual=False)
        self.conv_4 = Residual(128, num_block=6, hidden=256)
        self.conv_45 = DepthWise(128, 128, hidden=512, stride=2, residual=False)
        self.conv_5 = Residual(128, num_block=2, hidden=256)
        self.conv_6_sep = ConvBlock(128, 512)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        if frozen:
            self.requires_grad_(False)
            self.train(False)

    def train(self, mode: bool = True) -> "MobileFaceNet":
        # Frozen: ignore the parent's model.train() so that BN keeps its pretrained statistics.
        return super().train(mode and (not self.frozen or self.drift_bn_stats))

    def checkpoint_filter_fn(self, checkpoint: Any) -> dict[str, torch.Tensor]:
        """``mobilefacenet_model_best.pth.tar`` or our state dict -> this module's state dict (landmark head dropped,
        logged)."""
        return log_dropped(convert_mobilefacenet_checkpoint(checkpoint), "MobileFaceNet")

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.conv_23(self.conv2_dw(self.conv1(x)))
        x3 = self.conv_3(x)
        x4 = self.conv_4(self.conv_34(x3))
        x6 = self.conv_6_sep(self.conv_5(self.conv_45(x4)))
        return x3, x4, x6
