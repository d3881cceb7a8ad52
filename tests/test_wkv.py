"""The WKV operator against the dense float64 oracle, for the compiled and the pure-PyTorch backends."""

import os
import subprocess
import sys

import pytest
import torch

from rwkv_vision.ops import _extension, bi_wkv, causal_wkv, wkv_backend
from wkv_oracle import dense_wkv

OPS = {"bi": (bi_wkv, True), "causal": (causal_wkv, False)}


def _compiled_available() -> bool:
    return _extension.load_extension().loaded


@pytest.fixture(params=["cpp", "torch"])
def backend(request, monkeypatch):
    if request.param == "cpp" and not _compiled_available():
        if os.environ.get("RWKV_VISION_REQUIRE_EXT") == "1":
            pytest.fail(f"compiled WKV extension required but {_extension.STATUS.reason}")
        pytest.skip(_extension.STATUS.reason)
    monkeypatch.setenv("RWKV_VISION_WKV_BACKEND", request.param)
    assert wkv_backend("cpu") == request.param
    return request.param


def _inputs(B, T, C, dtype=torch.float32, k_scale=1.0, w_scale=1.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    k = (torch.randn(B, T, C, generator=g) * k_scale).to(dtype).requires_grad_()
    v = torch.randn(B, T, C, generator=g).to(dtype).requires_grad_()
    w = (torch.randn(C, generator=g) * w_scale).requires_grad_()
    u = torch.randn(C, generator=g).requires_grad_()
    return k, v, w, u


def _grads(fn, k, v, w, u, gy):
    y = fn(k, v, w, u)
    return (y, *torch.autograd.grad((y.float() * gy).sum(), (k, v, w, u)))


def _close(a, b, rtol, atol=0.0):
    """Max abs error relative to the reference's largest magnitude (sums over T make elementwise rtol fragile)."""
    scale = b.abs().max().item() or 1.0
    err = (a.double() - b.double()).abs().max().item()
    assert err <= rtol * scale + atol, f"max abs error {err:.3g} > {rtol:g} * {scale:.3g} + {atol:g}"


@pytest.mark.parametrize("kind", ["bi", "causal"])
@pytest.mark.parametrize("T", [1, 2, 7, 196, 1024])
def test_matches_oracle(backend, kind, T):
    fn, bidirectional = OPS[kind]
    B, C = 3, 37  # odd C, B*C = 111 not a multiple of 32
    # Decay w/T as Vision-RWKV passes it for long sequences; w ~ N(0, 1) for short ones.
    k, v, w, u = _inputs(B, T, C, w_scale=1.0 if T <= 7 else 8.0 / T)
    gy = torch.randn(B, T, C, generator=torch.Generator().manual_seed(1))
    ours = _grads(fn, k, v, w, u, gy)
    ref = _grads(lambda *a: dense_wkv(*a, bidirectional), k, v, w, u, gy)
    for name, a, b in zip(("y", "dk", "dv", "dw", "du"), ours, ref):
        if name == "dw" and T == 1:
            assert a.abs().max() == 0  # the decay never enters with a single token
            continue
        # fp32 running sums over T tokens: the error grows with T (about 1e-4 of the largest gradient at T = 1024)
        _close(a, b, rtol=1e-5 if name == "y" else 2e-4 if name != "dw" else 1e-3)


def _regime(name, B=2, T=300, C=19):
    """Bidirectional inputs for each regime of the CPU kernel's choice between its chunked and stable formulations
    (csrc/wkv/wkv_cpu.cpp, chunk_length): C = 19 leaves a partial 16-channel group."""
    g = torch.Generator().manual_seed(3)
    k = torch.randn(B, T, C, generator=g)
    v = torch.randn(B, T, C, generator=g)
    w = torch.randn(C, generator=g) * 0.01
    u = torch.randn(C, generator=g)
    if name == "short_chunks":  # |w| up to 2: chunks of 15 tokens
        w[:3] = torch.tensor([1.5, 2.0, 0.8])
    elif name == "wide_k":  # k over +-60 inside a chunk
        k = k * 20
    elif name == "large_u":  # |u| > 30: stable kernels
        u[0] = 35.0
    elif name == "growth":  # w < 0 with T |w| > 30: the backward, and so the training forward, stay stable
        w = torch.randn(C, generator=g) * 0.2
    return [t.requires_grad_() for t in (k, v, w, u)]


@pytest.mark.parametrize("regime", ["chunked", "short_chunks", "wide_k", "large_u", "growth"])
def test_chunked_and_stable_regimes_match_oracle(backend, regime):
    if backend == "torch":
        pytest.skip("the regimes are those of the compiled CPU kernel")
    k, v, w, u = _regime(regime)
    gy = torch.randn(k.shape, generator=torch.Generator().manual_seed(4))
    ours = _grads(bi_wkv, k, v, w, u, gy)
    ref = _grads(lambda *a: dense_wkv(*a, True), k, v, w, u, gy)
    # The stable kernels' gradients lose accuracy when weights grow by e^{T |w|} (here e^{210}): 3.2e-4 on dk.
    grad_rtol = 5e-4 if regime == "growth" else 2e-4
    for name, a, b in zip(("y", "dk", "dv", "dw", "du"), ours, ref):
        _close(a, b, rtol=1e-5 if name == "y" else grad_rtol)
    with torch.no_grad():  # inference takes the chunked kernel under looser conditions than training
        _close(bi_wkv(k, v, w, u), ref[0], rtol=1e-5)


@pytest.mark.parametrize(
    "regime,T,grad_rtol",
    [("plain", 4000, 2e-4), ("wide_k", 4000, 2e-4), ("growth", 4000, 2e-4), ("short_chunks", 4000, 2e-4),
     ("plain", 16384, 3e-4)],
)
def test_long_sequence_matches_float64(backend, regime, T, grad_rtol):
    """B = 4, C = 192: the compiled backward spans many cache-sized super-chunks (192 tokens each for the
    192-channel blocks it uses with up to 4 threads) and adds up their dw shares at the end (backward_chunked). In
    float64 the kernel must match the reference to rounding, so a wrong formula shows at once; in float32, to the
    rounding of T-token sums (which grows with T). The reference is the pure-PyTorch path in float64 (linear memory;
    the dense oracle would need T^2). Regimes: k over +-40 (wide_k), weights that grow with distance up to e^{25}
    (growth: w < 0), and |w| up to 2, which cuts chunks to 15 tokens (short_chunks)."""
    if backend == "torch":
        pytest.skip("the reference is the PyTorch path")
    from rwkv_vision.ops.wkv import _OPS, _namespace_for

    g = torch.Generator().manual_seed(5)
    B, C = 4, 192
    k, v, gy = (torch.randn(B, T, C, generator=g) for _ in range(3))
    w, u = torch.randn(C, generator=g) * 5 / T, torch.randn(C, generator=g) / T
    if regime == "wide_k":
        k = k * 10
    elif regime == "growth":
        w = -w.abs() * 1.5
    elif regime == "short_chunks":
        w[:3] = torch.tensor([1.5, 2.0, 0.8])
    ref_fwd, ref_bwd = _OPS["rwkv_vision_torch"]
    d = [t.double() for t in (k, v, w, u)]
    y_ref, lse_ref = ref_fwd(*d, True, True)
    ref = (y_ref, *ref_bwd(gy.double(), *d, y_ref, lse_ref, True))
    fwd, bwd = _OPS[_namespace_for("cpu")]
    for inputs, gy_in, y_rtol, rtol in ((d, gy.double(), 1e-9, 1e-9), ((k, v, w, u), gy, 1e-4, grad_rtol)):
        y, lse = fwd(*inputs, True, True)
        ours = (y, *bwd(gy_in, *inputs, y, lse, True))
        for name, a, b in zip(("y", "dk", "dv", "dw", "du"), ours, ref):
            _close(a, b, rtol=y_rtol if name == "y" else rtol)


@pytest.mark.parametrize("kind", ["bi", "causal"])
def test_gradcheck_float64(backend, kind):
    fn, _ = OPS[kind]
    k, v, w, u = (t.detach().double().requires_grad_() for t in _inputs(2, 9, 5))
    assert torch.autograd.gradcheck(fn, (k, v, w, u))


@pytest.mark.parametrize("kind", ["bi", "causal"])
def test_extreme_values_stay_finite(backend, kind):
    fn, bidirectional = OPS[kind]
    T = 16384
    g = torch.Generator().manual_seed(2)
    C = 6
    k = ((torch.rand(1, T, C, generator=g) * 2 - 1) * 60).requires_grad_()
    v = torch.randn(1, T, C, generator=g).requires_grad_()
    w = torch.tensor([-50.0, 50.0, -50.0, 50.0, 0.0, -1e-3], requires_grad=True)
    u = torch.tensor([50.0, -50.0, -50.0, 50.0, 0.0, 20.0], requires_grad=True)
    y = fn(k, v, w, u)
    y.sum().backward()
    for t in (y, k.grad, v.grad, w.grad, u.grad):
        assert torch.isfinite(t).all()
    # Each output is a convex combination of the values.
    assert (y <= v.max(1, keepdim=True).values + 1e-4).all() and (y >= v.min(1, keepdim=True).values - 1e-4).all()


@pytest.mark.parametrize("kind", ["bi", "causal"])
def test_extreme_values_match_oracle(backend, kind):
    fn, bidirectional = OPS[kind]
    g = torch.Generator().manual_seed(3)
    T, C = 40, 4
    k = (torch.rand(2, T, C, generator=g) * 2 - 1) * 60
    v = torch.randn(2, T, C, generator=g)
    w = torch.tensor([-50.0, 50.0, -3.0, 0.5])
    u = torch.tensor([50.0, -50.0, 7.0, 0.0])
    _close(fn(k, v, w, u), dense_wkv(k, v, w, u, bidirectional), rtol=1e-5)


@pytest.mark.parametrize("kind", ["bi", "causal"])
@pytest.mark.parametrize("dtype, rtol", [(torch.float16, 2e-3), (torch.bfloat16, 1.6e-2)])
def test_half_precision_within_tolerance_of_fp32(backend, kind, dtype, rtol):
    """Half inputs accumulate in fp32: the only error left is the rounding of inputs and outputs."""
    fn, _ = OPS[kind]
    k, v, w, u = _inputs(2, 196, 24, w_scale=8.0 / 196)
    if kind == "causal":
        w = w.detach().exp().requires_grad_()  # an RWKV-4 decay, positive
    gy = torch.randn(2, 196, 24, generator=torch.Generator().manual_seed(1))
    k16, v16 = (t.detach().to(dtype).requires_grad_() for t in (k, v))
    k32, v32 = (t.detach().to(dtype).float().requires_grad_() for t in (k, v))  # the same rounded inputs
    half = _grads(fn, k16, v16, w, u, gy.to(dtype).float())
    full = _grads(fn, k32, v32, w, u, gy.to(dtype).float())
    assert half[0].dtype == dtype and half[1].dtype == dtype
    for a, b in zip(half, full):
        _close(a, b, rtol)


def test_non_contiguous_inputs(backend):
    k, v, w, u = _inputs(2, 30, 11)
    kt = k.detach().transpose(0, 1).contiguous().transpose(0, 1)  # same values, other strides
    wide = torch.zeros(2, 30, 22)
    wide[..., ::2] = v.detach()
    vt = wide[..., ::2]
    assert not kt.is_contiguous() and not vt.is_contiguous()
    _close(bi_wkv(kt, vt, w, u), bi_wkv(k.detach().contiguous(), v.detach().contiguous(), w, u), rtol=0)


def test_compiled_and_torch_paths_agree(monkeypatch):
    if not _compiled_available():
        pytest.skip(_extension.STATUS.reason)
    k, v, w, u = _inputs(2, 300, 40, w_scale=0.05)
    gy = torch.randn(2, 300, 40, generator=torch.Generator().manual_seed(1))  # fixed: the tolerance is for these inputs
    monkeypatch.setenv("RWKV_VISION_WKV_BACKEND", "cpp")
    cpp = _grads(bi_wkv, k, v, w, u, gy)
    monkeypatch.setenv("RWKV_VISION_WKV_BACKEND", "torch")
    ref = _grads(bi_wkv, k, v, w, u, gy)
    oracle = _grads(lambda *a: dense_wkv(*a, True), k, v, w, u, gy)
    for a, b, c in zip(cpp, ref, oracle):
        _close(a, b, 5e-5)  # same math; vectorised exp and summation order differ in the last bits
        _close(a, c, 2e-4)


def test_opcheck(backend):
    from rwkv_vision.ops.wkv import _OPS, _namespace_for

    forward, backward = _OPS[_namespace_for("cpu")]
    k, v, w, u = (t.detach() for t in _inputs(2, 5, 3))
    torch.library.opcheck(forward, (k, v, w, u, True, False))  # inference: no lse, no autograd
    k, v = k.requires_grad_(), v.requires_grad_()
    torch.library.opcheck(forward, (k, v, w, u, True, True))
    torch.library.opcheck(forward, (k, v, w, u, False, True))
    y, lse = (t.detach() for t in forward(k, v, w, u, True, True))
    # Its own autograd formula only raises (no double backward): see test_double_backward_is_a_clear_error.
    torch.library.opcheck(backward, (torch.randn_like(y), k.detach(), v.detach(), w, u, y, lse, True))


def test_torch_compile_fullgraph(backend):
    torch._dynamo.reset()
    k, v, w, u = _inputs(2, 16, 8)

    def f(k, v, w, u):
        return (bi_wkv(k, v, w / 16, u / 16).sin() + causal_wkv(k, v, w.exp(), u)).sum()

    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    grads = torch.autograd.grad(compiled(k, v, w, u), (k, v, w, u))
    ref = torch.autograd.grad(f(k, v, w, u), (k, v, w, u))
    for a, b in zip(grads, ref):
        torch.testing.assert_close(a, b)


def test_export(backend):
    class M(torch.nn.Module):
        def forward(self, k, v, w, u):
            return bi_wkv(k, v, w, u)

    k, v, w, u = (t.detach() for t in _inputs(1, 6, 4))
    ep = torch.export.export(M(), (k, v, w, u))
    torch.testing.assert_close(ep.module()(k, v, w, u), bi_wkv(k, v, w, u))


def test_clear_errors():
    k = torch.randn(2, 5, 4)
    with pytest.raises(ValueError, match=r"\[B, T, C\].*\(2, 5\)"):
        bi_wkv(k[:, :, 0], k[:, :, 0], torch.zeros(4), torch.zeros(4))
    with pytest.raises(ValueError, match=r"w and u must have shape \[C\] = \[4\]"):
        bi_wkv(k, k, torch.zeros(3), torch.zeros(4))
    with pytest.raises(TypeError, match="dtype"):
        bi_wkv(k, k.half(), torch.zeros(4), torch.zeros(4))


def test_forcing_an_unusable_backend_is_an_error(monkeypatch):
    monkeypatch.setenv("RWKV_VISION_WKV_BACKEND", "cuda")
    with pytest.raises(RuntimeError, match="cannot run on cpu"):
        bi_wkv(torch.randn(1, 2, 3), torch.randn(1, 2, 3), torch.zeros(3), torch.zeros(3))
    monkeypatch.setenv("RWKV_VISION_WKV_BACKEND", "fast")
    with pytest.raises(ValueError, match="not one of"):
        wkv_backend()


def test_a_prebuilt_library_that_fails_to_load_gets_a_jit_build(tmp_path):
    """E.g. a prebuilt _C.so compiled against another torch: the just-in-time build takes over (here stood in for
    by the library this process loads, so that nothing is compiled), and the reason says what happened."""
    if not _compiled_available():
        pytest.skip(_extension.STATUS.reason)
    broken = tmp_path / "_C.cpython-311-x86_64-linux-gnu.so"
    broken.write_bytes(b"not a shared library")
    code = ("import sys; from rwkv_vision.ops import _extension as e; "
            "e._prebuilt = lambda: sys.argv[1]; e.jit_build = lambda with_cuda: sys.argv[2]; "
            "s = e.load_extension(); print(s.loaded, s.source); print(s.reason)")
    out = subprocess.run([sys.executable, "-c", code, str(broken), _extension.STATUS.path], capture_output=True,
                         text=True, check=True).stdout.splitlines()
    assert out[0] == "True jit"
    assert "the prebuilt library failed to load" in out[1] and str(broken) in out[1]


def test_the_fallback_warning_points_at_the_users_line(tmp_path):
    script = tmp_path / "user.py"
    script.write_text(
        "import warnings, torch\n"
        "from rwkv_vision.ops import _extension as e, bi_wkv\n"
        "e._prebuilt = lambda: None\n"
        "def no_build(with_cuda):\n"
        "    raise RuntimeError('no compiler here')\n"
        "e.jit_build = no_build\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        "    bi_wkv(torch.ones(1, 2, 3), torch.ones(1, 2, 3), torch.zeros(3), torch.zeros(3))  # line 9\n"
        "(w,) = [w for w in caught if 'pure-PyTorch' in str(w.message)]\n"
        "print(w.filename, w.lineno, w.message)\n")
    env = {**os.environ, "RWKV_VISION_WKV_BACKEND": "auto"}
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, check=True, env=env).stdout
    assert out.startswith(f"{script} 9 ") and "no compiler here" in out


