"""UNetDepth: monocular depth estimation with a UNet decoder over CNN or RWKV encoders.

The decoder follows segmentation_models_pytorch's ``Unet`` (five blocks of nearest x2 upsampling, concatenation with
the skip of the same stride, two conv3x3-BN-ReLU), so an ``smp.Unet`` with a resnet or mobilenet_v2 encoder converts
exactly (:func:`rwkv_vision.convert.smp.from_smp_unet`). The depth head is a conv3x3 to one channel followed by a
bounded activation, so the output is a depth in metres inside [min_depth, max_depth].

Encoders (five feature levels at strides 2, 4, 8, 16, 32):
  ``resnet18``, ``resnet34``, ``resnet50``, ``mobilenet_v2``  timm parameter names, see :mod:`.backbones`
  ``rwkv_tiny``                                               conv stem at 1/2, 1/4, 1/8; Vision-RWKV blocks at 1/16
                                                              and 1/32 (:class:`RWKVHybridEncoder`)

Pretrained encoders (``create_model("unet_depth_resnet18", pretrained=True)``, see ``default_cfgs``): the CNN encoders
load timm's ImageNet-1k weights from timm's Hub repositories (``timm/resnet18.a1_in1k``, ...;
:func:`rwkv_vision.convert.timm_to_encoder_state_dict`), the RWKV encoder's blocks load VRWKV-T's
(``OpenGVLab/Vision-RWKV``). Only that submodule is loaded, strictly; the decoder, the head (and the RWKV encoder's
convolutional stem and norms) keep their fresh initialisation: train the model on depth data before use.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..hub import HubModel
from ..layers import RWKVBlock
from ..registry import get_pretrained_cfg, register_model
from .backbones import mobilenet_v2, resnet18, resnet34, resnet50
from .rwkv_vit import IMAGENET_MEAN, IMAGENET_STD, VISION_RWKV_HUB


class ConvBnReLU(nn.Sequential):
    """conv3x3 (no bias) - BN - ReLU; [B, in_chs, H, W] -> [B, out_chs, H / stride, W / stride]."""

    def __init__(self, in_chs: int, out_chs: int, stride: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(in_chs, out_chs, 3, stride, 1, bias=False)
        self.bn = nn.BatchNorm2d(out_chs)
        self.act = nn.ReLU(inplace=True)


# Keys of an official VRWKV-T file that have no counterpart in the hybrid encoder's blocks: its patch embedding, position
# embedding, final norm and classifier (the hybrid encoder has its own conv stem, token embeddings and norms).
VISION_RWKV_UNUSED_KEYS = ("backbone.patch_embed.projection.weight", "backbone.patch_embed.projection.bias",
                           "backbone.pos_embed", "backbone.ln1.weight", "backbone.ln1.bias",
                           "head.fc.weight", "head.fc.bias")
_VISION_RWKV_BLOCKS = "backbone.layers."


class VisionRWKVBlocks(nn.ModuleList):
    """The hybrid encoder's stack of RWKV blocks (a ``ModuleList``: keys ``{i}.*``), which can load the blocks of an
    official Vision-RWKV checkpoint (``load_checkpoint(encoder.blocks, path)``, or ``pretrained=True``)."""

    def checkpoint_filter_fn(self, checkpoint: Mapping) -> dict[str, torch.Tensor]:
        """Official file -> ``{i}.*`` block weights: ``backbone.layers.{i}.*`` maps to ``{i}.*``, the keys of
        :data:`VISION_RWKV_UNUSED_KEYS` are dropped, any other key is an error naming it (missing or mis-shaped block
        keys are reported by the strict load that follows). Our own block state dicts pass through unwrapped."""
        from ..convert.vision_rwkv import is_vision_rwkv_state_dict, unwrap_checkpoint
        state_dict = unwrap_checkpoint(checkpoint)
        if not is_vision_rwkv_state_dict(state_dict):
            return state_dict
        blocks, unknown = {}, []
        for key, value in state_dict.items():
            if key.startswith(_VISION_RWKV_BLOCKS):
                blocks[key[len(_VISION_RWKV_BLOCKS):]] = value
            elif key not in VISION_RWKV_UNUSED_KEYS:
                unknown.append(key)
        if unknown:
            raise ValueError(f"Vision-RWKV checkpoint keys with no place in the RWKV encoder's blocks ({len(unknown)}): "
                             f"{'; '.join(unknown)} (only {_VISION_RWKV_BLOCKS}* loads; ignored: "
                             f"{', '.join(VISION_RWKV_UNUSED_KEYS)})")
        return blocks


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
        self.blocks = VisionRWKVBlocks(RWKVBlock(embed_dim, layer_id=i, depth=depth) for i in range(depth))
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
# Encoders with timm's parameter names -> timm's ImageNet-1k weights on the Hub (the default tag of each timm
# architecture in timm 1.0: resnet18/34/50 -> .a1_in1k, mobilenetv2_100 -> .ra_in1k; licences from timm's cfgs).
TIMM_ENCODERS = {
    "resnet18": "timm/resnet18.a1_in1k",
    "resnet34": "timm/resnet34.a1_in1k",
    "resnet50": "timm/resnet50.a1_in1k",
    "mobilenet_v2": "timm/mobilenetv2_100.ra_in1k",
}


def _encoder_cfg(hf_hub_id: str, filename: str, checkpoint_format: str, submodule: str, license: str) -> dict:
    """Pretrained configuration of a UNetDepth whose ``submodule`` starts from ImageNet weights (the rest fresh)."""
    return {"hf_hub_id": hf_hub_id, "hf_hub_filename": filename, "checkpoint_format": checkpoint_format,
            "pretrained_submodule": submodule, "task": "depth-estimation", "license": license,
            "mean": IMAGENET_MEAN, "std": IMAGENET_STD}


default_cfgs: dict[str, dict] = {
    **{f"unet_depth_{encoder}": _encoder_cfg(repo, "model.safetensors", "timm", "encoder", "apache-2.0")
       for encoder, repo in TIMM_ENCODERS.items()},
    # VRWKV-T's 12 blocks (the same layout: backbone.layers.{i} -> encoder.blocks.{i}); stem, token embeddings and
    # norms have no counterpart in the file and stay freshly initialised.
    "unet_depth_rwkv_tiny": _encoder_cfg(VISION_RWKV_HUB, "vrwkv_t_in1k_224.pth", "vision_rwkv", "encoder.blocks",
                                         "apache-2.0"),
}


def _timm_checkpoint_filter(checkpoint: Mapping, encoder: str) -> dict[str, torch.Tensor]:
    from ..convert.timm import timm_to_encoder_state_dict  # the converter imports this module
    return timm_to_encoder_state_dict(checkpoint, encoder)


def create_encoder(name: str, in_chans: int = 3) -> nn.Module:
    """Build the encoder ``name`` (a key of ``ENCODERS``): a module mapping [B, in_chans, H, W] to five feature maps
    at strides 2..32, with ``out_channels`` (5 ints) and ``reductions`` attributes. The CNN encoders get a
    ``checkpoint_filter_fn`` that converts timm state dicts (:func:`rwkv_vision.convert.timm_to_encoder_state_dict`),
    so ``load_checkpoint(encoder, path)`` and ``pretrained=True`` read timm's files."""
    if name not in ENCODERS:
        raise ValueError(f"unknown UNetDepth encoder {name!r}; available: {', '.join(ENCODERS)}")
    encoder = ENCODERS[name](in_chans=in_chans)
    if name in TIMM_ENCODERS:
        encoder.checkpoint_filter_fn = partial(_timm_checkpoint_filter, encoder=name)
    return encoder


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


