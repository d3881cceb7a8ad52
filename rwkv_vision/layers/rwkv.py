"""Vision-RWKV layers: spatial mix (Bi-WKV or causal WKV token mixing), channel mix, and the residual RWKV block.

Parameter names follow the official Vision-RWKV code (``att.spatial_decay``, ``ffn.key``, ``ln0``, ``gamma1``, ...) so
that official checkpoints map onto these modules by key prefix only. Every layer works on a token sequence
x [B, N, C] laid out in raster order on a grid hw = (H, W), N = H * W; the grid is needed by Q-Shift only.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from ..ops import bi_wkv, causal_wkv
from .drop import DropPath
from .qshift import QShift
from .weight_init import init_linear


def _layer_ratios(layer_id: int, depth: int) -> tuple[float, float]:
    """(r01, r10) of the fancy init: r01 = l/(L-1) runs 0 -> 1 over the depth, r10 = 1 - l/L runs 1 -> ~0."""
    if not 0 <= layer_id < depth:
        raise ValueError(f"layer_id must be in [0, depth); got layer_id={layer_id}, depth={depth}")
    # The official formula divides by L - 1; a single layer (L = 1) is the first layer, r01 = 0.
    r01 = layer_id / (depth - 1) if depth > 1 else 0.0
    return r01, 1.0 - layer_id / depth


def _channel_ramp(dim: int) -> torch.Tensor:
    """[1, 1, C] float32 with value i / C at channel i (built like the official loop: Python floats stored as fp32)."""
    return torch.tensor([i / dim for i in range(dim)], dtype=torch.float32).view(1, 1, dim)


class SpatialMix(nn.Module):
    """Token mixing of Vision-RWKV: Q-Shift interpolation, then r, k, v projections and the WKV operator.

    y = output(sigmoid(r) * [key_norm](WKV(k, v))) with k = key(xk), v = value(xv), r = receptance(xr) and
    x* = x * mu* + QShift(x) * (1 - mu*). Bidirectional (default): ``bi_wkv`` with w = spatial_decay / T,
    u = spatial_first / T (T = N tokens at run time, so the decay follows the resolution). ``causal=True``: RWKV-4
    ``causal_wkv`` over the raster order with per-token decay w = exp(spatial_decay) and bonus u = spatial_first.

    Args:
        dim: channels C.
        layer_id, depth: position of the block in its stack (0-based) and stack depth; set the fancy init.
        shift_pixel: Q-Shift distance in grid cells; 0 disables the shift and the mix parameters (as official).
        channel_gamma: Q-Shift group fraction (1/4: four groups cover all channels).
        key_norm: LayerNorm(C) on the WKV output (VRWKV-L).
        causal: use the causal RWKV-4 WKV instead of Bi-WKV.
    """

    def __init__(self, dim: int, layer_id: int = 0, depth: int = 1, shift_pixel: int = 1,
                 channel_gamma: float = 0.25, key_norm: bool = False, causal: bool = False):
        super().__init__()
        self.dim, self.layer_id, self.depth, self.causal = dim, layer_id, depth, causal
        _layer_ratios(layer_id, depth)  # validate early
        self.spatial_decay = nn.Parameter(torch.empty(dim))
        self.spatial_first = nn.Parameter(torch.empty(dim))
        if shift_pixel > 0:
            self.shift = QShift(shift_pixel, channel_gamma)
            self.spatial_mix_k = nn.Parameter(torch.empty(1, 1, dim))
            self.spatial_mix_v = nn.Parameter(torch.empty(1, 1, dim))
            self.spatial_mix_r = nn.Parameter(torch.empty(1, 1, dim))
        else:
            self.shift = None
        self.key = nn.Linear(dim, dim, bias=False)
        self.value = nn.Linear(dim, dim, bias=False)
        self.receptance = nn.Linear(dim, dim, bias=False)
        self.key_norm = nn.LayerNorm(dim) if key_norm else None
        self.output = nn.Linear(dim, dim, bias=False)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """The fancy init of Vision-RWKV (REFERENCE section 2), channel i of C:
        decay = -5 + 8 (i/(C-1))^(0.7 + 1.3 r01); first = ln(0.3) + 0.5 ((i+1) mod 3 - 1);
        mu_k = (i/C)^r10, mu_v = (i/C)^r10 + 0.3 r01, mu_r = (i/C)^(0.5 r10); Linear trunc-normal 0.02."""
        C = self.dim
        r01, r10 = _layer_ratios(self.layer_id, self.depth)
        # Python floats rounded once to fp32, exactly as the official per-channel loop.
        self.spatial_decay.copy_(torch.tensor(
            [-5 + 8 * (i / max(C - 1, 1)) ** (0.7 + 1.3 * r01) for i in range(C)], dtype=torch.float32))
        zigzag = torch.tensor([(i + 1) % 3 - 1 for i in range(C)]) * 0.5
        self.spatial_first.copy_(torch.ones(C) * math.log(0.3) + zigzag)
        if self.shift is not None:
            ramp = _channel_ramp(C)
            self.spatial_mix_k.copy_(torch.pow(ramp, r10))
            self.spatial_mix_v.copy_(torch.pow(ramp, r10) + 0.3 * r01)
            self.spatial_mix_r.copy_(torch.pow(ramp, 0.5 * r10))
        for linear in (self.key, self.value, self.receptance, self.output):
            init_linear(linear)
        if self.key_norm is not None:
            self.key_norm.reset_parameters()

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        """x [B, N, C] on the grid hw = (H, W) -> [B, N, C]."""
        if self.shift is not None:
            # x * mu + xx * (1 - mu) as one lerp: at a few hundred tokens these small elementwise ops cost more in
            # dispatch than in arithmetic
            xx = self.shift(x, hw)
            xk = torch.lerp(xx, x, self.spatial_mix_k)
            xv = torch.lerp(xx, x, self.spatial_mix_v)
            xr = torch.lerp(xx, x, self.spatial_mix_r)
        else:
            xk = xv = xr = x
        k, v, sr = self.key(xk), self.value(xv), _sigmoid(self.receptance(xr))
        if self.causal:
            y = causal_wkv(k, v, torch.exp(self.spatial_decay), self.spatial_first)
        else:
            T = x.shape[1]
            y = bi_wkv(k, v, self.spatial_decay / T, self.spatial_first / T)
        if self.key_norm is not None:
            y = self.key_norm(y)
        return self.output(_gate(sr, y))

    def extra_repr(self) -> str:
        return f"dim={self.dim}, layer_id={self.layer_id}, depth={self.depth}, causal={self.causal}"


class ChannelMix(nn.Module):
    """Channel mixing (the RWKV feed-forward): out = sigmoid(receptance(xr)) * value([key_norm](relu(key(xk))^2)).

    xk, xr interpolate x with Q-Shift(x) through mu_k, mu_r, as in :class:`SpatialMix`.

    Args:
        dim: channels C.
        layer_id, depth: position in the stack; set the fancy init mu_k = mu_r = (i/C)^(1 - l/L).
        hidden_rate: hidden width = int(hidden_rate * C) (4 in every official model).
        shift_pixel, channel_gamma: Q-Shift settings (shift_pixel 0 disables shift and mix parameters).
        key_norm: LayerNorm over the hidden width (VRWKV-L).
    """

    def __init__(self, dim: int, layer_id: int = 0, depth: int = 1, hidden_rate: float = 4,
                 shift_pixel: int = 1, channel_gamma: float = 0.25, key_norm: bool = False):
        super().__init__()
        self.dim, self.layer_id, self.depth = dim, layer_id, depth
        _layer_ratios(layer_id, depth)
        hidden = int(hidden_rate * dim)
        if hidden < 1:
            raise ValueError(f"ChannelMix: hidden_rate * dim must be >= 1; got {hidden_rate} * {dim}")
        if shift_pixel > 0:
            self.shift = QShift(shift_pixel, channel_gamma)
            self.spatial_mix_k = nn.Parameter(torch.empty(1, 1, dim))
            self.spatial_mix_r = nn.Parameter(torch.empty(1, 1, dim))
        else:
            self.shift = None
        self.key = nn.Linear(dim, hidden, bias=False)
        self.key_norm = nn.LayerNorm(hidden) if key_norm else None
        self.receptance = nn.Linear(dim, dim, bias=False)
        self.value = nn.Linear(hidden, dim, bias=False)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Fancy init: mu_k = mu_r = (i/C)^(1 - l/L); Linear trunc-normal 0.02; LayerNorm 1 / 0."""
        if self.shift is not None:
            _, r10 = _layer_ratios(self.layer_id, self.depth)
            ramp = _channel_ramp(self.dim)
            self.spatial_mix_k.copy_(torch.pow(ramp, r10))
            self.spatial_mix_r.copy_(torch.pow(ramp, r10))
        for linear in (self.key, self.receptance, self.value):
            init_linear(linear)
        if self.key_norm is not None:
            self.key_norm.reset_parameters()

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        """x [B, N, C] on the grid hw = (H, W) -> [B, N, C]."""
        if self.shift is not None:
            xx = self.shift(x, hw)
            xk = torch.lerp(xx, x, self.spatial_mix_k)
            xr = torch.lerp(xx, x, self.spatial_mix_r)
        else:
            xk = xr = x
        k = self.key(xk)  # the 4C-wide hidden activation: the largest buffer of a block
        k = torch.relu_(k).square_() if _in_place() else torch.square(torch.relu(k))
        if self.key_norm is not None:
            k = self.key_norm(k)
        return _gate(_sigmoid(self.receptance(xr)), self.value(k))

    def extra_repr(self) -> str:
        return f"dim={self.dim}, layer_id={self.layer_id}, depth={self.depth}"


