#!/usr/bin/env python
"""Distil a small SR student from frozen pretrained teachers (the loop is distill/trainer.py).

Examples:
  python tools/train.py --config smoke --out runs/smoke                      # seconds, embedded data
  python tools/train.py --config t291 --out runs/t291 --teacher rlfn_s_x2    # T91+BSD200: 37.1 dB on Set5 x2
  python tools/train.py --config quickstart --out runs/qs --teacher rlfn_s_x2   # a registered teacher
  python tools/train.py --config quickstart --out runs/qs \
      --teacher rlfn_s --teacher-weights ../shared/teachers/rlfn_s_x2.pth   # a zoo arch + a weight file
  python tools/train.py --config quickstart --out runs/qs                    # trains (and caches) a teacher first
  python tools/train.py --config configs/train/kd_dukd.yaml --out runs/dukd --set loop.steps=2000
  python tools/train.py --config paper --out runs/paper --set data.train=/data/DF2K/HR --resume
  torchrun --nproc-per-node 2 tools/train.py --config smoke --out runs/ddp   # DDP (gloo on CPU, NCCL on GPU)

Writes OUT/last.pt, OUT/best.pt (each with the network spec, config and metrics, so
`tools/evaluate.py --checkpoint OUT/best.pt --data ...` needs nothing else) and OUT/metrics.jsonl.
OUT is locked for the run (srcore/rundir.py): a folder holding a run needs --resume (continue) or --overwrite
(start again); a second process on the same OUT stops with an error naming the first. Ctrl-C once: finish the
step, save last.pt, print the command that resumes; twice: stop at once (last.pt keeps the last save).
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import os
import shlex
import sys
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.distributed as dist
from common import CONFIGS, print_error, progress, run_cli, setup_logging, setup_runtime

import compress  # noqa: F401  (rebuilds compressed checkpoints: reparameterized, widths)
from distill import zoo
from distill.config import LossTerm, StudentConfig, TeacherConfig, TrainConfig
from distill.trainer import Callback, NonFiniteLoss, Trainer, student_skip
from srcore.checkpoint import atomic_save, read_checkpoint
from srcore.config import ConfigError, load_config, to_dict
from srcore.distributed import init_from_env as init_distributed
from srcore.interrupt import DeferredInterrupt
from srcore.layers import min_input_size
from srcore.rundir import RunDirError, claim_run_dir
from srcore.weights import ALLOW_DOWNLOAD_VAR, WEIGHTS

PRESETS = CONFIGS / "train"
OUTPUTS = ("last.pt", "best.pt", "metrics.jsonl")  # what a training run writes into --out


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="YAML file or preset name (smoke, quickstart, paper, kd_*)")
    p.add_argument("--out", required=True, type=Path, help="output folder (checkpoints, metrics.jsonl)")
    p.add_argument("--set", dest="overrides", action="extend", nargs="+", default=[], metavar="KEY=VALUE",
                   help="override config values, e.g. --set loop.steps=100 optim.lr=3e-4")
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    p.add_argument("--overwrite", action="store_true",
                   help="delete the run in OUT (checkpoints, metrics.jsonl) and start again")
    p.add_argument("--teacher", help="registered teacher weights (e.g. rlfn_s_x2; see srcore/weights.py), or a zoo "
                                     "architecture with --teacher-weights; replaces the config's teacher list")
    p.add_argument("--teacher-weights", help="weight file for --teacher (for a registered name: instead of the lookup)")
    p.add_argument("--allow-download", action="store_true",
                   help="let a registered teacher missing on disk be downloaded (sha256-checked) into the cache")
    p.add_argument("--cache-dir", type=Path, default=Path(os.environ.get("SRNAS_CACHE", "~/.cache/srnas")),
                   help="cache of teachers trained by pretrain_teacher (default $SRNAS_CACHE or ~/.cache/srnas)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cpu, cuda, ...")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--verbose", action="store_true")
    return p.parse_args(argv)


class RichProgress(Callback):
    """A progress bar plus a log line per log interval and per validation (rank 0 only)."""

    def __init__(self, log: logging.Logger, label: str):
        self.log, self.label, self.prog, self.task = log, label, None, None

    def on_train_start(self, trainer, start_step, total_steps):
        self.prog = progress(remaining=True)
        self.prog.start()
        self.task = self.prog.add_task(self.label, total=total_steps, completed=start_step)

    def on_step_end(self, trainer, step, losses):
        self.prog.update(self.task, completed=step)

    def on_log(self, trainer, step, record):
        terms = " ".join(f"{k[5:]}={v:.4g}" for k, v in record.items() if k.startswith("loss/"))
        self.log.info(f"[{self.label}] step {step}  lr {record['lr']:.3g}  {terms}  "
                      f"({record['s_per_step']:.3f} s/step)")

    def on_validation(self, trainer, step, metrics):
        sets = "  ".join(f"{k.split('/')[0]} {v:.3f}" for k, v in metrics.items() if k.endswith("/psnr_y"))
        best = max(trainer.best_psnr, metrics["psnr_y_mean"])
        self.log.info(f"[{self.label}] step {step}  val PSNR-Y: {sets}  (best mean {best:.3f})")

    def on_checkpoint(self, trainer, path, step):
        self.log.debug(f"wrote {path} (step {step})")

    def on_train_end(self, trainer, result):
        self.close()

    def close(self) -> None:
        if self.prog is not None:
            self.prog.stop()
            self.prog = None


class Interrupted(Exception):
    """Ctrl-C was pressed; raised at the end of step `step` of `trainer` (a step boundary: safe to save)."""

    def __init__(self, trainer: Trainer, step: int):
        super().__init__(f"interrupted after step {step}")
        self.trainer, self.step = trainer, step


class StopOnInterrupt(Callback):
    """At the first step boundary after a (deferred) Ctrl-C: saves last.pt (with the last validation metrics),
    while the run folder is still locked, and ends training by raising Interrupted."""

    def __init__(self, interrupt: DeferredInterrupt | None):
        self.interrupt, self.metrics = interrupt, {}

    def on_train_start(self, trainer, start_step, total_steps):
        self.metrics = {}

    def on_validation(self, trainer, step, metrics):
        self.metrics = dict(metrics)

    def on_step_end(self, trainer, step, losses):
        if self.interrupt is not None and self.interrupt.requested and step < trainer.cfg.loop.steps:
            trainer.save("last.pt", step, self.metrics, resumable=True)  # the same state a periodic save holds
            raise Interrupted(trainer, step)


def teacher_run_config(cfg: TrainConfig) -> TrainConfig:
    """The config that trains the quickstart teacher: same data and loop, the teacher arch as student, L1 only,
    on [0, 1] (rgb_range 1) and with the student's image-space skip (unless pretrain_teacher.kwargs say)."""
    pt = cfg.pretrain_teacher
    kwargs = {"rgb_range": 1.0, "skip": student_skip(cfg.student), **pt.kwargs}
    try:
        zoo.create(pt.arch, cfg.student.scale, **kwargs)
    except TypeError as e:
        raise ConfigError(f"pretrain_teacher: {pt.arch} cannot be built with {kwargs} ({e}); the image-space skip "
                          "is an option of rlfn/rlfn_s (set pretrain_teacher.kwargs.skip: none for others)") from None
    return dataclasses.replace(
        cfg, student=StudentConfig(arch=pt.arch, scale=cfg.student.scale, kwargs=kwargs), teacher=[],
        loss=[LossTerm("l1", "l1")], stages=[], pretrain_teacher=None,
        data=dataclasses.replace(cfg.data, cache_teacher=False, fixed_patches=False),
        optim=dataclasses.replace(cfg.optim, lr=pt.lr, ema=0.0),
        schedule=dataclasses.replace(cfg.schedule, name="cosine", milestones=[]),
        loop=dataclasses.replace(cfg.loop, steps=pt.steps, save_every=0))


