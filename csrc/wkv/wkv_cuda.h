// Launchers of the CUDA WKV kernels (wkv_cuda.cu), callable from a translation unit without CUDA headers.
// Device pointers to contiguous tensors: k, v, gy, y [B, T, C] in `dtype`; w, u [C], the forward's y_acc and
// lse [B, T, C], dk, dv [B, T, C], dw, du [B, C] (per-batch sums) and the workspace in the accumulation type:
// double for kFloat64, else float. Launches on `stream` (a cudaStream_t) of the current device.
#pragma once

#include <cstdint>

namespace wkv {

enum class Dtype { kFloat32, kFloat16, kBFloat16, kFloat64 };

// Elements of scratch memory (of the accumulation type) that a forward or a backward of these sizes needs on the
// current device: the per-chunk sums, a few per (batch, chunk, channel).
int64_t workspace_size(int64_t B, int64_t T, int64_t C, bool backward);

// y_acc [B, T, C]; lse [B, T, C] is written when need_lse, and is also needed (as scratch) when bidirectional.
void forward_cuda(Dtype dtype, const void* k, const void* v, const void* w, const void* u, void* y_acc, void* lse,
                  void* workspace, int64_t B, int64_t T, int64_t C, bool bidirectional, bool need_lse, void* stream);

void backward_cuda(Dtype dtype, const void* gy, const void* k, const void* v, const void* w, const void* u,
                   const void* y, const void* lse, void* dk, void* dv, void* dw, void* du, void* workspace, int64_t B,
                   int64_t T, int64_t C, bool bidirectional, void* stream);

// The last CUDA error as text, or nullptr when there is none (checked by the caller after a launch).
const char* last_cuda_error();

}  // namespace wkv
