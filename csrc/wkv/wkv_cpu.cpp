// CPU WKV kernels: parallel over (batch, block of channels), scanning tokens; channels are innermost and
// contiguous, so the per-channel math of wkv_math.h vectorises ('#pragma omp simd' + glibc's vector expf).
#include "wkv_cpu.h"

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <type_traits>
#include <vector>

#include "wkv_math.h"

namespace wkv {
namespace {

struct Shape {
  int64_t B, T, C;
};

template <typename scalar_t>
using acc_t = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;

// Calls fn(b, c0, n, base) for every (batch, channel block), spread over the ATen thread pool. Blocks are as wide
// as the thread count allows: a work item then streams through whole rows of contiguous memory (narrow blocks
// would jump a stride of C per token, defeating the hardware prefetcher).
template <typename Fn>
void for_each_block(const Shape& s, Fn fn) {
  const int64_t per_batch = std::max<int64_t>(1, (2 * at::get_num_threads() + s.B - 1) / s.B);
  const int64_t block = std::min(s.C, ((s.C + per_batch - 1) / per_batch + 15) / 16 * 16);
  const int64_t blocks = (s.C + block - 1) / block;
  at::parallel_for(0, s.B * blocks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t job = begin; job < end; ++job) {
      const int64_t b = job / blocks, c0 = (job % blocks) * block;
      fn(b, c0, std::min(block, s.C - c0), b * s.T * s.C + c0);
    }
  });
}

// Per-work-item state: `count` arrays of n values each.
template <typename F>
struct Lanes {
  std::vector<F> data;
  int64_t n;
  Lanes(int64_t count, int64_t n_) : data(count * n_), n(n_) {}
  F* operator[](int64_t i) { return data.data() + i * n; }
};

template <typename T, typename F>
void load(const T* src, F* dst, int64_t n) {
#pragma omp simd
  for (int64_t c = 0; c < n; ++c) dst[c] = static_cast<F>(src[c]);
}

constexpr int64_t kChunk = 64;  // tokens whose future summaries stay in cache between the forward's two scans

// kBi and kLse are template arguments so that no branch is left inside the vectorised channel loops.
// Bidirectional forward in three scans without a [B, T, C] scratch buffer: (A) a reverse scan keeps only the
// future sum at every chunk boundary; then per chunk, (B) a reverse scan from that boundary summarises the future
// of each token into a chunk-sized buffer, and (C) a forward scan combines it with the past sum. Memory traffic
// is two reads of k and v and one write of y; the re-read of a chunk in (C) hits the cache.
template <bool kBi, bool kLse, typename scalar_t, typename F = acc_t<scalar_t>>
void forward(const scalar_t* k, const scalar_t* v, const F* w, const F* u, F* y, F* lse, const Shape s) {
  for_each_block(s, [&](int64_t, int64_t c0, int64_t n, int64_t base) {
    const int64_t chunks = (s.T + kChunk - 1) / kChunk;
    Lanes<F> lanes(5, n);
    F *a1 = lanes[0], *a2 = lanes[1], *o = lanes[2], *kt = lanes[3], *vt = lanes[4];
    Lanes<F> boundary(kBi ? 3 * chunks : 0, n);  // future sum (a1, a2, o) after each chunk
    Lanes<F> summary(kBi ? 2 * kChunk : 0, n);   // future mean and log-weight of each token of a chunk
    const F* wc = w + c0;
    const F* uc = u + c0;
    auto reset = [&] { std::fill_n(a1, n, F(0)), std::fill_n(a2, n, F(0)), std::fill_n(o, n, F(kEmpty)); };
    auto scan = [&](int64_t t) {  // load token t and push it into (a1, a2, o)
      const int64_t off = base + t * s.C;
      load(k + off, kt, n), load(v + off, vt, n);
#pragma omp simd
      for (int64_t c = 0; c < n; ++c) push(a1[c], a2[c], o[c], wc[c], kt[c], vt[c], F(1));
    };
    if constexpr (kBi) {  // (A)
      reset();
      for (int64_t j = chunks - 1; j >= 0; --j) {
        std::copy_n(a1, n, boundary[3 * j]), std::copy_n(a2, n, boundary[3 * j + 1]);
        std::copy_n(o, n, boundary[3 * j + 2]);
        for (int64_t t = std::min(s.T, (j + 1) * kChunk) - 1; t >= j * kChunk; --t) scan(t);
      }
    }
    Lanes<F> past(3, n);
    F *p1 = past[0], *p2 = past[1], *po = past[2];
    std::fill_n(p1, n, F(0)), std::fill_n(p2, n, F(0)), std::fill_n(po, n, F(kEmpty));
    for (int64_t j = 0; j < chunks; ++j) {
      const int64_t t0 = j * kChunk, t1 = std::min(s.T, t0 + kChunk);
      if constexpr (kBi) {  // (B)
        std::copy_n(boundary[3 * j], n, a1), std::copy_n(boundary[3 * j + 1], n, a2);
        std::copy_n(boundary[3 * j + 2], n, o);
        for (int64_t t = t1 - 1; t >= t0; --t) {
          F *mean = summary[2 * (t - t0)], *logw = summary[2 * (t - t0) + 1];
#pragma omp simd
          for (int64_t c = 0; c < n; ++c) summarize(a1[c], a2[c], o[c], mean[c], logw[c]);
          scan(t);
        }
      }
      for (int64_t t = t0; t < t1; ++t) {  // (C)
        const int64_t off = base + t * s.C;
        load(k + off, kt, n), load(v + off, vt, n);
        const F* mean = kBi ? summary[2 * (t - t0)] : nullptr;
        const F* logw = kBi ? summary[2 * (t - t0) + 1] : nullptr;
        F* lt = kLse ? lse + off : nullptr;
        F unused;
#pragma omp simd
        for (int64_t c = 0; c < n; ++c) {
          F fmean = 0, flog = kEmpty;
          if constexpr (kBi) fmean = mean[c], flog = logw[c];
          y[off + c] = combine<kLse>(p1[c], p2[c], po[c], fmean, flog, uc[c], kt[c], vt[c], kLse ? lt[c] : unused);
          push(p1[c], p2[c], po[c], wc[c], kt[c], vt[c], F(1));
        }
      }
    }
  });
}

