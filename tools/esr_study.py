#!/usr/bin/env python
"""The esr study: does a search of the esr space (built from the NTIRE efficient-SR winners) find a network that
beats the published SPAN and SPANV2 layouts at equal deployed latency, when all are trained alike?

  python tools/esr_study.py --out runs/esr_study --threads 1            # the study (resumable)
  python tools/esr_study.py --out runs/esr_study --report-only          # the doc from what has finished
  python tools/esr_study.py --out runs/esr_study --latency-only         # re-measure the latencies (quiet machine)

1. Search (tools/search.py, preset configs/search/esr.yaml: x4, T91 + BSD200, every esr choice relaxed, a
   latency hinge): its target is --target-ratio times the SPAN layout's cost in the search's own latency table
   (deployed ops, measured on this machine; `cost.reference: span_x4`), so the search aims at SPANV2's speed
   class (SPANV2 is 0.8x SPAN on this CPU). The derived genotype is the study's "searched" row; the same
   topology widened until its deployed MACs match SPANV2's is the "searched_wide" row (the equal-cost
   comparison; its width is chosen once and kept in OUT/wide.json; --no-wide skips it).
2. Train the searched genotype, the SPAN layout and the SPANV2 layout (search_spaces/genotypes/span_x4.yaml,
   spanv2_x4.yaml, random initialisation) with one recipe (configs/train/esr_x4.yaml: L1 + output KD from
   SPANV2's official weights, Adam, cosine, EMA) for --steps steps, once per seed of --seeds.
3. Score the final (EMA) weights on Set5/Set14/B100 x4 (Y PSNR/SSIM, the literature's protocol) beside
   bicubic and beside the official SPAN and SPANV2 weights (their full NTIRE training, for scale); count
   parameters and MACs of the deployed (re-parameterized) networks at a 256x256 LR input; measure their
   deployed latency with srcore.cost.latency on a 256x256 LR input with --latency-threads threads, side by side
   in one process (round robin over --latency-rounds rounds; a separate process with glibc's malloc thresholds
   raised as ../shared/teachers/PROVENANCE.md does, so large activations are not returned to the OS between runs).
4. Write --doc (markdown: budget, machine, date, command, table, verdict, searched genotype, search
   diagnostics), --json (every number) and the --doc path with .png (PSNR against latency).

Resumable and kill -9 safe: the search checkpoints every 50 steps, each training run every 100 steps (its own
folder OUT/train/<row>/seed<k>/, with result.json once scored); the same command continues. Files in --out:
search/ (a tools/search.py folder + result.json), train/, references.json, latency.json, and notes.md if
someone writes one (hand-written remarks, appended to the doc under "Notes").
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import logging
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from common import CONFIGS, REPO, run_cli, setup_logging, setup_runtime
from multirun import finished_row, mean_psnr, noise_level, score, train_or_resume, write_row

import search_spaces  # noqa: F401  (registers genotype specs)
from compress.reparam import reparameterize
from distill.config import TrainConfig
from nas.config import search_config_class
from nas.cost import CostTable
from nas.esr_cost import ESRCostModel
from nas.search import HISTORY
from search_spaces.esr_network import OFFICIAL_FILES, ESRNet, load_official
from search_spaces.genotype import load_genotype
from search_spaces.network import build_network
from srcore.checkpoint import read_checkpoint
from srcore.config import load_config, to_dict
from srcore.cost import count_flops, count_params, latency
from srcore.data import BenchmarkSet
from srcore.evaluation import evaluate_bicubic
from srcore.modelspec import load_checkpoint_model
from srcore.paths import SHARED_VAR, shared_dir

SETS = ("Set5", "Set14", "B100")
ROWS = {"searched": "the searched esr genotype",
        "searched_wide": "the searched esr genotype, widened to SPANV2's deployed MACs",
        "span": "SPAN layout (span_x4), from scratch",
        "spanv2": "SPANV2 layout (spanv2_x4), from scratch"}
LAYOUTS = {"span": "span_x4", "spanv2": "spanv2_x4"}
SEARCHED = ("searched", "searched_wide")  # the rows the verdict compares with each layout
OFFICIAL = {"span": "SPAN, official weights (NTIRE 2024)", "spanv2": "SPANV2, official weights (NTIRE 2026)"}
MALLOC = {"MALLOC_MMAP_THRESHOLD_": str(4 << 30), "MALLOC_TRIM_THRESHOLD_": str(4 << 30)}
RESULT = "result.json"
log = logging.getLogger("srnas")


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("runs/esr_study"))
    p.add_argument("--steps", type=int, default=1500, help="training steps per run")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--no-wide", dest="wide", action="store_false",
                   help="skip the row of the searched genotype widened to SPANV2's deployed MACs")
    p.add_argument("--search-config", default="esr", help="search preset or YAML (configs/search/)")
    p.add_argument("--search-set", action="append", default=[], metavar="KEY=VALUE", help="--set for the search")
    p.add_argument("--target-ratio", type=float, default=0.8, help="search cost target / the SPAN layout's cost")
    p.add_argument("--threads", type=int, default=1, help="torch threads for the search and the trainings")
    p.add_argument("--device", default="cpu")
    p.add_argument("--latency-threads", type=int, nargs="+", default=[2, 1],
                   help="thread counts to time (the first is the study's; 1 thread survives a busy machine better)")
    p.add_argument("--latency-size", type=int, default=256, help="LR side of the latency input")
    p.add_argument("--latency-rounds", type=int, default=5)
    p.add_argument("--doc", type=Path, default=REPO / "docs" / "esr_study.md")
    p.add_argument("--json", type=Path, default=None, help="default: the --doc path with .json")
    p.add_argument("--report-only", action="store_true", help="train nothing; write the doc of what has finished")
    p.add_argument("--latency-only", action="store_true", help="(re-)measure latency.json and stop")
    p.add_argument("--overwrite", action="store_true", help="replace runs whose config changed")
    args = p.parse_args(argv)
    args.json = args.json or args.doc.with_suffix(".json")
    args.argv = list(argv) if argv is not None else sys.argv[1:]
    return args


# --- 1. the search ---------------------------------------------------------------------------------------------


def search_config(args):
    return load_config(search_config_class, args.search_config, args.search_set, CONFIGS / "search")


def run_search(args) -> dict:
    """Search (or resume, or reuse) and return its result: the genotype path and the collapse report."""
    import search as search_cli  # tools/search.py

    out = args.out / "search"
    done = out / RESULT
    if done.is_file():
        return json.loads(done.read_text())
    argv = ["--config", args.search_config, "--out", str(out), "--threads", str(args.threads), "--device",
            args.device, "--set", "cost.reference=span_x4", "--set", f"cost.target={args.target_ratio}", "--no-plot"]
    for s in args.search_set:
        argv += ["--set", s]
    if (out / "checkpoint.pt").is_file():
        argv.append("--resume")
    t0 = time.perf_counter()
    rc = search_cli.main(argv)
    if rc != 0:
        raise RuntimeError(f"the search stopped (exit {rc}); rerun the study to continue it")
    report = json.loads((out / "collapse_report.json").read_text())
    ckpt = read_checkpoint(out / "checkpoint.pt")
    result = {"genotype": str(out / "genotype.yaml"), "steps": int(ckpt["step"]), "search_s": time.perf_counter() - t0,
              "verdict": report["verdict"], "warnings": report["warnings"], "summary": report["summary"],
              "config": ckpt["config"]}
    done.write_text(json.dumps(result, indent=2) + "\n")
    return result


def search_costs(out: Path) -> dict | None:
    """The search's cost term read back from its checkpoint and history: its own table's cost of the SPAN layout
    and of the derived genotype, the absolute target, and how the expected cost moved against them."""
    ckpt_path = out / "search" / "checkpoint.pt"
    if not ckpt_path.is_file():
        return None
    from nas.config import search_config_from_dict
    from srcore.jsonl import read_jsonl

    ckpt = read_checkpoint(ckpt_path)
    cfg = search_config_from_dict(ckpt["config"])
    table = CostTable.from_dict(ckpt["search_state"]["cost_table"])
    model = ESRCostModel(table, cfg.space, cfg.cost)
    span = model.derived_cost(load_genotype("span_x4"))
    history = [e["expected_cost"] for e in read_jsonl(out / "search" / HISTORY) if "expected_cost" in e]
    out_d = {"unit": table.unit, "fixed": table.fixed, "span_cost": span, "target": model.target,
             "target_over_span": model.target / span, "reference": cfg.cost.reference, "configured": cfg.cost.target,
             "expected_over_span": [min(history) / span, max(history) / span] if history else None,
             "hinge_active": sum(e > model.target for e in history), "logged": len(history)}
    g = out / "search" / "genotype.yaml"
    if g.is_file():
        out_d["derived_cost"] = model.derived_cost(load_genotype(g))
        out_d["derived_over_span"] = out_d["derived_cost"] / span
    return out_d


# --- 2. training ------------------------------------------------------------------------------------------------


def recipe(genotype: str, steps: int, seed: int, channels: int | None = None) -> TrainConfig:
    base = load_config(TrainConfig, CONFIGS / "train" / "esr_x4.yaml")
    return dataclasses.replace(
        base, student=dataclasses.replace(base.student, genotype=genotype, channels=channels),
        schedule=dataclasses.replace(base.schedule, warmup_steps=min(base.schedule.warmup_steps, steps // 10)),
        loop=dataclasses.replace(base.loop, steps=steps, seed=seed))


def sets() -> list[BenchmarkSet]:
    return [BenchmarkSet(f"${{{SHARED_VAR}}}/data/{s}", 4) for s in SETS]


def train_row(row: str, genotype: str, seed: int, args, channels: int | None = None) -> dict:
    cfg = recipe(genotype, args.steps, seed, channels)
    run_dir = args.out / "train" / row / f"seed{seed}"
    res = finished_row(run_dir, cfg)  # tools/multirun.py: reused when the trainer's resume rule finds it unchanged
    if res is not None:
        return res
    torch.set_num_threads(args.threads)
    ck = train_or_resume(cfg, run_dir, f"{row} seed {seed}", args.device, overwrite=args.overwrite)
    model, _ = load_checkpoint_model(run_dir / "last.pt", args.device)
    train_s = float(ck["train_state"]["train_s"])
    res = {"row": row, "seed": seed, "steps": int(ck["step"]), "train_s": train_s, "loadavg": os.getloadavg(),
           "finished": datetime.datetime.now().isoformat(timespec="seconds"),
           "s_per_step": train_s / max(1, int(ck["step"])), "sets": score(model, sets(), args.device),
           "genotype": ck["spec"]["genotype"], "config": to_dict(cfg)}
    write_row(run_dir, res)
    per_set = ", ".join(f"{k} {v['psnr_y']:.3f}" for k, v in res["sets"].items())
    log.info(f"{row} seed {seed}: PSNR-Y {per_set}, mean over {'/'.join(SETS)} {mean_psnr(res):.3f} dB "
             f"({res['s_per_step']:.3f} s/step)")
    return res


def references(args) -> dict:
    """Bicubic and the official SPAN / SPANV2 weights on the three sets (computed once)."""
    path = args.out / "references.json"
    if path.is_file():
        return json.loads(path.read_text())
    refs = {"bicubic": {ds.name: {"psnr_y": (r := evaluate_bicubic(ds)).psnr_y, "ssim_y": r.ssim_y}
                        for ds in sets()}}
    for row, name in LAYOUTS.items():
        layout, file = OFFICIAL_FILES[name]
        net = load_official(ESRNet(load_genotype(name), deploy=True), shared_dir() / "teachers" / file, layout)
        refs[row] = score(net.eval(), sets(), args.device)
    path.write_text(json.dumps(refs, indent=2) + "\n")
    return refs


# --- 3. deployed cost and latency --------------------------------------------------------------------------------


def deployed_networks(args, genotypes: dict[str, object]) -> dict[str, torch.nn.Module]:
    """The deployed (re-parameterized) network of every row (latency and size do not depend on the weights)."""
    return {row: reparameterize(build_network(g)).eval() for row, g in genotypes.items()}


def measure_latency(args, genotypes: dict[str, object]) -> dict:
    """Median ms per forward at --latency-size for each of --latency-threads, every network side by side in this
    process (round robin: each round times every network once more). The load average before and after says
    whether other processes competed (OpenMP threads that wait for a descheduled peer make 2-thread timings
    on a busy 2-core machine meaningless)."""
    nets = deployed_networks(args, genotypes)
    x = torch.rand(1, 3, args.latency_size, args.latency_size)
    load = [os.getloadavg()[0]]
    out = {"by_threads": {}}
    with torch.no_grad():
        for threads in args.latency_threads:
            per_round: dict[str, list[float]] = {row: [] for row in nets}
            for _ in range(args.latency_rounds):
                for row, net in nets.items():
                    per_round[row].append(latency(net, x, warmup=1, repeats=3, threads=threads)["median_s"])
            out["by_threads"][str(threads)] = {
                "ms": {row: 1000 * statistics.median(v) for row, v in per_round.items()},
                "rounds_ms": {row: [1000 * t for t in v] for row, v in per_round.items()}}
    load.append(os.getloadavg()[0])
    first = str(args.latency_threads[0])
    return {"ms": out["by_threads"][first]["ms"], "threads": args.latency_threads[0], **out,
            "input": [1, 3, args.latency_size, args.latency_size], "rounds": args.latency_rounds,
            "loadavg_1min": load, "cores": os.cpu_count(), "malloc_env": {k: os.environ.get(k) for k in MALLOC},
            "date": datetime.datetime.now().isoformat(timespec="seconds"), "machine": machine()}


def latency_in_subprocess(args) -> dict:
    """latency.json, measured by `--latency-only` in a fresh process with the malloc thresholds raised."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--out", str(args.out), "--latency-only",
           "--latency-threads", *map(str, args.latency_threads), "--latency-size", str(args.latency_size),
           "--latency-rounds", str(args.latency_rounds)]
    subprocess.run(cmd, check=True, env={**os.environ, **MALLOC})
    return json.loads((args.out / "latency.json").read_text())


