"""The run report: OUT/report.md, a self-contained OUT/report.html, and every plot as a PNG under OUT/report/.

    python tools/report.py OUT                 # the pipeline's last stage
    build_report(OUT, plot_genotype=fn)        # library use (tools/report.py passes tools/plot_genotype.py's)

Input: a run folder, described by OUT/summary.json (the contract is `reporting.summary`: stages with their
commands, resolved configs and checkpoints; the models of the results table; the validation data; which
teacher and why) or inferred from the folder's layout when that file is absent or older:

    OUT/search/    genotype.yaml, alpha_history.jsonl (alpha/beta per step), metrics.jsonl (losses per step)
    OUT/train/     metrics.jsonl ("loss/<term>", "val/<set>/psnr_y", "val/psnr_y_mean" per step), best.pt
    OUT/compress/  report.json (per-round rows: a list, or {"rounds": [...]}), */metrics.jsonl (fine-tuning of
                   each round), deploy.pt / model.onnx
    OUT/eval*.json tools/evaluate.py --json output (named by the summary's models; eval.json when inferred)

Sections, each saying "not run" (or what is missing) when its inputs are absent:
  1. the run: scale, teacher and why, every stage with its status and time;
  2. results: one row per model (bicubic, teacher, each stage's student): params, MACs and activations at a
     `lr_size`^2 LR input, CPU latency (median of `latency_repeats`, `threads` threads; wall-clock on a shared
     machine is indicative only), PSNR/SSIM (Y) per dataset, from the model's eval JSON when it has the
     dataset, else measured here with srcore.evaluation exactly as tools/evaluate.py does (whole images,
     bicubic from the RGB LR = `--bicubic-source lr`, what a network sees); plus quality against size;
  3. search: the genotype figure (cell DAG, network graph, alpha/beta evolution) and the search curves;
  4. distillation curves (loss terms, validation PSNR against steps);
  5. compression: the per-round table and each round's fine-tuning curves;
  6. crops: per validation image (at most `max_crops` per set) LR, bicubic, teacher, student(s), HR, zoomed
     where the models' local errors differ most (the window maximising max - min over models of the mean
     absolute Y error);
  7. reproduce: the command of every stage and number, and the resolved config of every stage.
"""
from __future__ import annotations

import json
import math
import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import yaml
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from torch import nn

import compress  # noqa: F401  (registers the compressed-spec transform)
import distill.pretrained  # noqa: F401  (importing distill registers the zoo and its checkpoint builder)
import search_spaces  # noqa: F401  (registers the genotype builder)
from srcore.data import BenchmarkSet, Sample
from srcore.evaluation import SetResult, evaluate_bicubic, evaluate_model
from srcore.metrics import psnr, rgb_to_y

from .document import Doc, to_html, to_markdown
from .summary import ModelRecord, RunSummary, load_summary, resolve

REPORT_DIR = "report"
DPI = 100


# ----------------------------------------------------------------------------------------------------
# reading run files


def read_jsonl(path: Path) -> list[dict]:
    """The JSON objects of a .jsonl file; a torn last line (a killed writer) is skipped."""
    if not path.is_file():
        return []
    out = []
    lines = path.read_text(encoding="utf-8").splitlines()
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            if i == len(lines) - 1:
                continue
            raise ValueError(f"{path}:{i + 1}: not a JSON object") from None
        if isinstance(rec, dict) and isinstance(rec.get("step"), (int, float)):
            out.append(rec)
    return out


def series(records: list[dict]) -> dict[str, list[tuple[float, float]]]:
    """key -> [(step, value)] for every finite number in the records; a step logged twice keeps its last value."""
    by_key: dict[str, dict[float, float]] = {}
    for r in records:
        for k, v in r.items():
            if k in ("step", "epoch") or isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                continue
            by_key.setdefault(k, {})[float(r["step"])] = float(v)
    return {k: sorted(d.items()) for k, d in by_key.items()}


def read_eval(path: Path | None) -> dict[str, dict]:
    """dataset -> result dict of a tools/evaluate.py --json file ({} when absent)."""
    if path is None or not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e.msg})") from None
    return {r["dataset"]: r for r in data.get("results", []) if isinstance(r, dict) and "dataset" in r}


def compress_rounds(out: Path) -> list[dict]:
    """Per-round rows of OUT/compress/report.json (a list, or a dict with "rounds")."""
    path = out / "compress" / "report.json"
    if not path.is_file():
        return []
    data = json.loads(path.read_text())
    rows = data.get("rounds", []) if isinstance(data, dict) else data
    return [r for r in rows if isinstance(r, dict)]


