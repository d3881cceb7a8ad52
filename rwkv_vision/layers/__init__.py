"""Shared building blocks of the rwkv-vision models.

Token layers take x [B, N, C] in raster order on a grid hw = (H, W), N = H * W, and are called ``layer(x, hw)``:
``RWKVBlock`` (the Vision-RWKV block), its parts ``SpatialMix`` (Bi-WKV or causal WKV token mixing),
``ChannelMix`` (feed-forward) and ``QShift``, and ``AttentionBlock`` (a same-size transformer block for ablations).
``PatchEmbed`` turns images into tokens and ``resample_pos_embed`` resizes a position embedding to another grid.
"""

from .attention import Attention, AttentionBlock, Mlp
from .drop import DropPath, drop_path
from .patch_embed import PatchEmbed, grid_size, resample_pos_embed
from .qshift import QShift, q_shift
from .rwkv import ChannelMix, RWKVBlock, SpatialMix
from .weight_init import init_linear

__all__ = [
    "Attention", "AttentionBlock", "ChannelMix", "DropPath", "Mlp", "PatchEmbed", "QShift", "RWKVBlock",
    "SpatialMix", "drop_path", "grid_size", "init_linear", "q_shift", "resample_pos_embed",
]
