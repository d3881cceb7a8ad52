"""WKV operator benchmark: time per backend, bandwidth against a memory copy, and WKV's share of an RWKV block.

    python benchmarks/bench_wkv.py [--device cpu|cuda] [--repeats N] [--out benchmarks/results/wkv.json]

For T in {196, 1024, 4096, 16384}, C in {192, 384}, B = 4, fp32: median time of repeats after a warm-up (each
repeat a round over all shapes), for the compiled backend ("cpp" on CPU, "cuda" on GPU) and the pure-PyTorch path.
Bandwidth counts the bytes the forward must move at least (read k and v, write y: 3 * B*T*C*4 bytes) and compares
them with torch's tensor copy (read + write) of a buffer of the same size on the same machine.

The growth ratio time(T=16384) / time(T=4096) (C = 192) is measured separately, in fresh processes, with the two
lengths interleaved (ratio of their median times; the median over processes): under glibc's defaults, and on CPU
also under allocator settings that treat both lengths' outputs alike (see MEMORY_ENVS). The forward's cost per
element at the shortest and the longest T, on one thread and on all, shows where its time goes (on a GPU: each
kernel's time per call, from torch.profiler). Last, torch.profiler splits the forward time of one RWKVViT-T block
(C = 192) at each image resolution into the WKV op and the rest (median of single-call profiles).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import torch
from common import machine_info, write_result

from rwkv_vision.ops import wkv as W


def timer(device: str):
    if device == "cuda":
        def run(fn, repeats):
            times = []
            for _ in range(repeats):
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                fn()
                end.record()
                torch.cuda.synchronize()
                times.append(start.elapsed_time(end) / 1e3)
            return statistics.median(times)
    else:
        def run(fn, repeats):
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                fn()
                times.append(time.perf_counter() - start)
            return statistics.median(times)
    return run


def copy_bandwidth(nbytes: int, device: str, repeats: int) -> float:
    """Bytes per second of ``dst.copy_(src)`` (read + write counted) for a buffer of ``nbytes``."""
    src = torch.randn(nbytes // 4, device=device)
    dst = torch.empty_like(src)
    run = timer(device)
    dst.copy_(src)
    seconds = run(lambda: dst.copy_(src), repeats)
    return 2 * nbytes / seconds


def clone_bandwidth(nbytes: int, device: str, repeats: int) -> float:
    """Bytes per second of ``src.clone()``: a copy into freshly allocated memory, page faults included."""
    src = torch.randn(nbytes // 4, device=device)
    src.clone()
    return 2 * nbytes / timer(device)(lambda: src.clone(), repeats)


def make_calls(namespace: str, B: int, T: int, C: int, device: str):
    """(forward, forward+backward) of one shape as zero-argument functions, fp32 random inputs."""
    forward, _ = W._OPS[namespace]
    gen = torch.Generator().manual_seed(0)
    k = torch.randn(B, T, C, generator=gen).to(device)
    v = torch.randn(B, T, C, generator=gen).to(device)
    w = (torch.randn(C, generator=gen) * 5 / T).to(device)
    u = (torch.randn(C, generator=gen) / T).to(device)
    kg, vg, wg, ug = (t.clone().requires_grad_() for t in (k, v, w, u))
    gy = torch.randn_like(k)

    def fwd():
        with torch.no_grad():
            forward(k, v, w, u, True, False)

    def fwd_bwd():
        y, _ = forward(kg, vg, wg, ug, True, True)
        torch.autograd.grad(y, (kg, vg, wg, ug), gy)

    fwd(), fwd_bwd()  # warm-up
    return fwd, fwd_bwd


def bench_points(namespace: str, B: int, shapes: list[tuple[int, int]], device: str, repeats: int) -> list[dict]:
    """Forward and forward+backward time of every (T, C) in shapes, medians over `repeats` rounds; each round times
    every shape once, so that a slow spell of a shared machine spreads over all shapes instead of one."""
    calls = [make_calls(namespace, B, T, C, device) for T, C in shapes]
    run = timer(device)
    times = [([], []) for _ in shapes]
    for _ in range(repeats):
        for (fwd, fwd_bwd), (t_fwd, t_fb) in zip(calls, times):
            t_fwd.append(run(fwd, 1))
            t_fb.append(run(fwd_bwd, 1))
    rows = []
    for (T, C), (t_fwd, t_fb) in zip(shapes, times):
        f, fb = statistics.median(t_fwd), statistics.median(t_fb)
        rows.append({"B": B, "T": T, "C": C, "forward_ms": f * 1e3, "forward_backward_ms": fb * 1e3,
                     "forward_GBps": 3 * B * T * C * 4 / f / 1e9})
    return rows


def growth_ratios(namespace: str, B: int, C: int, device: str, repeats: int, short: int = 4096,
                  long: int = 16384) -> dict:
    """time(T=long) / time(T=short), forward ("fwd") and forward+backward ("fwd_bwd"): the ratio of the two lengths'
    median times over `repeats` interleaved rounds (each round times all four calls back to back, so that a slow
    spell of a shared machine hits both lengths alike)."""
    calls = {T: make_calls(namespace, B, T, C, device) for T in (short, long)}
    run = timer(device)
    times = {(T, kind): [] for T in (short, long) for kind in ("fwd", "fwd_bwd")}
    for _ in range(repeats):
        for T, fns in calls.items():
            for kind, fn in zip(("fwd", "fwd_bwd"), fns):
                times[T, kind].append(run(fn, 1))
    return {kind: statistics.median(times[long, kind]) / statistics.median(times[short, kind])
            for kind in ("fwd", "fwd_bwd")}


# Rounds per growth measurement, and fresh processes per allocator setting. On the shared 2-core VM a slow spell
# lasts seconds and hits the long length harder (its fresh output pages): back-to-back measurements of 31 rounds
# ranged from 3.6 to 4.4, and of 101 rounds from 3.84 to 4.24. A median over processes is steadier.
GROWTH_ROUNDS = 31
GROWTH_PROCESSES = 5


# glibc maps every block above its mmap threshold (at most 32 MB by default) afresh and unmaps it when freed, so an
# op whose outputs are larger pays for faulting in and zeroing new pages on every call, and one whose outputs are
# smaller reuses heap memory for free. At B = 4, C = 192 the outputs are 12.6 MB at T = 4096 and 50 MB at T = 16384,
# so under the defaults only the longer length pays. Two settings treat both lengths alike: every output from the
# heap (as jemalloc or tcmalloc would serve them), or every output freshly mapped (a fixed 1 MB threshold).
MEMORY_ENVS = {
    "glibc_defaults": {},
    "reused_memory": {"MALLOC_MMAP_THRESHOLD_": str(1 << 32), "MALLOC_TRIM_THRESHOLD_": str(1 << 32)},
    "fresh_memory": {"MALLOC_MMAP_THRESHOLD_": str(1 << 20)},
}


def growth_ratios_in(env: dict, B: int, C: int, device: str, repeats: int, short: int, long: int) -> dict:
    """growth_ratios() in a fresh process (its heap untouched by the rest of the benchmark) with `env` added; also
    the process's id ("pid") and the MALLOC_* variables it ran with ("malloc_env")."""
    code = ("import json, os, sys; sys.path.insert(0, sys.argv[1]); import bench_wkv as b; "
            "from rwkv_vision.ops import wkv as W; "
            "B, C, repeats, short, long = (int(x) for x in sys.argv[2:7]); device = sys.argv[7]; "
            "r = b.growth_ratios(W._namespace_for(device), B, C, device, repeats, short, long); "
            "r['malloc_env'] = {k: v for k, v in os.environ.items() if k.startswith('MALLOC_')}; "
            "r['pid'] = os.getpid(); print(json.dumps(r))")
    here = os.path.dirname(os.path.abspath(__file__))
    # The caller's own allocator settings (a preloaded jemalloc, MALLOC_* variables) would blur the comparison.
    base = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD" and not k.startswith("MALLOC_")}
    out = subprocess.run([sys.executable, "-c", code, here, *(str(x) for x in (B, C, repeats, short, long)), device],
                         env={**base, **env}, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"growth measurement with {env or 'no allocator setting'} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def growth_summary(B: int, C: int, device: str, repeats: int, processes: int, short: int = 4096,
                   long: int = 16384) -> dict:
    """Growth ratios time(T=long) / time(T=short), each the median over `processes` fresh processes, per allocator
    setting (CPU: MEMORY_ENVS; GPU: the caching allocator only). The settings take turns, so that a slow spell spreads
    over all of them. Keys: time_ratio_T<long>_over_T<short>_{fwd_bwd,fwd}[_<setting>] (no suffix: glibc's defaults),
    and each process's forward+backward ratio under ..._fwd_bwd[_<setting>]_per_process."""
    settings = MEMORY_ENVS if device == "cpu" else {"glibc_defaults": {}}
    ratios = {name: [] for name in settings}
    for _ in range(processes):
        for name, env in settings.items():
            ratios[name].append(growth_ratios_in(env, B, C, device, repeats, short, long))
    summary = {}
    for name, runs in ratios.items():
        suffix = "" if name == "glibc_defaults" else f"_{name}"
        for kind in ("fwd_bwd", "fwd"):
            summary[f"time_ratio_T{long}_over_T{short}_{kind}{suffix}"] = statistics.median(r[kind] for r in runs)
        summary[f"time_ratio_T{long}_over_T{short}_fwd_bwd{suffix}_per_process"] = [r["fwd_bwd"] for r in runs]
    return summary


