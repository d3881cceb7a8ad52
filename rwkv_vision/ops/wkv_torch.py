"""Pure-PyTorch WKV: the same linear-time scans as the compiled kernels, vectorised over (batch, channel).

It loops over the T tokens in Python, so it is slow, but it needs no compiler, runs on any device, and keeps
memory linear in T (it saves only the output and the log-denominator, like the kernels). The math mirrors
``csrc/wkv/wkv_math.h`` line by line; read that file for the derivation.
"""

from __future__ import annotations

import torch

EMPTY = -1e38  # exponent of an empty running sum; finite so that differences never produce NaN


def _empty(ref: torch.Tensor, n: int):
    B, C = ref.shape[0], ref.shape[2]
    zeros = [ref.new_zeros(B, C) for _ in range(n)]
    return zeros, ref.new_full((B, C), EMPTY)


def _rescale(o, w, x):
    """The new maximum exponent is o - w or x, so one exponential gives both rescaling factors."""
    decayed = o - w
    d = x - decayed
    e = torch.exp(-d.abs())
    x_is_max = d > 0
    one = torch.ones_like(e)
    return torch.where(x_is_max, e, one), torch.where(x_is_max, one, e), torch.where(x_is_max, x, decayed)


def _push(sums, o, w, x, values):
    """S <- e^{-w} S + e^{x} values, with S = e^o * sums (the max trick). Returns (new sums, new o)."""
    e1, e2, on = _rescale(o, w, x)
    return [s * e1 + e2 * val for s, val in zip(sums, values)], on


def _push_moments(sums, moments, o, w, x, values):
    """Like _push, also carrying the distance-weighted sums Q <- e^{-w} (Q + S) that dw needs."""
    e1, e2, on = _rescale(o, w, x)
    moments = [(q + s) * e1 for q, s in zip(moments, sums)]
    return [s * e1 + e2 * val for s, val in zip(sums, values)], moments, on


def wkv_forward(k, v, w, u, bidirectional: bool, need_lse: bool):
    """k, v: [B, T, C]; w, u: [C] in the accumulation dtype (float32, or float64 for float64 inputs).

    Returns (y [B, T, C] in k's dtype, lse [B, T, C] in the accumulation dtype, or empty unless need_lse).
    """
    acc = w.dtype  # float32, or float64 for float64 inputs
    kf, vf = k.to(acc), v.to(acc)
    B, T, C = kf.shape
    y = kf.new_empty(B, T, C)
    lse = kf.new_empty(B, T, C)
    fmean = kf.new_zeros(B, T, C)
    flog = kf.new_full((B, T, C), EMPTY)
    one = kf.new_ones(B, C)
    if bidirectional:
        (a1, a2), o = _empty(kf, 2)
        for t in range(T - 1, -1, -1):
            d = a2.clamp_min(1.0)  # a2 >= 1 once non-empty: its largest term is e^0
            fmean[:, t] = a1 / d
            flog[:, t] = o + d.log()
            (a1, a2), o = _push((a1, a2), o, w, kf[:, t], (vf[:, t], one))
    (a1, a2), o = _empty(kf, 2)
    for t in range(T):
        x = u + kf[:, t]
        m = torch.maximum(torch.maximum(o, flog[:, t]), x)
        ep, ef, ec = torch.exp(o - m), torch.exp(flog[:, t] - m), torch.exp(x - m)
        den = a2 * ep + ef + ec
        y[:, t] = (a1 * ep + fmean[:, t] * ef + vf[:, t] * ec) / den
        lse[:, t] = m + den.log()
        (a1, a2), o = _push((a1, a2), o, w, kf[:, t], (vf[:, t], one))
    if not need_lse:
        lse = kf.new_empty(0)
    return y.to(k.dtype), lse


def wkv_backward(gy, k, v, w, u, y, lse, bidirectional: bool):
    """Gradients (dk, dv in k's dtype; dw, du [C] in the accumulation dtype) of sum(gy * y)."""
    acc = w.dtype
    kf, vf, gf, yf = k.to(acc), v.to(acc), gy.to(acc), y.to(acc)
    B, T, C = kf.shape
    dk = kf.new_zeros(B, T, C)
    dv = kf.new_zeros(B, T, C)
    dw = kf.new_zeros(B, C)
    du = kf.new_zeros(B, C)
    one = kf.new_ones(B, C)
    # Reverse pass: sums over tokens after t.
    (a1, a2), o = _empty(kf, 2)
    (q1, q2), _ = _empty(kf, 2)
    (g1, g2), og = _empty(kf, 2)
    for t in range(T - 1, -1, -1):
        g, yt, kt, vt, lt = gf[:, t], yf[:, t], kf[:, t], vf[:, t], lse[:, t]
        if bidirectional:
            dw -= g * torch.exp(o - lt) * (q1 - yt * q2)
            (a1, a2), (q1, q2), o = _push_moments((a1, a2), (q1, q2), o, w, kt, (vt, one))
        e = torch.exp(kt + og)
        dv[:, t] = e * g1
        dk[:, t] = -e * g2
        (g1, g2), og = _push((g1, g2), og, w, -lt, (g, g * yt))
    # Forward pass: sums over tokens before t, plus the token itself (the u term).
    (a1, a2), o = _empty(kf, 2)
    (q1, q2), _ = _empty(kf, 2)
    (g1, g2), og = _empty(kf, 2)
    for t in range(T):
        g, yt, kt, vt, lt = gf[:, t], yf[:, t], kf[:, t], vf[:, t], lse[:, t]
        dw -= g * torch.exp(o - lt) * (q1 - yt * q2)
        s = torch.exp(u + kt - lt)
        dvt = dv[:, t] + s * g
        gyt = -dk[:, t] + s * g * yt
        if bidirectional:
            e = torch.exp(kt + og)
            dvt = dvt + e * g1
            gyt = gyt + e * g2
            (g1, g2), og = _push((g1, g2), og, w, -lt, (g, g * yt))
        dv[:, t] = dvt
        dk[:, t] = vt * dvt - gyt
        du += s * g * (vt - yt)
        (a1, a2), (q1, q2), o = _push_moments((a1, a2), (q1, q2), o, w, kt, (vt, one))
    return dk.to(k.dtype), dv.to(v.dtype), dw.sum(0), du.sum(0)