def deployed_macs(g, lr: int = 64) -> int:
    with torch.random.fork_rng(devices=[]):
        return count_flops(reparameterize(build_network(g)).eval(), torch.zeros(1, 3, lr, lr))["macs"]


def matched_width(g, reference) -> int:
    """The even width at which genotype `g`'s deployed network has the MACs closest to `reference`'s (the
    searched topology at SPANV2's cost: the equal-cost comparison the latency hinge did not force)."""
    target = deployed_macs(reference)
    widths = range(8, 4 * max(g.channels, reference.channels) + 1, 2)
    return min(widths, key=lambda c: abs(deployed_macs(dataclasses.replace(g, channels=c)) - target))


def row_genotypes(args) -> dict[str, object]:
    g = {row: load_genotype(name) for row, name in LAYOUTS.items()}
    searched = args.out / "search" / "genotype.yaml"
    if searched.is_file():
        s = load_genotype(searched)
        wide = {"searched_wide": dataclasses.replace(s, channels=wide_channels(args, s))} if args.wide else {}
        g = {"searched": s, **wide, **g}
    return g


def wide_channels(args, searched) -> int:
    """The widened row's width, chosen once and kept in OUT/wide.json (a rerun trains the same network)."""
    path = args.out / "wide.json"
    if path.is_file():
        return int(json.loads(path.read_text())["channels"])
    c = matched_width(searched, load_genotype(LAYOUTS["spanv2"]))
    path.write_text(json.dumps({"channels": c, "matched_to": LAYOUTS["spanv2"], "by": "deployed MACs"}) + "\n")
    return c


