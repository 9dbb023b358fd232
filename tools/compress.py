#!/usr/bin/env python
"""Compress a trained SR network: re-parameterize, prune iteratively with distillation fine-tuning, export.

Examples:
  python tools/compress.py --checkpoint runs/train/best.pt --out runs/compress --reparam \
      --prune-macs 0.5x --rounds 2 --finetune-steps 500 --teacher self --export onnx,torchscript
  python tools/compress.py --checkpoint runs/train/best.pt --out runs/c2 --prune-to 60000 --multiple 4
  python tools/compress.py --checkpoint runs/train/best.pt --out runs/c3 --latency-ms 80 --teacher self rlfn_s_x2
  python tools/compress.py --checkpoint runs/train/best.pt --out runs/c3 ... --resume   # after a kill

Targets: --prune-to PARAMS, --prune-macs M (a MAC count, e.g. 2.5e9, or a fraction of the input network's
MACs with an x suffix, e.g. 0.5x; at --lr-size), --prune-ratio R (fraction of every group's channels), or
--latency-ms X (median forward time on this machine at --lr-size). The cost moves geometrically over
--rounds rounds; each round prunes (L1/L2/Taylor importance), fine-tunes for --finetune-steps with the
distillation trainer (preset configs/train/finetune.yaml, --set to change it) and is measured.

Writes OUT/round_K/{pruned.pt, finetune/, model.pt, metrics.json}, OUT/deploy.pt (spec + widths + weights,
loads with weights_only=True), OUT/model.onnx and OUT/model.ts (--export), OUT/model_int8.onnx (--int8) and
OUT/report.json (+ report.md). The same command with --resume continues after the last finished round;
--overwrite starts again (OUT is locked while a run uses it: srcore/rundir.py).
"""
from __future__ import annotations

import sys
from pathlib import Path

# This script shares its name with the `compress` package: put the repository root before tools/ so that
# `import compress` finds the package (tools/common.py does the same for the other CLIs).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse
import json
import shlex
import time

import torch
from common import console, run_cli, setup_logging
from rich.console import Console
from rich.table import Table
from train import RichProgress

from compress.deploy import (
    OnnxModule,
    compare_onnx,
    export_onnx,
    export_torchscript,
    ort_latency,
    quantize_int8,
    save_deploy,
    save_json_atomic,
)
from compress.iterative import Compressor, CompressSettings, RoundRecord
from compress.prune import IMPORTANCE, Target
from srcore.config import ConfigError
from srcore.data import BenchmarkSet, PatchDataset
from srcore.evaluation import evaluate_model
from srcore.modelspec import load_checkpoint_model
from srcore.paths import shared_dir
from srcore.rundir import claim_run_dir
from srcore.runtime import runtime_state