def teacher_cache_path(cfg: TrainConfig, cache_dir: Path) -> Path:
    """Where the teacher of `cfg.pretrain_teacher` is cached: keyed by the config that trains it."""
    tcfg = teacher_run_config(cfg)
    key = hashlib.sha1(json.dumps(to_dict(tcfg), sort_keys=True).encode()).hexdigest()[:12]
    return cache_dir.expanduser() / f"teacher-{tcfg.student.arch}-x{tcfg.student.scale}-{key}.pt"


def pretrained_teacher(cfg: TrainConfig, cache_dir: Path, device: str, callbacks: list[Callback]) -> Path:
    """Train the config's `pretrain_teacher` once and cache it under `cache_dir` (keyed by its config)."""
    tcfg = teacher_run_config(cfg)
    path = teacher_cache_path(cfg, cache_dir)
    if path.exists():
        return path
    run_dir = path.with_suffix(".run")
    rank = dist.get_rank() if dist.is_initialized() else 0
    log = logging.getLogger("srnas")
    # another train.py may be training the same teacher: wait for it, then use its result
    with claim_run_dir(run_dir, outputs=OUTPUTS, resume=True, tool="teacher", wait=True, enabled=rank == 0,
                       on_wait=lambda who: log.info(f"waiting for {who}, which trains the same teacher in {run_dir}")):
        if dist.is_initialized():
            dist.barrier()  # every rank past rank 0's claim: the cache file below is then final
        if path.exists():
            return path
        resume = (run_dir / "last.pt").exists()
        if not resume and rank == 0:  # leftovers of a run killed before its first checkpoint
            for name in OUTPUTS:
                (run_dir / name).unlink(missing_ok=True)
        Trainer(tcfg, run_dir, device, callbacks).fit(resume=resume)
        if rank == 0:
            _publish_teacher(run_dir, path)
    if dist.is_initialized():
        dist.barrier()
    return path


