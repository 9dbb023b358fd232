"""The search loop: alternate weight steps and arch steps, log alphas, checkpoint, resume bit-identically.

    result = run_search(config, out_dir, device="cpu", callback=print_event)

Per weight step (one global training batch, split over the processes of a data-parallel run, see
`nas.distributed`): forward, backward, Adam on the weights. After the warm-up epochs, every
`arch.every` steps, one arch step (`nas.architect`) with the next validation batch, in the order of
the algorithm's paper: DARTS's (first and second order) before the weight step, on the same training
batch; DLSR's (dlsr_exact, dlsr_reuse) after it. The training images are split once into a train part
(weights) and a validation part (arch): a seeded random fraction, or DLSR's fixed ranges.

Schedules are pure functions of the step: the weight learning rate (of the epoch), the op-mixture
temperature tau (geometric from arch.tau_start at the end of warm-up to arch.tau_end at the last
step), the cost ramp (0 -> 1 over cost.ramp_epochs after warm-up) and the random-smoothing noise
(seeded by the step). So a search can stop at any step boundary and continue exactly: patches come
from `PatchDataset` (seeded by seed, epoch, index), batch order from a generator seeded by (seed,
epoch); the checkpoint holds weights and arch parameters (one state dict), both Adam states, the data
positions, the cost table, the RNG states and the running windows between two log lines (the loss sum
behind the logged "loss" and the arch gradient sums behind the history's gradient means). On the CPU a
resumed search ends with the same alphas, weights, history and metrics (bit for bit) as an uninterrupted
one. A resumed search may change execution keys only
(`nas.config.EXECUTION_KEYS`: threads, device, logging, evaluation, checkpoints, fusion, memory
format, derive); any other change is refused, naming the key.

Files in `out_dir` (written by process 0):
  checkpoint.pt         atomic srnas checkpoint, every `loop.checkpoint_every` steps, at the end and on
                        Ctrl-C (the first Ctrl-C finishes the current step, saves and stops);
  alpha_history.jsonl   one JSON object per logged step: "step", "epoch", "ops", "alpha", "beta" (raw,
                        full precision), "tau", "cost_ramp", and the mean over the arch steps since the
                        last line of the loss gradient on alpha and beta ("grad_alpha_loss",
                        "grad_beta_loss") and of the cost gradient on alpha ("grad_alpha_cost"), with
                        "arch_steps" (their number; the gradients are null when it is 0);
  genotype.yaml         the derived genotype at the end (`derive.method`: argmax or perturbation);
  collapse_report.json  per edge: mixture weights, chosen op, entropy, margin, decided or not, cheapest
                        or parameter-free, and the verdict (`nas.report`), at the end; with a cost term
                        also "derived_cost": the cost table's cost of the derived genotype and its target;
  cost_table.json       the per-op cost table (when `cost.kind` is not none).

Non-finite values stop the search (`NonFiniteSearch`, one line naming the step and the first bad term or
tensor): the loss terms of each step and the arch parameters are checked every step, every tensor before
each checkpoint, so the last good checkpoint is never replaced by NaN/Inf weights, and no genotype is
derived from non-finite alphas or betas.

Library code: no logging setup, no printing; progress goes to `callback(event, info)` with events
"start", "step" (every log step), "eval", "collapse", "checkpoint", "report" and "end".

The collapse guard (every log step) reports when the current genotype is degenerate with every
choice decided (every edge on the cheapest, or a parameter-free, op: the classic DARTS failure);
`loop.collapse_action: stop` ends the search there (status "collapsed").
"""
from __future__ import annotations

import copy
import json
import math
import os
import random
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from nas import distributed
from nas.architect import Architect
from nas.config import SearchConfig, is_execution_key, search_config_from_dict
from nas.cost import CostTable
from nas.derive import check_arch_finite, make_genotype
from nas.loss import sr_loss
from nas.select import perturbation_select
from nas.spaces import space_of
from search_spaces.genotype import Genotype, save_genotype
from srcore.checkpoint import CheckpointError, find_non_finite, load_file, save_checkpoint
from srcore.config import ConfigError, to_dict
from srcore.data import DataError, PatchDataset
from srcore.jsonl import trim_jsonl
from srcore.metrics import psnr

