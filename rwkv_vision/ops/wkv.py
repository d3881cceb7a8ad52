"""The WKV operator: public functions, ``torch.library`` registration (fake and autograd) and backend dispatch.

Two op families share one schema:
  ``rwkv_vision::wkv_forward`` / ``wkv_backward``            compiled (C++ CPU and CUDA; defined in csrc/wkv/ops.cpp)
  ``rwkv_vision_torch::wkv_forward`` / ``wkv_backward``      pure PyTorch (defined here, always available)
Both get the same fake (shape) functions and autograd formula, so either works with ``torch.compile`` and export.
"""

from __future__ import annotations

import torch

from . import _extension, wkv_torch

_FWD_SCHEMA = "(Tensor k, Tensor v, Tensor w, Tensor u, bool bidirectional, bool need_lse) -> (Tensor, Tensor)"
_BWD_SCHEMA = ("(Tensor gy, Tensor k, Tensor v, Tensor w, Tensor u, Tensor y, Tensor lse, bool bidirectional)"
               " -> (Tensor, Tensor, Tensor, Tensor)")


@torch.library.custom_op("rwkv_vision_torch::wkv_forward", mutates_args=(), schema=_FWD_SCHEMA)
def _torch_forward(k, v, w, u, bidirectional, need_lse):
    return wkv_torch.wkv_forward(k, v, w, u, bidirectional, need_lse)


@torch.library.custom_op("rwkv_vision_torch::wkv_backward", mutates_args=(), schema=_BWD_SCHEMA)
def _torch_backward(gy, k, v, w, u, y, lse, bidirectional):
    return wkv_torch.wkv_backward(gy, k, v, w, u, y, lse, bidirectional)


def _fake_forward(k, v, w, u, bidirectional, need_lse):
    lse_shape = k.shape if need_lse else (0,)
    return torch.empty(k.shape, dtype=k.dtype, device=k.device), k.new_empty(lse_shape, dtype=w.dtype)


def _fake_backward(gy, k, v, w, u, y, lse, bidirectional):
    return (torch.empty(k.shape, dtype=k.dtype, device=k.device), torch.empty(v.shape, dtype=v.dtype, device=v.device),
            torch.empty_like(w), torch.empty_like(u))


def _setup_context(ctx, inputs, output):
    k, v, w, u, bidirectional, _ = inputs
    y, lse = output
    ctx.save_for_backward(k, v, w, u, y, lse)
    ctx.bidirectional = bidirectional
    ctx.mark_non_differentiable(lse)
    # lse never receives a gradient; without this autograd would build a zero tensor the size of k for it.
    ctx.set_materialize_grads(False)


def _make_backward(backward_op):
    def backward(ctx, gy, _glse):
        k, v, w, u, y, lse = ctx.saved_tensors
        if lse.shape != k.shape:
            raise RuntimeError("WKV backward needs the forward to run with need_lse=True "
                               "(rwkv_vision.ops.bi_wkv sets it when an input requires grad)")
        if gy is None:  # y took no part in the loss: every gradient is zero
            return None, None, None, None, None, None
        if k.numel() == 0:  # B, T or C is 0: nothing to differentiate
            return torch.zeros_like(k), torch.zeros_like(v), torch.zeros_like(w), torch.zeros_like(u), None, None
        dk, dv, dw, du = backward_op(gy, k, v, w, u, y, lse, ctx.bidirectional)
        return dk, dv, dw, du, None, None
    return backward


def _no_double_backward(ctx, *grads):
    raise RuntimeError("WKV: gradients of its gradients (double backward, create_graph=True through the op) are not "
                       "implemented")


def _register(namespace: str) -> None:
    forward = getattr(torch.ops, namespace).wkv_forward
    backward = getattr(torch.ops, namespace).wkv_backward
    torch.library.register_fake(f"{namespace}::wkv_forward", _fake_forward)
    torch.library.register_fake(f"{namespace}::wkv_backward", _fake_backward)
    torch.library.register_autograd(f"{namespace}::wkv_forward", _make_backward(backward),
                                    setup_context=_setup_context)
    # Without a formula, autograd would let a double backward through the compiled op return no gradient.
    torch.library.register_autograd(f"{namespace}::wkv_backward", _no_double_backward,
                                    setup_context=lambda ctx, inputs, output: None)
    _OPS[namespace] = (forward, backward)


