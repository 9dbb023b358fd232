#!/usr/bin/env python
"""Draw a DLSR-space genotype (search_spaces/plot.py): the cell DAG, the network-level graph with the
image-space skip and, with --alphas, the alpha/beta evolution of the search that found it.

Examples:
  python tools/plot_genotype.py dlsr_x2 --out docs/figures/dlsr_x2.png
  python tools/plot_genotype.py runs/search/genotype.yaml --out g.png --alphas runs/search/alpha_history.jsonl
"""
from __future__ import annotations

import argparse
from pathlib import Path

from common import run_cli, setup_logging

from search_spaces.plot import (  # noqa: F401  (re-exported for scripts that import this tool)
    cell_graph,
    draw_alphas,
    draw_betas,
    network_graph,
    plot_genotype,
    read_alpha_history,
    softmax,
)
from srcore.rundir import check_output_file

# CLI


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("genotype", help="genotype YAML file or shipped name (e.g. dlsr_x2)")
    p.add_argument("--out", type=Path, required=True, help="PNG file to write")
    p.add_argument("--alphas", type=Path, help="alpha_history.jsonl from a search run (adds alpha/beta panels)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    check_output_file(args.out, "--out")
    log = setup_logging()
    out = plot_genotype(args.genotype, args.out, args.alphas)
    log.info(f"wrote {out}")
    return 0


if __name__ == "__main__":
    run_cli(main)
