#!/usr/bin/env python
"""Benchmarks: what the teacher models cost, and how fast the NAS engine steps on this machine.

Each subcommand prints a table, writes a JSON file (`--json`, default docs/bench/<subcommand>.json) and
rewrites its own section of docs/benchmarks.md (`--doc`; between `<!-- bench:NAME -->` and
`<!-- /bench:NAME -->`, other sections untouched). Both record the machine: CPU model, cores, torch
version, threads, load average and date. Timings on a shared machine are only indicative: run on a
quiet one (the load average is recorded to tell).

  models       for every zoo model with official weights (../shared/teachers/PROVENANCE.md) at each of its
               released scales, plus genotype:dlsr_x2: params, MACs/FLOPs and conv activations for one
               1x3x256x256 LR input (the NTIRE efficient-SR convention), peak forward memory, CPU latency
               (median after warm-up) and, with --device cuda, CUDA-event latency. Networks are randomly
               initialised: none of these figures depends on the weight values.
  search-step  seconds per weight step and per arch step and the peak memory of the NAS engine
               (`nas.timing.step_timing`), each row in a fresh process: DLSR's step re-implemented on our
               supernet (unfused, NCHW, two graphs: what DLSR's code does), then srnas variants: the
               same algorithm (dlsr_exact: the engine's speed-up alone), the cheaper dlsr_reuse, and
               PC-DARTS partial channels (an approximate supernet). GFLOP/s = the FLOPs one weight step
               of that row computes (counted on the supernet as the row runs it, fused or unfused) /
               its time; a fp32 matmul on the same threads gives the machine's practical peak. Ratios
               are to the re-implemented row and to the released code's own figures on this CPU
               (given in issue #10, not measured here).

  latency      several networks in ONE process, side by side: compressed students (deploy.pt files) beside
               zoo models (IMDN, RLFN-S, RFDN, PAN, DLSR by default; --models to change the list, e.g. the
               NTIRE winners span,dscf,spanv2,pfdn at x4), in PyTorch eager and in onnxruntime, each timed
               interleaved with the others after warm-up (median of --repeats); params, MACs, activations,
               peak memory, Set5 PSNR-Y (official weights, or the student's own) and the speed ratio to
               --reference (rlfn_s). The allocator settings of srcore/runtime.py are in force (recorded).
               --section names its docs section and JSON (default latency; latency_x4 for the x4 table).
  runtime      the glibc allocator problem and its fix: one network's forward on a large LR image in two
               fresh processes, glibc defaults vs srcore/runtime.py's settings: wall, user and system time,
               minor page faults (getrusage), GFLOP/s against a measured conv peak on the same threads.
  data         PatchDataset's `cache: ram` vs `cache: disk` (tools/bench_data.py): build time, private and
               page-cache memory, patches per second, each in a fresh process.

Examples:
  python tools/bench.py models                                   # everything, 256x256 LR, 2 threads
  python tools/bench.py models --models rlfn_s,genotype:dlsr_x2 --scale 2 --repeats 10
  python tools/bench.py models --device cuda
  python tools/bench.py search-step --space dlsr --batch 4 --lr-patch 48      # the issues' setting
  python tools/bench.py search-step --space dlsr --batch 4 --lr-patch 48 --variants dlsr_exact dlsr_reuse:2 first_order
  python tools/bench.py latency --students runs/compress/deploy.pt --scale 2 --repeats 10
  python tools/bench.py latency --models rlfn_s,imdn --students a/deploy.pt b/deploy.pt --no-onnx
  python tools/bench.py latency --scale 4 --section latency_x4 --models imdn,rlfn_s,rfdn,pan,span,dscf,spanv2,pfdn
  python tools/bench.py runtime --model imdn --scale 2 --lr-size 384x512
  python tools/bench.py data --train '${SRNAS_SHARED}/data/T91' '${SRNAS_SHARED}/data/BSD200' --threads 1
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import re
import shlex
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch
from common import REPO, check_device, console, progress, run_cli, setup_logging
from rich.console import Console
from rich.table import Table

import compress  # noqa: F401  (rebuilds compressed checkpoints: reparameterized, widths)
import search_spaces  # noqa: F401  (registers the builder of genotype checkpoints)
from distill import zoo
from srcore.cost import latency, measure_cost
from srcore.layers import ESA
from srcore.paths import shared_dir
from srcore.rundir import check_output_file

DOC = REPO / "docs" / "benchmarks.md"
JSON_DIR = REPO / "docs" / "bench"

# Zoo architectures with official weights in ../shared/teachers (see PROVENANCE.md) and the scales those
# weights exist for; "genotype:NAME" is a shipped genotype built by search_spaces.network. The NTIRE
# winners (span, dscf, spanv2, pfdn) are built in their deployed (re-parameterized) form, as released.
OFFICIAL_MODELS: dict[str, tuple[int, ...]] = {
    "imdn": (2, 4), "imdn_aim19": (4,), "rfdn": (4,), "rlfn": (2, 4), "rlfn_s": (2, 4), "pan": (2, 4),
    "carn_m": (2, 3, 4), "a2n": (2,), "genotype:dlsr_x2": (2,),
    "span": (4,), "dscf": (4,), "spanv2": (4,), "pfdn": (4,),
}

# Given figures (not measured here): DLSR's released code itself (its RFDN_beta1 supernet and the step of
# search/RFDN6_para_loss.py on CPU, `.cuda()` made a no-op, random data), timed on this project's CPU beside
# srnas in one sitting, as reported in issue #10. Setting: batch 4, LR patch 48x48, x2, 6 cells, C = 48, 2 threads.
RELEASED_REFERENCE = {
    "source": "issue #10 (DLSR's released code run on this CPU; given, not measured here)",
    "setting": {"space": "dlsr", "batch": 4, "lr_patch": 48, "scale": 2, "num_cells": 6, "channels": 48},
    "step_s_range": [7.4, 11.1],  # weight + arch step, over repeated runs
    "peak_memory_bytes_range": [3.9e9, 4.0e9],
    "step_s": 7.4,  # ratios are taken to the fastest figure and the smallest memory: the conservative side
    "peak_memory_bytes": 3.9e9,
}


# ----------------------------------------------------------------------------------------------------
# machine, JSON and the docs section


def machine_info(threads: int, device: str) -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "cores_available": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "threads": threads,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "loadavg_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return info


def machine_line(m: dict) -> str:
    gpu = f", GPU {m['gpu']}" if "gpu" in m else ""
    return (f"{m['cpu']} ({m['cores_available']} of {m['cores']} cores available), torch threads: {m['threads']}, "
            f"torch {m['torch']}{gpu}; load average {m['loadavg_1min']:.2f} at start; {m['date']}")


def write_json(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2) + "\n")


def write_doc_section(doc: Path, name: str, body: str) -> None:
    """Replace the `<!-- bench:name -->` ... `<!-- /bench:name -->` block of `doc` (append it if absent)."""
    begin, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    text = doc.read_text(encoding="utf-8") if doc.exists() else (
        "# Benchmarks\n\nWritten by `tools/bench.py`; each section is rewritten by its own subcommand "
        "(edit outside the `<!-- bench:... -->` markers only).\n")
    block = f"{begin}\n{body.strip()}\n{end}"
    i, j = text.find(begin), text.find(end)
    if (i < 0) != (j < 0) or (i >= 0 and j < i):
        raise ValueError(f"{doc}: the markers {begin} and {end} are unpaired or out of order; fix them by hand")
    if i >= 0:
        text = text[:i] + block + text[j + len(end):]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(text, encoding="utf-8")


def fmt(v: float | None, nd: int, scale: float = 1.0) -> str:
    return "-" if v is None else f"{v / scale:.{nd}f}"


def markdown_rows(columns: tuple[str, ...], rows: list[list[str]]) -> list[str]:
    """A markdown table: first column left-aligned, the others right-aligned."""
    return ["| " + " | ".join(columns) + " |", "|---|" + "---:|" * (len(columns) - 1),
            *("| " + " | ".join(r) + " |" for r in rows)]


def rich_table(title: str, columns: tuple[str, ...], rows: list[list[str]]) -> Table:
    table = Table(title=title)
    for i, col in enumerate(columns):
        table.add_column(col, justify="left" if i == 0 else "right", no_wrap=i == 0)
    for r in rows:
        table.add_row(*r)
    return table


# ----------------------------------------------------------------------------------------------------
# models


def model_list(spec: str | None, scale: int | None) -> list[tuple[str, int]]:
    """(name, scale) pairs: official scales for known teachers, else every scale the architecture has."""
    names = [s.strip() for s in spec.split(",") if s.strip()] if spec else list(OFFICIAL_MODELS)
    pairs = []
    for name in names:
        if name in OFFICIAL_MODELS:
            scales = OFFICIAL_MODELS[name]
        elif name.startswith("genotype:"):
            from search_spaces.genotype import load_genotype

            scales = (load_genotype(name.split(":", 1)[1]).scale,)
        else:
            scales = zoo.get_entry(name).scales  # KeyError naming the known architectures
        pairs += [(name, s) for s in scales if scale is None or s == scale]
    if not pairs:
        raise ValueError(f"no model of {', '.join(names)} is released at x{scale}")
    return pairs


def build_model(name: str, scale: int) -> torch.nn.Module:
    if name.startswith("genotype:"):
        from search_spaces.network import build_network

        return build_network(name.split(":", 1)[1])
    return zoo.create(name, scale)


def bench_models(args, log) -> dict:
    pairs = model_list(args.models, args.scale)
    shape = (1, 3, args.lr_size, args.lr_size)
    cuda = args.device.startswith("cuda")
    rows = []
    with progress() as prog:
        task = prog.add_task("models", total=len(pairs))
        for name, scale in pairs:
            prog.update(task, description=f"{name} x{scale}")
            torch.manual_seed(0)
            model = build_model(name, scale).eval()
            cost = measure_cost(model, shape, device=args.device)
            model = model.cpu()
            x = torch.rand(*shape)
            cpu = latency(model, x, warmup=args.warmup, repeats=args.repeats, threads=args.threads)
            gpu = None
            if cuda:
                model = model.to(args.device)
                gpu = latency(model, x.to(args.device), warmup=args.warmup, repeats=args.repeats)
            rows.append({"model": name, "scale": scale, "params": cost.params, "macs": cost.macs,
                         "flops": cost.flops, "activations": cost.activations, "conv_layers": cost.conv_layers,
                         "peak_memory_bytes": cost.peak_memory_bytes, "peak_memory_device": args.device,
                         "cpu_latency_s": cpu["median_s"], "cpu_latency_min_s": cpu["min_s"],
                         "cuda_latency_s": gpu["median_s"] if gpu else None,
                         "cuda_latency_min_s": gpu["min_s"] if gpu else None})
            log.debug(f"{name} x{scale}: {rows[-1]}")
            prog.advance(task)
    return {"subcommand": "models", "input_shape": list(shape),
            "settings": {"warmup": args.warmup, "repeats": args.repeats, "threads": args.threads,
                         "device": args.device, "weights": "random init (costs and latency do not depend on them)"},
            "results": rows}


MODEL_COLUMNS = ("model", "scale", "params", "MACs (G)", "FLOPs (G)", "activations (M)", "convs", "peak mem (MB)",
                 "CPU latency (ms)", "CUDA latency (ms)")


def model_cells(r: dict) -> list[str]:
    return [r["model"], f"x{r['scale']}", f"{r['params']:,}", fmt(r["macs"], 2, 1e9), fmt(r["flops"], 2, 1e9),
            fmt(r["activations"], 1, 1e6), str(r["conv_layers"]), fmt(r["peak_memory_bytes"], 1, 2**20),
            fmt(r["cpu_latency_s"], 1, 1e-3), fmt(r["cuda_latency_s"], 2, 1e-3)]


def models_markdown(p: dict) -> str:
    m, s = p["machine"], p["settings"]
    shape = "x".join(map(str, p["input_shape"]))
    lines = [
        "## Model costs (`tools/bench.py models`)", "",
        f"One {shape} LR input (the NTIRE efficient-SR convention); MACs/FLOPs count convolutions and matmuls "
        f"(FLOPs = 2 MACs); activations = elements of every conv output; peak memory = forward pass on "
        f"{s['device']} beyond what was allocated before it; latency = median of {s['repeats']} forward passes "
        f"after {s['warmup']} warm-up runs.", "",
        f"Machine: {machine_line(m)}.", "",
        "| " + " | ".join(MODEL_COLUMNS) + " |",
        "|" + "|".join(["---"] + ["---:"] * (len(MODEL_COLUMNS) - 1)) + "|",
    ]
    lines += ["| " + " | ".join(model_cells(r)) + " |" for r in p["results"]]
    return "\n".join(lines)


def models_table(p: dict) -> Table:
    shape = "x".join(map(str, p["input_shape"]))
    cuda = any(r["cuda_latency_s"] is not None for r in p["results"])
    table = Table(title=f"model costs, LR input {shape}, {p['settings']['threads']} CPU threads")
    short = ("model", "scale", "params", "GMACs", "GFLOPs", "acts (M)", "convs", "mem MB", "CPU ms", "CUDA ms")
    for col in short[:None if cuda else -1]:
        table.add_column(col, justify="left" if col == "model" else "right", no_wrap=True)
    for r in p["results"]:
        table.add_row(*model_cells(r)[:None if cuda else -1])
    return table


# ----------------------------------------------------------------------------------------------------
# search-step


def search_config(args):
    """The NAS engine's SearchConfig for this benchmark (defaults + the CLI's options + --set overrides)."""
    from nas.config import SearchConfig
    from srcore.config import apply_overrides, from_dict

    data = {"space": {"scale": args.scale, "channels": args.channels, "num_cells": args.num_cells},
            "data": {"batch_size": args.batch, "gt_size": args.lr_patch * args.scale}}
    return from_dict(SearchConfig, apply_overrides(data, args.set), "search-step options")


def matmul_peak(n: int, threads: int, device: str, repeats: int = 5) -> dict:
    """Achieved GFLOP/s of an n x n fp32 matmul on `threads` threads: the machine's practical peak."""
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
        times = []
        for i in range(repeats + 1):  # the first run is a warm-up
            if device.startswith("cuda"):
                torch.cuda.synchronize(device)
            t0 = time.perf_counter()
            a @ b
            if device.startswith("cuda"):
                torch.cuda.synchronize(device)
            if i:
                times.append(time.perf_counter() - t0)
    finally:
        torch.set_num_threads(old)
    flops = 2 * n**3
    return {"size": n, "threads": threads, "device": device, "best_s": min(times),
            "median_s": statistics.median(times), "gflops_peak": flops / min(times) / 1e9,
            "gflops_median": flops / statistics.median(times) / 1e9}


