// The torch side of the WKV extension: op schemas (TORCH_LIBRARY), input checks, allocation, and dispatch to the
// CPU kernels (wkv_cpu.cpp) and, when built WITH_CUDA, the CUDA launchers (wkv_cuda.cu).
// Fake (shape) functions and the autograd formula are registered from Python (rwkv_vision/ops/wkv.py).
#include <ATen/ATen.h>
#include <torch/library.h>

#include <string>
#include <tuple>

#include "wkv_cpu.h"

#ifdef WITH_CUDA
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "wkv_cuda.h"
#endif

namespace wkv {
namespace {

// float64 inputs accumulate in float64 (so gradcheck works); everything else in float32.
at::ScalarType acc_dtype(at::ScalarType t) { return t == at::kDouble ? at::kDouble : at::kFloat; }

void check_inputs(const at::Tensor& k, const at::Tensor& v, const at::Tensor& w, const at::Tensor& u) {
  TORCH_CHECK(k.dim() == 3, "wkv: k must be [B, T, C], got ", k.sizes());
  TORCH_CHECK(v.sizes() == k.sizes(), "wkv: v must match k ", k.sizes(), ", got ", v.sizes());
  TORCH_CHECK(v.scalar_type() == k.scalar_type(), "wkv: k and v dtypes differ");
  const auto t = k.scalar_type();
  TORCH_CHECK(t == at::kFloat || t == at::kHalf || t == at::kBFloat16 || t == at::kDouble,
              "wkv: unsupported dtype ", t);
  TORCH_CHECK(w.dim() == 1 && w.size(0) == k.size(2) && u.dim() == 1 && u.size(0) == k.size(2),
              "wkv: w and u must be [C] with C = ", k.size(2), ", got ", w.sizes(), " and ", u.sizes());
  TORCH_CHECK(w.scalar_type() == acc_dtype(t) && u.scalar_type() == acc_dtype(t), "wkv: w and u must be ",
              acc_dtype(t), " for ", t, " inputs");
  for (const auto* x : {&v, &w, &u}) TORCH_CHECK(x->device() == k.device(), "wkv: inputs on different devices");
}

#ifdef WITH_CUDA
Dtype cuda_dtype(at::ScalarType t) {
  switch (t) {
    case at::kHalf: return Dtype::kFloat16;
    case at::kBFloat16: return Dtype::kBFloat16;
    case at::kDouble: return Dtype::kFloat64;
    default: return Dtype::kFloat32;
  }
}

void* stream_of(const at::Tensor& t) { return c10::cuda::getCurrentCUDAStream(t.device().index()).stream(); }

void check_launch() {
  const char* err = last_cuda_error();
  TORCH_CHECK(err == nullptr, "wkv: CUDA kernel launch failed: ", err ? err : "");
}
#endif

std::tuple<at::Tensor, at::Tensor> wkv_forward(const at::Tensor& k_in, const at::Tensor& v_in, const at::Tensor& w_in,
                                               const at::Tensor& u_in, bool bidirectional, bool need_lse) {
  check_inputs(k_in, v_in, w_in, u_in);
  const auto k = k_in.contiguous(), v = v_in.contiguous(), w = w_in.contiguous(), u = u_in.contiguous();
  const auto acc = k.options().dtype(acc_dtype(k.scalar_type()));
  auto y = at::empty(k.sizes(), acc);
  // The bidirectional CUDA kernel also parks each token's future sum in lse; the CPU kernel keeps it in cache.
  const bool lse_buffer = need_lse || (k.is_cuda() && bidirectional);
  auto lse = at::empty(lse_buffer ? k.sizes() : at::IntArrayRef{0}, acc);
  if (k.numel() > 0) {
#ifdef WITH_CUDA
    if (k.is_cuda()) {
      const c10::cuda::CUDAGuard guard(k.device());
      auto ws = at::empty({workspace_size(k.size(0), k.size(1), k.size(2), false)}, acc);
      forward_cuda(cuda_dtype(k.scalar_type()), k.const_data_ptr(), v.const_data_ptr(), w.const_data_ptr(),
                   u.const_data_ptr(), y.data_ptr(), lse.data_ptr(), ws.data_ptr(), k.size(0), k.size(1), k.size(2),
                   bidirectional, need_lse, stream_of(k));
      check_launch();
    } else
#endif
    {
      TORCH_CHECK(k.is_cpu(), "wkv: this build has no kernel for ", k.device());
      forward_cpu(k, v, w, u, y, lse, bidirectional, need_lse);
    }
  }
  return {y.to(k.scalar_type()), need_lse ? lse : at::empty({0}, acc)};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> wkv_backward(
    const at::Tensor& gy_in, const at::Tensor& k_in, const at::Tensor& v_in, const at::Tensor& w_in,
    const at::Tensor& u_in, const at::Tensor& y_in, const at::Tensor& lse_in, bool bidirectional) {
  check_inputs(k_in, v_in, w_in, u_in);
  const auto dtype = k_in.scalar_type();
  const auto acc = k_in.options().dtype(acc_dtype(dtype));
  TORCH_CHECK(lse_in.sizes() == k_in.sizes() && lse_in.scalar_type() == acc_dtype(dtype),
              "wkv_backward: lse must be ", acc_dtype(dtype), " ", k_in.sizes(), " (run the forward with need_lse)");
  const auto k = k_in.contiguous(), v = v_in.contiguous(), w = w_in.contiguous(), u = u_in.contiguous();
  const auto gy = gy_in.to(dtype).contiguous(), y = y_in.to(dtype).contiguous(), lse = lse_in.contiguous();
  const int64_t B = k.size(0), C = k.size(2);
  auto dk = at::empty(k.sizes(), acc), dv = at::empty(k.sizes(), acc);
  auto dw = at::zeros({B, C}, acc), du = at::zeros({B, C}, acc);
  if (k.numel() > 0) {
#ifdef WITH_CUDA
    if (k.is_cuda()) {
      const c10::cuda::CUDAGuard guard(k.device());
      auto ws = at::empty({workspace_size(B, k.size(1), C, true)}, acc);
      backward_cuda(cuda_dtype(dtype), gy.const_data_ptr(), k.const_data_ptr(), v.const_data_ptr(),
                    w.const_data_ptr(), u.const_data_ptr(), y.const_data_ptr(), lse.const_data_ptr(), dk.data_ptr(),
                    dv.data_ptr(), dw.data_ptr(), du.data_ptr(), ws.data_ptr(), B, k.size(1), C, bidirectional,
                    stream_of(k));
      check_launch();
    } else
#endif
    {
      TORCH_CHECK(k.is_cpu(), "wkv: this build has no kernel for ", k.device());
      backward_cpu(gy, k, v, w, u, y, lse, dk, dv, dw, du, bidirectional);
    }
  }
  return {dk.to(dtype), dv.to(dtype), dw.sum(0), du.sum(0)};
}

std::string build_info() {
#ifdef WITH_CUDA
  return "cpu+cuda";
#else
  return "cpu";
#endif
}

}  // namespace
}  // namespace wkv

TORCH_LIBRARY(rwkv_vision, m) {
  m.def("wkv_forward(Tensor k, Tensor v, Tensor w, Tensor u, bool bidirectional, bool need_lse) -> (Tensor, Tensor)");
  m.def("wkv_backward(Tensor gy, Tensor k, Tensor v, Tensor w, Tensor u, Tensor y, Tensor lse, bool bidirectional)"
        " -> (Tensor, Tensor, Tensor, Tensor)");
  m.def("build_info() -> str", &wkv::build_info);
}

TORCH_LIBRARY_IMPL(rwkv_vision, CPU, m) {
  m.impl("wkv_forward", &wkv::wkv_forward);
  m.impl("wkv_backward", &wkv::wkv_backward);
}

#ifdef WITH_CUDA
TORCH_LIBRARY_IMPL(rwkv_vision, CUDA, m) {
  m.impl("wkv_forward", &wkv::wkv_forward);
  m.impl("wkv_backward", &wkv::wkv_backward);
}
#endif