CHECKPOINT = "checkpoint.pt"
HISTORY = "alpha_history.jsonl"
GENOTYPE = "genotype.yaml"
REPORT = "collapse_report.json"
COST_TABLE = "cost_table.json"

Callback = Callable[[str, dict], None]


class NonFiniteSearch(RuntimeError):
    """A loss term, weight or arch parameter became NaN or Inf; the search stopped without saving it."""


# ----------------------------------------------------------------------------------------------------
# data: a seeded (or DLSR's ranged) split of the training images, seeded batch orders


def split_dataset(ds: PatchDataset, val_fraction: float, seed: int, train_range: tuple[int, int] | None = None,
                  val_range: tuple[int, int] | None = None) -> tuple[PatchDataset, PatchDataset]:
    """Two copies of `ds` over its images: (train, val). With ranges, images first..last (1-based,
    inclusive, in the dataset's sorted order; they may overlap, as DLSR's 1-3000 / 3000-3450 do);
    otherwise a seeded permutation puts round(fraction * N) >= 1 images in val and the rest in train."""
    n = len(ds.images)
    if train_range is not None and val_range is not None:
        for key, (a, b) in (("data.train_range", train_range), ("data.val_range", val_range)):
            if b > n:
                raise DataError(f"{key} = [{a}, {b}]: the training set has only {n} images")
        parts_idx = (list(range(train_range[0] - 1, train_range[1])), list(range(val_range[0] - 1, val_range[1])))
    else:
        n_val = min(max(1, round(val_fraction * n)), n - 1) if n > 1 else 0
        if n_val == 0:
            raise DataError(f"the training set has {n} image(s); a train/validation split needs at least 2")
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
        parts_idx = (sorted(order[n_val:]), sorted(order[:n_val]))
    parts = []
    for idx in parts_idx:
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
# schedules (pure functions of the step) and small pieces of the loop


def learning_rate(cfg: SearchConfig, epoch: int) -> float:
    """The weight learning rate of `epoch`."""
    o = cfg.optim
    if o.schedule == "multistep":
        return o.lr * o.gamma ** sum(epoch >= m for m in o.milestones)
    if o.schedule == "cosine":
        return o.min_lr + (o.lr - o.min_lr) * (1 + math.cos(math.pi * epoch / max(cfg.loop.epochs, 1))) / 2
    return o.lr


def temperature(cfg: SearchConfig, step: int, batches_per_epoch: int, total_steps: int) -> float:
    """tau of the op mixture at `step`: tau_start until the end of warm-up, then geometric to tau_end
    at the last step."""
    a = cfg.arch
    if a.tau_start == a.tau_end:
        return a.tau_start
    warm = a.warmup_epochs * batches_per_epoch
    frac = min(max((step - warm) / max(total_steps - 1 - warm, 1), 0.0), 1.0)
    return a.tau_start * (a.tau_end / a.tau_start) ** frac


def cost_ramp(cfg: SearchConfig, step: int, batches_per_epoch: int) -> float:
    """The cost term's factor at `step`: 0 during warm-up, then linear to 1 over cost.ramp_epochs."""
    warm = cfg.arch.warmup_epochs * batches_per_epoch
    if step < warm:
        return 0.0
    ramp = cfg.cost.ramp_epochs * batches_per_epoch
    return 1.0 if ramp <= 0 else min((step - warm + 1) / ramp, 1.0)


def smoothing_noise(cfg: SearchConfig, step: int, shape: torch.Size) -> torch.Tensor | None:
    """SDARTS-RS noise U(-eps, eps) on the mixture weights of weight step `step` (seeded by the step)."""
    eps = cfg.arch.smoothing
    if eps <= 0:
        return None
    g = torch.Generator().manual_seed(cfg.loop.seed * 1_000_003 + step + 7_919)
    return (torch.rand(shape, generator=g, dtype=torch.float64) * 2 - 1).mul(eps).float()


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


