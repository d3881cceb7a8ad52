"""What every benchmark script records: the machine it ran on, the JSON file it writes, and FLOP counts."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode


def machine_info(device: str = "cpu") -> dict:
    """Platform, CPU, threads, torch version, device (and GPU name) and the 1-minute load average, as a dict."""
    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "threads": torch.get_num_threads(), "torch": torch.__version__,
            "device": device, "gpu": torch.cuda.get_device_name(0) if device == "cuda" else None,
            "load_average_1m": os.getloadavg()[0]}


def write_result(path: str | os.PathLike, result: dict) -> None:
    """Write ``result`` as indented JSON to ``path`` (folders created) and say where."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


def count_flops(model: torch.nn.Module, x: torch.Tensor) -> int:
    """FLOPs of one inference forward on ``x`` (torch's FlopCounterMode: convolutions and matrix products, 2 per
    multiply-accumulate; the WKV operator and elementwise work are not counted)."""
    counter = FlopCounterMode(display=False)
    with counter, torch.inference_mode():
        model(x)
    return counter.get_total_flops()
