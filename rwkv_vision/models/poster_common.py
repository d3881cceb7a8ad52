"""Parts shared by POSTER V2 (:mod:`.poster_v2`) and PosterRWKV (:mod:`.poster_rwkv`).

Both models run the same two streams on a 112x112 face and fuse them the same way; they differ only in the token
mixers (window cross attention + ViT vs. cross RWKV + RWKV blocks):

    image    -> ir_back (IR-50 stages 1-3) -> conv1..3 --------------------> 28x28x64, 14x14x128, 7x7x256
    landmark -> face_landback (MobileFaceNet, frozen) -> last_face_conv on 7x7 -> 28x28x64, 14x14x128, 7x7x256
    per scale i: t = window_i.norm(image tokens); y = attn_i(t, landmark tokens); o = ffn_i(y, shortcut=t)
    embed_q (28x28 -> 7x7), embed_k (14x14 -> 7x7), embed_v (7x7): 3 x 49 = 147 fusion tokens of width embed_dim
    fusion (subclass): tokens -> pooled feature -> SE gate -> head

Module names follow the official POSTER V2 code so that its checkpoints load strictly
(``create_model(name, checkpoint_path=...)``; see :mod:`rwkv_vision.convert.poster`).
"""

from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..convert.poster import convert_poster_checkpoint, log_dropped, read_poster_file
from ..hub import HubModel
from ..layers import DropPath, Mlp
from .backbones.ir50 import IR50
from .backbones.mobilefacenet import MobileFaceNet

FACE_SIZE = 112              # both backbones run on a 112x112 face (224 inputs are resized inside, as officially)
DIMS = (64, 128, 256)        # widths of the three cross-fusion scales; the first two are MobileFaceNet's conv_3/conv_4
GRIDS = (28, 14, 7)          # their side lengths at FACE_SIZE
NUM_FUSION_TOKENS = 3 * 7 * 7
CROSS_DROP_PATH = (0.0, 0.125, 0.25)   # official: torch.linspace(0, 0.5, 5)[:3]

# Image-stream backbones: constructor and the stride of the conv1..3 adapters that bring their stage outputs to the
# landmark stream's grids (IR-50 stages are at 56/28/14, MobileFaceNet's at 28/14/7).
IMAGE_BACKBONES: dict[str, tuple[Callable[[], nn.Module], int]] = {
    "ir50": (IR50, 2),
    "mobilefacenet": (lambda: MobileFaceNet(frozen=False), 1),
}

CrossMixerFactory = Callable[[int, int, int], nn.Module]   # (dim, scale index 0..2, grid side) -> mixer


def resize_to_face(x: torch.Tensor) -> torch.Tensor:
    """[B, 3, H, W] -> [B, 3, 112, 112]; nearest-neighbour like the official ``F.interpolate(x, size=112)``."""
    if x.dim() != 4 or x.shape[1] != 3:
        raise ValueError(f"expected an image batch [B, 3, H, W]; got shape {tuple(x.shape)} "
                         "(grey images must be replicated to 3 channels by the data pipeline)")
    return x if x.shape[-2:] == (FACE_SIZE, FACE_SIZE) else F.interpolate(x, size=(FACE_SIZE, FACE_SIZE))


def map_to_tokens(x: torch.Tensor) -> torch.Tensor:
    """[B, C, H, W] -> [B, H*W, C] in row-major order."""
    return x.flatten(2).transpose(1, 2)


class TokenNorm(nn.Module):
    """LayerNorm over channels of a feature map, returned as tokens (the official ``window`` module: with the
    window as large as the map, window partition is the identity). [B, C, H, W] -> [B, H*W, C]."""

    def __init__(self, dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(map_to_tokens(x))


class CrossFeedForward(nn.Module):
    """Residual and feed-forward after a cross mixer (official ``feedforward``), with layer scale.

    x = shortcut + DropPath(gamma1 * mixed);  x = x + DropPath(gamma2 * MLP(LN(x))).  Tokens [B, N, dim].
    """

    def __init__(self, dim: int, mlp_ratio: float = 4.0, layer_scale: float = 1e-5, drop_path: float = 0.0):
        super().__init__()
        self.gamma1 = nn.Parameter(torch.full((dim,), layer_scale))
        self.gamma2 = nn.Parameter(torch.full((dim,), layer_scale))
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.norm = nn.LayerNorm(dim)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, mixed: torch.Tensor, shortcut: torch.Tensor) -> torch.Tensor:
        x = shortcut + self.drop_path(self.gamma1 * mixed)
        return x + self.drop_path(self.gamma2 * self.mlp(self.norm(x)))


class PointwiseEmbed(nn.Module):
    """1x1 conv embedding of the 7x7 scale (official ``embed_v``, a ``PatchEmbed`` whose conv is 1x1).
    [B, C, 7, 7] -> [B, 49, embed_dim]."""

    def __init__(self, in_chs: int, embed_dim: int):
        super().__init__()
        self.proj = nn.Conv2d(in_chs, embed_dim, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return map_to_tokens(self.proj(x))


class SEBlock(nn.Module):
    """Squeeze-excitation gate on the pooled feature: x * sigmoid(Linear(ReLU(Linear(x)))). [B, D] -> [B, D]."""

    def __init__(self, dim: int):
        super().__init__()
        self.linear1 = nn.Linear(dim, dim)
        self.relu = nn.ReLU()
        self.linear2 = nn.Linear(dim, dim)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.sigmoid(self.linear2(self.relu(self.linear1(x))))


class ClassificationHead(nn.Module):
    """Linear classifier (official name kept for checkpoint keys ``head.linear``). [B, D] -> [B, num_classes]."""

    def __init__(self, dim: int, num_classes: int):
        super().__init__()
        self.linear = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)