EXPORTS = ("onnx", "torchscript")
OUTPUTS = ("options.json", "deploy.pt", "model.onnx", "model.ts", "model_int8.onnx", "report.json", "report.md")
CALIB_PATCH, CALIB_PATCHES = 32, 32  # INT8 calibration: LR training patches (32x32 fits T91's smallest images)


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="srnas checkpoint (genotype or zoo network)")
    p.add_argument("--out", required=True, type=Path, help="output folder (rounds, deploy.pt, model.onnx, report)")
    p.add_argument("--reparam", action="store_true", help="fuse multi-branch blocks into plain convs first")
    t = p.add_mutually_exclusive_group()
    t.add_argument("--prune-to", type=float, metavar="PARAMS", help="target parameter count")
    t.add_argument("--prune-macs", metavar="M", help="target MACs at --lr-size (a count, or e.g. 0.5x)")
    t.add_argument("--prune-ratio", type=float, metavar="R", help="fraction of each group's channels to remove")
    t.add_argument("--latency-ms", type=float, metavar="X", help="target median latency on this machine (ms)")
    p.add_argument("--rounds", type=int, default=1, help="prune + fine-tune rounds (DIPNet: iterative)")
    p.add_argument("--finetune-steps", type=int, default=0, help="fine-tune steps per round (0: none)")
    p.add_argument("--teacher", nargs="+", default=["self"], metavar="NAME|FILE",
                   help="fine-tune teachers: self (the unpruned network), registered weights (rlfn_s_x2) or a zoo "
                        "name at the student's scale, an srnas checkpoint, or none; several = multi-anchor KD")
    p.add_argument("--importance", choices=IMPORTANCE, default="taylor",
                   help="channel importance (default taylor: right after pruning the stand-in student to 70%% MACs it "
                        "kept 25.3 dB on Set5 where L1 kept 21.7)")
    p.add_argument("--taylor-batches", type=int, default=4, help="batches for --importance taylor")
    p.add_argument("--multiple", type=int, default=8, help="round widths to a multiple of this (8 or 4)")
    p.add_argument("--lr-size", type=int, default=256, help="LR input side for MACs and latency (NTIRE: 256)")
    p.add_argument("--val", nargs="+", help="validation sets (default: $SRNAS_SHARED/data/Set5 if present)")
    p.add_argument("--train-config", default="finetune", help="fine-tune config preset or YAML file")
    p.add_argument("--set", dest="overrides", action="extend", nargs="+", default=[], metavar="KEY=VALUE",
                   help="override fine-tune config values, e.g. --set data.train=../shared/data/T91 optim.lr=1e-4")
    p.add_argument("--export", default="onnx", help="comma-separated: onnx, torchscript ('' for none)")
    p.add_argument("--int8", action="store_true", help="also write OUT/model_int8.onnx (onnxruntime static INT8)")
    p.add_argument("--latency-repeats", type=int, default=5, help="timed forward passes per latency (median)")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (and onnxruntime's)")
    p.add_argument("--device", default="cpu", help="device for fine-tuning and validation")
    p.add_argument("--resume", action="store_true", help="continue OUT's run after its last finished round")
    p.add_argument("--overwrite", action="store_true", help="delete OUT's earlier compression run and start again")
    p.add_argument("--verbose", action="store_true")
    args = p.parse_args(argv)
    args.export = [e.strip() for e in args.export.split(",") if e.strip()]
    for e in args.export:
        if e not in EXPORTS:
            raise ConfigError(f"--export {e}: known formats are {', '.join(EXPORTS)}")
    if args.int8 and "onnx" not in args.export:
        args.export.append("onnx")
    return args


def parse_target(args) -> Target | None:
    """The final target; --prune-macs 0.5x is Target("macs", 0.5): a fraction of the (re-parameterized)
    input network's MACs, resolved by the Compressor."""
    if args.prune_to is not None:
        return Target("params", float(args.prune_to))
    if args.prune_ratio is not None:
        return Target("ratio", float(args.prune_ratio))
    if args.latency_ms is not None:
        return Target("latency", float(args.latency_ms) / 1e3)
    if args.prune_macs is not None:
        text = args.prune_macs.strip()
        try:
            value = float(text[:-1] if text.endswith("x") else text)
        except ValueError:
            value = -1.0
        if (text.endswith("x") and not 0 < value < 1) or (not text.endswith("x") and value < 1):
            raise ConfigError(f"--prune-macs {text}: expected a MAC count (e.g. 2.5e9) or a fraction of the "
                              "network's MACs in (0, 1) with an x suffix (e.g. 0.5x)")
        return Target("macs", value)
    return None


def round_table(history: list[RoundRecord], scale: int) -> Table:
    sets = list(history[0].psnr)
    table = Table(title=f"compression rounds (x{scale})")
    for col in ["round", "params", "GMACs", "latency (ms)", *[f"{s} PSNR-Y" for s in sets], "ΔPSNR", "target",
                "fine-tune (s)"]:
        table.add_column(col, justify="right")
    base = history[0]
    for r in history:
        first = sets[0] if sets else None
        delta = f"{r.psnr[first] - base.psnr[first]:+.3f}" if first else "-"
        target = Target(r.target["kind"], r.target["value"]).describe() if r.target else "-"
        target += " (already met)" if r.already_met else ""
        table.add_row(str(r.round), f"{r.params:,}", f"{r.macs / 1e9:.3f}", f"{r.latency_s * 1e3:.1f}",
                      *[f"{r.psnr[s]:.3f}" for s in sets], delta, target, f"{r.finetune_s:.0f}")
    return table


def report_markdown(report: dict, scale: int) -> str:
    """OUT/report.md: the rounds, the ONNX check and INT8, with the command that made them."""
    rounds = report["rounds"]
    sets = list(rounds[0]["psnr"])
    cols = ["round", "params", "GMACs", "latency (ms)", *[f"{s} PSNR-Y" for s in sets], "Δ vs round 0 (dB)",
            "fine-tune steps", "fine-tune (s)"]
    lines = [f"# Compression report (x{scale})", "", f"Made by `{report['command']}`.", "",
             f"MACs and latency for one 1x3x{report['settings']['lr_size']}x{report['settings']['lr_size']} LR input; "
             f"latency = median on this machine's CPU ({report['threads']} threads, "
             f"allocator {'tuned' if (report.get('runtime') or {}).get('applied') else 'default'}); round 0 is the "
             "input network" + (" after re-parameterization" if report["settings"]["reparam"] else "") + ".", "",
             "| " + " | ".join(cols) + " |", "|" + "---:|" * len(cols)]
    base = rounds[0]
    for r in rounds:
        delta = f"{r['psnr'][sets[0]] - base['psnr'][sets[0]]:+.3f}" if sets else "-"
        lines.append("| " + " | ".join([str(r["round"]), f"{r['params']:,}", f"{r['macs'] / 1e9:.3f}",
                                        f"{r['latency_s'] * 1e3:.1f}", *[f"{r['psnr'][s]:.3f}" for s in sets], delta,
                                        str(r["finetune_steps"]), f"{r['finetune_s']:.0f}"]) + " |")
    onnx = report.get("onnx", {})
    if "check" in onnx:
        c = onnx["check"]
        lines += ["", f"ONNX (onnxruntime) against PyTorch on {c['dataset']}: max abs difference "
                      f"{c['max_abs_diff']:.2e}, PSNR-Y {c['psnr_y_onnx']:.4f} vs {c['psnr_y_torch']:.4f} dB; "
                      f"latency {onnx['latency_s'] * 1e3:.1f} ms."]
    q = report.get("int8")
    if q:
        drop = ""
        if "psnr_y_drop" in q:
            drop = f"PSNR-Y {q['psnr_y_int8']:.3f} dB ({-q['psnr_y_drop']:+.3f} vs fp32 ONNX), "
        lines += ["", f"INT8 (onnxruntime static QDQ, {q['calibration']}): {drop}latency "
                      f"{q['latency_s'] * 1e3:.1f} ms, {q['speedup_vs_fp32_onnx']:.2f}x the fp32 ONNX speed."]
    return "\n".join(lines) + "\n"


def export_all(args, log, scale: int, final: Path, report: dict) -> None:
    model, ckpt = load_checkpoint_model(final)
    deploy = save_deploy(args.out / "deploy.pt", model, ckpt["spec"], ckpt.get("metrics"), ckpt.get("config"))
    report["deploy"] = str(deploy)
    example = torch.rand(1, 3, 64, 64)
    if "torchscript" in args.export:
        report["torchscript"] = str(export_torchscript(model, args.out / "model.ts", example))
    if "onnx" not in args.export:
        return
    path = export_onnx(model, args.out / "model.onnx", example)
    report["onnx"] = {"path": str(path)}
    onnx = OnnxModule(path, threads=args.threads)
    check_set = BenchmarkSet(args.val[0], scale) if args.val else None
    x = torch.rand(1, 3, args.lr_size, args.lr_size)
    if check_set is not None:
        check = compare_onnx(model, onnx, check_set)
        report["onnx"]["check"] = {k: v for k, v in check.items() if k != "images"}
        log.info(f"ONNX vs PyTorch on {check_set.name}: max abs diff {check['max_abs_diff']:.2e}, PSNR-Y "
                 f"{check['psnr_y_onnx']:.3f} vs {check['psnr_y_torch']:.3f} dB ({check['psnr_y_diff']:+.4f})")
    report["onnx"]["latency_s"] = ort_latency(onnx, x, repeats=args.latency_repeats)
    if not args.int8:
        return
    ds = PatchDataset(_train_data(ckpt, args), scale, CALIB_PATCH * scale, augment=False, repeat=8, seed=0)
    calib = [ds[i]["lq"][None] for i in range(min(len(ds), CALIB_PATCHES))]
    q = OnnxModule(quantize_int8(path, args.out / "model_int8.onnx", calib), threads=args.threads)
    entry = {"path": str(q.path), "calibration": f"{len(calib)} LR patches {CALIB_PATCH}x{CALIB_PATCH} from "
             f"{_train_data(ckpt, args)}",
             "latency_s": ort_latency(q, x, repeats=args.latency_repeats)}
    entry["speedup_vs_fp32_onnx"] = report["onnx"]["latency_s"] / entry["latency_s"]
    if check_set is not None:
        fp32 = evaluate_model(onnx, check_set).psnr_y
        int8 = evaluate_model(q, check_set).psnr_y
        entry.update(psnr_y_fp32=fp32, psnr_y_int8=int8, psnr_y_drop=fp32 - int8)
        log.info(f"INT8 ONNX: {check_set.name} PSNR-Y {int8:.3f} dB ({int8 - fp32:+.3f} vs fp32 ONNX), "
                 f"{entry['speedup_vs_fp32_onnx']:.2f}x the fp32 ONNX speed")
    report["int8"] = entry


def _train_data(ckpt: dict, args) -> str:
    for o in args.overrides:
        if o.startswith("data.train="):
            return o.split("=", 1)[1]
    return (ckpt.get("config") or {}).get("data", {}).get("train") or str(shared_dir() / "data" / "T91")


def main(argv=None) -> int:
    args = parse_args(argv)
    log = setup_logging(args.verbose)
    torch.set_num_threads(args.threads)
    if args.val is None:
        set5 = shared_dir() / "data" / "Set5"
        args.val = [str(set5)] if set5.exists() else []
    target = parse_target(args)
    settings = CompressSettings(
        checkpoint=args.checkpoint, reparam=args.reparam, target=target, rounds=args.rounds,
        finetune_steps=args.finetune_steps, teachers=list(args.teacher), importance=args.importance,
        taylor_batches=args.taylor_batches, multiple=args.multiple, lr_size=args.lr_size, val=list(args.val),
        train_config=args.train_config, overrides=list(args.overrides), latency_repeats=args.latency_repeats,
        threads=args.threads, device=args.device)

    def on_round(rec: RoundRecord, history: list[RoundRecord]) -> None:
        (console if console.is_terminal else Console(stderr=True, width=160)).print(round_table(history, comp.scale))

    comp = Compressor(settings, args.out, on_round, [RichProgress(log, "fine-tune")])
    outputs = list(OUTPUTS) + (sorted(p.name for p in args.out.glob("round_*")) if args.out.is_dir() else [])
    with claim_run_dir(args.out, outputs=outputs, resume=args.resume, overwrite=args.overwrite,
                       resume_from="options.json", tool="compression"):
        return _run(args, log, comp, sys.argv[1:] if argv is None else argv)


def _run(args, log, comp: Compressor, argv: list[str]) -> int:
    t0 = time.perf_counter()
    history = comp.run()
    final = comp.round_dir(history[-1].round) / "model.pt"
    report = {"command": "python tools/compress.py " + " ".join(shlex.quote(a) for a in argv),
              "settings": comp.s.key(),
        "runtime": runtime_state().as_dict() if runtime_state() else None, "threads": args.threads,
        "rounds": [r.as_dict() for r in history], "final": history[-1].as_dict()}
    base, last = history[0], history[-1]
    report["summary"] = {"params_ratio": last.params / base.params, "macs_ratio": last.macs / base.macs,
                         "latency_ratio": last.latency_s / base.latency_s,
                         "psnr_delta": {k: last.psnr[k] - base.psnr[k] for k in base.psnr}}
    export_all(args, log, comp.scale, final, report)
    report["wall_s"] = time.perf_counter() - t0
    save_json_atomic(args.out / "report.json", json.dumps(report, indent=2) + "\n")
    save_json_atomic(args.out / "report.md", report_markdown(report, comp.scale))
    log.info(f"done: {last.params:,} params ({report['summary']['params_ratio']:.0%}), {last.macs / 1e9:.3f} GMACs "
             f"({report['summary']['macs_ratio']:.0%}) at {args.lr_size}x{args.lr_size}; wrote {args.out}/deploy.pt "
             f"and {args.out}/report.json")
    return 0


if __name__ == "__main__":
    run_cli(main)
