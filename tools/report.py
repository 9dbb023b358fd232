#!/usr/bin/env python
"""Write a run's report: OUT/report.md, a self-contained OUT/report.html, and the plots under OUT/report/.

Reads OUT/summary.json (the contract in reporting/summary.py) or infers it from the run folder (OUT/search,
OUT/train, OUT/compress, OUT/eval*.json); every section says "not run" when its inputs are absent. It
measures what the run did not record: params/MACs/activations/CPU latency of every model, and PSNR/SSIM on
the validation data of models without an eval JSON (reporting/build.py has the details).

Examples:
  python tools/report.py runs/quickstart
  python tools/report.py runs/quickstart --crops 3 --threads 2 --latency-repeats 10
"""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

import torch
from common import console, run_cli, setup_logging

from reporting.build import build_report
from search_spaces.plot import plot_genotype


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", type=Path, help="the run folder (the pipeline's --out)")
    p.add_argument("--crops", type=int, default=8, help="crop comparisons per validation set (first N images)")
    p.add_argument("--lr-size", type=int, default=256, help="LR input side for params/MACs/activations/latency")
    p.add_argument("--latency-repeats", type=int, default=5, help="timed forward passes per model (median)")
    p.add_argument("--no-cost", action="store_true", help="do not measure params/MACs/activations/latency")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, help="torch CPU threads (latency is measured with these)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    log = setup_logging()
    if args.threads:
        torch.set_num_threads(args.threads)
    for name in ("crops", "lr_size", "latency_repeats"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    command = "python tools/report.py " + " ".join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    with console.status("writing the report"):
        res = build_report(args.run, max_crops=args.crops, lr_size=args.lr_size, threads=args.threads,
                           latency_repeats=args.latency_repeats, measure=not args.no_cost, device=args.device,
                           plot_genotype=plot_genotype, command=command, log=log.info)
    for note in res.notes:
        log.warning(note)
    log.info(f"wrote {res.markdown}, {res.html} and {len(res.pngs)} figures in {args.run / 'report'}")
    return 0


if __name__ == "__main__":
    run_cli(main)