class _GradMeans:
    """Running sums of the arch steps' loss and cost gradients between two history lines."""

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self.n, self.loss, self.cost = 0, None, None

    def add(self, loss_grads: list[torch.Tensor], cost_grad: torch.Tensor) -> None:
        grads = [g.detach().double().cpu() for g in loss_grads]
        cost = cost_grad.detach().double().cpu()
        if self.n == 0:
            self.loss, self.cost = grads, cost
        else:
            self.loss = [a + b for a, b in zip(self.loss, grads)]
            self.cost = self.cost + cost
        self.n += 1

    def state(self) -> dict:
        return {"n": self.n, "loss": self.loss, "cost": self.cost}

    def load_state(self, state: dict) -> None:
        self.n, self.loss, self.cost = state["n"], state["loss"], state["cost"]

    def entry(self) -> dict:
        if self.n == 0:
            return {"arch_steps": 0, "grad_alpha_loss": None, "grad_alpha_cost": None, "grad_beta_loss": None}
        return {"arch_steps": self.n, "grad_alpha_loss": (self.loss[0] / self.n).tolist(),
                "grad_alpha_cost": (self.cost / self.n).tolist(),
                "grad_beta_loss": [(g / self.n).tolist() for g in self.loss[1:]]}


# ----------------------------------------------------------------------------------------------------
# the search


@dataclass
class Position:
    """Where the search is: global step, training epoch/batch, validation epoch/batch (with
    replacement sampling, val_batch counts the validation batches drawn)."""

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
    report: dict | None = None


