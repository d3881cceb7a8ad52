// Launchers of the CUDA WKV kernels (wkv_cuda.cu), callable from a translation unit without CUDA headers.
// Device pointers to contiguous tensors: k, v, gy, y [B, T, C] in `dtype`; w, u [C], the forward's y_acc and
// lse [B, T, C], dk, dv [B, T, C] and dw, du [B, C] (per-batch partial sums) in the accumulation type: double
// for kFloat64, else float.
#pragma once

#include <cstdint>

namespace wkv {

enum class Dtype { kFloat32, kFloat16, kBFloat16, kFloat64 };

void forward_cuda(Dtype dtype, const void* k, const void* v, const void* w, const void* u, void* y_acc, void* lse,
                  int64_t B, int64_t T, int64_t C, bool bidirectional, void* stream);

void backward_cuda(Dtype dtype, const void* gy, const void* k, const void* v, const void* w, const void* u,
                   const void* y, const void* lse, void* dk, void* dv, void* dw, void* du, int64_t B, int64_t T,
                   int64_t C, bool bidirectional, void* stream);

// The last CUDA error as text, or nullptr when there is none (checked by the caller after a launch).
const char* last_cuda_error();

}  // namespace wkv
