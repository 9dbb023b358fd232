#!/usr/bin/env python
"""Measure what distillation buys: one student, one teacher, the same step budget, seven methods.

Trains the t291 student (search_spaces/genotypes/rfdn_c32_x2.yaml: 4 cells, C=32, a bicubic image-space skip,
so every run starts at bicubic) on T91 + BSD200 at x2 with each method of configs/train/kd_*.yaml (no KD,
output KD, FitNet, FACD, LSFD, DUKD, DIPNet's recipe; teacher RLFN-S x2, official weights by name) for
--steps steps and each of --seeds, scores the final (EMA) weights on Set5/Set14/B100 (Y PSNR/SSIM,
srcore's metrics) and writes a markdown table (--doc, default docs/results.md) and the raw numbers (--json).

Resumable: each finished run leaves OUT/<method>/seed<k>/result.json and is skipped next time (if its
config is the same); an interrupted run resumes from its last.pt. So it can run in the background and be
restarted after a stop. --jobs N trains N runs at once in separate processes (each with --threads threads).

  python tools/distill_table.py --steps 1200 --seeds 0 1 --jobs 2 --threads 1 --out runs/distill_table
  python tools/distill_table.py --steps 20 --seeds 0 --out /tmp/t --doc /tmp/t/results.md   # a dry run
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import logging
import math
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch
from common import CONFIGS, REPO, console, run_cli, setup_logging, setup_runtime
from multirun import (
    benchmark_sets,
    bicubic_scores,
    finished_row,
    fmt_ms,
    mean_psnr,
    noise_level,
    pool,
    score,
    train_or_resume,
    write_row,
)

import search_spaces  # noqa: F401  (registers genotype specs)
from distill.calibrate import term_gradient_norms, weights_for_ratio
from distill.config import TrainConfig
from distill.teachers import load_named
from distill.trainer import Trainer
from srcore.config import load_config, to_dict
from srcore.cost import count_params
from srcore.modelspec import load_checkpoint_model
from srcore.paths import SHARED_VAR
from srcore.rundir import check_output_file

METHODS = ("none", "output", "fitnet", "facd", "lsfd", "dukd", "dipnet")
LABELS = {"none": "no KD", "output": "output KD", "fitnet": "FitNet", "facd": "FACD", "lsfd": "LSFD",
          "dukd": "DUKD", "dipnet": "DIPNet recipe"}
SETS = ("Set5", "Set14", "B100")
# relative s/step of each method measured on a 2-core CPU; only orders the runs (longest first)
COST_HINT = {"none": 1.0, "output": 1.5, "fitnet": 1.7, "lsfd": 1.8, "facd": 2.1, "dipnet": 3.5, "dukd": 3.6}
TEACHER = "rlfn_s_x2"
PAPERS = {
    "none": "The baseline: the student trained on the ground truth alone (L1), with the same data, optimizer, "
            "schedule and number of steps as every other row.",
    "output": "Output (response) KD, the SR form of Hinton et al.'s distillation: besides L1 to the ground "
              "truth, the student's SR is pulled (L1) towards the frozen teacher's SR of the same LR patch.",
    "fitnet": "FitNet (Romero et al., \"FitNets: Hints for Thin Deep Nets\", ICLR 2015): intermediate student "
              "features, mapped to the teacher's width by a learned 1x1 adapter, regress the teacher's features "
              "at matching relative depths (L2; both standardized per channel here), cells B2/B4 of the "
              "student against RLFN-S blocks 3/6.",
    "facd": "FACD (Moon et al., \"Feature-domain Adaptive Contrastive Distillation for Efficient Single Image "
            "Super-Resolution\", IEEE Access 2023), as implemented here: a contrastive loss in the feature domain "
            "whose positive is the teacher's feature of the same patch and whose negatives are its features of "
            "the other patches of the batch (ratio of L1 distances), applied adaptively, only to patches where "
            "the student's SR is not yet closer to the ground truth than the teacher's.",
    "lsfd": "LSFD (Park and Kwak, \"Local-Selective Feature Distillation for Single Image Super-Resolution\", "
            "2021), as implemented here: a local regressor (two 3x3 convs instead of FitNet's 1x1) maps student "
            "features to the teacher's, and a soft spatial attention computed from the teacher-student difference "
            "weights the squared error towards the locations where the student is furthest behind.",
    "dukd": "DUKD (Zhang et al., \"Data Upcycling Knowledge Distillation for Image Super-Resolution\", "
            "arXiv 2309.14162): output KD plus upcycled in-domain inputs whose only label is the teacher: "
            "zoom-in (scale x scale tiles of the HR patch fed as LR inputs) and zoom-out (the LR patch downscaled "
            "again, with the LR patch as its ground truth), and label consistency: the student's output on an "
            "invertibly augmented tile (colour inversion, flips, transpose), mapped back, must match the "
            "teacher's output on the plain tile.",
    "dipnet": "DIPNet's training recipe (Yu et al., \"DIPNet: Efficiency Distillation and Iterative Pruning "
              "for Image Super-Resolution\", CVPR Workshops 2023, NTIRE 2023 ESR): the teacher-enhanced HR "
              "(the teacher's SR of the HR patch, bicubic-downscaled back) as an extra target, multi-anchor "
              "distillation (output KD from several teacher checkpoints, here RLFN-S x2 and RLFN x2), and "
              "progressive learning (a first stage on smaller patches, then larger patches with more weight on "
              "the ground truth). Its re-parameterization and pruning stages are not part of this table.",
}


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=1200, help="training steps per run (the same for every method)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="seeds; each method is trained once per seed")
    p.add_argument("--out", type=Path, default=Path("runs/distill_table"), help="run folders and checkpoints")
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--teacher", default=TEACHER,
                   help="registered x2 teacher weights (the first anchor of every KD method; feature methods tap "
                        "RLFN blocks 3/6, so they need an RLFN-family teacher)")
    p.add_argument("--shared", type=Path, help=f"folder with data/ and teachers/ (default ${SHARED_VAR} or ../shared)")
    p.add_argument("--doc", type=Path, default=REPO / "docs" / "results.md", help="markdown table to write")
    p.add_argument("--json", type=Path, help="raw results (default: the --doc path with .json)")
    p.add_argument("--jobs", type=int, default=1, help="runs trained at once, each in its own process")
    p.add_argument("--device", default="cpu")
    p.add_argument("--report-only", action="store_true",
                   help="train nothing: write the table of the runs that have finished (the rest listed as missing)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace run folders that hold a run with another config (another --steps, ...)")
    p.add_argument("--calibrate", type=float, metavar="RATIO",
                   help="train nothing: measure each method's per-term gradient norms on the student at step 0 "
                        "(distill.calibrate; 4 training batches) and print the weights at which every term but L1 "
                        "pulls RATIO x as hard as L1 (OUT/calibration.json)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads per run (default 1: on a shared CPU, spinning OpenMP threads make small "
                        "convs slow; use --jobs to fill the cores)")
    return p.parse_args(argv)


def method_config(method: str, steps: int, seed: int, teacher: str = TEACHER) -> TrainConfig:
    """configs/train/kd_<method>.yaml at this budget and seed (stage starts and warm-up scaled to the budget),
    with `teacher` as the first anchor."""
    base = load_config(TrainConfig, CONFIGS / "train" / f"kd_{method}.yaml")
    stages = [dataclasses.replace(st, start=max(1, round(st.start * steps / base.loop.steps))) for st in base.stages]
    anchors = [dataclasses.replace(t, name=teacher) if i == 0 else t for i, t in enumerate(base.teacher)]
    return dataclasses.replace(
        base, stages=stages, teacher=anchors,
        schedule=dataclasses.replace(base.schedule, warmup_steps=min(base.schedule.warmup_steps, steps // 10)),
        loop=dataclasses.replace(base.loop, steps=steps, seed=seed, log_every=max(1, min(base.loop.log_every, steps)),
                                 save_every=100))


def run_one(method: str, seed: int, steps: int, teacher: str, out: Path, device: str, threads: int,
            overwrite: bool = False) -> dict:
    """Train (or resume, or reuse) one run and score its final weights; the row of the table."""
    torch.set_num_threads(threads)
    t_run = time.perf_counter()
    log = logging.getLogger("srnas")
    cfg = method_config(method, steps, seed, teacher)
    run_dir = out / method / f"seed{seed}"
    label = f"{LABELS[method]} seed {seed}"
    row = finished_row(run_dir, cfg)
    if row is not None:
        log.info(f"{label}: finished before, reused ({run_dir / 'result.json'})")
        return row
    # one writer per run folder; a run with another config (e.g. another --steps) is replaced only with --overwrite
    ck = train_or_resume(cfg, run_dir, label, device, overwrite=overwrite)
    train_s = float(ck["train_state"]["train_s"])
    model, _ = load_checkpoint_model(run_dir / "last.pt", device)
    t0 = time.perf_counter()
    sets = benchmark_sets(SETS, 2)
    row = {"method": method, "seed": seed, "steps": int(ck["step"]), "train_s": train_s,
           "s_per_step": train_s / max(1, int(ck["step"])), "terms": [f"{t.kind}:{t.weight:g}" for t in cfg.loss],
           "params": count_params(model), "sets": score(model, sets, device), "config": to_dict(cfg)}
    row["eval_s"] = time.perf_counter() - t0
    row["run_s"] = time.perf_counter() - t_run  # data loading, training and evaluation (if trained now)
    log.info(f"{label}: mean PSNR-Y {mean_psnr(row):.3f} dB, {train_s:.0f} s of training "
             f"({row['s_per_step']:.3f} s/step)")
    write_row(run_dir, row)
    return row


def references(teacher: str, device) -> dict:
    sets = benchmark_sets(SETS, 2)
    refs = {f"teacher {teacher}": score(load_named(teacher, 2, device), sets, device)}
    refs["bicubic"] = bicubic_scores(sets)
    return refs


# --- statistics (mean_psnr, noise_level: tools/multirun.py) ------------------------------------------------


def gains(by: dict[str, list[dict]]) -> dict[str, list[float]]:
    """Per method, the paired (same seed) differences of mean PSNR to no KD."""
    base = {r["seed"]: mean_psnr(r) for r in by.get("none", [])}
    return {m: [mean_psnr(r) - base[r["seed"]] for r in rs if r["seed"] in base] for m, rs in by.items()}


def estimate_hours(s_per_step: dict[str, float], overhead_s: float, steps: int, seeds: int, jobs: int) -> float:
    """Wall hours of a full table from measured seconds per step and per-run overhead (data loading and
    evaluation), `jobs` runs at a time."""
    total = sum(seeds * (steps * s + overhead_s) for s in s_per_step.values())
    return total / max(1, jobs) / 3600


# --- the markdown --------------------------------------------------------------------------------------------


def render(results: dict) -> str:
    rows, refs, meta = results["runs"], results["references"], results["meta"]
    methods = [m for m in METHODS if any(r["method"] == m for r in rows)]
    by = {m: [r for r in rows if r["method"] == m] for m in methods}
    seeds = sorted({r["seed"] for r in rows})
    d = gains(by)
    sigma = noise_level(by)
    n = len(seeds)
    threshold = 2 * sigma * math.sqrt(2 / n) if sigma is not None else None
    base_s = statistics.fmean(r["s_per_step"] for r in by["none"]) if "none" in by else None
    lines = [
        "# What distillation buys a small student",
        "",
        f"Generated by `{meta['command']}` on {meta['date']} (torch {meta['torch']}, {meta['cpu']}, "
        f"{meta['jobs']} run(s) at a time, {meta['threads']} thread(s) each; "
        + (f"wall time of the command {meta['wall_s'] / 3600:.2f} h" if not meta.get("report_only") else
           f"a report of the finished runs, which trained for {meta['train_s'] / 3600:.2f} h in all, over "
           "several sessions")
        + "). Do not edit by hand: re-run the command.",
        "",
        *([f"**Not finished** (run the command without --report-only to train them): "
           f"{', '.join(meta['missing'])}. Rows with fewer seeds average fewer runs; Δ pairs each run with no KD's "
           "run of the same seed.", ""] if meta.get("missing") else []),
        f"Student: the `rfdn_c32_x2` genotype (4 cells, C=32, bicubic image-space skip, "
        f"{rows[0]['params']:,} parameters; it starts at bicubic), trained on T91 + BSD200 (HR patches 64, "
        f"batch 16, Adam 2e-3, 50 warm-up steps then cosine, gradient clipping 1, EMA 0.999) for "
        f"**{meta['steps']} steps** per run, seeds {', '.join(map(str, seeds))}. Teacher: `{meta['teacher']}` "
        "(official weights, frozen). Scores: PSNR/SSIM on Y at x2 (border 2 shaved, SR rounded to 8 bits) of the "
        "final EMA weights on Set5 / Set14 / B100, mean ± standard deviation over the seeds. Δ: mean PSNR over "
        "the three sets minus no KD's with the same seed. Time: training wall time per run (teacher passes "
        "included, evaluation excluded); cost: s/step relative to no KD; gain per compute: Δ per hour of the "
        "method's training.",
        "",
        "| method | Set5 PSNR / SSIM | Set14 PSNR / SSIM | B100 PSNR / SSIM | Δ mean PSNR vs no KD (dB) "
        "| s/step | cost vs no KD | gain per compute (dB/h) | verdict |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    verdicts = {}
    for m in methods:
        rs = by[m]
        cells = [f"{fmt_ms([r['sets'][s]['psnr_y'] for r in rs], 2)} / "
                 f"{fmt_ms([r['sets'][s]['ssim_y'] for r in rs], 4)}" for s in SETS if s in rs[0]["sets"]]
        sps = statistics.fmean(r["s_per_step"] for r in rs)
        cost = f"{sps / base_s:.2f}x" if base_s else "—"
        if m == "none" or not d[m]:
            delta = per_h = verdict = "—"
        else:
            g = statistics.fmean(d[m])
            delta = fmt_ms(d[m], 3)
            per_h = f"{g / (statistics.fmean(r['train_s'] for r in rs) / 3600):+.2f}"
            thr = 2 * sigma * math.sqrt(2 / len(d[m])) if sigma is not None else None  # this row's pairs
            if thr is None:
                verdict = "noise not measured (one seed)"
            elif abs(g) <= thr:
                verdict = "within noise"
            else:
                verdict = "gain" if g > 0 else "loss"
            verdicts[m] = (g, verdict, len(d[m]))
        lines.append(f"| {LABELS[m]} | " + " | ".join(cells) + f" | {delta} | {sps:.3f} | {cost} | {per_h} "
                     f"| {verdict} |")
    for name, sc in refs.items():
        cells = [f"{sc[s]['psnr_y']:.2f} / {sc[s]['ssim_y']:.4f}" for s in SETS if s in sc]
        lines.append(f"| *{name}* | " + " | ".join(cells) + " | | | | | |")
    lines += ["", "## Which gains are real (generated)", ""]
    if sigma is None:
        lines.append("One seed only: the run-to-run noise is not measured, so no difference below can be called "
                     "a gain; re-run with two or more seeds.")
    else:
        lines.append(f"Run-to-run noise: the seed-to-seed standard deviation of a run's mean PSNR, pooled over the "
                     f"methods, is σ = {sigma:.3f} dB. A Δ averaged over {n} paired seeds then has a standard "
                     f"deviation of about σ·√(2/{n}) = {sigma * math.sqrt(2 / n):.3f} dB, and counts as a gain or "
                     f"a loss only beyond twice that, {threshold:.3f} dB (about 95% for normal noise; with "
                     f"{n} seeds, σ itself is a rough estimate).")
    lines.append("")
    if sigma is not None and any(k < n for _, _, k in verdicts.values()):
        lines.append(f"A row with one paired seed counts as a gain or a loss only beyond 2σ·√2 = "
                     f"{2 * sigma * math.sqrt(2):.3f} dB.")
    lines.append("")
    for m, (g, verdict, k) in verdicts.items():
        lines.append(f"- {LABELS[m]}: {g:+.3f} dB against no KD at {meta['steps']} steps "
                     f"({k} paired seed{'s' if k > 1 else ''}): **{verdict}**.")
    lines += ["", "Weights: the feature terms (FitNet, FACD, LSFD) compare standardized features, each weighted so "
              "that its gradient at step 0 is 1/4 of L1's on this student, measured on training batches (`python "
              "tools/distill_table.py --calibrate 0.25 --steps 1000 --seeds 0`, docs/experiments/feature_kd_weights.md"
              "); output-level terms have weight 1 (DIPNet's enhanced HR 0.5). No weight was chosen by a score on "
              "these benchmarks, and another budget may rank the methods differently.", "",
              "## The methods", ""]
    for m in methods:
        lines += [f"**{LABELS[m]}** (`configs/train/kd_{m}.yaml`). {PAPERS[m]}", ""]
    return "\n".join(lines)


def calibrate(args, log) -> int:
    """--calibrate: gradient norms per term at step 0 and the weights for the ratio (see distill/calibrate.py)."""
    out = {"ratio": args.calibrate, "seed": args.seeds[0], "methods": {}}
    for method in args.methods:
        cfg = method_config(method, args.steps, args.seeds[0], args.teacher)
        with tempfile.TemporaryDirectory() as tmp:
            norms = term_gradient_norms(Trainer(cfg, tmp, args.device), batches=4)
        current = {t.name: t.weight for t in cfg.loss}
        suggested = weights_for_ratio(norms, args.calibrate)
        out["methods"][method] = {"norms": norms, "weights": current, "suggested": suggested}
        log.info(f"{LABELS[method]}: |grad| per unweighted term " + ", ".join(f"{k} {v:.4g}" for k, v in norms.items())
                 + "; weight now / for the ratio: " + ", ".join(f"{k} {current[k]:g} / {v:.3g}"
                                                            for k, v in suggested.items()))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "calibration.json").write_text(json.dumps(out, indent=2) + "\n")
    log.info(f"wrote {args.out / 'calibration.json'}")
    return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    setup_runtime(args)
    log = setup_logging()
    if args.shared:
        os.environ[SHARED_VAR] = str(args.shared.resolve())
    if args.calibrate is not None:
        return calibrate(args, log)
    t_start = time.perf_counter()
    json_path = args.json or args.doc.with_suffix(".json")
    check_output_file(args.doc, "--doc")
    check_output_file(json_path, "--json")
    command = (f"python tools/distill_table.py --steps {args.steps} --seeds {' '.join(map(str, args.seeds))} "
               f"--jobs {args.jobs} --threads {args.threads}"
               + (f" --methods {' '.join(args.methods)}" if list(args.methods) != list(METHODS) else "")
               + (f" --teacher {args.teacher}" if args.teacher != TEACHER else "")
               + (" --report-only" if args.report_only else ""))
    results = {"meta": {"steps": args.steps, "seeds": args.seeds, "teacher": args.teacher,
                        "date": datetime.date.today().isoformat(), "torch": torch.__version__,
                        "threads": args.threads, "jobs": args.jobs,
                        "cpu": f"{platform.machine()} x{os.cpu_count()}", "command": command},
               "runs": [], "references": {}}
    args.out.mkdir(parents=True, exist_ok=True)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    # the most expensive runs first, so parallel jobs finish together
    todo = sorted(((m, seed) for seed in args.seeds for m in args.methods), key=lambda r: -COST_HINT[r[0]])
    job = (args.steps, args.teacher, args.out, args.device, args.threads, args.overwrite)
    if args.report_only:  # score nothing new: the rows of the runs that finished with this config
        found = {(m, seed): finished_row(args.out / m / f"seed{seed}", method_config(m, args.steps, seed, args.teacher))
                 for m, seed in todo}
        rows = [r for r in found.values() if r is not None]
        results["meta"].update(report_only=True, missing=[f"{LABELS[m]} seed {s}" for (m, s), r in found.items()
                                                          if r is None],
                               train_s=sum(r["train_s"] for r in rows))
        if not any(r["method"] == "none" for r in rows):
            raise ValueError(f"--report-only: no finished no-KD run under {args.out} to compare with")
        args.methods = [m for m in args.methods if any(r["method"] == m for r in rows)]
    else:
        with pool(args.jobs) as workers:
            futures = [workers.submit(run_one, m, seed, *job) for m, seed in todo]
            rows = [f.result() for f in futures]
    results["runs"] = [{k: v for k, v in r.items() if k != "config"} for r in rows]
    results["references"] = references(args.teacher, args.device)
    by = {m: [r for r in rows if r["method"] == m] for m in args.methods}
    sps = {m: statistics.fmean(r["s_per_step"] for r in rs) for m, rs in by.items()}
    overhead_s = statistics.fmean(r.get("run_s", r["train_s"]) - r["train_s"] for r in rows)
    results["meta"]["wall_s"] = time.perf_counter() - t_start
    results["meta"]["s_per_step"] = sps
    for steps in sorted({args.steps, 1000, 1200, 1500}):
        measured = ", ".join(f"{m} {s:.3f}" for m, s in sps.items())
        log.info(f"estimated wall time of --steps {steps} --seeds 0 1 with --jobs {args.jobs}: "
                 f"{estimate_hours(sps, overhead_s, steps, 2, args.jobs):.2f} h (from this run's s/step: {measured}; "
                 f"{overhead_s:.0f} s per run besides training)")
    json_path.write_text(json.dumps(results, indent=2) + "\n")
    args.doc.parent.mkdir(parents=True, exist_ok=True)
    args.doc.write_text(render(results) + "\n")
    console.print(args.doc.read_text(), highlight=False, markup=False)
    log.info(f"wrote {args.doc} and {json_path}")
    return 0 if all(math.isfinite(mean_psnr(r)) for r in rows) else 1


if __name__ == "__main__":
    run_cli(main)
