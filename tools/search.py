#!/usr/bin/env python
"""Search a small SR network in the DLSR space (differentiable NAS over cells and cell links).

Writes into --out: genotype.yaml (the derived genotype), collapse_report.json (per edge: mixture weights,
entropy, margin, decided or not, cheapest or parameter-free; the verdict), genotype.png (its drawing with
the alpha/beta curves), alpha_history.jsonl (raw alphas and betas, and the loss and cost gradients on
them, per logged step), checkpoint.pt (atomic, every loop.checkpoint_every steps, at the end and on
Ctrl-C) and, with a cost term, cost_table.json.

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
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

import torch
from common import CONFIGS, console, run_cli, setup_logging
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from nas import distributed
from nas.config import SearchConfig
from nas.report import format_report
from nas.search import CHECKPOINT, GENOTYPE, HISTORY, REPORT, config_from_checkpoint, run_search
from search_spaces.genotype import dump_genotype
from srcore.config import apply_overrides, from_dict, load_config, to_dict

PRESETS = CONFIGS / "search"


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="search config YAML file or preset name (smoke, quickstart, dlsr); "
                                    "with --resume it defaults to the checkpoint's")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set arch.algorithm=second_order (repeatable)")
    p.add_argument("--resume", action="store_true", help="continue the search in --out from its checkpoint")
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
        return load_config(SearchConfig, args.config, sets, PRESETS)
    ckpt = args.out / CHECKPOINT
    cfg = config_from_checkpoint(ckpt)
    return from_dict(SearchConfig, apply_overrides(to_dict(cfg), sets), str(ckpt)) if sets else cfg


def plot(out: Path, log) -> None:
    """genotype.png via tools/plot_genotype.py (imported lazily; the search does not depend on it)."""
    try:
        from plot_genotype import plot_genotype
    except ImportError as e:
        log.warning(f"genotype.png not drawn: tools/plot_genotype.py is not available ({e})")
        return
    png = plot_genotype(out / GENOTYPE, out / "genotype.png", out / HISTORY, name=out.name)
    log.info(f"wrote {png}")


def main(argv=None) -> int:
    args = parse_args(argv)
    cfg = load_search_config(args)
    if cfg.run.threads:
        torch.set_num_threads(cfg.run.threads)
    device = distributed.init_from_env(cfg.run.device)
    try:
        return search(args, cfg, device)
    finally:
        distributed.shutdown()


def search(args, cfg: SearchConfig, device: str) -> int:
    rank, world = distributed.world()
    log = setup_logging() if rank == 0 else logging.getLogger("srnas.search")
    if args.verbose:  # debug lines from the search only, not from matplotlib or PIL
        log.setLevel(logging.DEBUG)
    s = cfg.space
    log.info(f"search: {len(s.ops)} ops, {s.num_cells} cells, C={s.channels}, x{s.scale}, "
             f"{'shared' if s.shared_alphas else 'per-cell'} alphas, partial channels {s.partial_channels}, "
             f"arch {cfg.arch.algorithm}, cost {cfg.cost.kind} (target {cfg.cost.target}), "
             f"{torch.get_num_threads()} threads on {device}" + (f", {world} processes" if world > 1 else ""))

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TimeRemainingColumn(), TextColumn("{task.fields[info]}"))
    with Progress(*columns, console=console, transient=True, disable=rank != 0) as prog:
        task = prog.add_task("search", total=None, info="loading data")

        def callback(event: str, info: dict) -> None:
            if event == "start":
                prog.update(task, total=info["total_steps"], completed=info["step"], info="")
                log.info(f"{'resumed at step ' + str(info['step']) if info['resumed'] else 'started'}: "
                         f"{info['total_steps']} steps ({info['batches_per_epoch']} per epoch), "
                         f"{info['train_images']} train / {info['val_images']} val images, "
                         f"{info['weights']:,} weights")
                table = info.get("cost_table")
                if table:
                    ops = ", ".join(f"{k} {v:.4g}" for k, v in table["ops"].items())
                    log.info(f"cost table ({table['kind']}, {table['unit']}): fixed {table['fixed']:.4g}; {ops}")
            elif event == "step":
                psnr = info.get("val_psnr")
                parts = [f"ep {info['epoch']}", f"loss {info['loss']:.4f}",
                         f"val {psnr:.2f} dB" if psnr is not None else "val -",
                         "arch" if info["arch"] else "warm-up"]
                if "expected_cost" in info:
                    parts.append(f"E[{info['cost_unit']}] {info['expected_cost']:.4g}")
                parts.append(info["genotype"])
                prog.update(task, completed=info["step"], info="  ".join(parts))
                log.debug(f"step {info['step']}: " + "  ".join(parts))
            elif event == "eval":
                log.debug(f"step {info['step']}: PSNR on validation patches {info['psnr']:.3f} dB")
            elif event == "collapse":
                log.warning(f"step {info['step']}: {info['message']}")
            elif event == "checkpoint":
                log.debug(f"step {info['step']}: checkpoint {info['path']}")
            elif event == "report":
                console.print(format_report(info["report"]), highlight=False, markup=False)
                for warning in info["report"]["warnings"]:
                    log.warning(warning)

        result = run_search(cfg, args.out, device=device, resume=args.resume, stop_at=args.stop_at,
                            callback=callback)
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
    if not args.no_plot:
        plot(args.out, log)
    return 0


if __name__ == "__main__":
    run_cli(main)
