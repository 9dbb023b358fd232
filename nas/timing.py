"""Step timing of the search engine on random data, for `tools/bench.py search-step` (benchmark only).

    t = step_timing(config, steps=5, partial_channels=1, algorithm="dlsr_exact")

Times the weight step and the arch step of the supernet of `config` (its space, batch size, patch
size, loss, arch optimizer and cost term) as the search loop runs them, or (`reference=True`) DLSR's
released step re-implemented on the same supernet: no op fusion, contiguous NCHW, a weight step that
back-propagates into every parameter (alphas included, as DLSR's leaf tensors are), and an arch step
that forwards the training batch again and a validation batch, adds both losses and back-propagates
into every parameter with both graphs alive, then updates only alphas and betas
(`search/RFDN6_para_loss.py`). `weight_step_flops` counts what one weight step computes (forward +
backward, convs and matmuls) on the supernet as the row runs it: fused ops count the fused kernels,
unfused rows the unfused ops.
"""
from __future__ import annotations

import copy
import re
import statistics
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from nas.architect import Architect
from nas.config import SearchConfig
from nas.cost import CostModel, build_cost_table
from nas.loss import sr_loss
from nas.supernet import SuperNet


def _peak_rss_reset() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _rss(field_name: str) -> int | None:
    try:
        m = re.search(rf"{field_name}:\s+(\d+) kB", Path("/proc/self/status").read_text())
    except OSError:
        return None
    return int(m.group(1)) * 1024 if m else None


def timing_config(config: SearchConfig, partial_channels: int | None = None, algorithm: str | None = None,
                  reference: bool = False) -> SearchConfig:
    """A copy of `config` as one bench row runs it (reference: DLSR's step, unfused, NCHW)."""
    cfg = copy.deepcopy(config)
    if partial_channels is not None:
        cfg.space.partial_channels = partial_channels
    if algorithm is not None:
        cfg.arch.algorithm = algorithm
    if reference:
        cfg.space.fuse, cfg.space.channels_last = False, False
        cfg.arch.algorithm = "dlsr_exact"
    return cfg


def weight_step_flops(config: SearchConfig) -> int:
    """FLOPs (convs and matmuls) of the supernet's forward + backward on one training batch, as configured
    (fused or not)."""
    s, d = config.space, config.data
    with torch.random.fork_rng(devices=[]):
        model = SuperNet(s)
    x = torch.rand(d.batch_size, 3, d.gt_size // s.scale, d.gt_size // s.scale)
    with FlopCounterMode(display=False) as counter:
        model(x).abs().mean().backward()
    return int(counter.get_total_flops())


def step_timing(config: SearchConfig, steps: int = 3, partial_channels: int | None = None, *,
                algorithm: str | None = None, device: str | torch.device = "cpu", lr_size: int | None = None,
                warmup: int = 1, reference: bool = False, seed: int = 0) -> dict:
    """Seconds per weight step and per arch step on random data, and memory (see the module docstring).

    `partial_channels` and `algorithm` override the config's. `warmup` untimed (weight + arch) steps come
    first. Returns {"weight_step_s", "arch_step_s" (medians), "step_s" (their sum), "peak_memory_bytes"
    (GPU: peak allocated; CPU: the process's peak resident memory during the timed steps, from
    /proc/self/status VmHWM after resetting it; None off Linux), "peak_rss_bytes", "base_rss_bytes",
    "peak_cuda_bytes", "batch", "lr_size", "partial_channels", "algorithm", "reference", "threads", ...}.
    """
    cfg = timing_config(config, partial_channels, algorithm, reference)
    space, algorithm = cfg.space, cfg.arch.algorithm
    device = torch.device(device)
    torch.manual_seed(seed)
    fmt = torch.channels_last if space.channels_last else torch.contiguous_format
    model = SuperNet(space, cfg.arch.init_std).to(device).to(memory_format=fmt)
    size = lr_size or cfg.data.gt_size // space.scale
    b, s = cfg.data.batch_size, space.scale
    g = torch.Generator().manual_seed(seed)

    def batch() -> dict:
        lq = torch.rand(b, 3, size, size, generator=g)
        gt = torch.rand(b, 3, size * s, size * s, generator=g)
        return {"lq": lq.to(device).contiguous(memory_format=fmt), "gt": gt.to(device).contiguous(memory_format=fmt)}

    def loss_fn(m, bt):
        return sr_loss(m(bt["lq"]), bt["gt"], cfg.loss.hfen_weight, cfg.loss.hfen_mode)

    weights, arch = model.weight_parameters(), model.arch_parameters()
    opt_w = torch.optim.Adam(weights, lr=cfg.optim.lr, betas=tuple(cfg.optim.adam_betas))
    penalty = None
    if cfg.cost.kind != "none":
        cost_model = CostModel(build_cost_table(space, cfg.cost, device), space, cfg.cost).to(device)
        penalty = cost_model.penalty
    architect = Architect(model, cfg.arch, loss_fn, penalty, weight_optimizer=opt_w)
    reuse = algorithm == "dlsr_reuse"
    tr, va = batch(), batch()

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def weight_step():
        opt_w.zero_grad(set_to_none=True)
        for a in arch:
            a.grad = None
        loss = loss_fn(model, tr)
        if reference:
            loss.backward()
            grads = None
        else:
            loss.backward(inputs=weights + (arch if reuse else []))
            grads = [a.grad for a in arch] if reuse else None
        opt_w.step()
        return grads

    def arch_step(train_grads):
        if reference:
            architect.optimizer.zero_grad(set_to_none=True)
            opt_w.zero_grad(set_to_none=True)
            total = loss_fn(model, tr) + loss_fn(model, va)  # DLSR's parameter term is a constant: no gradient
            total.backward()
            architect.optimizer.step()
        else:
            architect.step(tr, va, train_grads=train_grads, weight_lr=cfg.optim.lr,
                           weight_decay=cfg.optim.weight_decay)

    def timed(fn, *args):
        sync()
        t0 = time.perf_counter()
        out = fn(*args)
        sync()
        return time.perf_counter() - t0, out

    arch_first = algorithm in ("first_order", "second_order") and not reference
    for _ in range(warmup):
        if arch_first:
            arch_step(None)
            weight_step()
        else:
            arch_step(weight_step())
    base = _rss("VmRSS")
    can_reset = _peak_rss_reset()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    tw, ta = [], []
    for _ in range(steps):
        if arch_first:
            t, _ = timed(arch_step, None)
            ta.append(t)
            t, _ = timed(weight_step)
            tw.append(t)
        else:
            t, grads = timed(weight_step)
            tw.append(t)
            t, _ = timed(arch_step, grads)
            ta.append(t)
    w_s, a_s = statistics.median(tw), statistics.median(ta)
    peak_rss = _rss("VmHWM") if can_reset else None
    peak_cuda = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    return {"weight_step_s": w_s, "arch_step_s": a_s, "step_s": w_s + a_s,
            "peak_memory_bytes": peak_cuda if peak_cuda is not None else peak_rss,
            "peak_rss_bytes": peak_rss, "base_rss_bytes": base, "peak_cuda_bytes": peak_cuda,
            "batch": b, "lr_size": size, "scale": s, "num_cells": space.num_cells, "channels": space.channels,
            "partial_channels": space.partial_channels, "fuse": space.fuse,
            "channels_last": space.channels_last, "algorithm": algorithm, "reference": reference,
            "steps": steps, "threads": torch.get_num_threads(), "device": str(device)}
