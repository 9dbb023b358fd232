#!/usr/bin/env python
"""From photographs to a deployable model in one command: search -> derive -> distill -> compress -> evaluate
-> report.

Every stage is the stage's own CLI run with the settings of one pipeline YAML (configs/pipeline/*.yaml) and
writes under OUT/<stage>/:

  search/    tools/search.py: the supernet search (checkpoint, alpha_history.jsonl, metrics.jsonl, genotype.yaml)
  derive/    tools/derive.py: genotype.yaml read off the search, and its collapse report
  distill/   tools/train.py: the derived genotype distilled from the teacher (last.pt, best.pt, metrics.jsonl)
  compress/  tools/compress.py: re-parameterized, pruned and fine-tuned (round_K/, deploy.pt, model.onnx, report.json)
  evaluate/  tools/evaluate.py --json, one file per model: bicubic, the teacher, the distilled and compressed students
  report/    the figures of OUT/report.md and the self-contained OUT/report.html (reporting.build_report)

OUT/summary.json (the report's input, reporting/summary.py) is rewritten after every stage; OUT/config.yaml is
the resolved pipeline config and OUT/pipeline.json the run's state: each stage's status, times (wall and CPU),
exact command and what it computes.

Running the same command again with the same --out resumes: finished stages are skipped and an interrupted
one continues from its last checkpoint (search, distillation, compression rounds, finished evaluations). A
config that changes what a finished (or started) stage computes is refused with an error naming the stage and
key: rerun from that stage with --from STAGE, start again with --overwrite, or choose another --out.
--until STAGE stops after that stage.

Teacher (`teacher.name: auto`): the registry teacher for the scale (`teacher.registry`, e.g. rlfn_s_x2 at x2)
when its weight file is on disk (srcore/weights.py lookup), else one trained here (the distillation config's
pretrain_teacher) and cached; the KD gate of tools/train.py keeps a teacher that does not beat bicubic out of
distillation. The run says which teacher it used and why (log, summary.json teacher_note, report).

Scored weights: the distilled student is distill/last.pt (its final, EMA weights), not best.pt, which the
trainer picks on the very validation images the report scores it on; the compressed student is pruned from
it and fine-tuned without validation. The report says so (summary.json notes).

Examples:
  python tools/pipeline.py --config quickstart --out runs/quickstart      # the main job (README)
  python tools/pipeline.py --config smoke --out runs/smoke --threads 1    # seconds
  python tools/pipeline.py --config quickstart --out runs/q4 --scale 4
  python tools/pipeline.py --config quickstart --out runs/mine --data ~/photos/HR --val ~/bench/Set5 ~/bench/Set14
  python tools/pipeline.py --config quickstart --out runs/q --teacher train     # always train the teacher here
  python tools/pipeline.py --config quickstart --out runs/q --from compress --set compress.rounds=2
  python tools/pipeline.py --config quickstart --out runs/q --until distill
  python tools/pipeline.py --config quickstart --out runs/q --set distill.set='[loop.steps=2000]'
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import os
import resource
import shlex
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import derive as derive_tool
import evaluate as evaluate_tool
import search as search_tool
import train as train_tool
import yaml
from common import CONFIGS, console, run_cli, setup_logging, setup_runtime
from rich.progress import BarColumn, Progress, ProgressColumn, TextColumn, TimeElapsedColumn
from rich.text import Text

from distill.config import TrainConfig
from distill.losses import needs_teacher
from nas.config import SearchConfig
from reporting.build import build_report
from reporting.summary import ModelRecord, RunSummary, StageRecord
from search_spaces.plot import plot_genotype
from srcore.config import ConfigError, check_min, load_config, read_back, to_dict
from srcore.data import SCALES, check_scale, find_layout
from srcore.paths import describe, expand
from srcore.rundir import claim_run_dir
from srcore.weights import WEIGHTS, WeightsError, get_entry, resolve
from srcore.yamlio import safe_load


def _load_tool(name: str):
    """A tools/ script loaded from its file under another module name (tools/compress.py is named like the
    `compress` package, which every stage imports)."""
    spec = importlib.util.spec_from_file_location(f"{name}_cli", Path(__file__).with_name(f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


compress_tool = _load_tool("compress")

STAGES = ("search", "derive", "distill", "compress", "evaluate", "report")
# The distilled student the pipeline compresses and scores: the final weights (EMA), not best.pt, which the
# trainer picks on the validation sets the pipeline reports on (see scored_weights_note)
STUDENT = "last.pt"
STATE, SUMMARY, CONFIG = "pipeline.json", "summary.json", "config.yaml"
OUTPUTS = (STATE, CONFIG, SUMMARY, "report.md", "report.html", *STAGES)  # what the pipeline writes into --out
STATE_FORMAT = "srnas-pipeline"


# ----------------------------------------------------------------------------------------------------
# the config (configs/pipeline/*.yaml)


@dataclass(frozen=True)
class DataSection:
    train: str = "builtin:train"  # training HR images: builtin:train or a folder (HR/, DIV2K *_HR/, or images)
    val: list[str] = field(default_factory=lambda: ["builtin"])  # validation photographs (model choice, KD gate)
    benchmarks: list[str] = field(default_factory=list)  # also scored by the evaluate stage when they exist


@dataclass(frozen=True)
class TeacherSection:
    name: str = "auto"  # auto | train | none | a registered name (rlfn_s_x2) | a zoo architecture (with weights)
    weights: str | None = None  # weight file for a registered name or a zoo architecture
    # auto: the registry teacher of each scale, when its weight file is on disk
    registry: dict[str, str] = field(default_factory=lambda: {"x2": "rlfn_s_x2", "x3": "carn_m", "x4": "rlfn_s_x4"})

    def __post_init__(self):
        for key, name in self.registry.items():
            if key not in {f"x{s}" for s in SCALES}:
                raise ConfigError(f"teacher.registry.{key}: keys are x2, x3, x4")
            if name not in WEIGHTS:
                raise ConfigError(f"teacher.registry.{key} = {name!r}: not registered weights "
                                  f"({', '.join(sorted(WEIGHTS))})")
            if int(key[1:]) not in WEIGHTS[name].scales:
                raise ConfigError(f"teacher.registry.{key} = {name}: those weights are for "
                                  f"x{'/x'.join(map(str, WEIGHTS[name].scales))}")


@dataclass(frozen=True)
class SearchSection:
    config: str = "quickstart"  # configs/search preset or YAML file
    lr_patch: int | None = None  # LR patch side: data.gt_size = lr_patch * scale (null: the preset's gt_size)
    set: list[str] = field(default_factory=list)  # --set overrides of the search config

    def __post_init__(self):
        check_min("search", self, lr_patch=1)


@dataclass(frozen=True)
class DeriveSection:
    method: Literal["argmax", "perturbation"] | None = None  # null: the search config's derive.method
    exclude: list[str] = field(default_factory=list)  # ops the derived genotype may not use


@dataclass(frozen=True)
class DistillSection:
    config: str = "quickstart"  # configs/train preset or YAML file
    lr_patch: int | None = None  # LR patch side: data.gt_size = lr_patch * scale (null: the preset's)
    set: list[str] = field(default_factory=list)  # --set overrides of the distillation config

    def __post_init__(self):
        check_min("distill", self, lr_patch=1)


@dataclass(frozen=True)
class CompressSection:
    enabled: bool = True  # false: skip the stage
    reparam: bool = True  # fuse multi-branch blocks first
    prune_macs: str | None = "0.5x"  # target: a MAC count or a fraction of the network's MACs ("0.5x") ...
    prune_to: float | None = None  # ... or a parameter count ...
    prune_ratio: float | None = None  # ... or a fraction of every group's channels (one target at most)
    rounds: int = 1  # prune + fine-tune rounds
    finetune_steps: int = 200  # per round
    teachers: list[str] = field(default_factory=lambda: ["self"])  # self | teacher (the pipeline's) | none | ...
    importance: str = "taylor"  # channel importance: l1, l2 or taylor
    multiple: int = 4  # widths rounded to a multiple of this
    lr_patch: int | None = None  # fine-tuning LR patch side (null: configs/train/finetune.yaml's gt_size)
    set: list[str] = field(default_factory=list)  # --set overrides of the fine-tune config
    export: list[str] = field(default_factory=lambda: ["onnx"])  # onnx, torchscript
    int8: bool = False  # also an onnxruntime INT8 model
    latency_repeats: int = 3  # timed forward passes per latency (median)

    def __post_init__(self):
        check_min("compress", self, rounds=1, finetune_steps=0, multiple=1, lr_patch=1, latency_repeats=1)
        if sum(v is not None for v in (self.prune_macs, self.prune_to, self.prune_ratio)) > 1:
            raise ConfigError("compress: give at most one of prune_macs, prune_to and prune_ratio")


@dataclass(frozen=True)
class EvaluateSection:
    self_ensemble: bool = False  # x8 geometric self-ensemble
    tile: int = 0  # LR tile size for large images (0: whole images)

    def __post_init__(self):
        check_min("evaluate", self, tile=0)


@dataclass(frozen=True)
class ReportSection:
    crops: int = 2  # crop comparisons per validation set
    latency_repeats: int = 3  # timed forward passes per model (median)
    lr_size: int = 256  # LR side for params/MACs/activations/latency

    def __post_init__(self):
        check_min("report", self, crops=1, latency_repeats=1, lr_size=16)


@dataclass(frozen=True)
class PipelineConfig:
    scale: int = 2  # upscaling factor of every stage: 2, 3 or 4 (--scale)
    data: DataSection = field(default_factory=DataSection)
    teacher: TeacherSection = field(default_factory=TeacherSection)
    search: SearchSection = field(default_factory=SearchSection)
    derive: DeriveSection = field(default_factory=DeriveSection)
    distill: DistillSection = field(default_factory=DistillSection)
    compress: CompressSection = field(default_factory=CompressSection)
    evaluate: EvaluateSection = field(default_factory=EvaluateSection)
    report: ReportSection = field(default_factory=ReportSection)
    # stage -> seconds (the time-left display only); `teacher`: training a teacher here (added to distill's)
    eta_s: dict[str, float] = field(default_factory=dict)

    def __post_init__(self):
        check_scale(self.scale)
        unknown = [k for k in self.eta_s if k not in (*STAGES, "teacher")]
        if unknown:
            raise ConfigError(f"eta_s.{unknown[0]}: not a stage ({', '.join(STAGES)}) or teacher")


def load_pipeline_config(args) -> PipelineConfig:
    """The preset or file, its --set overrides, then the command-line options that set pipeline keys."""
    sets = list(args.set)
    if args.scale is not None:
        sets.append(f"scale={args.scale}")
    if args.data is not None:
        sets.append(f"data.train={_value(args.data)}")
    if args.val is not None:
        sets.append(f"data.val={json.dumps(args.val)}")
    if args.teacher is not None:
        sets.append(f"teacher.name={_value(args.teacher)}")
    if args.teacher_weights is not None:
        sets.append(f"teacher.weights={_value(args.teacher_weights)}")
    return load_config(PipelineConfig, args.config, sets, preset_dir=CONFIGS / "pipeline")


# ----------------------------------------------------------------------------------------------------
# what each stage computes (resolved before any work: a bad key fails now, not after the search)


@dataclass
class Plan:
    cfg: PipelineConfig
    out: Path
    search_sets: list[str]
    search_cfg: SearchConfig
    distill_sets: list[str]
    distill_cfg: TrainConfig

    def identity(self) -> dict[str, dict]:
        """Per stage, what it computes (compared with a previous run in OUT; execution options excluded)."""
        c = self.cfg
        search = {k: v for k, v in to_dict(self.search_cfg).items() if k != "run"}
        distill = to_dict(self.distill_cfg)
        distill["student"]["genotype"] = "derive/genotype.yaml"
        return {"search": search,
                "derive": to_dict(c.derive),
                "distill": {"config": distill, "teacher": to_dict(c.teacher)},
                "compress": to_dict(c.compress),
                "evaluate": {**to_dict(c.evaluate), "val": list(c.data.val), "benchmarks": list(c.data.benchmarks)},
                "report": to_dict(c.report)}


def _value(v: Any) -> str:
    """A --set value that YAML reads back as `v`: plain text when it does, JSON (a YAML subset) otherwise."""
    if isinstance(v, str):
        try:
            if safe_load(v, "value") == v:
                return v
        except ValueError:  # srcore.yamlio.YAMLLoadError
            pass
    return json.dumps(v)


def _patch(lr_patch: int | None, scale: int) -> list[str]:
    return [f"data.gt_size={lr_patch * scale}"] if lr_patch else []


def make_plan(cfg: PipelineConfig, out: Path) -> Plan:
    s = cfg.scale
    check_data(cfg)
    search_sets = [*_patch(cfg.search.lr_patch, s), *cfg.search.set, f"space.scale={s}",
                   f"data.train={_value(cfg.data.train)}"]
    search_cfg = load_config(SearchConfig, cfg.search.config, search_sets, search_tool.PRESETS)
    search_tool.check_sizes(search_cfg)
    genotype = out / "derive" / "genotype.yaml"
    distill_sets = ["student.channels=null", "student.num_cells=null", "student.skip=null",
                    *_patch(cfg.distill.lr_patch, s), *cfg.distill.set,
                    f"student.genotype={_value(str(genotype))}", f"student.scale={s}",
                    f"data.train={_value(cfg.data.train)}", f"val.data={json.dumps(list(cfg.data.val))}"]
    if cfg.teacher.name == "none":
        base = load_config(TrainConfig, cfg.distill.config, distill_sets, train_tool.PRESETS)
        keep = [to_dict(t) for t in base.loss if not needs_teacher(t.kind)]
        if not keep:
            raise ConfigError("teacher.name = none: every loss term of the distillation config needs a teacher")
        distill_sets += [f"loss={json.dumps(keep)}", "teacher=[]", "pretrain_teacher=null"]
    distill_cfg = load_config(TrainConfig, cfg.distill.config, distill_sets, train_tool.PRESETS)
    return Plan(cfg, out, search_sets, search_cfg, distill_sets, distill_cfg)


def check_data(cfg: PipelineConfig) -> None:
    """Training and validation folders must exist (benchmarks may be absent: they are skipped)."""
    folders = ([] if cfg.data.train.startswith("builtin") else [cfg.data.train])
    folders += [v for v in cfg.data.val if not v.startswith("builtin")]
    for f in folders:
        find_layout(f, cfg.scale)  # a one-line DataError naming the folder


def present_benchmarks(cfg: PipelineConfig) -> tuple[list[str], list[str]]:
    """The benchmark folders that exist, and those that do not."""
    have = [b for b in cfg.data.benchmarks if Path(expand(b)).is_dir()]
    return have, [b for b in cfg.data.benchmarks if b not in have]


# ----------------------------------------------------------------------------------------------------
# the teacher


@dataclass
class Teacher:
    kind: str  # registry | named | arch | train | none
    name: str | None = None  # registered name or zoo architecture
    weights: str | None = None  # the weight file found (registry/named/arch)
    checkpoint: str | None = None  # the cached checkpoint of a teacher trained here
    note: str = ""

    @property
    def label(self) -> str:
        if self.kind == "train":
            return "teacher (trained here)"
        return f"teacher {self.name}"


def choose_teacher(plan: Plan, allow_download: bool, cache_dir: Path) -> Teacher:
    """The teacher of the distill stage, and why (see the module docstring)."""
    cfg, s = plan.cfg, plan.cfg.scale
    t = cfg.teacher
    if t.name == "none":
        return Teacher("none", note="none (teacher.name: none): the student is trained on the ground truth alone")
    if t.name in WEIGHTS:
        if s not in get_entry(t.name).scales:
            raise ConfigError(f"teacher {t.name} is for x{'/x'.join(map(str, get_entry(t.name).scales))}, "
                              f"the pipeline is x{s}")
        path = resolve(t.name, t.weights, download_ok=allow_download)
        return Teacher("named", t.name, str(path), note=f"{t.name} ({path}), named by teacher.name / --teacher")
    if t.name not in ("auto", "train"):
        from distill import zoo

        if t.name not in zoo.list_models() or not t.weights:
            raise ConfigError(f"teacher.name = {t.name!r}: expected auto, train, none, registered weights "
                              f"({', '.join(sorted(WEIGHTS))}) or a zoo architecture with teacher.weights")
        return Teacher("arch", t.name, t.weights, note=f"{t.name} with weights {t.weights}, named by teacher.name")
    why = "teacher.name: train (asked for)"
    if t.name == "auto":
        reg = t.registry.get(f"x{s}")
        if reg is None:
            why = f"no registry teacher is configured for x{s} (teacher.registry)"
        else:
            try:
                path = resolve(reg, download_ok=allow_download)
                return Teacher("registry", reg, str(path),
                               note=f"{reg} ({path}): the registry teacher for x{s}, found on disk")
            except WeightsError as e:
                why = f"the registry teacher for x{s} is not on disk ({str(e).split(' and downloading')[0]})"
    pt = plan.distill_cfg.pretrain_teacher
    if pt is None:
        raise ConfigError(f"{why}, and the distillation config has no pretrain_teacher section to train one here: "
                          "add one, name a teacher (--teacher NAME), or use --teacher none")
    path = train_tool.teacher_cache_path(plan.distill_cfg, cache_dir)
    cached = "reused from the cache" if path.exists() else "trained here first"
    return Teacher("train", pt.arch, checkpoint=str(path),
                   note=f"{why}; an {pt.arch} {cached} ({pt.steps} steps on {plan.cfg.data.train}, cached as {path})")


def scored_weights_note(cfg: PipelineConfig) -> str:
    """Which weights the results are for, and why (the report prints it under Run)."""
    val = ", ".join(describe(v) for v in cfg.data.val)
    return (f"Scored weights: the distilled student is its final weights (distill/{STUDENT}, the EMA of the last "
            f"step), not distill/best.pt. The trainer keeps as best.pt the weights of the validation with the "
            f"highest mean PSNR-Y on {val}, the very images this report scores them on, so their score there "
            "would be biased upward by that choice. The compressed student is pruned from the final weights and "
            "fine-tuned without validation (its last weights). The validation images choose nothing else but the "
            "KD gate, a yes/no on the teacher's own score against bicubic.")


def gate_note(distill_dir: Path) -> str:
    """The KD gate's verdict from the first record of the distillation's metrics.jsonl ('' when absent)."""
    path = distill_dir / "metrics.jsonl"
    if not path.is_file():
        return ""
    for line in path.read_text().splitlines()[:3]:
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        for g in rec.get("kd_gate") or []:
            verdict = "clears" if g["passed"] else "does not clear (not used for KD)"
            return (f"KD gate on the validation photographs: teacher {g['teacher_psnr']:.2f} dB, bicubic "
                    f"{g['bicubic_psnr']:.2f} dB ({g['teacher_psnr'] - g['bicubic_psnr']:+.2f} dB): {verdict} "
                    f"the +{g['margin']:g} dB gate")
    return ""


# ----------------------------------------------------------------------------------------------------
# state (OUT/pipeline.json) and the resume rule


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def read_state(out: Path) -> dict | None:
    path = out / STATE
    if not path.is_file():
        return None
    try:
        state = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: not valid JSON ({e.msg}); delete the run with --overwrite") from None
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise ConfigError(f"{path}: not a pipeline state file; delete the run with --overwrite")
    return state


def first_difference(old: Any, new: Any, where: str = "") -> tuple[str, Any, Any] | None:
    """The first dotted key where two JSON-like values differ, with both values (None when equal)."""
    if isinstance(old, dict) and isinstance(new, dict):
        for k in list(old) + [k for k in new if k not in old]:
            d = first_difference(old.get(k), new.get(k), f"{where}.{k}" if where else str(k))
            if d:
                return d
        return None
    return None if old == new else (where or "(the whole config)", old, new)


def comparable(name: str, saved: Any) -> Any:
    """A stage's identity saved by an earlier version, read back through its dataclasses (srcore.config.read_back):
    a key added since, at its default, does not make a finished stage look changed."""
    if not isinstance(saved, dict):
        return saved
    if name == "search":
        d = read_back(SearchConfig, {**saved, "run": {}})
        d.pop("run", None)
        return d
    if name == "distill":
        return {**saved, "config": read_back(TrainConfig, saved.get("config") or {}),
                "teacher": read_back(TeacherSection, saved.get("teacher") or {})}
    if name == "evaluate":
        keep = {k: saved[k] for k in ("val", "benchmarks") if k in saved}
        return {**read_back(EvaluateSection, {k: v for k, v in saved.items() if k not in keep}), **keep}
    cls = {"derive": DeriveSection, "compress": CompressSection, "report": ReportSection}.get(name)
    return read_back(cls, saved) if cls else saved


def check_resume(old: dict, identity: dict, keep: int, out: Path) -> None:
    """Refuse a run whose config changes a stage that was started and is kept (the first `keep` stages: every
    stage, or those before --from)."""
    for name in STAGES[:keep]:
        rec = old["stages"].get(name, {})
        if rec.get("status", "pending") == "pending":
            continue
        d = first_difference(comparable(name, old["identity"].get(name)), identity[name])
        if d:
            key, a, b = d
            raise ConfigError(f"{out} holds a pipeline run whose {name} stage used another config ({key}: {a!r} "
                              f"there, {b!r} now); rerun from that stage with --from {name}, start again with "
                              "--overwrite, or choose another --out")


# ----------------------------------------------------------------------------------------------------
# progress: one line for the whole pipeline above each stage's own bars


class Eta:
    """Time left: each stage's `eta_s` hint, scaled by how this machine compares with the hints so far."""

    def __init__(self, hints: dict[str, float], todo: list[str]):
        self.hints, self.todo = hints, list(todo)
        self.spent: dict[str, float] = {}
        self.current: str | None = None
        self.t_current = 0.0

    def start(self, stage: str) -> None:
        self.current, self.t_current = stage, time.perf_counter()

    def finish(self, stage: str, seconds: float) -> None:
        self.spent[stage] = seconds
        if stage in self.todo:
            self.todo.remove(stage)
        self.current = None

    def speed(self) -> float:
        hinted = [s for s in self.spent if self.hints.get(s)]
        if not hinted:
            return 1.0
        return sum(self.spent[s] for s in hinted) / sum(self.hints[s] for s in hinted)

    def left(self) -> float | None:
        if not self.hints:
            return None
        k = self.speed()
        rest = sum(self.hints.get(s, 0.0) for s in self.todo if s != self.current) * k
        if self.current:
            rest += max(self.hints.get(self.current, 0.0) * k - (time.perf_counter() - self.t_current), 0.0)
        return rest