def forward_profile(namespace: str, B: int, C: int, device: str, repeats: int, lengths) -> list[dict]:
    """Where the forward's time goes: nanoseconds per element (B*T*C) at the shortest length (whose inputs fit in
    cache) and the longest, on one thread and on all of them (medians of back-to-back repeats). In cache the time is
    the kernel's arithmetic; what a long input adds is memory traffic; the thread ratio shows how far cores scale."""
    threads = torch.get_num_threads()
    calls = {T: make_calls(namespace, B, T, C, device)[0] for T in lengths}
    run = timer(device)
    rows = []
    try:
        for n in sorted({1, threads}):
            torch.set_num_threads(n)
            for T, fn in calls.items():
                fn()  # back to back after a warm-up, so that a short input stays in cache
                rows.append({"threads": n, "T": T, "ns_per_element": run(fn, repeats) / (B * T * C) * 1e9})
    finally:
        torch.set_num_threads(threads)
    for r in rows:
        print(f"forward profile: {r['threads']} thread(s), T={r['T']:>5}: {r['ns_per_element']:.2f} ns per element",
              flush=True)
    return rows


def kernel_profile(namespace: str, B: int, C: int, T: int, repeats: int) -> list[dict]:
    """CUDA: device time of each kernel that the forward and the forward+backward launch, in microseconds per call
    (torch.profiler, mean over ``repeats`` calls): which of the chunk sums, the carry and the rescan costs most."""
    from torch.profiler import ProfilerActivity, profile

    rows = []
    for call, fn in zip(("forward", "forward+backward"), make_calls(namespace, B, T, C, "cuda")):
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(repeats):
                fn()
            torch.cuda.synchronize()
        for e in prof.key_averages():
            if e.self_device_time_total > 0:
                rows.append({"call": call, "T": T, "kernel": e.key, "us_per_call": e.self_device_time_total / repeats})
    for r in rows:
        print(f"kernels, {r['call']} at T={r['T']}: {r['us_per_call']:8.1f} us  {r['kernel'][:90]}", flush=True)
    return rows


