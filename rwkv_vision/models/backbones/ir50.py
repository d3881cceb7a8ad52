"""IR-50 (ArcFace "improved residual" ResNet-50), stages 1-3 only: the image stream of POSTER V2.

Module names follow the official POSTER V2 ``ir50.py`` (``input_layer``, ``body1..3.N.res_layer`` /
``shortcut_layer``) so that ``ir50.pth`` (MS-Celeb-1M pretraining) loads strictly through
:mod:`rwkv_vision.convert.poster`. The official file also builds an ``output_layer`` (BN - Flatten - Linear(25088, 512)
- BN1d, 12.85M parameters) that its forward never runs; it is left out here, as is stage 4 (512 channels), which POSTER
V2 does not use.

Shapes for a 112x112 input: stem 64x112x112 -> body1 64x56x56 -> body2 128x28x28 -> body3 256x14x14.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from ...convert.poster import convert_ir50_checkpoint, log_dropped, read_poster_file

# (in channels, out channels, units) per stage; the first unit of each stage has stride 2.
IR50_STAGES = ((64, 64, 3), (64, 128, 4), (128, 256, 14))


class BottleneckIR(nn.Module):
    """IR unit: res = BN - conv3x3 - PReLU - conv3x3(stride) - BN; out = res + shortcut.

    The shortcut is a strided identity (``MaxPool2d(1, stride)``, no parameters) when the width is unchanged,
    else conv1x1(stride) + BN.
    """

    def __init__(self, in_chs: int, out_chs: int, stride: int):
        super().__init__()
        if in_chs == out_chs:
            self.shortcut_layer = nn.MaxPool2d(1, stride)
        else:
            self.shortcut_layer = nn.Sequential(nn.Conv2d(in_chs, out_chs, 1, stride, bias=False),
                                                nn.BatchNorm2d(out_chs))
        self.res_layer = nn.Sequential(
            nn.BatchNorm2d(in_chs),
            nn.Conv2d(in_chs, out_chs, 3, 1, 1, bias=False),
            nn.PReLU(out_chs),
            nn.Conv2d(out_chs, out_chs, 3, stride, 1, bias=False),
            nn.BatchNorm2d(out_chs),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.res_layer(x) + self.shortcut_layer(x)


class IR50(nn.Module):
    """IR-50 stages 1-3, returning the three stage outputs.

    Input [B, 3, H, W] (POSTER V2 feeds 112x112); outputs [B, 64, H/2, W/2], [B, 128, H/4, W/4], [B, 256, H/8, W/8].
    """

    out_channels = tuple(out for _, out, _ in IR50_STAGES)
    checkpoint_reader = staticmethod(read_poster_file)     # restricted unpickler for official files

    def __init__(self):
        super().__init__()
        self.input_layer = nn.Sequential(nn.Conv2d(3, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.PReLU(64))
        for i, (in_chs, out_chs, units) in enumerate(IR50_STAGES, start=1):
            stage = [BottleneckIR(in_chs if u == 0 else out_chs, out_chs, 2 if u == 0 else 1) for u in range(units)]
            self.add_module(f"body{i}", nn.Sequential(*stage))

    def checkpoint_filter_fn(self, checkpoint: Any) -> dict[str, torch.Tensor]:
        """``ir50.pth`` (either layout) or our state dict -> this module's state dict (dead head dropped, logged)."""
        return log_dropped(convert_ir50_checkpoint(checkpoint), "IR50")

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.input_layer(x)
        x1 = self.body1(x)
        x2 = self.body2(x1)
        x3 = self.body3(x2)
        return x1, x2, x3
