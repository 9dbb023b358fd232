#!/usr/bin/env python
"""A prepared check of the GPU paths, under 5 minutes on one GPU: one table (and a JSON copy) that says what
ran on the accelerator and how fast.

Rows, in order:
  environment      torch, CUDA and the device
  search step      one weight + arch step of the DLSR-space supernet (nas/timing.py; 6 cells, C=48, batch 16,
                   LR 48x48, dlsr_reuse), timed with CUDA synchronisation; peak GPU memory
  AMP training     200 steps of tools/train.py's Trainer in mixed precision (bf16 autocast) on the t291 student
                   (rfdn_c32_x2) with output KD from the registry teacher rlfn_s_x2 (T91 patches when
                   ../shared is present, else the embedded photographs); s/step, final loss, peak GPU memory
  DDP all-reduce   a one-process NCCL group (and gloo), all-reduce checked
  compression      re-parameterize + prune to 0.5x MACs + fine-tune on the GPU (compress/iterative.py) of the
                   student trained above
  latency          CUDA-event latency (srcore.cost.latency: median of N, after warm-up) at an LR 256x256 input for
                   the zoo (imdn, rlfn_s, rfdn, pan, dlsr_x2) and our students (trained, compressed), fp32 and
                   bf16 autocast, with each model's peak GPU memory

Without CUDA every CUDA call is a "skipped: no CUDA" row and the rest runs on the CPU (`--device cpu
--quick`: tiny sizes and a few steps, so that the script itself is tested): the numbers of such a run only
say the code path works.

Examples:
  python tools/gpu_check.py                                  # on a GPU machine: writes runs/gpu_check.json
  python tools/gpu_check.py --json docs/bench/gpu_check.json # to record in docs/benchmarks.md
  python tools/gpu_check.py --device cpu --quick --out /tmp/gc   # the CPU path (seconds)
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import bench
import torch
from common import console, run_cli, setup_logging
from rich.table import Table
from rich.text import Text

import compress  # noqa: F401  (registers the compressed-spec transform)
import distill  # noqa: F401  (registers the zoo)
import search_spaces  # noqa: F401  (registers the genotype builder)
from srcore.paths import shared_dir
from srcore.rundir import check_output_file
from srcore.weights import WeightsError, resolve

ZOO = ("imdn", "rlfn_s", "rfdn", "pan", "genotype:dlsr_x2")


def row(check: str, status: str, result: str, seconds: float = 0.0, **data) -> dict:
    return {"check": check, "status": status, "result": result, "seconds": round(seconds, 3), **data}


def skipped(check: str, why: str = "no CUDA") -> dict:
    return row(check, "skipped", f"skipped: {why}")


def gib(n: int | None) -> str:
    return "-" if n is None else f"{n / 2**30:.2f} GiB"


class Check:
    """Runs the rows; a row that raises is a 'failed' row with the error, and the next check still runs."""

    def __init__(self, device: str, quick: bool, out: Path, log):
        self.device, self.quick, self.out, self.log = torch.device(device), quick, out, log
        self.cuda = self.device.type == "cuda"
        self.rows: list[dict] = []
        self.student: Path | None = None
        self.compressed: Path | None = None

    def run(self, name: str, fn: Callable[[], list[dict] | dict]) -> None:
        self.log.info(f"gpu_check: {name}")
        t0 = time.perf_counter()
        try:
            got = fn()
        except Exception as e:  # noqa: BLE001 - every failure becomes a row; the other checks still run
            self.log.debug(traceback.format_exc())
            got = row(name, "failed", f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}",
                      time.perf_counter() - t0)
        self.rows += got if isinstance(got, list) else [got]

    def peak_reset(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)

    def peak(self) -> int | None:
        return torch.cuda.max_memory_allocated(self.device) if self.cuda else None

    # --- the checks -----------------------------------------------------------------------------------------
    def environment(self) -> list[dict]:
        info = {"torch": torch.__version__, "cuda": torch.version.cuda, "python": platform.python_version(),
                "cpu_threads": torch.get_num_threads()}
        rows = [row("environment", "ok", f"torch {torch.__version__}, python {platform.python_version()}, "
                    f"{torch.get_num_threads()} CPU threads", **info)]
        if not self.cuda:
            rows.append(skipped("CUDA device", "no CUDA" if not torch.cuda.is_available() else "--device cpu"))
            return rows
        p = torch.cuda.get_device_properties(self.device)
        rows.append(row("CUDA device", "ok", f"{p.name}, {p.total_memory / 2**30:.0f} GiB, CUDA {torch.version.cuda}, "
                        f"capability {p.major}.{p.minor}, bf16 {torch.cuda.is_bf16_supported()}",
                        name=p.name, total_memory=p.total_memory))
        return rows

    def search_step(self) -> dict:
        from nas.config import SearchConfig
        from nas.timing import step_timing
        from srcore.config import from_dict

        size = {"space": {"num_cells": 3, "channels": 8}, "data": {"batch_size": 2, "gt_size": 32}} if self.quick \
            else {"space": {"num_cells": 6, "channels": 48}, "data": {"batch_size": 16, "gt_size": 96}}
        cfg = from_dict(SearchConfig, size, "gpu_check search")
        t0 = time.perf_counter()
        t = step_timing(cfg, steps=1 if self.quick else 3, algorithm="dlsr_reuse", device=self.device)
        s = cfg.space
        what = (f"{s.num_cells} cells, C={s.channels}, batch {cfg.data.batch_size}, LR {t['lr_size']}, dlsr_reuse: "
                f"{t['weight_step_s'] * 1e3:.1f} ms weight + {t['arch_step_s'] * 1e3:.1f} ms arch step")
        mem = f", peak {gib(t['peak_cuda_bytes'])}" if self.cuda else " (CPU; peak GPU memory: skipped, no CUDA)"
        return row("search step", "ok", what + mem, time.perf_counter() - t0, timing=t)

    def amp_training(self) -> dict:
        from distill.config import TrainConfig
        from distill.trainer import Trainer
        from srcore.config import from_dict

        try:
            resolve("rlfn_s_x2")
            teacher, why = [{"name": "rlfn_s_x2"}], "rlfn_s_x2"
        except WeightsError:
            teacher, why = [], "no teacher (rlfn_s_x2 not on disk)"
        t91 = shared_dir() / "data" / "T91"
        steps = 3 if self.quick else 200
        data = {"train": str(t91) if t91.is_dir() else "builtin:train", "gt_size": 32 if self.quick else 64,
                "batch_size": 4 if self.quick else 16, "repeat": 4}
        loss = [{"name": "l1", "kind": "l1"}] + ([{"name": "kd", "kind": "output_kd"}] if teacher else [])
        cfg = from_dict(TrainConfig, {
            "student": {"genotype": "rfdn_c32_x2", "scale": 2}, "teacher": teacher, "data": data,
            "optim": {"lr": 2e-3, "grad_clip": 1.0, "ema": 0.999}, "schedule": {"warmup_steps": 20},
            "loss": loss, "val": {"data": [], "kd_gate_db": None},
            "loop": {"steps": steps, "log_every": max(1, steps // 4), "amp": True, "amp_dtype": "bfloat16",
                     "deterministic": False}}, "gpu_check training")
        out = self.out / "train"
        self.peak_reset()
        t0 = time.perf_counter()
        trainer = Trainer(cfg, out, self.device)
        result = trainer.fit()
        lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if x.strip()]
        last = next(r for r in reversed(lines) if "loss/total" in r)
        finite = math.isfinite(last["loss/total"])
        self.student = out / "best.pt"
        amp = "bf16 autocast" if trainer.amp else "fp32 (AMP skipped: no CUDA)"
        return row("AMP training", "ok" if finite else "failed",
                   f"{steps} steps, batch {data['batch_size']}, {amp}, teacher {why}: "
                   f"{result.train_s / steps * 1e3:.1f} ms/step, final loss {last['loss/total']:.4g}"
                   + (f", peak {gib(self.peak())}" if self.cuda else ""),
                   time.perf_counter() - t0, s_per_step=result.train_s / steps, amp=trainer.amp,
                   final_loss=last["loss/total"], peak_cuda_bytes=self.peak(), data=data["train"])

    def ddp(self) -> list[dict]:
        import socket

        import torch.distributed as dist

        rows = []
        for backend in ("gloo", "nccl"):
            name = f"DDP all-reduce ({backend}, 1 process)"
            if backend == "nccl" and not self.cuda:
                rows.append(skipped(name))
                continue
            if not dist.is_available() or (backend == "nccl" and not dist.is_nccl_available()):
                rows.append(skipped(name, f"torch.distributed without {backend}"))
                continue
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
            t0 = time.perf_counter()
            dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
            try:
                dev = self.device if backend == "nccl" else torch.device("cpu")
                x = torch.arange(4.0, device=dev)
                dist.all_reduce(x)
                ok = torch.equal(x.cpu(), torch.arange(4.0))
            finally:
                dist.destroy_process_group()
            rows.append(row(name, "ok" if ok else "failed", "all_reduce sums correctly" if ok else f"got {x}",
                            time.perf_counter() - t0))
        return rows

    def compression(self) -> dict:
        from compress.iterative import Compressor, CompressSettings
        from compress.prune import Target

        if self.student is None:
            return skipped("compression", "no trained student (the training check failed)")
        set5 = shared_dir() / "data" / "Set5"
        settings = CompressSettings(
            checkpoint=str(self.student), reparam=True, target=Target("macs", 0.5), rounds=1,
            finetune_steps=2 if self.quick else 100, teachers=["self"], importance="taylor", multiple=8,
            lr_size=64 if self.quick else 256, val=[str(set5) if set5.is_dir() else "builtin"],
            overrides=["data.batch_size=4", "data.gt_size=32"] if self.quick else [],
            latency_repeats=1 if self.quick else 10, device=str(self.device))
        t0 = time.perf_counter()
        history = Compressor(settings, self.out / "compress").run()
        a, b = history[0], history[-1]
        self.compressed = self.out / "compress" / f"round_{b.round}" / "model.pt"
        sets = ", ".join(f"{k} {a.psnr[k]:.2f} -> {b.psnr[k]:.2f} dB" for k in a.psnr)
        return row("compression", "ok", f"{a.params:,} -> {b.params:,} params, {a.macs / 1e9:.2f} -> "
                   f"{b.macs / 1e9:.2f} GMACs, fine-tune {b.finetune_steps} steps on {self.device.type}; {sets}",
                   time.perf_counter() - t0, rounds=[r.as_dict() for r in history])

    def latency(self) -> list[dict]:
        from srcore.cost import latency
        from srcore.modelspec import load_checkpoint_model

        size = 64 if self.quick else 256
        repeats = 2 if self.quick else 20
        models: list[tuple[str, torch.nn.Module]] = []
        for name in ZOO[:2] if self.quick else ZOO:
            models.append((name, bench.build_model(name, 2)))
        for label, path in (("student (trained)", self.student), ("student (compressed)", self.compressed)):
            if path is not None and path.is_file():
                models.append((label, load_checkpoint_model(path)[0]))
        rows = []
        if not self.cuda:
            rows.append(skipped("CUDA-event latency"))
        x = torch.rand(1, 3, size, size, device=self.device)
        for label, model in models:
            model = model.eval().to(self.device)
            t0 = time.perf_counter()
            self.peak_reset()
            with torch.inference_mode():
                fp32 = latency(model, x, warmup=1 if self.quick else 5, repeats=repeats)["median_s"]
                peak = self.peak()
                parts = [f"fp32 {fp32 * 1e3:.2f} ms"]
                bf16 = None
                if self.cuda:
                    with torch.autocast("cuda", dtype=torch.bfloat16):
                        bf16 = latency(model, x, warmup=5, repeats=repeats)["median_s"]
                    parts.append(f"bf16 {bf16 * 1e3:.2f} ms")
            clock = "CUDA events" if self.cuda else "CPU wall clock"
            rows.append(row(f"latency {label}", "ok", f"LR {size}x{size} x2, {clock}: " + ", ".join(parts)
                            + (f", peak {gib(peak)}" if self.cuda else ""), time.perf_counter() - t0,
                            fp32_s=fp32, bf16_s=bf16, peak_cuda_bytes=peak, lr_size=size))
            model.cpu()
        return rows


def table(rows: list[dict], title: str) -> Table:
    t = Table(title=title)
    for col in ("check", "status", "result", "s"):
        t.add_column(col, justify="right" if col == "s" else "left")
    style = {"ok": "green", "skipped": "yellow", "failed": "bold red"}
    for r in rows:
        t.add_row(Text(r["check"]), Text(r["status"], style=style.get(r["status"], "")), Text(r["result"]),
                  f"{r['seconds']:.1f}")
    return t


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cuda, cuda:1 or cpu")
    p.add_argument("--quick", action="store_true", help="tiny sizes and a few steps (tests the script on a CPU)")
    p.add_argument("--out", type=Path, default=Path("runs/gpu_check"), help="folder for the trained checkpoints")
    p.add_argument("--json", type=Path, help="the JSON copy of the table (default OUT/gpu_check.json)")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--verbose", action="store_true")
    return p.parse_args(argv)


def main(argv=None) -> int:
    from common import check_device

    args = parse_args(argv)
    check_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    json_path = check_output_file(args.json or args.out / "gpu_check.json", "--json")
    log = setup_logging(args.verbose)
    args.out.mkdir(parents=True, exist_ok=True)
    c = Check(args.device, args.quick, args.out, log)
    t0 = time.perf_counter()
    for name, fn in (("environment", c.environment), ("search step", c.search_step),
                     ("AMP training", c.amp_training), ("DDP", c.ddp), ("compression", c.compression),
                     ("latency", c.latency)):
        c.run(name, fn)
    total = time.perf_counter() - t0
    title = f"gpu_check on {args.device} ({'quick' if args.quick else 'full'}): {total:.0f} s"
    console.print(table(c.rows, title))
    payload = {"device": args.device, "quick": args.quick, "total_s": total, "when": time.strftime("%Y-%m-%dT%H:%M:%S"),
               "host": platform.node(), "rows": c.rows}
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    log.info(f"wrote {json_path}")
    return 1 if any(r["status"] == "failed" for r in c.rows) else 0


if __name__ == "__main__":
    run_cli(main)
