"""What the resumable multi-run drivers share (tools/distill_table.py, tools/study.py).

A driver trains many runs, one folder each, and scores them on benchmark sets:
  * `finished_row(run_dir, cfg)`: the run's result.json if it finished with this config (it is reused);
  * `train_or_resume(cfg, run_dir, ...)`: claims the folder (one writer), resumes an interrupted run from its
    last.pt (bit-identically on CPU; a kill -9 loses at most the steps since the last save), trains a new one,
    or refuses a folder holding a run with another config unless `overwrite`;
  * `score(model, sets, device)`: Y PSNR/SSIM per benchmark set (srcore's metrics, the literature's protocol);
  * `Pool(jobs, ...)`: `jobs` runs at once in spawned worker processes, or in this process for one job;
  * seed statistics: `mean_psnr` of a row over the sets, `noise_level` (seed-to-seed standard deviation
    pooled over groups of rows), `fmt_ms` (mean ± standard deviation as text).
"""
from __future__ import annotations

import json
import logging
import math
import multiprocessing
import os
import statistics
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path

from common import setup_logging
from train import OUTPUTS as TRAIN_OUTPUTS

from distill.config import TrainConfig
from distill.trainer import Callback, Trainer, resume_diff
from srcore.checkpoint import read_checkpoint
from srcore.data import BenchmarkSet
from srcore.evaluation import evaluate_bicubic, evaluate_model
from srcore.paths import SHARED_VAR
from srcore.rundir import claim_run_dir

RESULT = "result.json"  # a finished run's row: scores, timing and its config


def benchmark_sets(names: list[str] | tuple[str, ...], scale: int) -> list[BenchmarkSet]:
    """Benchmark sets by name under ${SRNAS_SHARED}/data (Set5, Set14, B100), or by folder (or `builtin`)."""
    return [BenchmarkSet(n if ("/" in n or n.startswith("builtin")) else f"${{{SHARED_VAR}}}/data/{n}", scale)
            for n in names]


def score(model, sets: list[BenchmarkSet], device) -> dict:
    """{set name: {"psnr_y", "ssim_y"}} of `model` on each set."""
    out = {}
    for ds in sets:
        r = evaluate_model(model, ds, device=device)
        out[ds.name] = {"psnr_y": r.psnr_y, "ssim_y": r.ssim_y}
    return out


def bicubic_scores(sets: list[BenchmarkSet]) -> dict:
    """The published bicubic protocol's scores on each set (the trivial baseline every row is set beside)."""
    return {ds.name: {"psnr_y": (r := evaluate_bicubic(ds)).psnr_y, "ssim_y": r.ssim_y} for ds in sets}


class LogLines(Callback):
    """One log line per log interval (no progress bar: several runs may share the terminal)."""

    def __init__(self, label: str):
        self.label, self.log = label, logging.getLogger("srnas")

    def on_log(self, trainer, step, record):
        self.log.info(f"[{self.label}] step {step}/{trainer.cfg.loop.steps}  loss {record['loss/total']:.4g}  "
                      f"({record['s_per_step']:.3f} s/step)")


def finished_row(run_dir: Path, cfg: TrainConfig) -> dict | None:
    """The row in run_dir/result.json if the run finished with `cfg` (up to keys that do not change the trajectory:
    `distill.trainer.resume_diff`)."""
    done = run_dir / RESULT
    if not done.exists():
        return None
    try:
        row = json.loads(done.read_text())
    except (OSError, ValueError):
        return None  # a torn file (written atomically, so only by hand): train or score again
    same = isinstance(row, dict) and isinstance(row.get("config"), dict) and not resume_diff(row["config"], cfg)
    return row if same else None


def write_row(run_dir: Path, row: dict) -> Path:
    """run_dir/result.json, written atomically (a kill mid-write leaves the old file or none)."""
    done = run_dir / RESULT
    tmp = done.with_name(done.name + ".tmp")
    tmp.write_text(json.dumps(row, indent=2) + "\n")
    os.replace(tmp, done)
    return done


def train_or_resume(cfg: TrainConfig, run_dir: Path, label: str, device: str, *, overwrite: bool = False,
                    stop_after: int | None = None) -> dict:
    """Train `cfg` in `run_dir` to its last step (or to `stop_after`), resuming an interrupted run; returns
    the last.pt checkpoint. A folder holding a run with another config is an error unless `overwrite`."""
    last = run_dir / "last.pt"
    steps = cfg.loop.steps if stop_after is None else min(cfg.loop.steps, stop_after)
    # one writer per run folder
    with claim_run_dir(run_dir, outputs=TRAIN_OUTPUTS + (RESULT,), resume=True, tool="training"):
        prev = read_checkpoint(last) if last.exists() else None
        same = prev is not None and not resume_diff(prev["config"], cfg)
        if prev is not None and not same:
            if not overwrite:
                raise ValueError(f"{run_dir} holds a run with another config (e.g. another number of steps); "
                                 "pass --overwrite to replace it, or choose another --out")
            for name in TRAIN_OUTPUTS + (RESULT,):
                (run_dir / name).unlink(missing_ok=True)
        if not (same and prev["step"] >= steps):  # reuse a finished run, resume an interrupted one
            Trainer(cfg, run_dir, device, [LogLines(label)]).fit(resume=same, stop_after=stop_after)
    return read_checkpoint(last)


# --- worker processes ----------------------------------------------------------------------------------------


def _worker_init(shared: str) -> None:
    os.environ[SHARED_VAR] = shared
    setup_logging()


class _InProcess:
    """The executor interface, running each job at submit time (one job at a time, in this process)."""

    def submit(self, fn, *args, **kwargs) -> Future:
        f: Future = Future()
        try:
            f.set_result(fn(*args, **kwargs))
        except Exception as e:  # reported by f.result(), as a worker's exception would be
            f.set_exception(e)
        return f

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        pass


def pool(jobs: int):
    """An executor running `jobs` jobs at once in spawned processes (which see this process's
    ${SRNAS_SHARED}), or every job in this process when jobs == 1."""
    if jobs <= 1:
        return _InProcess()
    ctx = multiprocessing.get_context("spawn")
    shared = os.environ.get(SHARED_VAR, "")
    return ProcessPoolExecutor(jobs, mp_context=ctx, initializer=_worker_init, initargs=(shared,))


# --- statistics ------------------------------------------------------------------------------------------------


def mean_psnr(row: dict) -> float:
    """A run's PSNR-Y averaged over its benchmark sets."""
    return statistics.fmean(v["psnr_y"] for v in row["sets"].values())


def noise_level(by: dict[str, list[dict]]) -> float | None:
    """The seed-to-seed standard deviation of one run's mean PSNR, pooled over the groups (rows of the same
    method or network; None without a group of two seeds)."""
    var = [(len(rs) - 1, statistics.variance([mean_psnr(r) for r in rs])) for rs in by.values() if len(rs) > 1]
    dof = sum(d for d, _ in var)
    return math.sqrt(sum(d * v for d, v in var) / dof) if dof else None


def fmt_ms(xs: list[float], nd: int) -> str:
    """'mean ± sd' (just the mean for one value) with `nd` decimals."""
    m = statistics.fmean(xs)
    return f"{m:.{nd}f}" + (f" ± {statistics.stdev(xs):.{nd}f}" if len(xs) > 1 else "")
