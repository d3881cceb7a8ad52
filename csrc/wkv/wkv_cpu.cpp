// CPU WKV kernels: parallel over (batch, block of channels), scanning tokens; channels are innermost and
// contiguous, so the per-channel math of wkv_math.h vectorises ('#pragma omp simd' with its inlined wexp and wlog).
#include "wkv_cpu.h"

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#if __has_include(<sys/mman.h>)
#include <sys/mman.h>
#endif

#include <algorithm>
#include <cstdint>
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

// Row of n inputs as F: the row itself when the input is already F, else a converted copy in buf.
template <typename T, typename F>
const F* row(const T* src, F* buf, int64_t n) {
  if constexpr (std::is_same_v<T, F>) {
    return src;
  } else {
#pragma omp simd
    for (int64_t c = 0; c < n; ++c) buf[c] = static_cast<F>(src[c]);
    return buf;
  }
}

// Asks for a row of n values before it is used. Measured at T = 16384, where k and v outgrow the last-level cache:
// the forward's reverse scans gain from asking kAhead tokens ahead, and its scan (C) from asking for the next
// chunk's rows, which (B) then finds in cache; the backward's two scans measured slower with it.
constexpr int64_t kAhead = 6;
template <typename T>
void prefetch(const T* p, int64_t n) {
  for (int64_t c = 0; c < n; c += 64 / sizeof(T)) __builtin_prefetch(p + c);
}

constexpr int64_t kChunk = 64;  // tokens whose future sums stay in cache between the forward's two scans