def parse_variant(text: str) -> tuple[str, int]:
    """'ALGORITHM' or 'ALGORITHM:K' (K = PC-DARTS partial channels) -> (algorithm, K)."""
    from nas.config import ALGORITHMS

    alg, _, k = text.partition(":")
    if alg not in ALGORITHMS or (k and not k.isdigit()):
        raise ValueError(f"--variants {text!r}: expected ALGORITHM or ALGORITHM:K with ALGORITHM one of "
                         f"{', '.join(ALGORITHMS)} and K a positive integer")
    return alg, int(k) if k else 1


def variant_label(algorithm: str, k: int, reference: bool) -> str:
    if reference:
        return "DLSR's step re-implemented on our supernet (unfused, NCHW, arch step with two graphs)"
    what = {"dlsr_exact": "DLSR's algorithm (dlsr_exact) on the srnas engine",
            "dlsr_reuse": "srnas dlsr_reuse (cheaper: train term from the weight step's backward)",
            "first_order": "srnas first_order (DARTS 1st order: validation term only)",
            "second_order": "srnas second_order (DARTS 2nd order through Adam's step)"}[algorithm]
    return what + (f", partial channels K={k} (approximate supernet)" if k > 1 else "")


def bench_search_step(args, log) -> dict:
    """Time the NAS engine's weight and arch steps, row by row in fresh processes (see the module docstring)."""
    from nas.timing import step_timing, timing_config, weight_step_flops
    from srcore.config import to_dict

    config = search_config(args)
    torch.set_num_threads(args.threads)
    log.info(f"matmul reference: {args.matmul_size}x{args.matmul_size} fp32 on {args.threads} threads")
    mm = matmul_peak(args.matmul_size, args.threads, args.device)
    variants = ([("dlsr_exact", 1, True)] if args.reference_step else []) + \
        [(*parse_variant(v), False) for v in args.variants]
    rows = []
    ctx = multiprocessing.get_context("spawn")
    for algorithm, k, reference in variants:
        label = variant_label(algorithm, k, reference)
        log.info(f"{label}: {args.steps} timed steps, batch {args.batch}, LR patch {args.lr_patch} (fresh process)")
        # each variant in a fresh process: resident memory freed by an earlier variant stays with the allocator
        # and would inflate a later variant's peak
        with ctx.Pool(1, initializer=torch.set_num_threads, initargs=(args.threads,)) as pool:
            t = dict(pool.apply(step_timing, (config, args.steps, k),
                                {"algorithm": algorithm, "device": args.device, "reference": reference}))
        flops = weight_step_flops(timing_config(config, k, algorithm, reference))
        rows.append({"variant": label, "algorithm": algorithm, "partial_channels": k,
                     "reference_algorithm": reference, "fused": t["fuse"],
                     "weight_step_s": t["weight_step_s"], "arch_step_s": t["arch_step_s"],
                     "step_s": t["weight_step_s"] + t["arch_step_s"], "peak_memory_bytes": t["peak_memory_bytes"],
                     "weight_step_flops": flops, "weight_step_gflops_per_s": flops / t["weight_step_s"] / 1e9,
                     "engine": t})
    ref = RELEASED_REFERENCE
    measured_ref = next((r for r in rows if r["reference_algorithm"]), None)
    for r in rows:
        r["ratio_to_released"] = {"step_s": r["step_s"] / ref["step_s"],
                                  "peak_memory_bytes": r["peak_memory_bytes"] / ref["peak_memory_bytes"]}
        if measured_ref:
            r["ratio_to_measured_dlsr"] = {"step_s": r["step_s"] / measured_ref["step_s"],
                                           "peak_memory_bytes": r["peak_memory_bytes"]
                                           / measured_ref["peak_memory_bytes"]}
    setting = {"space": args.space, "batch": args.batch, "lr_patch": args.lr_patch, "scale": args.scale,
               "num_cells": args.num_cells, "channels": args.channels}
    same_setting = all(setting[k] == v for k, v in ref["setting"].items()) and args.threads == 2
    return {"subcommand": "search-step", "setting": {**setting, "steps": args.steps, "device": args.device},
            "config": to_dict(config), "rows": rows, "matmul_reference": mm, "reference": ref,
            "reference_same_setting": same_setting}