def test_backward_without_lse_is_explained():
    from rwkv_vision.ops.wkv import _OPS

    forward, _ = _OPS["rwkv_vision_torch"]
    k, v, w, u = _inputs(1, 3, 2)
    y, _ = forward(k, v, w, u, True, False)
    with pytest.raises(RuntimeError, match="need_lse"):
        y.sum().backward()


@pytest.mark.parametrize("kind", ["bi", "causal"])
@pytest.mark.parametrize("shape", [(0, 5, 3), (2, 0, 3), (2, 5, 0)])
def test_empty_inputs_have_empty_outputs_and_zero_gradients(backend, kind, shape):
    fn, _ = OPS[kind]
    k, v = torch.randn(shape, requires_grad=True), torch.randn(shape, requires_grad=True)
    w, u = torch.randn(shape[2], requires_grad=True), torch.randn(shape[2], requires_grad=True)
    y = fn(k, v, w, u)
    assert y.shape == shape
    y.sum().backward()
    assert k.grad.shape == v.grad.shape == shape
    assert torch.equal(w.grad, torch.zeros_like(w)) and torch.equal(u.grad, torch.zeros_like(u))


def test_double_backward_is_a_clear_error(backend):
    k, v, w, u = (t.detach().double().requires_grad_() for t in _inputs(1, 6, 3))
    (dk,) = torch.autograd.grad(bi_wkv(k, v, w, u).sin().sum(), k, create_graph=True)
    with pytest.raises(RuntimeError, match="double backward"):
        dk.sum().backward()


