"""The distillation training loop, as library code: `Trainer(cfg, out_dir, device).fit(resume=...)`.

One step: a global batch of (lq, gt) patches is split over the processes; the frozen teachers compute
their targets under no_grad (SR outputs, features by module path, DUKD zoom-in/zoom-out outputs, the
DIPNet enhanced HR); the student runs on lq (and on the upcycled inputs), the `Criterion` returns every
weighted term and the total, and one optimizer step follows (clipping, EMA).

Determinism: the model is initialised from `loop.seed`; the data order is a function of (seed, epoch)
and the position in it a function of the step; every other random choice is drawn from (seed, step,
sample index). So a run resumed from last.pt continues bit-identically on CPU, and a global batch is the
same set of patches whatever the number of processes.

Files in `out_dir` (rank 0 only): last.pt (weights + everything needed to resume, written atomically),
best.pt (best mean PSNR-Y over the validation sets; the last weights when there is no validation data; it
exists whenever training ends), metrics.jsonl (one JSON object per log/validation, and the KD gate's
scores at step 0). Both checkpoints carry the network spec, the config and the metrics, so
`tools/evaluate.py --checkpoint best.pt` needs nothing else.

Non-finite values never reach the weights: a non-finite loss raises `NonFiniteLoss` before any update,
leaving the last good checkpoint as it was; a finite loss with non-finite gradients skips that step (no
optimizer or EMA update; counted as `skipped_steps`) and `loop.max_bad_steps` of them in a row raise
`NonFiniteGradients`.

Before training, each teacher is scored against bicubic on the validation sets (`val.kd_gate_db`,
distill/teachers.py): a teacher the user named that does not beat bicubic by the margin is an error; one
trained here (`trained_here`) is dropped with a warning, and with no teacher left the KD terms are too.

DDP: if torch.distributed is initialised, the student (with the adapters) is wrapped in
DistributedDataParallel; every rank scores its share of the validation images and the rows are gathered,
so no rank waits in a collective while another validates. Mixed precision (autocast) is used on CUDA only.
No logging is configured here (warnings go to the `distill.trainer` logger); progress goes to `Callback`s.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import logging
import math
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

from search_spaces.esr_genotype import ESRGenotype
from search_spaces.genotype import VERSION as GENOTYPE_VERSION
from search_spaces.genotype import load_genotype
from srcore.checkpoint import read_checkpoint, save_checkpoint
from srcore.config import ConfigError, read_back, to_dict
from srcore.data import BenchmarkSet, DataError, PatchDataset
from srcore.evaluation import evaluate_model, summarize
from srcore.jsonl import trim_jsonl
from srcore.modelspec import arch_spec, build_model, genotype_spec, load_checkpoint_model, spec_scale

from .config import StudentConfig, TrainConfig
from .features import FeatureHooks, probe_channels
from .losses import Criterion, LossInputs, needs_teacher
from .teachers import GateResult, describe, freeze, gate, load_teacher
from .upcycle import InvertibleAug, enhance_hr, sample_rngs, zoom_in, zoom_out

log = logging.getLogger(__name__)


TEST_SETS = {"set5", "set14", "b100", "bsd100", "urban100", "manga109"}  # benchmark sets papers report on


class NonFiniteLoss(RuntimeError):
    """The loss became NaN or inf; the run stopped before updating the weights."""


class NonFiniteGradients(NonFiniteLoss):
    """`loop.max_bad_steps` steps in a row had non-finite gradients (each was skipped); the run stopped."""


@dataclass
class TrainResult:
    step: int
    best_psnr: float
    metrics: dict
    train_s: float
    out_dir: Path


class Callback:
    """Hooks for progress and logging; every method is optional."""

    def on_train_start(self, trainer: Trainer, start_step: int, total_steps: int) -> None: ...
    def on_step_start(self, trainer: Trainer, step: int) -> None: ...
    def on_step_end(self, trainer: Trainer, step: int, losses: dict[str, float]) -> None: ...
    def on_log(self, trainer: Trainer, step: int, record: dict) -> None: ...
    def on_validation(self, trainer: Trainer, step: int, metrics: dict) -> None: ...
    def on_checkpoint(self, trainer: Trainer, path: Path, step: int) -> None: ...
    def on_train_end(self, trainer: Trainer, result: TrainResult) -> None: ...


# ---------------------------------------------------------------------------------------------------------
# building blocks


def build_student(sc: StudentConfig) -> tuple[nn.Module, dict]:
    """The student (untrained, or the weights of `sc.checkpoint`) and its checkpoint spec."""
    if sc.checkpoint is not None:
        model, ckpt = load_checkpoint_model(sc.checkpoint)
        if spec_scale(ckpt["spec"]) != sc.scale:
            raise ConfigError(f"student.checkpoint {sc.checkpoint} is x{spec_scale(ckpt['spec'])}, "
                              f"but student.scale is {sc.scale}")
        return model.train(), ckpt["spec"]
    if sc.genotype is not None:
        g = load_genotype(sc.genotype)
        if g.scale != sc.scale:
            raise ConfigError(f"student.genotype {sc.genotype} is for x{g.scale}, but student.scale is {sc.scale}")
        if isinstance(g, ESRGenotype):
            spec = genotype_spec(esr_student(g, sc))
            return build_model(spec), spec
        changes: dict = {"rgb_range": sc.rgb_range, "version": GENOTYPE_VERSION}
        if sc.channels is not None:
            changes["channels"] = sc.channels
        if sc.num_cells is not None:
            n = sc.num_cells
            changes.update(num_cells=n, inputs=g.inputs[:max(n - 2, 0)])
            if g.cells is not None:
                changes["cells"] = g.cells[:n]
        if sc.skip is not None:
            changes["skip"] = sc.skip
        spec = genotype_spec(dataclasses.replace(g, **changes))
    else:
        spec = arch_spec(sc.arch, sc.scale, **sc.kwargs)
    return build_model(spec), spec


def esr_student(g: ESRGenotype, sc: StudentConfig) -> ESRGenotype:
    """An esr genotype as the student: `channels` and `skip` may be overridden; its blocks, input
    normalisation (input_scale, input_mean) and the rest are the genotype's (student.rgb_range is for dlsr)."""
    if sc.num_cells is not None:
        raise ConfigError(f"student.num_cells = {sc.num_cells}: {sc.genotype} is an esr genotype, whose blocks are "
                          "listed in the genotype; leave num_cells unset")
    changes = {k: v for k, v in (("channels", sc.channels), ("skip", sc.skip)) if v is not None}
    try:
        return dataclasses.replace(g, **changes) if changes else g
    except ValueError as e:
        raise ConfigError(f"student: {e}") from None


