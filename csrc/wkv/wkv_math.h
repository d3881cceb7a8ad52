// The WKV scan math, shared by the CPU and CUDA kernels (host + device, no torch headers).
//
// Per channel, with w the decay and u the bonus (used exactly as given):
//   y_t = N_t / D_t,  N_t = sum_{i != t} e^{-(|t-i|-1) w + k_i} v_i + e^{u + k_t} v_t,  D_t: the same with v = 1.
// The causal variant keeps only i < t (and the u term). With P_t the sum over i < t and F_t the sum over i > t,
//   P_{t+1} = e^{-w} P_t + e^{k_t} v_t,   F_{t-1} = e^{-w} F_t + e^{k_t} v_t,
// so two linear scans give y exactly. Every running sum is kept as e^o * a with o the largest exponent seen
// (the RWKV-4 "max trick"): a stays in [1, T] for the weights, nothing overflows in fp32, no epsilon is needed.
//
// Accumulation is in float for float, half and bfloat16 inputs, in double for double inputs (gradcheck).
//
// Gradients, with s_{t,i} = e^{exponent(t,i) + k_i - lse_t} the softmax weight (lse_t = log D_t, saved by the
// forward) and g_t = dL/dy_t:
//   dv_i = sum_t s_{t,i} g_t,   dk_i = v_i dv_i - sum_t s_{t,i} g_t y_t,   du = sum_t s_{t,t} g_t (v_t - y_t),
//   dw   = -sum_t g_t sum_{i != t} (|t-i|-1) s_{t,i} (v_i - y_t).
// The sums over t for a fixed i are again scans (of g_t e^{-lse_t} with the same decay), and the distance-weighted
// sums Q_t = sum_{i<t} (t-i-1) e^{-(t-i-1) w + k_i} v_i follow Q_{t+1} = e^{-w} (Q_t + P_t). Every exponential
// taken below is of a non-positive number (a softmax weight or a ratio to the running maximum).
#pragma once

#include <math.h>

#if defined(__CUDACC__)
#define WKV_HD __host__ __device__ __forceinline__
#else
#define WKV_HD inline
#endif

