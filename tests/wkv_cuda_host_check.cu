// Runs the CUDA kernels' per-thread code (csrc/wkv/wkv_cuda.cu) on the host, thread by thread in launch order, and
// compares outputs and gradients with a dense float64 evaluation of the WKV formulas. Lets a machine without a GPU
// check the chunked scans (chunk sums, carries across chunks, rescans). Built and run by tests/test_wkv.py;
// exits 1 when a case is off, printing every case's errors.
#define WKV_HOST_CHECK
#include "../csrc/wkv/wkv_cuda.cu"

#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

using wkv::Plan;
using wkv::Slots;

namespace {

struct Case {
  int64_t B, T, C;
  bool bidirectional;
  double w_scale, k_scale;
  int multiprocessors;  // small values force short chunks (many of them)
};

struct Grads {
  std::vector<double> y, lse, dk, dv, dw, du;
};

// The formulas of wkv_math.h's header comment, summed directly in O(T^2).
Grads dense(const Case& cs, const std::vector<float>& k, const std::vector<float>& v, const std::vector<float>& w,
            const std::vector<float>& u, const std::vector<float>& g) {
  const int64_t B = cs.B, T = cs.T, C = cs.C;
  Grads r{std::vector<double>(B * T * C), std::vector<double>(B * T * C), std::vector<double>(B * T * C),
          std::vector<double>(B * T * C), std::vector<double>(C), std::vector<double>(C)};
  auto at = [&](int64_t b, int64_t t, int64_t c) { return (b * T + t) * C + c; };
  auto exponent = [&](int64_t t, int64_t i, int64_t c) -> double {  // NaN where token i is not seen from t
    if (i == t) return static_cast<double>(u[c]);
    if (!cs.bidirectional && i > t) return NAN;
    return -(std::abs(static_cast<double>(t - i)) - 1) * w[c];
  };
  for (int64_t b = 0; b < B; ++b)
    for (int64_t c = 0; c < C; ++c) {
      for (int64_t t = 0; t < T; ++t) {
        double m = -INFINITY;
        for (int64_t i = 0; i < T; ++i)
          if (!std::isnan(exponent(t, i, c))) m = std::max(m, exponent(t, i, c) + k[at(b, i, c)]);
        double num = 0, den = 0;
        for (int64_t i = 0; i < T; ++i) {
          const double e = exponent(t, i, c);
          if (std::isnan(e)) continue;
          const double s = std::exp(e + k[at(b, i, c)] - m);
          num += s * v[at(b, i, c)], den += s;
        }
        r.y[at(b, t, c)] = num / den;
        r.lse[at(b, t, c)] = m + std::log(den);
      }
      for (int64_t t = 0; t < T; ++t)
        for (int64_t i = 0; i < T; ++i) {
          const double e = exponent(t, i, c);
          if (std::isnan(e)) continue;
          const double gt = g[at(b, t, c)], yt = r.y[at(b, t, c)], vi = v[at(b, i, c)];
          const double s = std::exp(e + k[at(b, i, c)] - r.lse[at(b, t, c)]);
          r.dv[at(b, i, c)] += s * gt;
          r.dk[at(b, i, c)] += s * gt * (vi - yt);
          if (i == t) r.du[c] += s * gt * (vi - yt);
          else r.dw[c] -= gt * (std::abs(static_cast<double>(t - i)) - 1) * s * (vi - yt);
        }
    }
  return r;
}

double rel_error(const std::vector<float>& ours, const std::vector<double>& ref) {
  double err = 0, scale = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    if (!std::isfinite(ours[i])) return INFINITY;
    err = std::max(err, std::abs(ours[i] - ref[i]));
    scale = std::max(scale, std::abs(ref[i]));
  }
  return err / std::max(scale, 1e-30);
}

