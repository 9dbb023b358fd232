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

Examples:
  python tools/bench.py models                                   # everything, 256x256 LR, 2 threads
  python tools/bench.py models --models rlfn_s,genotype:dlsr_x2 --scale 2 --repeats 10
  python tools/bench.py models --device cuda
  python tools/bench.py search-step --space dlsr --batch 4 --lr-patch 48      # the issues' setting
  python tools/bench.py search-step --space dlsr --batch 4 --lr-patch 48 --variants dlsr_exact dlsr_reuse:2 first_order
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
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

from distill import zoo
from srcore.cost import latency, measure_cost
from srcore.layers import ESA
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
# CLI


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)

    def common(sp, name):
        sp.add_argument("--json", type=Path, default=JSON_DIR / f"{name}.json", help="JSON results file")
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
    args = p.parse_args(argv)
    for key in ("threads", "repeats", "lr_size", "batch", "lr_patch", "steps", "matmul_size"):
        if getattr(args, key, 1) < 1:
            raise ValueError(f"--{key.replace('_', '-')} must be >= 1")
    if getattr(args, "warmup", 0) < 0:
        raise ValueError("--warmup must be >= 0")
    for key in ("lr_patch", "lr_size"):  # the supernet's cells and most teachers end in ESA blocks
        if getattr(args, key, ESA.MIN_INPUT) < ESA.MIN_INPUT:
            raise ValueError(f"--{key.replace('_', '-')} {getattr(args, key)}: smaller than the networks' minimum "
                             f"input {ESA.MIN_INPUT}x{ESA.MIN_INPUT} (ESA blocks); use >= {ESA.MIN_INPUT}")
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
    else:
        payload = {"machine": machine, **bench_search_step(args, log)}
        table, markdown = search_table(payload), search_markdown(payload)
    (console if console.is_terminal else Console(stderr=True, width=160)).print(table)  # logs: no squeezed columns
    command = "python tools/bench.py " + " ".join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    payload["command"] = command
    title, _, body = markdown.partition("\n")
    write_json(args.json, payload)
    write_doc_section(args.doc, args.command, f"{title}\n\nMade by `{command}`.\n{body}")
    log.info(f"wrote {args.json} and the '{args.command}' section of {args.doc}")
    return 0


if __name__ == "__main__":
    run_cli(main)
