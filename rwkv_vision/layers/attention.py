"""A pre-norm transformer block the size of an RWKV block: the baseline of "RWKV versus attention" ablations."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .drop import DropPath
from .weight_init import init_linear


class Attention(nn.Module):
    """Multi-head self-attention over all tokens with ``F.scaled_dot_product_attention`` (fused kernels when
    available). Tokens [B, N, C] -> [B, N, C]; ``dim`` must be divisible by ``num_heads``."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True):
        super().__init__()
        if num_heads < 1 or dim % num_heads:
            raise ValueError(f"Attention: dim {dim} must be divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, C = x.shape
        q, k, v = self.qkv(x).reshape(B, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4).unbind(0)
        y = F.scaled_dot_product_attention(q, k, v)  # [B, heads, N, head_dim]
        return self.proj(y.transpose(1, 2).reshape(B, N, C))


class Mlp(nn.Module):
    """Linear(C, hidden) - GELU - Linear(hidden, C)."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class AttentionBlock(nn.Module):
    """Pre-norm transformer block with the width, MLP ratio, layer scale and drop path of an :class:`RWKVBlock`:

    x += DropPath(gamma1 * attn(norm1(x)));  x += DropPath(gamma2 * mlp(norm2(x)))

    ``forward(x, hw=None)`` takes the same arguments as ``RWKVBlock`` so the two are interchangeable in a stack;
    attention ignores the grid (it has no notion of position). Linear layers start trunc-normal 0.02, zero bias.

    Args:
        dim: channels C.  num_heads: attention heads (C divisible by it).  hidden_rate: MLP width in multiples of C.
        init_values: layer-scale initial value (None: no layer scale).  drop_path: stochastic-depth probability.
        qkv_bias: bias on the q, k, v projection.
    """

    def __init__(self, dim: int, num_heads: int, hidden_rate: float = 4, init_values: float | None = None,
                 drop_path: float = 0.0, qkv_bias: bool = True):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, num_heads, qkv_bias)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(hidden_rate * dim))
        if init_values is not None:
            self.gamma1 = nn.Parameter(torch.full((dim,), float(init_values)))
            self.gamma2 = nn.Parameter(torch.full((dim,), float(init_values)))
        else:
            self.gamma1 = self.gamma2 = None
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        for m in self.modules():
            if isinstance(m, nn.Linear):
                init_linear(m)

    def forward(self, x: torch.Tensor, hw: tuple[int, int] | None = None) -> torch.Tensor:
        """x [B, N, C] -> [B, N, C]; ``hw`` is accepted for interface parity with RWKVBlock and unused."""
        y = self.attn(self.norm1(x))
        x = x + self.drop_path(y if self.gamma1 is None else y * self.gamma1)
        y = self.mlp(self.norm2(x))
        return x + self.drop_path(y if self.gamma2 is None else y * self.gamma2)