bool run(const Case& cs, unsigned seed) {
  const int64_t B = cs.B, T = cs.T, C = cs.C, N = B * T * C;
  std::mt19937 gen(seed);
  std::normal_distribution<float> normal;
  std::vector<float> k(N), v(N), g(N), w(C), u(C);
  for (auto& x : k) x = normal(gen) * cs.k_scale;
  for (auto& x : v) x = normal(gen);
  for (auto& x : g) x = normal(gen);
  for (auto& x : w) x = normal(gen) * cs.w_scale;
  for (auto& x : u) x = normal(gen);
  const Plan p = wkv::make_plan(B, T, C, cs.multiprocessors);

  std::vector<float> y(N, NAN), lse(N, NAN), ws(p.chunk_threads() * wkv::kBackwardSlots, NAN);
  const Slots<float> fs{ws.data(), wkv::kForwardSlots, p.J, C};
  for (int64_t i = 0; i < p.chunk_threads(); ++i)
    wkv::forward_sums_at(k.data(), v.data(), w.data(), fs, p, cs.bidirectional, i);
  for (int64_t i = 0; i < wkv::kForwardSums * B * C; ++i) wkv::forward_carry_at(w.data(), fs, p, cs.bidirectional, i);
  for (int64_t i = 0; i < p.chunk_threads(); ++i)
    wkv::forward_at<true>(k.data(), v.data(), w.data(), u.data(), y.data(), lse.data(), fs, p, cs.bidirectional, i);

  std::vector<float> dk(N, NAN), dv(N, NAN), dw(B * C, NAN), du(B * C, NAN);
  std::fill(ws.begin(), ws.end(), NAN);
  const Slots<float> bs{ws.data(), wkv::kBackwardSlots, p.J, C};
  for (int64_t i = 0; i < p.chunk_threads(); ++i)
    wkv::backward_sums_at(g.data(), k.data(), v.data(), w.data(), y.data(), lse.data(), bs, p, cs.bidirectional, i);
  for (int64_t i = 0; i < wkv::kBackwardSums * B * C; ++i) wkv::backward_carry_at(w.data(), bs, p, cs.bidirectional, i);
  for (int64_t i = 0; i < p.chunk_threads(); ++i)
    wkv::backward_at(g.data(), k.data(), v.data(), w.data(), u.data(), y.data(), lse.data(), dk.data(), dv.data(), bs,
                     p, cs.bidirectional, i);
  for (int64_t i = 0; i < B * C; ++i) wkv::backward_reduce_at(bs, p, dw.data(), du.data(), i);
  std::vector<float> dw_sum(C, 0), du_sum(C, 0);
  for (int64_t i = 0; i < B * C; ++i) dw_sum[i % C] += dw[i], du_sum[i % C] += du[i];

  const Grads ref = dense(cs, k, v, w, u, g);
  const double errs[] = {rel_error(y, ref.y), rel_error(lse, ref.lse), rel_error(dk, ref.dk),
                         rel_error(dv, ref.dv), T > 1 ? rel_error(dw_sum, ref.dw) : 0.0, rel_error(du_sum, ref.du)};
  const double limits[] = {1e-5, 1e-5, 2e-4, 2e-4, 1e-3, 2e-4};  // as tests/test_wkv.py asks of the CPU kernel
  bool ok = true;
  for (int i = 0; i < 6; ++i) ok = ok && errs[i] <= limits[i];
  std::printf("%s B=%lld T=%lld C=%lld %s w_scale=%g k_scale=%g: L=%lld J=%lld  y %.2e lse %.2e dk %.2e dv %.2e "
              "dw %.2e du %.2e\n",
              ok ? "ok  " : "FAIL", static_cast<long long>(B), static_cast<long long>(T), static_cast<long long>(C),
              cs.bidirectional ? "bi    " : "causal", cs.w_scale, cs.k_scale, static_cast<long long>(p.L),
              static_cast<long long>(p.J), errs[0], errs[1], errs[2], errs[3], errs[4], errs[5]);
  return ok;
}

}  // namespace

int main() {
  const Case cases[] = {
      {3, 1, 37, true, 1.0, 1.0, 1},     {3, 7, 37, true, 1.0, 1.0, 1},       {2, 1000, 5, true, 0.008, 1.0, 1},
      {2, 1000, 5, false, 0.008, 1.0, 1}, {1, 333, 3, true, 2.0, 1.0, 1},      {1, 333, 3, false, 2.0, 1.0, 1},
      {2, 200, 3, true, 0.04, 10.0, 1},   {2, 40, 3, true, 3.0, 5.0, 1}  ,    {4, 1500, 4, true, 0.005, 1.0, 1},  
      {1, 65, 2, false, 1.0, 1.0, 1},
  };
  bool ok = true;
  unsigned seed = 0;
  for (const Case& cs : cases) ok = run(cs, seed++) && ok;
  return ok ? 0 : 1;
}
