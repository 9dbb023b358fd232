#!/usr/bin/env python
"""The NAS evaluation study: does our search find better networks than chance, than DLSR's published genotype
and than a hand-designed network of the same size, when all are trained alike?

  python tools/study.py --config configs/study/t291_x2.yaml --out runs/study --jobs 2 --threads 1

The config (configs/study/*.yaml, `StudyConfig` below) names:
  * the search (a preset of configs/search/ and its variants, e.g. with and without the cost term): the
    searches are part of the study and run first;
  * the rows, every one trained under one recipe (a configs/train/ preset; its data, patch, batch, optimizer,
    schedule and EMA; `recipe.kd`: none = L1 only, or output = the preset's output KD) for `recipe.steps`
    steps, once per seed of `recipe.seeds`: the genotype of each search variant; `random.count` random
    genotypes of the same space with parameters within `random.tolerance` of the `search.match` variant's
    (rejection-sampled from `random.seed`, nas/sample.py; the number of draws is recorded); a published
    genotype (`baselines.published`: its ops and links at the space's width and depth, with the space's
    skip); a hand-designed genotype (`baselines.hand`) at the even width whose parameters come closest to
    the matched search's;
  * the evaluation: PSNR/SSIM (Y, the literature's protocol) on `eval.sets`, parameters, MACs and CPU
    latency (srcore.cost; `eval.cost_input` is the LR size, `eval.latency_threads` threads), and the
    trained supernet's own loss for each genotype of its space (nas/proxy.py: does the supernet rank the
    genotypes as training them does?).
It writes --doc (default docs/study.md) with the table, the verdict (is the searched genotype better than the
best and the median random one beyond the seed-to-seed spread?), the search diagnostics and the scatter
plot of PSNR against cost (the --doc path with .png), and --json (all numbers).

Resumable and kill -9 safe: every search and every training run has its own folder under --out; a finished
one (its result.json, with the same config) is reused; an interrupted one resumes from its checkpoint
(searches save every `loop.checkpoint_every` steps, training runs every `recipe.save_every`). So the study
runs in the background and is restarted with the same command after any stop. --stop-at N stops every run
at step N (checkpointed) and writes the doc of what has finished; --report-only trains nothing.
--jobs N runs N searches/trainings at once in separate processes, each with --threads threads.
Stop a background study with `kill -- -PGID` (the whole process group), not just the parent.

Files in --out: search/<variant>/ (a search folder, as tools/search.py writes it, + result.json),
genotypes/<row>-<hash>.yaml, random.json (the sample and its draws), train/<row>/seed<k>/ (a training
folder + result.json), cost/<row>-<hash>.json, proxy.json, references.json, sessions.json.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import hashlib
import json
import logging
import math
import os
import re
import shlex
import statistics
import time
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from bench import machine_info
from common import CONFIGS, REPO, console, run_cli, setup_logging, setup_runtime
from multirun import (
    RESULT,
    benchmark_sets,
    bicubic_scores,
    finished_row,
    mean_psnr,
    noise_level,
    pool,
    score,
    train_or_resume,
    write_row,
)
from search import METRICS, start_metrics
from search import OUTPUTS as SEARCH_OUTPUTS
from study_report import plot, render, verdicts

import search_spaces  # noqa: F401  (registers genotype specs)
from distill.config import StudentConfig, TrainConfig
from distill.trainer import without_kd
from nas.config import SearchConfig
from nas.proxy import rank_correlation, supernet_losses
from nas.sample import genotype_params, sample_matched
from nas.search import CHECKPOINT, HISTORY, REPORT, check_resume_config, load_search, run_search
from search_spaces.genotype import VERSION, Genotype, load_genotype, save_genotype, validate
from search_spaces.network import DLSRNet
from srcore.checkpoint import CheckpointError, load_file
from srcore.config import ConfigError, check_min, load_config, to_dict
from srcore.cost import count_flops, count_params, latency
from srcore.jsonl import read_jsonl
from srcore.modelspec import load_checkpoint_model
from srcore.paths import SHARED_VAR
from srcore.rundir import check_output_file, claim_run_dir

PRESETS = CONFIGS / "study"
DOC = REPO / "docs" / "study.md"
log = logging.getLogger("srnas")


# --- the config --------------------------------------------------------------------------------------------------


@dataclass
class RecipeConfig:
    """How every row is trained: one configs/train/ preset, one budget, the same seeds."""

    config: str = "t291"  # configs/train/<name>.yaml or a YAML file: data, patches, optimizer, schedule, EMA
    kd: Literal["none", "output"] = "none"  # none: the preset's teacher and KD terms are dropped (L1 only)
    steps: int = 1000  # training steps of every row
    seeds: list[int] = field(default_factory=lambda: [0, 1])  # every row is trained once per seed
    save_every: int = 100  # steps between last.pt saves (what a kill -9 can lose)
    log_every: int = 100  # steps between metrics.jsonl lines

    def __post_init__(self):
        check_min("recipe", self, steps=1, save_every=0, log_every=1)
        if not self.seeds or len(set(self.seeds)) != len(self.seeds) or min(self.seeds) < 0:
            raise ConfigError(f"recipe.seeds = {self.seeds}: give distinct seeds >= 0")


@dataclass
class VariantConfig:
    """One search of the study: the preset with these --set overrides (e.g. cost.kind=none)."""

    name: str
    label: str
    set: list[str] = field(default_factory=list)

    def __post_init__(self):
        if not re.fullmatch(r"[a-z][a-z0-9_]*", self.name):
            raise ConfigError(f"search.variants: name {self.name!r} must be lower-case letters, digits and _")


@dataclass
class SearchSection:
    config: str = "study"  # configs/search/<name>.yaml or a YAML file
    variants: list[VariantConfig] = field(default_factory=lambda: [
        VariantConfig("cost", "searched, cost term"), VariantConfig("nocost", "searched, no cost term",
                                                                     ["cost.kind=none"])])
    match: str = "cost"  # the variant whose parameters the random and hand-designed rows match

    def __post_init__(self):
        names = [v.name for v in self.variants]
        if not names or len(set(names)) != len(names):
            raise ConfigError(f"search.variants: give at least one, with distinct names (got {names})")
        if self.match not in names:
            raise ConfigError(f"search.match = {self.match!r}: not a variant ({', '.join(names)})")


@dataclass
class RandomSection:
    count: int = 5  # random genotypes (rows)
    seed: int = 0  # seed of the random genotypes
    tolerance: float = 0.10  # |params / matched params - 1| <= tolerance
    max_draws: int = 1_000_000  # draws before giving up on finding `count` matched genotypes

    def __post_init__(self):
        check_min("random", self, count=0, seed=0, tolerance=0.0, max_draws=1)


@dataclass
class BaselineSection:
    published: str | None = "dlsr_x2"  # a published genotype, at the space's width and depth (null: no row)
    hand: str | None = "rfdn_c32_x2"  # a hand-designed genotype, at the width that matches parameters


@dataclass
class EvalSection:
    sets: list[str] = field(default_factory=lambda: ["Set5", "Set14", "B100"])  # names under data/, or folders
    cost_input: tuple[int, int] = (360, 640)  # LR (H, W) of MACs and latency: a 1280x720 output at x2
    latency_repeats: int = 5  # timed forward passes per latency (median)
    latency_threads: int = 1  # torch CPU threads of the latency measurement
    proxy_batches: int = 8  # validation batches of the supernet's loss per genotype

    def __post_init__(self):
        check_min("eval", self, latency_repeats=1, latency_threads=1, proxy_batches=1)
        if not self.sets:
            raise ConfigError("eval.sets: give at least one benchmark set")


@dataclass
class StudyConfig:
    recipe: RecipeConfig = field(default_factory=RecipeConfig)
    search: SearchSection = field(default_factory=SearchSection)
    random: RandomSection = field(default_factory=RandomSection)
    baselines: BaselineSection = field(default_factory=BaselineSection)
    eval: EvalSection = field(default_factory=EvalSection)
    notes: str | None = None  # a markdown file (repo-relative) included as the doc's analysis section


def load_study_config(path: str | Path, overrides: list[str] = ()) -> StudyConfig:
    return load_config(StudyConfig, path, list(overrides), PRESETS)


def search_config(cfg: StudyConfig, variant: VariantConfig, threads: int, device: str) -> SearchConfig:
    sets = [*variant.set, f"run.threads={threads}", f"run.device={device}"]
    return load_config(SearchConfig, cfg.search.config, sets, CONFIGS / "search")


def train_config(cfg: StudyConfig, genotype_file: Path, scale: int, seed: int) -> TrainConfig:
    """The recipe for one row and seed: the preset with this student, no validation during training (the
    study scores the final EMA weights itself), the study's budget and save cadence."""
    r = cfg.recipe
    base = load_config(TrainConfig, r.config, [], CONFIGS / "train")
    if r.kd == "none":
        base = without_kd(base)
    return dataclasses.replace(
        base, student=StudentConfig(genotype=str(genotype_file.resolve()), scale=scale),
        val=dataclasses.replace(base.val, data=[]),
        schedule=dataclasses.replace(base.schedule, warmup_steps=min(base.schedule.warmup_steps, r.steps // 10)),
        loop=dataclasses.replace(base.loop, steps=r.steps, seed=seed, save_every=r.save_every,
                                 log_every=min(r.log_every, r.steps)))


# --- the runs (each in a worker process) -------------------------------------------------------------------------


class SearchLog:
    """The search callback of a study: a log line per logged step, metrics.jsonl (as tools/search.py writes
    it) and the search's wall time so far (search_time.json, kept across resumes)."""

    def __init__(self, label: str, out: Path):
        self.label, self.out, self.t0, self.prior = label, out, time.perf_counter(), 0.0
        self.timing = out / "search_time.json"

    def seconds(self) -> float:
        return self.prior + time.perf_counter() - self.t0

    def __call__(self, event: str, info: dict) -> None:
        if event == "start":
            start_metrics(self.out / METRICS, info["step"] if info["resumed"] else None)
            if info["resumed"] and self.timing.exists():
                self.prior = float(json.loads(self.timing.read_text())["seconds"])
            log.info(f"[{self.label}] {'resumed at step ' + str(info['step']) if info['resumed'] else 'started'}: "
                     f"{info['total_steps']} steps ({info['batches_per_epoch']} per epoch)")
        elif event == "step":
            from search import metrics_record

            with open(self.out / METRICS, "a") as f:
                f.write(json.dumps(metrics_record(info)) + "\n")
            cost = f"  E[{info['cost_unit']}] {info['expected_cost']:.4g}" if "expected_cost" in info else ""
            log.info(f"[{self.label}] step {info['step']}/{info['total_steps']}  loss {info['loss']:.4f}  "
                     f"tau {info['tau']:.3g}{cost}  {info['genotype']}  ({info['sec_per_step']:.2f} s/step)")
        elif event == "checkpoint":
            tmp = self.timing.with_name(self.timing.name + ".tmp")
            tmp.write_text(json.dumps({"step": info["step"], "seconds": self.seconds()}))
            os.replace(tmp, self.timing)
        elif event == "collapse":
            log.warning(f"[{self.label}] step {info['step']}: {info['message']}")


def _same_search(saved: dict, new: dict) -> bool:
    try:
        check_resume_config(saved, new, "")
    except CheckpointError:
        return False
    return True


def search_task(name: str, label: str, scfg: SearchConfig, out: Path, threads: int, overwrite: bool = False,
                stop_at: int | None = None) -> dict | None:
    """Run (or resume, or reuse) one search; its row (genotype, parameters, collapse report), or None when
    stopped before the end."""
    torch.set_num_threads(threads)
    new = to_dict(scfg)
    done = out / RESULT
    if done.exists():
        row = json.loads(done.read_text())
        if _same_search(row.get("config", {}), new):
            log.info(f"[{label}] finished before, reused ({done})")
            return row
    outputs = SEARCH_OUTPUTS + (REPORT, METRICS, RESULT, "search_time.json")
    with claim_run_dir(out, outputs=outputs, resume=True, tool="search"):
        ckpt = out / CHECKPOINT
        resume = ckpt.exists()
        if resume and not _same_search(load_file(ckpt)["config"], new):
            if not overwrite:
                raise ValueError(f"{out} holds a search with another config; pass --overwrite to replace it")
            for o in outputs:
                (out / o).unlink(missing_ok=True)
            resume = False
        callback = SearchLog(label, out)
        result = run_search(scfg, out, device=scfg.run.device, resume=resume, stop_at=stop_at, callback=callback)
        if result.status != "finished":
            log.info(f"[{label}] {result.status} at step {result.step}/{result.total_steps}")
            return None
        g, rep = result.genotype, result.report
        row = {"variant": name, "label": label, "genotype": g.to_dict(), "params": genotype_params(scfg.space, g),
               "steps": result.step, "search_s": callback.seconds(), "verdict": rep["verdict"],
               "decided": rep["decided"], "degenerate": rep["degenerate"], "summary": rep["summary"],
               "edges": [{k: e[k] for k in ("edge", "op", "p_top", "p_second", "entropy", "decided")}
                         for e in rep["edges"]],
               "links": rep["links"], "metrics": result.metrics, "config": new}
        write_row(out, row)
        log.info(f"[{label}] finished: {row['params']:,} parameters, {rep['verdict']}")
        return row


def train_task(row: str, label: str, seed: int, tcfg: TrainConfig, run_dir: Path, sets: list[str], threads: int,
               device: str = "cpu", overwrite: bool = False, stop_after: int | None = None) -> dict | None:
    """Train (or resume, or reuse) one row and seed, and score its final weights; None when stopped early."""
    torch.set_num_threads(threads)
    t_run = time.perf_counter()
    found = finished_row(run_dir, tcfg)
    if found is not None:
        log.info(f"[{label} seed {seed}] finished before, reused")
        return found
    ck = train_or_resume(tcfg, run_dir, f"{label} seed {seed}", device, overwrite=overwrite, stop_after=stop_after)
    if int(ck["step"]) < tcfg.loop.steps:
        return None
    train_s = float(ck["train_state"]["train_s"])
    model, _ = load_checkpoint_model(run_dir / "last.pt", device)
    t0 = time.perf_counter()
    result = {"row": row, "seed": seed, "steps": int(ck["step"]), "train_s": train_s,
              "s_per_step": train_s / max(1, int(ck["step"])), "params": count_params(model),
              "sets": score(model, benchmark_sets(sets, tcfg.student.scale), device),
              "genotype": ck["spec"]["genotype"], "config": to_dict(tcfg)}
    result["eval_s"] = time.perf_counter() - t0
    result["run_s"] = time.perf_counter() - t_run
    write_row(run_dir, result)
    log.info(f"[{label} seed {seed}] mean PSNR-Y {mean_psnr(result):.3f} dB ({train_s:.0f} s of training, "
             f"{result['s_per_step']:.3f} s/step)")
    return result


# --- the rows ----------------------------------------------------------------------------------------------------


@dataclass
class Row:
    name: str
    label: str
    kind: Literal["searched", "random", "published", "hand"]
    needs: tuple[str, ...] = ()  # search variants that must finish first


def genotype_hash(g: Genotype) -> str:
    return hashlib.sha256(json.dumps(g.to_dict(), sort_keys=True).encode()).hexdigest()[:8]


def used_ops(g: Genotype) -> list[str]:
    """The ops a genotype's cells use (not its declared op set)."""
    return [op for k in range(1, g.num_cells + 1) for op in g.cell_ops(k)]


def describe_genotype(g: Genotype) -> str:
    cells = "/".join(g.cell) if g.cell is not None else " | ".join("/".join(c) for c in g.cells)
    links = ", ".join(f"{k}←{a},{b}" for k, (a, b) in enumerate(g.inputs, start=3))
    return f"C={g.channels}: {cells}" + (f"; {links}" if links else "")


def at_width(g: Genotype, channels: int, num_cells: int, skip: str) -> Genotype:
    """`g` at this width and depth (its first cells and their links), with `skip`, on [0, 1]."""
    if g.num_cells < num_cells:
        raise ConfigError(f"the genotype has {g.num_cells} cells; the study's space has {num_cells}")
    changes = dict(channels=channels, num_cells=num_cells, inputs=g.inputs[:max(num_cells - 2, 0)], skip=skip,
                   rgb_range=1.0, version=VERSION)
    if g.cells is not None:
        changes["cells"] = g.cells[:num_cells]
    return dataclasses.replace(g, **changes)


def matched_width(g: Genotype, target: float) -> Genotype:
    """`g` at the even width whose parameter count is closest to `target` (parameters grow with the width)."""
    tried = []
    for c in range(4, 1025, 2):
        tried.append((abs(count_params(DLSRNet(dataclasses.replace(g, channels=c))) - target), c))
        if len(tried) > 1 and tried[-1][0] > tried[-2][0]:
            break
    return dataclasses.replace(g, channels=min(tried)[1])


class Study:
    """The plan (rows and their genotypes, resolved as the searches finish), the scheduling and the report."""

    def __init__(self, cfg: StudyConfig, out: Path, args):
        self.cfg, self.out, self.args = cfg, out, args
        self.search_cfgs = {v.name: search_config(cfg, v, args.threads, args.device) for v in cfg.search.variants}
        spaces = {json.dumps(to_dict(s.space), sort_keys=True) for s in self.search_cfgs.values()}
        if len(spaces) != 1:
            raise ConfigError("search.variants: the variants must search the same space (a --set changed space.*)")
        self.space = next(iter(self.search_cfgs.values())).space
        self.searches: dict[str, dict] = {}  # variant -> its finished row
        self.rows = self._plan()
        self.random_record: dict | None = None
        self._genotypes: dict[str, Genotype] = {}

    def _plan(self) -> list[Row]:
        cfg, m = self.cfg, self.cfg.search.match
        rows = [Row(f"searched_{v.name}", v.label, "searched", (v.name,)) for v in cfg.search.variants]
        if cfg.baselines.hand:
            rows.append(Row("hand", f"hand-designed ({cfg.baselines.hand}'s cell)", "hand", (m,)))
        if cfg.baselines.published:
            rows.append(Row("published", f"published ({cfg.baselines.published})", "published"))
        rows += [Row(f"random_{i + 1}", f"random {i + 1}", "random", (m,)) for i in range(cfg.random.count)]
        return rows

    # genotypes ---------------------------------------------------------------------------------------------------

    def ready(self, row: Row) -> bool:
        return all(v in self.searches for v in row.needs)

    def genotype(self, row: Row) -> Genotype:
        if row.name not in self._genotypes:
            self._genotypes[row.name] = self._resolve(row)
        return self._genotypes[row.name]

    def _resolve(self, row: Row) -> Genotype:
        s, cfg = self.space, self.cfg
        if row.kind == "searched":
            return validate(self.searches[row.needs[0]]["genotype"], f"search {row.needs[0]}")
        target = self.searches[cfg.search.match]["params"] if row.needs else None
        if row.kind == "hand":
            g = at_width(load_genotype(cfg.baselines.hand), s.channels, s.num_cells, s.skip)
            return matched_width(g, target)
        if row.kind == "published":
            g = at_width(load_genotype(cfg.baselines.published), s.channels, s.num_cells, s.skip)
            return dataclasses.replace(g, ops=tuple(s.ops)) if set(used_ops(g)) <= set(s.ops) else g
        return self.random_sample(target)[int(row.name.split("_")[1]) - 1]

    def random_sample(self, target: float) -> list[Genotype]:
        """The random rows, sampled once (random.json records them and the draws; it is reused)."""
        r = self.cfg.random
        searched = validate(self.searches[self.cfg.search.match]["genotype"], "search")
        key = {"target": target, "tolerance": r.tolerance, "seed": r.seed, "count": r.count,
               "space": to_dict(self.space), "excluded": [searched.to_dict()]}
        path = self.out / "random.json"
        if path.exists():
            rec = json.loads(path.read_text())
            if {k: rec.get(k) for k in key} == key:
                self.random_record = rec
                return [validate(g, str(path)) for g in rec["genotypes"]]
        t0 = time.perf_counter()
        res = sample_matched(self.space, target, r.tolerance, r.count, r.seed, max_draws=r.max_draws,
                             exclude=[searched])
        self.random_record = {**key, "draws": res.draws, "accepted": len(res.genotypes), "params": list(res.params),
                              "genotypes": [g.to_dict() for g in res.genotypes], "seconds": time.perf_counter() - t0}
        path.write_text(json.dumps(self.random_record, indent=2) + "\n")
        log.info(f"random genotypes: {len(res.genotypes)} accepted of {res.draws} drawn (parameters within "
                 f"{r.tolerance:.0%} of {target:,.0f})")
        return list(res.genotypes)

    def genotype_file(self, row: Row) -> Path:
        g = self.genotype(row)
        path = self.out / "genotypes" / f"{row.name}-{genotype_hash(g)}.yaml"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            save_genotype(g, path)
        return path

    # scheduling --------------------------------------------------------------------------------------------------

    def tasks(self) -> list[tuple[str, tuple]]:
        """(name, needs) in the order they are started: the searches, then the rows the verdict needs first (the
        matched search's genotype and the random ones), then the published and hand-designed genotypes and the
        other searches' (so an unfinished study already answers its question); all seeds of a row together (so
        the seed noise is measured early)."""
        first = {"searched": 0, "random": 1, "published": 2, "hand": 3}
        match = f"searched_{self.cfg.search.match}"
        rows = sorted(self.rows, key=lambda r: (first[r.kind] if r.kind != "searched" or r.name == match else 4))
        out = [(f"search:{v.name}", ()) for v in self.cfg.search.variants]
        out += [(f"train:{row.name}:{seed}", row.needs) for row in rows for seed in self.cfg.recipe.seeds]
        return out

    def submit(self, workers, name: str) -> Future:
        a = self.args
        if name.startswith("search:"):
            v = next(v for v in self.cfg.search.variants if v.name == name.split(":")[1])
            return workers.submit(search_task, v.name, v.label, self.search_cfgs[v.name], self.out / "search" / v.name,
                                  a.threads, a.overwrite, a.stop_at)
        _, row_name, seed = name.split(":")
        row = next(r for r in self.rows if r.name == row_name)
        tcfg = train_config(self.cfg, self.genotype_file(row), self.space.scale, int(seed))
        return workers.submit(train_task, row.name, row.label, int(seed), tcfg,
                              self.out / "train" / row.name / f"seed{seed}", self.cfg.eval.sets, a.threads,
                              a.device, a.overwrite, a.stop_at)

    def run(self) -> tuple[dict[str, dict], dict[str, str]]:
        """Run every task (`jobs` at once, each as soon as what it needs has finished); (finished rows by task
        name, errors by task name)."""
        pending, running = self.tasks(), {}
        results: dict[str, dict] = {}
        errors: dict[str, str] = {}
        with pool(self.args.jobs) as workers:
            while pending or running:
                blocked = set()
                for name, needs in list(pending):
                    if len(running) >= self.args.jobs:
                        break
                    if any(f"search:{v}" in errors or (f"search:{v}" in results and results[f"search:{v}"] is None)
                           for v in needs):
                        pending.remove((name, needs))
                        errors[name] = f"skipped: the search it needs ({', '.join(needs)}) did not finish"
                        continue
                    if not all(v in self.searches for v in needs):
                        blocked.add(name)
                        continue
                    pending.remove((name, needs))
                    try:
                        running[self.submit(workers, name)] = name
                    except (ValueError, OSError) as e:
                        errors[name] = str(e)
                        log.error(f"{name}: {e}")
                if not running:
                    if pending and blocked:
                        raise RuntimeError(f"nothing can start: {sorted(blocked)} wait on searches that never ran")
                    continue
                finished, _ = wait(list(running), return_when=FIRST_COMPLETED)
                for f in finished:
                    name = running.pop(f)
                    try:
                        results[name] = f.result()
                    except Exception as e:  # one failed run does not stop the study; it is reported as missing
                        errors[name] = f"{type(e).__name__}: {e}"
                        log.error(f"{name} failed: {errors[name]}")
                        continue
                    if name.startswith("search:") and results[name] is not None:
                        self.searches[name.split(":")[1]] = results[name]
        return results, errors

    def collect(self) -> dict[str, dict]:
        """--report-only: the finished searches and runs on disk (nothing is trained)."""
        results = {}
        for v, scfg in self.search_cfgs.items():
            path = self.out / "search" / v / RESULT
            if path.exists() and _same_search(json.loads(path.read_text()).get("config", {}), to_dict(scfg)):
                self.searches[v] = results[f"search:{v}"] = json.loads(path.read_text())
        for name, needs in self.tasks():
            if name.startswith("train:") and all(v in self.searches for v in needs):
                _, row_name, seed = name.split(":")
                row = next(r for r in self.rows if r.name == row_name)
                tcfg = train_config(self.cfg, self.genotype_file(row), self.space.scale, int(seed))
                found = finished_row(self.out / "train" / row_name / f"seed{seed}", tcfg)
                if found is not None:
                    results[name] = found
        return results

    # measurements in this process (after the runs) -------------------------------------------------------------

    def cost(self, row: Row, measure_latency: bool) -> dict:
        """Parameters, MACs and CPU latency of the row's network at eval.cost_input (cached per genotype)."""
        g, e = self.genotype(row), self.cfg.eval
        path = self.out / "cost" / f"{row.name}-{genotype_hash(g)}.json"
        key = {"input": list(e.cost_input), "threads": e.latency_threads, "repeats": e.latency_repeats}
        if path.exists():
            rec = json.loads(path.read_text())
            if rec.get("key") == key and (rec.get("latency_ms") is not None or not measure_latency):
                return rec
        model = DLSRNet(g).eval()
        x = torch.rand(1, 3, *e.cost_input)
        rec = {"key": key, "params": count_params(model), "macs": count_flops(model, x)["macs"], "latency_ms": None}
        if measure_latency:
            lat = latency(model, x, warmup=1, repeats=e.latency_repeats, threads=e.latency_threads)
            rec.update(latency_ms=1000 * lat["median_s"], latency_min_ms=1000 * lat["min_s"],
                       loadavg=os.getloadavg()[0], measured=datetime.datetime.now().isoformat(timespec="seconds"))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(rec, indent=2) + "\n")
        return rec

    def proxy(self, rows: list[Row]) -> dict:
        """Per finished search: the trained supernet's validation loss of each row genotype in its space."""
        path = self.out / "proxy.json"
        cache = json.loads(path.read_text()) if path.exists() else {}
        out = {}
        for v in self.searches:
            fits = [r for r in rows if self._in_space(self.genotype(r))]
            keys = [f"{r.name}-{genotype_hash(self.genotype(r))}" for r in fits]
            have = cache.get(v, {})
            if any(k not in have for k in keys):
                search = load_search(self.out / "search" / v, self.search_cfgs[v])
                todo = [(k, r) for k, r in zip(keys, fits) if k not in have]
                losses = supernet_losses(search, [self.genotype(r) for _, r in todo], self.cfg.eval.proxy_batches)
                have.update({k: loss for (k, _), loss in zip(todo, losses)})
                cache[v] = have
                path.write_text(json.dumps(cache, indent=2) + "\n")
            out[v] = {r.name: have[k] for k, r in zip(keys, fits)}
        return out

    def _in_space(self, g: Genotype) -> bool:
        s = self.space
        return (g.channels, g.num_cells) == (s.channels, s.num_cells) and set(used_ops(g)) <= set(s.ops) and (
            g.cell is not None or not s.shared_alphas)

    def references(self) -> dict:
        path = self.out / "references.json"
        sets = list(self.cfg.eval.sets)
        if path.exists():
            rec = json.loads(path.read_text())
            if rec.get("sets") == sets:
                return rec["scores"]
        scores = {"bicubic": bicubic_scores(benchmark_sets(sets, self.space.scale))}
        path.write_text(json.dumps({"sets": sets, "scores": scores}, indent=2) + "\n")
        return scores


# --- main --------------------------------------------------------------------------------------------------------


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="study config YAML or a preset name of configs/study/")
    p.add_argument("--out", type=Path, default=Path("runs/study"), help="run folders (searches, trainings, caches)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a study config key")
    p.add_argument("--doc", type=Path, default=DOC, help="markdown report (+ .png plot)")
    p.add_argument("--json", type=Path, help="all numbers (default: the --doc path with .json)")
    p.add_argument("--jobs", type=int, default=1, help="runs at once, each in its own process")
    p.add_argument("--threads", type=int, default=1, help="torch threads per run")
    p.add_argument("--device", default="cpu", help="cpu, cuda, ... (every search, training and evaluation)")
    p.add_argument("--shared", type=Path, help=f"folder with data/ and teachers/ (default ${SHARED_VAR} or ../shared)")
    p.add_argument("--stop-at", type=int, metavar="STEP", help="stop every run at this step (checkpointed)")
    p.add_argument("--report-only", action="store_true", help="train nothing: write the doc of what has finished")
    p.add_argument("--overwrite", action="store_true", help="replace run folders that hold runs with another config")
    return p.parse_args(argv)