SEARCH_COLUMNS = ("variant", "s / weight step", "s / arch step", "s / (weight + arch)", "peak memory (GB)",
                  "GFLOP/s (weight step)", "time vs re-implemented", "memory vs re-implemented",
                  "time vs released code", "memory vs released code")


def search_rows(p: dict) -> list[list[str]]:
    out = []
    for r in p["rows"]:
        md = r.get("ratio_to_measured_dlsr", {})
        out.append([r["variant"], fmt(r["weight_step_s"], 2), fmt(r["arch_step_s"], 2), fmt(r["step_s"], 2),
                    fmt(r["peak_memory_bytes"], 2, 1e9), fmt(r["weight_step_gflops_per_s"], 1),
                    fmt(md.get("step_s"), 2), fmt(md.get("peak_memory_bytes"), 2),
                    fmt(r["ratio_to_released"]["step_s"], 2), fmt(r["ratio_to_released"]["peak_memory_bytes"], 2)])
    ref = p["reference"]
    lo, hi = ref["step_s_range"]
    mlo, mhi = ref["peak_memory_bytes_range"]
    out.append(["DLSR's released code itself (issue #10's figures, not measured here)", "-", "-",
                f"{lo:.1f}-{hi:.1f}", f"{mlo / 1e9:.1f}-{mhi / 1e9:.1f}", "-", "-", "-", "1.00", "1.00"])
    return out


