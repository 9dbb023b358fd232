"""DIPNet-style compression: (re-parameterize,) then N rounds of prune a fraction + distillation fine-tune.

`Compressor(settings, out_dir).run()`:
  round 0   the input checkpoint, re-parameterized if asked; written as OUT/round_0/model.pt (also the default
            teacher: the unpruned network) with its metrics;
  round k   trace the round k-1 network, score its channels (L1/L2 magnitude or first-order Taylor on the
            distillation loss), prune to this round's target (the cost moves geometrically from the start to
            the final target over the rounds), write OUT/round_k/pruned.pt, fine-tune it with
            `distill.trainer.Trainer` (teachers: the unpruned network, zoo teachers with their official weights,
            srnas checkpoints; OUT/round_k/finetune/), then write OUT/round_k/model.pt and, last,
            OUT/round_k/metrics.json (PSNR-Y on the validation sets, params, MACs, latency).
A round counts as finished once its metrics.json exists; a run started again with the same OUT and the same
settings continues after the last finished round (inside a round, the fine-tune resumes from its last.pt).
Every file is written atomically (temp file + rename).

Costs are measured on one 1x3xSxS LR input (S = `lr_size`, 256 by default: the NTIRE convention); latency
is the median of `latency_repeats` forward passes after warm-up on this machine (`srcore.cost.latency`).
"""
from __future__ import annotations

import copy
import dataclasses
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from distill import zoo
from distill.config import TeacherConfig, TrainConfig
from distill.teachers import load_teacher
from distill.trainer import Callback, Trainer
from srcore.checkpoint import save_checkpoint
from srcore.config import ConfigError, apply_overrides, from_dict, resolve_preset
from srcore.cost import count_params, latency
from srcore.data import BenchmarkSet, PatchDataset
from srcore.evaluation import evaluate_model
from srcore.modelspec import load_checkpoint_model, spec_scale
from srcore.paths import shared_dir
from srcore.weights import list_weights
from srcore.yamlio import safe_load

from .deploy import save_json_atomic
from .graph import trace_channels
from .prune import (
    CostModel,
    PruneError,
    Target,
    apply_plan,
    check_multiple,
    group_widths,
    importance_scores,
    plan_for_target,
    reparameterize,
    uniform_widths,
    widths_of,
)

REPO = Path(__file__).resolve().parents[1]
TRAIN_PRESETS = REPO / "configs" / "train"


@dataclass
class CompressSettings:
    checkpoint: str
    reparam: bool = False
    target: Target | None = None
    rounds: int = 1
    finetune_steps: int = 0
    teachers: list[str] = field(default_factory=lambda: ["self"])  # self | none | zoo name | checkpoint file
    importance: str = "l1"  # l1 | l2 | taylor
    taylor_batches: int = 4
    multiple: int = 8
    lr_size: int = 256
    val: list[str] = field(default_factory=list)
    train_config: str = "finetune"
    overrides: list[str] = field(default_factory=list)
    latency_repeats: int = 5
    threads: int | None = None
    device: str = "cpu"

    def key(self) -> dict:
        """The settings a resumed run must share with the first one."""
        d = dataclasses.asdict(self)
        for k in ("threads", "device", "latency_repeats"):
            d.pop(k)
        return json.loads(json.dumps(d))


def resolve_teachers(names: list[str], scale: int, unpruned: Path) -> list[TeacherConfig]:
    out = []
    for name in names:
        if name == "none":
            continue
        if name == "self":
            out.append(TeacherConfig(checkpoint=str(unpruned)))
        elif name in list_weights() or f"{name}_x{scale}" in list_weights():  # registered pretrained weights
            out.append(TeacherConfig(name=name if name in list_weights() else f"{name}_x{scale}"))
        elif name in zoo.list_models():
            weights = shared_dir() / "teachers" / f"{name}_x{scale}.pth"
            if not weights.is_file():
                raise ConfigError(f"--teacher {name}: no official x{scale} weights at {weights} (set SRNAS_SHARED, "
                                  "or give an srnas checkpoint file)")
            out.append(TeacherConfig(arch=name, weights=str(weights)))
        elif Path(name).is_file():
            out.append(TeacherConfig(checkpoint=name))
        else:
            raise ConfigError(f"--teacher {name}: not 'self', 'none', registered weights "
                              f"({', '.join(list_weights())}), a zoo architecture or a checkpoint file")
    return out


