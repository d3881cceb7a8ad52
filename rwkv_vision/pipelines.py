"""Inference pipelines with the output shapes of ``transformers.pipeline``.

    >>> classify = rwkv_vision.pipeline("image-classification", "runs/ckplus48/model")
    >>> classify("face.png", top_k=3)
    [{'label': 'happiness', 'score': 0.97}, {'label': 'surprise', 'score': 0.02}, ...]
    >>> estimate = rwkv_vision.pipeline("depth-estimation", model)
    >>> out = estimate("room.jpg"); out["predicted_depth"].shape, out["depth"].size
    (torch.Size([480, 640]), (640, 480))

A pipeline takes an image path, a PIL image, a uint8 array [H, W(, C)] or a float tensor [3, H, W] in [0, 1], or a
list of them (then it returns a list of results). Preprocessing comes from the model's ``pretrained_cfg`` (input size,
crop, interpolation, mean, std), as saved by the trainer.
"""

from __future__ import annotations

import os

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

from .data.fer import read_image
from .data.transforms import IMAGENET_MEAN, IMAGENET_STD, eval_transform, resize, to_tensor

__all__ = ["DepthEstimationPipeline", "ImageClassificationPipeline", "TASKS", "colorize_depth", "load_model",
           "pipeline"]

TASKS = {"image-classification": "classification", "classification": "classification",
         "depth-estimation": "depth", "depth": "depth"}


def load_model(model: nn.Module | str | os.PathLike, device: str | torch.device = "cpu") -> nn.Module:
    """A model object (returned as is), or a folder / Hub repository saved with ``save_pretrained``, loaded with
    :func:`rwkv_vision.hub.from_pretrained`; moved to ``device`` in eval mode."""
    if not isinstance(model, nn.Module):
        from .hub import from_pretrained

        model = from_pretrained(model)
    return model.to(device).eval()


def model_task(model: nn.Module) -> str | None:
    """"classification" or "depth" from the model's ``pretrained_cfg["task"]`` (a Hub pipeline tag), else None."""
    return TASKS.get((getattr(model, "pretrained_cfg", None) or {}).get("task") or "")


def _as_image(image) -> torch.Tensor:
    if isinstance(image, (str, os.PathLike)):
        return read_image(image)
    return to_tensor(image)


class _Pipeline:
    def __init__(self, model: nn.Module | str | os.PathLike, device: str | torch.device = "cpu"):
        self.device = torch.device(device)
        self.model = load_model(model, self.device)
        self.cfg = dict(getattr(self.model, "pretrained_cfg", None) or {})

    def __call__(self, images, **kwargs):
        single = not isinstance(images, (list, tuple))
        results = [self._one(_as_image(image), **kwargs) for image in ([images] if single else images)]
        return results[0] if single else results


class ImageClassificationPipeline(_Pipeline):
    """Image -> ``[{"label": str, "score": float}, ...]``: the ``top_k`` classes by softmax probability, best first.
    Labels are the model's ``pretrained_cfg["label_names"]`` (``LABEL_i`` when it has none)."""

    def __init__(self, model, device: str | torch.device = "cpu", top_k: int = 5):
        super().__init__(model, device)
        from .hub import label_names

        self.transform = eval_transform(self.cfg)
        self.top_k = top_k
        self.labels = label_names(self.cfg)

    @torch.no_grad()
    def predict_proba(self, image: torch.Tensor) -> torch.Tensor:
        """Image float [3, H, W] in [0, 1] -> class probabilities [num_classes]."""
        logits = self.model(self.transform(image)[None].to(self.device))[0].float()
        if self.labels and logits.numel() != len(self.labels):
            raise ValueError(f"the model outputs {logits.numel()} classes but has {len(self.labels)} label names")
        return logits.softmax(-1).cpu()

    def _one(self, image: torch.Tensor, top_k: int | None = None) -> list[dict]:
        probs = self.predict_proba(image)
        k = min(top_k or self.top_k, probs.numel())
        scores, indices = probs.topk(k)
        names = self.labels or [f"LABEL_{i}" for i in range(probs.numel())]
        return [{"label": names[i], "score": float(s)} for s, i in zip(scores.tolist(), indices.tolist())]


