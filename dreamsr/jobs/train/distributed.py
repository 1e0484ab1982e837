"""Several training processes (DDP under torchrun or ``python -m dreamsr.launch``), or one: the same interface.

The global batch is split over the ranks by sample index (see :mod:`dreamsr.jobs.train`); rank 0 alone writes the
run folder. Every collective here is a no-op in a single process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from torch import nn

from dreamsr.runtime import resolve_device

__all__ = ["Dist", "init_distributed", "TrainNet"]


@dataclass
class Dist:
    """This process's place in the process group (world 1: no group)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    owns_group: bool = False  # this process created the group (and destroys it in close())

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    def device(self, name: str) -> torch.device:
        """The training device for ``--device name``: under DDP on CUDA, this rank's GPU (cuda:LOCAL_RANK)."""
        if self.enabled and name in ("auto", "cuda") and torch.cuda.is_available():
            return torch.device("cuda", self.local_rank)
        return resolve_device(name)

    def mean(self, value: torch.Tensor) -> torch.Tensor:
        """The mean of a tensor over the ranks (a copy; ``value`` itself in a single process)."""
        if not self.enabled:
            return value
        import torch.distributed as dist

        value = value.clone()
        dist.all_reduce(value)
        value /= self.world
        return value

    def any(self, flag: bool, device: torch.device) -> bool:
        """True on every rank when ``flag`` is True on any rank (a stop asked on one rank stops all)."""
        if not self.enabled:
            return flag
        import torch.distributed as dist

        t = torch.tensor([1.0 if flag else 0.0], device=device)
        dist.all_reduce(t)
        return bool(t.item() > 0)

    def barrier(self) -> None:
        if self.enabled:
            import torch.distributed as dist

            dist.barrier()

    def wrap(self, model: nn.Module, device: torch.device) -> nn.Module:
        """``model`` under DistributedDataParallel (gradients averaged over the ranks), or as it is."""
        if not self.enabled:
            return model
        import inspect

        from torch.nn.parallel import DistributedDataParallel as DDP

        # No buffer sync before each forward: the buffers (e.g. Swin attention masks) are the same on every rank.
        # torch >= 2.14 spells this forward_sync_buffers and warns on the older broadcast_buffers.
        sync = "forward_sync_buffers" if "forward_sync_buffers" in inspect.signature(DDP).parameters \
            else "broadcast_buffers"
        return DDP(model, device_ids=[device.index] if device.type == "cuda" else None, **{sync: False})

    def close(self) -> None:
        """Leave the process group if this process created it."""
        if self.owns_group:
            import torch.distributed as dist

            dist.destroy_process_group()


def init_distributed(device_name: str) -> Dist:
    """Join the process group described by torchrun's environment (WORLD_SIZE > 1), else single process."""
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    owns = False
    if not dist.is_initialized():
        use_nccl = torch.cuda.is_available() and device_name in ("auto", "cuda") or device_name.startswith("cuda")
        if use_nccl:
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend="nccl" if use_nccl else "gloo", init_method="env://")
        owns = True
    return Dist(rank=dist.get_rank(), world=dist.get_world_size(), local_rank=local_rank, owns_group=owns)


class TrainNet:
    """The network as the process's loss sees it, ``net(y_t, cond, level)``: the DDP wrapper when gradients
    flow, the bare module otherwise (DREAM's first pass runs without gradients and must not touch DDP)."""

    def __init__(self, module: nn.Module, wrapped: nn.Module, channels_last: bool) -> None:
        self.module, self.wrapped, self.channels_last = module, wrapped, channels_last

    @property
    def training(self) -> bool:
        return self.module.training

    def train(self, mode: bool = True) -> "TrainNet":
        self.module.train(mode)
        return self

    def __call__(self, y_t: torch.Tensor, cond: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            y_t = y_t.contiguous(memory_format=torch.channels_last)
        net = self.wrapped if torch.is_grad_enabled() else self.module
        return net(y_t, cond, level)
