"""torch.distributed set-up for training: detect a torchrun launch and pick the process's device.

Under ``torchrun`` (environment ``WORLD_SIZE`` > 1) the process group is initialised from the
environment (gloo on CPU, nccl on CUDA, one GPU per process by ``LOCAL_RANK``); otherwise training
runs in one process and nothing is initialised.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from accel_shared.cli import resolve_device

__all__ = ["DistContext", "all_reduce_mean", "setup_distributed", "teardown_distributed"]


@dataclass
class DistContext:
    """Where this process stands: rank / world size, its device, and whether it initialised the group."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    owns_group: bool = False

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup_distributed(device: str = "auto") -> DistContext:
    """Initialise torch.distributed when launched with WORLD_SIZE > 1 (reusing a group already set up).

    ``device``: "auto", "cpu", "cuda" or "cuda:N" (see :func:`accel_shared.cli.resolve_device`); in a
    distributed CUDA run, "auto" and "cuda" mean cuda:LOCAL_RANK.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if dist.is_available() and dist.is_initialized():
        world_size = dist.get_world_size()
    if world_size <= 1:
        return DistContext(0, 1, 0, resolve_device(device))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    resolved = resolve_device(device)
    if resolved.type == "cuda" and device in ("auto", "cuda"):
        resolved = torch.device("cuda", local_rank)
    owns = False
    if not dist.is_initialized():
        if resolved.type == "cuda":
            torch.cuda.set_device(resolved)
        dist.init_process_group(backend="nccl" if resolved.type == "cuda" else "gloo")
        owns = True
    return DistContext(dist.get_rank(), dist.get_world_size(), local_rank, resolved, owns)


def teardown_distributed(ctx: DistContext) -> None:
    """Destroy the process group if :func:`setup_distributed` created it."""
    if ctx.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_mean(values: dict[str, float], ctx: DistContext) -> dict[str, float]:
    """Average scalar logs over the ranks (every rank must call it); identity in one process."""
    if not ctx.distributed or not values:
        return values
    keys = sorted(values)
    tensor = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=ctx.device)
    dist.all_reduce(tensor)
    return {k: float(v) / ctx.world_size for k, v in zip(keys, tensor.tolist(), strict=True)}


def launched_rank() -> int:
    """This process's rank under torchrun (``RANK``), 0 in a plain run: code after :func:`train`
    that reports or writes files runs only where this is 0."""
    return int(os.environ.get("RANK", "0"))
