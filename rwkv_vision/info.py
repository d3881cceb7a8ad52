"""``rwkv-vision info`` / ``python -m rwkv_vision.info``: versions, device, and which WKV backend runs and why."""

from __future__ import annotations

import platform
import time

import torch


def collect() -> dict:
    """Versions, devices and the WKV backend per device type, as a dict of strings."""
    from . import __version__
    from .ops import _extension

    info = {
        "rwkv_vision": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch CUDA build": torch.version.cuda or "no",
        "CPU threads": str(torch.get_num_threads()),
        "CUDA device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none",
        "WKV backend setting": _backend_setting(),
        "WKV on cpu": _extension.explain("cpu"),
    }
    if torch.cuda.is_available():
        info["WKV on cuda"] = _extension.explain("cuda")
    if _extension.STATUS.log:
        info["WKV build log"] = _extension.STATUS.log
    return info


def _backend_setting() -> str:
    from .ops import _extension

    try:
        return _extension.requested_backend()
    except ValueError as exc:  # a bad RWKV_VISION_WKV_BACKEND: say so instead of failing
        return f"error: {exc}"


def check_wkv(T: int = 196, C: int = 192, B: int = 2) -> dict:
    """Run bi_wkv forward+backward on the selected backend and compare it with the pure-PyTorch path.

    Returns the backend, the largest difference of the output and the four gradients (relative to each tensor's
    largest magnitude), and the time of one call in ms.
    """
    from .ops import wkv as W

    gen = torch.Generator().manual_seed(0)
    k, v = torch.randn(B, T, C, generator=gen), torch.randn(B, T, C, generator=gen)
    w, u = torch.randn(C, generator=gen) * 5 / T, torch.randn(C, generator=gen) / T

    def run(namespace):
        forward, _ = W._OPS[namespace]
        ki, vi, wi, ui = (t.clone().requires_grad_() for t in (k, v, w, u))
        start = time.perf_counter()
        y, _ = forward(ki, vi, wi, ui, True, True)
        y.square().sum().backward()
        return [y, ki.grad, vi.grad, wi.grad, ui.grad], (time.perf_counter() - start) * 1e3

    ns = W._namespace_for("cpu")
    ours, ms = run(ns)
    ref, ref_ms = run("rwkv_vision_torch")
    diff = max(((a - b).abs().max() / b.abs().max().clamp_min(1e-12)).item() for a, b in zip(ours, ref))
    return {"backend": "torch" if ns == "rwkv_vision_torch" else "cpp", "max_rel_diff_vs_torch": diff,
            "ms": ms, "torch_ms": ref_ms, "shape": (B, T, C)}


def main(check: bool = False) -> int:
    for key, value in collect().items():
        print(f"{key:>20}: {value}")
    if check:
        try:
            r = check_wkv()
        except (RuntimeError, ValueError) as exc:  # a forced backend that cannot run, or a bad setting
            print(f"{'WKV check':>20}: error: {exc}")
            return 1
        ok = r["max_rel_diff_vs_torch"] < 1e-4
        print(f"{'WKV check':>20}: {'ok' if ok else 'MISMATCH'} - {r['backend']} forward+backward on {r['shape']} "
              f"in {r['ms']:.1f} ms (PyTorch path {r['torch_ms']:.1f} ms), max relative diff {r['max_rel_diff_vs_torch']:.1e}")
        return 0 if ok else 1
    return 0


if __name__ == "__main__":
    import sys

    raise SystemExit(main(check="--check" in sys.argv))