class Search:
    """One search run in `out_dir` (see the module docstring). Build, then `run()`."""

    def __init__(self, config: SearchConfig, out_dir: str | os.PathLike, device: str | torch.device | None = None,
                 callback: Callback | None = None):
        self.cfg, self.out = config, Path(out_dir)
        self.device = torch.device(device if device is not None else config.run.device)
        self.rank, self.world = distributed.world()
        self.callback = (callback or (lambda event, info: None)) if self.rank == 0 else (lambda event, info: None)
        cfg = config
        if cfg.data.batch_size % self.world:
            raise ConfigError(f"data.batch_size = {cfg.data.batch_size} does not split evenly over {self.world} "
                              "processes")
        seed = cfg.loop.seed
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)

        source = PatchDataset(cfg.data.train, cfg.space.scale, cfg.data.gt_size, augment=cfg.data.augment,
                              repeat=cfg.data.repeat, seed=seed, cache=cfg.data.cache, cache_dir=cfg.data.cache_dir)
        self.train_ds, self.val_ds = split_dataset(source, cfg.data.val_fraction, seed, cfg.data.train_range,
                                                   cfg.data.val_range)
        self.batches_per_epoch = len(epoch_batches(len(self.train_ds), cfg.data.batch_size, seed, 0))
        if self.batches_per_epoch == 0 or len(self.val_ds) < cfg.data.batch_size:
            raise DataError(f"data.batch_size = {cfg.data.batch_size} is larger than the train split "
                            f"({len(self.train_ds)} patches) or the validation split ({len(self.val_ds)} patches) "
                            "per epoch; raise data.repeat or lower the batch size")
        self.total_steps = self.batches_per_epoch * cfg.loop.epochs
        self.eval_batch = self._eval_patches()

        self.space = space_of(cfg.space)  # nas/spaces.py: dlsr or esr
        self.model = self.space.supernet(cfg.space, cfg.arch.init_std).to(self.device)
        if cfg.space.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.weight_params = self.model.weight_parameters()
        self.arch_params = self.model.arch_parameters()
        self.arch_names = ["alphas", *(f"betas.{i}" for i in range(len(self.arch_params) - 1))]
        self.optimizer = torch.optim.Adam(self.weight_params, lr=cfg.optim.lr, betas=tuple(cfg.optim.adam_betas),
                                          weight_decay=cfg.optim.weight_decay)
        self.cost_table: CostTable | None = None
        self.cost_model: nn.Module | None = None
        self.architect = Architect(self.model, cfg.arch, self.loss, weight_optimizer=self.optimizer,
                                   reduce=distributed.average)
        self.pos = Position()
        self.metrics: dict = {}
        self.collapse_message: str | None = None
        self.tau, self.ramp = 1.0, 0.0
        self.grad_means = _GradMeans()
        self.loss_sum, self.loss_n = 0.0, 0  # this process's training losses since the last log line
        self.step_terms: dict[str, float] = {}  # the arch step's terms of the current step (checked with the loss)
        self.saved_step: int | None = None  # the step of the last checkpoint written or resumed
        self._loss_window = {"sum": 0.0, "n": 0}  # the loss window over all processes, as last saved

    # --- pieces --------------------------------------------------------------------------------------------

    def loss(self, model: nn.Module, batch: dict) -> torch.Tensor:
        return sr_loss(model(batch["lq"]), batch["gt"], self.cfg.loss.hfen_weight, self.cfg.loss.hfen_mode)

    def penalty(self, alphas: torch.Tensor) -> torch.Tensor:
        return self.cost_model.penalty(alphas, self.tau, self.ramp)

    def _eval_patches(self) -> dict[str, torch.Tensor] | None:
        """Fixed validation patches (no augmentation, their own seed) for the PSNR shown in progress; each
        process keeps its share."""
        n = min(self.cfg.loop.eval_patches, len(self.val_ds))
        if not self.cfg.loop.eval_every or n == 0:
            return None
        ds = copy.copy(self.val_ds)
        ds.augment, ds.seed = False, self.cfg.loop.seed + 1
        mine = distributed.shard(list(range(n)))
        return load_batch(ds, 0, mine, self.device, self.cfg.space.channels_last) if mine else {"lq": [], "gt": []}

    @torch.no_grad()
    def evaluate(self) -> float | None:
        """Mean PSNR (Y, `scale` pixels shaved, 8-bit as the literature) of the fixed validation patches."""
        if self.eval_batch is None:
            return None
        values = [psnr(self.model(lq[None])[0], gt, self.cfg.space.scale)
                  for lq, gt in zip(self.eval_batch["lq"], self.eval_batch["gt"])]
        total, count = distributed.sum_floats([sum(values), len(values)])
        return total / count

    def _setup_cost(self, table: dict | None) -> None:
        cfg = self.cfg
        if cfg.cost.kind == "none":
            return
        if table is None:  # measured once, by process 0, for every process
            table = distributed.broadcast(self.space.cost_table(cfg.space, cfg.cost, self.device).to_dict()
                                          if self.rank == 0 else None)
        self.cost_table = CostTable.from_dict(table)
        self.cost_model = self.space.cost_model(self.cost_table, cfg.space, cfg.cost).to(self.device)
        self.architect.penalty = self.penalty
        if self.rank == 0:
            (self.out / COST_TABLE).write_text(json.dumps(self.cost_table.to_dict(), indent=2) + "\n")

    def next_val_batch(self) -> dict[str, torch.Tensor]:
        """The next global validation batch (this process's share): the next batch of the current
        validation epoch, or `batch_size` patches drawn with replacement (`data.val_sampling`)."""
        cfg, p = self.cfg, self.pos
        if cfg.data.val_sampling == "replacement":
            g = torch.Generator().manual_seed((cfg.loop.seed + 7) * 1_000_003 + p.val_batch)
            indices = torch.randint(len(self.val_ds), (cfg.data.batch_size,), generator=g).tolist()
            epoch = p.val_batch
        else:
            batches = epoch_batches(len(self.val_ds), cfg.data.batch_size, cfg.loop.seed + 7, p.val_epoch)
            if p.val_batch >= len(batches):
                p.val_epoch, p.val_batch = p.val_epoch + 1, 0
                batches = epoch_batches(len(self.val_ds), cfg.data.batch_size, cfg.loop.seed + 7, p.val_epoch)
            indices, epoch = batches[p.val_batch], p.val_epoch
        p.val_batch += 1
        return load_batch(self.val_ds, epoch, distributed.shard(indices), self.device, cfg.space.channels_last)

    def weight_step(self, batch: dict, lr: float, want_arch_grads: bool,
                    noise: torch.Tensor | None = None) -> tuple[float, list[torch.Tensor] | None]:
        """Forward, backward (weights, plus arch params if wanted), gradients averaged over processes,
        Adam; returns this process's loss and the arch gradients. `noise` perturbs the op mixture."""
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.zero_grad(set_to_none=True)
        for a in self.arch_params:
            a.grad = None
        params = self.weight_params + (self.arch_params if want_arch_grads else [])
        self.model.noise = None if noise is None else noise.to(self.device)
        try:
            loss = self.loss(self.model, batch)
            loss.backward(inputs=params)
        finally:
            self.model.noise = None
        grads = distributed.average([p.grad if p.grad is not None else torch.zeros_like(p) for p in params])
        for p, g in zip(params, grads):
            p.grad = g
        if self.cfg.optim.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.weight_params, self.cfg.optim.grad_clip)
        self.optimizer.step()
        arch_grads = None
        if want_arch_grads:
            arch_grads = [a.grad for a in self.arch_params]
            for a in self.arch_params:
                a.grad = None
        return float(loss.detach()), arch_grads

    def arch_step(self, batch: dict, lr: float, train_grads: list[torch.Tensor] | None) -> None:
        info = self.architect.step(batch, self.next_val_batch(), train_grads=train_grads, weight_lr=lr,
                                   weight_decay=self.cfg.optim.weight_decay)
        self.grad_means.add(info["loss_grads"], info["cost_grad"])
        self.step_terms = {"val_loss": float(info["val_loss"]), "penalty": float(info["penalty"])}
        self.metrics.update(val_loss=info["val_loss"], penalty=info["penalty"])

    # --- non-finite values -----------------------------------------------------------------------------

    def _kept(self) -> str:
        if self.saved_step is None:
            return "no checkpoint had been written yet"
        return f"{self.out / CHECKPOINT} (step {self.saved_step}) is the last good checkpoint"

    def check_step(self, loss: float) -> None:
        """After each step: stop on a non-finite loss term (arch step first, then weight step) or arch
        parameter; the first bad weight tensor is named too. Every process stops together."""
        terms = {**self.step_terms, "loss": loss}
        self.step_terms = {}
        bad = [f"{k} = {v}" for k, v in terms.items() if not math.isfinite(v)]
        tensor = find_non_finite(dict(zip(self.arch_names, self.arch_params)))
        if not distributed.any_true(bool(bad) or tensor is not None):
            return
        tensor = tensor or find_non_finite(self.model.state_dict())
        what = ", ".join(bad + ([tensor] if tensor else [])) or "non-finite values on another process"
        raise NonFiniteSearch(f"non-finite values at step {self.pos.step}: {what}; the search stopped without "
                              f"saving them; {self._kept()}")

    def _check_state(self) -> None:
        """Before a checkpoint: every tensor of the model and both optimizers must be finite."""
        tensors = dict(self.model.state_dict())
        for name, opt in (("optimizer", self.optimizer), ("arch_optimizer", self.architect.optimizer)):
            for i, st in opt.state_dict()["state"].items():
                tensors.update({f"{name}.state.{i}.{k}": v for k, v in st.items()})
        bad = find_non_finite(tensors)
        if bad is not None:
            raise NonFiniteSearch(f"non-finite values at step {self.pos.step}: {bad}; not saved; {self._kept()}")

    # --- checkpoints -----------------------------------------------------------------------------------

    def state(self) -> dict:
        return {"position": vars(self.pos).copy(), "optimizer": self.optimizer.state_dict(),
                "arch_optimizer": self.architect.optimizer.state_dict(), "rng": rng_state(),
                "cost_table": self.cost_table.to_dict() if self.cost_table else None,
                "collapse": self.collapse_message, "world_size": self.world,
                "grad_means": self.grad_means.state(), "loss_window": self._loss_window}

    def save(self) -> Path:
        """Write the checkpoint (atomically, by process 0) after checking every tensor is finite."""
        path = self.out / CHECKPOINT
        self._check_state()
        total = distributed.sum_floats([self.loss_sum])[0]  # the loss window of every process (a collective)
        self._loss_window = {"sum": total, "n": self.loss_n}
        if self.rank == 0:
            save_checkpoint(path, state_dict=self.model.state_dict(), spec={"supernet": to_dict(self.cfg.space)},
                            config=to_dict(self.cfg), metrics=dict(self.metrics), step=self.pos.step,
                            genotype=self.model.genotype().to_dict(), search_state=self.state(),
                            total_steps=self.total_steps)
            self.callback("checkpoint", {"step": self.pos.step, "path": str(path)})
        self.saved_step = self.pos.step
        return path

    def load(self, path: Path) -> dict:
        ckpt = load_file(path)
        if not isinstance(ckpt, dict) or "search_state" not in ckpt:
            raise CheckpointError(f"{path}: not a search checkpoint (no search_state)")
        check_resume_config(ckpt["config"], to_dict(self.cfg), str(path))
        self.model.load_state_dict(ckpt["state_dict"], strict=True)
        st = ckpt["search_state"]
        self.optimizer.load_state_dict(st["optimizer"])
        self.architect.optimizer.load_state_dict(st["arch_optimizer"])
        self.pos = Position(**st["position"])
        self.metrics = dict(ckpt.get("metrics", {}))
        self.collapse_message = st.get("collapse")
        if "grad_means" in st:  # absent in checkpoints written before the windows were saved
            self.grad_means.load_state(st["grad_means"])
            window = st["loss_window"]  # the sum over all processes: process 0 carries it on
            self.loss_sum, self.loss_n = (window["sum"] if self.rank == 0 else 0.0), window["n"]
        set_rng_state(st["rng"])
        self.saved_step = self.pos.step
        return st

    # --- history -------------------------------------------------------------------------------------

    def history_entry(self) -> dict:
        alphas = self.model.alphas.detach().double().cpu().tolist()
        betas = [b.detach().double().cpu().tolist() for b in self.model.betas]
        entry = {"step": self.pos.step, "epoch": self.pos.epoch, "ops": self.space.choices(self.cfg.space),
                 "alpha": alphas, "beta": betas, "tau": self.tau, "cost_ramp": self.ramp, **self.grad_means.entry()}
        if self.cost_model is not None:
            entry["expected_cost"] = float(self.cost_model.expected(self.model.alphas.detach(), self.tau))
        return entry

    def _trim_history(self, step: int) -> None:
        """Drop history lines written after the checkpoint being resumed (a crash between checkpoints)."""
        if self.rank == 0:  # a torn last line (a kill mid-write) is dropped with a warning
            trim_jsonl(self.out / HISTORY, step)

    # --- the result ----------------------------------------------------------------------------------

    def report(self, genotype=None, **chosen) -> dict:
        """The collapse report (`nas.report`, `nas.esr_derive`) of the current mixture weights; `genotype` (or
        dlsr's `chosen` ops and `inputs`) says what was derived."""
        return self.space.report(self.model.alphas.detach(), [b.detach() for b in self.model.betas], self.cfg.space,
                                 self.tau, self.cost_table, self.cfg.loop.decided_prob, genotype, **chosen)

    def derive(self) -> tuple[Genotype, dict]:
        """The genotype by `derive.method`, and its collapse report (with the selection record and, with a
        cost term, the cost of the derived genotype); non-finite alphas or betas are a ValueError."""
        d = self.cfg.derive
        check_arch_finite(self.model.alphas, list(self.model.betas), str(self.out / CHECKPOINT))
        if d.method == "argmax":
            g = self.model.genotype(exclude=d.exclude)
            report = {**self.report(g), "method": "argmax"}
        else:
            chosen, inputs, record = self.perturbation_select()
            g = make_genotype(self.cfg.space, chosen, inputs)
            report = {**self.report(chosen=chosen, inputs=inputs), "method": "perturbation", "selection": record}
        if self.cost_model is not None:
            report["derived_cost"] = self.cost_model.genotype_cost(g)
        return g, report

    def perturbation_select(self):
        """`nas.select.perturbation_select` on fixed validation batches, tuning with training batches."""
        cfg = self.cfg
        val = epoch_batches(len(self.val_ds), cfg.data.batch_size, cfg.loop.seed + 11, 0)[:cfg.derive.eval_batches]
        val_batches = [load_batch(self.val_ds, 0, distributed.shard(b), self.device, cfg.space.channels_last)
                       for b in val]
        lr = learning_rate(cfg, cfg.loop.epochs - 1)

        @torch.no_grad()
        def measure() -> float:
            total = sum(float(self.loss(self.model, b)) for b in val_batches)
            return distributed.sum_floats([total])[0] / (len(val_batches) * self.world)

        def tune() -> None:
            order = epoch_batches(len(self.train_ds), cfg.data.batch_size, cfg.loop.seed + 13, 0)
            for i in range(cfg.derive.tune_steps):
                b = load_batch(self.train_ds, 0, distributed.shard(order[i % len(order)]), self.device,
                               cfg.space.channels_last)
                self.weight_step(b, lr, want_arch_grads=False)

        self.model.temperature = self.tau
        return perturbation_select(self.model, measure, tune if cfg.derive.tune_steps else None, cfg.derive.exclude)

    # --- the loop ------------------------------------------------------------------------------------------

    def run(self, resume: bool = False, stop_at: int | None = None) -> SearchResult:
        """Search until the configured epochs end (or global step `stop_at`); resume from out_dir."""
        out = self.out
        if self.rank == 0:
            out.mkdir(parents=True, exist_ok=True)
        distributed.barrier()
        _check_out_dir(out, resume)
        table = None
        if resume:
            table = self.load(out / CHECKPOINT)["cost_table"]
            self._trim_history(self.pos.step)
        elif self.rank == 0:
            (out / HISTORY).write_text("")
        self._setup_cost(table)
        self._schedule()
        self.callback("start", {"step": self.pos.step, "total_steps": self.total_steps, "resumed": resume,
                                "out": str(out), "batches_per_epoch": self.batches_per_epoch,
                                "weights": sum(p.numel() for p in self.weight_params), "world_size": self.world,
                                "train_images": len(self.train_ds.images), "val_images": len(self.val_ds.images),
                                "cost_table": self.cost_table.to_dict() if self.cost_table else None,
                                "cost_target": getattr(self.cost_model, "target", self.cfg.cost.target)})
        with _DeferredInterrupt() as interrupt, (open(out / HISTORY, "a") if self.rank == 0 else _Null()) as history:
            status = self._loop(history, interrupt, stop_at)
        self.save()
        genotype, report = self.model.genotype(), None
        if status == "finished":
            genotype, report = self.derive()
            if self.rank == 0:
                save_genotype(genotype, out / GENOTYPE)
                atomic_save_json(report, out / REPORT)
            self.callback("report", {"report": report, "path": str(out / REPORT)})
        distributed.barrier()
        self.callback("end", {"status": status, "step": self.pos.step, "genotype": self.space.describe(genotype),
                              "metrics": dict(self.metrics)})
        return SearchResult(genotype, status, self.pos.step, self.total_steps, out, dict(self.metrics), report)

    def _schedule(self) -> float:
        """Set tau and the cost ramp of the current step; returns the weight learning rate."""
        p = self.pos
        self.tau = temperature(self.cfg, p.step, self.batches_per_epoch, self.total_steps)
        self.ramp = cost_ramp(self.cfg, p.step, self.batches_per_epoch)
        self.model.temperature = self.tau
        return learning_rate(self.cfg, p.epoch)

    def _loop(self, history, interrupt: _DeferredInterrupt, stop_at: int | None) -> str:
        cfg, p = self.cfg, self.pos
        loop, seed, algorithm = cfg.loop, cfg.loop.seed, cfg.arch.algorithm
        t_last, timed = time.perf_counter(), 0  # steps since t_last (the loss window may hold earlier ones)
        while p.epoch < loop.epochs:
            batches = epoch_batches(len(self.train_ds), cfg.data.batch_size, seed, p.epoch)
            while p.batch < len(batches):
                if distributed.any_true(interrupt.requested):
                    return "interrupted"
                if stop_at is not None and p.step >= stop_at:
                    return "stopped"
                lr = self._schedule()
                batch = load_batch(self.train_ds, p.epoch, distributed.shard(batches[p.batch]), self.device,
                                   cfg.space.channels_last)
                arch_on = p.epoch >= cfg.arch.warmup_epochs and p.step % cfg.arch.every == 0
                if arch_on and algorithm in ("first_order", "second_order"):  # DARTS: arch step first
                    self.arch_step(batch, lr, None)
                noise = smoothing_noise(cfg, p.step, self.model.alphas.shape)
                loss, train_grads = self.weight_step(batch, lr, arch_on and algorithm == "dlsr_reuse", noise)
                if arch_on and algorithm in ("dlsr_exact", "dlsr_reuse"):  # DLSR: after the weight step
                    self.arch_step(batch, lr, train_grads)
                p.step, p.batch = p.step + 1, p.batch + 1
                self.check_step(loss)
                self.loss_sum, self.loss_n, timed = self.loss_sum + loss, self.loss_n + 1, timed + 1
                if loop.eval_every and p.step % loop.eval_every == 0:
                    self.metrics["val_psnr"] = self.evaluate()
                    self.callback("eval", {"step": p.step, "psnr": self.metrics["val_psnr"]})
                if p.step % loop.log_every == 0 or p.step == self.total_steps:
                    self.metrics["loss"] = distributed.sum_floats([self.loss_sum])[0] / (self.loss_n * self.world)
                    now = time.perf_counter()
                    status = self._log(history, lr, arch_on, (now - t_last) / timed)
                    t_last, timed, self.loss_sum, self.loss_n = now, 0, 0.0, 0
                    if status:
                        return status
                if loop.checkpoint_every and p.step % loop.checkpoint_every == 0:
                    self.save()
            p.epoch, p.batch = p.epoch + 1, 0
        return "finished"

    def _log(self, history, lr: float, arch_on: bool, sec_per_step: float) -> str | None:
        history.write(json.dumps(self.history_entry()) + "\n")
        history.flush()
        self.grad_means.reset()
        p, g = self.pos, self.model.genotype()
        info = {"step": p.step, "epoch": p.epoch, "total_steps": self.total_steps, "lr": lr, "arch": arch_on,
                "sec_per_step": sec_per_step, "genotype": self.space.describe(g), "tau": self.tau, **self.metrics}
        if self.cost_model is not None:
            info["expected_cost"] = float(self.cost_model.expected(self.model.alphas.detach(), self.tau))
            info["cost_unit"] = self.cost_table.unit
        self.callback("step", info)
        loop = self.cfg.loop
        if loop.collapse_check:
            rep = self.report()
            msg = f"collapse: {rep['verdict']}" if rep["degenerate"] and not rep["summary"]["undecided"] else None
            if msg and msg != self.collapse_message:
                self.callback("collapse", {"step": p.step, "message": msg})
            self.collapse_message = msg
            if msg and loop.collapse_action == "stop":
                return "collapsed"
        return None