def search_caption(p: dict) -> str:
    s = p["setting"]
    note = "" if p["reference_same_setting"] else " (NOT issue #10's setting: its ratios are not like for like)"
    return (f"{s['space']} supernet x{s['scale']}, {s['num_cells']} cells, C={s['channels']}, batch {s['batch']}, "
            f"LR patch {s['lr_patch']}, median of {s['steps']} steps on {s['device']}{note}")


def search_markdown(p: dict) -> str:
    mm = p["matmul_reference"]
    lines = ["## NAS engine step (`tools/bench.py search-step`)", "", search_caption(p) + ".", "",
             f"Machine: {machine_line(p['machine'])}; fp32 matmul {mm['size']}² peak {mm['gflops_peak']:.1f} "
             "GFLOP/s on the same threads.", "",
             "Rows: DLSR's step re-implemented on our supernet (no op fusion, NCHW, the arch step re-runs the "
             "training batch and a validation batch and back-propagates both into every parameter with both graphs "
             "alive), measured in this run; `dlsr_exact` is the same algorithm on the srnas engine (fused mixed ops, "
             "channels-last, gradients for the arch parameters only, one graph at a time): the engine's speed-up "
             "alone; `dlsr_reuse` is a cheaper algorithm (the train term comes from the weight step's own backward, "
             "one step stale), and partial channels compute an approximate supernet: those rows are not the same "
             "computation. GFLOP/s: FLOPs one weight step of the row computes (fused rows count the fused kernels, "
             "unfused rows the unfused ops) / its time. The released code's figures: "
             f"{p['reference']['source']}; ratios use its fastest time and smallest memory. Peak memory is the "
             "process's peak resident memory (it includes torch's own ~0.3-0.4 GB).", "",
             "| " + " | ".join(SEARCH_COLUMNS) + " |", "|---|" + "---:|" * (len(SEARCH_COLUMNS) - 1)]
    lines += ["| " + " | ".join(row) + " |" for row in search_rows(p)]
    return "\n".join(lines)


def search_table(p: dict) -> Table:
    table = Table(title=search_caption(p))
    for col in SEARCH_COLUMNS:
        table.add_column(col, justify="left" if col == "variant" else "right")
    for row in search_rows(p):
        table.add_row(*row)
    return table


# ----------------------------------------------------------------------------------------------------
# latency: compressed students beside the zoo, PyTorch eager and onnxruntime, in one process

LATENCY_MODELS = "imdn,rlfn_s,rfdn,pan,genotype:dlsr_x2"  # x2; the NTIRE winners (x4 only) join with --models


def official_weights(name: str, scale: int) -> Path | None:
    """The official weight file of a zoo model / shipped genotype at `scale` in $SRNAS_SHARED/teachers: the
    registered weights of that architecture and scale (srcore/weights.py: e.g. spanv2 x4 is
    spanv2_ntire26_x4.pth), else <name>_x<scale>.pth."""
    from srcore.weights import WEIGHTS

    files = [e.file for e in WEIGHTS.values() if e.arch == name and scale in e.scales]
    stem = name.split(":", 1)[1] if name.startswith("genotype:") else f"{name}_x{scale}"
    for path in [shared_dir() / "teachers" / f for f in files] + [shared_dir() / "teachers" / f"{stem}.pth"]:
        if path.is_file():
            return path
    return None


