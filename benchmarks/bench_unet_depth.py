"""UNetDepth benchmark: parameters, FLOPs and CPU frames/s at 480x640, next to smp.Unet with the same encoder.

    python benchmarks/bench_unet_depth.py [--repeats 5] [--warmup 2] [--size 480 640] [--threads N]
                                          [--encoders resnet18 ...] [--out benchmarks/results/unet_depth.json]

For each encoder, UNetDepth (random weights) and, where one exists, ``smp.Unet(encoder, encoder_weights=None)``
(same decoder widths; both need segmentation_models_pytorch only for the smp column), batch 1, fp32, eval mode,
``torch.inference_mode``:
  params   all parameters, millions;
  GFLOPs   counted by ``torch.utils.flop_counter.FlopCounterMode`` over one forward: convolutions and matrix
           products (2 FLOPs per multiply-add); element-wise work is not counted, nor is the WKV operator of the
           RWKV encoder (a custom op with no FLOP formula; it is O(T C), against O(T C^2) for its projections).
           GMACs = GFLOPs / 2, the unit most papers call "FLOPs";
  fps      1 / median wall time of ``--repeats`` forwards after ``--warmup`` ones; all models take turns within
           each repeat so that they all see the same machine load. The fastest repeat ("min ms") is printed too:
           on a shared machine it is the better estimate of the uncontended cost.
Prints a table and writes JSON with the machine, thread count and load average next to the numbers.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import torch

from common import count_flops, machine_info, write_result
from rwkv_vision.models.unet_depth import ENCODERS, UNetDepth
from rwkv_vision.ops import wkv_backend

SMP_ENCODERS = ("resnet18", "resnet34", "resnet50", "mobilenet_v2")


def forward_times(models: list[torch.nn.Module], x: torch.Tensor, warmup: int, repeats: int) -> list[list[float]]:
    """``repeats`` forward wall times of each model; all models take turns within each repeat, so a change in
    machine load (the box may be shared) hits all of them alike instead of whichever happened to run then."""
    times: list[list[float]] = [[] for _ in models]
    with torch.inference_mode():
        for model in models:
            for _ in range(warmup):
                model(x)
        for _ in range(repeats):
            for model, model_times in zip(models, times):
                start = time.perf_counter()
                model(x)
                model_times.append(time.perf_counter() - start)
    return times


def measure(models: dict[str, torch.nn.Module], x: torch.Tensor, warmup: int, repeats: int) -> list[dict]:
    for model in models.values():
        model.eval()
    rows = []
    for (name, model), times in zip(models.items(), forward_times(list(models.values()), x, warmup, repeats)):
        flops = count_flops(model, x)
        sec = statistics.median(times)
        row = {"model": name, "params_m": sum(p.numel() for p in model.parameters()) / 1e6, "gflops": flops / 1e9,
               "gmacs": flops / 2e9, "seconds": sec, "fps": 1.0 / sec, "seconds_min": min(times), "times": times}
        print(f"{name:<28} {row['params_m']:>9.2f} {row['gflops']:>9.1f} {row['gmacs']:>9.1f} {sec * 1e3:>10.0f} "
              f"{row['fps']:>8.2f} {min(times) * 1e3:>8.0f}", flush=True)
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--encoders", nargs="+", default=list(ENCODERS), choices=list(ENCODERS))
    parser.add_argument("--size", nargs=2, type=int, default=(480, 640), metavar=("H", "W"))
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "unet_depth.json")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        import segmentation_models_pytorch as smp
    except ImportError:
        smp = None
        print("segmentation_models_pytorch is not installed: no smp.Unet column")

    load_at_start = os.getloadavg()[0]
    torch.manual_seed(0)
    x = torch.randn(1, 3, *args.size)
    print(f"input 1x3x{args.size[0]}x{args.size[1]}, {torch.get_num_threads()} threads, "
          f"median of {args.repeats} after {args.warmup} warm-up")
    print(f"{'model':<28} {'params M':>9} {'GFLOPs':>9} {'GMACs':>9} {'ms/frame':>10} {'fps':>8} {'min ms':>8}")
    models, impls = {}, []
    for encoder in args.encoders:
        models[f"UNetDepth {encoder}"] = UNetDepth(encoder=encoder)
        impls.append((encoder, "rwkv_vision"))
        if smp is not None and encoder in SMP_ENCODERS:
            models[f"smp.Unet {encoder}"] = smp.Unet(encoder, encoder_weights=None, classes=1)
            impls.append((encoder, "smp"))
    rows = [{"encoder": encoder, "impl": impl, **row}
            for (encoder, impl), row in zip(impls, measure(models, x, args.warmup, args.repeats))]

    result = {
        "benchmark": "UNetDepth vs smp.Unet forward, batch 1, fp32, CPU",
        "input": [1, 3, *args.size],
        "warmup": args.warmup,
        "repeats": args.repeats,
        "flops_note": "FlopCounterMode: conv + matmul only, 2 FLOPs per MAC; WKV operator not counted",
        "smp": None if smp is None else smp.__version__,
        "wkv_backend": wkv_backend("cpu") if "rwkv_tiny" in args.encoders else None,
        "load_average_1m_at_start": load_at_start,
        "machine": machine_info("cpu"),
        "rows": rows,
    }
    write_result(args.out, result)


if __name__ == "__main__":
    main()
