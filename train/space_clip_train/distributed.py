"""The processes of a run: one, or many under torchrun (DistributedDataParallel over NCCL on GPUs, gloo on CPUs)."""

from __future__ import annotations

import os
from typing import Any, List

import torch
import torch.distributed as dist

from space_clip_ros.device import resolve_device


class Process:
    """Rank, world size and device; DistributedDataParallel when started by torchrun."""

    def __init__(self, device_spec: str):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.local_world = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))  # processes on this machine
        self.distributed = self.world > 1
        device = resolve_device(device_spec)  # indexed: set_device and DDP's device_ids need the index
        if device.type == "cuda" and self.distributed:
            device = torch.device("cuda", self.local_rank)  # torchrun: one GPU per process, by its local rank
        if device.type == "cuda":
            torch.cuda.set_device(device)
        self.device = device
        self.host_group = None  # host values (counts of skipped lines) are summed over gloo: no device involved
        if self.distributed:
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
            if device.type == "cuda":
                self.host_group = dist.new_group(backend="gloo")

    @property
    def main(self) -> bool:
        return self.rank == 0

    def log(self, text: str) -> None:
        if self.main:
            print(text, flush=True)

    def all_sum(self, values: List[float]) -> List[float]:
        """Host numbers summed over the processes, on the host (over gloo under NCCL: the GPU is not waited for)."""
        if not self.distributed:
            return values
        t = torch.tensor(values, dtype=torch.float64)
        dist.all_reduce(t, group=self.host_group)
        return t.tolist()

    def any(self, flags: torch.Tensor) -> torch.Tensor:
        """Device flags set where any process set them (a device collective: nothing is read on the host)."""
        if not self.distributed:
            return flags
        flags = flags.to(torch.uint8)
        dist.all_reduce(flags, op=dist.ReduceOp.MAX)
        return flags.bool()

    def gather(self, obj: Any) -> List[Any]:
        """``obj`` of every process, by rank (collective: all processes call it)."""
        if not self.distributed:
            return [obj]
        out: List[Any] = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def close(self) -> None:
        if self.distributed:
            dist.destroy_process_group()