def latency_entries(args, log) -> list[dict]:
    """[{label, kind, model, weights}] for the students, then the zoo models (official weights when present)."""
    from srcore.checkpoint import load_strict, read_state_dict
    from srcore.modelspec import load_checkpoint_model, spec_scale

    entries = []
    for path in args.students:
        model, ckpt = load_checkpoint_model(path)
        if spec_scale(ckpt["spec"]) != args.scale:
            raise ValueError(f"{path} holds a x{spec_scale(ckpt['spec'])} network; --scale is {args.scale}")
        label = f"{Path(path).parent.name}/{Path(path).name}" if Path(path).parent.name else str(path)
        entries.append({"label": label, "kind": "student", "model": model.eval(), "weights": str(path)})
    for name in [n.strip() for n in args.models.split(",") if n.strip()]:
        model = build_model(name, args.scale).eval()
        weights = official_weights(name, args.scale)
        if weights is not None:
            load_strict(model, read_state_dict(weights), str(weights))
        else:
            log.info(f"{name} x{args.scale}: no official weights in {shared_dir() / 'teachers'}; timed only")
        entries.append({"label": name, "kind": "zoo", "model": model, "weights": str(weights) if weights else None})
    return entries


def interleaved_latency(runners: dict[str, callable], warmup: int, repeats: int) -> dict[str, dict]:
    """Median/min seconds of each runner, timed round-robin (each repeat runs every model once), so load
    changes on a shared machine hit every model alike."""
    for _ in range(warmup):
        for fn in runners.values():
            fn()
    times: dict[str, list[float]] = {k: [] for k in runners}
    for _ in range(repeats):
        for key, fn in runners.items():
            t0 = time.perf_counter()
            fn()
            times[key].append(time.perf_counter() - t0)
    return {k: {"median_s": statistics.median(v), "min_s": min(v)} for k, v in times.items()}


def bench_latency(args, log) -> dict:
    import tempfile

    from srcore.data import BenchmarkSet
    from srcore.evaluation import evaluate_bicubic, evaluate_model
    from srcore.runtime import configure_allocator

    runtime = configure_allocator().as_dict()  # already applied by tools/common; recorded here
    shape = (1, 3, args.lr_size, args.lr_size)
    entries = latency_entries(args, log)
    psnr_set = args.psnr_data or (str(shared_dir() / "data" / "Set5") if (shared_dir() / "data" / "Set5").exists()
                                  else None)
    onnx_ok = args.onnx
    if onnx_ok:
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            log.warning("onnxruntime is not installed: PyTorch eager only (pip install onnx onnxruntime)")
            onnx_ok = False
    x = torch.rand(*shape)
    rows, runners = [], {}
    with tempfile.TemporaryDirectory() as tmp, torch.no_grad(), progress() as prog:
        task = prog.add_task("costs", total=len(entries))
        for i, e in enumerate(entries):
            prog.update(task, description=f"{e['label']}: costs, PSNR, export")
            cost = measure_cost(e["model"], shape)
            row = {"model": e["label"], "kind": e["kind"], "scale": args.scale, "weights": e["weights"],
                   "params": cost.params, "macs": cost.macs, "activations": cost.activations,
                   "conv_layers": cost.conv_layers, "peak_memory_bytes": cost.peak_memory_bytes, "psnr_y": None}
            if psnr_set and e["weights"]:
                row["psnr_y"] = evaluate_model(e["model"], BenchmarkSet(psnr_set, args.scale)).psnr_y
                row["psnr_set"] = Path(psnr_set).name
            runners[f"{i}:torch"] = lambda m=e["model"]: m(x)
            if onnx_ok:
                from compress.deploy import OnnxModule, export_onnx

                path = export_onnx(e["model"], Path(tmp) / f"m{i}.onnx", torch.rand(1, 3, 64, 64))
                session = OnnxModule(path, threads=args.threads)
                feed = {session.input_name: x.numpy()}
                runners[f"{i}:onnx"] = lambda s=session.session, f=feed: s.run(None, f)
            rows.append(row)
            prog.advance(task)
        times = {}
        for engine in ("torch", "onnx"):  # one engine at a time: the other's idle threads must not compete
            group = {k: fn for k, fn in runners.items() if k.endswith(f":{engine}")}
            if group:
                log.info(f"timing {len(group)} {engine} runners round-robin: {args.warmup} warm-up + "
                         f"{args.repeats} timed each")
                times.update(interleaved_latency(group, args.warmup, args.repeats))
    for i, row in enumerate(rows):
        for engine in ("torch", "onnx"):
            t = times.get(f"{i}:{engine}")
            row[f"{engine}_latency_s"] = t["median_s"] if t else None
            row[f"{engine}_latency_min_s"] = t["min_s"] if t else None
    ref = next((r for r in rows if r["model"] == args.reference), None)
    for r in rows:
        for engine in ("torch", "onnx"):
            key = f"{engine}_latency_s"
            r[f"{engine}_speedup_vs_reference"] = (ref[key] / r[key]) if ref and ref[key] and r[key] else None
    return {"subcommand": "latency", "input_shape": list(shape), "reference": args.reference if ref else None,
            "settings": {"warmup": args.warmup, "repeats": args.repeats, "threads": args.threads, "device": "cpu",
                         "onnx": onnx_ok, "psnr_set": psnr_set,
                         "bicubic_psnr_y": evaluate_bicubic(BenchmarkSet(psnr_set, args.scale)).psnr_y
                         if psnr_set else None,
                         "order": "one process; eager models round-robin, then onnxruntime models round-robin"},
            "runtime": runtime, "results": rows}