_OPS: dict[str, tuple] = {}
_register("rwkv_vision_torch")


@torch._dynamo.assume_constant_result
def _namespace_for(device_type: str) -> str:
    """Resolve the backend once per call site (constant under torch.compile) and make sure its ops are registered."""
    backend = _extension.resolve(device_type)
    if backend == "torch":
        return "rwkv_vision_torch"
    if "rwkv_vision" not in _OPS:
        _register("rwkv_vision")
    return "rwkv_vision"


def wkv_backend(device: torch.device | str | None = None) -> str:
    """Name of the backend ("cpp", "cuda" or "torch") that runs WKV for tensors on ``device`` (default: CPU).

    May build the extension on first use. Set ``RWKV_VISION_WKV_BACKEND=auto|cpp|cuda|torch`` to force one.
    """
    device_type = torch.device(device if device is not None else "cpu").type
    return _extension.resolve(device_type)


def _check(k: torch.Tensor, v: torch.Tensor, w: torch.Tensor, u: torch.Tensor, name: str):
    if not all(isinstance(t, torch.Tensor) for t in (k, v, w, u)):
        raise TypeError(f"{name}: k, v, w, u must be tensors")
    if k.dim() != 3 or k.shape != v.shape:
        raise ValueError(f"{name}: k and v must both have shape [B, T, C]; got k {tuple(k.shape)}, v {tuple(v.shape)}")
    C = k.shape[2]
    if w.shape != (C,) or u.shape != (C,):
        raise ValueError(f"{name}: w and u must have shape [C] = [{C}]; got w {tuple(w.shape)}, u {tuple(u.shape)}")
    if k.dtype not in (torch.float32, torch.float16, torch.bfloat16, torch.float64) or v.dtype != k.dtype:
        raise TypeError(f"{name}: k and v must share one dtype of float32, float16, bfloat16 (or float64); "
                        f"got k {k.dtype}, v {v.dtype}")
    if len({k.device, v.device, w.device, u.device}) != 1:
        raise ValueError(f"{name}: k, v, w, u must be on one device; got {k.device}, {v.device}, {w.device}, "
                         f"{u.device}")


def _wkv(k, v, w, u, bidirectional: bool, name: str) -> torch.Tensor:
    _check(k, v, w, u, name)
    forward, _ = _OPS[_namespace_for(k.device.type)]
    need_lse = torch.is_grad_enabled() and (k.requires_grad or v.requires_grad or w.requires_grad or u.requires_grad)
    acc = torch.float64 if k.dtype == torch.float64 else torch.float32
    y, _ = forward(k, v, w.to(acc), u.to(acc), bidirectional, need_lse)
    return y


def bi_wkv(k: torch.Tensor, v: torch.Tensor, w: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Bidirectional WKV (Vision-RWKV), an exact per-channel softmax over all tokens, in linear time.

    y_t = [sum_{i!=t} e^{-(|t-i|-1) w + k_i} v_i + e^{u + k_t} v_t] / [same sums without v]

    Args:
        k, v: [B, T, C] keys and values, float32, float16 or bfloat16 (one dtype; float64 also works and
            accumulates in float64, for gradcheck); any strides.
        w, u: [C] decay and bonus, used exactly as given (the Vision-RWKV layer passes spatial_decay / T and
            spatial_first / T); cast to float32.
    Returns:
        [B, T, C] in the dtype of ``k``; accumulated in float32. Differentiable in k, v, w and u.
    """
    return _wkv(k, v, w, u, True, "bi_wkv")


def causal_wkv(k: torch.Tensor, v: torch.Tensor, w: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Causal (RWKV-4) WKV: y_t = [sum_{i<t} e^{-(t-i-1) w + k_i} v_i + e^{u + k_t} v_t] / [same without v].

    Shapes, dtypes and gradients as :func:`bi_wkv`. An RWKV-4 layer passes ``w = exp(time_decay)``.
    """
    return _wkv(k, v, w, u, False, "causal_wkv")