class _Null:
    """A write-nothing file for processes other than 0."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def write(self, text: str) -> None:
        pass

    def flush(self) -> None:
        pass


def atomic_save_json(obj: dict, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2) + "\n")
    os.replace(tmp, path)


def check_resume_config(saved: dict, new: dict, source: str) -> None:
    """Refuse to resume with a config that changes what the search computes, naming the first such key;
    execution keys (`nas.config.EXECUTION_KEYS`) may change."""
    for key in _diff_keys(saved, new):
        if not is_execution_key(key):
            old, value = _get(saved, key), _get(new, key)
            raise CheckpointError(f"{source}: {key} = {value!r} differs from the checkpoint's {old!r}; it changes what "
                                  "the search computes, so a resumed search cannot change it (only run.*, derive.*, "
                                  "space.fuse, space.channels_last, data.cache, data.cache_dir and the logging, "
                                  "evaluation and checkpoint keys of loop may change)")


def _get(d: dict, key: str):
    for part in key.split("."):
        d = d.get(part) if isinstance(d, dict) else None
    return d


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


def run_search(config: SearchConfig, out_dir: str | os.PathLike, *, device: str | torch.device | None = None,
               resume: bool = False, stop_at: int | None = None, callback: Callback | None = None) -> SearchResult:
    """Build a `Search` and run it (see the module docstring); `device` defaults to config.run.device."""
    _check_out_dir(Path(out_dir), resume)
    return Search(config, out_dir, device, callback).run(resume=resume, stop_at=stop_at)


def config_from_checkpoint(path: str | os.PathLike) -> SearchConfig:
    """The SearchConfig stored in a search checkpoint (for `--resume` without `--config`)."""
    ckpt = load_file(path)
    if not isinstance(ckpt, dict) or "search_state" not in ckpt:
        raise CheckpointError(f"{path}: not a search checkpoint (no search_state)")
    return search_config_from_dict(ckpt["config"], str(path))


def load_search(path: str | os.PathLike, config: SearchConfig | None = None,
                device: str | torch.device | None = None) -> Search:
    """A `Search` restored from a checkpoint (its folder or the file), ready to `derive()` or `report()`."""
    path = Path(path)
    ckpt = path / CHECKPOINT if path.is_dir() else path
    cfg = config or config_from_checkpoint(ckpt)
    search = Search(cfg, ckpt.parent, device)
    table = search.load(ckpt)["cost_table"]
    if table is not None:
        search.cost_table = CostTable.from_dict(table)
        search.cost_model = search.space.cost_model(search.cost_table, cfg.space, cfg.cost).to(search.device)
    search._schedule()
    return search
