"""Build a network from a spec: a zoo architecture name or a genotype (the `spec` in checkpoints)."""
from __future__ import annotations

import os

import torch
from torch import nn

from .checkpoint import CheckpointError, load_strict, read_checkpoint


def arch_spec(arch: str, scale: int, **kwargs) -> dict:
    return {"arch": arch, "scale": scale, "kwargs": dict(kwargs)}


def genotype_spec(genotype) -> dict:
    return {"genotype": genotype.to_dict()}


def build_model(spec: dict) -> nn.Module:
    """A fresh (untrained) network for `spec`; a compressed network's spec also carries
    `reparameterized: true` (multi-branch blocks fused) and `widths: {group: channels}` (pruned), applied by
    compress.prune.restructure."""
    model = _build_base(spec)
    if spec.get("reparameterized") or spec.get("widths"):
        from compress.prune import restructure

        model = restructure(model, spec)
    return model


def _build_base(spec: dict) -> nn.Module:
    if "genotype" in spec:
        from search_spaces.genotype import validate
        from search_spaces.network import build_network

        return build_network(validate(spec["genotype"], "checkpoint spec.genotype"))
    if "arch" in spec:
        from distill import zoo

        return zoo.create(spec["arch"], spec["scale"], **spec.get("kwargs", {}))
    raise CheckpointError(f"model spec needs an 'arch' or a 'genotype' key, got keys {sorted(spec)}")


def spec_scale(spec: dict) -> int:
    return int(spec["genotype"]["scale"] if "genotype" in spec else spec["scale"])


def load_checkpoint_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild the network stored in an srnas checkpoint and load its weights strictly."""
    ckpt = read_checkpoint(path)
    model = build_model(ckpt["spec"])
    load_strict(model, ckpt["state_dict"], str(path))
    return model.eval().to(device), ckpt
