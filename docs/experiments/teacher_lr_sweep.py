"""The quickstart's trained-here teacher (RLFN-S x2 on the photographs, L1, cosine) at several peak lrs.

    python docs/experiments/teacher_lr_sweep.py --out runs/teacher_lr --lrs 2e-3 1e-3 5e-4 2.5e-4 --steps 1000
    python docs/experiments/teacher_lr_sweep.py --out runs/teacher_lr --report-only   # the table only

Each run is `tools/train.py`'s teacher config (`teacher_run_config` of configs/train/quickstart.yaml with
pretrain_teacher.lr/steps set), trained in OUT/lr_<lr>/ (resumable); the table (OUT/table.md, stdout) lists the
validation PSNR-Y on the photographs at every validation, beside bicubic.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "tools"), str(ROOT)]

import torch  # noqa: E402
import train as train_tool  # noqa: E402

from distill.config import TrainConfig  # noqa: E402
from distill.trainer import Trainer  # noqa: E402
from srcore.config import load_config  # noqa: E402


def run(out: Path, lr: float, steps: int, ema: float) -> Path:
    cfg = load_config(TrainConfig, "quickstart", [f"pretrain_teacher.lr={lr}", f"pretrain_teacher.steps={steps}"],
                      preset_dir=train_tool.PRESETS)
    tcfg = train_tool.teacher_run_config(cfg)
    tcfg = dataclasses.replace(tcfg, optim=dataclasses.replace(tcfg.optim, ema=ema))
    d = out / (f"lr_{lr:g}" + (f"_ema{ema:g}" if ema else ""))
    Trainer(tcfg, d, "cpu", []).fit(resume=(d / "last.pt").exists())
    return d


def table(out: Path) -> str:
    runs = {}
    for d in sorted(out.glob("lr_*"), key=lambda d: (-float(d.name[3:].split("_")[0]), d.name)):
        recs = [json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines()]
        runs[d.name[3:]] = ({r["step"]: r["val/psnr_y_mean"] for r in recs if "val/psnr_y_mean" in r},
                            max((r["loss/l1"] for r in recs if "loss/l1" in r), default=float("nan")))
    steps = sorted({s for vals, _ in runs.values() for s in vals})
    head = "| peak lr (and EMA) | " + " | ".join(f"PSNR-Y at step {s} (dB)" for s in steps) + " | worst logged L1 |"
    rows = [f"| {name} | " + " | ".join(f"{vals[s]:.3f}" if s in vals else "" for s in steps) + f" | {worst:.4f} |"
            for name, (vals, worst) in runs.items()]
    return "\n".join([head, "|---|" + "---|" * (len(steps) + 1), *rows])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--lrs", type=float, nargs="*", default=[])
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--ema", type=float, default=0.0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--report-only", action="store_true")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    if not a.report_only:
        for lr in a.lrs:
            run(a.out, lr, a.steps, a.ema)
    text = table(a.out)
    (a.out / "table.md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