def finetune_config(s: CompressSettings, student: Path, scale: int, teachers: list[TeacherConfig],
                    start_config: dict) -> TrainConfig:
    """The fine-tune run's TrainConfig: the preset, the student checkpoint, the teachers, the step budget; the
    training data of the input checkpoint's own run when it has one; then the --set overrides."""
    path = resolve_preset(s.train_config, TRAIN_PRESETS)
    data = safe_load(path.read_text(), str(path)) or {}
    data["student"] = {"checkpoint": str(student), "scale": scale}
    data["teacher"] = [{k: v for k, v in dataclasses.asdict(t).items() if v is not None} for t in teachers]
    if start_config.get("data", {}).get("train"):
        data.setdefault("data", {})["train"] = start_config["data"]["train"]
    data.setdefault("loop", {})["steps"] = max(1, s.finetune_steps)
    data["val"] = {"data": [], "every": 0}
    if not teachers:
        data["loss"] = [t for t in data.get("loss", []) if t.get("kind") in ("l1", "charbonnier")] or \
            [{"name": "l1", "kind": "l1"}]
    data = apply_overrides(data, s.overrides)
    return from_dict(TrainConfig, data, f"fine-tune config {path}")


@dataclass
class RoundRecord:
    round: int
    params: int
    macs: int
    latency_s: float
    psnr: dict[str, float]
    widths: dict[str, int]
    target: dict | None = None
    ratio: float | None = None
    finetune_steps: int = 0
    finetune_s: float = 0.0
    prune_s: float = 0.0

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