LATENCY_COLUMNS = ("model", "params", "GMACs", "acts (M)", "peak mem (MB)", "PSNR-Y", "eager (ms)", "eager vs ref",
                   "ORT (ms)", "ORT vs ref")


def latency_cells(r: dict) -> list[str]:
    def speed(v):
        return "-" if v is None else f"{v:.2f}x"

    return [r["model"], f"{r['params']:,}", fmt(r["macs"], 2, 1e9), fmt(r["activations"], 1, 1e6),
            fmt(r["peak_memory_bytes"], 1, 2**20), fmt(r["psnr_y"], 3), fmt(r["torch_latency_s"], 1, 1e-3),
            speed(r["torch_speedup_vs_reference"]), fmt(r["onnx_latency_s"], 1, 1e-3),
            speed(r["onnx_speedup_vs_reference"])]


def latency_caption(p: dict) -> str:
    s, shape = p["settings"], "x".join(map(str, p["input_shape"]))
    ref = f"; 'vs ref' = speed relative to {p['reference']} (higher is faster)" if p["reference"] else ""
    return (f"LR input {shape}, x{p['results'][0]['scale']}, {s['threads']} threads, median of {s['repeats']} "
            f"forward passes after {s['warmup']} warm-up, in one process: every eager model round-robin, then every "
            f"onnxruntime model round-robin{ref}")


def latency_markdown(p: dict) -> str:
    rt = p["runtime"]
    allocator = f"tuned ({rt['reason']}, srcore/runtime.py)" if rt["applied"] else f"glibc defaults ({rt['reason']})"
    psnr = f"PSNR-Y on {Path(p['settings']['psnr_set']).name}" if p["settings"]["psnr_set"] else "no PSNR set"
    lines = [f"## Latency side by side, x{p['results'][0]['scale']} (`tools/bench.py latency`)", "",
             latency_caption(p) + ".", "",
             f"Machine: {machine_line(p['machine'])}. Allocator: "
             f"{allocator}. {psnr} with the official weights (zoo) or the checkpoint's own (students); "
             "'-' = no weights. ORT = onnxruntime on the CPU (fp32, the same threads).", ""]
    lines += markdown_rows(LATENCY_COLUMNS, latency_rows(p))
    return "\n".join(lines)


def latency_rows(p: dict) -> list[list[str]]:
    """The table's cells, and bicubic's PSNR-Y beside them (the trivial baseline every PSNR needs)."""
    rows = [latency_cells(r) for r in p["results"]]
    bicubic = p["settings"].get("bicubic_psnr_y")
    if bicubic is not None:
        rows.append(["bicubic (no network)", "0"] + ["-"] * 3 + [f"{bicubic:.3f}"] + ["-"] * 4)
    return rows


def latency_table(p: dict) -> Table:
    return rich_table(latency_caption(p), LATENCY_COLUMNS, latency_rows(p))


# ----------------------------------------------------------------------------------------------------
# runtime: glibc defaults vs srcore/runtime.py on a large forward


def runtime_worker(name: str, scale: int, h: int, w: int, threads: int, repeats: int) -> dict:
    """In a fresh process (tools/common configured the allocator, or not, at import): per-forward wall, user
    and system seconds, minor page faults and peak RSS."""
    import resource

    from srcore.runtime import runtime_state

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = build_model(name, scale).eval()
    x = torch.rand(1, 3, h, w)
    with torch.no_grad():
        model(x)  # warm-up
        r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        walls = []
        for _ in range(repeats):
            t = time.perf_counter()
            model(x)
            walls.append(time.perf_counter() - t)
        r1 = resource.getrusage(resource.RUSAGE_SELF)
    return {"allocator": runtime_state().as_dict() if runtime_state() else None,
            "wall_s": statistics.median(walls), "wall_total_s": time.perf_counter() - t0,
            "user_s": (r1.ru_utime - r0.ru_utime) / repeats, "sys_s": (r1.ru_stime - r0.ru_stime) / repeats,
            "minor_faults": (r1.ru_minflt - r0.ru_minflt) / repeats, "max_rss_bytes": r1.ru_maxrss * 1024}


def conv_peak(threads: int, repeats: int = 5) -> dict:
    """GFLOP/s of a 64 -> 64 3x3 conv on a 1x64x256x256 input (the workhorse of these networks)."""
    torch.set_num_threads(threads)
    conv = torch.nn.Conv2d(64, 64, 3, padding=1)
    x = torch.rand(1, 64, 256, 256)
    times, cpu = [], []
    with torch.no_grad():
        for i in range(repeats + 1):
            t0, c0 = time.perf_counter(), time.process_time()
            conv(x)
            if i:
                times.append(time.perf_counter() - t0)
                cpu.append(time.process_time() - c0)
    flops = 2 * 64 * 64 * 9 * 256 * 256
    return {"layer": "conv 64->64 3x3, 1x64x256x256", "flops": flops, "best_s": min(times),
            "gflops_peak": flops / min(times) / 1e9, "gflops_per_cpu_s_peak": flops / min(cpu) / 1e9}


