"""The search loop: alternate weight steps and arch steps, log alphas, checkpoint, resume bit-identically.

    result = run_search(config, out_dir, device="cpu", callback=print_event)

Per weight step (one training batch): forward, backward, Adam on the weights; after the warm-up
epochs, every `arch.every` steps, one arch step (`nas.architect`) on the next validation batch. The
training images are split once into a train part (weights) and a validation part (arch), by a seeded
permutation of the images.

Everything is a pure function of the config and the step, so a search can stop at any step boundary
and continue exactly: patches come from `PatchDataset` (seeded by seed, epoch, index), batch order from
a generator seeded by (seed, epoch), the learning rate from the epoch; the checkpoint holds weights and
arch parameters (one state dict), both Adam states, the data positions (train epoch and batch, val
epoch and batch), the cost table and the RNG states of torch, numpy and python. On the CPU a resumed
search ends with the same alphas and weights (torch.equal) as an uninterrupted one.

Files in `out_dir`:
  checkpoint.pt        atomic srnas checkpoint, every `loop.checkpoint_every` steps, at the end and on
                       Ctrl-C (the first Ctrl-C finishes the current step, saves and stops);
  alpha_history.jsonl  one JSON object per logged step: {"step", "epoch", "ops", "alpha", "beta"} with
                       the raw (pre-softmax) alphas and betas as full-precision floats;
  genotype.yaml        the derived genotype at the end;
  cost_table.json      the per-op cost table (when `cost.kind` is not none).

Library code: no logging setup, no printing; progress goes to `callback(event, info)` with events
"start", "step" (every log step), "eval", "collapse", "checkpoint" and "end".

The collapse guard (every log step) reports when the cheapest op (fewest parameters) takes every edge
with softmax weight >= `loop.collapse_min_prob`, the classic DARTS failure; `loop.collapse_action: stop`
ends the search there (status "collapsed").

`step_timing(config, steps, partial_channels)` times weight and arch steps of the supernet on random
data (and, with `reference=True`, DLSR's released step on the same supernet), for `tools/bench.py`.
"""
from __future__ import annotations

import copy
import json
import math
import os
import random
import re
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from nas.architect import Architect
from nas.config import SearchConfig
from nas.cost import CostModel, CostTable, build_cost_table, op_param_counts
from nas.derive import describe
from nas.loss import sr_loss
from nas.supernet import SuperNet
from search_spaces.genotype import Genotype, save_genotype
from srcore.checkpoint import CheckpointError, load_file, save_checkpoint
from srcore.config import from_dict, to_dict
from srcore.data import DataError, PatchDataset
from srcore.jsonl import trim_jsonl

CHECKPOINT = "checkpoint.pt"
HISTORY = "alpha_history.jsonl"
GENOTYPE = "genotype.yaml"
COST_TABLE = "cost_table.json"

Callback = Callable[[str, dict], None]


# ----------------------------------------------------------------------------------------------------
# data: a seeded split of the training images, seeded batch orders


def split_dataset(ds: PatchDataset, val_fraction: float, seed: int) -> tuple[PatchDataset, PatchDataset]:
    """Two copies of `ds` over disjoint images: (train, val), val holding round(fraction * N) >= 1."""
    n = len(ds.images)
    n_val = min(max(1, round(val_fraction * n)), n - 1) if n > 1 else 0
    if n_val == 0:
        raise DataError(f"the training set has {n} image(s); a train/validation split needs at least 2")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    parts = []
    for idx in (sorted(order[n_val:]), sorted(order[:n_val])):
        part = copy.copy(ds)
        part.images = [ds.images[i] for i in idx]
        part.names = [ds.names[i] for i in idx]
        parts.append(part)
    return parts[0], parts[1]


