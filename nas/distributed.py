"""Data-parallel search across processes (`torchrun`): process group, gradient averaging, a global max.

    torchrun --nproc-per-node 2 tools/search.py --config smoke --out runs/search/ddp

Every process holds the same supernet, alphas, betas and optimizer states. Each step's global batch
(`data.batch_size`) is split evenly: process r takes positions r, r + W, r + 2W, ... of the batch. A
gradient computed on the local share is averaged over the W processes (one coalesced `all_reduce`),
which equals the gradient of the global-batch loss because every loss here is a mean over equal
shares. So the weight steps, the arch steps (every algorithm, second order included: its virtual step,
its validation gradient and both finite-difference gradients are averaged) and hence the alpha
trajectory are those of one process on the global batch, up to float summation order.

The supernet is not wrapped in `DistributedDataParallel`: the steps take gradients with
`torch.autograd.grad` for chosen inputs (arch parameters only, weights only, or both), which DDP's
backward hooks do not cover; averaging the gradients explicitly is the same communication.

HFEN normalises by the largest response of the whole batch; `global_max` takes it over every process
(and sends its gradient back to the process holding it), so HFEN is the global-batch HFEN too.

Backends: gloo on CPU, NCCL on CUDA (one GPU per process, `LOCAL_RANK`).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.distributed as dist

from srcore.distributed import init_from_env  # noqa: F401  (re-exported: the search CLI joins through here)


def world() -> tuple[int, int]:
    """(rank, world size); (0, 1) without an initialised process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def shutdown() -> None:
    """Leave the process group, if one was joined."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def shard(indices: Sequence[int]) -> list[int]:
    """This process's share of a global batch of dataset indices (positions rank, rank + W, ...)."""
    rank, size = world()
    return list(indices[rank::size])


def average(tensors: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """The mean over processes of each tensor (returned as new tensors; unchanged with one process)."""
    tensors = list(tensors)
    _, size = world()
    if size == 1 or not tensors:
        return tensors
    flat = torch.cat([t.detach().reshape(-1) for t in tensors])
    dist.all_reduce(flat)
    flat /= size
    out, i = [], 0
    for t in tensors:
        out.append(flat[i:i + t.numel()].view_as(t))
        i += t.numel()
    return out


def sum_floats(values: Sequence[float]) -> list[float]:
    """The sum over processes of a few floats (float64)."""
    if world()[1] == 1:
        return list(values)
    t = torch.tensor(list(values), dtype=torch.float64)
    dist.all_reduce(t)
    return t.tolist()


def any_true(flag: bool) -> bool:
    """True on every process if `flag` is true on any (a collective stop decision)."""
    if world()[1] == 1:
        return flag
    t = torch.tensor([1 if flag else 0])
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def broadcast(obj, src: int = 0):
    """`obj` of process `src`, on every process."""
    if world()[1] == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def barrier() -> None:
    if world()[1] > 1:
        dist.barrier()


class _GlobalMax(torch.autograd.Function):
    """max over every element on every process; the gradient goes to that element on one process."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        rank, size = world()
        flat = x.detach().reshape(-1)
        idx = int(flat.argmax())
        m = flat[idx].clone()
        dist.all_reduce(m, op=dist.ReduceOp.MAX)
        owner = torch.tensor([rank if bool(flat[idx] == m) else size])
        dist.all_reduce(owner, op=dist.ReduceOp.MIN)  # ties between processes: the lowest rank holds it
        ctx.idx, ctx.mine, ctx.shape = idx, int(owner.item()) == rank, x.shape
        return m

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        total = grad.detach().clone()
        dist.all_reduce(total)  # every process's d(its loss)/d(max): they all flow into the one element
        out = torch.zeros(ctx.shape, dtype=grad.dtype, device=grad.device).reshape(-1)
        if ctx.mine:
            out[ctx.idx] = total
        return out.view(ctx.shape)


def global_max(x: torch.Tensor) -> torch.Tensor:
    """The largest element of `x` over all processes (`x.max()` with one process), differentiable."""
    if world()[1] == 1:
        return x.max()
    return _GlobalMax.apply(x)
