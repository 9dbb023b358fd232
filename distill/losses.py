"""Distillation losses, each a named weighted term, and the `Criterion` that adds them up.

Every term is an nn.Module whose forward takes a `LossInputs` and returns an unweighted scalar. The
`Criterion` (torchdistill style) returns {name: weight * value for every term, "total": their sum}.
Teacher tensors are always detached here, so gradients reach only the student (and the adapters).

A loss kind is defined here and only here: its class names the config `kind`, its params (`defaults`) and
what the training step must compute for it (`needs`, from `NEEDS`); `KINDS` lists the classes. The config
checks kinds against `KINDS`, and the trainer computes exactly the union of the terms' needs, so a new kind
that uses the existing inputs touches this file only.

kinds (config `loss[].kind`) and their params:
  l1            mean |sr - gt|
  charbonnier   mean sqrt((sr - gt)^2 + eps^2)                               eps=1e-3
  output_kd     sum_i a_i mean |sr - T_i(lq)| / sum_i a_i over the teacher anchors (weights a_i)
  fitnet        FitNet hint loss per feature pair: mean (A(f_s) - f_t)^2, A a 1x1 adapter (identity
                when the widths match); averaged over pairs                   dist=l2|l1, normalize=false
  facd          FACD-style feature contrastive loss per pair and sample b: d(A(f_s)_b, f_t_b) /
                mean_k d(A(f_s)_b, f_t_{b+k}) with d the mean absolute difference, the teacher's feature
                of the same patch as positive and its features of the other patches of the batch as
                negatives; with adaptive=true only samples whose SR is not yet better (L1 to gt) than the
                teacher's count (the others add 0); mean over samples and pairs; negatives come from the
                process-local batch                                 adaptive=true, eps=1e-6, normalize=false
  lsfd          LSFD-style local-selective feature distillation per pair: a local regressor R (two 3x3
                convs), d = channel-mean (R(f_s) - f_t)^2, attention = H*W * softmax_HW(d / (temperature *
                max_HW d)) from the (detached) teacher-student difference (scale-free, and at most e^(1/T)
                between two positions; uniform d gives attention 1 everywhere); mean(attention * d)
                                                                      temperature=0.5, hidden=0, normalize=false
  zoom_in       DUKD: mean |F^-1(S(F(tile))) - T(tile)| on HR tiles (see distill/upcycle.py)
                n_sub=1, aug_prob=0.3, ops=[invert, hflip, vflip, transpose]
  zoom_out_pix  DUKD: mean |S(down(lq)) - lq|
  zoom_out_kd   DUKD: mean |S(down(lq)) - T(down(lq))|
  enhanced_hr   DIPNet: mean |sr - down(T(gt))|, the teacher-enhanced HR as an extra target

normalize=true (feature terms) standardizes both features per sample and channel over space (zero mean, unit
variance) before the distance: the term then compares spatial patterns, whatever the two networks' scales.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from srcore.config import ConfigError

from .features import adapter, local_regressor
from .upcycle import AUG_OPS

if TYPE_CHECKING:  # distill.config imports this module for KINDS
    from .config import LossTerm

# What a term can need from a training step (`Term.needs`); all but "zoom_out" come from the teachers.
NEEDS = {
    "t_sr": "every teacher anchor's SR of lq (LossInputs.t_sr, anchor_weights)",
    "t_feats": "the first teacher's features at the term's teacher paths (t_feats)",
    "zoom_in": "DUKD zoom-in: augmented HR tiles through the student (zoom_in_sr), the first teacher's SR "
               "of the plain tiles (zoom_in_target)",
    "zoom_out": "DUKD zoom-out: lq downscaled once more, through the student (zoom_out_sr)",
    "zoom_out_t": "the first teacher's SR of the downscaled lq (zoom_out_target)",
    "enhanced_hr": "DIPNet's teacher-enhanced HR (enhanced_hr)",
}
TEACHER_NEEDS = frozenset(NEEDS) - {"zoom_out"}


@dataclass
class LossInputs:
    """What the terms read. `s_feats` / `t_feats` map module paths to features; teacher tensors may be None
    when no term needs them."""

    lq: torch.Tensor
    gt: torch.Tensor
    sr: torch.Tensor
    t_sr: list[torch.Tensor] = field(default_factory=list)  # one per teacher anchor
    anchor_weights: list[float] = field(default_factory=list)
    s_feats: dict[str, torch.Tensor] = field(default_factory=dict)
    t_feats: dict[str, torch.Tensor] = field(default_factory=dict)
    zoom_in_sr: torch.Tensor | None = None  # F^-1(S(F(tile)))
    zoom_in_target: torch.Tensor | None = None  # T(tile)
    zoom_out_sr: torch.Tensor | None = None  # S(down(lq))
    zoom_out_target: torch.Tensor | None = None  # T(down(lq))
    enhanced_hr: torch.Tensor | None = None


def _mae(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a.float() - b.detach().float()).abs().mean()


def _need(x: torch.Tensor | None, what: str, name: str) -> torch.Tensor:
    if x is None:
        raise RuntimeError(f"loss {name}: no {what} was computed for this step")
    return x


class Term(nn.Module):
    """A loss term: `params` are checked against `defaults` (unknown keys are errors)."""

    kind: str = ""  # the config's loss[].kind
    needs: frozenset[str] = frozenset()  # what the step computes for it (keys of NEEDS)
    defaults: dict[str, Any] = {}

    def __init__(self, spec: LossTerm):
        super().__init__()
        self.name = spec.name
        unknown = [k for k in spec.params if k not in self.defaults]
        if unknown:
            known = ", ".join(self.defaults) or "none"
            raise ConfigError(f"loss {spec.name} ({spec.kind}): unknown param {unknown[0]!r} (known: {known})")
        self.p = {**self.defaults, **spec.params}


class L1(Term):
    kind = "l1"

    def forward(self, x: LossInputs) -> torch.Tensor:
        return _mae(x.sr, x.gt)


class Charbonnier(Term):
    kind = "charbonnier"
    defaults = {"eps": 1e-3}

    def forward(self, x: LossInputs) -> torch.Tensor:
        d = x.sr.float() - x.gt.float()
        return torch.sqrt(d * d + float(self.p["eps"]) ** 2).mean()


class OutputKD(Term):
    kind, needs = "output_kd", frozenset({"t_sr"})

    def forward(self, x: LossInputs) -> torch.Tensor:
        if not x.t_sr:
            raise RuntimeError(f"loss {self.name}: output_kd needs at least one teacher")
        w = x.anchor_weights or [1.0] * len(x.t_sr)
        return sum(a * _mae(x.sr, t) for a, t in zip(w, x.t_sr, strict=True)) / sum(w)


def standardize(f: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Zero mean, unit variance per sample and channel over the spatial positions."""
    mu = f.mean((-2, -1), keepdim=True)
    return (f - mu) / (f.var((-2, -1), keepdim=True, unbiased=False) + eps).sqrt()


