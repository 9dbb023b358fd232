#!/usr/bin/env python
"""Search a small SR network in the DLSR space (differentiable NAS over cells and cell links).

Writes into --out: genotype.yaml (the derived genotype), collapse_report.json (per edge: mixture weights,
entropy, margin, decided or not, cheapest or parameter-free; the verdict), genotype.png (its drawing with
the alpha/beta curves), alpha_history.jsonl (raw alphas and betas, and the loss and cost gradients on
them, per logged step), metrics.jsonl (per logged step: lr, loss/train, loss/val and loss/cost_penalty once
arch steps run, expected cost; val/patches/psnr at each evaluation; the curves of tools/report.py),
checkpoint.pt (atomic, every loop.checkpoint_every steps, at the end and on Ctrl-C) and, with a cost term,
cost_table.json.

Examples:
  python tools/search.py --config smoke --out runs/search/smoke            # seconds
  python tools/search.py --config quickstart --out runs/search/quick       # a few minutes, embedded images
  python tools/search.py --config dlsr --out runs/search/dlsr --set data.train=../shared/data/DF2K
  python tools/search.py --config quickstart --out runs/search/quick --set cost.kind=macs --set cost.weight=0.05
  python tools/search.py --out runs/search/quick --resume                  # continue (config from the checkpoint)
  python tools/search.py --out runs/search/quick --resume --set run.threads=1 --set loop.log_every=1
  torchrun --nproc-per-node 2 tools/search.py --config smoke --out runs/search/ddp      # data-parallel
Presets: configs/search/{smoke,quickstart,dlsr,dlsr_robust}.yaml. Ctrl-C once: finish the step, save, stop.
On resume only execution keys (run.*, derive.*, space.fuse, space.channels_last, loop logging/eval/
checkpoint keys) may change; any other --set is refused, naming the key.
--out is locked for the run (srcore/rundir.py): a folder holding a search needs --resume or --overwrite, and a
second process on the same folder stops with an error naming the first.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path

import torch
from common import CONFIGS, console, print_error, run_cli, setup_logging, setup_runtime
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from nas import distributed
from nas.config import ESRSpaceConfig, SearchConfig, search_config_class, search_config_from_dict
from nas.report import format_report
from nas.search import (
    CHECKPOINT,
    COST_TABLE,
    GENOTYPE,
    HISTORY,
    REPORT,
    NonFiniteSearch,
    config_from_checkpoint,
    run_search,
)
from search_spaces.genotype import dump_genotype
from srcore.config import ConfigError, apply_overrides, load_config, to_dict
from srcore.jsonl import trim_jsonl
from srcore.layers import ESA
from srcore.rundir import claim_run_dir

PRESETS = CONFIGS / "search"
OUTPUTS = (CHECKPOINT, HISTORY, GENOTYPE, "genotype.png", COST_TABLE)  # what a search writes into --out


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="search config YAML file or preset name (smoke, quickstart, dlsr); "
                                    "with --resume it defaults to the checkpoint's")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set arch.algorithm=second_order (repeatable)")
    p.add_argument("--resume", action="store_true", help="continue the search in --out from its checkpoint")
    p.add_argument("--overwrite", action="store_true", help="delete the search in --out and start again")
    p.add_argument("--device", help="cpu, cuda, cuda:1, ... (sets run.device)")
    p.add_argument("--threads", type=int, help="torch CPU threads (sets run.threads)")
    p.add_argument("--stop-at", type=int, metavar="STEP", help="stop (and checkpoint) at this global step")
    p.add_argument("--no-plot", action="store_true", help="do not draw genotype.png")
    p.add_argument("-v", "--verbose", action="store_true", help="log every progress update")
    args = p.parse_args(argv)
    if args.config is None and not args.resume:
        p.error("--config is required (unless --resume)")
    return args


def load_search_config(args) -> SearchConfig:
    sets = list(args.set) + [f"run.{k}={getattr(args, k)}" for k in ("threads", "device") if getattr(args, k)]
    if args.config is not None:
        return load_config(search_config_class, args.config, sets, PRESETS)
    ckpt = args.out / CHECKPOINT
    cfg = config_from_checkpoint(ckpt)
    return search_config_from_dict(apply_overrides(to_dict(cfg), sets), str(ckpt)) if sets else cfg


def check_sizes(cfg: SearchConfig) -> None:
    """Patches and cost-table inputs must fit the supernet: every DLSR cell ends with ESA (15x15 minimum), and
    so does an esr block with the esa attention."""
    esr = isinstance(cfg.space, ESRSpaceConfig)
    if esr and "esa" not in cfg.space.attns:
        return
    need, s, where = ESA.MIN_INPUT, cfg.space.scale, "the esa attention" if esr else "ESA in every cell"
    if cfg.data.gt_size // s < need:
        raise ConfigError(f"data.gt_size = {cfg.data.gt_size}: the LR patch {cfg.data.gt_size // s}x"
                          f"{cfg.data.gt_size // s} is smaller than the supernet's minimum input {need}x{need} "
                          f"({where}); use data.gt_size >= {need * s}")
    if cfg.cost.kind != "none" and min(cfg.cost.input_size) < need:
        raise ConfigError(f"cost.input_size = {list(cfg.cost.input_size)}: below the supernet's minimum input "
                          f"{need}x{need}")


def plot(out: Path, log) -> None:
    """genotype.png via search_spaces.plot (imported lazily: matplotlib is needed only here)."""
    try:
        from search_spaces.plot import plot_genotype
    except ImportError as e:
        log.warning(f"genotype.png not drawn: matplotlib is not available ({e})")
        return
    png = plot_genotype(out / GENOTYPE, out / "genotype.png", out / HISTORY, name=out.name)
    log.info(f"wrote {png}")


METRICS = "metrics.jsonl"
_METRIC_KEYS = {"lr": "lr", "loss": "loss/train", "val_loss": "loss/val", "penalty": "loss/cost_penalty",
                "expected_cost": "expected_cost"}


def metrics_record(info: dict) -> dict:
    """A "step" event as one metrics.jsonl line (the key names of distill's metrics.jsonl where they exist)."""
    rec = {"step": info["step"], "epoch": info["epoch"]}
    rec.update({name: info[k] for k, name in _METRIC_KEYS.items() if isinstance(info.get(k), (int, float))})
    return rec


def start_metrics(path: Path, resumed_at: int | None) -> None:
    """A fresh metrics.jsonl, or on resume the old one without the lines logged after the checkpoint."""
    if resumed_at is not None and path.is_file():
        trim_jsonl(path, resumed_at)  # a torn last line (a kill mid-write) is dropped with a warning
    else:
        path.write_text("")


def main(argv=None) -> int:
    args = parse_args(argv)
    setup_runtime(args)
    rank = int(os.environ.get("RANK", "0"))  # torchrun's; the process group is joined once the config is known
    log = setup_logging() if rank == 0 else logging.getLogger("srnas.search")
    if args.verbose:  # debug lines from the search only, not from matplotlib or PIL
        log.setLevel(logging.DEBUG)
    cfg = load_search_config(args) if args.config is not None else None
    if cfg is not None:
        check_sizes(cfg)
    with claim_run_dir(args.out, outputs=OUTPUTS, resume=args.resume, overwrite=args.overwrite,
                       resume_from=CHECKPOINT, tool="search", enabled=rank == 0) as run:
        if rank == 0:
            for f in run.cleaned:
                log.warning(f"removed {f}, left by a save that was killed")
            if run.removed:
                log.info(f"--overwrite: deleted {', '.join(run.removed)} in {args.out}")
        cfg = cfg if cfg is not None else load_search_config(args)
        check_sizes(cfg)
        if cfg.run.threads:
            torch.set_num_threads(cfg.run.threads)
        device = distributed.init_from_env(cfg.run.device)
        try:
            return search(args, cfg, device, log)
        finally:
            distributed.shutdown()


def search(args, cfg: SearchConfig, device: str, log) -> int:
    rank, world = distributed.world()
    s = cfg.space
    if isinstance(s, ESRSpaceConfig):
        what = (f"esr space: {s.num_blocks} blocks{' (depth searched)' if s.depth else ''}, C={s.channels}, "
                f"x{s.scale}, convs {'/'.join(s.convs)}, acts {'/'.join(s.acts)}, attns {'/'.join(s.attns)}, "
                f"skips {'/'.join(s.skips)}, {s.taps} taps")
    else:
        what = (f"{len(s.ops)} ops, {s.num_cells} cells, C={s.channels}, x{s.scale}, "
                f"{'shared' if s.shared_alphas else 'per-cell'} alphas, partial channels {s.partial_channels}")
    log.info(f"search: {what}, arch {cfg.arch.algorithm}, cost {cfg.cost.kind} (target {cfg.cost.target}), "
             f"{torch.get_num_threads()} threads on {device}" + (f", {world} processes" if world > 1 else ""))

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TimeRemainingColumn(), TextColumn("{task.fields[info]}"))
    with Progress(*columns, console=console, transient=True, disable=rank != 0) as prog:
        task = prog.add_task("search", total=None, info="loading data")

        def callback(event: str, info: dict) -> None:
            if rank != 0:  # one writer: rank 0 logs, the other processes only compute
                return
            if event == "start":
                start_metrics(args.out / METRICS, info["step"] if info["resumed"] else None)
                prog.update(task, total=info["total_steps"], completed=info["step"], info="")
                log.info(f"{'resumed at step ' + str(info['step']) if info['resumed'] else 'started'}: "
                         f"{info['total_steps']} steps ({info['batches_per_epoch']} per epoch), "
                         f"{info['train_images']} train / {info['val_images']} val images, "
                         f"{info['weights']:,} weights")
                table = info.get("cost_table")
                if table:
                    ops = ", ".join(f"{k} {v:.4g}" for k, v in table["ops"].items())
                    log.info(f"cost table ({table['kind']}, {table['unit']}): fixed {table['fixed']:.4g}; {ops}; "
                             f"target {info['cost_target']:.4g} {table['unit']}")
            elif event == "step":
                psnr = info.get("val_psnr")
                parts = [f"ep {info['epoch']}", f"loss {info['loss']:.4f}",
                         f"val {psnr:.2f} dB" if psnr is not None else "val -",
                         "arch" if info["arch"] else "warm-up"]
                if "expected_cost" in info:
                    parts.append(f"E[{info['cost_unit']}] {info['expected_cost']:.4g}")
                parts.append(info["genotype"])
                prog.update(task, completed=info["step"], info="  ".join(parts))
                with open(args.out / METRICS, "a") as f:
                    f.write(json.dumps(metrics_record(info)) + "\n")
                log.debug(f"step {info['step']}: " + "  ".join(parts))
            elif event == "eval":
                with open(args.out / METRICS, "a") as f:
                    f.write(json.dumps({"step": info["step"], "val/patches/psnr": info["psnr"]}) + "\n")
                log.debug(f"step {info['step']}: PSNR on validation patches {info['psnr']:.3f} dB")
            elif event == "collapse":
                log.warning(f"step {info['step']}: {info['message']}")
            elif event == "checkpoint":
                log.debug(f"step {info['step']}: checkpoint {info['path']}")
            elif event == "report":
                console.print(format_report(info["report"]), highlight=False, markup=False)
                for warning in info["report"]["warnings"]:
                    log.warning(warning)

        try:
            result = run_search(cfg, args.out, device=device, resume=args.resume, stop_at=args.stop_at,
                                callback=callback)
        except NonFiniteSearch as e:
            prog.stop()
            if rank == 0:
                print_error("stopped", str(e))
            return 1
    if rank != 0:
        return 0

    m = result.metrics
    summary = ", ".join(f"{k} {v:.4g}" for k, v in m.items() if isinstance(v, float))
    if result.status != "finished":
        log.warning(f"search {result.status} at step {result.step}/{result.total_steps} ({summary}); "
                    f"continue with: python tools/search.py --out {args.out} --resume")
        return 130 if result.status == "interrupted" else (1 if result.status == "collapsed" else 0)
    log.info(f"finished {result.step} steps ({summary}); wrote {args.out / GENOTYPE}, {args.out / REPORT}, "
             f"{args.out / HISTORY}, {args.out / CHECKPOINT}")
    console.print(dump_genotype(result.genotype), highlight=False, markup=False)
    if not args.no_plot and not isinstance(cfg.space, ESRSpaceConfig):  # plot_genotype draws dlsr genotypes
        plot(args.out, log)
    return 0


if __name__ == "__main__":
    run_cli(main)