def bench_runtime(args, log) -> dict:
    from srcore.cost import count_flops

    h, w = args.lr_hw
    flops = count_flops(build_model(args.model, args.scale).eval(), torch.rand(1, 3, h, w))["flops"]
    peak = conv_peak(args.threads)
    ctx = multiprocessing.get_context("spawn")
    rows = []
    big = str(4 * 2**30)
    variants = (("glibc defaults", {"SRNAS_ALLOCATOR": "default"}),
                ("srcore.runtime (mallopt)", {"SRNAS_ALLOCATOR": ""}),
                ("MALLOC_MMAP_THRESHOLD_ = MALLOC_TRIM_THRESHOLD_ = 4 GiB (environment)",
                 {"MALLOC_MMAP_THRESHOLD_": big, "MALLOC_TRIM_THRESHOLD_": big}))
    for label, env in variants:
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)  # a spawned child starts a fresh interpreter: glibc and tools/common read these
        try:
            log.info(f"{label}: {args.model} x{args.scale} on {h}x{w} LR, {args.repeats} forwards (fresh process)")
            with ctx.Pool(1) as pool:
                r = pool.apply(runtime_worker, (args.model, args.scale, h, w, args.threads, args.repeats))
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        r.update(variant=label, gflops_per_s=flops / r["wall_s"] / 1e9,
                 gflops_per_cpu_s=flops / (r["user_s"] + r["sys_s"]) / 1e9)
        r["fraction_of_conv_peak"] = r["gflops_per_s"] / peak["gflops_peak"]
        # CPU time is robust to other processes sharing the machine; wall time is not
        r["cpu_fraction_of_conv_peak"] = r["gflops_per_cpu_s"] / peak["gflops_per_cpu_s_peak"]
        rows.append(r)
    return {"subcommand": "runtime", "model": args.model, "scale": args.scale, "input_shape": [1, 3, h, w],
            "flops": flops, "conv_peak": peak, "settings": {"threads": args.threads, "repeats": args.repeats},
            "results": rows, "speedup": rows[0]["wall_s"] / rows[1]["wall_s"],
            "cpu_speedup": (rows[0]["user_s"] + rows[0]["sys_s"]) / (rows[1]["user_s"] + rows[1]["sys_s"])}


RUNTIME_COLUMNS = ("allocator", "s / forward", "user s", "system s", "minor faults / forward", "peak RSS (GB)",
                   "GFLOP/s", "of conv peak", "GFLOP per CPU-s", "of conv peak (CPU)")


def runtime_cells(r: dict) -> list[str]:
    return [r["variant"], fmt(r["wall_s"], 2), fmt(r["user_s"], 2), fmt(r["sys_s"], 2), f"{r['minor_faults']:,.0f}",
            fmt(r["max_rss_bytes"], 2, 1e9), fmt(r["gflops_per_s"], 1), f"{r['fraction_of_conv_peak']:.0%}",
            fmt(r["gflops_per_cpu_s"], 1), f"{r['cpu_fraction_of_conv_peak']:.0%}"]


def runtime_caption(p: dict) -> str:
    shape = "x".join(map(str, p["input_shape"]))
    return (f"{p['model']} x{p['scale']}, LR {shape}, {p['settings']['threads']} threads, {p['settings']['repeats']} "
            f"forwards after one warm-up, each allocator setting in a fresh process; srcore.runtime "
            f"{p['speedup']:.2f}x faster in wall time, {p['cpu_speedup']:.2f}x in CPU time")


def runtime_markdown(p: dict) -> str:
    pk = p["conv_peak"]
    lines = ["## CPU allocator (`tools/bench.py runtime`)", "", runtime_caption(p) + ".", "",
             f"Machine: {machine_line(p['machine'])}. Conv peak: {pk['layer']} at {pk['gflops_peak']:.1f} GFLOP/s "
             f"({pk['gflops_per_cpu_s_peak']:.1f} GFLOP per CPU-second) on the same threads; the network's FLOPs: "
             f"{p['flops'] / 1e9:.1f} G per forward. Wall-clock columns suffer when other processes share the "
             "machine (see the load average); the CPU-time columns (user + system) do not.", "",
             "glibc serves every block above its mmap threshold (at most 32 MiB) with a fresh mmap and unmaps it "
             "on free, so each forward pass page-faults its large activations in again (system time, minor "
             "faults). srcore/runtime.py (called by every CLI through tools/common.py) sets M_MMAP_MAX=0 and "
             "M_TRIM_THRESHOLD=2 GiB-1 with mallopt; SRNAS_ALLOCATOR=default or any MALLOC_* variable opts out.", ""]
    lines += markdown_rows(RUNTIME_COLUMNS, [runtime_cells(r) for r in p["results"]])
    return "\n".join(lines)


def runtime_table(p: dict) -> Table:
    return rich_table(runtime_caption(p), RUNTIME_COLUMNS, [runtime_cells(r) for r in p["results"]])