def student_skip(sc: StudentConfig) -> str:
    """The image-space skip the student will have (its genotype's, the override, or the arch's `skip` kwarg)."""
    if sc.genotype is None:
        return sc.kwargs.get("skip", "none")
    return sc.skip if sc.skip is not None else load_genotype(sc.genotype).skip


def without_kd(cfg: TrainConfig) -> TrainConfig:
    """`cfg` with no teacher and only the loss terms that need none (stage weights of dropped terms too)."""
    keep = [t for t in cfg.loss if not needs_teacher(t.kind)]
    if not keep:
        raise ConfigError("every loss term needs a teacher; add an l1 term to train without one")
    names = {t.name for t in keep}
    stages = [dataclasses.replace(st, weights={k: v for k, v in st.weights.items() if k in names})
              for st in cfg.stages]
    return dataclasses.replace(cfg, teacher=[], loss=keep, stages=stages)


def grad_norm(params: list[torch.Tensor]) -> torch.Tensor:
    """The global L2 norm of the gradients (inf or nan if any gradient is)."""
    grads = [p.grad.detach().float() for p in params if p.grad is not None]
    if not grads:
        return torch.zeros(())
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Learning rate at `step`: linear warm-up, then cosine to min_lr, multistep decay, or constant."""
    base, sc, total = cfg.optim.lr, cfg.schedule, cfg.loop.steps
    if step < sc.warmup_steps:
        return base * (step + 1) / sc.warmup_steps
    if sc.name == "cosine":
        t = (step - sc.warmup_steps) / max(1, total - sc.warmup_steps)
        return sc.min_lr + (base - sc.min_lr) * 0.5 * (1.0 + math.cos(math.pi * min(t, 1.0)))
    if sc.name == "multistep":
        return base * sc.gamma ** sum(step >= m for m in sc.milestones)
    return base


class EMA:
    """Exponential moving average of a model's weights (buffers are copied).

    The decay warms up as min(decay, (1 + n) / (10 + n)) after n updates (TensorFlow's and timm's EMA
    warm-up), so a short run's average is not dominated by the random initial weights: with a fixed 0.999,
    78% of the average would still be the initialisation after 250 steps.
    """

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    def decay_at(self, updates: int) -> float:
        return min(self.decay, (1.0 + updates) / (10.0 + updates))

    @torch.no_grad()
    def update(self, model: nn.Module, updates: int) -> None:
        """Fold in `model` as the average's (updates + 1)-th update (updates = the step index, from 0)."""
        d = self.decay_at(updates)
        for e, p in zip(self.model.parameters(), model.parameters(), strict=True):
            e.lerp_(p.detach(), 1.0 - d)
        for e, b in zip(self.model.buffers(), model.buffers(), strict=True):
            e.copy_(b)


