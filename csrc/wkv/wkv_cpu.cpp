// CPU WKV kernels: parallel over (batch, block of channels), scanning tokens; channels are innermost and
// contiguous, so the per-channel math of wkv_math.h vectorises ('#pragma omp simd' with its inlined wexp and wlog).
// Two formulations of the same sums: the stable kernels (any w and u, both ops) rescale every running sum at every
// token; the chunked kernels (bidirectional op, moderate w and u, as Vision-RWKV passes) fix one exponent frame
// per chunk of tokens, which takes the exponentials off the scans' dependency chains. See chunk_length().
#include "wkv_cpu.h"

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#if __has_include(<sys/mman.h>)
#include <sys/mman.h>
#endif

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <tuple>
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

// ---- Stable kernels: any w and u -------------------------------------------------------------------------------
// kBi and kLse are template arguments so that no branch is left inside the vectorised channel loops.
// Bidirectional forward in three scans without a [B, T, C] scratch buffer: (A) a reverse scan keeps only the
// future sum at every chunk boundary; then per chunk, (B) a reverse scan from that boundary stores the future sum
// of each token in a chunk-sized buffer, and (C) a forward scan combines it with the past sum. Memory traffic
// is two reads of k and v and one write of y; the re-reads of a chunk in (B) and (C) hit the cache.
template <bool kBi, bool kLse, typename scalar_t, typename F>
void forward_stable(const scalar_t* k, const scalar_t* v, const F* w, const F* u, F* y, F* lse, const Shape& s,
                    int64_t c0, int64_t n, int64_t base) {
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
}