class RWKVBlock(nn.Module):
    """One Vision-RWKV block: spatial mix then channel mix, each a residual branch.

    pre-norm:  x += DropPath(gamma1 * att(ln1(x)));  x += DropPath(gamma2 * ffn(ln2(x)))
    post-norm: x += DropPath(gamma1 * ln1(att(x)));  x += DropPath(gamma2 * ln2(ffn(x)))
    with an extra LayerNorm ``ln0`` on the input of the first block of a stack, and gamma1/gamma2 (layer scale)
    only when ``init_values`` is given.

    Usage: ``y = block(x, hw)`` with x [B, N, C] tokens in raster order on the grid hw = (H, W), N = H * W;
    y has the shape of x.

    Args:
        dim: channels C.
        layer_id, depth: position of the block in its stack (0-based) and the stack depth (fancy init, ``ln0``).
        hidden_rate: channel-mix hidden width in multiples of C.
        post_norm: post-norm residuals (VRWKV-S/B/L) instead of pre-norm (VRWKV-T).
        init_values: layer-scale initial value (None: no layer scale).
        key_norm: LayerNorm inside both mixers (VRWKV-L).
        drop_path: stochastic-depth probability of both branches.
        shift_pixel, channel_gamma: Q-Shift distance and group fraction.
        causal: causal RWKV-4 WKV over the raster order instead of Bi-WKV (FaceRWKV style).
        use_ln0: add ``ln0``; default: only when ``layer_id == 0``.
    """

    def __init__(self, dim: int, layer_id: int = 0, depth: int = 1, hidden_rate: float = 4,
                 post_norm: bool = False, init_values: float | None = None, key_norm: bool = False,
                 drop_path: float = 0.0, shift_pixel: int = 1, channel_gamma: float = 0.25, causal: bool = False,
                 use_ln0: bool | None = None):
        super().__init__()
        self.layer_id, self.post_norm = layer_id, post_norm
        self.ln0 = nn.LayerNorm(dim) if (layer_id == 0 if use_ln0 is None else use_ln0) else None
        self.ln1 = nn.LayerNorm(dim)
        self.ln2 = nn.LayerNorm(dim)
        self.att = SpatialMix(dim, layer_id, depth, shift_pixel, channel_gamma, key_norm, causal)
        self.ffn = ChannelMix(dim, layer_id, depth, hidden_rate, shift_pixel, channel_gamma, key_norm)
        if init_values is not None:
            self.gamma1 = nn.Parameter(torch.full((dim,), float(init_values)))
            self.gamma2 = nn.Parameter(torch.full((dim,), float(init_values)))
        else:
            self.gamma1 = self.gamma2 = None
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        """x [B, N, C] on the grid hw = (H, W) -> [B, N, C]."""
        if self.ln0 is not None:
            x = self.ln0(x)
        if self.post_norm:
            x = x + self.drop_path(_scale(self.ln1(self.att(x, hw)), self.gamma1))
            x = x + self.drop_path(_scale(self.ln2(self.ffn(x, hw)), self.gamma2))
        else:
            x = x + self.drop_path(_scale(self.att(self.ln1(x), hw), self.gamma1))
            x = x + self.drop_path(_scale(self.ffn(self.ln2(x), hw), self.gamma2))
        return x


def _in_place() -> bool:
    """Whether the mixers may overwrite their intermediate activations: only with autograd off (inference), where no
    graph keeps them for backward and module backward hooks are not engaged. At high resolution a fresh buffer per
    element-wise op costs more in page faults than its arithmetic. (Forward hooks on the inner Linear layers then see
    their outputs overwritten, as with any in-place activation.)"""
    return not torch.is_grad_enabled()


def _sigmoid(x: torch.Tensor) -> torch.Tensor:
    return torch.sigmoid_(x) if _in_place() else torch.sigmoid(x)


def _gate(r: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """r * y, written into r when _in_place()."""
    return r.mul_(y) if _in_place() else r * y


def _scale(x: torch.Tensor, gamma: torch.Tensor | None) -> torch.Tensor:
    return x if gamma is None else x * gamma