# ----------------------------------------------------------------------------------------------------
# plots (matplotlib Agg canvases only: no pyplot state, no display)


def _figure(w: float, h: float) -> Figure:
    fig = Figure(figsize=(w, h), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, facecolor="white", bbox_inches="tight")
    return path


def plot_curves(records: list[dict], title: str, path: Path) -> Path | None:
    """Loss terms ("loss/*", log scale) and validation PSNR ("val/...psnr...") against step; None if neither."""
    s = series(records)
    losses = {k: v for k, v in s.items() if k.startswith("loss/")}
    vals = {k: v for k, v in s.items() if k.startswith("val/") and "psnr" in k}
    panels = [p for p in (("loss", losses), ("psnr", vals)) if p[1]]
    if not panels:
        return None
    fig = _figure(6.0 * len(panels), 3.6)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (kind, curves) in zip(axes, panels, strict=True):
        for k, pts in sorted(curves.items()):
            xs, ys = zip(*pts, strict=True)
            ax.plot(xs, ys, label=k.split("/", 1)[1], marker="o" if len(xs) < 12 else None, ms=3,
                    lw=2.0 if k.endswith(("total", "mean")) else 1.2)
        if kind == "loss":
            if all(y > 0 for pts in curves.values() for _, y in pts):
                ax.set_yscale("log")
            ax.set_ylabel("loss")
        else:
            ax.set_ylabel("PSNR (dB)")
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, frameon=False)
    fig.suptitle(title, fontsize=11)
    return _save(fig, path)