template <bool kBi, typename scalar_t, typename F>
void backward_stable(const scalar_t* gy, const scalar_t* k, const scalar_t* v, const F* w, const F* u,
                     const scalar_t* y, const F* lse, F* dk, F* dv, F* dw, F* du, const Shape& s, int64_t b, int64_t c0,
                     int64_t n, int64_t base) {
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
  // Token t's offset and its rows of k, v, gy, y (as F) and lse: both passes read the same five.
  auto rows = [&](int64_t t) {
    const int64_t off = base + t * s.C;
    return std::tuple{off, row(k + off, kbuf, n), row(v + off, vbuf, n), row(gy + off, gbuf, n),
                      row(y + off, ybuf, n), lse + off};
  };
  std::fill_n(dw_acc, n, F(0)), std::fill_n(du_acc, n, F(0));
  // Reverse pass: keys after t (bidirectional) and outputs after i (always: both variants see them).
  reset();
  for (int64_t t = s.T - 1; t >= 0; --t) {
    const auto [off, kt, vt, gt, yt, lt] = rows(t);
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
    const auto [off, kt, vt, gt, yt, lt] = rows(t);
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
}

// ---- Chunked kernels ---------------------------------------------------------------------------------------------
// The stable kernels above take an exponential inside every step of every scan (the running maximum changes per
// token), so exp sits on the scans' dependency chains. When |w| and |u| are moderate (Vision-RWKV passes decay / T),
// the chunked kernels instead fix one reference exponent (a "frame") per chunk of L tokens and channel: inside a
// chunk every token's term is e^{x_t - frame} with x_t its exponent, and the scans are plain multiply-adds with the
// constant decay e^{-w}; no exponential depends on a scan's state. A work item goes chunk by chunk and, within a
// chunk, group by group (16 channels: one cache line of a row): a group's sums stay in vector registers for the
// chunk's tokens, and the chunk's rows stay in cache between its sweeps.
//
// Frames keep every value representable without losing precision that matters. The frame is the largest exponent
// among the chunk's tokens and the incoming sums, and |w| L <= kRange, so every in-frame value is at most
// T e^{kRange}, and every D_t (which holds the frame's largest term, decayed over less than a chunk: in a
// bidirectional sum every token sees every other) is at least e^{-kRange}; a term that underflows is below e^{-87}
// of that. Between chunks a sum is stored as in the stable kernels, e^o (a1, a2, ...) with o its largest decayed
// exponent, which a chunk's first sweep tracks as a running maximum. The causal op keeps the stable kernels: a
// token does not see the later tokens of its chunk, so its D_t has no such lower bound.
constexpr double kRange = 30;

// Chunk length for the chunked kernels, or 0 where they do not apply and the stable kernels run. The backward
// multiplies sums over keys with sums over outputs; with growing weights (w < 0) their frames can be T |w| apart,
// which must stay representable as well.
template <typename F>
int64_t chunk_length(const F* w, const F* u, int64_t n, int64_t T, bool backward) {
  double wabs = 0, uabs = 0, grow = 0;
  for (int64_t c = 0; c < n; ++c) {
    wabs = std::max<double>(wabs, std::abs(static_cast<double>(w[c])));
    uabs = std::max<double>(uabs, std::abs(static_cast<double>(u[c])));
    grow = std::max<double>(grow, -static_cast<double>(w[c]));
  }
  if (!(wabs <= kRange) || !(uabs <= kRange) || (backward && grow * T > kRange)) return 0;  // NaN: not chunked
  return wabs * kChunk <= kRange ? kChunk : std::max<int64_t>(1, static_cast<int64_t>(kRange / wabs));
}

// The chunked kernels' helpers take a group's state arrays by pointer; they are inlined so that the compiler can
// keep those arrays in vector registers across tokens.
#if defined(__GNUC__)
#define WKV_INLINE inline __attribute__((always_inline))
#else
#define WKV_INLINE inline
#endif

// Channels per group: one 64-byte cache line.
template <typename F>
constexpr int64_t kGroup = 64 / sizeof(F);

// Row t of one group of an [T, C] array: its m <= kGroup values as kGroup values of F, read in place when possible,
// else converted (or zero-padded, for the last group of a row) into buf.
template <typename T, typename F>
struct GroupRows {
  const T* p;
  int64_t stride, m;
  alignas(64) F buf[kGroup<F>] = {};
  WKV_INLINE const F* operator()(int64_t t) {
    const T* src = p + t * stride;
    if constexpr (std::is_same_v<T, F>) {
      if (m == kGroup<F>) return src;
    }
    for (int64_t c = 0; c < m; ++c) buf[c] = static_cast<F>(src[c]);
    return buf;
  }
  WKV_INLINE void prefetch(int64_t t) const {
    const char* row = reinterpret_cast<const char*>(p + t * stride);
    __builtin_prefetch(row), __builtin_prefetch(row + m * sizeof(T) - 1);  // a group row may straddle two lines
  }
};

template <typename F>
struct GroupOut {  // the matching writer: m values of row t
  F* p;
  int64_t stride, m;
  WKV_INLINE void operator()(int64_t t, const F* values) const {
    F* dst = p + t * stride;
    if (m == kGroup<F>) {
#pragma omp simd
      for (int64_t c = 0; c < kGroup<F>; ++c) dst[c] = values[c];
    } else {
      for (int64_t c = 0; c < m; ++c) dst[c] = values[c];
    }
  }
};

// Copies `count` groups of kGroup values: state into and out of a chunk's local arrays. Inlined: a memcpy call per
// 64 bytes (std::copy_n) measured 1.4x slower in the backward at T = 4096.
template <typename F>
WKV_INLINE void copy_groups(const F* src, F* dst, int64_t count = 1) {
#pragma omp simd
  for (int64_t c = 0; c < count * kGroup<F>; ++c) dst[c] = src[c];
}

// A group's frame and end exponent for one chunk [t0, t1) of a sum with token exponents x_t = sign * src_t:
// frame = max(o, max_t x_t), end = max(o - L w, max_t x_t - dist_t w), with dist_t the number of decays token t gets
// before the chunk ends (t - t0 for a reverse scan, t1 - 1 - t for a forward one). This is the first sweep over a
// chunk's rows, in ascending order; it also asks for the rows the chunk's scans read next (a scan reading them in
// descending order would wait on every row).
template <bool kReverse, typename T, typename F, typename... P>
WKV_INLINE void chunk_bounds(GroupRows<T, F>& src, F sign, const F* o, const F* w, int64_t t0, int64_t t1, F* frame,
                             F* end, const P&... also) {
  constexpr int64_t W = kGroup<F>;
#pragma omp simd
  for (int64_t c = 0; c < W; ++c) frame[c] = o[c], end[c] = o[c] - static_cast<F>(t1 - t0) * w[c];
  for (int64_t t = t0; t < t1; ++t) {
    (also.prefetch(t), ...);
    const F* xt = src(t);
    const F dist = static_cast<F>(kReverse ? t - t0 : t1 - 1 - t);
#pragma omp simd
    for (int64_t c = 0; c < W; ++c) {
      const F x = sign * xt[c];
      frame[c] = wmax(frame[c], x);
      end[c] = wmax(end[c], x - dist * w[c]);
    }
  }
}

// Re-expresses sums e^o (a...) relative to e^{to} and sets o = to.
template <typename F, typename... A>
WKV_INLINE void rebase(F* o, const F* to, A*... a) {
#pragma omp simd
  for (int64_t c = 0; c < kGroup<F>; ++c) {
    const F scale = wexp(o[c] - to[c]);
    ((a[c] *= scale), ...);
    o[c] = to[c];
  }
}

// Per-channel w, decay e^{-w} and bonus e^{u} of a group; the padding lanes of a last group get w = u = 0.
template <typename F>
WKV_INLINE void group_params(const F* wg, const F* ug, int64_t m, F* w, F* decay, F* eu) {
  for (int64_t c = 0; c < kGroup<F>; ++c) {
    w[c] = c < m ? wg[c] : F(0);
    decay[c] = wexp(-w[c]);
    eu[c] = wexp(c < m ? ug[c] : F(0));
  }
}

// Asks for rows [t0, t1) (n values each, C apart) of every array: the chunked kernels request the next chunk's rows
// of the whole block while they compute the current one. Each group reads only one cache line of a row, a stride
// the hardware prefetcher follows poorly (a 4 KB page holds a few rows).
template <typename... A>
void prefetch_rows(int64_t t0, int64_t t1, int64_t C, int64_t n, const A*... arrays) {
  auto rows = [&](const auto* p) {  // into L2 (locality 2): a chunk of all arrays is larger than L1
    for (int64_t t = std::max<int64_t>(t0, 0); t < t1; ++t)
      for (int64_t c = 0; c < n; c += 64 / sizeof(*p)) __builtin_prefetch(p + t * C + c, 0, 2);
  };
  (rows(arrays), ...);
}

// Per-group state of a chunked work item between chunks: `count` arrays of kGroup values per group, 64-byte
// aligned. A chunk copies its group's state into local arrays (which stay in registers) and back.
template <typename F>
struct GroupState {
  std::vector<F> storage;
  F* base;
  int64_t count;
  GroupState(int64_t groups, int64_t count_) : storage((groups * count_ + 1) * kGroup<F>), count(count_) {
    base = storage.data() + (64 - reinterpret_cast<uintptr_t>(storage.data()) % 64) % 64 / sizeof(F);
  }
  F* operator()(int64_t group, int64_t i) { return base + (group * count + i) * kGroup<F>; }
};

// Bidirectional forward of one (batch, channel block), chunk by chunk, every group of the block per chunk (so the
// chunk's rows stream through whole): (A) a reverse pass keeps the future sum at every chunk boundary; then per
// chunk, (B) a reverse scan from that boundary stores each token's future sum and (C) a forward scan adds the past
// sum and the token's own term. The past keeps its own frame (rebasing it from a frame set by a much larger future
// would overflow); outputs are formed in common = max(frame, future's o), the past scaled by rel = e^{frame - common}.
template <bool kLse, typename scalar_t, typename F>
void forward_chunked(const scalar_t* k, const scalar_t* v, const F* w_in, const F* u_in, F* y, F* lse, const Shape& s,
                     int64_t n, int64_t base, int64_t L) {
  constexpr int64_t W = kGroup<F>;
  const int64_t T = s.T, C = s.C, chunks = (T + L - 1) / L, groups = (n + W - 1) / W;
  GroupState<F> params(groups, 3), past(groups, 3), future(groups, 3), boundary(groups * chunks, 3);
  GroupState<F> scratch(1, 3 * L);
  for (int64_t g = 0; g < groups; ++g) {
    group_params(w_in + g * W, u_in + g * W, std::min(W, n - g * W), params(g, 0), params(g, 1), params(g, 2));
    std::fill_n(past(g, 0), 2 * W, F(0)), std::fill_n(past(g, 2), W, F(kEmpty));
    std::fill_n(future(g, 0), 2 * W, F(0)), std::fill_n(future(g, 2), W, F(kEmpty));
  }
  F* e = scratch(0, 0);   // e^{k_t - frame} of each token of a chunk
  F* fut = e + L * W;     // (f1, f2) of each token of a chunk
  alignas(64) F frame[W], end[W], common[W], rel[W], out[W], out_lse[W], f1[W], f2[W], fo[W], p1[W], p2[W], po[W];
  prefetch_rows((chunks - 1) * L, T, C, n, k + base, v + base);
  for (int64_t j = chunks - 1; j >= 0; --j) {  // (A)
    const int64_t t0 = j * L, t1 = std::min(T, t0 + L);
    prefetch_rows(t0 - L, t0, C, n, k + base, v + base);
    for (int64_t g = 0; g < groups; ++g) {
      const int64_t m = std::min(W, n - g * W), col = base + g * W;
      const F *w = params(g, 0), *decay = params(g, 1);
      GroupRows<scalar_t, F> krow{k + col, C, m}, vrow{v + col, C, m};
      copy_groups(future(g, 0), boundary(j * groups + g, 0), 3);  // the future sum after chunk j
      copy_groups(future(g, 0), f1), copy_groups(future(g, 1), f2), copy_groups(future(g, 2), fo);
      chunk_bounds<true>(krow, F(1), fo, w, t0, t1, frame, end, vrow);
      rebase(fo, frame, f1, f2);
      for (int64_t t = t1 - 1; t >= t0; --t) {
        const F *kt = krow(t), *vt = vrow(t);
#pragma omp simd
        for (int64_t c = 0; c < W; ++c) {
          const F et = wexp(kt[c] - frame[c]);
          f1[c] = decay[c] * f1[c] + et * vt[c];
          f2[c] = decay[c] * f2[c] + et;
        }
      }
      rebase(fo, end, f1, f2);
      copy_groups(f1, future(g, 0)), copy_groups(f2, future(g, 1)), copy_groups(fo, future(g, 2));
    }
  }
  for (int64_t j = 0; j < chunks; ++j) {  // (B) and (C), chunk by chunk
    const int64_t t0 = j * L, t1 = std::min(T, t0 + L);
    prefetch_rows(t1, std::min(T, t1 + L), C, n, k + base, v + base);
    for (int64_t g = 0; g < groups; ++g) {
      const int64_t m = std::min(W, n - g * W), col = base + g * W;
      const F *w = params(g, 0), *decay = params(g, 1), *eu = params(g, 2);
      GroupRows<scalar_t, F> krow{k + col, C, m}, vrow{v + col, C, m};
      const GroupOut<F> yout{y + col, C, m}, lout{kLse ? lse + col : nullptr, C, m};
      copy_groups(past(g, 0), p1), copy_groups(past(g, 1), p2), copy_groups(past(g, 2), po);
      copy_groups(boundary(j * groups + g, 0), f1), copy_groups(boundary(j * groups + g, 1), f2);
      copy_groups(boundary(j * groups + g, 2), fo);
      chunk_bounds<false>(krow, F(1), po, w, t0, t1, frame, end, vrow);
#pragma omp simd
      for (int64_t c = 0; c < W; ++c) common[c] = wmax(frame[c], fo[c]), rel[c] = wexp(frame[c] - common[c]);
      rebase(fo, common, f1, f2);
      rebase(po, frame, p1, p2);
      for (int64_t t = t1 - 1; t >= t0; --t) {  // (B)
        const F *kt = krow(t), *vt = vrow(t);
        F *et = e + (t - t0) * W, *u1 = fut + 2 * (t - t0) * W, *u2 = u1 + W;
#pragma omp simd
        for (int64_t c = 0; c < W; ++c) {
          u1[c] = f1[c], u2[c] = f2[c];
          et[c] = wexp(kt[c] - frame[c]);
          const F ec = rel[c] * et[c];
          f1[c] = decay[c] * f1[c] + ec * vt[c];
          f2[c] = decay[c] * f2[c] + ec;
        }
      }
      for (int64_t t = t0; t < t1; ++t) {  // (C)
        const F* vt = vrow(t);
        const F *et = e + (t - t0) * W, *u1 = fut + 2 * (t - t0) * W, *u2 = u1 + W;
#pragma omp simd
        for (int64_t c = 0; c < W; ++c) {
          const F own = eu[c] * et[c];
          const F num = rel[c] * (p1[c] + own * vt[c]) + u1[c], den = rel[c] * (p2[c] + own) + u2[c];
          out[c] = num / den;
          if constexpr (kLse) out_lse[c] = common[c] + wlog(den);
          p1[c] = decay[c] * p1[c] + et[c] * vt[c];
          p2[c] = decay[c] * p2[c] + et[c];
        }
        yout(t, out);
        if constexpr (kLse) lout(t, out_lse);
      }
      rebase(po, end, p1, p2);
      copy_groups(p1, past(g, 0)), copy_groups(p2, past(g, 1)), copy_groups(po, past(g, 2));
    }
  }
}

// Bytes of the backward's arrays (k, v, gy, y, lse, dv, dk) per work item that a super-chunk may span: about one
// core's L2, which keeps a super-chunk's rows resident from its reverse pass to its forward pass. At B = 4, C = 192
// (192 tokens per super-chunk) this measured as fast as 8 MB (a share of the L3) at T = 4096, and 4% faster at 16384.
constexpr int64_t kSuperChunkBytes = 1 << 20;

// Bidirectional backward of one (batch, channel block): the two passes of backward_stable, cache-blocked. The
// super-chunks go left to right, each running the full reverse pass and then the full forward pass over its
// chunks, so that the forward pass finds the super-chunk's rows (and the reverse pass's partial dv, dk) in cache at
// any T. Within a super-chunk the work goes chunk by chunk and, per chunk, group by group.
//
// kv: sums over keys e^{k_i} (v_i, 1) and their distance moments (q1, q2), for dw; g: sums over outputs
// e^{-lse_t} g_t (1, y_t), for dk and dv. In a chunk, kv is in the frame kframe (e^{k_t - kframe} <= 1) and g in
// gframe (e^{-lse_t - gframe} <= 1); cross = e^{kframe + gframe} turns a product of the two back into a softmax
// weight. Every softmax weight is <= 1, which bounds cross by e^{2 kRange} under chunk_length's conditions.
//
// The forward pass carries its sums from one super-chunk into the next. A reverse pass needs the sums beyond its
// super-chunk's end instead, and gets them without reading k and v twice:
// - g (every token's dv and dk depend on it): a first reverse pass over the sequence carries only g, reading lse, gy
//   and y, and keeps it at every super-chunk boundary.
// - kv (only dw depends on it) starts empty. The reverse pass then misses, at each token t, the keys beyond the
//   super-chunk. With K = e^o (a1, a2, q1, q2) their sum as the super-chunk's last token sees it and d_t = end-1-t,
//   that share of dw is -e^o sum_t x_t e^{-d_t w} ((q1 + d_t a1) - y_t (q2 + d_t a2)), x_t = e^{-lse_t} g_t: linear
//   in K. So the forward pass also keeps the x sums, sum_t x_t e^{-d_t w} (1, y_t) and their distance moments
//   (r1, r2, rq1, rq2), the reverse pass keeps the super-chunk's own kv sum, and a last step walks the super-chunks
//   right to left, building K from those kv sums and adding the missing shares.
template <typename scalar_t, typename F>
void backward_chunked(const scalar_t* gy, const scalar_t* k, const scalar_t* v, const F* w_in, const F* u_in,
                      const scalar_t* y, const F* lse, F* dk, F* dv, F* dw, F* du, const Shape& s, int64_t n,
                      int64_t base, int64_t L) {
  constexpr int64_t W = kGroup<F>;
  constexpr int64_t kKv = 0, kG = 5, kX = 8, kSums = 13;  // kv: a1 a2 q1 q2 ko; g: g1 g2 go; x: r1 r2 rq1 rq2 xo
  const int64_t T = s.T, C = s.C, chunks = (T + L - 1) / L, groups = (n + W - 1) / W;
  const int64_t per_super = std::max<int64_t>(1, kSuperChunkBytes / (7 * 4 * n * L));  // chunks per super-chunk
  const int64_t supers = (chunks + per_super - 1) / per_super;
  GroupState<F> params(groups, 3), acc(groups, 2), rsums(groups, kSums), fsums(groups, kSums);
  GroupState<F> g_after(groups * supers, 3);  // g beyond each super-chunk
  GroupState<F> own_kv(groups * supers, 5);   // each super-chunk's kv sum, as the token before it sees it
  GroupState<F> x_sums(groups * supers, 5);   // each super-chunk's x sums
  auto empty = [&](GroupState<F>& sums, int64_t g, int64_t first, int64_t count) {  // zero sums, empty exponent
    std::fill_n(sums(g, first), (count - 1) * W, F(0)), std::fill_n(sums(g, first + count - 1), W, F(kEmpty));
  };
  for (int64_t g = 0; g < groups; ++g) {
    group_params(w_in + g * W, u_in + g * W, std::min(W, n - g * W), params(g, 0), params(g, 1), params(g, 2));
    std::fill_n(acc(g, 0), 2 * W, F(0));
    empty(rsums, g, kG, 3), empty(fsums, g, kKv, 5), empty(fsums, g, kG, 3);
  }
  alignas(64) F kframe[W], kend[W], gframe[W], gend[W], xframe[W], xend[W], xrel[W], cross[W], dvt[W], dkt[W];
  alignas(64) F a1[W], a2[W], q1[W], q2[W], ko[W], g1[W], g2[W], go[W], r1[W], r2[W], rq1[W], rq2[W], xo[W];
  alignas(64) F dw_acc[W], du_acc[W];
  F* const local[] = {a1, a2, q1, q2, ko, g1, g2, go, r1, r2, rq1, rq2, xo};
  // kGOnly: the first pass, g alone. kForwardLast: the last super-chunk's forward pass, which needs no x sums.
  enum Mode { kGOnly, kReverse, kForward, kForwardLast };
  // One chunk j of one pass for every group, with the pass's sums in `sums`.
  auto chunk = [&](GroupState<F>& sums, int64_t j, auto mode_tag) {
    constexpr Mode kMode = decltype(mode_tag)::value;
    constexpr bool kFwd = kMode == kForward || kMode == kForwardLast, kKeys = kMode != kGOnly;
    constexpr bool kXSums = kMode == kForward;
    constexpr int64_t kFirst = kKeys ? kKv : kG, kLast = kXSums ? kSums : kX;  // the sums this pass carries
    const int64_t t0 = j * L, t1 = std::min(T, t0 + L), next = kFwd ? t1 : t0 - L;
    if constexpr (kKeys) {
      prefetch_rows(next, std::min(T, next + L), C, n, k + base, v + base, gy + base, y + base, lse + base);
    } else {
      prefetch_rows(next, std::min(T, next + L), C, n, gy + base, y + base, lse + base);
    }
    for (int64_t g = 0; g < groups; ++g) {
      const int64_t m = std::min(W, n - g * W), col = base + g * W;
      const F *w = params(g, 0), *decay = params(g, 1), *eu = params(g, 2);
      GroupRows<scalar_t, F> krow{k + col, C, m}, vrow{v + col, C, m}, grow{gy + col, C, m}, yrow{y + col, C, m};
      GroupRows<F, F> lrow{lse + col, C, m}, dvrow{dv + col, C, m}, dkrow{dk + col, C, m};
      const GroupOut<F> dvout{dv + col, C, m}, dkout{dk + col, C, m};
      for (int64_t a = kFirst; a < kLast; ++a) copy_groups(sums(g, a), local[a]);
      if constexpr (kKeys) {
        copy_groups(acc(g, 0), dw_acc), copy_groups(acc(g, 1), du_acc);
        chunk_bounds<!kFwd>(krow, F(1), ko, w, t0, t1, kframe, kend, vrow, grow);
      }
      if constexpr (kXSums) {
        // The x sums keep their own frame: in g's, set by larger outputs before the super-chunk, they could
        // underflow. xo <= go, so g's bounds follow from theirs.
        chunk_bounds<false>(lrow, F(-1), xo, w, t0, t1, xframe, xend, yrow);
        const F len = static_cast<F>(t1 - t0);
#pragma omp simd
        for (int64_t c = 0; c < W; ++c) {
          gframe[c] = wmax(go[c], xframe[c]), gend[c] = wmax(go[c] - len * w[c], xend[c]);
          xrel[c] = wexp(xframe[c] - gframe[c]);
        }
        rebase(xo, xframe, r1, r2, rq1, rq2);
      } else {
        chunk_bounds<!kFwd>(lrow, F(-1), go, w, t0, t1, gframe, gend, yrow, grow);
      }
      rebase(go, gframe, g1, g2);
      if constexpr (kKeys) {
        rebase(ko, kframe, a1, a2, q1, q2);
#pragma omp simd
        for (int64_t c = 0; c < W; ++c) cross[c] = wexp(kframe[c] + gframe[c]);
      }
      for (int64_t step = 0; step < t1 - t0; ++step) {
        const int64_t t = kFwd ? t0 + step : t1 - 1 - step;
        const F *gt = grow(t), *yt = yrow(t), *lt = lrow(t);
        const F *kt = kKeys ? krow(t) : nullptr, *vt = kKeys ? vrow(t) : nullptr;
        const F* dv_in = kFwd ? dvrow(t) : nullptr;
        const F* dk_in = kFwd ? dkrow(t) : nullptr;
        // The token's dw term from the key sums, then it enters them; its dv and dk shares from the output sums,
        // then it enters those; the forward pass adds its own u term and the reverse pass's shares.
#pragma omp simd
        for (int64_t c = 0; c < W; ++c) {
          F gel;  // e^{-lse_t - gframe} g_t
          if constexpr (kXSums) {
            const F xel = wexp(-lt[c] - xframe[c]) * gt[c];
            gel = xel * xrel[c];
            rq1[c] = decay[c] * (rq1[c] + r1[c]);
            rq2[c] = decay[c] * (rq2[c] + r2[c]);
            r1[c] = decay[c] * r1[c] + xel;
            r2[c] = decay[c] * r2[c] + xel * yt[c];
          } else {
            gel = wexp(-lt[c] - gframe[c]) * gt[c];
          }
          if constexpr (kKeys) {
            const F ek = wexp(kt[c] - kframe[c]), ekg = ek * cross[c];
            dw_acc[c] -= gel * cross[c] * (q1[c] - yt[c] * q2[c]);
            q1[c] = decay[c] * (q1[c] + a1[c]);
            q2[c] = decay[c] * (q2[c] + a2[c]);
            a1[c] = decay[c] * a1[c] + ek * vt[c];
            a2[c] = decay[c] * a2[c] + ek;
            F dvc = ekg * g1[c], gyc = ekg * g2[c];
            if constexpr (kFwd) {
              const F sg = eu[c] * ekg * gel;  // e^{u + k_t - lse_t} g_t
              dvc += dv_in[c] + sg;
              gyc += dk_in[c] + sg * yt[c];
              du_acc[c] += sg * (vt[c] - yt[c]);
              dvt[c] = dvc;
              dkt[c] = vt[c] * dvc - gyc;
            } else {
              dvt[c] = dvc;
              dkt[c] = gyc;  // sum s*g*y until the forward pass completes dk
            }
          }
          g1[c] = decay[c] * g1[c] + gel;
          g2[c] = decay[c] * g2[c] + gel * yt[c];
        }
        if constexpr (kKeys) dvout(t, dvt), dkout(t, dkt);
      }
      rebase(go, gend, g1, g2);
      if constexpr (kXSums) rebase(xo, xend, r1, r2, rq1, rq2);
      if constexpr (kKeys) rebase(ko, kend, a1, a2, q1, q2);
      for (int64_t a = kFirst; a < kLast; ++a) copy_groups(local[a], sums(g, a));
      if constexpr (kKeys) copy_groups(dw_acc, acc(g, 0)), copy_groups(du_acc, acc(g, 1));
    }
  };
  using GOnly = std::integral_constant<Mode, kGOnly>;
  using Reverse = std::integral_constant<Mode, kReverse>;
  using Forward = std::integral_constant<Mode, kForward>;
  using ForwardLast = std::integral_constant<Mode, kForwardLast>;
  for (int64_t sc = supers - 1; sc >= 0; --sc) {  // g beyond every super-chunk
    for (int64_t g = 0; g < groups; ++g) copy_groups(rsums(g, kG), g_after(sc * groups + g, 0), 3);
    if (sc > 0)
      for (int64_t j = std::min(chunks, (sc + 1) * per_super) - 1; j >= sc * per_super; --j) chunk(rsums, j, GOnly{});
  }
  for (int64_t sc = 0; sc < supers; ++sc) {
    const int64_t j0 = sc * per_super, j1 = std::min(chunks, j0 + per_super);
    for (int64_t g = 0; g < groups; ++g) {
      empty(rsums, g, kKv, 5), copy_groups(g_after(sc * groups + g, 0), rsums(g, kG), 3);
      empty(fsums, g, kX, 5);
    }
    for (int64_t j = j1 - 1; j >= j0; --j) chunk(rsums, j, Reverse{});
    for (int64_t j = j0; j < j1; ++j) {
      if (sc + 1 < supers) {
        chunk(fsums, j, Forward{});
      } else {
        chunk(fsums, j, ForwardLast{});
      }
    }
    for (int64_t g = 0; g < groups; ++g) {
      copy_groups(rsums(g, kKv), own_kv(sc * groups + g, 0), 5);
      copy_groups(fsums(g, kX), x_sums(sc * groups + g, 0), 5);
    }
  }
  // The missing dw shares, per channel in double, with K = e^o (a1, a2, q1, q2) the kv sum beyond super-chunk sc.
  for (int64_t g = 0; g < groups; ++g) {
    const int64_t m = std::min(W, n - g * W);
    for (int64_t c = 0; c < m; ++c) {
      // The scans decay by the rounded e^{-w} at every token, so K advances by its w: by w itself, the shares
      // came out with 4x the dw error of a single pass at T = 16384.
      const double w_scan = -std::log(static_cast<double>(params(g, 1)[c]));
      double a1 = 0, a2 = 0, q1 = 0, q2 = 0, o = kEmpty, missing = 0;
      for (int64_t sc = supers - 2; sc >= 0; --sc) {
        const int64_t len = std::min(T, (sc + 2) * per_super * L) - (sc + 1) * per_super * L;  // tokens of sc + 1
        advance_moments(a1, a2, q1, q2, o, w_scan, static_cast<double>(len));
        const F* own = own_kv((sc + 1) * groups + g, 0) + c;
        merge_moments<double>(a1, a2, q1, q2, o, own[0], own[W], own[2 * W], own[3 * W], own[4 * W]);
        const F* x = x_sums(sc * groups + g, 0) + c;
        missing -= std::exp(o + x[4 * W]) * (x[0] * q1 + x[2 * W] * a1 - x[W] * q2 - x[3 * W] * a2);
      }
      dw[g * W + c] = static_cast<F>(acc(g, 0)[c] + missing);
      du[g * W + c] = acc(g, 1)[c];
    }
  }
}

template <bool kBi, bool kLse, typename scalar_t, typename F = acc_t<scalar_t>>
void forward(const scalar_t* k, const scalar_t* v, const F* w, const F* u, F* y, F* lse, const Shape s) {
  // A forward for training (kLse) takes the chunked kernel only where its backward will too: gradients from a
  // matching pair measured several times more accurate than from a chunked forward with a stable backward.
  const bool chunked = kBi && chunk_length(w, u, s.C, s.T, kLse) > 0;
  for_each_block(s, [&](int64_t, int64_t c0, int64_t n, int64_t base) {
    if constexpr (kBi) {
      if (chunked) {
        forward_chunked<kLse>(k, v, w + c0, u + c0, y, lse, s, n, base, chunk_length(w + c0, u + c0, n, s.T, kLse));
        return;
      }
    }
    forward_stable<kBi, kLse>(k, v, w, u, y, lse, s, c0, n, base);
  });
}

template <bool kBi, typename scalar_t, typename F = acc_t<scalar_t>>
void backward(const scalar_t* gy, const scalar_t* k, const scalar_t* v, const F* w, const F* u, const scalar_t* y,
              const F* lse, F* dk, F* dv, F* dw, F* du, const Shape s) {
  const bool chunked = kBi && chunk_length(w, u, s.C, s.T, true) > 0;
  for_each_block(s, [&](int64_t b, int64_t c0, int64_t n, int64_t base) {
    if constexpr (kBi) {
      if (chunked) {
        backward_chunked(gy, k, v, w + c0, u + c0, y, lse, dk, dv, dw + b * s.C + c0, du + b * s.C + c0, s, n, base,
                         chunk_length(w + c0, u + c0, n, s.T, true));
        return;
      }
    }
    backward_stable<kBi>(gy, k, v, w, u, y, lse, dk, dv, dw, du, s, b, c0, n, base);
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