def sizes(genotypes: dict[str, object], lr: int) -> dict:
    out = {}
    with torch.random.fork_rng(devices=[]):
        for row, g in genotypes.items():
            net = reparameterize(build_network(g)).eval()
            out[row] = {"params": count_params(net), "macs": count_flops(net, torch.zeros(1, 3, lr, lr))["macs"]}
    return out


def machine() -> dict:
    return {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "python": platform.python_version(), "torch": torch.__version__, "platform": platform.platform()}


# --- 4. the doc --------------------------------------------------------------------------------------------------


def row_stats(runs: list[dict]) -> dict:
    means = [mean_psnr(r) for r in runs]
    per_set = {s: statistics.fmean(r["sets"][s]["psnr_y"] for r in runs) for s in SETS}
    ssim = {s: statistics.fmean(r["sets"][s]["ssim_y"] for r in runs) for s in SETS}
    return {"mean": statistics.fmean(means), "sd": statistics.stdev(means) if len(means) > 1 else None,
            "per_seed": means, "seeds": [r["seed"] for r in runs], "psnr": per_set, "ssim": ssim,
            "s_per_step": statistics.fmean(r["s_per_step"] for r in runs)}


def verdicts(stats: dict, lat: dict, noise: float | None) -> list[str]:
    """Plain statements about the searched row against each layout: PSNR difference (paired by seed) beside
    the seed-to-seed noise, and latency ratio."""
    if "searched" not in stats:
        return ["The search has not finished: no searched row yet."]
    out = []
    for srow, row in [(a, b) for a in SEARCHED if a in stats for b in LAYOUTS if b in stats]:
        out.append(verdict(srow, row, stats, lat, noise))
    return out


