"""POSTER V2 (Mao et al., arXiv 2301.12149; official code Talented-Q/POSTER_V2, MIT), faithful to the official model.

Per scale, window cross attention whose query is the landmark feature itself (no projection) and whose keys and
values come from the normalised image tokens, with a relative position bias; the window is the whole map
(784 / 196 / 49 tokens). The 147 fusion tokens then go through a 2-block ViT with a class token, the class token
through an SE gate and the linear head. Shared parts and the data flow: :mod:`.poster_common`.

Module names are the official ones, minus the modules the official file builds but never runs (listed in
:data:`rwkv_vision.convert.poster.POSTER_V2_DEAD_KEYS`), so official checkpoints load strictly after conversion.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..convert.poster import load_backbone_files
from ..layers import Attention, Mlp
from ..registry import register_model
from .poster_common import NUM_FUSION_TOKENS, ClassificationHead, PosterBase, SEBlock

CROSS_HEADS = (2, 4, 8)       # head dim 32 at every scale


class CrossWindowAttention(nn.Module):
    """Window cross attention (official ``WindowAttentionGlobal``) with a whole-map window of side ``window``.

    q = landmark tokens split into heads (no projection), k, v = Linear(dim, 2 dim)(image tokens),
    attention logits q k^T / sqrt(head_dim) + relative position bias; out = proj(attention @ v).
    Tokens [B, window^2, dim] -> [B, window^2, dim].
    """

    def __init__(self, dim: int, num_heads: int, window: int):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.window = window
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, num_heads))
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        # Persistent because the official checkpoints carry it.
        self.register_buffer("relative_position_index", self._relative_position_index(window))
        self.qkv = nn.Linear(dim, 2 * dim)          # official name; it makes k and v only
        self.proj = nn.Linear(dim, dim)

    @staticmethod
    def _relative_position_index(window: int) -> torch.Tensor:
        """[window^2, window^2] int64 index into the (2 window - 1)^2 bias table (Swin convention)."""
        coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
        rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (window - 1)
        return rel[..., 0] * (2 * window - 1) + rel[..., 1]

    def forward(self, x: torch.Tensor, landmarks: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        B, N, C = x.shape
        if hw != (self.window, self.window) or landmarks.shape != x.shape:
            raise ValueError(f"{type(self).__name__}: expected image and landmark tokens [B, {self.window ** 2}, C] "
                             f"on a {self.window}x{self.window} grid; got {tuple(x.shape)}, "
                             f"{tuple(landmarks.shape)}, grid {hw}")
        head_dim = C // self.num_heads
        k, v = self.qkv(x).view(B, N, 2, self.num_heads, head_dim).permute(2, 0, 3, 1, 4)
        q = landmarks.reshape(B, N, self.num_heads, head_dim).transpose(1, 2)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        bias = bias.view(N, N, self.num_heads).permute(2, 0, 1).to(q.dtype)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)          # scale 1/sqrt(head_dim)
        return self.proj(y.transpose(1, 2).reshape(B, N, C))


class ViTBlock(nn.Module):
    """Pre-norm ViT block: x += Attn(LN(x)); x += MLP(LN(x)); LayerNorm eps 1e-6 (no drop path: official rate 0)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class FusionTransformer(nn.Module):
    """Fusion ViT (official ``VIT``): class token + learned position embedding over the 147 tokens, ``depth`` blocks,
    final LayerNorm; the class token then goes through the SE gate and the head.

    forward_features: [B, 147, dim] -> [B, 148, dim]; forward_head: -> [B, num_classes] (or [B, dim] pre-logits).
    """

    def __init__(self, dim: int, depth: int, num_heads: int, num_classes: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, NUM_FUSION_TOKENS + 1, dim))
        self.blocks = nn.Sequential(*[ViTBlock(dim, num_heads, mlp_ratio) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.se_block = SEBlock(dim)
        self.head = ClassificationHead(dim, num_classes)
        # Official init: trunc-normal 0.01 on linears, 0.02 on the token and position embedding.
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.01)
                nn.init.zeros_(m.bias)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        return self.norm(self.blocks(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.se_block(x[:, 0])
        return x if pre_logits else self.head(x)


class PosterV2(PosterBase):
    """POSTER V2 facial expression recogniser.

    Input [B, 3, H, W] RGB face, ImageNet-normalised (224x224 officially; any size is resized to 112x112 inside,
    nearest-neighbour as the official code); output logits [B, num_classes].

    Args:
        num_classes: 7 (RAF-DB, AffectNet-7, CAER-S) or 8 (AffectNet-8).
        embed_dim, depth, num_heads: fusion ViT width, blocks and heads (official 768, 2, 8).
        freeze_landmarks, drift_landmark_bn: see :class:`~rwkv_vision.models.poster_common.PosterBase`.
    """

    def __init__(self, num_classes: int = 7, embed_dim: int = 768, depth: int = 2, num_heads: int = 8,
                 freeze_landmarks: bool = True, drift_landmark_bn: bool = False):
        super().__init__(lambda dim, i, grid: CrossWindowAttention(dim, CROSS_HEADS[i], grid), embed_dim=embed_dim,
                         image_backbone="ir50", freeze_landmarks=freeze_landmarks,
                         drift_landmark_bn=drift_landmark_bn)
        self.num_classes = num_classes
        self.VIT = FusionTransformer(embed_dim, depth, num_heads, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """[B, 3, H, W] -> normalised fusion tokens with the class token first, [B, 148, embed_dim]."""
        return self.VIT.forward_features(self.forward_tokens(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.VIT.forward_head(x, pre_logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


@register_model
def poster_v2(num_classes: int = 7, ir50_path: str | None = None, mobilefacenet_path: str | None = None,
              **kwargs) -> PosterV2:
    """POSTER V2 at the official sizes (43.75M parameters; 43.85M with the official unused landmark head).

    ``num_classes`` 7 or 8. ``ir50_path`` / ``mobilefacenet_path``: the official pretrained backbone files, loaded
    into ``ir_back`` / ``face_landback``. ``create_model("poster_v2", checkpoint_path=...)`` then loads an official
    POSTER V2 checkpoint or a state dict of this model (see :mod:`rwkv_vision.convert.poster`).
    """
    model = PosterV2(num_classes=num_classes, **kwargs)
    load_backbone_files(model, ir50_path=ir50_path, mobilefacenet_path=mobilefacenet_path)
    return model