def _sessions(out: Path, start: float, wall: float) -> list[dict]:
    path = out / "sessions.json"
    sessions = json.loads(path.read_text()) if path.exists() else []
    sessions.append({"start": datetime.datetime.fromtimestamp(start).isoformat(timespec="seconds"), "wall_s": wall,
                     "loadavg": os.getloadavg()[0]})
    path.write_text(json.dumps(sessions, indent=2) + "\n")
    return sessions


def recipe_text(cfg: StudyConfig) -> str:
    t = load_config(TrainConfig, cfg.recipe.config, [], CONFIGS / "train")
    data = " + ".join(Path(p).name for p in ([t.data.train] if isinstance(t.data.train, str) else t.data.train))
    return (f"{data}, HR patches {t.data.gt_size}, batch {t.data.batch_size}, {t.optim.name} {t.optim.lr:g}, "
            f"{min(t.schedule.warmup_steps, cfg.recipe.steps // 10)} warm-up steps then {t.schedule.name}, "
            f"gradient clipping {t.optim.grad_clip:g}, EMA {t.optim.ema:g}")


def search_summary(study: Study, v: VariantConfig, row: dict) -> dict:
    """A search's row for the doc: its edges with the tau = 1 preference from the checkpoint's raw alphas."""
    ck = load_file(study.out / "search" / v.name / CHECKPOINT)
    alphas = ck["state_dict"]["alphas"].double().reshape(-1, len(study.space.ops))
    p1 = torch.softmax(alphas, dim=-1)
    ops = list(study.space.ops)
    edges = []
    for e, p in zip(row["edges"], p1):
        i = ops.index(e["op"])
        q = p.clone()
        q[i] = -1
        j = int(q.argmax())
        edges.append({**e, "p_top_tau1": float(p[i]), "second_tau1": ops[j], "p_second_tau1": float(p[j])})
    sets = " ".join(f"--set {s}" for s in v.set)
    return {**{k: row[k] for k in ("label", "params", "steps", "search_s", "verdict", "decided", "degenerate",
                                   "links", "genotype")},
            "edges": edges, "tau_end": study.search_cfgs[v.name].arch.tau_end,
            "history": history_summary(study.out / "search" / v.name / HISTORY, ops),
            "command": f"python tools/search.py --config {study.cfg.search.config} {sets}".strip()}


