"""Processes under torchrun: who am I, which slice of the global batch is mine, and the
gradient all-reduce that makes every process take the same update.

Gradients are summed with one all-reduce per parameter group after backward (data
parallel, as DDP does, but explicit): a training step runs many forwards of the same
network (a rollout is one per denoising step and block), which DDP's one-forward-per-step
bookkeeping does not fit. gloo on CPU, NCCL on GPU. One process needs no launcher.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

import torch
import torch.distributed as dist


class Processes:
    def __init__(self, device: torch.device) -> None:
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.started = False
        if self.world > 1 and not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
            self.started = True

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def positions(self, global_batch: int) -> range:
        """This process's positions in the global batch."""
        if global_batch % self.world:
            raise ValueError(f"the global batch ({global_batch}) must divide among {self.world} processes")
        per = global_batch // self.world
        return range(self.rank * per, (self.rank + 1) * per)

    def sum_gradients(self, params: Iterable[torch.nn.Parameter]) -> None:
        if self.world == 1:
            return
        grads = [p.grad for p in params if p.grad is not None]
        if not grads:
            return
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        offset = 0
        for g in grads:
            g.copy_(flat[offset : offset + g.numel()].view_as(g))
            offset += g.numel()

    def mean(self, value: float) -> float:
        if self.world == 1:
            return value
        t = torch.tensor([value], dtype=torch.float64)
        dist.all_reduce(t)
        return float(t) / self.world

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def close(self) -> None:
        if self.started:
            dist.destroy_process_group()