def block_share(res_list, C: int, batch: int, device: str, repeats: int) -> list[dict]:
    """Share of one RWKV block's forward time spent in the WKV op (torch.profiler), at each image resolution: the
    median over ``repeats`` calls, each profiled on its own.

    The block is RWKVViT-T's (C = 192, patch 16): T = (res / 16)^2 tokens. Inference, fp32.
    """
    from torch.profiler import ProfilerActivity, profile

    from rwkv_vision.layers import RWKVBlock

    block = RWKVBlock(C, layer_id=1, depth=12).to(device).eval()
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    attr = "self_device_time_total" if device == "cuda" else "self_cpu_time_total"
    rows = []
    for res in res_list:
        hw = (res // 16, res // 16)
        x = torch.randn(batch, hw[0] * hw[1], C, device=device)
        calls = []  # (block us, WKV us) of each call, profiled one at a time so an outlier call cannot skew the rest
        with torch.inference_mode():
            block(x, hw)
            for _ in range(repeats):
                with profile(activities=acts) as prof:
                    block(x, hw)
                    if device == "cuda":
                        torch.cuda.synchronize()
                events = prof.key_averages()
                calls.append((sum(getattr(e, attr) for e in events),
                              sum(getattr(e, attr) for e in events if "wkv_forward" in e.key)))
        total, wkv = statistics.median(c[0] for c in calls), statistics.median(c[1] for c in calls)
        share = statistics.median(c[1] / c[0] for c in calls)
        rows.append({"res": res, "tokens": hw[0] * hw[1], "batch": batch, "block_ms": total / 1e3,
                     "wkv_ms": wkv / 1e3, "wkv_share": share, "repeats": repeats})
        print(f"block at {res:>5} px (T={hw[0] * hw[1]:>5}, B={batch}): {total / 1e3:9.2f} ms, "
              f"WKV {wkv / 1e3:8.2f} ms = {100 * share:5.1f} % (medians of {repeats} calls)", flush=True)
    return rows


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    # 9 rounds: with 5, a slow spell of the shared VM once held most rounds of one shape (590 against 198 ms).
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--torch-repeats", type=int, default=3, help="repeats for the slow PyTorch path")
    parser.add_argument("--T", type=int, nargs="+", default=[196, 1024, 4096, 16384])
    parser.add_argument("--C", type=int, nargs="+", default=[192, 384])
    parser.add_argument("--B", type=int, default=4)
    parser.add_argument("--torch-max-T", type=int, default=16384, help="skip the PyTorch path above this T")
    parser.add_argument("--block-res", type=int, nargs="*", default=[224, 384, 512, 768, 1024, 1536],
                        help="resolutions for the WKV share of an RWKV block (empty: skip)")
    parser.add_argument("--out", default="benchmarks/results/wkv.json")
    args = parser.parse_args(argv)

    compiled = W._namespace_for(args.device)
    backends = {W._extension.resolve(args.device): compiled}
    backends.setdefault("torch", "rwkv_vision_torch")
    rows = []
    print(f"{'backend':>7} {'B':>3} {'T':>6} {'C':>4} {'forward ms':>11} {'fwd+bwd ms':>11} {'forward GB/s':>13}")
    for name, namespace in backends.items():
        shapes = [(T, C) for C in args.C for T in args.T if name != "torch" or T <= args.torch_max_T]
        repeats = args.torch_repeats if name == "torch" else args.repeats
        for row in bench_points(namespace, args.B, shapes, args.device, repeats):
            rows.append({"backend": name, **row})
            print(f"{name:>7} {row['B']:>3} {row['T']:>6} {row['C']:>4} {row['forward_ms']:>11.2f} "
                  f"{row['forward_backward_ms']:>11.2f} {row['forward_GBps']:>13.2f}", flush=True)
    # The forward's bytes at the longest T and C = 192, the shape whose bandwidth fraction the summary reports.
    copy_bytes = 3 * args.B * max(args.T) * 192 * 4
    copy_bw = copy_bandwidth(copy_bytes, args.device, max(args.repeats, 5))
    clone_bw = clone_bandwidth(copy_bytes, args.device, max(args.repeats, 5))
    print(f"copy bandwidth ({copy_bytes / 1e6:.0f} MB buffer): {copy_bw / 1e9:.2f} GB/s into existing memory, "
          f"{clone_bw / 1e9:.2f} GB/s into new memory (clone)")

    def find(backend, T, C):
        return next((r for r in rows if r["backend"] == backend and r["T"] == T and r["C"] == C), None)

    summary = {}
    main_backend = next(iter(backends))
    if main_backend != "torch":
        fast, slow = find(main_backend, 4096, 192), find("torch", 4096, 192)
        if fast and slow:
            summary["speedup_vs_torch_fwd_bwd_T4096_C192"] = slow["forward_backward_ms"] / fast["forward_backward_ms"]
        a, b = find(main_backend, 4096, 192), find(main_backend, 16384, 192)
        if a and b:
            summary.update(growth_summary(args.B, 192, args.device, max(args.repeats, GROWTH_ROUNDS),
                                          GROWTH_PROCESSES))
            summary["forward_bandwidth_fraction_of_copy_T16384_C192"] = b["forward_GBps"] * 1e9 / copy_bw
            summary["forward_bandwidth_fraction_of_clone_T16384_C192"] = b["forward_GBps"] * 1e9 / clone_bw
    profile = (forward_profile(compiled, args.B, 192, args.device, max(args.repeats, 9), (min(args.T), max(args.T)))
               if args.device == "cpu" and len(args.T) > 1 else [])
    kernels = (kernel_profile(compiled, args.B, 192, max(args.T), max(args.repeats, 9))
               if args.device == "cuda" else [])
    blocks = block_share(args.block_res, 192, 1, args.device, args.repeats) if args.block_res else []
    if blocks:
        summary["max_wkv_share_of_block"] = max(r["wkv_share"] for r in blocks)
    for key, value in summary.items():
        print(f"{key}: " + (", ".join(f"{v:.3g}" for v in value) if isinstance(value, list) else f"{value:.3g}"))
    result = {
        "machine": machine_info(args.device),
        "copy_bandwidth_GBps": copy_bw / 1e9, "clone_bandwidth_GBps": clone_bw / 1e9, "rows": rows,
        "forward_profile": profile, "kernel_profile": kernels, "block_share": blocks, "summary": summary,
    }
    write_result(args.out, result)
    return result


if __name__ == "__main__":
    main()
