"""PosterRWKV: POSTER V2 with every attention replaced by RWKV (Bi-WKV) token mixing.

Same two streams, per-scale residual + feed-forward, fusion embeddings, SE gate and head as POSTER V2
(:mod:`.poster_common`); the token mixers change:

- cross fusion at each scale (:class:`CrossSpatialMix`): the image tokens give k and v through the Vision-RWKV
  Q-Shift token mix, the landmark tokens give the receptance r (the role the query plays in POSTER V2):
  y = output(sigmoid(r) * BiWKV(k, v)). With ``landmark_key=True`` the landmark tokens also add to the key, so they
  shape the WKV weights over tokens and not only the output gate.
- fusion: RWKV blocks over the 147 tokens, Q-Shift inside each 7x7 scale map (:class:`MapwiseQShift`) and Bi-WKV over
  the whole sequence; mean pooling instead of a class token.

Design and every difference from POSTER V2: ``docs/poster_rwkv.md``.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ..convert.poster import load_backbone_files
from ..layers import QShift, RWKVBlock, SpatialMix, init_linear, q_shift
from ..ops import bi_wkv
from ..registry import register_model
from .poster_common import GRIDS, NUM_FUSION_TOKENS, ClassificationHead, PosterBase, SEBlock

FUSION_MAP = GRIDS[2]    # each scale contributes one 7x7 map of fusion tokens


class CrossSpatialMix(SpatialMix):
    """Cross-stream Vision-RWKV spatial mix: k, v from the image tokens, r from the landmark tokens.

    xx = QShift(x), ll = QShift(l) on the grid; x* = x mu* + xx (1 - mu*), l* = l mu* + ll (1 - mu*);
    k = key(xk) [+ landmark_key(lk)], v = value(xv), r = receptance(lr);
    y = output(sigmoid(r) * BiWKV(k, v, spatial_decay / T, spatial_first / T)).
    Parameters and their init are those of :class:`~rwkv_vision.layers.SpatialMix` (a single layer: layer_id 0,
    depth 1), plus the bias-free ``landmark_key`` Linear when ``landmark_key=True``.

    Call ``mix(x, landmarks, hw)`` with image and landmark tokens [B, N, C] on the grid hw = (H, W); returns
    [B, N, C].
    """

    def __init__(self, dim: int, landmark_key: bool = False):
        super().__init__(dim, layer_id=0, depth=1)
        self.landmark_key = nn.Linear(dim, dim, bias=False) if landmark_key else None
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        super().reset_parameters()
        if getattr(self, "landmark_key", None) is not None:     # absent while SpatialMix.__init__ runs
            init_linear(self.landmark_key)

    def forward(self, x: torch.Tensor, landmarks: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        if landmarks.shape != x.shape:
            raise ValueError(f"CrossSpatialMix: image tokens {tuple(x.shape)} and landmark tokens "
                             f"{tuple(landmarks.shape)} must have the same shape")
        xx, ll = self.shift(x, hw), self.shift(landmarks, hw)
        mk, mv, mr = self.spatial_mix_k, self.spatial_mix_v, self.spatial_mix_r
        k = self.key(x * mk + xx * (1 - mk))
        if self.landmark_key is not None:
            k = k + self.landmark_key(landmarks * mk + ll * (1 - mk))
        v = self.value(x * mv + xx * (1 - mv))
        r = self.receptance(landmarks * mr + ll * (1 - mr))
        T = x.shape[1]
        return self.output(torch.sigmoid(r) * bi_wkv(k, v, self.spatial_decay / T, self.spatial_first / T))


class MapwiseQShift(QShift):
    """Q-Shift applied separately to each of the equal maps stacked in the sequence.

    ``forward(x, hw)`` with x [B, M*H*W, C] (M maps of H x W tokens, each in raster order) and hw = (H, W) of one
    map; no token takes a neighbour from another map. Returns [B, M*H*W, C].
    """

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        B, N, C = x.shape
        cells = int(hw[0]) * int(hw[1])
        if N % cells:
            raise ValueError(f"MapwiseQShift: {N} tokens are not a whole number of {hw[0]}x{hw[1]} maps")
        maps = x.reshape(B * (N // cells), cells, C)
        return q_shift(maps, hw, self.shift_pixel, self.channel_gamma).reshape(B, N, C)


class FusionRWKV(nn.Module):
    """Fusion stage: learned position embedding, ``depth`` pre-norm RWKV blocks over the 147 tokens (Q-Shift within
    each 7x7 map, Bi-WKV over all 147), final LayerNorm, mean pooling, SE gate, head.

    forward_features: [B, 147, dim] -> [B, 147, dim]; forward_head: -> [B, num_classes] (or [B, dim] pre-logits).
    """

    def __init__(self, dim: int, depth: int, num_classes: int, hidden_rate: float = 4, drop_path_rate: float = 0.0):
        super().__init__()
        self.pos_embed = nn.Parameter(torch.zeros(1, NUM_FUSION_TOKENS, dim))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        rates = [drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]   # linspace(0, rate, depth)
        self.blocks = nn.ModuleList(
            RWKVBlock(dim, layer_id=i, depth=depth, hidden_rate=hidden_rate, drop_path=rates[i]) for i in range(depth))
        for block in self.blocks:
            block.att.shift = MapwiseQShift(block.att.shift.shift_pixel, block.att.shift.channel_gamma)
            block.ffn.shift = MapwiseQShift(block.ffn.shift.shift_pixel, block.ffn.shift.channel_gamma)
        self.norm = nn.LayerNorm(dim)
        self.se_block = SEBlock(dim)
        self.head = ClassificationHead(dim, num_classes)
        for linear in (self.se_block.linear1, self.se_block.linear2, self.head.linear):
            init_linear(linear)     # Vision-RWKV convention, like the blocks

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.pos_embed
        for block in self.blocks:
            x = block(x, (FUSION_MAP, FUSION_MAP))
        return self.norm(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.se_block(x.mean(dim=1))
        return x if pre_logits else self.head(x)


class PosterRWKV(PosterBase):
    """POSTER V2 with RWKV token mixing (see the module docstring).

    Input [B, 3, H, W] RGB face, ImageNet-normalised (any size; resized to 112x112 inside); output [B, num_classes].

    Args:
        num_classes: 7 or 8.
        embed_dim, depth: width and number of the fusion RWKV blocks.
        image_backbone: "ir50" (as POSTER V2) or "mobilefacenet" (trainable; the CPU-friendly small variant).
        landmark_key: landmark tokens also add to the cross-fusion key (ablation; default: receptance only).
        mlp_ratio: hidden ratio of the per-scale feed-forward.
        drop_path_rate: stochastic depth of the fusion blocks, linear from 0 to this rate.
        freeze_landmarks, drift_landmark_bn: see :class:`~rwkv_vision.models.poster_common.PosterBase`.
    """

    def __init__(self, num_classes: int = 7, embed_dim: int = 768, depth: int = 2, image_backbone: str = "ir50",
                 landmark_key: bool = False, mlp_ratio: float = 4.0, drop_path_rate: float = 0.0,
                 freeze_landmarks: bool = True, drift_landmark_bn: bool = False):
        super().__init__(lambda dim, i, grid: CrossSpatialMix(dim, landmark_key), embed_dim=embed_dim,
                         image_backbone=image_backbone, mlp_ratio=mlp_ratio, freeze_landmarks=freeze_landmarks,
                         drift_landmark_bn=drift_landmark_bn)
        self.num_classes = num_classes
        self.landmark_key = landmark_key
        self.fusion = FusionRWKV(embed_dim, depth, num_classes, drop_path_rate=drop_path_rate)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """[B, 3, H, W] -> normalised fusion tokens [B, 147, embed_dim]."""
        return self.fusion.forward_features(self.forward_tokens(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.fusion.forward_head(x, pre_logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _create(num_classes: int, ir50_path, mobilefacenet_path, **kwargs) -> PosterRWKV:
    model = PosterRWKV(num_classes=num_classes, **kwargs)
    load_backbone_files(model, ir50_path=ir50_path, mobilefacenet_path=mobilefacenet_path)
    return model


@register_model
def poster_rwkv(num_classes: int = 7, ir50_path: str | None = None, mobilefacenet_path: str | None = None,
                **kwargs) -> PosterRWKV:
    """PosterRWKV at the POSTER V2 sizes: IR-50 image stream, 768-wide fusion, 2 RWKV blocks.

    ``ir50_path`` / ``mobilefacenet_path``: the official backbone files (see
    :func:`rwkv_vision.convert.poster.load_backbone_files`); ``create_model(..., checkpoint_path=...)`` loads a state
    dict of this model.
    """
    return _create(num_classes, ir50_path, mobilefacenet_path,
                   **{"embed_dim": 768, "depth": 2, "image_backbone": "ir50", **kwargs})


@register_model
def poster_rwkv_small(num_classes: int = 7, ir50_path: str | None = None, mobilefacenet_path: str | None = None,
                      **kwargs) -> PosterRWKV:
    """CPU-friendly PosterRWKV (0.92 GMACs per 112x112 face): a trainable MobileFaceNet image stream (initialised
    from ``mobilefacenet_path`` like the landmark stream; ``ir50_path`` is refused), 192-wide fusion, 2 RWKV blocks."""
    return _create(num_classes, ir50_path, mobilefacenet_path,
                   **{"embed_dim": 192, "depth": 2, "image_backbone": "mobilefacenet", **kwargs})
