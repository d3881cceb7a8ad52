"""The trainer: a :class:`~rwkv_vision.train.config.Config` in, a trained and exported model out.

Files written to ``config.output`` (by rank 0 only):

``train_config.json``  the resolved configuration (re-runnable with ``rwkv-vision train --config``)
``metrics.jsonl``      one JSON line per epoch: epoch, step, lr, train and validation metrics, seconds
``checkpoint.pt``      everything needed to resume exactly, rewritten atomically after every epoch
``best.pt``            the weights with the best validation ``train.monitor`` so far (a state dict)
``model/``             the exported model (``save_pretrained``: config.json, model.safetensors, README.md card with
                       the measured test metrics and the data used): the best or last weights (``train.export``)
``results.json``       the final test metrics of the exported weights, plus ``confusion_matrix.{json,png}``
``tensorboard/``       scalars, with ``train.tensorboard``

``fit(resume=True)`` continues from ``checkpoint.pt`` after a crash or kill: the model, optimiser, scheduler,
gradient scaler, EMA, epoch, step, best metric and the random states of every rank are restored, so the run ends
with the same weights as one that was never interrupted.
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from .. import evaluate as ev
from ..data.transforms import (IMAGENET_MEAN, IMAGENET_STD, DepthEvalTransform, EvalTransform, TrainTransform,
                               depth_train_transform)
from ..losses import DepthLoss
from ..metrics import METRIC_NAMES
from ..registry import create_model
from . import distributed as dist
from .checkpoint import atomic_save, get_rng_state, load_checkpoint_file, set_rng_state
from .config import Config, ConfigError, build_dataset
from .optim import SAM, ModelEMA, build_optimizer, build_scheduler

__all__ = ["Trainer", "seed_everything"]

HUB_TASKS = {"classification": "image-classification", "depth": "depth-estimation"}
SOURCE_FIELDS = ("hf_hub_id", "hf_hub_filename", "hf_hub_revision", "checkpoint_format", "pretrained_submodule",
                 "label_set", "top1", "loaded_from", "base_model")
CHECKPOINT_FORMAT = "rwkv-vision-train/1"
# Keys that may change between a run and its resumption; anything else changing makes the resumed run a different run.
RESUMABLE_CHANGES = {"train.epochs", "train.progress", "train.tensorboard", "train.threads", "train.device",
                     "data.workers", "data.eval_batch_size"}


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators."""
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)


