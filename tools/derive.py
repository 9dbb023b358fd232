#!/usr/bin/env python
"""Derive a genotype from a search: its checkpoint's alphas and betas -> genotype YAML.

Rules (nas/derive.py): per distillation stage the op with the largest alpha; per cell k >= 3 the two
earlier cells with the largest betas. `--exclude identity` forbids an op (DARTS excludes its zero op;
this space has none, and identity is a real op here, so nothing is excluded by default).

Examples:
  python tools/derive.py runs/search/smoke --out genotype.yaml
  python tools/derive.py runs/search/smoke/checkpoint.pt --out g.yaml --exclude identity
  python tools/derive.py runs/search/quick --out g.yaml --step 200      # from alpha_history.jsonl at step 200
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch
from common import console, run_cli, setup_logging

from nas.config import SearchConfig
from nas.derive import TOP_K, derive_genotype, describe
from nas.search import CHECKPOINT, HISTORY
from search_spaces.genotype import dump_genotype, save_genotype
from srcore.checkpoint import CheckpointError, load_file
from srcore.config import from_dict
from srcore.jsonl import read_jsonl
from srcore.rundir import check_output_file


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("source", type=Path, help="search output folder or its checkpoint.pt")
    p.add_argument("--out", type=Path, required=True, help="genotype YAML file to write")
    p.add_argument("--top-k", type=int, default=TOP_K, help=f"inputs kept per cell k >= 3 (genotype v1: {TOP_K})")
    p.add_argument("--exclude", nargs="+", default=[], metavar="OP", help="ops the argmax may not pick")
    p.add_argument("--step", type=int, help="derive from alpha_history.jsonl at this logged step instead")
    return p.parse_args(argv)


def read_search(source: Path) -> tuple[SearchConfig, torch.Tensor, list[torch.Tensor], int, Path]:
    """The config, alphas, betas and step of a search checkpoint (a folder or the file itself)."""
    path = source / CHECKPOINT if source.is_dir() else source
    ckpt = load_file(path)
    if not isinstance(ckpt, dict) or "search_state" not in ckpt:
        raise CheckpointError(f"{path}: not a search checkpoint (written by tools/search.py)")
    cfg = from_dict(SearchConfig, ckpt["config"], str(path))
    sd = ckpt["state_dict"]
    betas = [sd[f"betas.{i}"] for i in range(cfg.space.num_cells - 2)]
    return cfg, sd["alphas"], betas, int(ckpt["step"]), path


def history_at(path: Path, step: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
    if not path.is_file():
        raise ValueError(f"{path}: no alpha history to read step {step} from")
    for entry in read_jsonl(path, need=("step", "alpha", "beta")):
        if entry["step"] == step:
            try:
                return torch.tensor(entry["alpha"]), [torch.tensor(b) for b in entry["beta"]]
            except (TypeError, ValueError, RuntimeError) as e:
                raise ValueError(f"{path}: step {step}: alpha/beta are not numeric arrays ({e})") from None
    raise ValueError(f"{path}: step {step} was not logged")


def check_exclude(exclude: list[str], ops: tuple[str, ...]) -> None:
    """--exclude must name ops of the search and leave at least one."""
    unknown = [o for o in exclude if o not in ops]
    if unknown:
        raise ValueError(f"--exclude {unknown[0]}: not an op of this search (ops: {', '.join(ops)})")
    if not [o for o in ops if o not in exclude]:
        raise ValueError(f"--exclude {' '.join(exclude)}: excludes every op of the search ({', '.join(ops)}); "
                         "at least one must stay")


def main(argv=None) -> int:
    args = parse_args(argv)
    check_output_file(args.out, "--out")
    log = setup_logging()
    cfg, alphas, betas, step, path = read_search(args.source)
    check_exclude(args.exclude, tuple(cfg.space.ops))
    if args.step is not None:
        alphas, betas = history_at(path.parent / HISTORY, args.step)
        step = args.step
    g = derive_genotype(alphas, betas, cfg.space, top_k=args.top_k, exclude=tuple(args.exclude))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_genotype(g, args.out)
    log.info(f"{path} step {step}: {describe(g)}; wrote {args.out}")
    console.print(dump_genotype(g), highlight=False, markup=False)
    return 0


if __name__ == "__main__":
    run_cli(main)
