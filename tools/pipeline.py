#!/usr/bin/env python
"""Run the whole chain: search a genotype, train it by distillation, evaluate the best checkpoint.

Each stage is the stage's own CLI (tools/search.py, tools/train.py, tools/evaluate.py) with the configs named
in one pipeline YAML (configs/pipeline/*.yaml); outputs go to OUT/search, OUT/train and OUT/eval.json, and a
summary to OUT/summary.json. OUT is locked for the run (srcore/rundir.py); a folder holding a pipeline run needs
--resume (finished stages are kept, an interrupted search or training continues) or --overwrite (start again).

Examples:
  python tools/pipeline.py --config quickstart --out runs/pipeline          # embedded photographs, ~15 min
  python tools/pipeline.py --config smoke --out runs/smoke                   # seconds
  python tools/pipeline.py --config quickstart --out runs/p --teacher rlfn_s_x2   # a registered teacher
  python tools/pipeline.py --config quickstart --out runs/p --set train.set='[loop.steps=5000]'
  python tools/pipeline.py --config quickstart --out runs/p --resume         # continue after Ctrl-C
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path

import evaluate
import search
import train
from common import CONFIGS, run_cli, setup_logging, setup_runtime

from srcore.config import load_config, to_dict
from srcore.rundir import claim_run_dir

OUTPUTS = ("search", "train", "eval.json", "summary.json")  # what the pipeline writes into --out


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
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    p.add_argument("--threads", type=int, help="torch CPU threads for every stage (1 is fastest for the smoke "
                                               "preset on a small CPU)")
    p.add_argument("--resume", action="store_true", help="keep finished stages, continue an interrupted one")
    p.add_argument("--overwrite", action="store_true", help="delete the run in OUT and start again")
    args = p.parse_args(argv)
    args.argv = list(argv) if argv is not None else sys.argv[1:]
    setup_runtime(args)
    log = setup_logging()
    cfg = load_config(PipelineConfig, args.config, args.set, preset_dir=CONFIGS / "pipeline")
    with claim_run_dir(args.out, outputs=OUTPUTS, resume=args.resume, overwrite=args.overwrite,
                       tool="pipeline") as run:
        if run.removed:
            log.info(f"--overwrite: deleted {', '.join(run.removed)} in {args.out}")
        return _pipeline(args, cfg, log)


def _pipeline(args, cfg: PipelineConfig, log) -> int:
    search_dir, train_dir = args.out / "search", args.out / "train"
    runtime = ["--device", args.device] + (["--threads", str(args.threads)] if args.threads else [])
    genotype = search_dir / "genotype.yaml"
    if args.resume and genotype.is_file():
        log.info(f"[1/3] search: kept the finished search in {search_dir}")
    else:
        log.info(f"[1/3] search ({cfg.search.config}) -> {search_dir}")
        argv_search = ["--config", cfg.search.config, "--out", str(search_dir), *runtime,
                       *_continue(args, search_dir, "checkpoint.pt")]
        rc = search.main(argv_search + [a for s in cfg.search.set for a in ("--set", s)])
        if rc != 0:
            return _stopped(rc, args, log)

    log.info(f"[2/3] train {genotype} ({cfg.train.config}) -> {train_dir}")
    argv_train = ["--config", cfg.train.config, "--out", str(train_dir), *runtime,
                  "--set", f"student.genotype={genotype}", *cfg.train.set]
    if args.teacher:
        argv_train += ["--teacher", args.teacher]
    if args.teacher_weights:
        argv_train += ["--teacher-weights", args.teacher_weights]
    if args.allow_download:
        argv_train.append("--allow-download")
    argv_train += _continue(args, train_dir, "last.pt")
    rc = train.main(argv_train)
    if rc != 0:
        return _stopped(rc, args, log)

    log.info(f"[3/3] evaluate {train_dir / 'best.pt'} on {', '.join(cfg.evaluate.data)}")
    eval_json = args.out / "eval.json"
    argv_eval = ["--checkpoint", str(train_dir / "best.pt"), "--data", *cfg.evaluate.data, "--json", str(eval_json),
                 *runtime] + (["--self-ensemble"] if cfg.evaluate.self_ensemble else [])
    rc = evaluate.main(argv_eval)
    if rc != 0:
        return _stopped(rc, args, log)
    summary = {"config": to_dict(cfg), "genotype": str(genotype), "checkpoint": str(train_dir / "best.pt"),
               "results": json.loads(eval_json.read_text())["results"]}
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    log.info(f"wrote {args.out / 'summary.json'}")
    return 0


def _continue(args, stage_dir: Path, checkpoint: str) -> list[str]:
    """A stage's flag under pipeline --resume: continue from its checkpoint, or redo what has none."""
    if not args.resume or not stage_dir.exists():
        return []
    return ["--resume"] if (stage_dir / checkpoint).is_file() else ["--overwrite"]


def _stopped(rc: int, args, log) -> int:
    """A stage ended early: its exit code, and after Ctrl-C the command that continues the whole pipeline."""
    if rc == 130:
        argv = [a for a in args.argv if a not in ("--resume", "--overwrite")]
        log.warning(f"pipeline interrupted; continue it with: {shlex.join(['python', 'tools/pipeline.py', *argv])} "
                    "--resume")
    return rc


if __name__ == "__main__":
    run_cli(main)
