"""Distributed data parallel support: process-group set-up from ``torchrun``'s environment, samplers and reductions.

Launch with ``torchrun --nproc_per_node=N -m rwkv_vision.cli train --config FILE`` (or ``--nnodes``/``--node_rank``
and a rendezvous endpoint for several machines). ``torchrun`` sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR`` and ``MASTER_PORT``; :func:`setup` reads them and joins the group with NCCL on CUDA, gloo on CPU.
Rank 0 logs and writes files; metrics are summed over ranks with :func:`all_reduce_sum`.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.utils.data import Sampler

__all__ = ["DistContext", "ShardSampler", "TrainSampler", "all_gather_objects", "all_reduce_sum", "barrier",
           "setup", "teardown"]


@dataclass
class DistContext:
    """This process's place in the job: ``rank`` of ``world_size`` (0 of 1 when not distributed), its
    ``device``, and whether :func:`setup` created the process group (and :func:`teardown` must destroy it)."""
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    owns_group: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def _pick_device(device: str, local_rank: int) -> torch.device:
    if device == "auto":
        return torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    chosen = torch.device(device)
    if chosen.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {device!r} requested but CUDA is not available")
    if chosen.type == "cuda" and chosen.index is None:
        chosen = torch.device("cuda", local_rank)
    return chosen


def setup(device: str = "auto") -> DistContext:
    """Join the process group described by the environment (``WORLD_SIZE`` > 1), or run alone.

    ``device``: "auto" (``cuda:LOCAL_RANK`` if CUDA is available, else CPU), "cpu", "cuda" (``cuda:LOCAL_RANK``) or
    an explicit device.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    chosen = _pick_device(device, local_rank)
    if chosen.type == "cuda":
        torch.cuda.set_device(chosen)
    if world_size == 1:
        return DistContext(device=chosen)
    owns = not dist.is_initialized()
    if owns:
        dist.init_process_group("nccl" if chosen.type == "cuda" else "gloo", init_method="env://",
                                rank=rank, world_size=world_size)
    return DistContext(rank, world_size, local_rank, chosen, owns)


def teardown(ctx: DistContext) -> None:
    if ctx.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def barrier(ctx: DistContext) -> None:
    if ctx.distributed:
        dist.barrier()


def all_reduce_sum(ctx: DistContext, values: torch.Tensor) -> torch.Tensor:
    """Element-wise sum of ``values`` over all ranks, returned as float64 on the CPU."""
    if not ctx.distributed:
        return values.detach().to("cpu", torch.float64)
    # gloo and NCCL both reduce a tensor on the process's device
    reduced = values.to(ctx.device, torch.float64).clone()
    dist.all_reduce(reduced, op=dist.ReduceOp.SUM)
    return reduced.cpu()


def all_gather_objects(ctx: DistContext, obj) -> list:
    """``obj`` from every rank, in rank order (in-process pickling only; nothing is read from files)."""
    if not ctx.distributed:
        return [obj]
    gathered = [None] * ctx.world_size
    dist.all_gather_object(gathered, obj)
    return gathered


class TrainSampler(Sampler[int]):
    """Training order for one epoch, the same on every rank and reproducible: a permutation (or, with ``weights``,
    ``len(weights)`` draws with replacement proportional to them: the class-balanced sampler) from a generator
    seeded with (seed, epoch); padded by wrapping around to a multiple of ``world_size``, then rank r takes every
    ``world_size``-th index from r. Call :meth:`set_epoch` before each epoch."""

    def __init__(self, num_samples: int, seed: int, weights: torch.Tensor | None = None, rank: int = 0,
                 world_size: int = 1):
        if num_samples < 1:
            raise ValueError("TrainSampler: the data set is empty")
        if weights is not None and (weights.numel() != num_samples or (weights < 0).any() or weights.sum() <= 0):
            raise ValueError(f"TrainSampler: need {num_samples} non-negative weights with a positive sum")
        self.num_samples, self.seed, self.weights = num_samples, seed, weights
        self.rank, self.world_size, self.epoch = rank, world_size, 0
        self.per_rank = math.ceil(num_samples / world_size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 100003 + self.epoch)
        if self.weights is None:
            order = torch.randperm(self.num_samples, generator=g)
        else:
            order = torch.multinomial(self.weights.double(), self.num_samples, replacement=True, generator=g)
        total = self.per_rank * self.world_size
        order = order.repeat(math.ceil(total / self.num_samples))[:total]
        return iter(order[self.rank::self.world_size].tolist())

    def __len__(self) -> int:
        return self.per_rank


class ShardSampler(Sampler[int]):
    """Evaluation: rank r reads indices r, r + world_size, ... in order. No padding, so every sample is scored exactly
    once over all ranks and summed metrics are exact."""

    def __init__(self, num_samples: int, rank: int = 0, world_size: int = 1):
        self.indices = range(rank, num_samples, world_size)

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)
