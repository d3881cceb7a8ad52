"""POSTER benchmark: parameters, FLOPs at 112 and 224, and CPU images/s at batch 16 for PosterV2, PosterRWKV and
poster_rwkv_small, in one run.

    python benchmarks/bench_poster.py [--batch 16] [--warmup 1] [--repeats 3] [--threads N]
                                      [--models poster_v2 poster_rwkv poster_rwkv_small]
                                      [--out benchmarks/results/poster.json]

Random weights, 7 classes, fp32, eval mode, ``torch.inference_mode``:
  params      all parameters (trainable: without the frozen landmark MobileFaceNet), millions;
  GFLOPs      counted by ``torch.utils.flop_counter.FlopCounterMode`` over one forward of one face: convolutions,
              linears and attention matrix products, 2 FLOPs per multiply-add; element-wise work is not counted, nor
              is the WKV operator (a custom op with no FLOP formula; O(T C) against O(T C^2) for its projections).
              GMACs = GFLOPs / 2 is the unit POSTER V2 reports as "FLOPs" (8.4 G at 224). 224 inputs are resized to
              112 inside, so both sizes cost the same but for the resize;
  images/s    batch / median wall time of ``--repeats`` forwards of a [batch, 3, 224, 224] input after ``--warmup``.
Prints a table and writes JSON with the machine, thread count, WKV backend and load average next to the numbers.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from common import count_flops, machine_info, write_result
from rwkv_vision.ops import wkv_backend
from rwkv_vision.registry import create_model

MODELS = ("poster_v2", "poster_rwkv", "poster_rwkv_small")


def median_seconds(model: torch.nn.Module, x: torch.Tensor, warmup: int, repeats: int) -> float:
    times = []
    with torch.inference_mode():
        for i in range(warmup + repeats):
            start = time.perf_counter()
            model(x)
            if i >= warmup:
                times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(name: str, batch: int, warmup: int, repeats: int) -> dict:
    torch.manual_seed(0)
    model = create_model(name, num_classes=7).eval()
    flops = {size: count_flops(model, torch.randn(1, 3, size, size)) for size in (112, 224)}
    seconds = median_seconds(model, torch.randn(batch, 3, 224, 224), warmup, repeats)
    row = {"model": name,
           "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
           "trainable_params_m": sum(p.numel() for p in model.parameters() if p.requires_grad) / 1e6,
           "gflops_112": flops[112] / 1e9, "gmacs_112": flops[112] / 2e9,
           "gflops_224": flops[224] / 1e9, "gmacs_224": flops[224] / 2e9,
           "seconds_per_batch": seconds, "images_per_s": batch / seconds}
    print(f"{name:<18} {row['params_m']:>8.2f} {row['trainable_params_m']:>9.2f} {row['gmacs_112']:>9.3f} "
          f"{row['gflops_112']:>9.3f} {row['gmacs_224']:>9.3f} {row['gflops_224']:>9.3f} "
          f"{row['images_per_s']:>9.2f}", flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "poster.json")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    backend = wkv_backend("cpu")
    print(f"batch {args.batch} at 224x224 (resized to 112 inside), {torch.get_num_threads()} threads, WKV backend "
          f"{backend}, median of {args.repeats} after {args.warmup} warm-up")
    print(f"{'model':<18} {'params M':>8} {'train. M':>9} {'GMACs112':>9} {'GFLOPs112':>9} {'GMACs224':>9} "
          f"{'GFLOPs224':>9} {'images/s':>9}")
    rows = [measure(name, args.batch, args.warmup, args.repeats) for name in args.models]

    result = {
        "benchmark": "POSTER V2 / PosterRWKV forward, fp32, CPU",
        "input": [args.batch, 3, 224, 224],
        "warmup": args.warmup,
        "repeats": args.repeats,
        "flops_note": "FlopCounterMode, one face: conv + linear + matmul, 2 FLOPs per MAC; WKV operator not counted",
        "wkv_backend": backend,
        "machine": machine_info("cpu"),
        "rows": rows,
    }
    write_result(args.out, result)


if __name__ == "__main__":
    main()
