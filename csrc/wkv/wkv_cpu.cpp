// CPU WKV kernels: parallel over (batch, block of channels), scanning tokens; channels are innermost and
// contiguous, so the per-channel math of wkv_math.h vectorises ('#pragma omp simd' + glibc's vector expf).
#include "wkv_cpu.h"

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <type_traits>

#include "wkv_math.h"

namespace wkv {
namespace {

constexpr int64_t kBlock = 32;  // channels per work item: a few SIMD registers, and enough items to share out

struct Shape {
  int64_t B, T, C;
};

template <typename scalar_t>
using acc_t = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;

// Calls fn(b, c0, n, base) for every (batch, channel block), spread over the ATen thread pool.
template <typename Fn>
void for_each_block(const Shape& s, Fn fn) {
  const int64_t blocks = (s.C + kBlock - 1) / kBlock;
  at::parallel_for(0, s.B * blocks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t job = begin; job < end; ++job) {
      const int64_t b = job / blocks, c0 = (job % blocks) * kBlock;
      fn(b, c0, std::min(kBlock, s.C - c0), b * s.T * s.C + c0);
    }
  });
}

template <typename T, typename F>
void load(const T* src, F* dst, int64_t n) {
#pragma omp simd
  for (int64_t c = 0; c < n; ++c) dst[c] = static_cast<F>(src[c]);
}

template <typename scalar_t, typename F = acc_t<scalar_t>>
void forward(const scalar_t* k, const scalar_t* v, const F* w, const F* u, F* y, F* lse, const Shape s,
             bool bidirectional) {
  for_each_block(s, [&](int64_t, int64_t c0, int64_t n, int64_t base) {
    F a1[kBlock], a2[kBlock], o[kBlock], kt[kBlock], vt[kBlock];
    const F* wc = w + c0;
    const F* uc = u + c0;
    // Pass 1 (bidirectional only), t = T-1 .. 0: the future sum at t, summarised into y and lse.
    if (bidirectional) {
      std::fill_n(a1, n, F(0)), std::fill_n(a2, n, F(0)), std::fill_n(o, n, F(kEmpty));
      for (int64_t t = s.T - 1; t >= 0; --t) {
        const int64_t off = base + t * s.C;
        load(k + off, kt, n), load(v + off, vt, n);
#pragma omp simd
        for (int64_t c = 0; c < n; ++c) {
          summarize(a1[c], a2[c], o[c], y[off + c], lse[off + c]);
          push(a1[c], a2[c], o[c], wc[c], kt[c], vt[c], F(1));
        }
      }
    }
    // Pass 2, t = 0 .. T-1: past sum + future summary + the token itself.
    std::fill_n(a1, n, F(0)), std::fill_n(a2, n, F(0)), std::fill_n(o, n, F(kEmpty));
    for (int64_t t = 0; t < s.T; ++t) {
      const int64_t off = base + t * s.C;
      load(k + off, kt, n), load(v + off, vt, n);
#pragma omp simd
      for (int64_t c = 0; c < n; ++c) {
        const F fmean = bidirectional ? y[off + c] : F(0);
        const F flog = bidirectional ? lse[off + c] : F(kEmpty);
        y[off + c] = combine(a1[c], a2[c], o[c], fmean, flog, uc[c], kt[c], vt[c], lse[off + c]);
        push(a1[c], a2[c], o[c], wc[c], kt[c], vt[c], F(1));
      }
    }
  });
}