def history_summary(path: Path, ops: list[str]) -> dict:
    """From alpha_history.jsonl: the mean size of the loss and the cost gradient on alpha over the arch phase,
    how often the argmax ops changed during it, and the step from which they stayed the final ones."""
    lines = read_jsonl(path)
    seq = [(e["step"], tuple(ops[int(torch.tensor(e["alpha"]).reshape(-1, len(ops))[i].argmax())]
                             for i in range(torch.tensor(e["alpha"]).reshape(-1, len(ops)).shape[0])))
           for e in lines]
    arch = [e for e in lines if e.get("arch_steps")]

    def norm(key: str) -> float | None:
        vals = [float(torch.tensor(e[key]).norm()) for e in arch if e.get(key) is not None]
        return statistics.fmean(vals) if vals else None

    first_arch = arch[0]["step"] if arch else None
    settled = next((step for i, (step, g) in enumerate(seq) if all(h == seq[-1][1] for _, h in seq[i:])), None)
    changes = sum(a != b for (s, a), (_, b) in zip(seq, seq[1:]) if first_arch is not None and s >= first_arch)
    return {"grad_loss": norm("grad_alpha_loss"), "grad_cost": norm("grad_alpha_cost"), "first_arch_step": first_arch,
            "settled_step": settled, "changes": changes, "logged": len(seq), "last_step": seq[-1][0] if seq else None}