class FeatureTerm(Term):
    """A term over (student path, teacher path) pairs with one learned module per pair."""

    def __init__(self, spec: LossTerm, s_chans: list[int], t_chans: list[int]):
        super().__init__(spec)
        if not spec.student:
            raise ConfigError(f"loss {spec.name} ({spec.kind}): give student and teacher module paths")
        self.s_paths, self.t_paths = list(spec.student), list(spec.teacher)
        self.adapters = nn.ModuleList(self.make_adapter(cs, ct) for cs, ct in zip(s_chans, t_chans, strict=True))

    def make_adapter(self, c_s: int, c_t: int) -> nn.Module:
        return adapter(c_s, c_t)

    def pairs(self, x: LossInputs):
        for a, ps, pt in zip(self.adapters, self.s_paths, self.t_paths, strict=True):
            fs, ft = a(x.s_feats[ps]).float(), x.t_feats[pt].detach().float()
            if fs.shape != ft.shape:
                raise RuntimeError(f"loss {self.name}: student {ps} {tuple(fs.shape)} vs teacher {pt} "
                                   f"{tuple(ft.shape)} after the adapter; pick features at the same resolution")
            if self.p["normalize"]:
                fs, ft = standardize(fs), standardize(ft)
            yield fs, ft

    def forward(self, x: LossInputs) -> torch.Tensor:
        vals = [self.pair_loss(fs, ft, x) for fs, ft in self.pairs(x)]
        return torch.stack(vals).mean()


class FitNet(FeatureTerm):
    kind, needs = "fitnet", frozenset({"t_feats"})
    defaults = {"dist": "l2", "normalize": False}

    def pair_loss(self, fs, ft, x):
        if self.p["dist"] not in ("l1", "l2"):
            raise ConfigError(f"loss {self.name}: dist must be l1 or l2, got {self.p['dist']!r}")
        d = fs - ft
        return (d * d).mean() if self.p["dist"] == "l2" else d.abs().mean()


def student_not_better(x: LossInputs) -> torch.Tensor:
    """(B,) float mask: 1 where the student's SR is no closer (mean |.| to gt) than the first teacher's."""
    e_s = (x.sr.detach().float() - x.gt.float()).abs().flatten(1).mean(1)
    e_t = (x.t_sr[0].detach().float() - x.gt.float()).abs().flatten(1).mean(1)
    return (e_s >= e_t).float()


