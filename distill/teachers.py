"""Frozen teachers: loading one from a config entry, and the gate that keeps a weak one out of KD.

A teacher entry (`TeacherConfig`) is one of
  * `name`: registered pretrained weights (srcore/weights.py: architecture, scale, file found by the lookup
    order there; `weights` may name the file explicitly);
  * `arch` + `weights`: a zoo architecture and an official weight file;
  * `checkpoint`: an srnas checkpoint (e.g. a teacher trained here by tools/train.py).
Every teacher comes back in eval mode with requires_grad off, taking and returning RGB in [0, 1].

KD gating: distilling from a teacher that is no better than bicubic teaches the student to be worse than
the skip it starts from. `gate` scores the teacher on the validation sets against the bicubic baseline
(the LR images upsampled, as a network sees them) and reports whether it clears the margin.
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass

import torch
from torch import nn

from search_spaces.genotype import load_genotype
from search_spaces.network import build_network
from srcore.checkpoint import load_strict, read_state_dict
from srcore.config import ConfigError
from srcore.data import BenchmarkSet
from srcore.evaluation import evaluate_bicubic, evaluate_model
from srcore.modelspec import load_checkpoint_model, spec_scale
from srcore.weights import WeightsError, get_entry, resolve

from .config import TeacherConfig
from .pretrained import load_pretrained


def freeze(model: nn.Module, device: str | torch.device) -> nn.Module:
    """Eval mode, no gradients, on `device`: how every teacher is used."""
    return model.eval().requires_grad_(False).to(device)


def load_named(name: str, scale: int, device: str | torch.device = "cpu", path: str | None = None,
               download: bool | None = None) -> nn.Module:
    """Registered pretrained weights `name` (e.g. "rlfn_s_x2") at `scale`, frozen."""
    entry = get_entry(name)
    if scale not in entry.scales:
        raise WeightsError(f"teacher {name} is for x{'/x'.join(map(str, entry.scales))}, the student is x{scale}")
    file = resolve(name, path, download_ok=download)
    if entry.arch.startswith("genotype:"):
        model = build_network(load_genotype(entry.arch.split(":", 1)[1]))
        load_strict(model, read_state_dict(file), str(file))
    else:
        model = load_pretrained(entry.arch, file, scale)
    return freeze(model, device)


def load_teacher(tc: TeacherConfig, scale: int, device: str | torch.device = "cpu",
                 download: bool | None = None) -> nn.Module:
    """The frozen teacher of a config entry (see the module docstring)."""
    if tc.name is not None:
        return load_named(tc.name, scale, device, tc.weights, download)
    if tc.checkpoint is not None:
        model, ckpt = load_checkpoint_model(tc.checkpoint, device)
        s = spec_scale(ckpt["spec"])
        if s != scale:
            raise ConfigError(f"teacher checkpoint {tc.checkpoint} is x{s}, the student is x{scale}")
        return freeze(model, device)
    return freeze(load_pretrained(tc.arch, tc.weights, scale), device)


def describe(tc: TeacherConfig) -> str:
    return tc.name or tc.checkpoint or f"{tc.arch} ({tc.weights})"


@dataclass
class GateResult:
    teacher: str
    teacher_psnr: float  # mean PSNR-Y over the sets
    bicubic_psnr: float
    margin: float  # required gain over bicubic (dB)
    sets: tuple[str, ...] = ()  # the validation sets scored (named in the message: not the study's test sets)

    @property
    def gain(self) -> float:
        return self.teacher_psnr - self.bicubic_psnr

    @property
    def passed(self) -> bool:
        return self.gain >= self.margin

    def message(self) -> str:
        verdict = "clears" if self.passed else "does not clear"
        where = f"the validation set(s) {', '.join(self.sets)}" if self.sets else "the validation data"
        return (f"teacher {self.teacher}: {self.teacher_psnr:.3f} dB mean PSNR-Y on {where}, bicubic "
                f"{self.bicubic_psnr:.3f} dB ({self.gain:+.3f} dB); it {verdict} the KD gate of +{self.margin:g} dB")

    def as_dict(self) -> dict:
        return {"teacher": self.teacher, "teacher_psnr": self.teacher_psnr, "bicubic_psnr": self.bicubic_psnr,
                "margin": self.margin, "passed": self.passed, "sets": list(self.sets)}


def gate(teacher: nn.Module, name: str, sets: list[BenchmarkSet], margin: float,
         device: str | torch.device = "cpu") -> GateResult:
    """Score `teacher` and bicubic (the LR images upsampled) on `sets`; mean PSNR-Y over the sets."""
    t = statistics.fmean(evaluate_model(teacher, ds, device=device).psnr_y for ds in sets)
    b = statistics.fmean(evaluate_bicubic(ds, source="lr").psnr_y for ds in sets)
    return GateResult(name, t, b, margin, tuple(ds.name for ds in sets))
