// CUDA WKV kernels: one thread per (batch, channel) scanning all T tokens with the math of wkv_math.h.
// Consecutive threads own consecutive channels, so every load and store of a token row is coalesced.
// No torch headers (fast to compile), no compile-time limit on T, any B and C (the last block is masked).
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "wkv_cuda.h"
#include "wkv_math.h"

namespace wkv {
namespace {

constexpr int kThreads = 128;

template <typename T> struct Acc { using type = float; };
template <> struct Acc<double> { using type = double; };

__device__ __forceinline__ float to_acc(float x) { return x; }
__device__ __forceinline__ double to_acc(double x) { return x; }
__device__ __forceinline__ float to_acc(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_acc(__nv_bfloat16 x) { return __bfloat162float(x); }

template <typename T, typename F = typename Acc<T>::type>
__global__ void forward_kernel(const T* __restrict__ k, const T* __restrict__ v, const F* __restrict__ w,
                               const F* __restrict__ u, F* __restrict__ y, F* __restrict__ lse,
                               int64_t B, int64_t Tn, int64_t C, bool bidirectional) {
  const int64_t bc = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (bc >= B * C) return;
  const int64_t b = bc / C, c = bc % C, base = b * Tn * C + c;
  const F wc = w[c], uc = u[c];
  F a1 = 0, a2 = 0, o = kEmpty;
  if (bidirectional) {
    for (int64_t t = Tn - 1; t >= 0; --t) {
      const int64_t i = base + t * C;
      summarize(a1, a2, o, y[i], lse[i]);
      push(a1, a2, o, wc, to_acc(k[i]), to_acc(v[i]), F(1));
    }
    a1 = F(0), a2 = F(0), o = kEmpty;
  }
  for (int64_t t = 0; t < Tn; ++t) {
    const int64_t i = base + t * C;
    const F kt = to_acc(k[i]), vt = to_acc(v[i]);
    const F fmean = bidirectional ? y[i] : F(0), flog = bidirectional ? lse[i] : kEmpty;
    y[i] = combine<true>(a1, a2, o, fmean, flog, uc, kt, vt, lse[i]);
    push(a1, a2, o, wc, kt, vt, F(1));
  }
}

template <typename T, typename F = typename Acc<T>::type>
__global__ void backward_kernel(const T* __restrict__ gy, const T* __restrict__ k, const T* __restrict__ v,
                                const F* __restrict__ w, const F* __restrict__ u, const T* __restrict__ y,
                                const F* __restrict__ lse, F* __restrict__ dk, F* __restrict__ dv,
                                F* __restrict__ dw, F* __restrict__ du, int64_t B, int64_t Tn, int64_t C,
                                bool bidirectional) {
  const int64_t bc = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (bc >= B * C) return;
  const int64_t b = bc / C, c = bc % C, base = b * Tn * C + c;
  const F wc = w[c], uc = u[c];
  F a1 = F(0), a2 = F(0), q1 = F(0), q2 = F(0), o = kEmpty, g1 = F(0), g2 = F(0), og = kEmpty;
  F dw_acc = F(0), du_acc = F(0);
  for (int64_t t = Tn - 1; t >= 0; --t) {  // keys after t (bidirectional), outputs after i (always)
    const int64_t i = base + t * C;
    const F kt = to_acc(k[i]), vt = to_acc(v[i]), gt = to_acc(gy[i]), yt = to_acc(y[i]), lt = lse[i];
    if (bidirectional) {
      dw_acc += dw_term(q1, q2, o, lt, gt, yt);
      push_moments(a1, a2, q1, q2, o, wc, kt, vt, F(1));
    }
    F dvt = F(0), gyt = F(0);
    gather(g1, g2, og, kt, dvt, gyt);
    dv[i] = dvt;
    dk[i] = gyt;
    push(g1, g2, og, wc, -lt, gt, gt * yt);
  }
  a1 = F(0), a2 = F(0), q1 = F(0), q2 = F(0), o = kEmpty, g1 = F(0), g2 = F(0), og = kEmpty;
  for (int64_t t = 0; t < Tn; ++t) {  // keys before t (always), outputs before i (bidirectional), own u term
    const int64_t i = base + t * C;
    const F kt = to_acc(k[i]), vt = to_acc(v[i]), gt = to_acc(gy[i]), yt = to_acc(y[i]), lt = lse[i];
    dw_acc += dw_term(q1, q2, o, lt, gt, yt);
    push_moments(a1, a2, q1, q2, o, wc, kt, vt, F(1));
    const F sg = wexp(uc + kt - lt) * gt;
    F dvt = dv[i] + sg, gyt = dk[i] + sg * yt;
    if (bidirectional) {
      gather(g1, g2, og, kt, dvt, gyt);
      push(g1, g2, og, wc, -lt, gt, gt * yt);
    }
    dv[i] = dvt;
    dk[i] = vt * dvt - gyt;
    du_acc += sg * (vt - yt);
  }
  dw[b * C + c] = dw_acc;
  du[b * C + c] = du_acc;
}

unsigned blocks_for(int64_t B, int64_t C) { return static_cast<unsigned>((B * C + kThreads - 1) / kThreads); }

template <typename T, typename F = typename Acc<T>::type>
void launch_forward(const void* k, const void* v, const void* w, const void* u, void* y, void* lse, int64_t B,
                    int64_t Tn, int64_t C, bool bidirectional, cudaStream_t stream) {
  forward_kernel<T><<<blocks_for(B, C), kThreads, 0, stream>>>(
      static_cast<const T*>(k), static_cast<const T*>(v), static_cast<const F*>(w), static_cast<const F*>(u),
      static_cast<F*>(y), static_cast<F*>(lse), B, Tn, C, bidirectional);
}

template <typename T, typename F = typename Acc<T>::type>
void launch_backward(const void* gy, const void* k, const void* v, const void* w, const void* u, const void* y,
                     const void* lse, void* dk, void* dv, void* dw, void* du, int64_t B, int64_t Tn, int64_t C,
                     bool bidirectional, cudaStream_t stream) {
  backward_kernel<T><<<blocks_for(B, C), kThreads, 0, stream>>>(
      static_cast<const T*>(gy), static_cast<const T*>(k), static_cast<const T*>(v), static_cast<const F*>(w),
      static_cast<const F*>(u), static_cast<const T*>(y), static_cast<const F*>(lse), static_cast<F*>(dk),
      static_cast<F*>(dv), static_cast<F*>(dw), static_cast<F*>(du), B, Tn, C, bidirectional);
}

}  // namespace

void forward_cuda(Dtype dtype, const void* k, const void* v, const void* w, const void* u, void* y, void* lse,
                  int64_t B, int64_t T, int64_t C, bool bidirectional, void* stream) {
  auto s = static_cast<cudaStream_t>(stream);
  switch (dtype) {
    case Dtype::kFloat32: return launch_forward<float>(k, v, w, u, y, lse, B, T, C, bidirectional, s);
    case Dtype::kFloat16: return launch_forward<__half>(k, v, w, u, y, lse, B, T, C, bidirectional, s);
    case Dtype::kBFloat16: return launch_forward<__nv_bfloat16>(k, v, w, u, y, lse, B, T, C, bidirectional, s);
    case Dtype::kFloat64: return launch_forward<double>(k, v, w, u, y, lse, B, T, C, bidirectional, s);
  }
}

void backward_cuda(Dtype dtype, const void* gy, const void* k, const void* v, const void* w, const void* u,
                   const void* y, const void* lse, void* dk, void* dv, void* dw, void* du, int64_t B, int64_t T,
                   int64_t C, bool bidirectional, void* stream) {
  auto s = static_cast<cudaStream_t>(stream);
  switch (dtype) {
    case Dtype::kFloat32:
      return launch_backward<float>(gy, k, v, w, u, y, lse, dk, dv, dw, du, B, T, C, bidirectional, s);
    case Dtype::kFloat16:
      return launch_backward<__half>(gy, k, v, w, u, y, lse, dk, dv, dw, du, B, T, C, bidirectional, s);
    case Dtype::kBFloat16:
      return launch_backward<__nv_bfloat16>(gy, k, v, w, u, y, lse, dk, dv, dw, du, B, T, C, bidirectional, s);
    case Dtype::kFloat64:
      return launch_backward<double>(gy, k, v, w, u, y, lse, dk, dv, dw, du, B, T, C, bidirectional, s);
  }
}

const char* last_cuda_error() {
  const cudaError_t err = cudaGetLastError();
  return err == cudaSuccess ? nullptr : cudaGetErrorString(err);
}

}  // namespace wkv
