"""Joining the process group `torchrun` describes: gloo on CPU, NCCL on CUDA (one GPU per process)."""
from __future__ import annotations

import os

import torch
import torch.distributed as dist


def init_from_env(device: str) -> str:
    """Join the torchrun process group (WORLD_SIZE > 1), if any; returns this process's device."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return device
    if device.startswith("cuda"):
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        dist.init_process_group("nccl")
        return f"cuda:{local}"
    dist.init_process_group("gloo")
    return device