def _create_unet_depth(variant: str, encoder: str, overrides: dict) -> UNetDepth:
    model = UNetDepth(**{"encoder": encoder, **overrides})
    model.pretrained_cfg = get_pretrained_cfg(variant)
    return model


@register_model
def unet_depth_resnet18(**overrides) -> UNetDepth:
    """UNetDepth with a ResNet-18 encoder (pretrained: timm's ImageNet-1k encoder)."""
    return _create_unet_depth("unet_depth_resnet18", "resnet18", overrides)


@register_model
def unet_depth_resnet34(**overrides) -> UNetDepth:
    """UNetDepth with a ResNet-34 encoder (pretrained: timm's ImageNet-1k encoder)."""
    return _create_unet_depth("unet_depth_resnet34", "resnet34", overrides)


@register_model
def unet_depth_resnet50(**overrides) -> UNetDepth:
    """UNetDepth with a ResNet-50 encoder (pretrained: timm's ImageNet-1k encoder)."""
    return _create_unet_depth("unet_depth_resnet50", "resnet50", overrides)


@register_model
def unet_depth_mobilenet_v2(**overrides) -> UNetDepth:
    """UNetDepth with a MobileNetV2-1.0 encoder (pretrained: timm's ImageNet-1k encoder)."""
    return _create_unet_depth("unet_depth_mobilenet_v2", "mobilenet_v2", overrides)


@register_model
def unet_depth_rwkv_tiny(**overrides) -> UNetDepth:
    """UNetDepth with the RWKV hybrid encoder: conv stem to 1/8, 8 VRWKV-T blocks at 1/16, 4 at 1/32 (pretrained: the
    blocks of the official VRWKV-T ImageNet-1k file)."""
    return _create_unet_depth("unet_depth_rwkv_tiny", "rwkv_tiny", overrides)