// kBi and kLse are template arguments so that no branch is left inside the vectorised channel loops.
// Bidirectional forward in three scans without a [B, T, C] scratch buffer: (A) a reverse scan keeps only the
// future sum at every chunk boundary; then per chunk, (B) a reverse scan from that boundary stores the future sum
// of each token in a chunk-sized buffer, and (C) a forward scan combines it with the past sum. Memory traffic
// is two reads of k and v and one write of y; the re-reads of a chunk in (B) and (C) hit the cache.
template <bool kBi, bool kLse, typename scalar_t, typename F = acc_t<scalar_t>>
void forward(const scalar_t* k, const scalar_t* v, const F* w, const F* u, F* y, F* lse, const Shape s) {
  for_each_block(s, [&](int64_t, int64_t c0, int64_t n, int64_t base) {
    const int64_t chunks = (s.T + kChunk - 1) / kChunk;
    Lanes<F> lanes(5, n);
    F *a1 = lanes[0], *a2 = lanes[1], *o = lanes[2], *kbuf = lanes[3], *vbuf = lanes[4];
    Lanes<F> boundary(kBi ? 3 * chunks : 0, n);  // future sum (a1, a2, o) after each chunk
    Lanes<F> future(kBi ? 3 * kChunk : 0, n);    // future sum (a1, a2, o) of each token of a chunk
    const F* wc = w + c0;
    const F* uc = u + c0;
    auto save = [&](F* dst) { std::copy_n(a1, n, dst), std::copy_n(a2, n, dst + n), std::copy_n(o, n, dst + 2 * n); };
    auto scan = [&](int64_t t) {  // load token t and push it into (a1, a2, o); called for t descending
      const int64_t off = base + t * s.C;
      if (t >= kAhead) prefetch(k + off - kAhead * s.C, n), prefetch(v + off - kAhead * s.C, n);
      const F *kt = row(k + off, kbuf, n), *vt = row(v + off, vbuf, n);
#pragma omp simd
      for (int64_t c = 0; c < n; ++c) push(a1[c], a2[c], o[c], wc[c], kt[c], vt[c], F(1));
    };
    if constexpr (kBi) {  // (A)
      std::fill_n(a1, n, F(0)), std::fill_n(a2, n, F(0)), std::fill_n(o, n, F(kEmpty));
      for (int64_t j = chunks - 1; j >= 0; --j) {
        save(boundary[3 * j]);
        for (int64_t t = std::min(s.T, (j + 1) * kChunk) - 1; t >= j * kChunk; --t) scan(t);
      }
    }
    Lanes<F> past(3, n);
    F *p1 = past[0], *p2 = past[1], *po = past[2];
    std::fill_n(p1, n, F(0)), std::fill_n(p2, n, F(0)), std::fill_n(po, n, F(kEmpty));
    for (int64_t j = 0; j < chunks; ++j) {
      const int64_t t0 = j * kChunk, t1 = std::min(s.T, t0 + kChunk);
      if constexpr (kBi) {  // (B)
        std::copy_n(boundary[3 * j], 3 * n, a1);  // a1, a2, o are adjacent in lanes
        for (int64_t t = t1 - 1; t >= t0; --t) save(future[3 * (t - t0)]), scan(t);
      }
      for (int64_t t = t0; t < t1; ++t) {  // (C)
        const int64_t off = base + t * s.C;
        if (kBi && t + kChunk < s.T) prefetch(k + off + kChunk * s.C, n), prefetch(v + off + kChunk * s.C, n);
        const F *kt = row(k + off, kbuf, n), *vt = row(v + off, vbuf, n);
        const F* f = kBi ? future[3 * (t - t0)] : nullptr;
        F* lt = kLse ? lse + off : nullptr;
        F unused;
#pragma omp simd
        for (int64_t c = 0; c < n; ++c) {
          F f1 = 0, f2 = 0, fo = kEmpty;
          if constexpr (kBi) f1 = f[c], f2 = f[n + c], fo = f[2 * n + c];
          y[off + c] = combine_sums<kLse>(p1[c], p2[c], po[c], f1, f2, fo, uc[c], kt[c], vt[c],
                                          kLse ? lt[c] : unused);
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
    F *kbuf = lanes[10], *vbuf = lanes[11], *gbuf = lanes[12], *ybuf = lanes[13];
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
      const F *kt = row(k + off, kbuf, n), *vt = row(v + off, vbuf, n);
      const F *gt = row(gy + off, gbuf, n), *yt = row(y + off, ybuf, n);
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
      const F *kt = row(k + off, kbuf, n), *vt = row(v + off, vbuf, n);
      const F *gt = row(gy + off, gbuf, n), *yt = row(y + off, ybuf, n);
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

// glibc returns blocks above its mmap threshold (at most 32 MB) to the system when freed, so large outputs are fresh
// zero pages on every call and the first touch of each 4 KB page faults; asking for 2 MB pages (transparent huge
// pages, "madvise" mode) makes those faults up to 512 times rarer.
void prefer_huge_pages(at::Tensor& t) {
#ifdef MADV_HUGEPAGE
  constexpr uintptr_t kHuge = uintptr_t(1) << 21;
  const auto begin = reinterpret_cast<uintptr_t>(t.data_ptr());
  const uintptr_t first = (begin + kHuge - 1) & ~(kHuge - 1), last = (begin + t.nbytes()) & ~(kHuge - 1);
  if (last > first) madvise(reinterpret_cast<void*>(first), last - first, MADV_HUGEPAGE);
#endif
}

}  // namespace

void forward_cpu(const at::Tensor& k, const at::Tensor& v, const at::Tensor& w, const at::Tensor& u, at::Tensor& y,
                 at::Tensor& lse, bool bidirectional, bool need_lse) {
  const Shape s{k.size(0), k.size(1), k.size(2)};
  prefer_huge_pages(y), prefer_huge_pages(lse);
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
  prefer_huge_pages(dk), prefer_huge_pages(dv);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, k.scalar_type(), "wkv_backward_cpu", [&] {
    using F = acc_t<scalar_t>;
    auto run = bidirectional ? backward<true, scalar_t> : backward<false, scalar_t>;
    run(gy.const_data_ptr<scalar_t>(), k.const_data_ptr<scalar_t>(), v.const_data_ptr<scalar_t>(),
        w.const_data_ptr<F>(), u.const_data_ptr<F>(), y.const_data_ptr<scalar_t>(), lse.const_data_ptr<F>(),
        dk.data_ptr<F>(), dv.data_ptr<F>(), dw.data_ptr<F>(), du.data_ptr<F>(), s);
  });
}

}  // namespace wkv
