"""Q-Shift: the Vision-RWKV token shift, moving four channel groups one step left, right, up and down on the grid."""

from __future__ import annotations

import torch
import torch.nn as nn


def check_grid(x: torch.Tensor, hw: tuple[int, int], name: str) -> tuple[int, int]:
    """Validate tokens ``x`` [B, N, C] against the grid ``hw`` = (H, W) with H * W = N; return (H, W) as ints."""
    if x.dim() != 3:
        raise ValueError(f"{name}: expected tokens [B, N, C]; got shape {tuple(x.shape)}")
    H, W = int(hw[0]), int(hw[1])
    if H * W != x.shape[1]:
        raise ValueError(f"{name}: grid hw=({H}, {W}) has {H * W} cells but x {tuple(x.shape)} has N={x.shape[1]} "
                         f"tokens")
    return H, W


def q_shift(x: torch.Tensor, hw: tuple[int, int], shift_pixel: int = 1, gamma: float = 0.25) -> torch.Tensor:
    """Shift channel groups of the token grid by ``shift_pixel`` cells, zero-filled at the edges (no wrap).

    With g = int(C * gamma): channels [0, g) take the left neighbour (x - s), [g, 2g) the right one (x + s),
    [2g, 3g) the one above (y - s), [3g, 4g) the one below (y + s); channels [4g, C) are unchanged.

    Args:
        x: [B, N, C] tokens in raster order (row by row) of the grid ``hw`` = (H, W), N = H * W.
        hw: grid height and width in tokens.
        shift_pixel: shift distance s in grid cells, >= 1.
        gamma: fraction of channels per group, in (0, 1/4].
    Returns:
        [B, N, C], same dtype and device.
    """
    H, W = check_grid(x, hw, "q_shift")
    B, N, C = x.shape
    g = int(C * gamma)
    # Work on a [B, H, W, C] view: no transpose of the channels. A zero tensor, then each group copied in shifted:
    # measured cheaper than padding the grid and concatenating windows of it (this runs twice per block, and at a
    # few hundred tokens these small copies cost more in dispatch than in bytes). min() keeps a shift wider than the
    # grid all zeros.
    grid = x.reshape(B, H, W, C)
    sw, sh = min(shift_pixel, W), min(shift_pixel, H)
    out = torch.zeros_like(grid)
    out[:, :, sw:, 0:g] = grid[:, :, :W - sw, 0:g]                # cell (y, x) takes (y, x - s)
    out[:, :, :W - sw, g:2 * g] = grid[:, :, sw:, g:2 * g]        # (y, x + s)
    out[:, sh:, :, 2 * g:3 * g] = grid[:, :H - sh, :, 2 * g:3 * g]  # (y - s, x)
    out[:, :H - sh, :, 3 * g:4 * g] = grid[:, sh:, :, 3 * g:4 * g]  # (y + s, x)
    if 4 * g < C:
        out[..., 4 * g:] = grid[..., 4 * g:]
    return out.reshape(B, N, C)


class QShift(nn.Module):
    """Module form of :func:`q_shift`; ``forward(x, hw)`` with x [B, N, C] and hw = (H, W)."""

    def __init__(self, shift_pixel: int = 1, channel_gamma: float = 0.25):
        super().__init__()
        if int(shift_pixel) != shift_pixel or shift_pixel < 1:
            raise ValueError(f"QShift: shift_pixel must be an integer >= 1; got {shift_pixel}")
        if not 0.0 < channel_gamma <= 0.25:
            raise ValueError(f"QShift: channel_gamma must be in (0, 1/4] (four groups of channels); "
                             f"got {channel_gamma}")
        self.shift_pixel = int(shift_pixel)
        self.channel_gamma = float(channel_gamma)

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        return q_shift(x, hw, self.shift_pixel, self.channel_gamma)

    def extra_repr(self) -> str:
        return f"shift_pixel={self.shift_pixel}, channel_gamma={self.channel_gamma}"