template <bool kBi, typename scalar_t, typename F = acc_t<scalar_t>>
void backward(const scalar_t* gy, const scalar_t* k, const scalar_t* v, const F* w, const F* u, const scalar_t* y,
              const F* lse, F* dk, F* dv, F* dw, F* du, const Shape s) {
  for_each_block(s, [&](int64_t b, int64_t c0, int64_t n, int64_t base) {
    // kv-scan (a, q, o): sums over keys, for dw; g-scan (g, og): sums over outputs, for dk and dv.
    Lanes<F> lanes(14, n);
    F *a1 = lanes[0], *a2 = lanes[1], *q1 = lanes[2], *q2 = lanes[3], *o = lanes[4];
    F *g1 = lanes[5], *g2 = lanes[6], *og = lanes[7], *dw_acc = lanes[8], *du_acc = lanes[9];
    F *kt = lanes[10], *vt = lanes[11], *gt = lanes[12], *yt = lanes[13];
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
        if constexpr (kBi) {
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
        if constexpr (kBi) {
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
                 at::Tensor& lse, bool bidirectional, bool need_lse) {
  const Shape s{k.size(0), k.size(1), k.size(2)};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, k.scalar_type(), "wkv_forward_cpu", [&] {
    using F = acc_t<scalar_t>;
    auto run = bidirectional ? (need_lse ? forward<true, true, scalar_t> : forward<true, false, scalar_t>)
                             : (need_lse ? forward<false, true, scalar_t> : forward<false, false, scalar_t>);
    run(k.const_data_ptr<scalar_t>(), v.const_data_ptr<scalar_t>(), w.const_data_ptr<F>(), u.const_data_ptr<F>(),
        y.data_ptr<F>(), lse.data_ptr<F>(), s);
  });
}

void backward_cpu(const at::Tensor& gy, const at::Tensor& k, const at::Tensor& v, const at::Tensor& w,
                  const at::Tensor& u, const at::Tensor& y, const at::Tensor& lse, at::Tensor& dk, at::Tensor& dv,
                  at::Tensor& dw, at::Tensor& du, bool bidirectional) {
  const Shape s{k.size(0), k.size(1), k.size(2)};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, k.scalar_type(), "wkv_backward_cpu", [&] {
    using F = acc_t<scalar_t>;
    auto run = bidirectional ? backward<true, scalar_t> : backward<false, scalar_t>;
    run(gy.const_data_ptr<scalar_t>(), k.const_data_ptr<scalar_t>(), v.const_data_ptr<scalar_t>(),
        w.const_data_ptr<F>(), u.const_data_ptr<F>(), y.const_data_ptr<scalar_t>(), lse.const_data_ptr<F>(),
        dk.data_ptr<F>(), dv.data_ptr<F>(), dw.data_ptr<F>(), du.data_ptr<F>(), s);
  });
}

}  // namespace wkv
