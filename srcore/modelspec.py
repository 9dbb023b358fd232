"""Build a network from a spec: a zoo architecture name or a genotype (the `spec` in checkpoints).

srcore imports no model code: see srcore/registry.py for how the model packages register their builders.
"""
from __future__ import annotations

import os

import torch
from torch import nn

from .checkpoint import CheckpointError, load_strict, read_checkpoint
from .registry import apply_spec_transforms, build_spec


def arch_spec(arch: str, scale: int, **kwargs) -> dict:
    return {"arch": arch, "scale": scale, "kwargs": dict(kwargs)}


def genotype_spec(genotype) -> dict:
    return {"genotype": genotype.to_dict()}


def build_model(spec: dict) -> nn.Module:
    """A fresh (untrained) network for `spec`, by the builder registered for it (srcore.registry); the
    package that defines the model must have been imported (`import distill`, `import search_spaces`).
    A compressed network's spec also carries `reparameterized: true` (multi-branch blocks fused) and
    `widths: {group: channels}` (pruned), applied by the transform `compress.prune` registers (`import
    compress` first)."""
    try:
        model = build_spec(spec)
    except KeyError as e:
        raise CheckpointError(e.args[0]) from None
    return apply_spec_transforms(model, spec)


def spec_scale(spec: dict) -> int:
    return int(spec["genotype"]["scale"] if "genotype" in spec else spec["scale"])


def load_checkpoint_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild the network stored in an srnas checkpoint and load its weights strictly."""
    ckpt = read_checkpoint(path)
    model = build_model(ckpt["spec"])
    load_strict(model, ckpt["state_dict"], str(path))
    return model.eval().to(device), ckpt
