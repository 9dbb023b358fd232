"""OUT/summary.json: what a pipeline run did, as the report (reporting/build.py) reads it.

The pipeline writes it (`RunSummary(...).to_dict()` as JSON); `load_summary(OUT)` reads it strictly (an
unknown key is a one-line error naming it). Without it, or with the older pipeline summary
({"config", "genotype", "checkpoint", "results"}), `load_summary` infers the same record from the run folder
(the pipeline's layout, or the older train/ + eval.json one):
stages from the folders that exist, configs from the checkpoints (which carry them), the teacher from the
student checkpoint's config; commands are then "not recorded".

    {
      "format": "srnas-run-summary", "version": 1,
      "scale": 2,
      "val": ["builtin", "../shared/data/Set5"],       # tools/evaluate.py --data entries
      "teacher_note": "rlfn_s_x2 from ../shared/teachers: the registry teacher for x2",
      "notes": ["Scored weights: ..."],                 # optional: paragraphs the report prints under Run
      "stages": [                                       # in run order; only "name" is required
        {"name": "search", "dir": "search", "status": "done", "seconds": 95.2, "cpu_seconds": 170.4,
         "command": "python tools/search.py --config quickstart --out runs/q/search",
         "config": {...the resolved config...}, "checkpoint": "search/checkpoint.pt"},
        {"name": "distill", "dir": "train", "status": "done", "command": "...", "config": {...},
         "checkpoint": "train/best.pt"},
        {"name": "compress", "dir": "compress", "status": "not run"},
        {"name": "evaluate", "status": "done", "command": "python tools/evaluate.py ... --json runs/q/eval.json"}
      ],
      "models": [                                       # the rows of the results table, in this order
        {"label": "bicubic", "kind": "bicubic"},
        {"label": "teacher rlfn_s", "kind": "teacher", "arch": "rlfn_s",
         "weights": "../shared/teachers/rlfn_s_x2.pth"},
        {"label": "student (distilled)", "kind": "student", "stage": "distill", "checkpoint": "train/best.pt",
         "eval": "eval.json", "eval_command": "python tools/evaluate.py --checkpoint runs/q/train/best.pt ..."},
        {"label": "student (compressed)", "kind": "student", "stage": "compress",
         "checkpoint": "compress/deploy.pt"}
      ]
    }

Paths are relative to OUT unless absolute. `status` is one of STATUSES; `seconds` is wall time, `cpu_seconds`
user + system CPU time. A model is built from `checkpoint`
(srnas checkpoint, deploy.pt or .onnx: srcore.modelfile) or from `arch` + `weights` (a published file);
`kind: "bicubic"` needs neither. `eval` is a tools/evaluate.py --json file whose per-dataset numbers the
report shows; datasets it lacks are measured by the report itself.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from srcore.checkpoint import CheckpointError, read_checkpoint
from srcore.config import ConfigError, from_dict, to_dict
from srcore.weights import WeightsError, get_entry
from srcore.weights import resolve as resolve_weights

FORMAT = "srnas-run-summary"
VERSION = 1
STATUSES = ("done", "skipped", "failed", "not run")
KINDS = ("bicubic", "teacher", "student")


@dataclass(frozen=True)
class StageRecord:
    name: str  # "search", "distill", "compress", "evaluate", ...
    dir: str | None = None  # its output folder under OUT
    status: str = "done"  # one of STATUSES
    command: str | None = None  # the exact command that reproduces it
    config: dict[str, Any] | None = None  # its resolved config
    checkpoint: str | None = None  # its main output file
    seconds: float | None = None  # wall time
    cpu_seconds: float | None = None  # CPU time (user + system, all threads)

    def __post_init__(self):
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {list(STATUSES)}, got {self.status!r}")


@dataclass(frozen=True)
class ModelRecord:
    label: str  # the row label in the results table
    kind: str  # one of KINDS
    checkpoint: str | None = None  # srnas checkpoint, deploy.pt or .onnx
    arch: str | None = None  # zoo architecture of a published weight file
    weights: str | None = None
    eval: str | None = None  # tools/evaluate.py --json output
    eval_command: str | None = None  # the command that wrote `eval`
    stage: str | None = None  # the stage that produced it

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {list(KINDS)}, got {self.kind!r}")


@dataclass(frozen=True)
class RunSummary:
    scale: int | None = None
    val: list[str] = field(default_factory=list)
    teacher_note: str | None = None
    notes: list[str] = field(default_factory=list)  # what the reader must know (e.g. which weights are scored)
    stages: list[StageRecord] = field(default_factory=list)
    models: list[ModelRecord] = field(default_factory=list)
    format: str = FORMAT
    version: int = VERSION
    inferred: bool = False  # True when read from the folder layout rather than a summary.json in this format

    def to_dict(self) -> dict:
        d = to_dict(self)
        d.pop("inferred")
        return d

    def stage(self, name: str) -> StageRecord | None:
        return next((s for s in self.stages if s.name == name), None)


def resolve(out: Path, path: str | None) -> Path | None:
    """A summary path (relative to OUT unless absolute) as a Path, or None."""
    if not path:
        return None
    p = Path(path)
    return p if p.is_absolute() else out / p


def load_summary(out: str | os.PathLike) -> RunSummary:
    """OUT/summary.json in the format above, or a summary inferred from the run folder."""
    out = Path(out)
    path = out / "summary.json"
    raw: dict = {}
    if path.is_file():
        try:
            raw = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
    if isinstance(raw, dict) and raw.get("format") == FORMAT:
        if raw.get("version") != VERSION:
            raise ConfigError(f"{path}: version {raw.get('version')!r}; this report reads version {VERSION}")
        return from_dict(RunSummary, raw, str(path))
    return infer_summary(out, raw if isinstance(raw, dict) else {})


def _config_of(path: Path) -> dict | None:
    try:
        return dict(read_checkpoint(path).get("config") or {}) or None
    except (CheckpointError, OSError):
        return None


def _first(*paths: Path) -> Path | None:
    return next((p for p in paths if p.is_file()), None)


def infer_summary(out: Path, legacy: dict) -> RunSummary:
    """The summary of a run folder without a summary.json in this format (see the module docstring): the
    pipeline's layout (search/, derive/, distill/, compress/, evaluate/*.json) or the older one (train/,
    eval.json). The pipeline's distilled student is distill/last.pt (tools/pipeline.py STUDENT), the older
    layout's train/best.pt."""
    train_dir = "distill" if (out / "distill").is_dir() else "train"
    search_ckpt = out / "search" / "checkpoint.pt"
    best = _first(out / "distill" / "last.pt") if train_dir == "distill" else None
    best = best or out / train_dir / "best.pt"
    compressed = _first(out / "compress" / "deploy.pt", out / "compress" / "model.onnx")
    search_cfg, train_cfg = _config_of(search_ckpt), _config_of(best)
    scale = None
    if train_cfg and isinstance(train_cfg.get("student"), dict):
        scale = train_cfg["student"].get("scale")
    if scale is None and search_cfg:
        scale = search_cfg.get("space", {}).get("scale")
    for res in legacy.get("results", []):
        scale = scale or res.get("scale")
    val = list((legacy.get("config") or {}).get("evaluate", {}).get("data") or [])
    if not val and train_cfg:
        val = list((train_cfg.get("val") or {}).get("data") or [])
    evals = {stem: _first(out / "evaluate" / f"{stem}.json") for stem in ("distilled", "compressed")}
    evals["distilled"] = evals["distilled"] or _first(out / "eval.json")

    def status(ok: bool) -> str:
        return "done" if ok else "not run"

    def rel(p: Path | None) -> str | None:
        return str(p.relative_to(out)) if p else None

    genotype = _first(out / "derive" / "genotype.yaml")
    stages = [
        StageRecord("search", "search", status((out / "search" / "genotype.yaml").is_file()), config=search_cfg,
                    checkpoint="search/checkpoint.pt" if search_ckpt.is_file() else None),
        *([StageRecord("derive", "derive", "done", checkpoint=rel(genotype))] if genotype else []),
        StageRecord("distill", train_dir, status(best.is_file()), config=train_cfg,
                    checkpoint=rel(best) if best.is_file() else None),
        StageRecord("compress", "compress", status(compressed is not None or (out / "compress" / "report.json")
                                                   .is_file()),
                    checkpoint=rel(compressed)),
        StageRecord("evaluate", None, status(evals["distilled"] is not None)),
    ]
    models = [ModelRecord("bicubic", "bicubic")]
    teacher_note = None
    teachers = (train_cfg or {}).get("teacher") or []
    if teachers and isinstance(teachers[0], dict):
        t = teachers[0]
        pre = (train_cfg or {}).get("pretrain_teacher") or {}
        if t.get("checkpoint"):
            name = pre.get("arch") or "trained here"
            models.append(ModelRecord(f"teacher ({name})", "teacher", checkpoint=t["checkpoint"]))
            teacher_note = f"teacher checkpoint {t['checkpoint']} (from the distillation config)"
        elif t.get("arch"):
            models.append(ModelRecord(f"teacher {t['arch']}", "teacher", arch=t["arch"], weights=t.get("weights")))
            teacher_note = f"teacher {t['arch']} with weights {t.get('weights')} (from the distillation config)"
        elif t.get("name"):
            teacher_note = f"registered teacher {t['name']} (from the distillation config)"
            try:
                entry = get_entry(t["name"])
                if not entry.arch.startswith("genotype:"):
                    models.append(ModelRecord(f"teacher {t['name']}", "teacher", arch=entry.arch,
                                              weights=str(resolve_weights(t["name"], t.get("weights")))))
            except WeightsError as e:
                teacher_note += f"; not measured ({e})"
    if best.is_file():
        models.append(ModelRecord("student (distilled)", "student", checkpoint=rel(best), stage="distill",
                                  eval=rel(evals["distilled"])))
    if compressed is not None:
        models.append(ModelRecord("student (compressed)", "student", checkpoint=rel(compressed),
                                  stage="compress", eval=rel(evals["compressed"])))
    return RunSummary(scale=scale, val=val, teacher_note=teacher_note, stages=stages, models=models, inferred=True)
