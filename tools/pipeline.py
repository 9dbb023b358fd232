#!/usr/bin/env python
"""Run the whole chain: search a genotype, train it by distillation, evaluate the best checkpoint.

Each stage is the stage's own CLI (tools/search.py, tools/train.py, tools/evaluate.py) with the configs named
in one pipeline YAML (configs/pipeline/*.yaml); outputs go to OUT/search, OUT/train and OUT/eval.json, and a
summary to OUT/summary.json.

Examples:
  python tools/pipeline.py --config quickstart --out runs/pipeline          # embedded photographs, ~15 min
  python tools/pipeline.py --config smoke --out runs/smoke                   # seconds
  python tools/pipeline.py --config quickstart --out runs/p --teacher rlfn_s_x2   # a registered teacher
  python tools/pipeline.py --config quickstart --out runs/p --set train.set='[loop.steps=5000]'
"""
from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field
from pathlib import Path

import evaluate
import search
import train
from common import CONFIGS, run_cli, setup_logging

from srcore.config import load_config, to_dict


@dataclass(frozen=True)
class StageConfig:
    config: str  # the stage's config file or preset name
    set: list[str] = field(default_factory=list)  # the stage's --set overrides


@dataclass(frozen=True)
class EvalStage:
    data: list[str] = field(default_factory=lambda: ["builtin"])
    self_ensemble: bool = False


@dataclass(frozen=True)
class PipelineConfig:
    search: StageConfig
    train: StageConfig
    evaluate: EvalStage = field(default_factory=EvalStage)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="pipeline YAML or preset (configs/pipeline: smoke, quickstart)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a pipeline key")
    p.add_argument("--teacher", help="registered teacher weights (e.g. rlfn_s_x2), or a zoo architecture with "
                                     "--teacher-weights (else one is trained here and cached)")
    p.add_argument("--teacher-weights", help="weight file for --teacher")
    p.add_argument("--allow-download", action="store_true", help="let a missing registered teacher be downloaded")
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    log = setup_logging()
    cfg = load_config(PipelineConfig, args.config, args.set, preset_dir=CONFIGS / "pipeline")
    search_dir, train_dir = args.out / "search", args.out / "train"

    log.info(f"[1/3] search ({cfg.search.config}) -> {search_dir}")
    argv_search = ["--config", cfg.search.config, "--out", str(search_dir), "--device", args.device]
    if search.main(argv_search + [a for s in cfg.search.set for a in ("--set", s)]) != 0:
        return 1
    genotype = search_dir / "genotype.yaml"

    log.info(f"[2/3] train {genotype} ({cfg.train.config}) -> {train_dir}")
    argv_train = ["--config", cfg.train.config, "--out", str(train_dir), "--device", args.device,
                  "--set", f"student.genotype={genotype}", *cfg.train.set]
    if args.teacher:
        argv_train += ["--teacher", args.teacher]
    if args.teacher_weights:
        argv_train += ["--teacher-weights", args.teacher_weights]
    if args.allow_download:
        argv_train.append("--allow-download")
    if train.main(argv_train) != 0:
        return 1

    log.info(f"[3/3] evaluate {train_dir / 'best.pt'} on {', '.join(cfg.evaluate.data)}")
    eval_json = args.out / "eval.json"
    argv_eval = ["--checkpoint", str(train_dir / "best.pt"), "--data", *cfg.evaluate.data, "--json", str(eval_json),
                 "--device", args.device] + (["--self-ensemble"] if cfg.evaluate.self_ensemble else [])
    if evaluate.main(argv_eval) != 0:
        return 1
    summary = {"config": to_dict(cfg), "genotype": str(genotype), "checkpoint": str(train_dir / "best.pt"),
               "results": json.loads(eval_json.read_text())["results"]}
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    log.info(f"wrote {args.out / 'summary.json'}")
    return 0


if __name__ == "__main__":
    run_cli(main)
