"""ResNet-18/34/50 feature extractors for dense prediction (UNetDepth encoders).

Parameter names are timm's (``conv1``, ``bn1``, ``layer1..4.N.{conv,bn}{1,2,3}``, ``layerN.0.downsample.{0,1}``),
which are also torchvision's and hence segmentation_models_pytorch's: timm / torchvision / smp ResNet weights load
with no renaming once the classifier (``fc.*``) is dropped (see :mod:`rwkv_vision.convert.timm`). The pooling and
``fc`` head are left out since a dense decoder never uses them.

The forward returns five feature maps, for an input [B, in_chans, H, W] with H, W divisible by 32:
stride 2 (after the stem ReLU, before the max pool), 4 (layer1), 8 (layer2), 16 (layer3), 32 (layer4).
Channels: (64, 64, 128, 256, 512) for ResNet-18/34, (64, 256, 512, 1024, 2048) for ResNet-50.
"""

from __future__ import annotations

import torch
import torch.nn as nn


def _downsample(in_chs: int, out_chs: int, stride: int) -> nn.Module | None:
    """Projection shortcut (conv1x1 + BN) when the shape changes, else None (identity)."""
    if stride == 1 and in_chs == out_chs:
        return None
    return nn.Sequential(nn.Conv2d(in_chs, out_chs, 1, stride, bias=False), nn.BatchNorm2d(out_chs))


class BasicBlock(nn.Module):
    """conv3x3(stride) - BN - ReLU - conv3x3 - BN, plus shortcut, then ReLU (ResNet-18/34)."""

    expansion = 1

    def __init__(self, in_chs: int, chs: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_chs, chs, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(chs)
        self.act1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(chs, chs, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(chs)
        self.act2 = nn.ReLU(inplace=True)
        self.downsample = _downsample(in_chs, chs, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        x = self.act1(self.bn1(self.conv1(x)))
        x = self.bn2(self.conv2(x))
        return self.act2(x + shortcut)


class Bottleneck(nn.Module):
    """conv1x1 - BN - ReLU - conv3x3(stride) - BN - ReLU - conv1x1(4x) - BN, plus shortcut, then ReLU (ResNet-50).

    The stride sits on the 3x3 conv ("ResNet v1.5"), as in timm and torchvision.
    """

    expansion = 4

    def __init__(self, in_chs: int, chs: int, stride: int = 1):
        super().__init__()
        out_chs = chs * self.expansion
        self.conv1 = nn.Conv2d(in_chs, chs, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(chs)
        self.act1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(chs, chs, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(chs)
        self.act2 = nn.ReLU(inplace=True)
        self.conv3 = nn.Conv2d(chs, out_chs, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_chs)
        self.act3 = nn.ReLU(inplace=True)
        self.downsample = _downsample(in_chs, out_chs, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        x = self.act1(self.bn1(self.conv1(x)))
        x = self.act2(self.bn2(self.conv2(x)))
        x = self.bn3(self.conv3(x))
        return self.act3(x + shortcut)


class ResNet(nn.Module):
    """ResNet feature extractor: stem (conv7x7/2 - BN - ReLU - maxpool/2) and four stages, no classifier.

    Args:
        block: ``BasicBlock`` or ``Bottleneck``.
        layers: number of blocks in each of the four stages.
        in_chans: input channels.

    Input [B, in_chans, H, W]; output a list of five maps at strides 2, 4, 8, 16, 32 with ``out_channels`` channels.
    """

    reductions = (2, 4, 8, 16, 32)

    def __init__(self, block: type[BasicBlock] | type[Bottleneck], layers: tuple[int, int, int, int],
                 in_chans: int = 3):
        super().__init__()
        self.conv1 = nn.Conv2d(in_chans, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.act1 = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        in_chs = 64
        for i, (chs, depth) in enumerate(zip((64, 128, 256, 512), layers), start=1):
            stride = 1 if i == 1 else 2  # layer1 follows the max pool, already at stride 4
            blocks = []
            for j in range(depth):
                blocks.append(block(in_chs, chs, stride if j == 0 else 1))
                in_chs = chs * block.expansion
            self.add_module(f"layer{i}", nn.Sequential(*blocks))
        self.out_channels = (64,) + tuple(c * block.expansion for c in (64, 128, 256, 512))
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.act1(self.bn1(self.conv1(x)))
        features = [x]
        x = self.maxpool(x)
        for stage in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = stage(x)
            features.append(x)
        return features


def resnet18(**kwargs) -> ResNet:
    """ResNet-18 features: channels (64, 64, 128, 256, 512), 11.2M parameters without ``fc``."""
    return ResNet(BasicBlock, (2, 2, 2, 2), **kwargs)


def resnet34(**kwargs) -> ResNet:
    """ResNet-34 features: channels (64, 64, 128, 256, 512), 21.3M parameters without ``fc``."""
    return ResNet(BasicBlock, (3, 4, 6, 3), **kwargs)


def resnet50(**kwargs) -> ResNet:
    """ResNet-50 features: channels (64, 256, 512, 1024, 2048), 23.5M parameters without ``fc``."""
    return ResNet(Bottleneck, (3, 4, 6, 3), **kwargs)
