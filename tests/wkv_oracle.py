"""The dense O(T^2) float64 WKV, written straight from the formula: the oracle every kernel is tested against."""

import torch


def dense_wkv(k, v, w, u, bidirectional: bool):
    """k, v: [B, T, C]; w, u: [C]. Float64 softmax over i of the exponents; differentiable."""
    k, v, w, u = (t.double() for t in (k, v, w, u))
    T = k.shape[1]
    t = torch.arange(T, device=k.device)
    dist = (t[:, None] - t[None, :]).abs()  # |t - i|
    expo = -(dist - 1).double()[..., None] * w  # [T, T, C]
    eye = torch.eye(T, dtype=torch.bool, device=k.device)[..., None]
    expo = torch.where(eye, u.expand(T, T, -1), expo)
    if not bidirectional:
        future = (t[None, :] > t[:, None])[..., None]  # i > t
        expo = expo.masked_fill(future, float("-inf"))
    logits = expo[None] + k[:, None, :, :]  # [B, t, i, C]
    p = torch.softmax(logits, dim=2)
    return (p * v[:, None]).sum(2)