def verdict(srow: str, row: str, stats: dict, lat: dict, noise: float | None) -> str:
    """One plain statement: searched row `srow` against layout `row` (PSNR paired by seed, latency ratio)."""
    s, b = stats[srow], stats[row]
    paired = [x - y for x, y, sx, sy in zip(s["per_seed"], b["per_seed"], s["seeds"], b["seeds"]) if sx == sy]
    d = statistics.fmean(paired) if paired else s["mean"] - b["mean"]
    ratio = lat[srow] / lat[row] if lat and row in lat and srow in lat else None
    margin = 2 * noise if noise is not None else 0.05
    if abs(d) <= margin:
        psnr = f"the same PSNR within the noise ({d:+.3f} dB, noise {margin:.3f} dB = 2 x the seed spread)"
    elif d > 0:
        psnr = f"higher PSNR ({d:+.3f} dB, beyond 2 x the seed spread {margin:.3f} dB)"
    else:
        psnr = f"lower PSNR ({d:+.3f} dB, beyond 2 x the seed spread {margin:.3f} dB)"
    if ratio is None:
        speed = "latency not measured"
    elif ratio <= 0.95:
        speed = f"faster ({ratio:.2f}x the latency)"
    elif ratio < 1.05:
        speed = f"at equal latency ({ratio:.2f}x)"
    else:
        speed = f"slower ({ratio:.2f}x the latency)"
    beats = d > margin and ratio is not None and ratio < 1.05
    against = f"Against the {ROWS[row]}" if srow == "searched" else \
        f"{ROWS[srow][0].upper()}{ROWS[srow][1:]}, against the {ROWS[row]}"
    return (f"{against}: {psnr}, {speed}. "
            + ("It beats it at equal or lower deployed latency." if beats else
               "It does not beat it at equal deployed latency."))