namespace wkv {

// Accumulation type: float for float, half and bfloat16 inputs; double for double (gradcheck).
// Exponentials and logs resolve to float or double versions by overload.
//
// The CPU scans are bound by exp (several per token and channel), and glibc's vector expf is a function call the
// loop cannot overlap well. Every exponent in these kernels is <= 0 (a ratio to a running maximum, or a softmax
// weight), so a short inlined exp that vectorises with the loop suffices: Cody-Waite reduction x = n ln2 + r,
// |r| <= ln2/2, a degree-6 polynomial for e^r (relative error < 2e-7), and 2^n built in the exponent bits.
// Inputs below -87 (e^-87 ~ 1e-38, the smallest normal float) give 0, so an empty sum's -1e38 exponent gives 0.
WKV_HD float wexp(float x) {
#if defined(__CUDA_ARCH__)
  return expf(x);
#else
  const float xc = x < -87.f ? -87.f : (x > 88.f ? 88.f : x);
  const float n = floorf(xc * 1.44269504f + 0.5f);
  const float r = (xc - n * 0.693359375f) + n * 2.12194440e-4f;  // ln2 split in two for an exact n*ln2
  float p = 1.38888889e-3f;
  p = p * r + 8.33333333e-3f;
  p = p * r + 4.16666667e-2f;
  p = p * r + 1.66666667e-1f;
  p = p * r + 0.5f;
  p = p * r + 1.f;
  p = p * r + 1.f;
  union {
    int i;
    float f;
  } scale;
  scale.i = (static_cast<int>(n) + 127) << 23;
  return x < -87.f ? 0.f : p * scale.f;
#endif
}
WKV_HD double wexp(double x) { return exp(x); }
// log for the x >= 1 this file takes logs of (a weight sum normalised to its largest term): x = m 2^e with
// m in [sqrt(1/2), sqrt(2)), log m = 2 atanh((m-1)/(m+1)) by its series (absolute error < 1e-7).
WKV_HD float wlog(float x) {
#if defined(__CUDA_ARCH__)
  return logf(x);
#else
  union {
    float f;
    int i;
  } bits;
  bits.f = x;
  int e = ((bits.i >> 23) & 255) - 127;
  bits.i = (bits.i & 0x007fffff) | 0x3f800000;  // mantissa in [1, 2)
  float m = bits.f;
  if (m > 1.41421356f) m *= 0.5f, e += 1;
  const float s = (m - 1.f) / (m + 1.f), s2 = s * s;
  const float series = 1.f + s2 * (0.333333333f + s2 * (0.2f + s2 * (0.142857143f + s2 * 0.111111111f)));
  return static_cast<float>(e) * 0.693147181f + 2.f * s * series;
#endif
}
WKV_HD double wlog(double x) { return log(x); }
template <typename F>
WKV_HD F wmax(F a, F b) { return a > b ? a : b; }

// Exponent of an empty sum. Finite, so that differences of exponents never give NaN (the CPU build uses
// -ffast-math, under which inf is not allowed).
constexpr float kEmpty = -1e38f;

// One step of a running sum: with decayed = o - w, the new maximum is either decayed or x, so exactly one of the two
// rescaling factors is e^0 and a single exponential gives the other.
template <typename F>
WKV_HD void rescale(F o, F w, F x, F& e_old, F& e_new, F& o_new) {
  const F decayed = o - w;
  const F d = x - decayed;
  const F e = wexp(d > F(0) ? -d : d);
  const bool x_is_max = d > F(0);
  e_old = x_is_max ? e : F(1);
  e_new = x_is_max ? F(1) : e;
  o_new = x_is_max ? x : decayed;
}

// S <- e^{-w} S + e^{x} (v1, v2), where S = e^o (a1, a2).
template <typename F>
WKV_HD void push(F& a1, F& a2, F& o, F w, F x, F v1, F v2) {
  F e1, e2;
  rescale(o, w, x, e1, e2, o);
  a1 = a1 * e1 + e2 * v1;
  a2 = a2 * e1 + e2 * v2;
}

// push(), also carrying the distance moments Q = e^o (q1, q2): Q <- e^{-w} (Q + S) before the token enters
// (the new token is at distance 0 from the next position).
template <typename F>
WKV_HD void push_moments(F& a1, F& a2, F& q1, F& q2, F& o, F w, F x, F v1, F v2) {
  F e1, e2;
  rescale(o, w, x, e1, e2, o);
  q1 = (q1 + a1) * e1;
  q2 = (q2 + a2) * e1;
  a1 = a1 * e1 + e2 * v1;
  a2 = a2 * e1 + e2 * v2;
}

// The future sum at t, stored between the two forward passes as the weighted mean of v and the log of the
// weight sum. a2 >= 1 once the sum is non-empty (its largest term is e^0), and 0 when it is empty.
template <typename F>
WKV_HD void summarize(F a1, F a2, F o, F& mean, F& log_weight) {
  const F d = wmax(a2, F(1));
  mean = a1 / d;
  log_weight = o + wlog(d);
}

// y_t from the past sum e^o (a1, a2), the future summary (fmean, flog) and the token's own term e^{u+k} v.
// With kLse, also lse_t = log D_t, which the backward pass needs (inference skips the log).
template <bool kLse, typename F>
WKV_HD F combine(F a1, F a2, F o, F fmean, F flog, F u, F k, F v, F& lse) {
  const F x = u + k;
  const F m = wmax(wmax(o, flog), x);
  const F ep = wexp(o - m), ef = wexp(flog - m), ec = wexp(x - m);
  const F den = a2 * ep + ef + ec;  // >= 1: the largest of the three terms is e^0 times a sum >= 1
  if constexpr (kLse) lse = m + wlog(den);
  return (a1 * ep + fmean * ef + v * ec) / den;
}

// Scales that bring the sums e^o (a...) and e^{ob} (b...) to their common maximum: as in rescale(), one is e^0.
template <typename F>
WKV_HD void merge_scales(F& o, F ob, F& sa, F& sb) {
  const F d = ob - o;
  const F e = wexp(d > F(0) ? -d : d);
  const bool b_is_max = d > F(0);
  sa = b_is_max ? e : F(1);
  sb = b_is_max ? F(1) : e;
  o = b_is_max ? ob : o;
}

// Merges e^{ob} (b1, b2) into the sum e^o (a1, a2).
template <typename F>
WKV_HD void merge(F& a1, F& a2, F& o, F b1, F b2, F ob) {
  F sa, sb;
  merge_scales(o, ob, sa, sb);
  a1 = a1 * sa + b1 * sb;
  a2 = a2 * sa + b2 * sb;
}

// merge() for key sums carrying distance moments, e^{ob} (b1, b2, r1, r2) into e^o (a1, a2, q1, q2).
template <typename F>
WKV_HD void merge_moments(F& a1, F& a2, F& q1, F& q2, F& o, F b1, F b2, F r1, F r2, F ob) {
  F sa, sb;
  merge_scales(o, ob, sa, sb);
  a1 = a1 * sa + b1 * sb;
  a2 = a2 * sa + b2 * sb;
  q1 = q1 * sa + r1 * sb;
  q2 = q2 * sa + r2 * sb;
}

// A sum seen n tokens further on: every term decays n more times, e^{-n w} S, and a distance moment grows by n
// times its term, Q <- e^{-n w} (Q + n S). Exact in the e^o form: only o and q change.
template <typename F>
WKV_HD void advance(F& o, F w, F n) {
  o -= n * w;
}
template <typename F>
WKV_HD void advance_moments(F a1, F a2, F& q1, F& q2, F& o, F w, F n) {
  q1 += n * a1;
  q2 += n * a2;
  o -= n * w;
}

// combine() for a future sum kept whole, e^{of} (f1, f2), rather than summarised: two merges, so two exponentials
// and no log or division for the summary.
template <bool kLse, typename F>
WKV_HD F combine_sums(F p1, F p2, F op, F f1, F f2, F of, F u, F k, F v, F& lse) {
  merge(p1, p2, op, f1, f2, of);
  merge(p1, p2, op, v, F(1), u + k);
  if constexpr (kLse) lse = op + wlog(p2);  // p2 >= 1: the largest term is e^0 times a sum >= 1
  return p1 / p2;
}

// dw contribution of token t from one side: -g_t e^{-lse_t} (Q_t - y_t QD_t), with Q = e^o (q1, q2).
template <typename F>
WKV_HD F dw_term(F q1, F q2, F o, F lse, F g, F y) {
  return -g * wexp(o - lse) * (q1 - y * q2);
}

// Token i's share of one side of the g-scan e^{og} (g1, g2): adds to dv_i and to sum_t s_{t,i} g_t y_t.
template <typename F>
WKV_HD void gather(F g1, F g2, F og, F k, F& dv, F& gy) {
  const F e = wexp(k + og);
  dv += e * g1;
  gy += e * g2;
}

}  // namespace wkv