class DepthEstimationPipeline(_Pipeline):
    """Image -> ``{"predicted_depth": float32 [H, W] metres at the image's size, "depth": PIL "L" image}`` where
    "depth" is the depth scaled to 0-255 by its maximum (as transformers does: far is bright).

    The image is resized to the model's ``input_size`` when its config has one (else it runs at its own size) and
    normalised with its mean/std (ImageNet by default); the prediction is resized back bilinearly."""

    @torch.no_grad()
    def predict_depth(self, image: torch.Tensor) -> torch.Tensor:
        """Image float [3, H, W] in [0, 1] -> depth float32 [H, W] in metres."""
        H, W = image.shape[-2:]
        size = tuple(self.cfg["input_size"][-2:]) if self.cfg.get("input_size") else (H, W)
        mean = torch.tensor(self.cfg.get("mean") or IMAGENET_MEAN).view(-1, 1, 1)
        std = torch.tensor(self.cfg.get("std") or IMAGENET_STD).view(-1, 1, 1)
        x = ((resize(image, size, "bilinear") - mean) / std)[None].to(self.device)
        depth = self.model(x).float()
        if depth.ndim != 4 or depth.shape[1] != 1:
            raise ValueError(f"a depth model must return [B, 1, H, W]; got {tuple(depth.shape)}")
        return F.interpolate(depth, size=(H, W), mode="bilinear", align_corners=False)[0, 0].cpu()

    def _one(self, image: torch.Tensor) -> dict:
        depth = self.predict_depth(image)
        peak = float(depth.max()) or 1.0
        grey = (depth.clamp(min=0) * (255.0 / peak)).round().to(torch.uint8).numpy()
        return {"predicted_depth": depth, "depth": Image.fromarray(grey)}


def pipeline(task: str, model: nn.Module | str | os.PathLike, device: str | torch.device = "cpu", **kwargs):
    """An inference pipeline: ``task`` "image-classification" (or "classification") or "depth-estimation" (or
    "depth"); ``model`` a model object, a folder saved with ``save_pretrained`` or a Hub repository id. Extra keyword
    arguments go to the pipeline (``top_k`` for classification)."""
    if task not in TASKS:
        raise ValueError(f"unknown pipeline task {task!r}; choose from {', '.join(TASKS)}")
    cls = ImageClassificationPipeline if TASKS[task] == "classification" else DepthEstimationPipeline
    return cls(model, device, **kwargs)


# Turbo colour map (Google, 2019), polynomial approximation of the published table: smooth and perceptually ordered.
_TURBO = np.array([
    [0.13572138, 4.61539260, -42.66032258, 132.13108234, -152.94239396, 59.28637943],
    [0.09140261, 2.19418839, 4.84296658, -14.18503333, 4.27729857, 2.82956604],
    [0.10667330, 12.64194608, -60.58204836, 110.36276771, -89.90310912, 27.34824973],
])


def colorize_depth(depth: torch.Tensor | np.ndarray, vmin: float | None = None, vmax: float | None = None,
                   valid: torch.Tensor | np.ndarray | None = None) -> np.ndarray:
    """Depth [H, W] (metres) -> uint8 RGB [H, W, 3] with the turbo colour map: ``vmin`` (default: the minimum over
    valid pixels) is dark blue, ``vmax`` (default: the maximum) dark red; pixels outside ``valid`` are black."""
    d = np.asarray(depth, dtype=np.float64)
    mask = np.isfinite(d) if valid is None else np.asarray(valid, dtype=bool) & np.isfinite(d)
    if not mask.any():
        return np.zeros((*d.shape, 3), dtype=np.uint8)
    lo = float(d[mask].min()) if vmin is None else vmin
    hi = float(d[mask].max()) if vmax is None else vmax
    x = np.clip((np.where(mask, d, lo) - lo) / max(hi - lo, 1e-12), 0, 1)
    powers = np.stack([x ** i for i in range(6)], axis=-1)  # [H, W, 6]
    rgb = np.clip(powers @ _TURBO.T, 0, 1)
    rgb[~mask] = 0
    return (rgb * 255).round().astype(np.uint8)