class ShardSampler(Sampler[int]):
    """Epoch `epoch`'s permutation of range(n) cut into whole global batches; from global batch `start` on,
    yields this rank's share of each (positions rank, rank + world, ... of the batch, as
    DistributedSampler strides), so the union over ranks of a step's samples is the global batch."""

    def __init__(self, n: int, global_batch: int, rank: int, world: int, seed: int, epoch: int, start: int = 0):
        self.n, self.batch, self.rank, self.world = n, global_batch, rank, world
        self.seed, self.epoch, self.start = seed, epoch, start
        self.steps = n // global_batch

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        perm = torch.randperm(self.n, generator=g)[: self.steps * self.batch].view(self.steps, self.batch)
        return iter(perm[self.start:, self.rank::self.world].reshape(-1).tolist())

    def __len__(self) -> int:
        return (self.steps - self.start) * (self.batch // self.world)


class IndexedPatches(Dataset):
    """PatchDataset items plus their dataset index (for per-sample random draws and the teacher cache)."""

    def __init__(self, ds: PatchDataset):
        self.ds = ds

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int) -> dict:
        item = self.ds[i]
        item["index"] = i
        return item


class StudentStep(nn.Module):
    """Student + criterion (with its adapters): the module DDP wraps. forward -> {term: value, "total"}."""

    def __init__(self, student: nn.Module, criterion: Criterion):
        super().__init__()
        self.student, self.criterion = student, criterion

    def forward(self, lq: torch.Tensor, gt: torch.Tensor, targets: dict) -> dict[str, torch.Tensor]:
        paths = self.criterion.student_paths()
        if paths:
            with FeatureHooks(self.student, paths) as hooks:
                sr = self.student(lq)
                s_feats = dict(zip(paths, hooks.take(), strict=True))
        else:
            sr, s_feats = self.student(lq), {}
        x = LossInputs(lq=lq, gt=gt, sr=sr, s_feats=s_feats, t_sr=targets.get("t_sr", []),
                       anchor_weights=targets.get("anchor_weights", []), t_feats=targets.get("t_feats", {}),
                       zoom_in_target=targets.get("zoom_in_target"), zoom_out_target=targets.get("zoom_out_target"),
                       enhanced_hr=targets.get("enhanced_hr"))
        if "zoom_in_input" in targets:
            x.zoom_in_sr = targets["zoom_in_aug"].inverse(self.student(targets["zoom_in_input"]))
        if "zoom_out_input" in targets:
            x.zoom_out_sr = self.student(targets["zoom_out_input"])
        return self.criterion(x)


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


# ---------------------------------------------------------------------------------------------------------
# the trainer


def resume_diff(saved: dict, cfg: TrainConfig) -> list[str]:
    """The keys in which `cfg` differs from a run's saved config in a way that forbids resuming it: everything
    that shapes the trajectory or picks best.pt (loop.steps sets the cosine schedule's length, val the data that
    chooses best.pt). Logging and checkpoint cadence, and where decoded images are kept (data.cache,
    data.cache_dir), may change."""
    now, saved = to_dict(cfg), read_back(TrainConfig, saved)
    for d in (now, saved):  # the same patches either way
        d["data"] = {k: v for k, v in d.get("data", {}).items() if k not in ("cache", "cache_dir")}
    fixed = ("student", "teacher", "data", "optim", "schedule", "loss", "stages", "val")
    diff = [k for k in fixed if saved.get(k) != now.get(k)]
    return diff + [f"loop.{k}" for k in ("seed", "steps") if saved.get("loop", {}).get(k) != now["loop"][k]]


