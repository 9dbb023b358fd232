"""What a network costs, as the NTIRE efficient-SR challenge reports it.

* `count_params`: trainable + buffer-free parameter count.
* `count_flops`: MACs and FLOPs (FLOPs = 2 * MACs) of one forward pass, from `torch.utils.flop_counter`
  (convolutions, matmuls; elementwise ops are not counted, as in the challenge's counters).
* `count_activations`: the number of elements of every Conv2d output in one forward pass (the NTIRE
  challenge's "#Activations") and the number of conv layers.
* `peak_memory`: peak memory of one forward pass above what was allocated before it: CUDA's allocator
  statistics on a GPU; on the CPU the profiler's allocation trace (the same quantity for tensors). The
  profiler's C++ part (kineto) prints "USDT: ... profiler_start/stop" lines to the process's stderr on every
  trace, whatever its log level: those lines alone are dropped (`_without_kineto_lines`), the rest is kept.
* `latency`: median wall time of N forward passes after warm-up; CUDA events on a GPU, perf_counter with
  a fixed thread count on the CPU.
"""
from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_params(model: nn.Module) -> int:
    """Parameters (not buffers); reads the model only (its mode and device are left as they are)."""
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def count_flops(model: nn.Module, x: torch.Tensor) -> dict[str, int]:
    with FlopCounterMode(display=False) as counter:
        model(x)
    flops = int(counter.get_total_flops())
    return {"flops": flops, "macs": flops // 2}


@torch.no_grad()
def count_activations(model: nn.Module, x: torch.Tensor) -> dict[str, int]:
    total, convs = 0, 0

    def hook(_m, _inp, out):
        nonlocal total, convs
        total += out.numel()
        convs += 1

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Conv2d)]
    try:
        model(x)
    finally:
        for h in handles:
            h.remove()
    return {"activations": total, "conv_layers": convs}


@torch.no_grad()
def peak_memory(model: nn.Module, x: torch.Tensor) -> int:
    """Peak bytes allocated during one forward pass, beyond what was allocated before it."""
    if x.device.type == "cuda":
        torch.cuda.synchronize(x.device)
        torch.cuda.reset_peak_memory_stats(x.device)
        base = torch.cuda.memory_allocated(x.device)
        model(x)
        torch.cuda.synchronize(x.device)
        return int(torch.cuda.max_memory_allocated(x.device) - base)
    from torch.profiler import ProfilerActivity, profile

    with _without_kineto_lines(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        model(x)
    # every op's own allocations and the frees between ops ("[memory]" events), in time order
    cur = peak = 0
    for e in sorted(prof.events(), key=lambda e: e.time_range.start):
        cur += e.self_cpu_memory_usage
        peak = max(peak, cur)
    return int(peak)


KINETO_PREFIXES = ("USDT:", "STAGE:")  # kineto's trace-progress lines, written to fd 2 by C++ code


@contextmanager
def _without_kineto_lines():
    """Send file descriptor 2 to a temporary file for the block, then write back every line but kineto's."""
    try:
        fd = sys.__stderr__.fileno()
    except (AttributeError, OSError, ValueError):  # no real stderr (embedded interpreters): leave it alone
        yield
        return
    sys.stderr.flush()
    saved = os.dup(fd)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), fd)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, fd)
            os.close(saved)
            tmp.seek(0)
            kept = [line for line in tmp.read().decode(errors="replace").splitlines(keepends=True)
                    if not line.startswith(KINETO_PREFIXES)]
            if kept:
                os.write(fd, "".join(kept).encode())


@torch.no_grad()
def latency(model: nn.Module, x: torch.Tensor, *, warmup: int = 2, repeats: int = 5,
            threads: int | None = None) -> dict[str, float]:
    """Median/min seconds per forward pass."""
    old_threads = torch.get_num_threads()
    if threads is not None and x.device.type == "cpu":
        torch.set_num_threads(threads)
    try:
        for _ in range(warmup):
            model(x)
        times = []
        if x.device.type == "cuda":
            for _ in range(repeats):
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                model(x)
                end.record()
                torch.cuda.synchronize(x.device)
                times.append(start.elapsed_time(end) / 1000.0)
        else:
            for _ in range(repeats):
                t0 = time.perf_counter()
                model(x)
                times.append(time.perf_counter() - t0)
    finally:
        torch.set_num_threads(old_threads)
    return {"median_s": statistics.median(times), "min_s": min(times), "repeats": repeats, "warmup": warmup,
            "threads": torch.get_num_threads() if threads is None else threads, "device": str(x.device)}


@dataclass
class Cost:
    params: int
    macs: int
    flops: int
    activations: int
    conv_layers: int
    peak_memory_bytes: int
    input_shape: tuple[int, ...]

    def as_dict(self) -> dict:
        return asdict(self)


def measure_cost(model: nn.Module, input_shape: tuple[int, ...] = (1, 3, 256, 256),
                 device: str | torch.device = "cpu") -> Cost:
    """Params, MACs, FLOPs, activations and peak memory for one LR input of `input_shape`.

    The NTIRE efficient-SR challenge reports these for a 256x256 LR input (x4: a 1024x1024 output). The
    model is measured in eval mode on `device` and handed back in the modes and on the device it came in.
    """
    modes = [(m, m.training) for m in model.modules()]
    tensors = list(model.parameters()) or list(model.buffers())
    home = tensors[0].device if tensors else None
    try:
        model.to(device).eval()
        x = torch.rand(*input_shape, device=device)
        f = count_flops(model, x)
        a = count_activations(model, x)
        return Cost(count_params(model), f["macs"], f["flops"], a["activations"], a["conv_layers"],
                    peak_memory(model, x), tuple(input_shape))
    finally:
        for m, training in modes:
            m.training = training
        if home is not None:
            model.to(home)