class FACD(FeatureTerm):
    kind, needs = "facd", frozenset({"t_feats", "t_sr"})
    defaults = {"adaptive": True, "eps": 1e-6, "normalize": False}

    def pair_loss(self, fs, ft, x):
        b = fs.shape[0]
        pos = (fs - ft).abs().flatten(1).mean(1)
        if b > 1:
            neg = torch.stack([(fs - ft.roll(k, 0)).abs().flatten(1).mean(1) for k in range(1, b)]).mean(0)
            per_sample = pos / (neg + float(self.p["eps"]))
        else:  # no other patch to contrast with: the positive term alone
            per_sample = pos
        if self.p["adaptive"]:
            if not x.t_sr:
                raise RuntimeError(f"loss {self.name}: adaptive FACD needs the teacher's SR")
            per_sample = per_sample * student_not_better(x)
        return per_sample.mean()


class LSFD(FeatureTerm):
    kind, needs = "lsfd", frozenset({"t_feats"})
    defaults = {"temperature": 0.5, "hidden": 0, "normalize": False}

    def make_adapter(self, c_s, c_t):
        return local_regressor(c_s, c_t, int(self.p["hidden"]) or None)

    def pair_loss(self, fs, ft, x):
        d = ((fs - ft) ** 2).mean(1)  # (B, H, W)
        b, h, w = d.shape
        dd = d.detach().flatten(1)
        dd = dd / (float(self.p["temperature"]) * dd.amax(1, keepdim=True) + 1e-12)
        att = torch.softmax(dd, dim=1).view(b, h, w) * (h * w)
        return (att * d).mean()


class ZoomIn(Term):
    kind, needs = "zoom_in", frozenset({"zoom_in"})
    defaults = {"n_sub": 1, "aug_prob": 0.3, "ops": list(AUG_OPS)}

    def forward(self, x):
        return _mae(_need(x.zoom_in_sr, "zoom-in output", self.name), _need(x.zoom_in_target, "zoom-in target",
                                                                            self.name))


class ZoomOutPix(Term):
    kind, needs = "zoom_out_pix", frozenset({"zoom_out"})

    def forward(self, x):
        return _mae(_need(x.zoom_out_sr, "zoom-out output", self.name), x.lq)


class ZoomOutKD(Term):
    kind, needs = "zoom_out_kd", frozenset({"zoom_out", "zoom_out_t"})

    def forward(self, x):
        return _mae(_need(x.zoom_out_sr, "zoom-out output", self.name),
                    _need(x.zoom_out_target, "zoom-out teacher output", self.name))


class EnhancedHR(Term):
    kind, needs = "enhanced_hr", frozenset({"enhanced_hr"})

    def forward(self, x):
        return _mae(x.sr, _need(x.enhanced_hr, "enhanced HR", self.name))


KINDS: dict[str, type[Term]] = {cls.kind: cls for cls in (
    L1, Charbonnier, OutputKD, FitNet, FACD, LSFD, ZoomIn, ZoomOutPix, ZoomOutKD, EnhancedHR)}


def needs_teacher(kind: str) -> bool:
    """Whether a term of this kind reads anything computed by a teacher."""
    return bool(KINDS[kind].needs & TEACHER_NEEDS)


class Criterion(nn.Module):
    """All configured terms; forward returns every weighted term and "total".

    `channels` maps module paths to widths ("s:<path>" for the student, "t:<path>" for the teacher),
    as measured by `features.probe_channels`, to size the adapters of feature terms.
    """

    def __init__(self, terms: list[LossTerm], channels: dict[str, int] | None = None):
        super().__init__()
        channels = channels or {}
        self.specs = {t.name: t for t in terms}
        self.weights = {t.name: float(t.weight) for t in terms}
        mods = {}
        for t in terms:
            cls = KINDS[t.kind]
            if issubclass(cls, FeatureTerm):
                mods[t.name] = cls(t, [channels[f"s:{p}"] for p in t.student], [channels[f"t:{p}"] for p in t.teacher])
            else:
                mods[t.name] = cls(t)
        self.terms = nn.ModuleDict(mods)

    # --- what the trainer must compute for a step -------------------------------------------------------
    def needs(self) -> frozenset[str]:
        """The union of every term's `needs` (what the step must compute)."""
        return frozenset().union(*(type(t).needs for t in self.terms.values()))

    def student_paths(self) -> list[str]:
        return list(dict.fromkeys(p for s in self.specs.values() for p in s.student))

    def teacher_paths(self) -> list[str]:
        return list(dict.fromkeys(p for s in self.specs.values() for p in s.teacher))

    def zoom_in_params(self) -> dict | None:
        zs = [self.terms[s.name].p for s in self.specs.values() if s.kind == "zoom_in"]
        return zs[0] if zs else None

    def set_weights(self, weights: dict[str, float]) -> None:
        for k, v in weights.items():
            self.weights[k] = float(v)

    def forward(self, x: LossInputs) -> dict[str, torch.Tensor]:
        out = {name: self.weights[name] * term(x) for name, term in self.terms.items()}
        out["total"] = torch.stack(list(out.values())).sum()
        return out