def plot_rounds(rows: list[dict], path: Path) -> Path | None:
    """Compression rounds: every numeric column against the round index, one small panel each."""
    keys = [k for k in rows[0] if all(isinstance(r.get(k), (int, float)) and not isinstance(r.get(k), bool)
                                      for r in rows)] if rows else []
    keys = [k for k in keys if k not in ("round", "step")]
    if not keys:
        return None
    cols = min(4, len(keys))
    nrows = math.ceil(len(keys) / cols)
    fig = _figure(3.4 * cols, 2.6 * nrows)
    axes = fig.subplots(nrows, cols, squeeze=False)
    x = [r.get("round", i) for i, r in enumerate(rows)]
    for i, k in enumerate(keys):
        ax = axes[i // cols][i % cols]
        ax.plot(x, [r[k] for r in rows], marker="o")
        ax.set_title(k, fontsize=9)
        ax.set_xlabel("round", fontsize=8)
        ax.grid(alpha=0.3)
    for i in range(len(keys), nrows * cols):
        axes[i // cols][i % cols].axis("off")
    fig.suptitle("compression: per round", fontsize=11)
    fig.tight_layout()
    return _save(fig, path)


def plot_quality_vs_size(rows: list[dict], dataset: str, path: Path) -> Path | None:
    """PSNR-Y on `dataset` against parameters (log), bicubic as a horizontal line."""
    pts = [(r["label"], r["params"], r["scores"][dataset]["psnr_y"]) for r in rows
           if r.get("params") and dataset in r["scores"]]
    bic = next((r["scores"][dataset]["psnr_y"] for r in rows if r["kind"] == "bicubic" and dataset in r["scores"]),
               None)
    if not pts:
        return None
    fig = _figure(6.0, 4.0)
    ax = fig.subplots()
    for label, params, value in pts:
        ax.scatter([params], [value], s=40)
        ax.annotate(label, (params, value), textcoords="offset points", xytext=(5, 4), fontsize=8)
    if bic is not None:
        ax.axhline(bic, color="#888", ls="--", lw=1)
        ax.annotate("bicubic", (min(p for _, p, _ in pts), bic), textcoords="offset points", xytext=(0, -12),
                    fontsize=8, color="#555")
    ax.set_xscale("log")
    ax.set_xlabel("parameters")
    ax.set_ylabel(f"PSNR-Y on {dataset} (dB)")
    ax.grid(alpha=0.3, which="both")
    ax.set_title("quality against size", fontsize=11)
    return _save(fig, path)


def _y(img: np.ndarray) -> np.ndarray:
    return rgb_to_y(img) if img.ndim == 3 else img.astype(np.float64)


def choose_crop(gt: np.ndarray, srs: list[np.ndarray], size: int) -> tuple[int, int]:
    """Top-left corner of the size x size window where the models' mean absolute Y errors differ most
    (max over models minus min over models of the window mean); the image centre when they never differ."""
    h, w = gt.shape[:2]
    size = min(size, h, w)
    ref = _y(gt)
    maps = [cv2.blur(np.abs(_y(sr[:h, :w]) - ref), (size, size), borderType=cv2.BORDER_REPLICATE) for sr in srs]
    spread = np.max(maps, axis=0) - np.min(maps, axis=0) if len(maps) > 1 else maps[0]
    half = size // 2
    valid = spread[half:h - (size - half) + 1, half:w - (size - half) + 1]  # window centres fully inside
    if valid.size == 0 or float(valid.max()) <= 0:
        return (h - size) // 2, (w - size) // 2
    cy, cx = np.unravel_index(int(np.argmax(valid)), valid.shape)
    return int(cy), int(cx)


def plot_crops(name: str, sample: Sample, panels: list[tuple[str, np.ndarray]], scale: int, path: Path,
               size: int | None = None) -> Path:
    """The full HR image with the chosen window, then LR / each model / HR zoomed into it, PSNR-Y in titles."""
    gt = sample.gt
    h, w = gt.shape[:2]
    size = size or max(24, min(h, w) // 4) // scale * scale
    y, x = choose_crop(gt, [sr for _, sr in panels], size)
    y, x = y // scale * scale, x // scale * scale
    tiles = [("LR (nearest)", sample.lq[y // scale:(y + size) // scale, x // scale:(x + size) // scale], None)]
    for label, sr in panels:
        tiles.append((label, sr[y:y + size, x:x + size], psnr(sr, gt, scale, test_y_channel=True)))
    tiles.append(("HR", gt[y:y + size, x:x + size], None))
    n = len(tiles) + 1
    fig = _figure(2.3 * n, 2.9)
    axes = fig.subplots(1, n)
    gray = gt.ndim == 2
    axes[0].imshow(gt, cmap="gray" if gray else None, vmin=0, vmax=255)
    axes[0].add_patch(Rectangle((x, y), size, size, fill=False, ec="red", lw=1.5))
    axes[0].set_title(f"{name} ({w}x{h})", fontsize=8)
    for ax, (label, img, value) in zip(axes[1:], tiles, strict=True):
        ax.imshow(img, cmap="gray" if gray else None, vmin=0, vmax=255, interpolation="nearest")
        ax.set_title(label + (f"\n{value:.2f} dB" if value is not None else "\n"), fontsize=8)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    return _save(fig, path)


# ----------------------------------------------------------------------------------------------------
# models: loading, scoring on the validation sets, cost


def load_row_model(rec: ModelRecord, out: Path, scale: int, device: str) -> Any:
    """The network of a results-table row (None for bicubic); errors are one-line exceptions."""
    if rec.kind == "bicubic":
        return None
    if rec.checkpoint:
        from srcore.modelfile import load_model_file

        return load_model_file(resolve(out, rec.checkpoint), device, scale).model
    if rec.arch and rec.weights:
        from distill.pretrained import load_pretrained

        return load_pretrained(rec.arch, str(resolve(out, rec.weights)), scale, device).eval()
    raise ValueError(f"model row '{rec.label}' names neither a checkpoint nor arch + weights")


def eval_command(rec: ModelRecord, out: Path, scale: int, val: list[str]) -> str:
    """The tools/evaluate.py command that reproduces a row's PSNR/SSIM as measured by the report."""
    data = " ".join(val)
    if rec.kind == "bicubic":
        return f"python tools/evaluate.py --arch bicubic --scale {scale} --bicubic-source lr --data {data}"
    if rec.checkpoint:
        return f"python tools/evaluate.py --checkpoint {resolve(out, rec.checkpoint)} --data {data}"
    return (f"python tools/evaluate.py --arch {rec.arch} --weights {resolve(out, rec.weights)} --scale {scale} "
            f"--data {data}")


class _Subset:
    """The first images of a benchmark set, iterable like one (for evaluate_model / evaluate_bicubic)."""

    def __init__(self, name: str, scale: int, samples: list[Sample]):
        self.name, self.scale, self.samples = name, scale, samples

    def __iter__(self):
        return iter(self.samples)

    def __len__(self) -> int:
        return len(self.samples)


def measure_row_cost(model: Any, lr_size: int, threads: int | None, repeats: int, device: str) -> dict:
    """params, MACs, activations (nn.Module only) and latency (any callable) at a (1, 3, lr_size, lr_size) input."""
    from srcore.cost import latency, measure_cost

    res: dict = {}
    if isinstance(model, nn.Module):
        c = measure_cost(model, (1, 3, lr_size, lr_size), device)
        res.update(params=c.params, macs=c.macs, activations=c.activations)
    x = torch.rand(1, 3, lr_size, lr_size, device=device)
    res["latency_s"] = latency(model, x, warmup=1, repeats=repeats, threads=threads)["median_s"]
    return res


# ----------------------------------------------------------------------------------------------------
# the report


@dataclass
class ReportResult:
    markdown: Path
    html: Path
    pngs: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what could not be shown, and why


def _fmt(v: float | None, fmt: str) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, fmt)


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in text).strip("_").lower() or "x"


def build_report(out: str | os.PathLike, *, max_crops: int = 8, lr_size: int = 256, threads: int | None = None,
                 latency_repeats: int = 5, measure: bool = True, device: str = "cpu",
                 plot_genotype: Callable[..., Path] | None = None, command: str | None = None,
                 log: Callable[[str], None] | None = None) -> ReportResult:
    """Write OUT/report.md, OUT/report.html and OUT/report/*.png (see the module docstring)."""
    out = Path(out)
    if not out.is_dir():
        raise ValueError(f"{out}: no such run folder")
    say = log or (lambda _m: None)
    pngs: list[Path] = []
    notes: list[str] = []
    fig_dir = out / REPORT_DIR
    fig_dir.mkdir(parents=True, exist_ok=True)
    summary = load_summary(out)
    scale = summary.scale
    doc = Doc(f"srnas run report: {out.name}")
    command = command or f"python tools/report.py {out}"

    def add_png(p: Path | None, caption: str) -> bool:
        if p is None:
            return False
        pngs.append(p)
        doc.image(p, caption)
        return True

    # 1. the run ------------------------------------------------------------------------------------------
    doc.p(f"Run folder {out} (x{scale if scale else '?'}); report written {time.strftime('%Y-%m-%d %H:%M')} on "
          f"{platform.node() or 'this machine'} ({platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores, torch {torch.__version__}).")
    if summary.inferred:
        doc.p("OUT/summary.json is absent or in an older format: stages, configs and the teacher were inferred "
              "from the run folder and the checkpoints; stage commands were not recorded.")
    doc.h("Run")
    doc.p(f"Teacher: {summary.teacher_note or 'not recorded'}.")
    for note in summary.notes:
        doc.p(note)
    doc.table(["stage", "status", "wall time", "CPU time", "output"],
              [[s.name, s.status, _fmt(s.seconds, ".1f") + (" s" if s.seconds is not None else ""),
                _fmt(s.cpu_seconds, ".1f") + (" s" if s.cpu_seconds is not None else ""),
                s.checkpoint or s.dir or "-"] for s in summary.stages] or [["(none)", "not run", "-", "-", "-"]],
              align="llrrl")

    # 2. results: scores + cost per model -------------------------------------------------------------------
    rows, crops = _score_models(summary, out, max_crops, device, measure, lr_size, threads, latency_repeats,
                                notes, say)
    datasets = list(dict.fromkeys(d for r in rows for d in r["scores"]))
    doc.h("Results")
    if not rows or not datasets:
        doc.p("not run: no evaluated model and no validation data to measure on.")
    else:
        headers = ["model", "params", "MACs (G)", "activations (M)", "CPU latency (ms)"]
        headers += [f"{d} PSNR-Y / SSIM-Y" for d in datasets]
        table = []
        for r in rows:
            cells = [r["label"], _fmt(r.get("params"), ",d"),
                     _fmt(r["macs"] / 1e9 if r.get("macs") is not None else None, ".3f"),
                     _fmt(r["activations"] / 1e6 if r.get("activations") is not None else None, ".2f"),
                     _fmt(r["latency_s"] * 1e3 if r.get("latency_s") is not None else None, ".1f")]
            for d in datasets:
                sc = r["scores"].get(d)
                cells.append("not run" if sc is None else
                             f"{_fmt(sc['psnr_y'], '.3f')} / {_fmt(sc['ssim_y'], '.4f')}" + sc["mark"])
            table.append(cells)
        doc.table(headers, table, note=(
            f"x{scale}. Params, MACs and activations (conv outputs, the NTIRE count) at a 1x3x{lr_size}x{lr_size} "
            f"LR input; latency: median of {latency_repeats} CPU forward passes at that size with "
            f"{threads or torch.get_num_threads()} threads (wall-clock, indicative on a shared machine). "
            "PSNR/SSIM on Y, border = scale. Unmarked scores come from the run's eval JSON; * = measured by "
            "this report (whole images; bicubic from the RGB LR, as --bicubic-source lr)."))
        if datasets:
            add_png(plot_quality_vs_size(rows, datasets[0], fig_dir / "quality_vs_size.png"),
                    f"PSNR-Y on {datasets[0]} against parameters")
    for n in notes:
        doc.p(f"Note: {n}")

    # 3. search -----------------------------------------------------------------------------------------------
    doc.h("Search")
    search = summary.stage("search")
    sdir = resolve(out, search.dir) if search and search.dir else out / "search"
    genotype = sdir / "genotype.yaml"
    derived = summary.stage("derive")  # the pipeline's derive stage: the genotype that was trained
    if derived and derived.checkpoint and resolve(out, derived.checkpoint).is_file():
        genotype = resolve(out, derived.checkpoint)
    if not genotype.is_file():
        doc.p("not run (no search/genotype.yaml).")
    else:
        doc.code(genotype.read_text(), "yaml")
        png = fig_dir / "genotype.png"
        history = sdir / "alpha_history.jsonl"
        drawn = None
        if plot_genotype is not None:
            try:
                drawn = plot_genotype(genotype, png, history if read_jsonl(history) else None, name="genotype")
            except (ValueError, OSError, KeyError) as e:
                notes.append(f"genotype figure: {e}")
        elif (sdir / "genotype.png").is_file():
            png.write_bytes((sdir / "genotype.png").read_bytes())
            drawn = png
        if not add_png(drawn, "the genotype: cell DAG, network graph and the alpha/beta evolution of the search"):
            doc.p("genotype figure: not drawn.")
        if not add_png(plot_curves(read_jsonl(sdir / "metrics.jsonl"), "search", fig_dir / "curves_search.png"),
                       "search: weight-step loss (train), arch-step loss (val) and the cost penalty; PSNR on "
                       "validation patches"):
            doc.p("search curves: not logged (no search/metrics.jsonl).")

    # 4. distillation ------------------------------------------------------------------------------------------
    doc.h("Distillation")
    distill_stage = summary.stage("distill")
    ddir = resolve(out, distill_stage.dir) if distill_stage and distill_stage.dir else out / "train"
    if not add_png(plot_curves(read_jsonl(ddir / "metrics.jsonl"), "distillation", fig_dir / "curves_distill.png"),
                   "distillation: every loss term and the validation PSNR-Y against steps"):
        doc.p("not run (no train/metrics.jsonl).")

    # 5. compression --------------------------------------------------------------------------------------------
    doc.h("Compression")
    comp = summary.stage("compress")
    cdir = resolve(out, comp.dir) if comp and comp.dir else out / "compress"
    rounds = compress_rounds(out) if cdir == out / "compress" else []
    round_logs = sorted(cdir.glob("**/metrics.jsonl")) if cdir.is_dir() else []
    if not rounds and not round_logs:
        doc.p("not run (no compress/report.json).")
    if rounds:
        keys = list(dict.fromkeys(k for r in rounds for k, v in r.items() if not isinstance(v, (dict, list))))
        doc.table(keys, [[_cell(r.get(k)) for k in keys] for r in rounds], align="r" * len(keys))
        add_png(plot_rounds(rounds, fig_dir / "compress_rounds.png"), "compression: per-round values")
    for log_path in round_logs:
        name = log_path.parent.relative_to(cdir).as_posix() if log_path.parent != cdir else "fine-tuning"
        png = fig_dir / f"curves_compress_{_slug(name)}.png"
        add_png(plot_curves(read_jsonl(log_path), f"compression {name}", png),
                f"compression {name}: fine-tuning losses and validation PSNR")

    # 6. crops ----------------------------------------------------------------------------------------------------
    doc.h("Visual comparison")
    if not crops:
        doc.p("not run (no validation images, or no model to compare).")
    for ds_name, items in crops.items():
        for sample, panels in items:
            png = fig_dir / f"crop_{_slug(ds_name)}_{_slug(sample.name)}.png"
            add_png(plot_crops(sample.name, sample, panels, scale, png),
                    f"{ds_name} / {sample.name}: the window where the models' local errors differ most")

    # 7. reproduce -------------------------------------------------------------------------------------------------
    doc.h("Reproduce")
    cmds = [f"{s.name}: {s.command}" for s in summary.stages if s.command]
    cmds += [f"{r['label']} scores: {r['command']}" for r in rows if r.get("command")]
    cmds.append(f"this report (costs, * scores, figures): {command}")
    missing = [s.name for s in summary.stages if not s.command and s.status == "done"]
    doc.code("\n".join(cmds), "bash")
    if missing:
        doc.p(f"Commands not recorded in summary.json for: {', '.join(missing)}.")
    for s in summary.stages:
        doc.h(f"config: {s.name}", 3)
        if s.config:
            doc.code(yaml.safe_dump(s.config, sort_keys=False, default_flow_style=None, width=110), "yaml")
        else:
            doc.p("not recorded." if s.status == "done" else f"{s.status}.")

    md, html_path = out / "report.md", out / "report.html"
    _atomic_write(md, to_markdown(doc, out))
    _atomic_write(html_path, to_html(doc))
    return ReportResult(md, html_path, pngs, notes)


def _cell(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "-" if v is None else str(v)


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _val_source(out: Path, entry: str) -> str | Path:
    """A --data entry as given ("builtin", or a folder relative to the working directory), else under OUT."""
    if entry.startswith("builtin") or Path(entry).exists() or not (out / entry).exists():
        return entry
    return out / entry


def _score_models(summary: RunSummary, out: Path, max_crops: int, device: str, measure: bool, lr_size: int,
                  threads: int | None, repeats: int, notes: list[str],
                  say: Callable[[str], None]) -> tuple[list[dict], dict[str, list]]:
    """Per model row: scores per dataset (eval JSON or measured), cost; and the crop panels per dataset."""
    scale = summary.scale
    sets: list[tuple[str, list[Sample]]] = []
    if not scale:
        notes.append("the scale of the run is unknown: nothing measured, scores from eval JSON files only")
    for entry in summary.val if scale else []:
        try:
            ds = BenchmarkSet(_val_source(out, entry), scale)
            sets.append((ds.name, list(ds)))
        except (ValueError, OSError) as e:
            notes.append(f"validation data {entry}: {e}")
    rows: list[dict] = []
    crops: dict[str, list] = {name: [(s, []) for s in samples[:max_crops]] for name, samples in sets}
    for rec in summary.models:
        say(f"report: {rec.label}")
        json_scores = read_eval(resolve(out, rec.eval))
        row: dict = {"label": rec.label, "kind": rec.kind, "scores": {}, "command": rec.eval_command}
        model, runnable = None, bool(scale)
        if rec.kind != "bicubic" and scale:
            try:
                model = load_row_model(rec, out, scale, device)
            except Exception as e:  # noqa: BLE001 - a row that cannot be loaded is reported, not fatal
                notes.append(f"{rec.label}: not measured ({str(e).splitlines()[0] if str(e) else type(e).__name__})")
                runnable = False
        measured = False
        for name, samples in sets if runnable else []:
            have = name in json_scores
            subset = _Subset(name, scale, samples[:max_crops] if have else samples)
            srs: list[np.ndarray] = []

            def keep(_sample, sr, srs=srs):
                if len(srs) < max_crops:
                    srs.append(sr)

            if model is None:
                res: SetResult = evaluate_bicubic(subset, source="lr", on_image=keep)
            else:
                res = evaluate_model(model, subset, device=device, on_image=keep)
            for (_, panels), sr in zip(crops[name], srs, strict=False):
                panels.append((rec.label, sr))
            src = json_scores[name] if have else res.as_dict()
            row["scores"][name] = {"psnr_y": src["psnr_y"], "ssim_y": src["ssim_y"], "mark": "" if have else "*"}
            measured = measured or not have
        for name, res in json_scores.items():  # datasets of the eval JSON outside the report's val data
            row["scores"].setdefault(name, {"psnr_y": res["psnr_y"], "ssim_y": res["ssim_y"], "mark": ""})
        if measured:
            cmd = eval_command(rec, out, scale, summary.val)
            row["command"] = f"{row['command']}; {cmd}" if row["command"] else cmd
        if rec.kind == "bicubic":
            row["params"] = 0
        elif model is not None and measure:
            row.update(measure_row_cost(model, lr_size, threads, repeats, device))
        if row["scores"] or runnable:
            rows.append(row)
    return rows, {k: v for k, v in crops.items() if v and v[0][1]}
