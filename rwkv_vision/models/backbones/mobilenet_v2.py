"""MobileNetV2 (width 1.0) feature extractor for dense prediction (UNetDepth encoder).

Parameter names are timm's ``mobilenetv2_100`` (``conv_stem``, ``bn1``, ``blocks.S.N.{conv_dw,conv_pw,conv_pwl,
bn1,bn2,bn3}``, ``conv_head``, ``bn2``), so timm's weights load once the ``classifier`` is dropped
(:mod:`rwkv_vision.convert.timm`); torchvision's / smp's ``features.*`` names map onto these in
:mod:`rwkv_vision.convert.smp`.

The forward returns five feature maps, for an input [B, in_chans, H, W] with H, W divisible by 32:
stride 2 (16 ch, end of blocks.0), 4 (24 ch, blocks.1), 8 (32 ch, blocks.2), 16 (96 ch, blocks.4) and 32 (1280 ch,
after ``conv_head``/``bn2``). The last level includes the 1x1 head convolution (320 -> 1280), as smp's
``mobilenet_v2`` encoder does and as timm's ``forward_features`` does; timm's ``features_only`` model stops at the
320-channel ``blocks.6`` output instead. Keeping the head is what makes smp UNets convert exactly.
"""

from __future__ import annotations

import torch
import torch.nn as nn

# (expansion, out channels, repeats, first stride) per stage: Table 2 of the MobileNetV2 paper.
MOBILENET_V2_STAGES = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                       (6, 160, 3, 2), (6, 320, 1, 1))
# Stages whose outputs are feature levels 1-4 (strides 2, 4, 8, 16); level 5 is the head output.
_FEATURE_STAGES = (0, 1, 2, 4)
_STEM_CHS = 32
_HEAD_CHS = 1280


class DepthwiseSeparableConv(nn.Module):
    """dw conv3x3 - BN - ReLU6 - pw conv1x1 - BN (the expansion-1 first block; no residual: 32 -> 16 channels)."""

    def __init__(self, in_chs: int, out_chs: int, stride: int = 1):
        super().__init__()
        self.conv_dw = nn.Conv2d(in_chs, in_chs, 3, stride, 1, groups=in_chs, bias=False)
        self.bn1 = nn.BatchNorm2d(in_chs)
        self.act1 = nn.ReLU6(inplace=True)
        self.conv_pw = nn.Conv2d(in_chs, out_chs, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_chs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn2(self.conv_pw(self.act1(self.bn1(self.conv_dw(x)))))


class InvertedResidual(nn.Module):
    """pw conv1x1 (expand) - BN - ReLU6 - dw conv3x3(stride) - BN - ReLU6 - pw conv1x1 (linear) - BN, residual
    when the shape is unchanged."""

    def __init__(self, in_chs: int, out_chs: int, stride: int, expansion: int):
        super().__init__()
        mid_chs = in_chs * expansion
        self.has_skip = stride == 1 and in_chs == out_chs
        self.conv_pw = nn.Conv2d(in_chs, mid_chs, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid_chs)
        self.act1 = nn.ReLU6(inplace=True)
        self.conv_dw = nn.Conv2d(mid_chs, mid_chs, 3, stride, 1, groups=mid_chs, bias=False)
        self.bn2 = nn.BatchNorm2d(mid_chs)
        self.act2 = nn.ReLU6(inplace=True)
        self.conv_pwl = nn.Conv2d(mid_chs, out_chs, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_chs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act1(self.bn1(self.conv_pw(x)))
        y = self.act2(self.bn2(self.conv_dw(y)))
        y = self.bn3(self.conv_pwl(y))
        return x + y if self.has_skip else y


class MobileNetV2(nn.Module):
    """MobileNetV2-1.0 feature extractor, no classifier.

    Input [B, in_chans, H, W]; output a list of five maps at strides 2, 4, 8, 16, 32 with channels
    ``out_channels`` = (16, 24, 32, 96, 1280).
    """

    reductions = (2, 4, 8, 16, 32)

    def __init__(self, in_chans: int = 3):
        super().__init__()
        self.conv_stem = nn.Conv2d(in_chans, _STEM_CHS, 3, 2, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(_STEM_CHS)
        self.act1 = nn.ReLU6(inplace=True)
        stages = []
        in_chs = _STEM_CHS
        for expansion, out_chs, repeats, stride in MOBILENET_V2_STAGES:
            blocks = []
            for j in range(repeats):
                s = stride if j == 0 else 1
                if expansion == 1:
                    blocks.append(DepthwiseSeparableConv(in_chs, out_chs, s))
                else:
                    blocks.append(InvertedResidual(in_chs, out_chs, s, expansion))
                in_chs = out_chs
            stages.append(nn.Sequential(*blocks))
        self.blocks = nn.Sequential(*stages)
        self.conv_head = nn.Conv2d(in_chs, _HEAD_CHS, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(_HEAD_CHS)
        self.act2 = nn.ReLU6(inplace=True)
        self.out_channels = tuple(MOBILENET_V2_STAGES[i][1] for i in _FEATURE_STAGES) + (_HEAD_CHS,)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.act1(self.bn1(self.conv_stem(x)))
        features = []
        for i, stage in enumerate(self.blocks):
            x = stage(x)
            if i in _FEATURE_STAGES:
                features.append(x)
        features.append(self.act2(self.bn2(self.conv_head(x))))
        return features


def mobilenet_v2(**kwargs) -> MobileNetV2:
    """MobileNetV2-1.0 features: channels (16, 24, 32, 96, 1280), 2.2M parameters without the classifier."""
    return MobileNetV2(**kwargs)
