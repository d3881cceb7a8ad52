"""Optimisers, SAM, learning-rate schedules and the weight EMA.

* :func:`build_optimizer`: AdamW, Adam or SGD over two parameter groups (with and without weight decay), optionally
  wrapped in :class:`SAM`.
* :func:`build_scheduler`: per-step cosine with linear warm-up, one-cycle, per-epoch exponential, or constant.
* :class:`ModelEMA`: exponential moving average of a model's weights.

Label smoothing is ``torch.nn.CrossEntropyLoss(label_smoothing=...)`` and gradient clipping
``torch.nn.utils.clip_grad_norm_``, both applied by the trainer.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable

import torch
import torch.nn as nn

from .config import OptimConfig, ScheduleConfig

__all__ = ["SAM", "ModelEMA", "build_optimizer", "build_scheduler", "param_groups"]

_OPTIMIZERS = {"adamw": torch.optim.AdamW, "adam": torch.optim.Adam, "sgd": torch.optim.SGD}


class SAM(torch.optim.Optimizer):
    """Sharpness-Aware Minimisation (Foret et al., ICLR 2021) around any base optimiser; ``adaptive``: ASAM (Kwon et
    al. 2021), the perturbation scaled per weight by |w|.

    Each step needs the loss twice: ``step(closure)`` takes the gradients already computed at w, moves to
    w + e(w) with e = rho g / ||g|| (the sharpest nearby point), calls ``closure`` (which must zero the gradients,
    recompute the loss and call backward), moves back to w and lets the base optimiser step with the gradients from
    w + e(w). ``param_groups`` are the base optimiser's (schedulers act on both); ``state_dict`` is the base
    optimiser's.
    """

    def __init__(self, params: Iterable, base_optimizer: type[torch.optim.Optimizer], rho: float = 0.05,
                 adaptive: bool = False, **kwargs):
        if rho <= 0:
            raise ValueError(f"SAM: rho must be > 0; got {rho}")
        super().__init__(params, dict(rho=rho, adaptive=adaptive, **kwargs))
        self.base_optimizer = base_optimizer(self.param_groups, **kwargs)
        self.param_groups = self.base_optimizer.param_groups
        self.defaults.update(self.base_optimizer.defaults)
        self._perturbation: dict[torch.Tensor, torch.Tensor] = {}

    @torch.no_grad()
    def _grad_norm(self) -> torch.Tensor:
        norms = [((p.abs() if group["adaptive"] else 1.0) * p.grad).norm(2)
                 for group in self.param_groups for p in group["params"] if p.grad is not None]
        if not norms:
            raise RuntimeError("SAM.step: no parameter has a gradient; call backward before step")
        return torch.stack(norms).norm(2)

    @torch.no_grad()
    def first_step(self) -> None:
        """w -> w + e(w), from the current gradients."""
        norm = self._grad_norm()
        for group in self.param_groups:
            scale = group["rho"] / (norm + 1e-12)
            for p in group["params"]:
                if p.grad is None:
                    continue
                e = (p * p if group["adaptive"] else 1.0) * p.grad * scale.to(p.dtype)
                p.add_(e)
                self._perturbation[p] = e

    @torch.no_grad()
    def second_step(self) -> None:
        """Back to w, then the base optimiser's step with the current (perturbed-point) gradients."""
        for p, e in self._perturbation.items():
            p.sub_(e)
        self._perturbation.clear()
        self.base_optimizer.step()

    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor:
        if closure is None:
            raise RuntimeError("SAM.step needs a closure that zeroes the gradients, recomputes the loss and calls "
                               "backward")
        self.first_step()
        with torch.enable_grad():
            loss = closure()
        self.second_step()
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.base_optimizer.zero_grad(set_to_none)

    def state_dict(self) -> dict:
        return self.base_optimizer.state_dict()

    def load_state_dict(self, state_dict: dict) -> None:
        self.base_optimizer.load_state_dict(state_dict)
        self.param_groups = self.base_optimizer.param_groups


