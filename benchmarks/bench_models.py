"""Model scaling benchmark: RWKVViT-T (Bi-WKV) against the same-size attention RWKVViT and timm's DeiT-Tiny.

    python benchmarks/bench_models.py [--device cpu|cuda] [--res 224 384 512 768 1024 1536] [--batch 1 8]
                                      [--dtype fp32 bf16] [--train-res 224 512] [--ratio-res 224 1024]
                                      [--out benchmarks/results/models.json]

Every point (model, resolution, batch, dtype) runs in a fresh subprocess, so that its peak memory is its own:
inference images/s is the median of timed repeats after a warm-up call; peak memory is the peak resident set size
(CPU, from /proc/self/status after resetting it) or peak allocated memory (CUDA) during that first call, minus what
was in use before it (the weights): activations, workspace and, for training, gradients and optimiser state. Training step time
(forward, backward, AdamW step) is measured the same way at ``--train-res``. Models have random weights.
Points above ``--budget`` seconds per call are stopped after one timed call (reported with repeats=1).

The speed ratios of the targets (RWKV over attention at ``--ratio-res``, every batch and dtype) are measured apart
from the table, with both models in one subprocess and their calls alternated: each round times one call of each
and gives one ratio, and the median ratio is reported. A slow spell of a shared machine then hits both models alike;
two separately timed points can differ by more than the effect being measured.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from common import machine_info, write_result

MODELS = ("rwkv_vit_tiny", "rwkv_vit_tiny_attention", "deit_tiny_patch16_224")


def build(name: str, res: int) -> torch.nn.Module:
    if name == "deit_tiny_patch16_224":
        import timm

        return timm.create_model(name, pretrained=False, img_size=res)
    from rwkv_vision import create_model

    if name == "rwkv_vit_tiny_attention":
        return create_model("rwkv_vit_tiny", mixer="attention", img_size=res)
    return create_model(name, img_size=res)


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def _reset_peak(device: str) -> int:
    """Reset the peak-memory mark and return the bytes in use now."""
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        return torch.cuda.memory_allocated()
    Path("/proc/self/clear_refs").write_text("5")  # Linux: reset VmHWM (peak resident set) to the current VmRSS
    return _status_kib("VmRSS") * 1024


def _peak_bytes(device: str) -> int:
    if device == "cuda":
        return torch.cuda.max_memory_allocated()
    return _status_kib("VmHWM") * 1024


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def run_point(model_name: str, res: int, batch: int, dtype: str, device: str, mode: str, repeats: int,
              budget: float) -> dict:
    """One measurement in this process: images/s (inference) or seconds per step (train), and peak memory."""
    torch.manual_seed(0)
    model = build(model_name, res).to(device)
    x = torch.randn(batch, 3, res, res, device=device)
    autocast = torch.autocast(device, dtype=torch.bfloat16, enabled=dtype == "bf16")
    if mode == "infer":
        model.eval()

        def step():
            with torch.inference_mode(), autocast:
                model(x)
    else:
        model.train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        target = torch.randint(0, 1000, (batch,), device=device)

        def step():
            with autocast:
                loss = torch.nn.functional.cross_entropy(model(x), target)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

    # Peak memory of the first call, over what was resident before it (weights; the process's allocator caches
    # would hide the activations of later calls). Timing is over later calls only.
    base = _reset_peak(device)
    start = time.perf_counter()
    step()
    _sync(device)
    warm = time.perf_counter() - start
    peak = _peak_bytes(device) - base
    times = []
    for _ in range(1 if warm > budget else repeats):
        start = time.perf_counter()
        step()
        _sync(device)
        times.append(time.perf_counter() - start)
    seconds = statistics.median(times)
    return {"model": model_name, "res": res, "batch": batch, "dtype": dtype, "mode": mode, "repeats": len(times),
            "seconds": seconds, "images_per_s": batch / seconds,
            "peak_mem_MiB": peak / 2**20,
            "params_M": sum(p.numel() for p in model.parameters()) / 1e6}


def run_pair(res: int, batch: int, dtype: str, device: str, repeats: int, budget: float) -> dict:
    """rwkv_vit_tiny against rwkv_vit_tiny_attention at one point, inference, calls alternated (see module doc)."""
    torch.manual_seed(0)
    models = {name: build(name, res).to(device).eval() for name in ("rwkv_vit_tiny", "rwkv_vit_tiny_attention")}
    x = torch.randn(batch, 3, res, res, device=device)

    def timed(model) -> float:
        start = time.perf_counter()
        with torch.inference_mode(), torch.autocast(device, dtype=torch.bfloat16, enabled=dtype == "bf16"):
            model(x)
        _sync(device)
        return time.perf_counter() - start

    warm = sum(timed(m) for m in models.values())
    rounds = []
    for i in range(1 if warm > budget else repeats):
        order = list(models.items()) if i % 2 == 0 else list(models.items())[::-1]  # no model always goes first
        rounds.append({name: timed(m) for name, m in order})
    return {"res": res, "batch": batch, "dtype": dtype, "repeats": len(rounds),
            "rwkv_ms": 1e3 * statistics.median(r["rwkv_vit_tiny"] for r in rounds),
            "attention_ms": 1e3 * statistics.median(r["rwkv_vit_tiny_attention"] for r in rounds),
            "speed_ratio": statistics.median(r["rwkv_vit_tiny_attention"] / r["rwkv_vit_tiny"] for r in rounds)}


def spawn_pair(args: argparse.Namespace, res: int, batch: int, dtype: str) -> dict:
    cmd = [sys.executable, __file__, "--pair", str(res), str(batch), dtype, "--device", args.device,
           "--repeats", str(args.repeats), "--budget", str(args.budget)]
    return _run_json(cmd, args.timeout, {"res": res, "batch": batch, "dtype": dtype})


def _run_json(cmd: list[str], timeout: float, point: dict) -> dict:
    """The JSON line a point's subprocess prints last, or ``point`` with an "error" that says why there is none."""
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {**point, "error": f"no result within --timeout {timeout:g} s"}
    lines = out.stdout.strip().splitlines()
    if out.returncode != 0 or not lines:
        tail = out.stderr.strip().splitlines()[-1:] or [f"exit status {out.returncode}, no output"]
        return {**point, "error": tail[0]}
    return json.loads(lines[-1])


