"""UNetDepth: monocular depth estimation with a UNet decoder over CNN or RWKV encoders.

The decoder follows segmentation_models_pytorch's ``Unet`` (five blocks of nearest x2 upsampling, concatenation with
the skip of the same stride, two conv3x3-BN-ReLU), so an ``smp.Unet`` with a resnet or mobilenet_v2 encoder converts
exactly (:func:`rwkv_vision.convert.smp.from_smp_unet`). The depth head is a conv3x3 to one channel followed by a
bounded activation, so the output is a depth in metres inside [min_depth, max_depth].

Encoders (five feature levels at strides 2, 4, 8, 16, 32):
  ``resnet18``, ``resnet34``, ``resnet50``, ``mobilenet_v2``  timm parameter names, see :mod:`.backbones`
  ``rwkv_tiny``                                               conv stem at 1/2, 1/4, 1/8; Vision-RWKV blocks at 1/16
                                                              and 1/32 (:class:`RWKVHybridEncoder`)
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..hub import HubModel
from ..layers import RWKVBlock
from ..registry import register_model
from .backbones import mobilenet_v2, resnet18, resnet34, resnet50


class ConvBnReLU(nn.Sequential):
    """conv3x3 (no bias) - BN - ReLU; [B, in_chs, H, W] -> [B, out_chs, H / stride, W / stride]."""

    def __init__(self, in_chs: int, out_chs: int, stride: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(in_chs, out_chs, 3, stride, 1, bias=False)
        self.bn = nn.BatchNorm2d(out_chs)
        self.act = nn.ReLU(inplace=True)


class RWKVHybridEncoder(nn.Module):
    """Convolutional stem for strides 2, 4, 8, then Vision-RWKV blocks at strides 16 and 32.

    Stem stage i (i = 1..3): ConvBnReLU(stride 2) - ConvBnReLU, widths ``stem_channels``. Token stage at 1/16:
    Conv2d(k = stride = 2) to ``embed_dim`` tokens, ``depths[0]`` RWKV blocks; at 1/32: another k = stride = 2 conv
    and ``depths[1]`` blocks. Each token stage ends with a LayerNorm and is reshaped to a map for the decoder. The
    convolutions give the tokens their position (no position embedding, so any input size works as is).

    All ``sum(depths)`` blocks form one stack ``blocks`` (layer ids 0..L-1 for the fancy init, ``ln0`` on block 0
    only), laid out like a plain Vision-RWKV: with ``embed_dim=192`` and ``depths=(8, 4)`` block i takes the weights
    of VRWKV-T's ``backbone.layers.{i}`` by key prefix alone.

    Input [B, in_chans, H, W], H, W divisible by 32; output five maps with channels
    ``stem_channels + (embed_dim, embed_dim)`` at strides 2, 4, 8, 16, 32.
    """

    reductions = (2, 4, 8, 16, 32)

    def __init__(self, in_chans: int = 3, stem_channels: tuple[int, int, int] = (32, 64, 128),
                 embed_dim: int = 192, depths: tuple[int, int] = (8, 4)):
        super().__init__()
        widths = (in_chans,) + tuple(stem_channels)
        self.stem = nn.ModuleList(nn.Sequential(ConvBnReLU(widths[i], widths[i + 1], stride=2),
                                                ConvBnReLU(widths[i + 1], widths[i + 1])) for i in range(3))
        self.embed16 = nn.Conv2d(stem_channels[-1], embed_dim, 2, 2)
        self.embed32 = nn.Conv2d(embed_dim, embed_dim, 2, 2)
        depth = sum(depths)
        self.blocks = nn.ModuleList(RWKVBlock(embed_dim, layer_id=i, depth=depth) for i in range(depth))
        self.norm16 = nn.LayerNorm(embed_dim)
        self.norm32 = nn.LayerNorm(embed_dim)
        self.depths = tuple(depths)
        self.out_channels = tuple(stem_channels) + (embed_dim, embed_dim)

    def _token_stage(self, x: torch.Tensor, blocks: nn.ModuleList, norm: nn.LayerNorm) -> torch.Tensor:
        """Map [B, C, h, w] -> tokens [B, h*w, C] through ``blocks`` and ``norm`` -> map [B, C, h, w]."""
        b, c, h, w = x.shape
        tokens = x.flatten(2).transpose(1, 2)
        for block in blocks:
            tokens = block(tokens, (h, w))
        return norm(tokens).transpose(1, 2).reshape(b, c, h, w)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = []
        for stage in self.stem:
            x = stage(x)
            features.append(x)
        x = self._token_stage(self.embed16(x), self.blocks[:self.depths[0]], self.norm16)
        features.append(x)
        features.append(self._token_stage(self.embed32(x), self.blocks[self.depths[0]:], self.norm32))
        return features


def rwkv_tiny(in_chans: int = 3) -> RWKVHybridEncoder:
    """Hybrid encoder with VRWKV-T blocks (C = 192, 8 at 1/16 + 4 at 1/32): channels (32, 64, 128, 192, 192)."""
    return RWKVHybridEncoder(in_chans, stem_channels=(32, 64, 128), embed_dim=192, depths=(8, 4))


ENCODERS: dict[str, Callable[..., nn.Module]] = {
    "resnet18": resnet18,
    "resnet34": resnet34,
    "resnet50": resnet50,
    "mobilenet_v2": mobilenet_v2,
    "rwkv_tiny": rwkv_tiny,
}
HEAD_ACTIVATIONS = ("sigmoid", "identity")


def create_encoder(name: str, in_chans: int = 3) -> nn.Module:
    """Build the encoder ``name`` (a key of ``ENCODERS``): a module mapping [B, in_chans, H, W] to five feature maps
    at strides 2..32, with ``out_channels`` (5 ints) and ``reductions`` attributes."""
    if name not in ENCODERS:
        raise ValueError(f"unknown UNetDepth encoder {name!r}; available: {', '.join(ENCODERS)}")
    return ENCODERS[name](in_chans=in_chans)


class DecoderBlock(nn.Module):
    """Nearest x2 upsampling, concatenation with the skip (if any), then two ConvBnReLU.

    [B, in_chs, h, w] (+ skip [B, skip_chs, 2h, 2w]) -> [B, out_chs, 2h, 2w].
    """

    def __init__(self, in_chs: int, skip_chs: int, out_chs: int):
        super().__init__()
        self.conv1 = ConvBnReLU(in_chs + skip_chs, out_chs)
        self.conv2 = ConvBnReLU(out_chs, out_chs)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        if skip is not None:
            x = torch.cat([x, skip], dim=1)
        return self.conv2(self.conv1(x))


class UNetDecoder(nn.Module):
    """UNet decoder over five encoder levels (strides 2..32), as smp's ``UnetDecoder`` with depth 5.

    Block i upsamples to stride 2^(4-i) and concatenates the encoder level of that stride; the last block reaches the
    input resolution with no skip. Input: the five encoder maps; output [B, decoder_channels[-1], H, W].
    """

    def __init__(self, encoder_channels: tuple[int, ...], decoder_channels: tuple[int, ...]):
        super().__init__()
        if len(encoder_channels) != 5 or len(decoder_channels) != 5:
            raise ValueError(f"UNetDecoder needs 5 encoder and 5 decoder widths, got encoder {tuple(encoder_channels)}"
                             f" and decoder {tuple(decoder_channels)}")
        in_chs = (encoder_channels[-1],) + tuple(decoder_channels[:-1])
        skip_chs = tuple(encoder_channels[-2::-1]) + (0,)
        self.blocks = nn.ModuleList(DecoderBlock(i, s, o) for i, s, o in zip(in_chs, skip_chs, decoder_channels))

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        x = features[-1]
        skips = features[-2::-1]
        for i, block in enumerate(self.blocks):
            x = block(x, skips[i] if i < len(skips) else None)
        return x


class DepthHead(nn.Module):
    """conv3x3 to one channel, then the output activation.

    ``activation="sigmoid"``: depth = min_depth + (max_depth - min_depth) * sigmoid(logit), in metres, never outside
    [min_depth, max_depth]. ``"identity"``: the raw conv output (unbounded; for converted models that were trained
    without an activation, e.g. smp UNets regressing depth/10).
    """

    def __init__(self, in_chs: int, min_depth: float, max_depth: float, activation: str = "sigmoid"):
        super().__init__()
        if activation not in HEAD_ACTIVATIONS:
            raise ValueError(f"head activation must be one of {HEAD_ACTIVATIONS}, got {activation!r}")
        if not 0.0 <= min_depth < max_depth:
            raise ValueError(f"need 0 <= min_depth < max_depth, got min_depth={min_depth}, max_depth={max_depth}")
        self.conv = nn.Conv2d(in_chs, 1, 3, 1, 1)
        self.activation = activation
        self.min_depth = min_depth
        self.max_depth = max_depth

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logit = self.conv(x)
        if self.activation == "identity":
            return logit
        return self.min_depth + (self.max_depth - self.min_depth) * torch.sigmoid(logit)


class UNetDepth(HubModel, pipeline_tag="depth-estimation"):
    """Monocular depth: encoder (5 levels) -> UNet decoder -> bounded depth head.

    Args:
        encoder: encoder name, one of ``resnet18``, ``resnet34``, ``resnet50``, ``mobilenet_v2``, ``rwkv_tiny``.
        decoder_channels: widths of the five decoder blocks, deepest first.
        min_depth, max_depth: output range in metres (NYU protocol: 1e-3, 10).
        in_chans: input channels.
        head_activation: ``"sigmoid"`` (bounded, metres) or ``"identity"`` (raw logits; min/max unused).

    Input [B, in_chans, H, W], any H, W: it is padded at the bottom/right to a multiple of 32 by edge replication
    (zero padding would show the network a false depth edge) and the output is cropped back.
    Output [B, 1, H, W], depth in metres. The model expects ImageNet-normalised RGB, as the encoders' weights do.
    """

    def __init__(self, encoder: str = "resnet34", decoder_channels: tuple[int, ...] = (256, 128, 64, 32, 16),
                 min_depth: float = 1e-3, max_depth: float = 10.0, in_chans: int = 3,
                 head_activation: str = "sigmoid"):
        super().__init__()
        self.encoder = create_encoder(encoder, in_chans)
        self.decoder = UNetDecoder(self.encoder.out_channels, tuple(decoder_channels))
        self.head = DepthHead(decoder_channels[-1], min_depth, max_depth, head_activation)
        self.stride = self.encoder.reductions[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4:
            raise ValueError(f"UNetDepth expects [B, C, H, W], got shape {tuple(x.shape)}")
        h, w = x.shape[-2:]
        pad_h, pad_w = -h % self.stride, -w % self.stride
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
        depth = self.head(self.decoder(self.encoder(x)))
        return depth[..., :h, :w]


@register_model
def unet_depth_resnet18(**overrides) -> UNetDepth:
    """UNetDepth with a ResNet-18 encoder."""
    return UNetDepth(**{"encoder": "resnet18", **overrides})


@register_model
def unet_depth_resnet34(**overrides) -> UNetDepth:
    """UNetDepth with a ResNet-34 encoder."""
    return UNetDepth(**{"encoder": "resnet34", **overrides})


@register_model
def unet_depth_resnet50(**overrides) -> UNetDepth:
    """UNetDepth with a ResNet-50 encoder."""
    return UNetDepth(**{"encoder": "resnet50", **overrides})


@register_model
def unet_depth_mobilenet_v2(**overrides) -> UNetDepth:
    """UNetDepth with a MobileNetV2-1.0 encoder."""
    return UNetDepth(**{"encoder": "mobilenet_v2", **overrides})


@register_model
def unet_depth_rwkv_tiny(**overrides) -> UNetDepth:
    """UNetDepth with the RWKV hybrid encoder: conv stem to 1/8, 8 VRWKV-T blocks at 1/16, 4 at 1/32."""
    return UNetDepth(**{"encoder": "rwkv_tiny", **overrides})
