#!/usr/bin/env python
"""Distil a small SR student from frozen pretrained teachers (the loop is distill/trainer.py).

Examples:
  python tools/train.py --config smoke --out runs/smoke                      # seconds, embedded data
  python tools/train.py --config quickstart --out runs/qs \
      --teacher rlfn_s --teacher-weights ../shared/teachers/rlfn_s_x2.pth
  python tools/train.py --config quickstart --out runs/qs                    # trains (and caches) a teacher first
  python tools/train.py --config configs/train/kd_dukd.yaml --out runs/dukd --set loop.steps=2000
  python tools/train.py --config paper --out runs/paper --set data.train=/data/DF2K/HR --resume
  torchrun --nproc-per-node 2 tools/train.py --config smoke --out runs/ddp   # DDP (gloo on CPU, NCCL on GPU)

Writes OUT/last.pt, OUT/best.pt (each with the network spec, config and metrics, so
`tools/evaluate.py --checkpoint OUT/best.pt --data ...` needs nothing else) and OUT/metrics.jsonl.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import os
import shutil
from pathlib import Path

import torch
import torch.distributed as dist
from common import CONFIGS, console, progress, run_cli, setup_logging

from distill.config import LossTerm, StudentConfig, TeacherConfig, TrainConfig
from distill.trainer import Callback, NonFiniteLoss, Trainer
from srcore.config import ConfigError, load_config, to_dict
from srcore.distributed import init_from_env as init_distributed

PRESETS = CONFIGS / "train"


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="YAML file or preset name (smoke, quickstart, paper, kd_*)")
    p.add_argument("--out", required=True, type=Path, help="output folder (checkpoints, metrics.jsonl)")
    p.add_argument("--set", dest="overrides", action="extend", nargs="+", default=[], metavar="KEY=VALUE",
                   help="override config values, e.g. --set loop.steps=100 optim.lr=3e-4")
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    p.add_argument("--teacher", help="teacher zoo architecture (replaces the config's teacher list)")
    p.add_argument("--teacher-weights", help="official weight file for --teacher")
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
        self.prog = progress()
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
        self.prog.stop()


def teacher_run_config(cfg: TrainConfig) -> TrainConfig:
    """The config that trains the quickstart teacher: same data and loop, the teacher arch as student, L1 only."""
    pt = cfg.pretrain_teacher
    return dataclasses.replace(
        cfg, student=StudentConfig(arch=pt.arch, scale=cfg.student.scale, kwargs=dict(pt.kwargs)), teacher=[],
        loss=[LossTerm("l1", "l1")], stages=[], pretrain_teacher=None,
        data=dataclasses.replace(cfg.data, cache_teacher=False, fixed_patches=False),
        optim=dataclasses.replace(cfg.optim, lr=pt.lr, ema=0.0),
        schedule=dataclasses.replace(cfg.schedule, name="cosine", milestones=[]),
        loop=dataclasses.replace(cfg.loop, steps=pt.steps, save_every=0))


def pretrained_teacher(cfg: TrainConfig, cache_dir: Path, device: str, callbacks: list[Callback]) -> Path:
    """Train the config's `pretrain_teacher` once and cache it under `cache_dir` (keyed by its config)."""
    tcfg = teacher_run_config(cfg)
    key = hashlib.sha1(json.dumps(to_dict(tcfg), sort_keys=True).encode()).hexdigest()[:12]
    name = f"teacher-{tcfg.student.arch}-x{tcfg.student.scale}-{key}"
    path = cache_dir.expanduser() / f"{name}.pt"
    if path.exists():
        return path
    run_dir = path.with_suffix(".run")
    Trainer(tcfg, run_dir, device, callbacks).fit(resume=(run_dir / "last.pt").exists())
    rank = dist.get_rank() if dist.is_initialized() else 0
    if rank == 0:
        src = run_dir / "best.pt" if (run_dir / "best.pt").exists() else run_dir / "last.pt"
        tmp = path.with_suffix(".tmp")
        shutil.copyfile(src, tmp)
        os.replace(tmp, path)
    if dist.is_initialized():
        dist.barrier()
    return path


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = init_distributed(args.device)
    rank = dist.get_rank() if dist.is_initialized() else 0
    log = setup_logging(args.verbose) if rank == 0 else logging.getLogger("srnas")
    try:
        cfg = load_config(TrainConfig, args.config, args.overrides, preset_dir=PRESETS)
        if args.teacher or args.teacher_weights:
            if not (args.teacher and args.teacher_weights):
                raise ConfigError("--teacher and --teacher-weights go together")
            cfg = dataclasses.replace(cfg, teacher=[TeacherConfig(arch=args.teacher, weights=args.teacher_weights)])
        if cfg.needs_teacher() and not cfg.teacher:
            if cfg.pretrain_teacher is None:
                raise ConfigError("the loss needs a teacher: give --teacher ARCH --teacher-weights FILE, a teacher "
                                  "list in the config, or a pretrain_teacher section")
            cbs = [RichProgress(log, f"teacher {cfg.pretrain_teacher.arch}")] if rank == 0 else []
            path = pretrained_teacher(cfg, args.cache_dir, device, cbs)
            log.info(f"teacher: {path}")
            cfg = dataclasses.replace(cfg, teacher=[TeacherConfig(checkpoint=str(path))])
        cbs = [RichProgress(log, "student")] if rank == 0 else []
        trainer = Trainer(cfg, args.out, device, cbs)
        world = dist.get_world_size() if dist.is_initialized() else 1
        log.info(f"training {trainer.spec.get('arch', 'genotype')} x{cfg.student.scale} for {cfg.loop.steps} steps "
                 f"on {device} x{world}; losses: {', '.join(f'{t.name}({t.kind})' for t in cfg.loss)}")
        try:
            result = trainer.fit(resume=args.resume)
        except NonFiniteLoss as e:
            console.print(f"[bold red]stopped:[/] {e}", highlight=False, soft_wrap=True)
            return 1
        if rank == 0:
            best = f", best mean PSNR-Y {result.best_psnr:.3f} dB" if result.metrics else ""
            log.info(f"done: step {result.step}, {result.train_s:.1f} s of training{best}; checkpoints in {args.out}")
        return 0
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    run_cli(main)