def test_backward_allocates_no_gradient_for_lse(backend):
    """lse gets no gradient: autograd must not build a k-sized zero tensor for it on every backward."""
    from torch.profiler import ProfilerActivity, profile

    k, v, w, u = _inputs(2, 512, 64)
    y = bi_wkv(k, v, w, u)
    gy = torch.randn_like(y)
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        grads = torch.autograd.grad(y, (k, v, w, u), gy)
    zero_fills = [e.cpu_memory_usage for e in prof.events()
                  if e.name in ("aten::zeros", "aten::zeros_like") and e.cpu_memory_usage >= k.nbytes]
    assert zero_fills == [], f"backward allocated k-sized zero tensors: {zero_fills} bytes"
    assert all(g is not None and g.shape == t.shape for g, t in zip(grads, (k, v, w, u)))


# ---- CUDA ---------------------------------------------------------------------------------------------------------

def _cuda_toolkit():
    return torch.version.cuda is not None and _extension.cuda_home() is not None


@pytest.mark.skipif(_extension.cuda_home() is None, reason="needs nvcc")
def test_cuda_kernel_code_runs_on_host(tmp_path):
    """The CUDA kernels' per-thread code (chunk sums, carries across chunks, rescans), compiled by nvcc and run on the
    host thread by thread, against dense float64 sums: checks the GPU algorithm on a machine without a GPU."""
    nvcc = os.path.join(_extension.cuda_home(), "bin", "nvcc")
    exe = tmp_path / "wkv_cuda_host_check"
    src = os.path.join(os.path.dirname(__file__), "wkv_cuda_host_check.cu")
    build = subprocess.run([nvcc, "-std=c++17", "-O2", "-o", str(exe), src], capture_output=True, text=True,
                           timeout=600)
    assert build.returncode == 0, build.stderr[-3000:]
    run = subprocess.run([str(exe)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout
    assert run.stdout.count("ok ") == 10, run.stdout


@pytest.mark.skipif(not _cuda_toolkit(), reason="needs nvcc and a CUDA build of torch")
def test_cuda_extension_builds_and_imports(tmp_path):
    """Builds the CPU+CUDA extension just-in-time and loads it, in a fresh process (one library per process)."""
    env = dict(os.environ)
    env.setdefault("TORCH_CUDA_ARCH_LIST", "8.0")
    code = (
        "import torch; from rwkv_vision.ops import _extension as e; p = e.jit_build(with_cuda=True); "
        "torch.ops.load_library(p); print(torch.ops.rwkv_vision.build_info())"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=1200)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().splitlines()[-1] == "cpu+cuda"


@pytest.fixture
def cuda_kernel():
    if not torch.cuda.is_available():
        pytest.skip("needs a GPU")
    if wkv_backend("cuda") != "cuda":
        pytest.skip(f"CUDA kernel unavailable: {_extension.STATUS.reason}")
    if wkv_backend("cpu") != "cpp":
        pytest.skip("the CUDA kernel is compared with the compiled CPU kernel")


def _cuda_vs_cpu(fn, k, v, w, u, gy):
    cpu = _grads(fn, k, v, w, u, gy)
    kc, vc, wc, uc = (t.detach().cuda().requires_grad_() for t in (k, v, w, u))
    gpu = _grads(fn, kc, vc, wc, uc, gy.cuda())
    assert all(t.is_cuda for t in gpu) and gpu[0].dtype == k.dtype
    return [t.cpu() for t in gpu], cpu


@pytest.mark.parametrize("kind", ["bi", "causal"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_cuda_matches_cpu_kernel(cuda_kernel, kind, dtype):
    fn, _ = OPS[kind]
    for T in (1, 7, 196, 1025):
        k, v, w, u = _inputs(3, T, 37, dtype=dtype, w_scale=1.0 if T < 10 else 8.0 / T)
        gpu, cpu = _cuda_vs_cpu(fn, k, v, w, u, torch.randn(3, T, 37))
        for name, a, b in zip(("y", "dk", "dv", "dw", "du"), gpu, cpu):
            # fp32: the tolerances of test_matches_oracle (the two kernels sum in different orders). atol: at T = 1,
            # dk = v g - g y is exactly 0 and both kernels return rounding noise around it.
            rtol = 1e-2 if dtype != torch.float32 else 1e-5 if name == "y" else 1e-3 if name == "dw" else 2e-4
            _close(a, b, rtol, atol=1e-6)


@pytest.mark.parametrize("kind", ["bi", "causal"])
def test_cuda_long_sequence_as_accurate_as_cpu_kernel(cuda_kernel, kind):
    """T = 16384 with B = 4, C = 192 (hundreds of chunks carried across): the fp32 CUDA kernel's error against the
    CPU kernel in float64 is at most about the fp32 CPU kernel's own. The causal sums grow by up to e^20 here."""
    fn, _ = OPS[kind]
    k, v, w, u = _inputs(4, 16384, 192, w_scale=8.0 / 16384)
    gy = torch.randn(4, 16384, 192)
    gpu, cpu = _cuda_vs_cpu(fn, k, v, w, u, gy)
    ref = _grads(fn, *(t.detach().double().requires_grad_() for t in (k, v, w, u)), gy.double())
    for name, a, b, r in zip(("y", "dk", "dv", "dw", "du"), gpu, cpu, ref):
        scale = r.abs().max().item()
        gpu_err, cpu_err = ((x.double() - r).abs().max().item() / scale for x in (a, b))
        assert gpu_err <= 2 * cpu_err + 1e-5, f"{name}: CUDA error {gpu_err:.3g}, CPU error {cpu_err:.3g}"


@pytest.mark.parametrize("kind", ["bi", "causal"])
def test_cuda_extreme_values_stay_finite(cuda_kernel, kind):
    fn, _ = OPS[kind]
    g = torch.Generator().manual_seed(2)
    T, C = 16384, 6
    k = ((torch.rand(1, T, C, generator=g) * 2 - 1) * 60).cuda().requires_grad_()
    v = torch.randn(1, T, C, generator=g).cuda().requires_grad_()
    w = torch.tensor([-50.0, 50.0, -50.0, 50.0, 0.0, -1e-3], device="cuda", requires_grad=True)
    u = torch.tensor([50.0, -50.0, -50.0, 50.0, 0.0, 20.0], device="cuda", requires_grad=True)
    y = fn(k, v, w, u)
    y.sum().backward()
    for t in (y, k.grad, v.grad, w.grad, u.grad):
        assert torch.isfinite(t).all()
    assert (y <= v.max(1, keepdim=True).values + 1e-4).all() and (y >= v.min(1, keepdim=True).values - 1e-4).all()
    # The same inputs through the compiled CPU kernel (relative to each result's largest magnitude).
    cpu = _grads(fn, *(t.detach().cpu().requires_grad_() for t in (k, v, w, u)), torch.ones(1, T, C))
    for a, b in zip((y, k.grad, v.grad, w.grad, u.grad), cpu):
        _close(a.detach().cpu(), b, 1e-3, atol=1e-6)
    # Short sequences of such values against the dense oracle.
    k, v = k[:, :40].detach(), v[:, :40].detach()
    _close(fn(k, v, w.detach(), u.detach()).cpu(), dense_wkv(k.cpu(), v.cpu(), w.cpu(), u.cpu(), kind == "bi"), 1e-5)


def test_cuda_gradcheck_opcheck_and_compile(cuda_kernel):
    from rwkv_vision.ops.wkv import _OPS, _namespace_for

    k, v, w, u = (t.detach().double().cuda().requires_grad_() for t in _inputs(2, 9, 5))
    for fn, _ in OPS.values():
        assert torch.autograd.gradcheck(fn, (k, v, w, u))
    forward, backward = _OPS[_namespace_for("cuda")]
    k, v, w, u = (t.detach().cuda() for t in _inputs(2, 5, 3))
    torch.library.opcheck(forward, (k, v, w, u, True, False))
    torch.library.opcheck(forward, (k.requires_grad_(), v.requires_grad_(), w, u, True, True))
    y, lse = (t.detach() for t in forward(k, v, w, u, True, True))
    torch.library.opcheck(backward, (torch.randn_like(y), k.detach(), v.detach(), w, u, y, lse, True))
    torch._dynamo.reset()

    def f(k, v, w, u):
        return (bi_wkv(k, v, w / 16, u / 16).sin() + causal_wkv(k, v, w.exp(), u)).sum()

    k, v, w, u = (t.detach().cuda().requires_grad_() for t in _inputs(2, 16, 8))
    grads = torch.autograd.grad(torch.compile(f, fullgraph=True)(k, v, w, u), (k, v, w, u))
    for a, b in zip(grads, torch.autograd.grad(f(k, v, w, u), (k, v, w, u))):
        torch.testing.assert_close(a, b)
    # ... and match the compiled CPU kernel (the two kernels sum in different orders).
    cpu_inputs = [t.detach().cpu().requires_grad_() for t in (k, v, w, u)]
    for a, b in zip(grads, torch.autograd.grad(f(*cpu_inputs), cpu_inputs)):
        _close(a.cpu(), b, 2e-4, atol=1e-6)
