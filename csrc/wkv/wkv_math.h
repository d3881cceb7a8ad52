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
// Exponentials and logs resolve to expf/logf or exp/log by overload.
WKV_HD float wexp(float x) { return expf(x); }
WKV_HD double wexp(double x) { return exp(x); }
WKV_HD float wlog(float x) { return logf(x); }
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