class Trainer:
    """Trains `cfg.student` from `cfg.teacher` (or `teachers`, already loaded) into `out_dir`."""

    def __init__(self, cfg: TrainConfig, out_dir: str | Path, device: str | torch.device = "cpu",
                 callbacks: list[Callback] | tuple[Callback, ...] = (), teachers: list[nn.Module] | None = None):
        self.cfg, self.out_dir, self.device = cfg, Path(out_dir), torch.device(device)
        self.callbacks = list(callbacks)
        self.rank, self.world = _world()
        self._seed()
        self._build_student()
        self._build_teachers(teachers)
        self._build_data()
        self._gate_teachers(explicit=teachers is not None)
        self._build_loss_and_optimizer()
        self._wrap_for_ddp_and_amp()
        self.best_psnr = -math.inf
        self.last_saved_step: int | None = None
        self.train_s = 0.0
        self.skipped_steps, self.bad_in_row = 0, 0  # steps skipped for non-finite gradients: total, in a row

    # --- construction, in order --------------------------------------------------------------------------
    def _seed(self) -> None:
        if self.cfg.loop.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.benchmark = False
        torch.manual_seed(self.cfg.loop.seed)

    def _build_student(self) -> None:
        self.student, self.spec = build_student(self.cfg.student)
        self.student.to(self.device)
        if self.cfg.loop.channels_last:
            self.student.to(memory_format=torch.channels_last)

    def _build_teachers(self, teachers: list[nn.Module] | None) -> None:
        """Teachers from the config, or the ones handed in; frozen either way."""
        cfg = self.cfg
        if teachers is None:
            teachers = [load_teacher(t, cfg.student.scale, self.device) for t in cfg.teacher]
        self.teachers = [freeze(t, self.device) for t in teachers]
        if cfg.needs_teacher() and not self.teachers:
            raise ConfigError("the loss has distillation terms but no teacher is configured (teacher: [...])")
        self.anchor_weights = [t.weight for t in cfg.teacher] if cfg.teacher else [1.0] * len(self.teachers)

    def _build_data(self) -> None:
        """Training patches (this rank's share of each global batch) and the validation sets (every rank
        scores its share of them, so no rank waits for another's validation)."""
        cfg, d, scale = self.cfg, self.cfg.data, self.cfg.student.scale
        if d.batch_size % self.world:
            raise ConfigError(f"data.batch_size {d.batch_size} does not split evenly over {self.world} processes")
        self.local_batch = d.batch_size // self.world
        sizes = [d.gt_size] + [st.gt_size for st in cfg.stages if st.gt_size]
        for g in sizes:
            if g % scale:
                raise ConfigError(f"HR patch size {g} is not divisible by the scale {scale}")
        self.dataset = PatchDataset(d.train, scale, max(sizes), augment=d.augment, repeat=d.repeat, seed=cfg.loop.seed,
                                    cache=d.cache, cache_dir=d.cache_dir)
        self.dataset.gt_size = d.gt_size
        self.steps_per_epoch = len(self.dataset) // d.batch_size
        if self.steps_per_epoch == 0:
            raise DataError(f"{d.train}: {len(self.dataset)} patches per epoch is less than one batch of "
                            f"{d.batch_size}; raise data.repeat")
        self.cache: dict | None = {} if d.cache_teacher else None
        self.val_sets: list[BenchmarkSet] = []
        for root in cfg.val.data:
            ds = BenchmarkSet(root, scale)
            self.val_sets.append(ds.head(cfg.val.max_images) if cfg.val.max_images else ds)
        chooses = cfg.val.every and cfg.loop.steps > cfg.val.every  # several validations: best.pt is a choice
        tests = [ds.name for ds in self.val_sets if ds.name.lower() in TEST_SETS]
        if chooses and tests and self.rank == 0:
            log.warning(f"val.data includes the test set(s) {', '.join(tests)} and best.pt is chosen on it: numbers "
                        "on those sets from best.pt are biased by that choice (validate on held-out training "
                        "images, or score last.pt)")

    def _gate_teachers(self, explicit: bool) -> None:
        """Score each teacher against bicubic on the validation sets (see distill/teachers.py). A weak teacher
        the user named is an error; a weak one trained here is dropped with a warning (and with no teacher
        left, so are the KD terms)."""
        cfg, margin = self.cfg, self.cfg.val.kd_gate_db
        self.gate_results: list[GateResult] = []
        if margin is None or not self.val_sets or not self.teachers or not cfg.needs_teacher():
            return
        entries = cfg.teacher if cfg.teacher and not explicit else [None] * len(self.teachers)
        keep = []
        for t, tc in zip(self.teachers, entries, strict=True):
            r = gate(t, describe(tc) if tc else "teacher", self.val_sets, margin, self.device)
            self.gate_results.append(r)
            if r.passed:
                log.info(r.message())
                keep.append((t, tc))
            elif tc is None or not tc.trained_here:
                raise ConfigError(f"{r.message()}: distilling from it would pull the student below bicubic; "
                                  "name a stronger teacher, or set val.kd_gate_db: null to use it anyway")
            else:
                log.warning(f"{r.message()}: not used for KD")
        if len(keep) == len(self.teachers):
            return
        if keep:
            self.teachers = [t for t, _ in keep]
            self.cfg = dataclasses.replace(cfg, teacher=[tc for _, tc in keep])
            self.anchor_weights = [tc.weight for _, tc in keep]
        else:
            log.warning("no teacher left: training without distillation (loss terms "
                        f"{', '.join(t.name for t in cfg.loss if needs_teacher(t.kind))} dropped)")
            self.teachers, self.anchor_weights, self.cfg = [], [], without_kd(cfg)

    def _build_loss_and_optimizer(self) -> None:
        cfg = self.cfg
        s_paths = list(dict.fromkeys(p for t in cfg.loss for p in t.student))
        t_paths = list(dict.fromkeys(p for t in cfg.loss for p in t.teacher))
        chans = {f"s:{p}": c for p, c in zip(s_paths, probe_channels(self.student, s_paths, device=self.device),
                                              strict=True)}
        if t_paths:
            chans.update({f"t:{p}": c for p, c in zip(
                t_paths, probe_channels(self.teachers[0], t_paths, device=self.device), strict=True)})
        self.criterion = Criterion(cfg.loss, chans).to(self.device)
        self.params = [p for p in list(self.student.parameters()) + list(self.criterion.parameters())
                       if p.requires_grad]
        opt_cls = torch.optim.AdamW if cfg.optim.name == "adamw" else torch.optim.Adam
        self.optimizer = opt_cls(self.params, lr=cfg.optim.lr, betas=tuple(cfg.optim.betas),
                                 weight_decay=cfg.optim.weight_decay)
        self.ema = EMA(self.student, cfg.optim.ema) if cfg.optim.ema > 0 else None

    def _wrap_for_ddp_and_amp(self) -> None:
        lp = self.cfg.loop
        self.step_module: nn.Module = StudentStep(self.student, self.criterion)
        if self.world > 1:
            self.step_module = nn.parallel.DistributedDataParallel(self.step_module, find_unused_parameters=True)
        self.amp = self.device.type == "cuda" and lp.amp
        self.amp_dtype = torch.float16 if lp.amp_dtype == "float16" else torch.bfloat16
        self.scaler = torch.amp.GradScaler("cuda") if self.amp and self.amp_dtype == torch.float16 else None

    # --- schedule and data ---------------------------------------------------------------------------------
    def stage_at(self, step: int) -> tuple[int, dict[str, float]]:
        """(HR patch size, loss weights) in force at `step`; stages apply cumulatively from their start."""
        gt_size, weights = self.cfg.data.gt_size, {t.name: t.weight for t in self.cfg.loss}
        for st in self.cfg.stages:
            if st.start <= step:
                gt_size = st.gt_size or gt_size
                weights.update(st.weights)
        return gt_size, weights

    def _batches(self, step: int):
        """Yield the batches of steps `step`, `step` + 1, ... (this rank's share)."""
        cfg, spe = self.cfg, self.steps_per_epoch
        changes = sorted({st.start for st in cfg.stages if st.gt_size})
        while True:
            epoch, pos = divmod(step, spe)
            self.dataset.gt_size = self.stage_at(step)[0]
            self.dataset.set_epoch(0 if cfg.data.fixed_patches else epoch)
            end = min([(epoch + 1) * spe] + [c for c in changes if c > step])
            sampler = ShardSampler(len(self.dataset), cfg.data.batch_size, self.rank, self.world, cfg.loop.seed,
                                   epoch, pos)
            loader = DataLoader(IndexedPatches(self.dataset), batch_size=self.local_batch, sampler=sampler,
                                num_workers=cfg.data.num_workers, pin_memory=self.device.type == "cuda")
            for batch in loader:
                yield batch
                step += 1
                if step >= end:
                    break

    # --- one step --------------------------------------------------------------------------------------------
    def _autocast(self):
        return torch.autocast("cuda", dtype=self.amp_dtype) if self.amp else nullcontext()

    def _cached(self, name: str, index: torch.Tensor, fn) -> torch.Tensor:
        """fn() (a batch of per-sample tensors), served from the per-patch cache when enabled and complete."""
        if self.cache is None:
            return fn()
        keys = [(name, int(i), self.dataset.gt_size) for i in index]
        if all(k in self.cache for k in keys):
            return torch.stack([self.cache[k] for k in keys]).to(self.device)
        out = fn()
        for k, o in zip(keys, out, strict=True):
            self.cache[k] = o.detach().to("cpu")
        return out

    @torch.no_grad()
    def teacher_targets(self, lq: torch.Tensor, gt: torch.Tensor, index: torch.Tensor, step: int) -> dict:
        """Everything the teachers contribute to this step (no gradients, teachers in eval mode)."""
        needs, out = self.criterion.needs(), {}
        scale = self.cfg.student.scale
        if "zoom_out" in needs:
            out["zoom_out_input"] = zoom_out(lq, scale)
        if not self.teachers:
            return out
        t0 = self.teachers[0]
        with self._autocast():
            t_paths = self.criterion.teacher_paths()
            if t_paths:
                with FeatureHooks(t0, t_paths) as hooks:
                    first = t0(lq)
                    out["t_feats"] = dict(zip(t_paths, hooks.take(), strict=True))
                if "t_sr" in needs:
                    out["t_sr"] = [first] + [t(lq) for t in self.teachers[1:]]
            elif "t_sr" in needs:
                out["t_sr"] = [self._cached(f"t{a}", index, lambda t=t: t(lq)) for a, t in enumerate(self.teachers)]
            out["anchor_weights"] = self.anchor_weights
            zi = self.criterion.zoom_in_params()
            if "zoom_in" in needs:
                rngs = sample_rngs(self.cfg.loop.seed, step, index)
                tiles = zoom_in(gt, scale, rngs, int(zi["n_sub"]))
                out["zoom_in_target"] = t0(tiles)
                aug = InvertibleAug.draw(rngs, float(zi["aug_prob"]), tuple(zi["ops"]), repeat=int(zi["n_sub"]),
                                         device=self.device)
                out["zoom_in_input"], out["zoom_in_aug"] = aug.apply(tiles), aug
            if "zoom_out_t" in needs:
                out["zoom_out_target"] = t0(out["zoom_out_input"])
            if "enhanced_hr" in needs:
                out["enhanced_hr"] = self._cached("ehr", index, lambda: enhance_hr(t0(gt), scale))
        return out

    def step_losses(self, batch: dict, step: int) -> dict[str, torch.Tensor]:
        """The weighted loss terms and "total" of one batch, with their graph (what `train_step` differentiates)."""
        lq, gt = batch["lq"].to(self.device), batch["gt"].to(self.device)
        if self.cfg.loop.channels_last:
            lq, gt = lq.contiguous(memory_format=torch.channels_last), gt.contiguous(memory_format=torch.channels_last)
        targets = self.teacher_targets(lq, gt, batch["index"], step)
        with self._autocast():
            return self.step_module(lq, gt, targets)

    def train_step(self, batch: dict, step: int) -> dict[str, float]:
        self.optimizer.zero_grad(set_to_none=True)
        losses = self.step_losses(batch, step)
        values = torch.stack([v.detach().float() for v in losses.values()])
        if self.world > 1:
            dist.all_reduce(values)
            values /= self.world
        logs = dict(zip(losses, values.tolist(), strict=True))
        if not math.isfinite(logs["total"]):
            bad = ", ".join(f"{k}={v}" for k, v in logs.items() if not math.isfinite(v))
            raise NonFiniteLoss(f"non-finite loss at step {step + 1} ({bad}); stopped without updating; "
                                f"{self._kept()}")
        total = losses["total"]
        if self.scaler is not None:
            self.scaler.scale(total).backward()
            self.scaler.unscale_(self.optimizer)
        else:
            total.backward()
        if self.cfg.optim.grad_clip > 0:
            norm = torch.nn.utils.clip_grad_norm_(self.params, self.cfg.optim.grad_clip)
            logs["grad_norm"] = float(norm)
        else:
            norm = grad_norm(self.params)
        if self.scaler is not None:  # fp16: the scaler skips steps with inf/nan gradients and lowers its scale
            self.scaler.step(self.optimizer)
            self.scaler.update()
        elif not math.isfinite(float(norm)):
            self._skip_step(step)
            return logs
        else:
            self.optimizer.step()
        self.bad_in_row = 0
        if self.ema is not None:
            self.ema.update(self.student, step)
        return logs

    def _skip_step(self, step: int) -> None:
        """A finite loss with non-finite gradients: drop the gradients, leave weights, optimizer state and EMA
        untouched, count it; stop after `loop.max_bad_steps` such steps in a row."""
        self.optimizer.zero_grad(set_to_none=True)
        self.skipped_steps += 1
        self.bad_in_row += 1
        log.warning(f"step {step + 1}: non-finite gradients with a finite loss; step skipped")
        if self.bad_in_row >= self.cfg.loop.max_bad_steps:
            raise NonFiniteGradients(
                f"non-finite gradients in {self.bad_in_row} steps in a row (steps {step + 2 - self.bad_in_row}.."
                f"{step + 1}) although the loss was finite; every one was skipped, so the weights never saw "
                f"them; stopped after loop.max_bad_steps = {self.cfg.loop.max_bad_steps}; {self._kept()}")

    def _kept(self) -> str:
        return (f"{self.out_dir / 'last.pt'} (step {self.last_saved_step}) is the last good checkpoint"
                if self.last_saved_step is not None else "no checkpoint had been written yet")

    # --- validation and checkpoints ----------------------------------------------------------------------
    @property
    def eval_model(self) -> nn.Module:
        return self.ema.model if self.ema is not None else self.student

    def validate(self) -> dict[str, float]:
        """Every rank scores its share of each set's images and all ranks gather the rows (no rank idles in a
        collective while another validates); every rank returns the same metrics."""
        metrics: dict[str, float] = {}
        model = self.eval_model
        for ds in self.val_sets:
            rows = evaluate_model(model, ds.shard(self.rank, self.world), device=self.device).images
            if self.world > 1:
                parts: list = [None] * self.world
                dist.all_gather_object(parts, rows)
                rows = [p[j] for j in range(len(parts[0])) for p in parts if j < len(p)]  # the set's order
            r = summarize(ds.name, ds.scale, rows)
            metrics[f"{ds.name}/psnr_y"], metrics[f"{ds.name}/ssim_y"] = r.psnr_y, r.ssim_y
        if self.val_sets:
            metrics["psnr_y_mean"] = sum(metrics[f"{ds.name}/psnr_y"] for ds in self.val_sets) / len(self.val_sets)
        self.student.train()
        return metrics

    def _train_state(self) -> dict:
        state = {"student": self.student.state_dict(), "criterion": self.criterion.state_dict(),
                 "optimizer": self.optimizer.state_dict(), "ema": self.ema.model.state_dict() if self.ema else None,
                 "scaler": self.scaler.state_dict() if self.scaler else None, "rng_torch": torch.get_rng_state(),
                 "best_psnr": self.best_psnr, "train_s": self.train_s, "world_size": self.world,
                 "skipped_steps": self.skipped_steps}
        if torch.cuda.is_available():
            state["rng_cuda"] = torch.cuda.get_rng_state_all()
        return state

    def save(self, name: str, step: int, metrics: dict, resumable: bool) -> Path:
        path = self.out_dir / name
        extra = {"train_state": self._train_state()} if resumable else {}
        sd = {k: v.detach().to("cpu").contiguous() for k, v in self.eval_model.state_dict().items()}
        save_checkpoint(path, state_dict=sd, spec=self.spec, config=to_dict(self.cfg), metrics=metrics, step=step,
                        **extra)
        if resumable:
            self.last_saved_step = step
        for cb in self.callbacks:
            cb.on_checkpoint(self, path, step)
        return path

    def _log(self, record: dict) -> None:
        with open(self.out_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")

    def _resume(self) -> int:
        path = self.out_dir / "last.pt"
        ck = read_checkpoint(path)
        ts = ck.get("train_state")
        if ts is None:
            raise ConfigError(f"{path} has no training state to resume from")
        diff = resume_diff(ck["config"], self.cfg)
        if diff:
            raise ConfigError(f"--resume: the config differs from {path}'s in {', '.join(diff)}")
        self.student.load_state_dict(ts["student"])
        self.criterion.load_state_dict(ts["criterion"])
        self.optimizer.load_state_dict(ts["optimizer"])
        if self.ema is not None:
            self.ema.model.load_state_dict(ts["ema"])
        if self.scaler is not None and ts.get("scaler"):
            self.scaler.load_state_dict(ts["scaler"])
        torch.set_rng_state(ts["rng_torch"])
        if "rng_cuda" in ts and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(ts["rng_cuda"])
        self.best_psnr, self.train_s = ts["best_psnr"], ts["train_s"]
        self.skipped_steps = ts.get("skipped_steps", 0)
        step = int(ck["step"])
        self.last_saved_step = step
        if self.rank == 0:  # drop records of steps after the checkpoint (they are redone) and a torn last line
            trim_jsonl(self.out_dir / "metrics.jsonl", step)
        return step

    def _loop(self, start: int, end: int) -> tuple[int, dict]:
        """Steps start..end-1 with logging, validation and checkpoints; returns (last step, last metrics)."""
        cfg, lp = self.cfg, self.cfg.loop
        self.student.train()
        metrics: dict = {}
        window: dict[str, float] = {}
        n_window, t_window = 0, time.perf_counter()
        data = self._batches(start)
        step = start
        while step < end:
            batch = next(data)
            for cb in self.callbacks:
                cb.on_step_start(self, step)
            self.criterion.set_weights(self.stage_at(step)[1])
            lr = lr_at(step, cfg)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            t0 = time.perf_counter()
            logs = self.train_step(batch, step)
            self.train_s += time.perf_counter() - t0
            step += 1
            for k, v in logs.items():
                window[k] = window.get(k, 0.0) + v
            n_window += 1
            for cb in self.callbacks:
                cb.on_step_end(self, step, logs)
            if self.rank == 0 and (step % lp.log_every == 0 or step == end):
                record = {"step": step, "epoch": step // self.steps_per_epoch, "lr": lr,
                          **{f"loss/{k}" if k != "grad_norm" else k: v / n_window for k, v in window.items()},
                          "s_per_step": (time.perf_counter() - t_window) / n_window}
                if self.skipped_steps:
                    record["skipped_steps"] = self.skipped_steps
                self._log(record)
                for cb in self.callbacks:
                    cb.on_log(self, step, record)
                window, n_window, t_window = {}, 0, time.perf_counter()
            validate = self.val_sets and ((cfg.val.every and step % cfg.val.every == 0) or step == lp.steps)
            if validate:
                metrics = self.validate()  # on every rank (each scores a share)
            if self.rank == 0 and validate:
                self._log({"step": step, **{f"val/{k}": v for k, v in metrics.items()}})
                for cb in self.callbacks:
                    cb.on_validation(self, step, metrics)
                if metrics["psnr_y_mean"] > self.best_psnr:
                    self.best_psnr = metrics["psnr_y_mean"]
                    self.save("best.pt", step, metrics, resumable=False)
                self.save("last.pt", step, metrics, resumable=True)
            elif self.rank == 0 and ((lp.save_every and step % lp.save_every == 0) or step == end):
                self.save("last.pt", step, metrics, resumable=True)
        return step, metrics

    def _best_from_last(self) -> None:
        """After a stop on non-finite values: best.pt = the last good checkpoint, if there is one and no best."""
        best, last = self.out_dir / "best.pt", self.out_dir / "last.pt"
        if best.exists() or not last.exists():
            return
        ck = read_checkpoint(last)
        save_checkpoint(best, state_dict=ck["state_dict"], spec=ck["spec"], config=ck["config"],
                        metrics=ck["metrics"], step=ck["step"])

    # --- the loop ------------------------------------------------------------------------------------------
    def fit(self, resume: bool = False, stop_after: int | None = None) -> TrainResult:
        """Train to `loop.steps` (or stop after step `stop_after`, saving last.pt, as if interrupted).

        best.pt exists whenever this returns or stops on non-finite values: the best validated weights, or
        the last ones when there is no validation data (or no validation scored yet)."""
        lp = self.cfg.loop
        if self.rank == 0:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        start = self._resume() if resume else 0
        end = lp.steps if stop_after is None else min(lp.steps, stop_after)
        for cb in self.callbacks:
            cb.on_train_start(self, start, lp.steps)
        if self.rank == 0 and start == 0 and self.gate_results:
            self._log({"step": 0, "kd_gate": [r.as_dict() for r in self.gate_results]})
        try:
            step, metrics = self._loop(start, end)
        except NonFiniteLoss:
            if self.rank == 0:
                self._best_from_last()
            raise
        if self.rank == 0 and (not self.val_sets or not (self.out_dir / "best.pt").exists()):
            self.save("best.pt", step, metrics, resumable=False)  # best = last
        result = TrainResult(step, self.best_psnr, metrics, self.train_s, self.out_dir)
        for cb in self.callbacks:
            cb.on_train_end(self, result)
        return result