# ----------------------------------------------------------------------------------------------------
# CLI


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)

    def common(sp, name):
        sp.add_argument("--json", type=Path, help=f"JSON results file (default {JSON_DIR.name}/<section>.json, "
                                                  f"the section being {name!r} unless --section says otherwise)")
        sp.add_argument("--doc", type=Path, default=DOC, help="markdown file whose bench section is rewritten")
        sp.add_argument("--threads", type=int, default=2, help="torch CPU threads")
        sp.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
        sp.add_argument("-v", "--verbose", action="store_true")

    m = sub.add_parser("models", help="params, MACs, activations, memory and latency of the teacher models")
    common(m, "models")
    m.add_argument("--models", help="comma-separated zoo names or genotype:NAME (default: every official teacher)")
    m.add_argument("--scale", type=int, help="only this scale")
    m.add_argument("--lr-size", type=int, default=256, help="LR input height = width (NTIRE: 256)")
    m.add_argument("--repeats", type=int, default=5, help="timed forward passes (median)")
    m.add_argument("--warmup", type=int, default=2, help="untimed forward passes first")

    s = sub.add_parser("search-step", help="seconds per weight/arch step and peak memory of the NAS engine")
    common(s, "search-step")
    s.add_argument("--space", choices=("dlsr",), default="dlsr")
    s.add_argument("--batch", type=int, default=4)
    s.add_argument("--lr-patch", type=int, default=48, help="LR patch size")
    s.add_argument("--scale", type=int, default=2)
    s.add_argument("--channels", type=int, default=48)
    s.add_argument("--num-cells", type=int, default=6)
    s.add_argument("--variants", nargs="+", default=["dlsr_exact", "dlsr_reuse", "dlsr_reuse:4"],
                   metavar="ALG[:K]", help="srnas rows: arch algorithm and PC-DARTS K (default: dlsr_exact dlsr_reuse "
                                           "dlsr_reuse:4)")
    s.add_argument("--no-reference-step", dest="reference_step", action="store_false",
                   help="skip timing DLSR's step (re-implemented) in the same run")
    s.add_argument("--steps", type=int, default=3, help="timed weight + arch steps")
    s.add_argument("--matmul-size", type=int, default=2048, help="n of the n x n fp32 matmul reference")
    s.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a search config key")
    la = sub.add_parser("latency", help="students beside zoo models: eager and onnxruntime latency, costs, PSNR")
    common(la, "latency")
    la.add_argument("--students", nargs="*", default=[], metavar="DEPLOY.pt", help="compressed networks (deploy.pt)")
    la.add_argument("--models", default=LATENCY_MODELS, help=f"zoo names / genotype:NAME (default {LATENCY_MODELS})")
    la.add_argument("--scale", type=int, default=2)
    la.add_argument("--lr-size", type=int, default=256, help="LR input height = width (NTIRE: 256)")
    la.add_argument("--repeats", type=int, default=10, help="timed forward passes per model (median)")
    la.add_argument("--warmup", type=int, default=2, help="untimed forward passes per model first")
    la.add_argument("--reference", default="rlfn_s", help="model the speed ratios are relative to")
    la.add_argument("--psnr-data", help="benchmark folder for PSNR-Y (default $SRNAS_SHARED/data/Set5)")
    la.add_argument("--no-onnx", dest="onnx", action="store_false", help="PyTorch eager only")
    la.add_argument("--section", default="latency",
                    help="docs/benchmarks.md section and JSON name (e.g. latency_x4: the x4 table beside the x2 one)")

    rt = sub.add_parser("runtime", help="glibc allocator defaults vs srcore/runtime.py on one large forward")
    common(rt, "runtime")
    rt.add_argument("--model", default="imdn", help="zoo name or genotype:NAME")
    rt.add_argument("--scale", type=int, default=2)
    rt.add_argument("--lr-size", dest="lr_hw", default="384x512", help="LR height x width (default 384x512)")
    rt.add_argument("--repeats", type=int, default=3, help="timed forward passes")
    da = sub.add_parser("data", help="PatchDataset memory and speed: cache ram vs disk")
    common(da, "data")
    da.add_argument("--train", nargs="+", default=["builtin:train"], help="training folder(s)")
    da.add_argument("--scale", type=int, default=2)
    da.add_argument("--gt-size", type=int, default=64, help="HR patch side")
    da.add_argument("--patches", type=int, default=2000, help="patches drawn per row")
    args = p.parse_args(argv)
    if hasattr(args, "lr_hw"):
        try:
            hw = tuple(int(v) for v in args.lr_hw.lower().split("x"))
            args.lr_hw = hw if len(hw) == 2 else hw * 2
            assert len(args.lr_hw) == 2 and min(args.lr_hw) >= 16
        except (ValueError, AssertionError):
            raise ValueError(f"--lr-size {args.lr_hw}: expected HxW (e.g. 384x512) or one size >= 16") from None
    for key in ("threads", "repeats", "lr_size", "batch", "lr_patch", "steps", "matmul_size", "patches", "gt_size"):
        if getattr(args, key, 1) < 1:
            raise ValueError(f"--{key.replace('_', '-')} must be >= 1")
    if getattr(args, "warmup", 0) < 0:
        raise ValueError("--warmup must be >= 0")
    for key in ("lr_patch", "lr_size"):  # the supernet's cells and most teachers end in ESA blocks
        if getattr(args, key, ESA.MIN_INPUT) < ESA.MIN_INPUT:
            raise ValueError(f"--{key.replace('_', '-')} {getattr(args, key)}: smaller than the networks' minimum "
                             f"input {ESA.MIN_INPUT}x{ESA.MIN_INPUT} (ESA blocks); use >= {ESA.MIN_INPUT}")
    if not re.fullmatch(r"[A-Za-z0-9_-]+", getattr(args, "section", "x")):
        raise ValueError(f"--section {args.section!r}: expected letters, digits, '_' or '-' (e.g. latency_x4)")
    args.section = getattr(args, "section", args.command)
    args.json = args.json or JSON_DIR / f"{args.section}.json"
    check_device(args.device)
    check_output_file(args.json, "--json")
    check_output_file(args.doc, "--doc")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    log = setup_logging(args.verbose)
    torch.set_num_threads(args.threads)
    machine = machine_info(args.threads, args.device)
    if args.command == "models":
        payload = {"machine": machine, **bench_models(args, log)}
        table, markdown = models_table(payload), models_markdown(payload)
    elif args.command == "latency":
        payload = {"machine": machine, **bench_latency(args, log)}
        table, markdown = latency_table(payload), latency_markdown(payload)
    elif args.command == "runtime":
        payload = {"machine": machine, **bench_runtime(args, log)}
        table, markdown = runtime_table(payload), runtime_markdown(payload)
    elif args.command == "data":
        from bench_data import DATA_COLUMNS, bench_data, data_caption, data_cells, data_markdown

        payload = {"machine": machine, **bench_data(args, log)}
        table = rich_table(data_caption(payload), DATA_COLUMNS, [data_cells(r) for r in payload["results"]])
        markdown = data_markdown(payload, markdown_rows)
    else:
        payload = {"machine": machine, **bench_search_step(args, log)}
        table, markdown = search_table(payload), search_markdown(payload)
    (console if console.is_terminal else Console(stderr=True, width=160)).print(table)  # logs: no squeezed columns
    command = "python tools/bench.py " + " ".join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    payload["command"] = command
    title, _, body = markdown.partition("\n")
    write_json(args.json, payload)
    write_doc_section(args.doc, args.section, f"{title}\n\nMade by `{command}`.\n{body}")
    log.info(f"wrote {args.json} and the '{args.section}' section of {args.doc}")
    return 0


if __name__ == "__main__":
    run_cli(main)