class Compressor:
    """Runs the rounds into `out_dir`; `on_round(record, history)` is called after each finished round."""

    def __init__(self, settings: CompressSettings, out_dir: str | Path,
                 on_round: Callable[[RoundRecord, list[RoundRecord]], None] | None = None,
                 callbacks: list[Callback] | tuple[Callback, ...] = ()):
        s = settings
        if s.rounds < 1:
            raise ConfigError(f"--rounds {s.rounds}: must be >= 1")
        if s.finetune_steps < 0:
            raise ConfigError(f"--finetune-steps {s.finetune_steps}: must be >= 0")
        if s.target is None and not s.reparam:
            raise ConfigError("nothing to do: give --reparam and/or a pruning target "
                              "(--prune-to, --prune-macs, --prune-ratio or --latency-ms)")
        self.s, self.out, self.on_round, self.callbacks = s, Path(out_dir), on_round, list(callbacks)
        self.model, ckpt = load_checkpoint_model(s.checkpoint)
        self.spec, self.start_config = dict(ckpt["spec"]), dict(ckpt.get("config") or {})
        self.scale = spec_scale(self.spec)
        self.val_sets = [BenchmarkSet(d, self.scale) for d in s.val]
        self.x = torch.rand(1, 3, s.lr_size, s.lr_size)
        self.history: list[RoundRecord] = []

    # --- files ---------------------------------------------------------------------------------------------
    def round_dir(self, k: int) -> Path:
        return self.out / f"round_{k}"

    def _check_options(self) -> None:
        path = self.out / "options.json"
        now = self.s.key()
        if path.exists():
            old = json.loads(path.read_text())
            diff = sorted(k for k in set(old) | set(now) if old.get(k) != now.get(k))
            if diff:
                raise ConfigError(f"{self.out} holds a compression run with other settings ({', '.join(diff)}); "
                                  "use a new --out")
        else:
            self.out.mkdir(parents=True, exist_ok=True)
            save_json_atomic(path, json.dumps(now, indent=2) + "\n")

    def _finished(self, k: int) -> RoundRecord | None:
        path = self.round_dir(k) / "metrics.json"
        if not path.exists():
            return None
        return RoundRecord(**json.loads(path.read_text()))

    def _save_model(self, path: Path, model: nn.Module, spec: dict, metrics: dict | None = None) -> None:
        sd = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
        save_checkpoint(path, state_dict=sd, spec=spec, config=self.start_config, metrics=metrics or {})

    # --- measurements ----------------------------------------------------------------------------------------
    def measure(self, model: nn.Module) -> tuple[int, int, float]:
        model = model.eval()
        macs = CostModel(trace_channels(model, tuple(self.x.shape)), 0).cost({})["macs"]  # = count_flops for convs
        lat = latency(model, self.x, warmup=1, repeats=self.s.latency_repeats, threads=self.s.threads)["median_s"]
        return count_params(model), macs, lat

    def psnr(self, model: nn.Module) -> dict[str, float]:
        model.to(self.s.device)
        try:
            return {ds.name: evaluate_model(model, ds, device=self.s.device).psnr_y for ds in self.val_sets}
        finally:
            model.cpu()  # costs and latency are measured on the CPU

    def latency_of(self, model: nn.Module) -> float:
        return latency(model.eval(), self.x, warmup=1, repeats=self.s.latency_repeats,
                       threads=self.s.threads)["median_s"]

    # --- the run ---------------------------------------------------------------------------------------------
    def _check_target(self, model: nn.Module) -> None:
        """Fail before any work on a target the network already meets, one it cannot reach, or a multiple
        that no group can be cut to (latency targets are checked once measured)."""
        t = self.s.target
        if t is None:
            return
        graph = trace_channels(model, tuple(self.x.shape))
        check_multiple(graph, self.s.multiple)
        if t.kind in ("params", "macs"):
            cm = CostModel(graph, count_params(model))
            now = cm.cost({})[t.kind]
            value = t.value * now if t.kind == "macs" and t.value < 1 else t.value
            if value >= now:
                raise PruneError(f"target {Target(t.kind, value).describe()} is not below the network's "
                                 f"{Target(t.kind, now).describe()}")
            least = cm.cost(uniform_widths(graph, 1.0, self.s.multiple))[t.kind]
            if least > value:
                raise PruneError(f"target {Target(t.kind, value).describe()} cannot be reached with width multiple "
                                 f"{self.s.multiple}: every group at its minimum still gives "
                                 f"{Target(t.kind, least).describe()}")
        elif t.kind == "ratio" and not 0 < t.value < 1:
            raise PruneError(f"--prune-ratio {t.value}: must be in (0, 1)")

    def run(self) -> list[RoundRecord]:
        rec0 = self._finished(0)
        if rec0 is None:
            model = reparameterize(self.model) if self.s.reparam else self.model
            self._check_target(model)
            self._check_options()
            spec = dict(self.spec, reparameterized=True) if self.s.reparam else dict(self.spec)
            t0 = time.perf_counter()
            params, macs, lat = self.measure(model)
            rec0 = RoundRecord(0, params, macs, lat, self.psnr(model), dict(spec.get("widths", {})),
                               prune_s=time.perf_counter() - t0)
            self.round_dir(0).mkdir(parents=True, exist_ok=True)
            self._save_model(self.round_dir(0) / "model.pt", model, spec, rec0.as_dict())
            save_json_atomic(self.round_dir(0) / "metrics.json", json.dumps(rec0.as_dict(), indent=2) + "\n")
        else:
            self._check_options()
        self.history = [rec0]
        if self.on_round:
            self.on_round(rec0, self.history)
        if self.s.target is None:
            return self.history
        final = self.s.target
        if final.kind == "macs" and final.value < 1:  # a fraction of the round-0 (re-parameterized) network
            final = Target("macs", final.value * rec0.macs)
        self.final_target = final
        start_value = {"params": rec0.params, "macs": rec0.macs, "latency": rec0.latency_s}.get(final.kind)
        if start_value is not None and final.value >= start_value:
            raise PruneError(f"target {final.describe()} is not below the network's "
                             f"{Target(final.kind, start_value).describe()}")
        for k in range(1, self.s.rounds + 1):
            rec = self._finished(k)
            if rec is None:
                rec = self._round(k, start_value)
            self.history.append(rec)
            if self.on_round:
                self.on_round(rec, self.history)
        return self.history

    def round_target(self, k: int, start_value: float | None) -> Target:
        t, n = self.final_target, self.s.rounds
        if t.kind == "ratio":  # the same fraction of what is left each round: (1 - r)^n = 1 - R
            return Target("ratio", 1.0 - (1.0 - t.value) ** (1.0 / n))
        return Target(t.kind, start_value * (t.value / start_value) ** (k / n))

    def _round(self, k: int, start_value: float | None) -> RoundRecord:
        s, rd = self.s, self.round_dir(k)
        rd.mkdir(parents=True, exist_ok=True)
        prev, prev_ckpt = load_checkpoint_model(self.round_dir(k - 1) / "model.pt")
        spec = dict(prev_ckpt["spec"])
        base = load_checkpoint_model(self.round_dir(0) / "model.pt")[0]
        base_widths = group_widths(trace_channels(base))
        teachers = resolve_teachers(s.teachers, self.scale, self.round_dir(0) / "model.pt")
        cfg = finetune_config(s, rd / "pruned.pt", self.scale, teachers, self.start_config)
        pruned_path = rd / "pruned.pt"
        target = self.round_target(k, start_value)
        t0 = time.perf_counter()
        ratio = None
        if not pruned_path.exists():
            graph = trace_channels(prev, tuple(self.x.shape))
            scores = importance_scores(prev, graph, s.importance, *self._taylor_inputs(cfg, k, teachers))
            plan, _, ratio = plan_for_target(prev, graph, target, s.multiple, scores,
                                             measure_latency=self.latency_of)
            model = apply_plan(copy.deepcopy(prev), graph, plan)
            spec = dict(spec, widths=widths_of(model, base_widths))
            self._save_model(pruned_path, model, spec, {"round": k, "target": dataclasses.asdict(target),
                                                        "ratio": ratio})
        prune_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        if s.finetune_steps > 0:
            trainer = Trainer(cfg, rd / "finetune", s.device, self.callbacks)
            trainer.fit(resume=(rd / "finetune" / "last.pt").exists())
            model, ck = load_checkpoint_model(rd / "finetune" / "last.pt")
        else:
            model, ck = load_checkpoint_model(pruned_path)
        finetune_s = time.perf_counter() - t0
        spec = dict(ck["spec"])
        params, macs, lat = self.measure(model)
        meta = load_checkpoint_model(pruned_path)[1]["metrics"]
        rec = RoundRecord(k, params, macs, lat, self.psnr(model), dict(spec.get("widths", {})),
                          dataclasses.asdict(target), meta.get("ratio", ratio), s.finetune_steps, finetune_s, prune_s)
        self._save_model(rd / "model.pt", model, spec, rec.as_dict())
        save_json_atomic(rd / "metrics.json", json.dumps(rec.as_dict(), indent=2) + "\n")
        return rec

    def _taylor_inputs(self, cfg: TrainConfig, k: int, teachers: list[TeacherConfig]):
        """(batches, loss) for Taylor importance: training patches, L1 to the first teacher's SR (the
        distillation loss) or to the ground truth without a teacher; (None, None) for magnitudes."""
        if self.s.importance != "taylor":
            return None, None
        d = cfg.data
        ds = PatchDataset(d.train, self.scale, d.gt_size, augment=False, seed=cfg.loop.seed + k)
        n = min(len(ds), self.s.taylor_batches * d.batch_size)
        items = [ds[i] for i in range(n)]
        batches = [{key: torch.stack([it[key] for it in items[i:i + d.batch_size]]) for key in ("lq", "gt")}
                   for i in range(0, n, d.batch_size)]
        teacher = load_teacher(teachers[0], self.scale, torch.device("cpu")) if teachers else None

        def loss(model: nn.Module, batch: dict) -> torch.Tensor:
            sr = model(batch["lq"])
            if teacher is None:
                return (sr - batch["gt"]).abs().mean()
            with torch.no_grad():
                t = teacher(batch["lq"])
            return (sr - t).abs().mean()

        return batches, loss


