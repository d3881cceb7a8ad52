"""Evaluation: classification and depth metrics over a data set, saved as JSON (and PNG figures).

Classification: top-1, top-3, macro-F1, per-class accuracy (recall) and the confusion matrix (rows: true class,
columns: predicted class), as fractions in [0, 1]. A model evaluates on any data set whose classes it knows: its
outputs are picked and reordered by class name (:func:`rwkv_vision.data.fer.label_mapping`), so an AffectNet-8 model
scores on RAF-DB's 7 classes in RAF-DB's order.

Depth: the NYU protocol of :class:`rwkv_vision.metrics.DepthMetrics` (predictions resized bilinearly to the ground
truth's resolution, Eigen crop, clamped to [min_depth, max_depth] metres), plus image | truth | prediction panels.

The meters return their running totals as one float64 tensor (:meth:`totals`) so that distributed evaluation sums
them over ranks before :meth:`compute`.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from .data.fer import label_mapping
from .data.transforms import IMAGENET_MEAN, IMAGENET_STD, DepthEvalTransform, eval_transform
from .metrics import DepthMetrics

__all__ = ["ClassificationMeter", "DepthMeter", "dataset_from_spec", "eval_preprocessing", "evaluate",
           "evaluate_command", "output_columns", "precision_context", "run_evaluation",
           "save_classification_report", "save_confusion_png", "save_depth_panels"]

LOWER_IS_BETTER = {"loss", "abs_rel", "sq_rel", "rmse", "rmse_log", "log10", "silog"}


def precision_context(device: torch.device, precision: str):
    """Autocast for "bf16" (CPU or CUDA) or "fp16" (CUDA); a no-op for "none"."""
    if precision == "none":
        return contextlib.nullcontext()
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    if dtype == torch.float16 and device.type != "cuda":
        raise ValueError("fp16 mixed precision needs CUDA; use bf16 on the CPU")
    return torch.autocast(device.type, dtype=dtype)


class ClassificationMeter:
    """Confusion matrix, top-k hits and summed loss over batches of logits [B, K] and targets [B] (class indices)
    or [B, K] (soft labels: their argmax is the true class)."""

    def __init__(self, class_names: Sequence[str], topk: Sequence[int] = (1, 3)):
        self.class_names = list(class_names)
        self.topk = tuple(topk)
        K = len(self.class_names)
        self.confusion = torch.zeros(K, K, dtype=torch.float64)
        self.hits = torch.zeros(len(self.topk), dtype=torch.float64)
        self.loss_sum = 0.0

    @torch.no_grad()
    def update(self, logits: torch.Tensor, target: torch.Tensor, loss_sum: float = 0.0) -> None:
        K = len(self.class_names)
        if logits.ndim != 2 or logits.shape[1] != K:
            raise ValueError(f"expected logits [B, {K}]; got {tuple(logits.shape)}")
        target = (target.argmax(1) if target.is_floating_point() else target).to("cpu", torch.int64)
        logits = logits.detach().float().cpu()
        pred = logits.argmax(1)
        self.confusion += torch.bincount(target * K + pred, minlength=K * K).view(K, K).double()
        ranked = logits.topk(min(max(self.topk), K), dim=1).indices
        for i, k in enumerate(self.topk):
            self.hits[i] += (ranked[:, :k] == target[:, None]).any(1).sum()
        self.loss_sum += float(loss_sum)

    def totals(self) -> torch.Tensor:
        return torch.cat([self.confusion.flatten(), self.hits, torch.tensor([self.loss_sum], dtype=torch.float64)])

    def compute(self, totals: torch.Tensor | None = None) -> dict:
        """Metrics from :meth:`totals` (default: this meter's own). ``macro_f1`` averages F1 over the classes that
        occur as a target or a prediction (as scikit-learn does), F1 = 0 where undefined."""
        totals = self.totals() if totals is None else totals
        K = len(self.class_names)
        confusion = totals[:K * K].view(K, K)
        hits, loss_sum = totals[K * K:K * K + len(self.topk)], float(totals[-1])
        count = float(confusion.sum())
        if count == 0:
            raise ValueError("no sample was evaluated")
        tp, support, predicted = confusion.diag(), confusion.sum(1), confusion.sum(0)
        present = (support + predicted) > 0
        f1 = torch.where(present, 2 * tp / (support + predicted).clamp_min(1), 0.0)
        result = {f"top{k}": float(h) / count for k, h in zip(self.topk, hits)}
        result.update({
            "macro_f1": float(f1[present].mean()),
            "loss": loss_sum / count,
            "count": int(count),
            "per_class_accuracy": {name: (float(tp[i] / support[i]) if support[i] > 0 else None)
                                   for i, name in enumerate(self.class_names)},
            "class_names": self.class_names,
            "confusion_matrix": confusion.round().to(torch.int64).tolist(),
        })
        return result


class DepthMeter:
    """The NYU metrics of :class:`rwkv_vision.metrics.DepthMetrics` and the summed loss, over batches of predictions
    [B, 1, h, w] and ground truth [B, 1, H, W] in metres (predictions are resized to H x W)."""

    def __init__(self, min_depth: float = 1e-3, max_depth: float = 10.0, eigen_crop: bool = True):
        self.metrics = DepthMetrics(min_depth, max_depth, eigen_crop=eigen_crop)
        self.loss_sum, self.count = 0.0, 0

    @staticmethod
    def match(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """``pred`` resized bilinearly to ``target``'s height and width."""
        if pred.shape[-2:] == target.shape[-2:]:
            return pred
        return F.interpolate(pred.float(), size=target.shape[-2:], mode="bilinear", align_corners=False)

    @torch.no_grad()
    def update(self, pred: torch.Tensor, target: torch.Tensor, loss_sum: float = 0.0) -> None:
        self.metrics.update(self.match(pred, target).float().cpu(), target.float().cpu())
        self.loss_sum += float(loss_sum)
        self.count += target.shape[0]

    def totals(self) -> torch.Tensor:
        names = self.metrics.names
        images = self.metrics.images
        means = self.metrics.compute() if images else dict.fromkeys(names, 0.0)
        values = [means[n] * images for n in names] + [images, self.metrics.skipped, self.loss_sum, self.count]
        return torch.tensor(values, dtype=torch.float64)

    def compute(self, totals: torch.Tensor | None = None) -> dict:
        totals = self.totals() if totals is None else totals
        names = self.metrics.names
        images, skipped, loss_sum, count = (float(v) for v in totals[len(names):])
        if images == 0:
            raise ValueError(f"no image with valid ground truth to score ({int(skipped)} skipped)")
        result = {n: float(totals[i]) / images for i, n in enumerate(names)}
        result.update(images=int(images), skipped=int(skipped), loss=loss_sum / max(count, 1))
        return result


@torch.no_grad()
def run_evaluation(model: nn.Module, loader: DataLoader, meter: ClassificationMeter | DepthMeter,
                   device: torch.device, precision: str = "none",
                   loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
                   columns: Sequence[int] | None = None) -> None:
    """Feed every batch of ``loader`` through ``model`` (eval mode) into ``meter``.

    ``columns``: for classification, the model outputs to keep, in the data set's class order. ``loss_fn``: a mean
    loss of (outputs, targets), summed into the meter per sample."""
    model.eval()
    index = torch.as_tensor(columns, device=device) if columns is not None else None
    for images, targets in loader:
        with precision_context(device, precision):
            out = model(images.to(device, non_blocking=True))
        out = out.float()
        if index is not None:
            out = out.index_select(1, index)
        if isinstance(meter, DepthMeter):
            out = DepthMeter.match(out, targets)
        targets = targets.to(device)
        loss = float(loss_fn(out, targets)) * images.shape[0] if loss_fn is not None else 0.0
        meter.update(out, targets, loss)


def output_columns(model_classes: Sequence[str], data_classes: Sequence[str]) -> list[int] | None:
    """Indices of the model outputs for each data-set class (None when they already match); raises ValueError naming
    data-set classes the model does not know."""
    columns = label_mapping(data_classes, model_classes)
    missing = [name for name, c in zip(data_classes, columns) if c < 0]
    if missing:
        raise ValueError(f"the model's classes {list(model_classes)} lack the data set's {missing}")
    return None if columns == list(range(len(model_classes))) else columns


def save_classification_report(result: dict, output_dir: str | os.PathLike) -> None:
    """Write ``confusion_matrix.json`` and, with matplotlib, ``confusion_matrix.png`` into ``output_dir``; without
    matplotlib a note saying so is added to ``result["notes"]``."""
    out = Path(output_dir)
    (out / "confusion_matrix.json").write_text(json.dumps(
        {"class_names": result["class_names"], "rows": "true", "columns": "predicted",
         "matrix": result["confusion_matrix"]}, indent=1) + "\n")
    if save_confusion_png(result, out / "confusion_matrix.png") is None:
        result.setdefault("notes", []).append("confusion_matrix.png not written: matplotlib is not installed")


def save_confusion_png(result: dict, path: str | Path, title: str = "") -> Path | None:
    """The confusion matrix of a classification result as a PNG (row-normalised colours, counts written in the cells),
    through matplotlib. Returns None, writing nothing, when matplotlib is not installed."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    counts = np.asarray(result["confusion_matrix"], dtype=np.float64)
    rates = counts / np.maximum(counts.sum(1, keepdims=True), 1)
    names = result["class_names"]
    fig, ax = plt.subplots(figsize=(1.0 + 0.7 * len(names), 0.8 + 0.6 * len(names)))
    ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(len(names)):
        for j in range(len(names)):
            ax.text(j, i, int(counts[i, j]), ha="center", va="center",
                    color="white" if rates[i, j] > 0.5 else "black", fontsize=8)
    ax.set_title(title or f"top-1 {100 * result['top1']:.1f}%, macro-F1 {100 * result['macro_f1']:.1f}%")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


def save_depth_panels(images: torch.Tensor, targets: torch.Tensor, preds: torch.Tensor, path: str | Path,
                      mean: Sequence[float], std: Sequence[float], max_depth: float = 10.0) -> Path:
    """One row per sample: image | truth | prediction, the depths colour-mapped on a shared scale (0 to the row's
    largest valid true depth, at most ``max_depth``; missing truth black). Inputs: normalised images [N, 3, h, w],
    truth and prediction [N, 1, H, W] metres."""
    from .pipelines import colorize_depth

    rows = []
    for image, target, pred in zip(images, targets, preds):
        H, W = target.shape[-2:]
        rgb = image.float().cpu() * torch.tensor(std).view(-1, 1, 1) + torch.tensor(mean).view(-1, 1, 1)
        rgb = F.interpolate(rgb[None], size=(H, W), mode="bilinear", align_corners=False)[0].clamp(0, 1)
        rgb = (rgb.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        t, p = target[0].float().cpu(), DepthMeter.match(pred[None].float().cpu(), target[None])[0, 0]
        valid = (t > 0) & (t < max_depth)
        vmax = float(t[valid].max()) if valid.any() else max_depth
        rows.append(np.concatenate([rgb, colorize_depth(t, 0.0, vmax, valid), colorize_depth(p, 0.0, vmax)], 1))
    Image.fromarray(np.concatenate(rows, 0)).save(path)
    return Path(path)


def evaluate(model: nn.Module, dataset: Dataset, task: str, *, batch_size: int = 64, workers: int = 0,
             device: str | torch.device = "cpu", precision: str = "none", output_dir: str | os.PathLike | None = None,
             panels: int = 4, min_depth: float = 1e-3, max_depth: float = 10.0, info: dict | None = None) -> dict:
    """Evaluate ``model`` on ``dataset`` (already carrying its evaluation transform).

    Args:
        task: "classification" (the data set needs ``classes``; the model's ``pretrained_cfg["label_names"]`` map its
            outputs, else they are taken to be in the data set's order) or "depth".
        output_dir: if given, write ``results.json`` there, plus ``confusion_matrix.json`` and
            ``confusion_matrix.png`` (classification; the PNG only with matplotlib) or ``panels.png`` (depth, the
            first ``panels`` samples).
        info: entries added to the result (what was evaluated), saved with it.
    Returns:
        the metrics (see :class:`ClassificationMeter` / :class:`DepthMeter`), with ``notes`` on anything skipped.
    """
    device = torch.device(device)
    model = model.to(device).eval()
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers)
    if task == "classification":
        from .hub import label_names

        data_classes = list(dataset.classes)
        model_classes = label_names(getattr(model, "pretrained_cfg", None) or {}) or data_classes
        columns = output_columns(model_classes, data_classes)
        meter = ClassificationMeter(data_classes)
        run_evaluation(model, loader, meter, device, precision, nn.CrossEntropyLoss(), columns)
    elif task == "depth":
        meter = DepthMeter(min_depth, max_depth)
        run_evaluation(model, loader, meter, device, precision)
    else:
        raise ValueError(f"task must be 'classification' or 'depth'; got {task!r}")
    result = {**meter.compute(), **(info or {})}
    if output_dir is None:
        return result
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    if task == "classification":
        save_classification_report(result, out)
    elif panels > 0:
        cfg = getattr(model, "pretrained_cfg", None) or {}
        batch = [dataset[i] for i in range(min(panels, len(dataset)))]
        images, targets = torch.stack([b[0] for b in batch]), torch.stack([b[1] for b in batch])
        with torch.no_grad(), precision_context(device, precision):
            preds = model(images.to(device)).float().cpu()
        save_depth_panels(images, targets, preds, out / "panels.png", cfg.get("mean") or IMAGENET_MEAN,
                          cfg.get("std") or IMAGENET_STD, max_depth)
    (out / "results.json").write_text(json.dumps(result, indent=1) + "\n")
    return result


def dataset_from_spec(spec: Sequence[str], split: str | None, transform=None):
    """A data set from the command line's ``--data``: ``NAME [KEY=VALUE ...]`` (a reader of
    :data:`rwkv_vision.train.DATASETS` and its arguments, e.g. ``ckplus root=data/ckplus48 fold=0``), or a training
    config file ``FILE [OVERRIDE ...]`` whose data section is used. ``split`` default: the config's ``test_split``,
    else "test". Returns (dataset, name, args, split)."""
    from .train.config import build_dataset, load_config, parse_overrides

    if not spec:
        raise ValueError("--data needs a data set name (and KEY=VALUE arguments) or a training config file")
    head, rest = spec[0], list(spec[1:])
    if Path(head).suffix.lower() in (".yaml", ".yml", ".toml", ".json"):
        data = load_config(head, rest).data
        name, args, split = data.name, dict(data.args), split or data.test_split or "test"
    else:
        name, split = head, split or "test"
        args = {}
        for key_path, value in parse_overrides(rest):
            args[".".join(key_path)] = value
    return build_dataset(name, args, split, transform), name, args, split


def evaluate_command(model_ref: str, data_spec: Sequence[str], split: str | None = None,
                     output_dir: str | os.PathLike | None = None, batch_size: int = 64, workers: int = 0,
                     device: str = "cpu", precision: str = "none", panels: int = 4) -> dict:
    """``rwkv-vision evaluate``: load ``model_ref`` (folder or Hub repository), build the data set of ``data_spec``
    (:func:`dataset_from_spec`) with the model's evaluation preprocessing, evaluate, and write the results into
    ``output_dir`` (default: ``eval-<data set>-<split>`` beside a model folder, else in the working directory).
    """
    from .pipelines import load_model, model_task
    from .train.config import dataset_task

    model = load_model(model_ref, device)
    dataset, name, args, split = dataset_from_spec(data_spec, split)
    task = dataset_task(name)
    if model_task(model) not in (None, task):
        raise ValueError(f"{model_ref} is a {model_task(model)} model but {name!r} is a {task} data set")
    dataset.transform = eval_preprocessing(model, task)
    if output_dir is None:
        base = Path(model_ref).resolve().parent if Path(model_ref).is_dir() else Path(".")
        output_dir = base / f"eval-{name}-{split}"
    return evaluate(model, dataset, task, batch_size=batch_size, workers=workers, device=device,
                    precision=precision, output_dir=output_dir, panels=panels,
                    info={"model": str(model_ref), "data": {"name": name, "args": args, "split": split},
                          "output_dir": str(output_dir)})


def eval_preprocessing(model: nn.Module, task: str):
    """The evaluation transform of ``model`` (from its ``pretrained_cfg``) for ``task``: an
    :class:`~rwkv_vision.data.transforms.EvalTransform` for classification, a
    :class:`~rwkv_vision.data.transforms.DepthEvalTransform` (image resized to ``input_size``) for depth."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    if task == "classification":
        return eval_transform(cfg)
    if not cfg.get("input_size"):
        raise ValueError(f"{type(model).__name__}: pretrained_cfg has no input_size to resize the images to")
    return DepthEvalTransform(cfg["input_size"][-2:], cfg.get("mean") or IMAGENET_MEAN,
                              cfg.get("std") or IMAGENET_STD)
