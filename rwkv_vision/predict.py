"""Prediction on image files (``rwkv-vision predict``): top-k labels for classifiers, depth maps for depth models.

Classification returns, per image, ``{"file", "predictions": [{"label", "score"}, ...]}`` (printed as a table, or as
JSON with ``--json``). Depth writes per image ``<stem>_depth.png`` (16-bit, millimetres, NYU's encoding) and
``<stem>_depth_color.png`` (turbo colour map, near blue, far red) into the output folder and returns
``{"file", "depth_png", "color_png", "min_m", "max_m"}``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from PIL import Image

from .data.fer import read_image
from .pipelines import DepthEstimationPipeline, ImageClassificationPipeline, colorize_depth, load_model, model_task

__all__ = ["format_table", "predict", "save_depth_png"]


def save_depth_png(depth: torch.Tensor, path: str | os.PathLike) -> Path:
    """Depth [H, W] in metres -> 16-bit PNG in millimetres (0 = no depth; values above 65.535 m saturate)."""
    mm = (depth.clamp(0, 65.535) * 1000).round().numpy().astype(np.uint16)
    Image.fromarray(mm).save(path)
    return Path(path)


def predict(model: nn.Module | str | os.PathLike, images: Sequence[str | os.PathLike], top_k: int = 5,
            output_dir: str | os.PathLike = "predictions", device: str = "cpu") -> list[dict]:
    """Run ``model`` (object, folder or Hub repository) on image files; the task comes from the model's
    ``pretrained_cfg["task"]``. ``output_dir`` receives the depth PNGs (depth models only)."""
    if not images:
        raise ValueError("predict: no image files given")
    model = load_model(model, device)
    task = model_task(model)
    if task is None:
        raise ValueError(f"{type(model).__name__}: pretrained_cfg has no task (image-classification or "
                         "depth-estimation); it was not saved by rwkv-vision train or save_pretrained")
    missing = [str(p) for p in images if not Path(p).is_file()]
    if missing:
        raise FileNotFoundError(f"image file(s) not found: {', '.join(missing)}")
    if task == "classification":
        classify = ImageClassificationPipeline(model, device, top_k)
        return [{"file": str(p), "predictions": classify(read_image(p))} for p in images]
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    estimate = DepthEstimationPipeline(model, device)
    results = []
    for path in images:
        depth = estimate.predict_depth(read_image(path))
        stem = Path(path).stem
        depth_png = save_depth_png(depth, out / f"{stem}_depth.png")
        color_png = out / f"{stem}_depth_color.png"
        Image.fromarray(colorize_depth(depth)).save(color_png)
        results.append({"file": str(path), "depth_png": str(depth_png), "color_png": str(color_png),
                        "min_m": float(depth.min()), "max_m": float(depth.max())})
    return results


def format_table(results: list[dict]) -> str:
    """Plain-text table of :func:`predict` results: one block per image (classification) or one line (depth)."""
    lines = []
    for r in results:
        if "predictions" in r:
            lines.append(r["file"])
            lines += [f"  {i}. {p['label']:<16} {100 * p['score']:6.2f}%" for i, p in enumerate(r["predictions"], 1)]
        else:
            lines.append(f"{r['file']}: depth {r['min_m']:.2f}-{r['max_m']:.2f} m -> {r['depth_png']}, "
                         f"{r['color_png']}")
    return "\n".join(lines)