def _publish_teacher(run_dir: Path, path: Path) -> None:
    """Copy the teacher run's final weights (last.pt less its training state) to the cache path atomically. Not
    best.pt: that one is chosen on the validation photographs, the images the pipeline reports the teacher on."""
    ck = read_checkpoint(run_dir / "last.pt")
    ck.pop("train_state", None)
    atomic_save(ck, path)


def teacher_from_args(teacher: str | None, weights: str | None) -> TeacherConfig:
    """--teacher NAME [--teacher-weights FILE] for registered weights, or --teacher ARCH --teacher-weights FILE."""
    if not teacher:
        raise ConfigError("--teacher-weights needs --teacher (a registered name such as rlfn_s_x2, or a zoo arch)")
    if teacher in WEIGHTS:
        return TeacherConfig(name=teacher, weights=weights)
    if teacher in zoo.list_models():
        if not weights:
            raise ConfigError(f"--teacher {teacher} is an architecture: give its --teacher-weights FILE, or a "
                              f"registered name ({', '.join(n for n in WEIGHTS if WEIGHTS[n].arch == teacher)})")
        return TeacherConfig(arch=teacher, weights=weights)
    raise ConfigError(f"--teacher {teacher!r} is neither registered weights ({', '.join(sorted(WEIGHTS))}) nor a "
                      "zoo architecture")


def claim_out(args, rank: int):
    """Claim --out on rank 0 (srcore.rundir); under DDP every rank learns whether that worked."""
    err, run = None, None
    try:
        run = claim_run_dir(args.out, outputs=OUTPUTS, resume=args.resume, overwrite=args.overwrite,
                            resume_from="last.pt", tool="training", enabled=rank == 0)
    except RunDirError as e:
        err = e
    if dist.is_initialized():
        box = [str(err) if err else None]
        dist.broadcast_object_list(box, src=0)
        if box[0] is not None and err is None:
            err = RunDirError(f"rank 0 could not claim {args.out}: {box[0]}")
    if err is not None:
        raise err
    return run


def check_patch_size(cfg: TrainConfig, models) -> None:
    """The smallest LR training patch must fit every network (ESA blocks need 15x15)."""
    s = cfg.student.scale
    key, gt = min([("data.gt_size", cfg.data.gt_size)] + [(f"stages[{i}].gt_size", st.gt_size)
                                                           for i, st in enumerate(cfg.stages) if st.gt_size],
                  key=lambda kv: kv[1])
    need = min_input_size(*models)
    if gt // s < need:
        raise ConfigError(f"{key} = {gt}: the LR patch {gt // s}x{gt // s} is smaller than the networks' minimum "
                          f"input {need}x{need}; use {key} >= {need * s}")