template <typename scalar_t, typename F = acc_t<scalar_t>>
void backward(const scalar_t* gy, const scalar_t* k, const scalar_t* v, const F* w, const F* u, const scalar_t* y,
              const F* lse, F* dk, F* dv, F* dw, F* du, const Shape s, bool bidirectional) {
  for_each_block(s, [&](int64_t b, int64_t c0, int64_t n, int64_t base) {
    // kv-scan (a, q, o): sums over keys, for dw; g-scan (g, og): sums over outputs, for dk and dv.
    F a1[kBlock], a2[kBlock], q1[kBlock], q2[kBlock], o[kBlock];
    F g1[kBlock], g2[kBlock], og[kBlock], dw_acc[kBlock], du_acc[kBlock];
    F kt[kBlock], vt[kBlock], gt[kBlock], yt[kBlock];
    const F* wc = w + c0;
    const F* uc = u + c0;
    auto reset = [&] {
      std::fill_n(a1, n, F(0)), std::fill_n(a2, n, F(0)), std::fill_n(q1, n, F(0)), std::fill_n(q2, n, F(0));
      std::fill_n(g1, n, F(0)), std::fill_n(g2, n, F(0)), std::fill_n(o, n, F(kEmpty)), std::fill_n(og, n, F(kEmpty));
    };
    std::fill_n(dw_acc, n, F(0)), std::fill_n(du_acc, n, F(0));
    // Reverse pass: keys after t (bidirectional) and outputs after i (always: both variants see them).
    reset();
    for (int64_t t = s.T - 1; t >= 0; --t) {
      const int64_t off = base + t * s.C;
      load(k + off, kt, n), load(v + off, vt, n), load(gy + off, gt, n), load(y + off, yt, n);
      const F* lt = lse + off;
#pragma omp simd
      for (int64_t c = 0; c < n; ++c) {
        if (bidirectional) {
          dw_acc[c] += dw_term(q1[c], q2[c], o[c], lt[c], gt[c], yt[c]);
          push_moments(a1[c], a2[c], q1[c], q2[c], o[c], wc[c], kt[c], vt[c], F(1));
        }
        F dvt = 0, gyt = 0;
        gather(g1[c], g2[c], og[c], kt[c], dvt, gyt);
        dv[off + c] = dvt;
        dk[off + c] = gyt;  // holds sum s*g*y until the forward pass completes dk
        push(g1[c], g2[c], og[c], wc[c], -lt[c], gt[c], gt[c] * yt[c]);
      }
    }
    // Forward pass: keys before t (always), outputs before i (bidirectional), and the token's own u term.
    reset();
    for (int64_t t = 0; t < s.T; ++t) {
      const int64_t off = base + t * s.C;
      load(k + off, kt, n), load(v + off, vt, n), load(gy + off, gt, n), load(y + off, yt, n);
      const F* lt = lse + off;
#pragma omp simd
      for (int64_t c = 0; c < n; ++c) {
        dw_acc[c] += dw_term(q1[c], q2[c], o[c], lt[c], gt[c], yt[c]);
        push_moments(a1[c], a2[c], q1[c], q2[c], o[c], wc[c], kt[c], vt[c], F(1));
        const F sg = wexp(uc[c] + kt[c] - lt[c]) * gt[c];
        F dvt = dv[off + c] + sg, gyt = dk[off + c] + sg * yt[c];
        if (bidirectional) {
          gather(g1[c], g2[c], og[c], kt[c], dvt, gyt);
          push(g1[c], g2[c], og[c], wc[c], -lt[c], gt[c], gt[c] * yt[c]);
        }
        dv[off + c] = dvt;
        dk[off + c] = vt[c] * dvt - gyt;
        du_acc[c] += sg * (vt[c] - yt[c]);
      }
    }
    std::copy_n(dw_acc, n, dw + b * s.C + c0);
    std::copy_n(du_acc, n, du + b * s.C + c0);
  });
}

}  // namespace

void forward_cpu(const at::Tensor& k, const at::Tensor& v, const at::Tensor& w, const at::Tensor& u, at::Tensor& y,
                 at::Tensor& lse, bool bidirectional) {
  const Shape s{k.size(0), k.size(1), k.size(2)};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, k.scalar_type(), "wkv_forward_cpu", [&] {
    using F = acc_t<scalar_t>;
    forward(k.const_data_ptr<scalar_t>(), v.const_data_ptr<scalar_t>(), w.const_data_ptr<F>(),
            u.const_data_ptr<F>(), y.data_ptr<F>(), lse.data_ptr<F>(), s, bidirectional);
  });
}

void backward_cpu(const at::Tensor& gy, const at::Tensor& k, const at::Tensor& v, const at::Tensor& w,
                  const at::Tensor& u, const at::Tensor& y, const at::Tensor& lse, at::Tensor& dk, at::Tensor& dv,
                  at::Tensor& dw, at::Tensor& du, bool bidirectional) {
  const Shape s{k.size(0), k.size(1), k.size(2)};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, k.scalar_type(), "wkv_backward_cpu", [&] {
    using F = acc_t<scalar_t>;
    backward(gy.const_data_ptr<scalar_t>(), k.const_data_ptr<scalar_t>(), v.const_data_ptr<scalar_t>(),
             w.const_data_ptr<F>(), u.const_data_ptr<F>(), y.const_data_ptr<scalar_t>(), lse.const_data_ptr<F>(),
             dk.data_ptr<F>(), dv.data_ptr<F>(), dw.data_ptr<F>(), du.data_ptr<F>(), s, bidirectional);
  });
}

}  // namespace wkv