def param_groups(model: nn.Module, weight_decay: float, decay_1d: bool = False) -> list[dict]:
    """Two groups: weights with ``weight_decay``, and (unless ``decay_1d``) biases, norm scales, other 1-D
    parameters and position embeddings without it (decaying those only shrinks the model's offsets and scales)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        exempt = not decay_1d and (p.ndim <= 1 or name.endswith("pos_embed") or name.endswith("cls_token"))
        (no_decay if exempt else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def build_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    """The optimiser of ``cfg`` over ``model``'s trainable parameters (SAM-wrapped if ``cfg.sam_rho`` > 0)."""
    cls = _OPTIMIZERS[cfg.name]
    kwargs = {"lr": cfg.lr}
    if cfg.name == "sgd":
        kwargs.update(momentum=cfg.momentum, nesterov=cfg.nesterov)
    else:
        kwargs["betas"] = tuple(cfg.betas)
    groups = param_groups(model, cfg.weight_decay, cfg.decay_1d)
    if not groups:
        raise ValueError(f"{type(model).__name__} has no trainable parameter")
    if cfg.sam_rho > 0:
        return SAM(groups, cls, rho=cfg.sam_rho, adaptive=cfg.sam_adaptive, **kwargs)
    return cls(groups, **kwargs)


class _StepSchedule:
    """Learning-rate factor (multiplier of the base lr) at optimiser step ``step``; see :func:`build_scheduler`."""

    def __init__(self, cfg: ScheduleConfig, base_lr: float, total_steps: int, steps_per_epoch: int):
        self.name, self.min_factor = cfg.name, cfg.min_lr / base_lr
        self.warmup = min(round(cfg.warmup_epochs * steps_per_epoch), total_steps - 1)
        self.warmup_factor, self.gamma = cfg.warmup_factor, cfg.gamma
        self.total, self.steps_per_epoch = total_steps, steps_per_epoch

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return self.warmup_factor + (1 - self.warmup_factor) * step / self.warmup
        if self.name == "cosine":
            progress = min((step - self.warmup) / max(1, self.total - self.warmup), 1.0)
            return self.min_factor + (1 - self.min_factor) * 0.5 * (1 + math.cos(math.pi * progress))
        if self.name == "exponential":
            return self.gamma ** ((step - self.warmup) // self.steps_per_epoch)
        return 1.0


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: ScheduleConfig, base_lr: float, epochs: int,
                    steps_per_epoch: int) -> torch.optim.lr_scheduler.LRScheduler:
    """A scheduler stepped once per optimiser step (``epochs * steps_per_epoch`` steps in all).

    cosine: linear warm-up from ``warmup_factor`` x lr over ``warmup_epochs``, then half a cosine down to
    ``min_lr``; exponential: lr x gamma^epoch after the warm-up (POSTER V2's ExponentialLR stepped per epoch);
    constant: lr after the warm-up; onecycle: ``torch.optim.lr_scheduler.OneCycleLR`` with peak ``base_lr``.
    """
    total = epochs * steps_per_epoch
    if cfg.name == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=base_lr, total_steps=total,
                                                   pct_start=cfg.pct_start)
    # LambdaLR keeps no state of the function itself: the schedule is rebuilt from the config on resume
    fn = _StepSchedule(cfg, base_lr, total, steps_per_epoch)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: fn(step))


class ModelEMA:
    """Exponential moving average of a model's parameters and float buffers (integer buffers are copied).

    ema = d ema + (1 - d) w after each optimiser step, with d = min(decay, (1 + n) / (10 + n)) at update n, so early
    averages are not dominated by the random initialisation. ``module`` is the averaged copy, in eval mode, without
    gradients.
    """

    def __init__(self, model: nn.Module, decay: float):
        if not 0 < decay < 1:
            raise ValueError(f"ModelEMA: decay must be in (0, 1); got {decay}")
        self.module = copy.deepcopy(model).eval().requires_grad_(False)
        self.decay, self.updates = decay, 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        current = model.state_dict()
        for name, averaged in self.module.state_dict().items():
            value = current[name].detach()
            if averaged.dtype.is_floating_point:
                averaged.lerp_(value.to(averaged.dtype), 1 - d)
            else:
                averaged.copy_(value)

    def state_dict(self) -> dict:
        return {"module": self.module.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state["module"])
        self.updates = int(state["updates"])
