// CUDA WKV kernels. One thread per (batch, channel) scanning all T tokens leaves most of a GPU idle (B C = 768
// threads at B = 4, C = 192) and waits on every token in turn, so the scans are split into J chunks of L tokens:
//   1. *_sums:  one thread per (batch, chunk, channel) sums its chunk's tokens alone, from empty sums;
//   2. *_carry: one thread per (sum, batch, channel) walks the chunks in order and turns those into the sums that
//      enter each chunk (a sum seen n tokens later is advance()d, two sums are merge()d: wkv_math.h);
//   3. forward / backward: every (batch, chunk, channel) thread rescans its chunk from the carried sums with the
//      same per-token math as the CPU kernels' stable form (any w and u).
// Consecutive threads own consecutive channels, so every load and store of a token row is coalesced. No torch
// headers (fast to compile), no compile-time limit on T, any B and C. The per-thread functions are host+device so
// that tests/wkv_cuda_host_check.cu can run this exact code on a machine without a GPU.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "wkv_cuda.h"
#include "wkv_math.h"

namespace wkv {

constexpr int kThreads = 128;

// Chunking of one call: J chunks of L tokens (the last may be shorter).
struct Plan {
  int64_t B, T, C, L, J;
  WKV_HD int64_t tokens(int64_t j) const { return j + 1 < J ? L : T - j * L; }
  WKV_HD int64_t chunk_threads() const { return B * J * C; }
};

// Chunks short enough to give the GPU about 1024 threads per multiprocessor, but no shorter than 16 tokens (the
// carry step walks J chunks one after the other) nor than sqrt(T) / 4 (which bounds that walk at 4 sqrt(T) steps).
inline Plan make_plan(int64_t B, int64_t T, int64_t C, int multiprocessors) {
  const int64_t target = static_cast<int64_t>(multiprocessors) * 1024;
  int64_t L = 16;
  while (L < T && (B * C * ((T + L - 1) / L) > target || L * L * 16 < T)) L *= 2;
  return {B, T, C, L, (T + L - 1) / L};
}

// Layout of the per-chunk sums: [B, J, slots, C], so that a warp's loads of one slot are coalesced.
template <typename F>
struct Slots {
  F* p;
  int64_t count, J, C;
  WKV_HD F& operator()(int64_t b, int64_t j, int64_t s, int64_t c) const {
    return p[((b * J + j) * count + s) * C + c];
  }
};

template <typename T> struct Acc { using type = float; };
template <> struct Acc<double> { using type = double; };

WKV_HD float to_acc(float x) { return x; }
WKV_HD double to_acc(double x) { return x; }
WKV_HD float to_acc(__half x) { return __half2float(x); }
WKV_HD float to_acc(__nv_bfloat16 x) { return __bfloat162float(x); }

// A running sum e^o (a1, a2), and one with distance moments e^o (a1, a2, q1, q2) for the backward's key sums.
template <typename F>
struct Sum {
  F a1 = 0, a2 = 0, o = kEmpty;
  WKV_HD void load(const Slots<F>& s, int64_t b, int64_t j, int64_t first, int64_t c) {
    a1 = s(b, j, first, c), a2 = s(b, j, first + 1, c), o = s(b, j, first + 2, c);
  }
  WKV_HD void store(const Slots<F>& s, int64_t b, int64_t j, int64_t first, int64_t c) const {
    s(b, j, first, c) = a1, s(b, j, first + 1, c) = a2, s(b, j, first + 2, c) = o;
  }
  WKV_HD void carry(const Sum& chunk, F w, F n) { advance(o, w, n), merge(a1, a2, o, chunk.a1, chunk.a2, chunk.o); }
};

template <typename F>
struct MomentSum {
  F a1 = 0, a2 = 0, q1 = 0, q2 = 0, o = kEmpty;
  WKV_HD void load(const Slots<F>& s, int64_t b, int64_t j, int64_t first, int64_t c) {
    a1 = s(b, j, first, c), a2 = s(b, j, first + 1, c), q1 = s(b, j, first + 2, c), q2 = s(b, j, first + 3, c);
    o = s(b, j, first + 4, c);
  }
  WKV_HD void store(const Slots<F>& s, int64_t b, int64_t j, int64_t first, int64_t c) const {
    s(b, j, first, c) = a1, s(b, j, first + 1, c) = a2, s(b, j, first + 2, c) = q1, s(b, j, first + 3, c) = q2;
    s(b, j, first + 4, c) = o;
  }
  WKV_HD void carry(const MomentSum& chunk, F w, F n) {
    advance_moments(a1, a2, q1, q2, o, w, n);
    merge_moments(a1, a2, q1, q2, o, chunk.a1, chunk.a2, chunk.q1, chunk.q2, chunk.o);
  }
};

// Walks the chunks of one (batch, channel) in order (backwards for a reverse sum), replacing each chunk's own sum by
// the sum that enters it: the tokens before the chunk as seen from its first token (forwards), or those after it as
// seen from its last (backwards).
// The walk waits on memory at every step, so the next chunk's sum is loaded before this one is carried.
template <typename S, typename F>
WKV_HD void carry_sums(const Slots<F>& slots, const Plan& p, int64_t b, int64_t c, int64_t first, bool backwards,
                       F w) {
  S running, next;
  next.load(slots, b, backwards ? p.J - 1 : 0, first, c);
  for (int64_t step = 0; step < p.J; ++step) {
    const int64_t j = backwards ? p.J - 1 - step : step;
    const S chunk = next;
    if (step + 1 < p.J) next.load(slots, b, backwards ? j - 1 : j + 1, first, c);
    running.store(slots, b, j, first, c);
    running.carry(chunk, w, static_cast<F>(p.tokens(j)));
  }
}

// The carry kernels run one thread per (sum, batch, channel): the sums are independent walks.
constexpr int64_t kForwardSums = 2, kBackwardSums = 4;

// ---- Forward --------------------------------------------------------------------------------------------------
// Slots: 0-2 the past sum (keys before the chunk), 3-5 the future sum (keys after it).
constexpr int64_t kForwardSlots = 6;

// Thread (b, j, c): its chunk's keys as the past of the next chunk's first token, and as the future of the previous
// chunk's last token (token t0 + s is s + 1 tokens after it, so its exponent is k - s w: added term by term).
template <typename T, typename F>
WKV_HD void forward_sums_at(const T* __restrict__ k, const T* __restrict__ v, const F* w, Slots<F> slots, Plan p,
                            bool bidirectional, int64_t idx) {
  const int64_t c = idx % p.C, j = idx / p.C % p.J, b = idx / p.C / p.J;
  const int64_t n = p.tokens(j), base = (b * p.T + j * p.L) * p.C + c;
  const F wc = w[c];
  Sum<F> past, future;
  for (int64_t s = 0; s < n; ++s) {
    const F kt = to_acc(k[base + s * p.C]), vt = to_acc(v[base + s * p.C]);
    push(past.a1, past.a2, past.o, wc, kt, vt, F(1));
    if (bidirectional) merge(future.a1, future.a2, future.o, vt, F(1), kt - static_cast<F>(s) * wc);
  }
  past.store(slots, b, j, 0, c);
  future.store(slots, b, j, 3, c);
}

template <typename F>
WKV_HD void forward_carry_at(const F* w, Slots<F> slots, Plan p, bool bidirectional, int64_t idx) {
  const int64_t sum = idx / (p.B * p.C), c = idx % p.C, b = idx / p.C % p.B;
  if (sum == 0) carry_sums<Sum<F>>(slots, p, b, c, 0, false, w[c]);
  if (sum == 1 && bidirectional) carry_sums<Sum<F>>(slots, p, b, c, 3, true, w[c]);
}

// Thread (b, j, c) rescans its chunk: backwards from the future sum, parking each token's future summary in y and
// lse (the forward allocates lse for this when bidirectional), then forwards from the past sum.
template <bool kLse, typename T, typename F>
WKV_HD void forward_at(const T* __restrict__ k, const T* __restrict__ v, const F* w, const F* u, F* __restrict__ y,
                       F* __restrict__ lse, Slots<F> slots, Plan p, bool bidirectional, int64_t idx) {
  const int64_t c = idx % p.C, j = idx / p.C % p.J, b = idx / p.C / p.J;
  const int64_t n = p.tokens(j), base = (b * p.T + j * p.L) * p.C + c;
  const F wc = w[c], uc = u[c];
  if (bidirectional) {
    Sum<F> f;
    f.load(slots, b, j, 3, c);
    for (int64_t s = n - 1; s >= 0; --s) {
      const int64_t i = base + s * p.C;
      summarize(f.a1, f.a2, f.o, y[i], lse[i]);
      push(f.a1, f.a2, f.o, wc, to_acc(k[i]), to_acc(v[i]), F(1));
    }
  }
  Sum<F> past;
  past.load(slots, b, j, 0, c);
  F unused;
  for (int64_t s = 0; s < n; ++s) {
    const int64_t i = base + s * p.C;
    const F kt = to_acc(k[i]), vt = to_acc(v[i]);
    const F fmean = bidirectional ? y[i] : F(0), flog = bidirectional ? lse[i] : F(kEmpty);
    y[i] = combine<kLse>(past.a1, past.a2, past.o, fmean, flog, uc, kt, vt, kLse ? lse[i] : unused);
    push(past.a1, past.a2, past.o, wc, kt, vt, F(1));
  }
}

// ---- Backward -------------------------------------------------------------------------------------------------
// Two sums each way: over keys e^{k_i} (v_i, 1) with distance moments (for dw), and over outputs
// e^{-lse_t} g_t (1, y_t) (for dk, dv). Slots: 0-4 keys before the chunk, 5-7 outputs before it, 8-12 keys after
// it, 13-15 outputs after it; then 16-17 the chunk's share of dw and du.
constexpr int64_t kBackwardSlots = 18;

template <typename T, typename F>
struct TokenRows {  // token s of a thread's chunk: k, v, gy, y as F and lse
  const T *__restrict__ k, *__restrict__ v, *__restrict__ gy, *__restrict__ y;
  const F* __restrict__ lse;
  int64_t base, C;
  WKV_HD void operator()(int64_t s, F& kt, F& vt, F& gt, F& yt, F& lt) const {
    const int64_t i = base + s * C;
    kt = to_acc(k[i]), vt = to_acc(v[i]), gt = to_acc(gy[i]), yt = to_acc(y[i]), lt = lse[i];
  }
};

template <typename T, typename F>
WKV_HD void backward_sums_at(const T* gy, const T* k, const T* v, const F* w, const T* y, const F* lse,
                             Slots<F> slots, Plan p, bool bidirectional, int64_t idx) {
  const int64_t c = idx % p.C, j = idx / p.C % p.J, b = idx / p.C / p.J;
  const int64_t n = p.tokens(j);
  const TokenRows<T, F> rows{k, v, gy, y, lse, (b * p.T + j * p.L) * p.C + c, p.C};
  const F wc = w[c];
  F kt, vt, gt, yt, lt;
  MomentSum<F> keys;
  Sum<F> outs;
  for (int64_t s = 0; s < n; ++s) {
    rows(s, kt, vt, gt, yt, lt);
    push_moments(keys.a1, keys.a2, keys.q1, keys.q2, keys.o, wc, kt, vt, F(1));
    if (bidirectional) push(outs.a1, outs.a2, outs.o, wc, -lt, gt, gt * yt);
  }
  keys.store(slots, b, j, 0, c);
  outs.store(slots, b, j, 5, c);
  keys = MomentSum<F>(), outs = Sum<F>();
  for (int64_t s = n - 1; s >= 0; --s) {
    rows(s, kt, vt, gt, yt, lt);
    if (bidirectional) push_moments(keys.a1, keys.a2, keys.q1, keys.q2, keys.o, wc, kt, vt, F(1));
    push(outs.a1, outs.a2, outs.o, wc, -lt, gt, gt * yt);
  }
  keys.store(slots, b, j, 8, c);
  outs.store(slots, b, j, 13, c);
}

template <typename F>
WKV_HD void backward_carry_at(const F* w, Slots<F> slots, Plan p, bool bidirectional, int64_t idx) {
  const int64_t sum = idx / (p.B * p.C), c = idx % p.C, b = idx / p.C % p.B;
  if (sum == 0) carry_sums<MomentSum<F>>(slots, p, b, c, 0, false, w[c]);
  if (sum == 1) carry_sums<Sum<F>>(slots, p, b, c, 13, true, w[c]);
  if (sum == 2 && bidirectional) carry_sums<Sum<F>>(slots, p, b, c, 5, false, w[c]);
  if (sum == 3 && bidirectional) carry_sums<MomentSum<F>>(slots, p, b, c, 8, true, w[c]);
}

// Thread (b, j, c): the two passes of the CPU's backward_stable over its chunk, from the carried sums. The reverse
// pass leaves dv and sum s g y in dv and dk; the forward pass completes them.
template <typename T, typename F>
WKV_HD void backward_at(const T* gy, const T* k, const T* v, const F* w, const F* u, const T* y, const F* lse,
                        F* __restrict__ dk, F* __restrict__ dv, Slots<F> slots, Plan p, bool bidirectional,
                        int64_t idx) {
  const int64_t c = idx % p.C, j = idx / p.C % p.J, b = idx / p.C / p.J;
  const int64_t n = p.tokens(j), base = (b * p.T + j * p.L) * p.C + c;
  const TokenRows<T, F> rows{k, v, gy, y, lse, base, p.C};
  const F wc = w[c], uc = u[c];
  F kt, vt, gt, yt, lt, dw_acc = 0, du_acc = 0;
  MomentSum<F> keys;
  Sum<F> outs;
  if (bidirectional) keys.load(slots, b, j, 8, c);
  outs.load(slots, b, j, 13, c);
  for (int64_t s = n - 1; s >= 0; --s) {  // keys after t (bidirectional), outputs after i (always)
    rows(s, kt, vt, gt, yt, lt);
    if (bidirectional) {
      dw_acc += dw_term(keys.q1, keys.q2, keys.o, lt, gt, yt);
      push_moments(keys.a1, keys.a2, keys.q1, keys.q2, keys.o, wc, kt, vt, F(1));
    }
    F dvt = 0, gyt = 0;
    gather(outs.a1, outs.a2, outs.o, kt, dvt, gyt);
    dv[base + s * p.C] = dvt;
    dk[base + s * p.C] = gyt;
    push(outs.a1, outs.a2, outs.o, wc, -lt, gt, gt * yt);
  }
  keys.load(slots, b, j, 0, c);
  outs = Sum<F>();
  if (bidirectional) outs.load(slots, b, j, 5, c);
  for (int64_t s = 0; s < n; ++s) {  // keys before t (always), outputs before i (bidirectional), own u term
    rows(s, kt, vt, gt, yt, lt);
    const int64_t i = base + s * p.C;
    dw_acc += dw_term(keys.q1, keys.q2, keys.o, lt, gt, yt);
    push_moments(keys.a1, keys.a2, keys.q1, keys.q2, keys.o, wc, kt, vt, F(1));
    const F sg = wexp(uc + kt - lt) * gt;
    F dvt = dv[i] + sg, gyt = dk[i] + sg * yt;
    if (bidirectional) {
      gather(outs.a1, outs.a2, outs.o, kt, dvt, gyt);
      push(outs.a1, outs.a2, outs.o, wc, -lt, gt, gt * yt);
    }
    dv[i] = dvt;
    dk[i] = vt * dvt - gyt;
    du_acc += sg * (vt - yt);
  }
  slots(b, j, 16, c) = dw_acc;
  slots(b, j, 17, c) = du_acc;
}

// dw and du of (b, c): the chunks' shares, added in chunk order (deterministic).
template <typename F>
WKV_HD void backward_reduce_at(Slots<F> slots, Plan p, F* dw, F* du, int64_t idx) {
  const int64_t c = idx % p.C, b = idx / p.C;
  F dw_acc = 0, du_acc = 0;
  for (int64_t j = 0; j < p.J; ++j) dw_acc += slots(b, j, 16, c), du_acc += slots(b, j, 17, c);
  dw[idx] = dw_acc;
  du[idx] = du_acc;
}

#if !defined(WKV_HOST_CHECK)
namespace {

// Thin kernels: thread index -> the per-thread functions above.
__device__ __forceinline__ int64_t thread_index() {
  return static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
}

template <typename T, typename F>
__global__ void forward_sums_kernel(const T* k, const T* v, const F* w, Slots<F> slots, Plan p, bool bi) {
  const int64_t idx = thread_index();
  if (idx < p.chunk_threads()) forward_sums_at(k, v, w, slots, p, bi, idx);
}

template <typename F>
__global__ void forward_carry_kernel(const F* w, Slots<F> slots, Plan p, bool bi) {
  const int64_t idx = thread_index();
  if (idx < kForwardSums * p.B * p.C) forward_carry_at(w, slots, p, bi, idx);
}

template <bool kLse, typename T, typename F>
__global__ void forward_kernel(const T* k, const T* v, const F* w, const F* u, F* y, F* lse, Slots<F> slots, Plan p,
                               bool bi) {
  const int64_t idx = thread_index();
  if (idx < p.chunk_threads()) forward_at<kLse>(k, v, w, u, y, lse, slots, p, bi, idx);
}

template <typename T, typename F>
__global__ void backward_sums_kernel(const T* gy, const T* k, const T* v, const F* w, const T* y, const F* lse,
                                     Slots<F> slots, Plan p, bool bi) {
  const int64_t idx = thread_index();
  if (idx < p.chunk_threads()) backward_sums_at(gy, k, v, w, y, lse, slots, p, bi, idx);
}

template <typename F>
__global__ void backward_carry_kernel(const F* w, Slots<F> slots, Plan p, bool bi) {
  const int64_t idx = thread_index();
  if (idx < kBackwardSums * p.B * p.C) backward_carry_at(w, slots, p, bi, idx);
}

template <typename T, typename F>
__global__ void backward_kernel(const T* gy, const T* k, const T* v, const F* w, const F* u, const T* y, const F* lse,
                                F* dk, F* dv, Slots<F> slots, Plan p, bool bi) {
  const int64_t idx = thread_index();
  if (idx < p.chunk_threads()) backward_at(gy, k, v, w, u, y, lse, dk, dv, slots, p, bi, idx);
}

template <typename F>
__global__ void backward_reduce_kernel(Slots<F> slots, Plan p, F* dw, F* du) {
  const int64_t idx = thread_index();
  if (idx < p.B * p.C) backward_reduce_at(slots, p, dw, du, idx);
}

unsigned blocks(int64_t threads) { return static_cast<unsigned>((threads + kThreads - 1) / kThreads); }

Plan plan_for(int64_t B, int64_t T, int64_t C) {
  int device = 0, multiprocessors = 0;
  cudaGetDevice(&device);
  cudaDeviceGetAttribute(&multiprocessors, cudaDevAttrMultiProcessorCount, device);
  return make_plan(B, T, C, multiprocessors > 0 ? multiprocessors : 1);
}

template <typename T, typename F = typename Acc<T>::type>
void run_forward(const void* k_, const void* v_, const void* w_, const void* u_, void* y_, void* lse_, void* ws,
                 int64_t B, int64_t Tn, int64_t C, bool bidirectional, bool need_lse, cudaStream_t s) {
  const auto *k = static_cast<const T*>(k_), *v = static_cast<const T*>(v_);
  const auto *w = static_cast<const F*>(w_), *u = static_cast<const F*>(u_);
  auto *y = static_cast<F*>(y_), *lse = static_cast<F*>(lse_);
  const Plan p = plan_for(B, Tn, C);
  const Slots<F> slots{static_cast<F*>(ws), kForwardSlots, p.J, C};
  const unsigned chunk_blocks = blocks(p.chunk_threads());
  forward_sums_kernel<<<chunk_blocks, kThreads, 0, s>>>(k, v, w, slots, p, bidirectional);
  forward_carry_kernel<<<blocks(kForwardSums * B * C), kThreads, 0, s>>>(w, slots, p, bidirectional);
  if (need_lse)
    forward_kernel<true><<<chunk_blocks, kThreads, 0, s>>>(k, v, w, u, y, lse, slots, p, bidirectional);
  else
    forward_kernel<false><<<chunk_blocks, kThreads, 0, s>>>(k, v, w, u, y, lse, slots, p, bidirectional);
}

template <typename T, typename F = typename Acc<T>::type>
void run_backward(const void* gy_, const void* k_, const void* v_, const void* w_, const void* u_, const void* y_,
                  const void* lse_, void* dk_, void* dv_, void* dw_, void* du_, void* ws, int64_t B, int64_t Tn,
                  int64_t C, bool bidirectional, cudaStream_t s) {
  const auto *gy = static_cast<const T*>(gy_), *k = static_cast<const T*>(k_), *v = static_cast<const T*>(v_);
  const auto *y = static_cast<const T*>(y_);
  const auto *w = static_cast<const F*>(w_), *u = static_cast<const F*>(u_), *lse = static_cast<const F*>(lse_);
  auto *dk = static_cast<F*>(dk_), *dv = static_cast<F*>(dv_), *dw = static_cast<F*>(dw_), *du = static_cast<F*>(du_);
  const Plan p = plan_for(B, Tn, C);
  const Slots<F> slots{static_cast<F*>(ws), kBackwardSlots, p.J, C};
  const unsigned chunk_blocks = blocks(p.chunk_threads());
  backward_sums_kernel<<<chunk_blocks, kThreads, 0, s>>>(gy, k, v, w, y, lse, slots, p, bidirectional);
  backward_carry_kernel<<<blocks(kBackwardSums * B * C), kThreads, 0, s>>>(w, slots, p, bidirectional);
  backward_kernel<<<chunk_blocks, kThreads, 0, s>>>(gy, k, v, w, u, y, lse, dk, dv, slots, p, bidirectional);
  backward_reduce_kernel<<<blocks(B * C), kThreads, 0, s>>>(slots, p, dw, du);
}

}  // namespace

int64_t workspace_size(int64_t B, int64_t T, int64_t C, bool backward) {
  const Plan p = plan_for(B, T, C);
  return p.chunk_threads() * (backward ? kBackwardSlots : kForwardSlots);
}

void forward_cuda(Dtype dtype, const void* k, const void* v, const void* w, const void* u, void* y, void* lse,
                  void* workspace, int64_t B, int64_t T, int64_t C, bool bidirectional, bool need_lse, void* stream) {
  auto s = static_cast<cudaStream_t>(stream);
  switch (dtype) {
    case Dtype::kFloat32:
      return run_forward<float>(k, v, w, u, y, lse, workspace, B, T, C, bidirectional, need_lse, s);
    case Dtype::kFloat16:
      return run_forward<__half>(k, v, w, u, y, lse, workspace, B, T, C, bidirectional, need_lse, s);
    case Dtype::kBFloat16:
      return run_forward<__nv_bfloat16>(k, v, w, u, y, lse, workspace, B, T, C, bidirectional, need_lse, s);
    case Dtype::kFloat64:
      return run_forward<double>(k, v, w, u, y, lse, workspace, B, T, C, bidirectional, need_lse, s);
  }
}

void backward_cuda(Dtype dtype, const void* gy, const void* k, const void* v, const void* w, const void* u,
                   const void* y, const void* lse, void* dk, void* dv, void* dw, void* du, void* workspace, int64_t B,
                   int64_t T, int64_t C, bool bidirectional, void* stream) {
  auto s = static_cast<cudaStream_t>(stream);
  switch (dtype) {
    case Dtype::kFloat32:
      return run_backward<float>(gy, k, v, w, u, y, lse, dk, dv, dw, du, workspace, B, T, C, bidirectional, s);
    case Dtype::kFloat16:
      return run_backward<__half>(gy, k, v, w, u, y, lse, dk, dv, dw, du, workspace, B, T, C, bidirectional, s);
    case Dtype::kBFloat16:
      return run_backward<__nv_bfloat16>(gy, k, v, w, u, y, lse, dk, dv, dw, du, workspace, B, T, C, bidirectional,
                                         s);
    case Dtype::kFloat64:
      return run_backward<double>(gy, k, v, w, u, y, lse, dk, dv, dw, du, workspace, B, T, C, bidirectional, s);
  }
}

const char* last_cuda_error() {
  const cudaError_t err = cudaGetLastError();
  return err == cudaSuccess ? nullptr : cudaGetErrorString(err);
}
#endif

}  // namespace wkv