def resume_command(args, argv: list[str] | None, resume: bool) -> str:
    """The command line that continues this run."""
    given = list(argv) if argv is not None else sys.argv[1:]
    kept = [a for a in given if a not in ("--resume", "--overwrite")]
    return shlex.join(["python", "tools/train.py", *kept, *(["--resume"] if resume else [])])


def main(argv=None) -> int:
    args = parse_args(argv)
    setup_runtime(args)
    device = init_distributed(args.device)
    rank = dist.get_rank() if dist.is_initialized() else 0
    world = dist.get_world_size() if dist.is_initialized() else 1
    log = setup_logging(args.verbose) if rank == 0 else logging.getLogger("srnas")
    bars: list[RichProgress] = []
    try:
        cfg = load_config(TrainConfig, args.config, args.overrides, preset_dir=PRESETS)
        if args.allow_download:
            os.environ[ALLOW_DOWNLOAD_VAR] = "1"
        if args.teacher or args.teacher_weights:
            cfg = dataclasses.replace(cfg, teacher=[teacher_from_args(args.teacher, args.teacher_weights)])
        with claim_out(args, rank) as run, (DeferredInterrupt() if world == 1 else nullcontext()) as interrupt:
            if rank == 0:
                for f in run.cleaned:
                    log.warning(f"removed {f}, left by a save that was killed")
                if run.took_over:
                    log.warning(f"{args.out}: took over the lock of pid {run.took_over.get('pid')}, "
                                "which is no longer running")
                if run.removed:
                    log.info(f"--overwrite: deleted {', '.join(run.removed)} in {args.out}")
            stop = StopOnInterrupt(interrupt)
            try:
                if cfg.needs_teacher() and not cfg.teacher:
                    if cfg.pretrain_teacher is None:
                        raise ConfigError("the loss needs a teacher: give --teacher NAME (e.g. rlfn_s_x2), a "
                                          "teacher list in the config, or a pretrain_teacher section")
                    bars = [RichProgress(log, f"teacher {cfg.pretrain_teacher.arch}")] if rank == 0 else []
                    path = pretrained_teacher(cfg, args.cache_dir, device, bars + [stop])
                    log.info(f"teacher: {path}")
                    cfg = dataclasses.replace(cfg, teacher=[TeacherConfig(checkpoint=str(path), trained_here=True)])
                bars = [RichProgress(log, "student")] if rank == 0 else []
                trainer = Trainer(cfg, args.out, device, bars + [stop])
                check_patch_size(cfg, [trainer.student, *trainer.teachers])
                log.info(f"training {trainer.spec.get('arch', 'genotype')} x{cfg.student.scale} for "
                         f"{cfg.loop.steps} steps on {device} x{world}; losses: "
                         f"{', '.join(f'{t.name}({t.kind})' for t in cfg.loss)}")
                result = trainer.fit(resume=args.resume)
            except Interrupted as e:
                for bar in bars:
                    bar.close()
                student = e.trainer.out_dir == args.out
                log.warning(f"interrupted: saved {e.trainer.out_dir / 'last.pt'} at step {e.step}; continue with: "
                            f"{resume_command(args, argv, resume=student or args.resume)}")
                return 130
            except KeyboardInterrupt:
                for bar in bars:
                    bar.close()
                last = args.out / "last.pt"
                kept = f"{last} keeps the last save" if last.exists() else "nothing was saved yet"
                print_error("interrupted", f"stopped at once (second Ctrl-C); {kept}; continue with: "
                                           f"{resume_command(args, argv, resume=last.exists())}")
                return 130
            except NonFiniteLoss as e:
                print_error("stopped", str(e))
                return 1
        if rank == 0:
            best = f", best mean PSNR-Y {result.best_psnr:.3f} dB" if result.metrics else ""
            log.info(f"done: step {result.step}, {result.train_s:.1f} s of training{best}; checkpoints in {args.out}")
        return 0
    finally:
        for bar in bars:
            bar.close()
        if dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    run_cli(main)
