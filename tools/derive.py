#!/usr/bin/env python
"""Derive a genotype from a search: its checkpoint's alphas and betas -> genotype YAML + collapse report.

Rules: `--method argmax` (nas/derive.py): per distillation stage the op with the largest alpha; per cell
k >= 3 the two earlier cells with the largest betas. `--method perturbation` (nas/select.py, Wang et al.
ICLR 2021): per edge the op whose removal from the supernet's mixture raises the validation loss most,
per cell the two inputs whose removal hurts most (needs the search's training images). `--exclude
identity` forbids an op (DARTS excludes its zero op; this space has none, and identity is a real op
here, so nothing is excluded by default). The collapse report (nas/report.py) is written next to the
genotype (`<out stem>.report.json`) and printed.

Examples:
  python tools/derive.py runs/search/smoke --out genotype.yaml
  python tools/derive.py runs/search/smoke/checkpoint.pt --out g.yaml --exclude identity
  python tools/derive.py runs/search/quick --out g.yaml --step 200      # from alpha_history.jsonl at step 200
  python tools/derive.py runs/search/quick --out g.yaml --method perturbation --tune-steps 10
"""
from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import torch
from common import console, run_cli, setup_logging

from nas.config import ESRSpaceConfig, SearchConfig, search_config_from_dict
from nas.cost import CostTable
from nas.report import format_report
from nas.search import CHECKPOINT, HISTORY, atomic_save_json, load_search, temperature
from nas.spaces import space_of
from search_spaces.genotype import dump_genotype, save_genotype
from srcore.checkpoint import CheckpointError, load_file
from srcore.jsonl import read_jsonl
from srcore.rundir import check_output_file


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("source", type=Path, help="search output folder or its checkpoint.pt")
    p.add_argument("--out", type=Path, required=True, help="genotype YAML file to write")
    p.add_argument("--method", choices=("argmax", "perturbation"), help="default: the search's derive.method")
    p.add_argument("--exclude", nargs="+", metavar="OP", help="ops the derivation may not pick")
    p.add_argument("--step", type=int, help="argmax from alpha_history.jsonl at this logged step instead")
    p.add_argument("--eval-batches", type=int, help="perturbation: validation batches per measurement")
    p.add_argument("--tune-steps", type=int, help="perturbation: weight steps after each decided edge")
    p.add_argument("--device", help="perturbation: cpu, cuda, ...")
    return p.parse_args(argv)


def read_search(source: Path) -> tuple[dict, SearchConfig, Path]:
    """The checkpoint and config of a search (a folder or the checkpoint file itself)."""
    path = source / CHECKPOINT if source.is_dir() else source
    ckpt = load_file(path)
    if not isinstance(ckpt, dict) or "search_state" not in ckpt:
        raise CheckpointError(f"{path}: not a search checkpoint (written by tools/search.py)")
    missing = [k for k in ("config", "state_dict", "step", "total_steps") if k not in ckpt]
    if missing:
        raise CheckpointError(f"{path}: a search checkpoint without {', '.join(missing)} (damaged, or written by "
                              "another srnas version)")
    return ckpt, search_config_from_dict(ckpt["config"], str(path)), path


def history_at(path: Path, step: int) -> dict:
    if not path.is_file():
        raise ValueError(f"{path}: no alpha history to read step {step} from")
    for entry in read_jsonl(path, need=("step", "alpha", "beta")):
        if entry["step"] == step:
            return entry
    raise ValueError(f"{path}: step {step} was not logged")


def check_exclude(exclude: list[str], ops: tuple[str, ...]) -> None:
    """--exclude must name ops of the search and leave at least one."""
    unknown = [o for o in exclude if o not in ops]
    if unknown:
        raise ValueError(f"--exclude {unknown[0]}: not an op of this search (ops: {', '.join(ops)})")
    if not [o for o in ops if o not in exclude]:
        raise ValueError(f"--exclude {' '.join(exclude)}: excludes every op of the search ({', '.join(ops)}); "
                         "at least one must stay")


def argmax_derive(ckpt: dict, cfg: SearchConfig, path: Path, step: int | None):
    """The argmax genotype and its report, from the checkpoint or a logged step (no data needed)."""
    total = int(ckpt["total_steps"])
    logged = step
    if step is None:
        sd, step = ckpt["state_dict"], int(ckpt["step"])
        alphas = sd["alphas"]
        betas = [sd[f"betas.{i}"] for i in range(len([k for k in sd if k.startswith("betas.")]))]
        tau = temperature(cfg, step, total // cfg.loop.epochs, total)
    else:
        entry = history_at(path.parent / HISTORY, step)
        try:
            alphas, betas = torch.tensor(entry["alpha"]), [torch.tensor(b) for b in entry["beta"]]
        except (TypeError, ValueError, RuntimeError) as e:
            raise ValueError(f"{path.parent / HISTORY}: step {step}: alpha/beta are not numeric arrays ({e})") from None
        tau = entry.get("tau", 1.0)
    source = str(path) if logged is None else f"{path.parent / HISTORY} step {logged}"
    space = space_of(cfg.space)  # nas/spaces.py: dlsr or esr
    g = space.derive(alphas, betas, cfg.space, exclude=cfg.derive.exclude, source=source)
    table = CostTable.from_dict(ckpt["search_state"]["cost_table"]) if ckpt["search_state"].get("cost_table") else None
    report = space.report(alphas, betas, cfg.space, tau, table, cfg.loop.decided_prob, g)
    report = {**report, "method": "argmax", "step": step}
    if table is not None:
        report["derived_cost"] = space.cost_model(table, cfg.space, cfg.cost).genotype_cost(g)
    return g, report


def main(argv=None) -> int:
    args = parse_args(argv)
    check_output_file(args.out, "--out")
    log = setup_logging()
    ckpt, cfg, path = read_search(args.source)
    if args.exclude is not None:
        ops = cfg.space.candidates() if isinstance(cfg.space, ESRSpaceConfig) else tuple(cfg.space.ops)
        check_exclude(args.exclude, ops)
    d = cfg.derive
    d = dataclasses.replace(d, method=args.method or d.method,
                            exclude=tuple(args.exclude) if args.exclude is not None else d.exclude,
                            eval_batches=args.eval_batches or d.eval_batches,
                            tune_steps=args.tune_steps if args.tune_steps is not None else d.tune_steps)
    cfg = dataclasses.replace(cfg, derive=d)  # re-checked: an excluded op must be in the space
    if d.method == "perturbation":
        if args.step is not None:
            raise ValueError("--step derives by argmax from the alpha history; perturbation needs the checkpoint")
        g, report = load_search(path, cfg, args.device).derive()
        report["step"] = int(ckpt["step"])
    else:
        g, report = argmax_derive(ckpt, cfg, path, args.step)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_genotype(g, args.out)
    report_path = args.out.with_name(args.out.stem + ".report.json")
    atomic_save_json(report, report_path)
    console.print(format_report(report), highlight=False, markup=False)
    for warning in report["warnings"]:
        log.warning(warning)
    log.info(f"{path} step {report['step']} ({d.method}): {space_of(cfg.space).describe(g)}; wrote {args.out} and "
             f"{report_path}")
    console.print(dump_genotype(g), highlight=False, markup=False)
    return 0


if __name__ == "__main__":
    run_cli(main)
