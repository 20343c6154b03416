"""Data parallelism for distillation across processes (torch.distributed, launched with ``torchrun``).

Each process takes its share of every global batch, back-propagates it, and the gradients are summed across
processes before the optimizer step, so every process holds the same parameters, and those equal one
process's on the same global batch (up to float summation order). Rank 0 alone writes files and draws the
progress bar. A process group the caller set up is used as it is; otherwise ``torchrun``'s environment
(``WORLD_SIZE`` > 1) starts one: gloo on CPU, NCCL on CUDA.
"""
from __future__ import annotations

import dataclasses
import os

import torch
import torch.distributed as dist

from ..errors import UsageError


@dataclasses.dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def all_reduce_sum_(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.size > 1:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def sum_gradients_(self, params: list[torch.nn.Parameter]) -> None:
        """Sum every parameter's gradient over the processes (one flat all-reduce; a missing grad is zero)."""
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        if self.size == 1 or not params:
            return
        flat = torch.cat([p.grad.reshape(-1) for p in params])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        offset = 0
        for p in params:
            p.grad.copy_(flat[offset:offset + p.numel()].view_as(p))
            offset += p.numel()

    def broadcast_(self, tensors: list[torch.Tensor]) -> None:
        """Every process takes rank 0's values (start from one set of parameters whatever each one built)."""
        if self.size > 1:
            for t in tensors:
                dist.broadcast(t.data, src=0)

    def barrier(self) -> None:
        if self.size > 1:
            dist.barrier()


def world_for(device: torch.device) -> World:
    """The current process group, or one started from torchrun's environment, or a single process."""
    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size())
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World()
    if not dist.is_available():
        raise UsageError("WORLD_SIZE is set but this torch build has no torch.distributed; run one process")
    dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return World(dist.get_rank(), dist.get_world_size())


def device_for(device: str | torch.device) -> torch.device:
    """``device`` checked: "cpu", or "cuda" (each torchrun process on its LOCAL_RANK's GPU) where CUDA is."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise UsageError(f"unknown device {device!r}; use 'cpu' or 'cuda'") from None
    if dev.type not in ("cpu", "cuda"):
        raise UsageError(f"distillation runs on 'cpu' or 'cuda', not {device!r}")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
            raise UsageError(f"device='cuda' but torch sees no CUDA GPU (torch {torch.__version__}, {build}); "
                             "use device='cpu', or install a CUDA build of torch on a machine with a GPU")
        if dev.index is None:
            dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(dev)
    return dev