def epoch_batches(n_items: int, batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """The batches of one epoch: a permutation seeded by (seed, epoch), cut into full batches."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    perm = torch.randperm(n_items, generator=g).tolist()
    return [perm[i:i + batch_size] for i in range(0, n_items - batch_size + 1, batch_size)]


def load_batch(ds: PatchDataset, epoch: int, indices: list[int], device: torch.device,
               channels_last: bool = False) -> dict[str, torch.Tensor]:
    ds.set_epoch(epoch)
    items = [ds[i] for i in indices]
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return {k: torch.stack([it[k] for it in items]).to(device).contiguous(memory_format=fmt) for k in ("lq", "gt")}


# ----------------------------------------------------------------------------------------------------
# small pieces of the loop


def learning_rate(cfg: SearchConfig, epoch: int) -> float:
    """The weight learning rate of `epoch` (a pure function: nothing to save for resume)."""
    o = cfg.optim
    if o.schedule == "multistep":
        return o.lr * o.gamma ** sum(epoch >= m for m in o.milestones)
    if o.schedule == "cosine":
        return o.min_lr + (o.lr - o.min_lr) * (1 + math.cos(math.pi * epoch / max(cfg.loop.epochs, 1))) / 2
    return o.lr


def psnr(sr: torch.Tensor, gt: torch.Tensor, border: int) -> float:
    """Mean PSNR (RGB, [0, 1], `border` pixels shaved) over a batch of patches."""
    if border:
        sr, gt = sr[..., border:-border, border:-border], gt[..., border:-border, border:-border]
    mse = ((sr.clamp(0, 1) - gt) ** 2).flatten(1).mean(1).clamp_min(1e-10)
    return float((-10 * torch.log10(mse)).mean())


def collapse_report(alphas: torch.Tensor, ops: tuple[str, ...], op_params: dict[str, float],
                    min_prob: float) -> str | None:
    """A message when the cheapest op takes every edge (softmax weight >= min_prob on each), else None."""
    probs = torch.softmax(alphas.detach().float().reshape(-1, len(ops)), dim=-1)
    cheapest = min(range(len(ops)), key=lambda i: (op_params[ops[i]], i))
    top_p, top = probs.max(dim=-1)
    if bool((top == cheapest).all()) and bool((top_p >= min_prob).all()):
        return (f"collapse: the cheapest op {ops[cheapest]} takes all {probs.shape[0]} edges "
                f"(softmax weight {float(top_p.min()):.2f}..{float(top_p.max()):.2f})")
    return None


def rng_state() -> dict:
    np_state = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": random.getstate(),
             "numpy": {"name": np_state[0], "keys": np_state[1].tolist(), "pos": int(np_state[2]),
                       "has_gauss": int(np_state[3]), "cached": float(np_state[4])}}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(_tuples(state["python"]))
    n = state["numpy"]
    np.random.set_state((n["name"], np.array(n["keys"], dtype=np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _tuples(x):
    """random.setstate wants tuples where torch.load may hand back lists."""
    return tuple(_tuples(v) for v in x) if isinstance(x, (list, tuple)) else x


class _DeferredInterrupt:
    """Within the block, the first Ctrl-C only sets `requested` (the loop stops at the next step
    boundary and saves); a second one interrupts at once. A no-op outside the main thread."""

    def __init__(self):
        self.requested = False
        self._old = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._old = signal.getsignal(signal.SIGINT)
            signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc):
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)
        return False


# ----------------------------------------------------------------------------------------------------
# the search


@dataclass
class Position:
    """Where the search is: global step, training epoch/batch, validation epoch/batch."""

    step: int = 0
    epoch: int = 0
    batch: int = 0
    val_epoch: int = 0
    val_batch: int = 0


@dataclass
class SearchResult:
    genotype: Genotype
    status: str  # "finished", "stopped" (stop_at reached), "interrupted" (Ctrl-C) or "collapsed"
    step: int
    total_steps: int
    out_dir: Path
    metrics: dict = field(default_factory=dict)


class Search:
    """One search run in `out_dir` (see the module docstring). Build, then `run()`."""

    def __init__(self, config: SearchConfig, out_dir: str | os.PathLike, device: str | torch.device = "cpu",
                 callback: Callback | None = None):
        self.cfg, self.out = config, Path(out_dir)
        self.device = torch.device(device)
        self.callback = callback or (lambda event, info: None)
        cfg = config
        seed = cfg.loop.seed
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)

        source = PatchDataset(cfg.data.train, cfg.space.scale, cfg.data.gt_size, augment=cfg.data.augment,
                              repeat=cfg.data.repeat, seed=seed)
        self.train_ds, self.val_ds = split_dataset(source, cfg.data.val_fraction, seed)
        self.batches_per_epoch = len(epoch_batches(len(self.train_ds), cfg.data.batch_size, seed, 0))
        if self.batches_per_epoch == 0 or len(epoch_batches(len(self.val_ds), cfg.data.batch_size, seed, 0)) == 0:
            raise DataError(f"data.batch_size = {cfg.data.batch_size} is larger than the train split "
                            f"({len(self.train_ds)} patches) or the validation split ({len(self.val_ds)} patches) "
                            "per epoch; raise data.repeat or lower the batch size")
        self.total_steps = self.batches_per_epoch * cfg.loop.epochs
        self.eval_batch = self._eval_patches()

        self.model = SuperNet(cfg.space, cfg.arch.init_std).to(self.device)
        if cfg.space.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.weight_params = self.model.weight_parameters()
        self.arch_params = self.model.arch_parameters()
        self.optimizer = torch.optim.Adam(self.weight_params, lr=cfg.optim.lr, betas=tuple(cfg.optim.betas),
                                          weight_decay=cfg.optim.weight_decay)
        self.op_params = op_param_counts(cfg.space.ops, cfg.space.channels)
        self.cost_table: CostTable | None = None
        self.cost_model: CostModel | None = None
        self.architect = Architect(self.model, cfg.arch, self.loss)
        self.pos = Position()
        self.metrics: dict = {}
        self.collapse_message: str | None = None

    # --- pieces --------------------------------------------------------------------------------------------

    def loss(self, model: nn.Module, batch: dict) -> torch.Tensor:
        return sr_loss(model(batch["lq"]), batch["gt"], self.cfg.loss.hfen_weight)

    def _eval_patches(self) -> dict[str, torch.Tensor] | None:
        """Fixed validation patches (no augmentation, their own seed) for the PSNR shown in progress."""
        n = min(self.cfg.loop.eval_patches, len(self.val_ds))
        if not self.cfg.loop.eval_every or n == 0:
            return None
        ds = copy.copy(self.val_ds)
        ds.augment, ds.seed = False, self.cfg.loop.seed + 1
        return load_batch(ds, 0, list(range(n)), self.device, self.cfg.space.channels_last)

    @torch.no_grad()
    def evaluate(self) -> float | None:
        if self.eval_batch is None:
            return None
        sr = torch.cat([self.model(lq[None]) for lq in self.eval_batch["lq"]])
        return psnr(sr, self.eval_batch["gt"], self.cfg.space.scale)

    def _setup_cost(self, table: dict | None) -> None:
        cfg = self.cfg
        if cfg.cost.kind == "none" or cfg.cost.weight == 0:
            return
        self.cost_table = CostTable.from_dict(table) if table else build_cost_table(cfg.space, cfg.cost, self.device)
        self.cost_model = CostModel(self.cost_table, cfg.space, cfg.cost).to(self.device)
        self.architect.penalty = self.cost_model.penalty
        (self.out / COST_TABLE).write_text(json.dumps(self.cost_table.to_dict(), indent=2) + "\n")

    def next_val_batch(self) -> dict[str, torch.Tensor]:
        cfg, p = self.cfg, self.pos
        batches = epoch_batches(len(self.val_ds), cfg.data.batch_size, cfg.loop.seed + 7, p.val_epoch)
        if p.val_batch >= len(batches):
            p.val_epoch, p.val_batch = p.val_epoch + 1, 0
            batches = epoch_batches(len(self.val_ds), cfg.data.batch_size, cfg.loop.seed + 7, p.val_epoch)
        batch = load_batch(self.val_ds, p.val_epoch, batches[p.val_batch], self.device, cfg.space.channels_last)
        p.val_batch += 1
        return batch

    def weight_step(self, batch: dict, lr: float, want_arch_grads: bool) -> tuple[float, list[torch.Tensor] | None]:
        """Forward, backward (weights, plus arch params if wanted), Adam; returns loss and arch grads."""
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.zero_grad(set_to_none=True)
        for a in self.arch_params:
            a.grad = None
        loss = self.loss(self.model, batch)
        loss.backward(inputs=self.weight_params + (self.arch_params if want_arch_grads else []))
        if self.cfg.optim.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.weight_params, self.cfg.optim.grad_clip)
        self.optimizer.step()
        arch_grads = None
        if want_arch_grads:
            arch_grads = [a.grad if a.grad is not None else torch.zeros_like(a) for a in self.arch_params]
            for a in self.arch_params:
                a.grad = None
        return float(loss.detach()), arch_grads

    # --- checkpoints -----------------------------------------------------------------------------------

    def state(self) -> dict:
        return {"position": vars(self.pos).copy(), "optimizer": self.optimizer.state_dict(),
                "arch_optimizer": self.architect.optimizer.state_dict(), "rng": rng_state(),
                "cost_table": self.cost_table.to_dict() if self.cost_table else None,
                "collapse": self.collapse_message}

    def save(self) -> Path:
        path = self.out / CHECKPOINT
        g = self.model.genotype()
        save_checkpoint(path, state_dict=self.model.state_dict(), spec={"supernet": to_dict(self.cfg.space)},
                        config=to_dict(self.cfg), metrics=dict(self.metrics), step=self.pos.step,
                        genotype=g.to_dict(), search_state=self.state(), total_steps=self.total_steps)
        self.callback("checkpoint", {"step": self.pos.step, "path": str(path)})
        return path

    def load(self, path: Path) -> dict:
        ckpt = load_file(path)
        if not isinstance(ckpt, dict) or "search_state" not in ckpt:
            raise CheckpointError(f"{path}: not a search checkpoint (no search_state)")
        saved = ckpt["config"]
        if saved != to_dict(self.cfg):
            diff = _diff_keys(saved, to_dict(self.cfg))
            raise CheckpointError(f"{path}: the config differs from the checkpoint's at {', '.join(diff[:6])}; "
                                  "resume with the same config (or none: it is read from the checkpoint)")
        self.model.load_state_dict(ckpt["state_dict"], strict=True)
        st = ckpt["search_state"]
        self.optimizer.load_state_dict(st["optimizer"])
        self.architect.optimizer.load_state_dict(st["arch_optimizer"])
        self.pos = Position(**st["position"])
        self.metrics = dict(ckpt.get("metrics", {}))
        self.collapse_message = st.get("collapse")
        set_rng_state(st["rng"])
        return st

    # --- history -------------------------------------------------------------------------------------

    def history_entry(self) -> dict:
        alphas = self.model.alphas.detach().double().cpu().tolist()
        betas = [b.detach().double().cpu().tolist() for b in self.model.betas]
        return {"step": self.pos.step, "epoch": self.pos.epoch, "ops": list(self.cfg.space.ops),
                "alpha": alphas, "beta": betas}

    def _trim_history(self, step: int) -> None:
        """Drop history lines written after the checkpoint being resumed (a crash between checkpoints)."""
        trim_jsonl(self.out / HISTORY, step)  # a torn last line (a kill mid-write) is dropped with a warning

    # --- the loop ------------------------------------------------------------------------------------------

    def run(self, resume: bool = False, stop_at: int | None = None) -> SearchResult:
        """Search until the configured epochs end (or global step `stop_at`); resume from out_dir."""
        out = self.out
        out.mkdir(parents=True, exist_ok=True)
        ckpt_path = out / CHECKPOINT
        _check_out_dir(out, resume)
        table = None
        if resume:
            table = self.load(ckpt_path)["cost_table"]
            self._trim_history(self.pos.step)
        else:
            (out / HISTORY).write_text("")
        self._setup_cost(table)
        self.callback("start", {"step": self.pos.step, "total_steps": self.total_steps, "resumed": resume,
                                "out": str(out), "batches_per_epoch": self.batches_per_epoch,
                                "weights": sum(p.numel() for p in self.weight_params),
                                "train_images": len(self.train_ds.images), "val_images": len(self.val_ds.images),
                                "cost_table": self.cost_table.to_dict() if self.cost_table else None})
        status = "finished"
        with _DeferredInterrupt() as interrupt, open(out / HISTORY, "a") as history:
            status = self._loop(history, interrupt, stop_at)
        self.save()
        genotype = self.model.genotype()
        if status == "finished":
            save_genotype(genotype, out / GENOTYPE)
        self.callback("end", {"status": status, "step": self.pos.step, "genotype": describe(genotype),
                              "metrics": dict(self.metrics)})
        return SearchResult(genotype, status, self.pos.step, self.total_steps, out, dict(self.metrics))

    def _loop(self, history, interrupt: _DeferredInterrupt, stop_at: int | None) -> str:
        cfg, p = self.cfg, self.pos
        loop, seed = cfg.loop, cfg.loop.seed
        t_last, loss_sum, loss_n = time.perf_counter(), 0.0, 0
        while p.epoch < loop.epochs:
            lr = learning_rate(cfg, p.epoch)
            batches = epoch_batches(len(self.train_ds), cfg.data.batch_size, seed, p.epoch)
            while p.batch < len(batches):
                if interrupt.requested:
                    return "interrupted"
                if stop_at is not None and p.step >= stop_at:
                    return "stopped"
                batch = load_batch(self.train_ds, p.epoch, batches[p.batch], self.device, cfg.space.channels_last)
                arch_on = p.epoch >= cfg.arch.warmup_epochs and p.step % cfg.arch.every == 0
                want = arch_on and cfg.arch.algorithm == "dlsr"
                loss, train_grads = self.weight_step(batch, lr, want)
                if arch_on:
                    info = self.architect.step(batch, self.next_val_batch(), train_grads=train_grads, weight_lr=lr,
                                               weight_decay=cfg.optim.weight_decay)
                    self.metrics.update(val_loss=info["val_loss"], penalty=info["penalty"])
                p.step, p.batch = p.step + 1, p.batch + 1
                loss_sum, loss_n = loss_sum + loss, loss_n + 1
                if loop.eval_every and p.step % loop.eval_every == 0:
                    self.metrics["val_psnr"] = self.evaluate()
                    self.callback("eval", {"step": p.step, "psnr": self.metrics["val_psnr"]})
                if p.step % loop.log_every == 0 or p.step == self.total_steps:
                    self.metrics["loss"] = loss_sum / loss_n
                    now = time.perf_counter()
                    status = self._log(history, lr, arch_on, (now - t_last) / loss_n)
                    t_last, loss_sum, loss_n = now, 0.0, 0
                    if status:
                        return status
                if loop.checkpoint_every and p.step % loop.checkpoint_every == 0:
                    self.save()
            p.epoch, p.batch = p.epoch + 1, 0
        return "finished"

    def _log(self, history, lr: float, arch_on: bool, sec_per_step: float) -> str | None:
        history.write(json.dumps(self.history_entry()) + "\n")
        history.flush()
        p, g = self.pos, self.model.genotype()
        info = {"step": p.step, "epoch": p.epoch, "total_steps": self.total_steps, "lr": lr, "arch": arch_on,
                "sec_per_step": sec_per_step, "genotype": describe(g), **self.metrics}
        if self.cost_model is not None:
            info["expected_cost"] = float(self.cost_model.expected(self.model.alphas.detach()))
            info["cost_unit"] = self.cost_table.unit
        self.callback("step", info)
        loop = self.cfg.loop
        if loop.collapse_check:
            msg = collapse_report(self.model.alphas, self.cfg.space.ops, self.op_params, loop.collapse_min_prob)
            if msg and msg != self.collapse_message:
                self.callback("collapse", {"step": p.step, "message": msg})
            self.collapse_message = msg
            if msg and loop.collapse_action == "stop":
                return "collapsed"
        return None


def _check_out_dir(out: Path, resume: bool) -> None:
    ckpt_path = out / CHECKPOINT
    if resume and not ckpt_path.is_file():
        raise CheckpointError(f"{ckpt_path}: nothing to resume (no checkpoint in {out})")
    if not resume and ckpt_path.exists():
        raise CheckpointError(f"{out} already holds a search ({CHECKPOINT}); pass --resume to continue it "
                              "or choose another --out")


def _diff_keys(a, b, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            out += _diff_keys(a.get(k), b.get(k), f"{prefix}{k}.")
        return out
    return [] if a == b else [prefix.rstrip(".")]


def run_search(config: SearchConfig, out_dir: str | os.PathLike, *, device: str | torch.device = "cpu",
               resume: bool = False, stop_at: int | None = None, callback: Callback | None = None) -> SearchResult:
    """Build a `Search` and run it (see the module docstring)."""
    _check_out_dir(Path(out_dir), resume)
    return Search(config, out_dir, device, callback).run(resume=resume, stop_at=stop_at)


def config_from_checkpoint(path: str | os.PathLike) -> SearchConfig:
    """The SearchConfig stored in a search checkpoint (for `--resume` without `--config`)."""
    ckpt = load_file(path)
    if not isinstance(ckpt, dict) or "search_state" not in ckpt:
        raise CheckpointError(f"{path}: not a search checkpoint (no search_state)")
    return from_dict(SearchConfig, ckpt["config"], str(path))


# ----------------------------------------------------------------------------------------------------
# step timing, for benchmarks


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


def step_timing(config: SearchConfig, steps: int = 3, partial_channels: int | None = None, *,
                device: str | torch.device = "cpu", lr_size: int | None = None, warmup: int = 1,
                reference: bool = False, seed: int = 0) -> dict:
    """Seconds per weight step and per arch step of the supernet of `config` on random data, and memory.

    Uses `config.space` (with `partial_channels` overriding space.partial_channels when given),
    `config.data.batch_size`, LR patches of `lr_size` (default gt_size / scale), `config.arch` and
    `config.cost`. `warmup` untimed (weight + arch) steps come first. `reference=True` times DLSR's
    released step instead, on the same supernet: no conv fusion, contiguous NCHW, a weight step that
    backpropagates into every parameter, and an arch step that forwards the train and validation
    batches, adds both losses (and the cost term) and backpropagates into every parameter (two graphs
    alive at once); only alphas/betas are then updated.

    Returns {"weight_step_s", "arch_step_s" (medians), "step_s" (their sum), "peak_memory_bytes" (GPU:
    peak allocated; CPU: "peak_rss_bytes"), "peak_rss_bytes" (the process's peak resident memory during
    the timed steps, from /proc/self/status VmHWM after resetting it; None off Linux), "base_rss_bytes"
    (resident memory before them), "peak_cuda_bytes",
    "batch", "lr_size", "partial_channels", "algorithm", "reference", "threads", "device"}.
    """
    cfg = copy.deepcopy(config)
    space = cfg.space
    if partial_channels is not None:
        space.partial_channels = partial_channels
    if reference:
        space.fuse, space.channels_last = False, False
    device = torch.device(device)
    torch.manual_seed(seed)
    model = SuperNet(space, cfg.arch.init_std).to(device)
    fmt = torch.channels_last if space.channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    size = lr_size or cfg.data.gt_size // space.scale
    b, s = cfg.data.batch_size, space.scale
    g = torch.Generator().manual_seed(seed)

    def batch() -> dict:
        lq = torch.rand(b, 3, size, size, generator=g)
        gt = torch.rand(b, 3, size * s, size * s, generator=g)
        return {"lq": lq.to(device).contiguous(memory_format=fmt), "gt": gt.to(device).contiguous(memory_format=fmt)}

    def loss_fn(m, bt):
        return sr_loss(m(bt["lq"]), bt["gt"], cfg.loss.hfen_weight)

    weights, arch = model.weight_parameters(), model.arch_parameters()
    opt_w = torch.optim.Adam(weights, lr=cfg.optim.lr, betas=tuple(cfg.optim.betas))
    penalty = None
    if cfg.cost.kind != "none" and cfg.cost.weight:
        cost_model = CostModel(build_cost_table(space, cfg.cost, device), space, cfg.cost).to(device)
        penalty = cost_model.penalty
    architect = Architect(model, cfg.arch, loss_fn, penalty)
    dlsr = cfg.arch.algorithm == "dlsr"
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
            loss.backward(inputs=weights + (arch if dlsr else []))
            grads = [a.grad for a in arch] if dlsr else None
        opt_w.step()
        return grads

    def arch_step(train_grads):
        if reference:
            architect.optimizer.zero_grad(set_to_none=True)
            opt_w.zero_grad(set_to_none=True)
            total = loss_fn(model, tr) + loss_fn(model, va)
            if penalty is not None:
                total = total + penalty(model.alphas)
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

    for _ in range(warmup):
        arch_step(weight_step())
    base = _rss("VmRSS")
    can_reset = _peak_rss_reset()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    tw, ta = [], []
    for _ in range(steps):
        t, grads = timed(weight_step)
        tw.append(t)
        t, _ = timed(arch_step, grads)
        ta.append(t)
    w_s, a_s = float(np.median(tw)), float(np.median(ta))
    peak_rss = _rss("VmHWM") if can_reset else None
    peak_cuda = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    return {"weight_step_s": w_s, "arch_step_s": a_s, "step_s": w_s + a_s,
            "peak_memory_bytes": peak_cuda if peak_cuda is not None else peak_rss,
            "peak_rss_bytes": peak_rss, "base_rss_bytes": base, "peak_cuda_bytes": peak_cuda,
            "batch": b, "lr_size": size, "scale": s, "num_cells": space.num_cells, "channels": space.channels,
            "partial_channels": space.partial_channels, "fuse": space.fuse,
            "channels_last": space.channels_last, "algorithm": cfg.arch.algorithm, "reference": reference,
            "steps": steps, "threads": torch.get_num_threads(), "device": str(device)}