class PosterBase(HubModel, pipeline_tag="image-classification", tags=["facial-expression-recognition"]):
    """Two streams, per-scale cross fusion and the 147-token fusion embedding; subclasses add the fusion stage.

    Args:
        cross_mixer: builds the token mixer of scale i as ``cross_mixer(dim, i, grid)``; the mixer is called as
            ``mixer(image_tokens, landmark_tokens, (grid, grid))`` with tokens [B, grid*grid, dim] and returns the
            same shape. Registered as ``attn1..3`` (official names).
        embed_dim: width of the 147 fusion tokens.
        image_backbone: "ir50" (POSTER V2) or "mobilefacenet" (a trainable copy; the small CPU variant).
        mlp_ratio: hidden ratio of the per-scale feed-forward.
        layer_scale: initial gamma of the per-scale residuals.
        drop_path: DropPath rate of each scale.
        freeze_landmarks: freeze the landmark backbone (weights and BatchNorm statistics).
        drift_landmark_bn: let the frozen landmark backbone's BatchNorm statistics update in training, as the
            official code does (for exact reproduction).
    """

    def __init__(self, cross_mixer: CrossMixerFactory, embed_dim: int = 768, image_backbone: str = "ir50",
                 mlp_ratio: float = 4.0, layer_scale: float = 1e-5, drop_path: tuple[float, ...] = CROSS_DROP_PATH,
                 freeze_landmarks: bool = True, drift_landmark_bn: bool = False):
        super().__init__()
        if image_backbone not in IMAGE_BACKBONES:
            raise ValueError(f"image_backbone must be one of {sorted(IMAGE_BACKBONES)}; got {image_backbone!r}")
        if len(drop_path) != 3:
            raise ValueError(f"drop_path needs one rate per scale (3); got {drop_path!r}")
        backbone_fn, adapter_stride = IMAGE_BACKBONES[image_backbone]
        self.embed_dim = embed_dim
        self.image_backbone = image_backbone

        self.face_landback = MobileFaceNet(frozen=freeze_landmarks, drift_bn_stats=drift_landmark_bn)
        self.ir_back = backbone_fn()
        for i, (in_chs, dim) in enumerate(zip(self.ir_back.out_channels, DIMS), start=1):
            self.add_module(f"conv{i}", nn.Conv2d(in_chs, dim, 3, stride=adapter_stride, padding=1))
        self.last_face_conv = nn.Conv2d(MobileFaceNet.out_channels[2], DIMS[2], 3, padding=1)
        for i, (dim, grid) in enumerate(zip(DIMS, GRIDS)):
            self.add_module(f"window{i + 1}", TokenNorm(dim))
            self.add_module(f"attn{i + 1}", cross_mixer(dim, i, grid))
            self.add_module(f"ffn{i + 1}", CrossFeedForward(dim, mlp_ratio, layer_scale, drop_path[i]))
        # 28x28 and 14x14 maps are strided down to 7x7 so that each scale gives 49 tokens.
        self.embed_q = nn.Sequential(nn.Conv2d(DIMS[0], embed_dim, 3, stride=2, padding=1),
                                     nn.Conv2d(embed_dim, embed_dim, 3, stride=2, padding=1))
        self.embed_k = nn.Sequential(nn.Conv2d(DIMS[1], embed_dim, 3, stride=2, padding=1))
        self.embed_v = PointwiseEmbed(DIMS[2], embed_dim)

    checkpoint_reader = staticmethod(read_poster_file)     # restricted unpickler for official files

    def checkpoint_filter_fn(self, checkpoint: Any) -> dict[str, torch.Tensor]:
        """Official POSTER V2 checkpoint or our state dict -> this model's state dict (``module.`` stripped, official
        dead modules dropped and logged; an optimizer-only file is an error)."""
        return log_dropped(convert_poster_checkpoint(checkpoint), type(self).__name__)

    def forward_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """Images [B, 3, H, W] (any size; resized to 112x112) -> fusion tokens [B, 147, embed_dim]:
        49 from the 28x28 scale, then 49 from 14x14, then 49 from 7x7, each 7x7 block in row-major order."""
        x = resize_to_face(x)
        lm1, lm2, lm3 = self.face_landback(x)
        landmarks = (lm1, lm2, self.last_face_conv(lm3))
        im1, im2, im3 = self.ir_back(x)
        images = (self.conv1(im1), self.conv2(im2), self.conv3(im3))
        fused = []
        for i, (img, lm) in enumerate(zip(images, landmarks), start=1):
            B, C, H, W = img.shape
            shortcut = getattr(self, f"window{i}")(img)            # official: residual from the normed tokens
            mixed = getattr(self, f"attn{i}")(shortcut, map_to_tokens(lm), (H, W))
            out = getattr(self, f"ffn{i}")(mixed, shortcut)
            fused.append(out.transpose(1, 2).reshape(B, C, H, W))
        return torch.cat([map_to_tokens(self.embed_q(fused[0])), map_to_tokens(self.embed_k(fused[1])),
                          self.embed_v(fused[2])], dim=1)