def main(argv=None) -> int:
    args = parse_args(argv)
    setup_runtime(args)
    setup_logging()
    if args.shared:
        os.environ[SHARED_VAR] = str(args.shared.resolve())
    if args.jobs < 1:
        raise ValueError(f"--jobs {args.jobs}: must be >= 1")
    t_start, wall0 = time.time(), time.perf_counter()
    cfg = load_study_config(args.config, args.set)
    json_path = args.json or args.doc.with_suffix(".json")
    check_output_file(args.doc, "--doc")
    check_output_file(json_path, "--json")
    args.out.mkdir(parents=True, exist_ok=True)
    study = Study(cfg, args.out, args)
    if args.report_only:
        results, errors = study.collect(), {}
    else:
        results, errors = study.run()

    # every measurement below is cached in --out, so a re-run rewrites the doc in seconds
    log.info("measuring cost, the supernets' view and the references")
    rows_out = []
    for row in study.rows:
        runs = [results.get(f"train:{row.name}:{s}") for s in cfg.recipe.seeds]
        runs = [r for r in runs if r]
        entry = {"name": row.name, "label": row.label, "kind": row.kind, "runs": runs}
        if study.ready(row):
            g = study.genotype(row)
            entry.update(genotype=g.to_dict(), genotype_text=describe_genotype(g),
                         short=row.label.split(" (")[0].replace("searched, ", ""),
                         **{k: v for k, v in study.cost(row, measure_latency=not args.report_only).items()
                            if k != "key"})
        else:
            entry.update(genotype=None, genotype_text="(search not finished)", short=row.name)
        rows_out.append(entry)
    ready_rows = [r for r in study.rows if study.ready(r)]
    proxy = study.proxy(ready_rows)
    refs = study.references()
    scores = {r["name"]: [mean_psnr(x) for x in r["runs"]] for r in rows_out if r["runs"]}
    sigma = noise_level({r["name"]: r["runs"] for r in rows_out if r["runs"]})
    trained = {k: statistics.fmean(v) for k, v in scores.items()}
    proxy_tau = {}
    for v, losses in proxy.items():
        common = [k for k in losses if k in trained]
        tau = rank_correlation([-losses[k] for k in common], [trained[k] for k in common]) if len(common) > 1 else None
        proxy_tau[v] = {"tau": tau, "n": len(common)}
    missing = [name for name, _ in study.tasks() if results.get(name) is None]
    sessions = _sessions(args.out, t_start, time.perf_counter() - wall0)
    loads = [s["loadavg"] for s in sessions] + [c.get("loadavg", math.nan) for c in rows_out if c.get("loadavg")]
    command = (f"python tools/study.py --config {args.config} --out {args.out} --jobs {args.jobs} "
               f"--threads {args.threads}" + "".join(f" --set {shlex.quote(s)}" for s in args.set)
               + (f" --doc {args.doc}" if args.doc != DOC else "") + (f" --json {args.json}" if args.json else ""))
    teacher = next((t.name for t in load_config(TrainConfig, cfg.recipe.config, [], CONFIGS / "train").teacher), None)
    notes = (REPO / cfg.notes).read_text() if cfg.notes else None
    meta = {"command": command, "date": datetime.date.today().isoformat(), "torch": torch.__version__,
            "cpu": machine_info(args.threads, args.device)["cpu"], "cores": os.cpu_count(), "jobs": args.jobs,
            "threads": args.threads, "wall_s": sum(s["wall_s"] for s in sessions), "sessions": len(sessions),
            "first_start": sessions[0]["start"][:10], "load_min": min(loads), "load_max": max(loads),
            "sets": [ds.name for ds in benchmark_sets(cfg.eval.sets, study.space.scale)],
            "scale": study.space.scale, "steps": cfg.recipe.steps,
            "seeds": cfg.recipe.seeds, "kd": cfg.recipe.kd, "teacher": teacher, "recipe": cfg.recipe.config,
            "recipe_text": recipe_text(cfg), "cost_input": list(cfg.eval.cost_input),
            "latency_repeats": cfg.eval.latency_repeats, "latency_threads": cfg.eval.latency_threads,
            "space": to_dict(study.space), "search_config": cfg.search.config, "match": cfg.search.match,
            "match_label": next(v.label for v in cfg.search.variants if v.name == cfg.search.match),
            "plot": args.doc.with_suffix(".png").name, "notes": cfg.notes}
    searches = {v.name: search_summary(study, v, study.searches[v.name]) for v in cfg.search.variants
                if v.name in study.searches}
    out = {"meta": meta, "rows": rows_out, "references": refs, "sigma": sigma,
           "verdicts": verdicts([v.name for v in cfg.search.variants], scores, sigma), "searches": searches,
           "random": study.random_record, "proxy": proxy, "proxy_tau": proxy_tau, "missing": missing,
           "errors": errors, "notes": notes}
    args.doc.parent.mkdir(parents=True, exist_ok=True)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps({k: v for k, v in out.items() if k != "notes"}, indent=2, default=str) + "\n")
    if any(r["runs"] for r in rows_out):
        plot(out, args.doc.with_suffix(".png"))
    args.doc.write_text(render(out) + "\n")
    console.print(args.doc.read_text(), highlight=False, markup=False, emoji=False)
    log.info(f"wrote {args.doc}, {json_path}" + (f"; {len(missing)} run(s) missing" if missing else ""))
    for name, err in errors.items():
        log.error(f"{name}: {err}")
    return 1 if errors else 0


if __name__ == "__main__":
    run_cli(main)