def eta_hints(eta_s: dict[str, float], teacher: Teacher | None) -> dict[str, float]:
    """Seconds per stage for `Eta`: `eta_s`'s stages, distill's plus `eta_s.teacher` when the teacher is still
    to be trained here (not in the cache yet)."""
    hints = {k: v for k, v in eta_s.items() if k in STAGES}
    if teacher is not None and teacher.kind == "train" and not Path(teacher.checkpoint).exists():
        hints["distill"] = hints.get("distill", 0.0) + eta_s.get("teacher", 0.0)
    return hints


class EtaColumn(ProgressColumn):
    def __init__(self, eta: Eta):
        super().__init__()
        self.eta = eta

    def render(self, task) -> Text:
        left = self.eta.left()
        return Text("left ~" + fmt_time(left) if left is not None else "left: no estimate", style="progress.remaining")


def fmt_time(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 else \
        f"{seconds // 60}:{seconds % 60:02d}"


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


# ----------------------------------------------------------------------------------------------------
# the run


class StageFailed(Exception):
    def __init__(self, rc: int):
        super().__init__(f"exit status {rc}")
        self.rc = rc


class Pipeline:
    def __init__(self, args, plan: Plan, state: dict, log):
        self.args, self.plan, self.cfg, self.out, self.state, self.log = args, plan, plan.cfg, plan.out, state, log
        self.runtime = ["--device", args.device] + (["--threads", str(args.threads)] if args.threads else [])
        self.teacher: Teacher | None = Teacher(**state["teacher"]) if state.get("teacher") else None
        self.chosen: Teacher | None = None  # chosen before the stages (for the time left), used by distill

    # --- files -------------------------------------------------------------------------------------------------
    def rel(self, path: Path | str) -> str:
        p = Path(path)
        try:
            return str(p.relative_to(self.out))
        except ValueError:
            return str(p)

    def save_state(self) -> None:
        _atomic_write(self.out / STATE, json.dumps(self.state, indent=2) + "\n")

    def stage(self, name: str) -> dict:
        return self.state["stages"].setdefault(name, {"status": "pending"})

    def command(self, tool: str, argv: list[str]) -> str:
        return shlex.join(["python", f"tools/{tool}.py", *[a for a in argv if a not in ("--resume", "--overwrite")]])

    @staticmethod
    def continue_flags(folder: Path, checkpoint: str, resume: bool) -> list[str]:
        """A stage CLI's flag: continue from its checkpoint, or start again over leftovers."""
        if resume and (folder / checkpoint).is_file():
            return ["--resume"]
        return ["--overwrite"] if folder.exists() else []

    def call(self, tool: str, main, argv: list[str]) -> None:
        rc = main(argv)
        if rc != 0:
            raise StageFailed(rc)

    # --- stages ------------------------------------------------------------------------------------------------
    def run_search(self, resume: bool) -> dict:
        d = self.out / "search"
        argv = ["--config", self.cfg.search.config, "--out", str(d), "--no-plot", *self.runtime]
        argv += [a for s in self.plan.search_sets for a in ("--set", s)]
        rec = {"command": self.command("search", argv), "checkpoint": self.rel(d / "genotype.yaml"),
               "config": to_dict(self.plan.search_cfg)}
        self.stage("search").update(rec)
        self.call("search", search_tool.main, argv + self.continue_flags(d, "checkpoint.pt", resume))
        return rec

    def run_derive(self, resume: bool) -> dict:
        d = self.out / "derive"
        argv = [str(self.out / "search"), "--out", str(d / "genotype.yaml")]
        if self.cfg.derive.method:
            argv += ["--method", self.cfg.derive.method]
        if self.cfg.derive.exclude:
            argv += ["--exclude", *self.cfg.derive.exclude]
        if self.cfg.derive.method == "perturbation":
            argv += ["--device", self.args.device]
        self.call("derive", derive_tool.main, argv)
        return {"command": self.command("derive", argv), "checkpoint": self.rel(d / "genotype.yaml"),
                "config": to_dict(self.cfg.derive)}

    def run_distill(self, resume: bool) -> dict:
        d = self.out / "distill"
        if self.teacher is None or not resume:
            self.teacher = self.chosen or choose_teacher(self.plan, self.args.allow_download, self.args.cache_dir)
            self.state["teacher"] = dataclasses.asdict(self.teacher)
            self.save_state()
        t = self.teacher
        self.log.info(f"teacher: {t.note}")
        argv = ["--config", self.cfg.distill.config, "--out", str(d), "--cache-dir", str(self.args.cache_dir),
                *self.runtime, "--set", *self.plan.distill_sets]
        if t.kind in ("registry", "named"):
            argv += ["--teacher", t.name] + (["--teacher-weights", self.cfg.teacher.weights]
                                             if t.kind == "named" and self.cfg.teacher.weights else [])
        elif t.kind == "arch":
            argv += ["--teacher", t.name, "--teacher-weights", t.weights]
        if self.args.allow_download:
            argv.append("--allow-download")
        rec = {"command": self.command("train", argv), "checkpoint": self.rel(d / STUDENT),
               "config": to_dict(self.plan.distill_cfg)}
        self.stage("distill").update(rec)
        self.call("train", train_tool.main, argv + self.continue_flags(d, "last.pt", resume))
        gate = gate_note(d)
        self.state["teacher"]["note"] = t.note + (f"; {gate}" if gate else "")
        try:
            from srcore.checkpoint import read_checkpoint

            rec["config"] = dict(read_checkpoint(d / STUDENT).get("config") or rec["config"])
        except (OSError, ValueError):
            pass
        return rec

    def compress_teachers(self) -> list[str]:
        names = []
        for n in self.cfg.compress.teachers:
            if n != "teacher":
                names.append(n)
            elif self.teacher is None or self.teacher.kind == "none":
                continue
            elif self.teacher.kind == "train":
                names.append(self.teacher.checkpoint)
            elif self.teacher.kind in ("registry", "named"):
                names.append(self.teacher.name)
            else:
                raise ConfigError("compress.teachers: 'teacher' cannot name an architecture with its own weight file; "
                                  "use self, or a registered name")
        return names or ["none"]

    def run_compress(self, resume: bool) -> dict:
        c, d = self.cfg.compress, self.out / "compress"
        argv = ["--checkpoint", str(self.out / "distill" / STUDENT), "--out", str(d)]
        argv += ["--reparam"] if c.reparam else []
        if c.prune_macs is not None:
            argv += ["--prune-macs", c.prune_macs]
        elif c.prune_to is not None:
            argv += ["--prune-to", f"{c.prune_to:g}"]
        elif c.prune_ratio is not None:
            argv += ["--prune-ratio", f"{c.prune_ratio:g}"]
        argv += ["--rounds", str(c.rounds), "--finetune-steps", str(c.finetune_steps), "--importance", c.importance,
                 "--teacher", *self.compress_teachers(), "--multiple", str(c.multiple),
                 "--val", *self.cfg.data.val, "--export", ",".join(c.export),
                 "--latency-repeats", str(c.latency_repeats), "--device", self.args.device,
                 "--threads", str(self.args.threads or _torch_threads())]
        argv += ["--int8"] if c.int8 else []
        sets = [*_patch(c.lr_patch, self.cfg.scale), *c.set]
        argv += ["--set", *sets] if sets else []
        rec = {"command": self.command("compress", argv), "checkpoint": self.rel(d / "deploy.pt"),
               "config": to_dict(c)}
        self.stage("compress").update(rec)
        self.call("compress", compress_tool.main, argv + self.continue_flags(d, "options.json", resume))
        try:
            rec["config"] = json.loads((d / "report.json").read_text())["settings"]
        except (OSError, ValueError, KeyError):
            pass
        return rec

    def models(self) -> list[tuple[str, str, str, list[str]]]:
        """(label, kind, eval file stem, tools/evaluate.py model arguments) of each results row that exists so
        far: bicubic, the teacher once chosen, each student once its stage is done."""
        s, t = self.cfg.scale, self.teacher
        rows = [("bicubic", "bicubic", "bicubic", ["--arch", "bicubic", "--scale", str(s), "--bicubic-source", "lr"])]
        if t is not None and t.kind != "none":
            if t.kind == "train":
                args = ["--checkpoint", t.checkpoint]
            else:
                arch = get_entry(t.name).arch if t.kind in ("registry", "named") else t.name
                args = (["--genotype", arch.split(":", 1)[1]] if arch.startswith("genotype:") else ["--arch", arch])
                args += ["--weights", t.weights, "--scale", str(s)]
            rows.append((t.label, "teacher", "teacher", args))
        if self.done("distill"):
            rows.append(("student (distilled)", "student", "distilled",
                         ["--checkpoint", str(self.out / "distill" / STUDENT)]))
        if self.done("compress"):
            rows.append(("student (compressed)", "student", "compressed",
                         ["--checkpoint", str(self.out / "compress" / "deploy.pt")]))
        return rows

    def eval_sets(self) -> list[str]:
        have, missing = present_benchmarks(self.cfg)
        for m in missing:
            self.log.warning(f"benchmark {describe(m)} not found: not scored (set SRNAS_SHARED to the folder holding "
                             "data/)")
        return list(self.cfg.data.val) + have

    def run_evaluate(self, resume: bool) -> dict:
        d = self.out / "evaluate"
        d.mkdir(parents=True, exist_ok=True)
        sets, e = self.eval_sets(), self.cfg.evaluate
        commands = {}
        for label, _, stem, model_args in self.models():
            path = d / f"{stem}.json"
            argv = [*model_args, "--data", *sets, *self.runtime]
            argv += ["--self-ensemble"] if e.self_ensemble and stem != "bicubic" else []
            argv += ["--tile", str(e.tile)] if e.tile and stem != "bicubic" else []
            commands[stem] = self.command("evaluate", argv + ["--json", str(path)])
            if resume and path.is_file():
                self.log.info(f"evaluate: kept {self.rel(path)} ({label})")
                continue
            tmp = d / f".{stem}.json.tmp"
            self.call("evaluate", evaluate_tool.main, argv + ["--json", str(tmp)])
            os.replace(tmp, path)
        self.state["eval_commands"] = commands
        return {"command": " && ".join(commands.values()), "config": {"data": sets, **to_dict(e)}}

    def run_report(self, resume: bool) -> dict:
        r = self.cfg.report
        threads = self.args.threads or _torch_threads()
        cmd = shlex.join(["python", "tools/report.py", str(self.out), "--crops", str(r.crops), "--lr-size",
                          str(r.lr_size), "--latency-repeats", str(r.latency_repeats), "--threads", str(threads)])
        self.stage("report").update({"command": cmd, "config": to_dict(r)})
        self.write_summary(reporting=True)  # the report reads it
        with console.status("report: measuring the models and drawing the figures") as status:
            res = build_report(self.out, max_crops=r.crops, lr_size=r.lr_size, threads=threads,
                               latency_repeats=r.latency_repeats, device=self.args.device,
                               plot_genotype=plot_genotype, command=cmd,
                               log=lambda m: status.update(m))
        for note in res.notes:
            self.log.warning(note)
        self.log.info(f"wrote {res.markdown}, {res.html} and {len(res.pngs)} figures in {self.out / 'report'}")
        return {"command": cmd, "checkpoint": "report.html", "config": to_dict(r)}

    # --- bookkeeping -------------------------------------------------------------------------------------------
    def done(self, name: str) -> bool:
        return self.stage(name).get("status") == "done"

    def write_summary(self, reporting: bool = False) -> None:
        """OUT/summary.json (reporting/summary.py) from the state; `reporting`: the report stage is running
        (it is the one reading the file, and will be done when it has)."""
        stages = []
        for name in STAGES:
            st = self.stage(name)
            status = {"done": "done", "skipped": "skipped", "failed": "failed"}.get(st.get("status"), "not run")
            if reporting and name == "report":
                status = "done"
            stages.append(StageRecord(name, name, status, st.get("command"), st.get("config"), st.get("checkpoint"),
                                      st.get("seconds"), st.get("cpu_seconds")))
        models = []
        for label, kind, stem, model_args in self.models():
            path = self.out / "evaluate" / f"{stem}.json"
            rec: dict[str, Any] = {"label": label, "kind": kind, "stage": {"distilled": "distill",
                                                                            "compressed": "compress"}.get(stem)}
            if kind == "teacher":
                if self.teacher.kind == "train":
                    rec["checkpoint"] = self.teacher.checkpoint
                else:
                    rec["arch"] = model_args[model_args.index("--arch") + 1] if "--arch" in model_args else None
                    rec["weights"] = self.teacher.weights
                    if rec["arch"] is None:  # a genotype teacher (dlsr_x2): the report rebuilds it from its name
                        rec["arch"] = "genotype:" + model_args[model_args.index("--genotype") + 1]
            elif kind == "student":
                rec["checkpoint"] = self.rel(model_args[1])
            if path.is_file():
                rec["eval"] = self.rel(path)
                rec["eval_command"] = self.state.get("eval_commands", {}).get(stem)
            models.append(ModelRecord(**rec))
        teacher_note = self.state.get("teacher", {}).get("note") if self.state.get("teacher") else None
        summary = RunSummary(scale=self.cfg.scale, val=self.eval_sets_quiet(), teacher_note=teacher_note,
                             notes=[scored_weights_note(self.cfg)],
                             stages=stages, models=models)
        _atomic_write(self.out / SUMMARY, json.dumps(summary.to_dict(), indent=2) + "\n")

    def eval_sets_quiet(self) -> list[str]:
        return list(self.cfg.data.val) + present_benchmarks(self.cfg)[0]

    def run(self, start: int, stop: int) -> int:
        runners = {"search": self.run_search, "derive": self.run_derive, "distill": self.run_distill,
                   "compress": self.run_compress, "evaluate": self.run_evaluate, "report": self.run_report}
        todo = [n for n in STAGES[start:stop + 1] if not self.done(n)]
        if "distill" in todo and self.cfg.eta_s.get("teacher"):  # the time left depends on it
            self.chosen = choose_teacher(self.plan, self.args.allow_download, self.args.cache_dir)
        eta = Eta(eta_hints(self.cfg.eta_s, self.chosen), todo)
        columns = (TextColumn("{task.description}", markup=False), BarColumn(), TimeElapsedColumn(), EtaColumn(eta))
        t_all = time.perf_counter()
        with Progress(*columns, console=console, transient=True) as prog:
            task = prog.add_task("pipeline", total=max(len(todo), 1))
            for i, name in enumerate(STAGES):
                st = self.stage(name)
                if i < start or i > stop:
                    continue
                if st.get("status") == "done":
                    self.log.info(f"[{i + 1}/{len(STAGES)}] {name}: done earlier ({fmt_time(st.get('seconds'))}), "
                                  "skipped")
                    continue
                if name == "compress" and not self.cfg.compress.enabled:
                    st.update(status="skipped")
                    self.save_state()
                    continue
                resume = st.get("status") in ("running", "failed", "interrupted")
                if not resume and (self.out / name).exists():
                    shutil.rmtree(self.out / name)  # leftovers of a run this one replaces
                left = eta.left()
                self.log.info(f"[{i + 1}/{len(STAGES)}] {name}: {'continuing' if resume else 'starting'}"
                              + (f" (about {fmt_time(left)} left in all)" if left is not None else ""))
                prog.update(task, description=f"pipeline [{i + 1}/{len(STAGES)}] {name}")
                st.update(status="running", started=time.time())
                st.pop("seconds", None)
                self.save_state()
                eta.start(name)
                t0, c0 = time.perf_counter(), cpu_seconds()
                try:
                    rec = runners[name](resume)
                except StageFailed as e:
                    return self.stopped(name, "interrupted" if e.rc == 130 else "failed", e.rc, t0, c0)
                except KeyboardInterrupt:
                    return self.stopped(name, "interrupted", 130, t0, c0)
                except BaseException:
                    self.stopped(name, "failed", 1, t0, c0, quiet=True)
                    raise
                seconds, cpu = time.perf_counter() - t0, cpu_seconds() - c0
                st.update(rec, status="done", seconds=round(seconds, 2), cpu_seconds=round(cpu, 2),
                          finished=time.time())
                self.save_state()
                self.write_summary()
                eta.finish(name, seconds)
                prog.advance(task)
                self.log.info(f"[{i + 1}/{len(STAGES)}] {name}: done in {fmt_time(seconds)} (CPU {fmt_time(cpu)})")
        self.write_summary()
        self.log.info(f"pipeline: {fmt_time(time.perf_counter() - t_all)} this run; {self.out}")
        self.headline()
        return 0

    def stopped(self, name: str, status: str, rc: int, t0: float, c0: float, quiet: bool = False) -> int:
        st = self.stage(name)
        st.update(status=status, seconds=round(time.perf_counter() - t0, 2),
                  cpu_seconds=round(cpu_seconds() - c0, 2))
        self.save_state()
        self.write_summary()
        if not quiet:
            again = shlex.join(["python", "tools/pipeline.py", *[a for a in self.args.argv
                                                                  if a not in ("--overwrite",)]])
            self.log.warning(f"{name} {'interrupted' if rc == 130 else f'failed (exit status {rc})'}; "
                             f"continue with: {again}")
        return rc

    def headline(self) -> None:
        """The final scores against bicubic (what the README quotes)."""
        scores: dict[str, dict[str, float]] = {}
        for label, _, stem, _ in self.models():
            path = self.out / "evaluate" / f"{stem}.json"
            if path.is_file():
                scores[label] = {r["dataset"]: r["psnr_y"] for r in json.loads(path.read_text())["results"]}
        bic = scores.get("bicubic", {})
        for label, per in scores.items():
            if label == "bicubic":
                continue
            parts = [f"{ds} {v:.3f} dB ({v - bic[ds]:+.3f} vs bicubic)" if ds in bic else f"{ds} {v:.3f} dB"
                     for ds, v in per.items()]
            self.log.info(f"{label}: " + ", ".join(parts))
        if (self.out / "report.html").is_file():
            self.log.info(f"report: {self.out / 'report.html'} (and report.md)")


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


# ----------------------------------------------------------------------------------------------------
# the command line


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="pipeline YAML or preset (configs/pipeline: smoke, quickstart)")
    p.add_argument("--out", type=Path, required=True, help="run folder (a second run with it resumes)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a pipeline key, e.g. --set compress.rounds=2 --set distill.set='[loop.steps=2000]'")
    p.add_argument("--scale", type=int, choices=SCALES, help="upscaling factor of every stage (sets scale)")
    p.add_argument("--data", help="training HR images: a folder (HR/, DIV2K *_HR/, or images) (sets data.train)")
    p.add_argument("--val", nargs="+", metavar="DIR", help="validation folders, or builtin (sets data.val)")
    p.add_argument("--teacher", help="auto (default), train, none, registered weights (rlfn_s_x2) or a zoo "
                                     "architecture with --teacher-weights (sets teacher.name)")
    p.add_argument("--teacher-weights", help="weight file for --teacher (sets teacher.weights)")
    p.add_argument("--allow-download", action="store_true", help="let a missing registered teacher be downloaded")
    p.add_argument("--cache-dir", type=Path, default=Path(os.environ.get("SRNAS_CACHE", "~/.cache/srnas")),
                   help="cache of teachers trained here (default $SRNAS_CACHE or ~/.cache/srnas)")
    p.add_argument("--from", dest="start", choices=STAGES, help="rerun from this stage on (earlier ones are kept)")
    p.add_argument("--until", choices=STAGES, help="stop after this stage")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    p.add_argument("--threads", type=int, help="torch CPU threads for every stage")
    p.add_argument("--resume", action="store_true", help="insist on continuing a run in OUT (the default when "
                                                         "OUT holds one)")
    p.add_argument("--overwrite", action="store_true", help="delete the pipeline run in OUT and start again")
    args = p.parse_args(argv)
    args.argv = list(argv) if argv is not None else sys.argv[1:]
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    setup_runtime(args)
    log = setup_logging()
    if args.overwrite and (args.resume or args.start):
        raise ConfigError(f"{'--resume' if args.resume else '--from'} and --overwrite contradict each other: "
                          "--overwrite starts the whole run again; choose one")
    cfg = load_pipeline_config(args)
    start = STAGES.index(args.start) if args.start else 0
    stop = STAGES.index(args.until) if args.until else len(STAGES) - 1
    if start > stop:
        raise ConfigError(f"--from {args.start} comes after --until {args.until}")
    plan = make_plan(cfg, args.out)
    identity = plan.identity()
    # the lock first (a folder another process is writing is an error naming it), then what the folder holds
    with claim_run_dir(args.out, outputs=OUTPUTS, resume=not args.overwrite, overwrite=args.overwrite,
                       tool="pipeline") as run:
        old = None if args.overwrite else read_state(args.out)
        check_folder(args, old, identity, start)
        if run.removed:
            log.info(f"--overwrite: deleted {', '.join(run.removed)} in {args.out}")
        if run.took_over:
            log.warning(f"{args.out}: took over the lock of pid {run.took_over.get('pid')}, which is no longer running")
        if old is None:
            state = {"format": STATE_FORMAT, "version": 1, "stages": {}}
        else:
            state = old
            log.info(f"{args.out}: continuing the pipeline run there (" + ", ".join(
                f"{n} {state['stages'].get(n, {}).get('status', 'pending')}" for n in STAGES) + ")")
        if args.start:  # --from: that stage and every later one start again
            for name in STAGES[start:]:
                state["stages"][name] = {"status": "pending"}
                if (args.out / name).exists():
                    shutil.rmtree(args.out / name)
        state.update(config=to_dict(cfg), identity=identity)
        if args.start and start <= STAGES.index("distill"):
            state.pop("teacher", None)
        _atomic_write(args.out / STATE, json.dumps(state, indent=2) + "\n")
        _atomic_write(args.out / CONFIG, "# the resolved pipeline config of this run (tools/pipeline.py)\n"
                      + yaml.safe_dump(to_dict(cfg), sort_keys=False, default_flow_style=None, width=110))
        return Pipeline(args, plan, state, log).run(start, stop)


def check_folder(args, old: dict | None, identity: dict, start: int) -> None:
    """What OUT holds against this command: a run to continue (same config for the stages kept), nothing, or
    (with --overwrite) anything; else a one-line error saying what to do."""
    if old is None and not args.overwrite:
        if args.resume:
            raise ConfigError(f"--resume: {args.out} holds no pipeline run ({STATE}) to continue")
        leftovers = [o for o in OUTPUTS if (args.out / o).exists()]
        if leftovers:
            raise ConfigError(f"{args.out} holds {', '.join(leftovers)} but no {STATE}: not a pipeline run this "
                              "version can continue; pass --overwrite to start again, or choose another --out")
    if old is not None:
        check_resume(old, identity, start if args.start else len(STAGES), args.out)
        for name in STAGES[:start]:
            if old["stages"].get(name, {}).get("status") not in ("done", "skipped"):
                raise ConfigError(f"--from {args.start}: the {name} stage has not finished in {args.out}; run "
                                  f"from an earlier stage (or without --from)")
    elif start > 0:
        raise ConfigError(f"--from {args.start}: {args.out} holds no pipeline run whose earlier stages could be kept")


if __name__ == "__main__":
    run_cli(main)
