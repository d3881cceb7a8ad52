"""Image to tokens: patch embedding (optionally behind a small convolutional stem) and position-embedding resizing."""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

STEMS = ("patch", "conv")


def grid_size(img_size: tuple[int, int], patch_size: int) -> tuple[int, int]:
    """Token grid (h, w) of an (H, W) pixel image: ceil(H / p), ceil(W / p) (inputs are zero-padded up)."""
    return math.ceil(img_size[0] / patch_size), math.ceil(img_size[1] / patch_size)


def resample_pos_embed(pos_embed: torch.Tensor, old_hw: tuple[int, int], new_hw: tuple[int, int]) -> torch.Tensor:
    """Resize a position embedding [1, h*w, C] laid out on the grid ``old_hw`` to ``new_hw`` (bicubic,
    align_corners=False, as the official code). Returns ``pos_embed`` itself, unchanged, when the grids are equal.

    Returns:
        [1, new_h * new_w, C] in the dtype of ``pos_embed`` (interpolated in at least float32).
    """
    old_h, old_w = int(old_hw[0]), int(old_hw[1])
    new_h, new_w = int(new_hw[0]), int(new_hw[1])
    if pos_embed.dim() != 3 or pos_embed.shape[0] != 1 or pos_embed.shape[1] != old_h * old_w:
        raise ValueError(f"resample_pos_embed: expected [1, {old_h}*{old_w}, C] for the grid ({old_h}, {old_w}); "
                         f"got {tuple(pos_embed.shape)}")
    if (old_h, old_w) == (new_h, new_w):
        return pos_embed
    C = pos_embed.shape[2]
    # bicubic is not implemented for half on every device: interpolate in fp32 and cast back.
    grid = pos_embed.reshape(1, old_h, old_w, C).permute(0, 3, 1, 2)
    if grid.dtype in (torch.float16, torch.bfloat16):
        grid = grid.float()
    grid = F.interpolate(grid, size=(new_h, new_w), mode="bicubic", align_corners=False)
    return grid.flatten(2).transpose(1, 2).to(pos_embed.dtype)


class PatchEmbed(nn.Module):
    """Image [B, in_chans, H, W] -> tokens [B, h*w, embed_dim] in raster order, and the grid (h, w).

    The image is zero-padded at the bottom and right up to a multiple of ``patch_size``, so
    (h, w) = (ceil(H / p), ceil(W / p)) for any H, W.

    Args:
        patch_size: pixels per token side p (total stride).
        in_chans: input channels.
        embed_dim: token channels C.
        stem: "patch": one Conv2d(k = stride = p, bias) named ``projection`` (the official Vision-RWKV embedding).
            "conv": a small convolutional stem, conv3x3 stride 2 (C/4) - BN - ReLU - conv3x3 stride 2 (C/2) - BN -
            ReLU, then ``projection`` Conv2d(k = stride = p/4); p must be a multiple of 4 (the hybrid variant).
    """

    def __init__(self, patch_size: int = 16, in_chans: int = 3, embed_dim: int = 768, stem: str = "patch"):
        super().__init__()
        if stem not in STEMS:
            raise ValueError(f"PatchEmbed: stem must be one of {STEMS}; got {stem!r}")
        if stem == "conv" and (patch_size < 4 or patch_size % 4):
            raise ValueError(f"PatchEmbed: stem='conv' needs patch_size a multiple of 4 (two stride-2 convs and a "
                             f"patch projection); got {patch_size}")
        self.patch_size, self.in_chans, self.embed_dim = patch_size, in_chans, embed_dim
        if stem == "conv":
            c1, c2 = max(embed_dim // 4, 8), max(embed_dim // 2, 16)
            self.stem = nn.Sequential(
                nn.Conv2d(in_chans, c1, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(c1), nn.ReLU(inplace=True),
                nn.Conv2d(c1, c2, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(c2), nn.ReLU(inplace=True))
            self.projection = nn.Conv2d(c2, embed_dim, patch_size // 4, stride=patch_size // 4)
        else:
            self.stem = None
            self.projection = nn.Conv2d(in_chans, embed_dim, patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """x [B, in_chans, H, W] -> (tokens [B, h*w, embed_dim], (h, w))."""
        if x.dim() != 4 or x.shape[1] != self.in_chans:
            raise ValueError(f"expected an image batch [B, {self.in_chans}, H, W]; got shape {tuple(x.shape)}")
        p = self.patch_size
        pad_h, pad_w = -x.shape[2] % p, -x.shape[3] % p
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h))
        if self.stem is not None:
            x = self.stem(x)
        x = self.projection(x)
        hw = (x.shape[2], x.shape[3])
        return x.flatten(2).transpose(1, 2), hw