def plot(stats: dict, refs_mean: dict, lat: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    colors = {"searched": "tab:red", "searched_wide": "tab:orange", "span": "tab:blue", "spanv2": "tab:green"}
    for row, st in stats.items():
        if row not in lat:
            continue
        ax.scatter([lat[row]] * len(st["per_seed"]), st["per_seed"], color=colors[row], alpha=0.5, s=18)
        ax.scatter([lat[row]], [st["mean"]], color=colors[row], s=60, label=f"{row} (trained here)")
    for row, m in refs_mean.items():
        if row in lat:
            ax.scatter([lat[row]], [m], facecolors="none", edgecolors=colors[row], s=70, label=OFFICIAL[row])
    if "bicubic" in refs_mean:
        ax.axhline(refs_mean["bicubic"], color="gray", ls="--", lw=1, label="bicubic")
    ax.set_xlabel("deployed latency, ms (256x256 LR, x4, CPU)")
    ax.set_ylabel("mean PSNR-Y, Set5/Set14/B100 x4 (dB)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="center")  # the corners hold the points (fast/slow, official/trained here)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def latency_basis(lat: dict) -> tuple[dict[str, float], str]:
    """The latencies the verdict uses, and why: the first thread count's (the study's 2), or 1 thread's when
    the machine was busy while timing (load average above the core count)."""
    if not lat:
        return {}, "not measured"
    by = lat.get("by_threads", {})
    if max(lat.get("loadavg_1min", [0])) > lat.get("cores", 1) and "1" in by and lat["threads"] != 1:
        return by["1"]["ms"], (f"1 thread: the machine was busy while timing (load average "
                               f"{max(lat['loadavg_1min']):.1f} on {lat['cores']} cores), which makes "
                               f"{lat['threads']}-thread timings unreliable")
    return lat["ms"], f"{lat['threads']} threads"


def done_seeds(data: dict) -> str:
    runs = data.get("runs", {})
    return "; ".join(f"{row} {', '.join(str(r['seed']) for r in rs)}" for row, rs in runs.items()) or "none"


def wall_time_line(data: dict) -> str:
    """The budget as it was spent: training time over the runs, s/step per row, the search, the machine's load."""
    runs, srch = data.get("runs", {}), data.get("search")
    train_s = [r["train_s"] for rs in runs.values() for r in rs]
    loads = [r["loadavg"][0] for rs in runs.values() for r in rs if "loadavg" in r]
    per_row = ", ".join(f"{row} {s['s_per_step']:.2f}" for row, s in data["stats"].items())
    search = f" after {srch['search_s'] / 60:.0f} min of search;" if srch else ""
    load = f", 1-min load average {min(loads):.1f}-{max(loads):.1f} when runs finished" if loads else ""
    return (f"* Wall time:{search} {sum(train_s) / 60:.0f} min of training over {len(train_s)} runs (s/step: "
            f"{per_row or '-'}); {data['machine']['cores']} cores ({data['machine']['cpu']}), one process, "
            f"{data['threads']} torch thread(s), the machine shared with other long jobs{load}.")


def render(data: dict) -> str:
    st, refs, sz = data["stats"], data["references"], data["sizes"]
    lat_all = data.get("latency", {})
    threads = list(lat_all.get("by_threads", {}))
    lat = {t: lat_all["by_threads"][t]["ms"] for t in threads}
    lines = ["# The esr study: a searched esr genotype beside the SPAN and SPANV2 layouts (x4)", "",
             f"Made by `{data['command']}` on {data['date']} ({data['machine']['cores']} cores, "
             f"torch {data['machine']['torch']}; the machine was shared with other jobs: wall times are inflated).",
             "", "## Budget", ""]
    srch, sc_cost = data.get("search"), data.get("search_costs")
    if srch:
        sc = srch["config"]
        lines.append(f"* Search: `configs/search/esr.yaml`, {srch['steps']} steps ({sc['loop']['epochs']} epochs, "
                     f"{sc['arch']['warmup_epochs']} of warm-up), batch {sc['data']['batch_size']}, HR patch "
                     f"{sc['data']['gt_size']}, {sc['run']['threads']} thread(s), {srch['search_s'] / 60:.0f} min of "
                     "wall time." + ("" if not sc_cost else
                                     f" Latency hinge (weight {sc['cost']['weight']:g}) at {sc_cost['target']:.3g} "
                                     f"{sc_cost['unit']} = {sc_cost['target_over_span']:.2f} x the SPAN layout's cost "
                                     f"in the search's own table of deployed ops ({sc_cost['span_cost']:.3g} "
                                     f"{sc_cost['unit']} at {sc['cost']['input_size'][0]}x{sc['cost']['input_size'][1]}"
                                     " LR)."))
    lines.append(f"* Training: `configs/train/esr_x4.yaml` (L1 + output KD from `spanv2_ntire26_x4`, T91 + BSD200, "
                 f"HR patch 64, batch 16, Adam 2e-3, cosine, EMA 0.999), {data['steps']} steps per run, seeds "
                 f"{', '.join(map(str, data['seeds']))} (finished: {done_seeds(data)}); every row from random "
                 "initialisation (the official weights only teach, by KD, and appear as reference rows).")
    lines.append(wall_time_line(data))
    lines += ["* Evaluation: Y PSNR/SSIM, border 4, whole images, final EMA weights; deployed latency: "
              f"`srcore.cost.latency`, 1x3x{lat_all.get('input', [0, 0, 256])[2]}² LR, "
              f"{' and '.join(threads) or '-'} thread(s), all networks side by side in one process, "
              "median over rounds, malloc thresholds raised as in PROVENANCE.md; the verdict uses "
              f"{data['latency_basis']}. Students and official weights are scored by the same function on the same "
              "three sets. (The training log's KD-gate line scores the teacher on the recipe's validation set, Set14 "
              "alone: compare it with a row's Set14 cell, not with its three-set mean.)", "", "## Results", "",
              f"| row | params | GMACs ({data['latency_size']}² LR) | "
              f"{' | '.join(f'ms, {t} thr' for t in threads)} | Set5 | Set14 | B100 | mean ± sd (seeds) |",
              "|---|---:|---:|" + "---:|" * len(threads) + "---|---|---|---|"]

    def ms(row: str) -> str:
        return " | ".join(f"{lat[t][row]:.1f}" if row in lat[t] else "-" for t in threads)

    for row in ROWS:
        if row not in st:
            continue
        s = st[row]
        cells = " | ".join(f"{s['psnr'][k]:.3f} / {s['ssim'][k]:.4f}" for k in SETS)
        sd = f" ± {s['sd']:.3f}" if s["sd"] is not None else ""
        lines.append(f"| {ROWS[row]} | {sz[row]['params']:,} | {sz[row]['macs'] / 1e9:.2f} | {ms(row)} | {cells} | "
                     f"{s['mean']:.3f}{sd} ({len(s['per_seed'])}) |")
    for row, label in OFFICIAL.items():
        if row in refs:
            cells = " | ".join(f"{refs[row][k]['psnr_y']:.3f} / {refs[row][k]['ssim_y']:.4f}" for k in SETS)
            mean = statistics.fmean(refs[row][k]["psnr_y"] for k in SETS)
            lines.append(f"| {label} (reference) | {sz[row]['params']:,} | {sz[row]['macs'] / 1e9:.2f} | {ms(row)} | "
                         f"{cells} | {mean:.3f} |")
    b = refs.get("bicubic")
    if b:
        cells = " | ".join(f"{b[k]['psnr_y']:.3f} / {b[k]['ssim_y']:.4f}" for k in SETS)
        dashes = " | ".join("-" for _ in threads)
        lines.append(f"| bicubic | 0 | - | {dashes} | {cells} | {statistics.fmean(b[k]['psnr_y'] for k in SETS):.3f} |")
    noise = data.get("noise")
    lines += ["", f"PSNR / SSIM cells are means over seeds. Seed-to-seed spread of a row's mean PSNR (pooled): "
              f"{noise:.3f} dB." if noise is not None else "", "", "## Verdict", ""]
    lines += [f"* {v}" for v in data["verdicts"]]
    lines += ["", "![PSNR against deployed latency](esr_study.png)", ""]
    if srch:
        lines += ["## The searched genotype", "", "```yaml", Path(srch["genotype"]).read_text().rstrip()
                  if Path(srch["genotype"]).is_file() else "(missing)", "```", "",
                  f"Search diagnostics (nas/esr_derive.py collapse report): {srch['verdict']}."]
        if sc_cost:
            lo, hi = sc_cost["expected_over_span"] or (float("nan"), float("nan"))
            lines.append(f"Cost term: the expected cost of the supernet stayed between {lo:.2f} and {hi:.2f} x the "
                         f"SPAN layout's table cost; the hinge was active on {sc_cost['hinge_active']} of "
                         f"{sc_cost['logged']} logged steps; the derived network costs "
                         f"{sc_cost.get('derived_over_span', float('nan')):.2f} x SPAN in that table.")
        lines += [""] + [f"* warning: {w}" for w in srch["warnings"]]
    notes = data.get("notes")
    if notes:
        lines += ["", "## Notes", "", notes.rstrip()]
    lines += ["", "Resume or redo with the command above (runs are reused); re-measure the latency alone on a quiet "
              "machine with `python tools/esr_study.py --out runs/esr_study --latency-only` then `--report-only`."]
    return "\n".join(lines) + "\n"


def write_doc(args, search: dict | None) -> dict:
    runs: dict[str, list[dict]] = {}
    for row in ROWS:
        for seed in args.seeds:
            p = args.out / "train" / row / f"seed{seed}" / RESULT
            if p.is_file():
                runs.setdefault(row, []).append(json.loads(p.read_text()))
    stats = {row: row_stats(rs) for row, rs in runs.items()}
    refs = references(args)
    lat_path = args.out / "latency.json"
    lat = json.loads(lat_path.read_text()) if lat_path.is_file() else {}
    genos = row_genotypes(args)
    data = {"command": shlex.join(["python", "tools/esr_study.py", *args.argv]),
            "date": datetime.date.today().isoformat(), "machine": machine(), "steps": args.steps, "seeds": args.seeds,
            "threads": args.threads,
            "search": search, "stats": stats, "references": refs, "latency": lat,
            "sizes": sizes(genos, args.latency_size), "latency_size": args.latency_size, "noise": noise_level(runs),
            "runs": runs}
    basis, data["latency_basis"] = latency_basis(lat)
    data["verdicts"] = verdicts(stats, basis, data["noise"])
    data["search_costs"] = search_costs(args.out)
    notes = args.out / "notes.md"
    data["notes"] = notes.read_text() if notes.is_file() else None
    args.doc.parent.mkdir(parents=True, exist_ok=True)
    refs_mean = {k: statistics.fmean(v[s]["psnr_y"] for s in SETS) for k, v in refs.items()}
    plot(stats, refs_mean, basis, args.doc.with_suffix(".png"))
    args.doc.write_text(render(data))
    args.json.write_text(json.dumps({k: v for k, v in data.items() if k != "runs"} | {"runs": {
        row: [{k: r[k] for k in ("seed", "steps", "train_s", "s_per_step", "sets")} for r in rs]
        for row, rs in runs.items()}}, indent=2) + "\n")
    log.info(f"wrote {args.doc}, {args.json} and {args.doc.with_suffix('.png')}")
    return data


def main(argv=None) -> int:
    args = parse_args(argv)
    setup_runtime(args)
    setup_logging()
    if args.latency_only:
        lat = measure_latency(args, row_genotypes(args))
        (args.out / "latency.json").write_text(json.dumps(lat, indent=2) + "\n")
        log.info("latency (ms): " + ", ".join(f"{k} {v:.1f}" for k, v in lat["ms"].items()))
        return 0
    search = None
    if args.report_only:
        done = args.out / "search" / RESULT
        search = json.loads(done.read_text()) if done.is_file() else None
    else:
        search = run_search(args)
        genos = {"searched": search["genotype"], **LAYOUTS}
        wide = wide_channels(args, load_genotype(search["genotype"])) if args.wide else None
        for i, seed in enumerate(args.seeds):  # one seed of every row first: a partial study is already a comparison
            for row, genotype in genos.items():
                train_row(row, genotype, seed, args)
            if wide is not None:
                train_row("searched_wide", search["genotype"], seed, args, channels=wide)
            references(args)
            last = i == len(args.seeds) - 1
            if last or not (args.out / "latency.json").is_file():  # timed once early, re-timed at the end
                latency_in_subprocess(args)
            if not last:  # the doc after every pass over the rows (an interrupted study still has one)
                write_doc(args, search)
    write_doc(args, search)
    return 0


if __name__ == "__main__":
    run_cli(main)