def _flatten(d: dict, prefix: str = "") -> dict:
    """Nested config dict -> {"optim.lr": ...}; ``model.args`` and ``data.args`` stay whole (compared as one)."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and k != "args":
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _scalars(metrics: dict) -> dict:
    """The numeric entries of a metrics dict (drops the confusion matrix, class names and per-class table)."""
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


class Trainer:
    """Train the model of ``config`` on its data, validating every epoch, and export the result.

    Args:
        config: a validated :class:`Config` (:func:`rwkv_vision.train.load_config`).
        callbacks: functions ``fn(trainer, record)`` called on every rank after each epoch's checkpoint is written;
            ``record`` is the epoch's metrics line. (The resume test kills the process from one.)

    ``fit()`` returns the summary also written to ``results.json``. Under ``torchrun`` each process runs ``fit()``;
    the data are sharded, gradients averaged (DistributedDataParallel) and metrics summed over ranks.
    """

    def __init__(self, config: Config, callbacks: Sequence[Callable[[Trainer, dict], None]] = ()):
        self.cfg = config
        self.callbacks = list(callbacks)
        self.output = Path(config.output)
        self.task = config.task
        self.writer = None  # TensorBoard, opened by fit() when requested

    # -- set-up -------------------------------------------------------------------------------------------------------

    def _print(self, message: str) -> None:
        if self.ctx.is_main:
            print(message, flush=True)

    def _build_model(self) -> nn.Module:
        args = dict(self.cfg.model.args)
        if self.task == "classification":
            n = len(self.classes)
            if args.setdefault("num_classes", n) != n:
                raise ConfigError(f"model.args.num_classes={args['num_classes']} but data set {self.cfg.data.name!r} "
                                  f"({self.cfg.data.train_split}) has {n} classes: {self.classes}")
        model = create_model(self.cfg.model.name, pretrained=self.cfg.model.pretrained or False,
                             checkpoint_path=self.cfg.model.checkpoint, **args)
        return model.train()  # pretrained models come back in eval mode

    def _preprocessing(self) -> dict:
        """Input size (H, W), crop_pct, interpolation, mean, std: the data section's, else the model's."""
        data, model_cfg = self.cfg.data, dict(getattr(self.model, "pretrained_cfg", None) or {})

        def pick(key: str, default):
            value = getattr(data, key)
            return value if value is not None else model_cfg.get(key) if model_cfg.get(key) is not None else default

        size = data.input_size if data.input_size is not None else (model_cfg.get("input_size") or [None])[-2:]
        if None in size:
            raise ConfigError(f"data.input_size is required: {self.cfg.model.name} has no pretrained_cfg input_size")
        return {"input_size": tuple(int(s) for s in size), "crop_pct": float(pick("crop_pct", 1.0)),
                "interpolation": pick("interpolation", "bilinear"), "mean": tuple(pick("mean", IMAGENET_MEAN)),
                "std": tuple(pick("std", IMAGENET_STD))}

    def _transforms(self) -> tuple[Callable, Callable]:
        p, aug = self.prep, self.cfg.augment
        if self.task == "classification":
            train = TrainTransform(p["input_size"], aug.scale, aug.ratio, aug.hflip, aug.rotation, aug.brightness,
                                   aug.contrast, aug.saturation, aug.erasing, aug.erasing_scale, p["interpolation"],
                                   p["mean"], p["std"])
            return train, EvalTransform(p["input_size"], p["crop_pct"], p["interpolation"], p["mean"], p["std"])
        train = depth_train_transform(p["input_size"], aug.crop, aug.hflip, aug.brightness, aug.contrast,
                                      aug.saturation, p["mean"], p["std"])
        return train, DepthEvalTransform(p["input_size"], p["mean"], p["std"])

    def _monitor(self) -> tuple[str, bool]:
        """The validation metric that picks the best epoch, and whether lower is better."""
        allowed = ("top1", "top3", "macro_f1", "loss") if self.task == "classification" else METRIC_NAMES + ("loss",)
        name = self.cfg.train.monitor or ("top1" if self.task == "classification" else "abs_rel")
        if name not in allowed:
            raise ConfigError(f"train.monitor: {name!r} is not a {self.task} metric; choose from {', '.join(allowed)}")
        return name, name in ev.LOWER_IS_BETTER

    def _setup(self) -> None:
        cfg, ctx = self.cfg, self.ctx
        if cfg.train.precision == "fp16" and ctx.device.type != "cuda":
            raise ConfigError(f"train.precision=fp16 needs a CUDA device (got {ctx.device}); use bf16 on the CPU")
        if cfg.train.threads:
            torch.set_num_threads(cfg.train.threads)
        seed_everything(cfg.seed)
        self.monitor, self.lower_is_better = self._monitor()
        data = cfg.data
        self.train_set = build_dataset(data.name, data.args, data.train_split)
        self.classes = list(self.train_set.classes) if self.task == "classification" else None
        self.model = self._build_model()
        self.prep = self._preprocessing()
        train_tf, self.eval_tf = self._transforms()
        self.train_set.transform = train_tf
        self.val_set = self._eval_set(data.val_split)
        self.test_set = self.val_set if data.test_split == data.val_split else self._eval_set(data.test_split)
        if ctx.rank:  # every rank starts from the same weights (built above); augmentation streams differ per rank
            seed_everything(cfg.seed + 1_000_003 * ctx.rank)

        self.model.to(ctx.device)
        self.ema = ModelEMA(self.model, cfg.train.ema_decay) if cfg.train.ema_decay is not None else None
        self.net = (DistributedDataParallel(self.model, device_ids=[ctx.device.index] if ctx.device.type == "cuda"
                                            else None) if ctx.distributed else self.model)
        weights = self._class_weights() if data.balanced_sampler else None
        self.sampler = dist.TrainSampler(len(self.train_set), cfg.seed, weights, ctx.rank, ctx.world_size)
        self.drop_last = len(self.sampler) > data.batch_size  # a last batch of one sample breaks BatchNorm
        batches = (len(self.sampler) // data.batch_size if self.drop_last
                   else math.ceil(len(self.sampler) / data.batch_size))
        self.steps_per_epoch = math.ceil(batches / cfg.optim.accumulate)
        self.optimizer = build_optimizer(self.model, cfg.optim)
        self.scheduler = build_scheduler(self.optimizer, cfg.schedule, cfg.optim.lr, cfg.train.epochs,
                                         self.steps_per_epoch)
        self.scaler = torch.amp.GradScaler(ctx.device.type, enabled=cfg.train.precision == "fp16")
        if self.task == "classification":
            self.loss_fn = nn.CrossEntropyLoss(label_smoothing=cfg.loss.label_smoothing)
            self.eval_loss_fn = nn.CrossEntropyLoss()
        else:
            self.loss_fn = self.eval_loss_fn = DepthLoss(cfg.loss.silog, cfg.loss.l1, cfg.loss.grad, cfg.loss.ssim,
                                                         cfg.loss.min_depth, cfg.loss.max_depth)
        self.epoch, self.step = 0, 0
        self.best_value, self.best_epoch = None, None

    def _eval_set(self, split: str | None):
        if split is None:
            return None
        dataset = build_dataset(self.cfg.data.name, self.cfg.data.args, split, self.eval_tf)
        if self.task == "classification":
            ev.output_columns(self.classes, dataset.classes)  # fails now, naming classes the model cannot score
        return dataset

    def _class_weights(self) -> torch.Tensor:
        if self.task != "classification":
            raise ConfigError("data.balanced_sampler applies to classification only")
        counts = torch.tensor(self.train_set.class_counts(), dtype=torch.float64)
        targets = torch.as_tensor(self.train_set.targets)
        return (1.0 / counts.clamp_min(1))[targets]

    @property
    def eval_model(self) -> nn.Module:
        """The weights that are validated and exported: the EMA when enabled, else the model itself."""
        return self.ema.module if self.ema is not None else self.model

    # -- checkpoints --------------------------------------------------------------------------------------------------

    def _checkpoint(self, rng_states: list[dict]) -> dict:
        return {
            "format": CHECKPOINT_FORMAT,
            "epoch": self.epoch, "step": self.step,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "best": {"metric": self.monitor, "value": self.best_value, "epoch": self.best_epoch},
            "rng": rng_states,
            "config": json.dumps(self.cfg.to_dict()),
            "classes": self.classes,
        }

    def _resume(self) -> None:
        path = self.output / "checkpoint.pt"
        if not path.is_file():
            raise FileNotFoundError(f"--resume: no checkpoint at {path} (train.output={self.cfg.output})")
        ckpt = load_checkpoint_file(path)
        if ckpt.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"{path} is not a training checkpoint of this version ({CHECKPOINT_FORMAT})")
        saved, current = _flatten(json.loads(ckpt["config"])), _flatten(self.cfg.to_dict())
        changed = sorted(k for k in set(saved) | set(current)
                         if saved.get(k) != current.get(k) and k not in RESUMABLE_CHANGES)
        if changed:
            raise ConfigError(f"--resume: the configuration differs from the one {path} was trained with in "
                              + ", ".join(f"{k} ({saved.get(k)!r} -> {current.get(k)!r})" for k in changed))
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.scaler.load_state_dict(ckpt["scaler"])
        if self.ema is not None:
            self.ema.load_state_dict(ckpt["ema"])
        self.epoch, self.step = int(ckpt["epoch"]), int(ckpt["step"])
        self.best_value, self.best_epoch = ckpt["best"]["value"], ckpt["best"]["epoch"]
        states = ckpt["rng"]
        if len(states) != self.ctx.world_size:
            raise ValueError(f"{path} was written by {len(states)} process(es); resume it with the same number "
                             f"(now {self.ctx.world_size}) to continue exactly")
        set_rng_state(states[self.ctx.rank])
        if self.ctx.is_main:
            self._truncate_log(self.epoch)
        self._print(f"resumed from {path} at epoch {self.epoch}, step {self.step}")

    def _truncate_log(self, epochs: int) -> None:
        """Drop log lines of epochs after the checkpoint (written before a kill, redone now)."""
        log = self.output / "metrics.jsonl"
        if log.is_file():
            kept = [line for line in log.read_text().splitlines() if line and json.loads(line)["epoch"] <= epochs]
            log.write_text("".join(line + "\n" for line in kept))

    # -- one epoch ----------------------------------------------------------------------------------------------------

    def _loader(self, dataset, sampler, batch_size: int, drop_last: bool, epoch: int = 0) -> DataLoader:
        # The generator fixes the worker seeds per epoch (and leaves the global generator alone), so loading with
        # workers is reproducible and resumable too.
        return DataLoader(dataset, batch_size=batch_size, sampler=sampler, drop_last=drop_last,
                          num_workers=self.cfg.data.workers, pin_memory=self.ctx.device.type == "cuda",
                          generator=torch.Generator().manual_seed(self.cfg.seed * 7919 + epoch))

    def _progress(self, iterable, total: int, desc: str):
        mode = self.cfg.train.progress
        if not self.ctx.is_main or mode == "off" or (mode == "auto" and not sys.stderr.isatty()):
            return iterable
        try:
            from tqdm import tqdm
        except ImportError:
            if mode == "on":
                print("train.progress=on: tqdm is not installed (pip install tqdm); no progress bar", flush=True)
            return iterable
        return tqdm(iterable, total=total, desc=desc, leave=False, dynamic_ncols=True)

    def _backward(self, images: torch.Tensor, targets: torch.Tensor, weight: float, sync: bool):
        """Forward and backward of one micro-batch, its loss scaled by ``weight``; gradients are all-reduced across
        ranks only when ``sync`` (the last micro-batch before an optimiser step)."""
        no_sync = self.net.no_sync() if self.ctx.distributed and not sync else contextlib.nullcontext()
        with no_sync:
            with ev.precision_context(self.ctx.device, self.cfg.train.precision):
                out = self.net(images)
            loss = self.loss_fn(out.float(), targets)
            self.scaler.scale(loss * weight).backward()
        return loss.detach(), out.detach()

    def _clip(self) -> None:
        if self.cfg.optim.clip_grad:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.optim.clip_grad)

    def _optimizer_step(self, group: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        self._clip()
        if isinstance(self.optimizer, SAM):
            def closure() -> torch.Tensor:
                self.optimizer.zero_grad(set_to_none=True)
                losses = [self._backward(x, y, 1 / len(group), sync=j == len(group) - 1)[0]
                          for j, (x, y) in enumerate(group)]
                self._clip()
                return torch.stack(losses).mean()

            self.optimizer.step(closure)
        else:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        if self.ema is not None:
            self.ema.update(self.model)
        self.step += 1

    def _train_epoch(self) -> dict:
        cfg, device = self.cfg, self.ctx.device
        self.net.train()
        self.sampler.set_epoch(self.epoch)
        loader = self._loader(self.train_set, self.sampler, cfg.data.batch_size, self.drop_last, self.epoch)
        n, accumulate = len(loader), cfg.optim.accumulate
        loss_sum, correct, count = 0.0, 0.0, 0
        group: list[tuple[torch.Tensor, torch.Tensor]] = []
        start = time.perf_counter()
        bar = self._progress(loader, n, f"epoch {self.epoch + 1}/{cfg.train.epochs}")
        for i, (images, targets) in enumerate(bar):
            images, targets = images.to(device, non_blocking=True), targets.to(device, non_blocking=True)
            group.append((images, targets))
            group_size = min(accumulate, n - (i // accumulate) * accumulate)
            last = len(group) == group_size
            loss, out = self._backward(images, targets, 1 / group_size, sync=last)
            if last:
                self._optimizer_step(group)
                group = []
            loss_sum += float(loss) * images.shape[0]
            count += images.shape[0]
            if self.task == "classification":
                hard = targets.argmax(1) if targets.is_floating_point() else targets
                correct += float((out.argmax(1) == hard).sum())
            if hasattr(bar, "set_postfix"):
                bar.set_postfix(loss=f"{float(loss):.4f}")
        seconds = time.perf_counter() - start
        loss_sum, correct, count = dist.all_reduce_sum(self.ctx, torch.tensor([loss_sum, correct, count])).tolist()
        metrics = {"loss": loss_sum / count, "images_per_s": count / seconds, "seconds": seconds}
        if self.task == "classification":
            metrics["top1"] = correct / count
        return metrics

    def evaluate_split(self, dataset) -> dict:
        """Metrics of :attr:`eval_model` on ``dataset`` (sharded over ranks, summed)."""
        if self.task == "classification":
            meter = ev.ClassificationMeter(dataset.classes)
            columns = ev.output_columns(self.classes, dataset.classes)
        else:
            meter, columns = ev.DepthMeter(self.cfg.loss.min_depth, self.cfg.loss.max_depth), None
        sampler = dist.ShardSampler(len(dataset), self.ctx.rank, self.ctx.world_size)
        loader = self._loader(dataset, sampler, self.cfg.data.eval_batch_size or self.cfg.data.batch_size, False)
        ev.run_evaluation(self.eval_model, loader, meter, self.ctx.device, self.cfg.train.precision,
                          self.eval_loss_fn, columns)
        return meter.compute(dist.all_reduce_sum(self.ctx, meter.totals()))

    # -- logging ------------------------------------------------------------------------------------------------------

    def _log(self, record: dict) -> None:
        if not self.ctx.is_main:
            return
        with open(self.output / "metrics.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
        if self.writer is not None:
            for section in ("train", "val"):
                for key, value in (record.get(section) or {}).items():
                    self.writer.add_scalar(f"{section}/{key}", value, record["epoch"])
            self.writer.add_scalar("lr", record["lr"], record["epoch"])
            self.writer.flush()
        train, val = record["train"], record.get("val") or {}
        text = f"epoch {record['epoch']}/{self.cfg.train.epochs}  lr {record['lr']:.3g}  loss {train['loss']:.4f}"
        if "top1" in train:
            text += f"  train top1 {100 * train['top1']:.1f}%"
        if val:
            shown = ("top1", "macro_f1") if self.task == "classification" else ("abs_rel", "rmse", "d1")
            text += "  val " + "  ".join(f"{k} {val[k]:.4f}" for k in shown)
        text += f"  {train['seconds']:.1f}s"
        if record.get("best"):
            text += "  *"
        self._print(text)

    def _open_tensorboard(self) -> None:
        if self.cfg.train.tensorboard and self.ctx.is_main:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as exc:
                raise ImportError("train.tensorboard=true needs the tensorboard package: pip install tensorboard") \
                    from exc
            self.writer = SummaryWriter(str(self.output / "tensorboard"))  # creates the output folder

    # -- the run ------------------------------------------------------------------------------------------------------

    def fit(self, resume: bool = False) -> dict:
        """Train (or, with ``resume``, continue from ``output/checkpoint.pt``), test and export; returns the summary
        written to ``results.json``."""
        self.ctx = dist.setup(self.cfg.train.device)
        try:
            self._setup()
            self._open_tensorboard()
            if self.ctx.is_main:
                self.output.mkdir(parents=True, exist_ok=True)
                if not resume and (self.output / "checkpoint.pt").is_file():
                    self._print(f"{self.output} holds a checkpoint: starting afresh over it (--resume continues it)")
                if not resume:
                    (self.output / "metrics.jsonl").unlink(missing_ok=True)
                (self.output / "train_config.json").write_text(json.dumps(self.cfg.to_dict(), indent=1) + "\n")
            if resume:
                self._resume()
            self._print(self._describe())
            while self.epoch < self.cfg.train.epochs:
                self._run_epoch()
            return self._finish()
        finally:
            if self.writer is not None:
                self.writer.close()
            dist.teardown(self.ctx)

    def _describe(self) -> str:
        n_params = sum(p.numel() for p in self.model.parameters())
        sizes = f"train {len(self.train_set)}" + (f", val {len(self.val_set)}" if self.val_set is not None else "") \
            + (f", test {len(self.test_set)}" if self.test_set is not None else "")
        return (f"{self.cfg.model.name} ({n_params / 1e6:.2f}M parameters) on {self.cfg.data.name} ({sizes}), "
                f"{self.cfg.train.epochs} epochs x {self.steps_per_epoch} steps, {self.ctx.world_size} process(es) on "
                f"{self.ctx.device}, precision {self.cfg.train.precision}, output {self.output}")

    def _run_epoch(self) -> None:
        train = self._train_epoch()
        val = self.evaluate_split(self.val_set) if self.val_set is not None else None
        self.epoch += 1
        record = {"epoch": self.epoch, "step": self.step, "lr": self.optimizer.param_groups[0]["lr"],
                  "train": train, "val": _scalars(val) if val is not None else None}
        if val is not None:
            value, best = val[self.monitor], self.best_value
            if best is None or (value < best if self.lower_is_better else value > best):
                self.best_value, self.best_epoch = value, self.epoch
                record["best"] = True
                if self.ctx.is_main:
                    atomic_save(self.eval_model.state_dict(), self.output / "best.pt")
        self._log(record)
        rng_states = dist.all_gather_objects(self.ctx, get_rng_state())
        if self.ctx.is_main:
            atomic_save(self._checkpoint(rng_states), self.output / "checkpoint.pt")
        dist.barrier(self.ctx)
        for callback in self.callbacks:
            callback(self, record)

    def _finish(self) -> dict:
        """Load the exported weights, test them, export the model folder and write ``results.json``."""
        cfg = self.cfg
        if cfg.train.export == "best" and self.best_epoch is not None:
            self.eval_model.load_state_dict(load_checkpoint_file(self.output / "best.pt"))
        selected = self.best_epoch if cfg.train.export == "best" else self.epoch
        test = self.evaluate_split(self.test_set) if self.test_set is not None else None
        summary = {"epochs": self.epoch, "steps": self.step, "exported": cfg.train.export, "exported_epoch": selected,
                   "monitor": self.monitor, "best_value": self.best_value, "best_epoch": self.best_epoch,
                   "test_split": cfg.data.test_split, "test": test}
        if self.ctx.is_main:
            seconds = sum(json.loads(line)["train"]["seconds"]
                          for line in (self.output / "metrics.jsonl").read_text().splitlines() if line)
            summary["train_seconds"] = seconds
            if test is not None and self.task == "classification":
                ev.save_classification_report(test, self.output)
            summary["model_dir"] = self._export(test, selected, seconds)
            (self.output / "results.json").write_text(json.dumps(summary, indent=1) + "\n")
            where = f"; model in {summary['model_dir']}" if summary["model_dir"] else ""
            self._print(f"done: {self._headline(test)}{where}")
        dist.barrier(self.ctx)
        return summary

    def _headline(self, test: dict | None) -> str:
        if test is None:
            return "no test split"
        if self.task == "classification":
            return f"test top1 {100 * test['top1']:.2f}%, macro-F1 {100 * test['macro_f1']:.2f}%"
        return f"test abs_rel {test['abs_rel']:.4f}, rmse {test['rmse']:.4f} m, d1 {test['d1']:.4f}"

    def _export(self, test: dict | None, epoch: int | None, seconds: float) -> str | None:
        """Save the exported weights as a hub folder ``output/model`` with the measured metrics in its card."""
        model = self.eval_model
        if not hasattr(model, "save_pretrained"):
            self._print(f"not exported: {type(model).__name__} is not a hub model (no save_pretrained); the weights "
                        f"are in {self.output / 'best.pt'} and checkpoint.pt")
            return None
        cfg, p = self.cfg, self.prep
        results = []
        if test is not None:
            names = ({"top1": "top-1 accuracy (%)", "top3": "top-3 accuracy (%)", "macro_f1": "macro-F1 (%)"}
                     if self.task == "classification" else {n: n for n in METRIC_NAMES})
            for key, label in names.items():
                value = 100 * test[key] if self.task == "classification" else test[key]
                results.append({"dataset": cfg.data.name, "split": cfg.data.test_split, "metric": label,
                                "value": round(value, 4), "source": "measured by rwkv-vision train"})
        args = ", ".join(f"{k}={v}" for k, v in cfg.data.args.items())
        training = (f"Trained with `rwkv-vision train` on {cfg.data.name} ({args}), split {cfg.data.train_split!r} "
                    f"({len(self.train_set)} samples); tested on split {cfg.data.test_split!r}. {self.epoch} epochs, "
                    f"{cfg.optim.name}{' + SAM' if cfg.optim.sam_rho else ''} lr {cfg.optim.lr}, {cfg.schedule.name} "
                    f"schedule, batch {cfg.data.batch_size} x {cfg.optim.accumulate} x {self.ctx.world_size}, "
                    f"precision {cfg.train.precision}, seed {cfg.seed}; exported the {cfg.train.export} weights "
                    f"(epoch {epoch}){' (EMA)' if self.ema is not None else ''}; "
                    f"{seconds / 60:.1f} min of training on {self.ctx.device}.")
        previous = getattr(model, "pretrained_cfg", None) or {}
        base, start = cfg.model.checkpoint, cfg.model.pretrained
        if start is True:
            base = previous.get("hf_hub_id")
        elif start:
            base = start.removeprefix("hf-hub:").removeprefix("hf_hub:").partition("@")[0]
        model.pretrained_cfg = {
            # where the initial weights came from and what they scored no longer describe these weights
            **{k: v for k, v in previous.items() if k not in SOURCE_FIELDS},
            "base_model": base,
            "task": HUB_TASKS[self.task], "input_size": (3, *p["input_size"]), "interpolation": p["interpolation"],
            "crop_pct": p["crop_pct"], "crop_mode": "center", "mean": p["mean"], "std": p["std"],
            "label_names": self.classes, "num_classes": len(self.classes) if self.classes else None,
            "datasets": [cfg.data.name], "results": results, "training": training,
            "license": cfg.card.license, "notes": list(cfg.card.notes),
        }
        directory = self.output / "model"
        model.save_pretrained(directory)
        return str(directory)
