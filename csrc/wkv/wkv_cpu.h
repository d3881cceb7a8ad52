// CPU WKV kernels (wkv_cpu.cpp). All tensors contiguous on the CPU; k, v, gy, y: [B, T, C] in the input dtype;
// w, u, lse, dk, dv: the accumulation dtype (float64 for float64 inputs, else float32); dw, du: [B, C]
// per-batch partial sums, reduced by the caller. The forward writes lse (log D_t) only when need_lse.
#pragma once

#include <ATen/core/Tensor.h>

namespace wkv {

void forward_cpu(const at::Tensor& k, const at::Tensor& v, const at::Tensor& w, const at::Tensor& u, at::Tensor& y,
                 at::Tensor& lse, bool bidirectional, bool need_lse);

void backward_cpu(const at::Tensor& gy, const at::Tensor& k, const at::Tensor& v, const at::Tensor& w,
                  const at::Tensor& u, const at::Tensor& y, const at::Tensor& lse, at::Tensor& dk, at::Tensor& dv,
                  at::Tensor& dw, at::Tensor& du, bool bidirectional);

}  // namespace wkv