def spawn(args: argparse.Namespace, model: str, res: int, batch: int, dtype: str, mode: str) -> dict:
    cmd = [sys.executable, __file__, "--point", model, str(res), str(batch), dtype, mode, "--device", args.device,
           "--repeats", str(args.repeats), "--budget", str(args.budget)]
    return _run_json(cmd, args.timeout, {"model": model, "res": res, "batch": batch, "dtype": dtype, "mode": mode})


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--res", type=int, nargs="+", default=[224, 384, 512, 768, 1024, 1536])
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--dtype", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    parser.add_argument("--train-res", type=int, nargs="*", default=[224, 512])
    parser.add_argument("--train-batch", type=int, default=8)
    parser.add_argument("--ratio-res", type=int, nargs="*", default=[224, 1024],
                        help="resolutions of the alternated RWKV / attention speed ratios (when --models has both)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--budget", type=float, default=20.0, help="seconds per call above which one call is timed")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per point before it is abandoned")
    parser.add_argument("--out", default="benchmarks/results/models.json")
    parser.add_argument("--point", nargs=5, metavar=("MODEL", "RES", "BATCH", "DTYPE", "MODE"), help=argparse.SUPPRESS)
    parser.add_argument("--pair", nargs=3, metavar=("RES", "BATCH", "DTYPE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.pair:
        res, batch, dtype = args.pair
        print(json.dumps(run_pair(int(res), int(batch), dtype, args.device, args.repeats, args.budget)))
        return {}

    if args.point:
        model, res, batch, dtype, mode = args.point
        print(json.dumps(run_point(model, int(res), int(batch), dtype, args.device, mode, args.repeats, args.budget)))
        return {}

    rows = []

    def record(row):
        rows.append(row)
        if "error" in row:
            print(f"{row['model']:>24} {row['mode']:>5} {row['res']:>5}px b{row['batch']} {row['dtype']}: "
                  f"FAILED {row['error']}", flush=True)
        else:
            print(f"{row['model']:>24} {row['mode']:>5} {row['res']:>5}px b{row['batch']} {row['dtype']}: "
                  f"{row['images_per_s']:9.2f} img/s  {row['seconds'] * 1e3:9.1f} ms  "
                  f"peak {row['peak_mem_MiB']:8.1f} MiB  (x{row['repeats']})", flush=True)

    for res in args.res:
        for batch in args.batch:
            for dtype in args.dtype:
                for model in args.models:
                    record(spawn(args, model, res, batch, dtype, "infer"))
    for res in args.train_res:
        for model in args.models:
            record(spawn(args, model, res, args.train_batch, "fp32", "train"))

    def get(model, res, batch, dtype, mode="infer"):
        return next((r for r in rows if (r["model"], r["res"], r["batch"], r["dtype"], r["mode"]) ==
                     (model, res, batch, dtype, mode) and "error" not in r), None)

    pairs = []
    paired = {"rwkv_vit_tiny", "rwkv_vit_tiny_attention"} <= set(args.models)
    for res in args.ratio_res if paired else []:
        for batch in args.batch:
            for dtype in args.dtype:
                pair = spawn_pair(args, res, batch, dtype)
                pairs.append(pair)
                if "error" in pair:
                    print(f"rwkv / attention {res:>5}px b{batch} {dtype}: FAILED {pair['error']}", flush=True)
                else:
                    print(f"rwkv / attention {res:>5}px b{batch} {dtype}: {pair['speed_ratio']:.2f}x speed "
                          f"({pair['rwkv_ms']:.1f} vs {pair['attention_ms']:.1f} ms, alternated x{pair['repeats']})",
                          flush=True)

    summary = {f"speed_rwkv_over_attention_{p['res']}px_b{p['batch']}_{p['dtype']}": p["speed_ratio"]
               for p in pairs if "error" not in p}
    for batch in args.batch:
        for dtype in args.dtype:
            a, b = get("rwkv_vit_tiny", 768, batch, dtype), get("rwkv_vit_tiny", 1536, batch, dtype)
            if a and b:
                summary[f"peak_mem_ratio_1536_over_768_b{batch}_{dtype}"] = b["peak_mem_MiB"] / a["peak_mem_MiB"]
    for key, value in summary.items():
        print(f"{key}: {value:.2f}")
    result = {"machine": machine_info(args.device), "command": " ".join([Path(sys.argv[0]).name] + sys.argv[1:]),
              "rows": rows, "pairs": pairs, "summary": summary}
    write_result(args.out, result)
    return result


if __name__ == "__main__":
    main()
