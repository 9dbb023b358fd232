"""Loading official pretrained weights into zoo networks."""
from __future__ import annotations

import os

import torch
from torch import nn

from srcore.checkpoint import CheckpointError, load_strict, read_state_dict

from . import zoo


def load_pretrained(arch: str, path: str | os.PathLike, scale: int,
                    device: str | torch.device = "cpu") -> nn.Module:
    """Build zoo architecture `arch` at `scale` and load the weight file at `path` strictly.

    The file may be a bare state dict or nested under `state_dict`/`params`/`params_ema`/`model`, with
    or without `module.` prefixes, in the zip or the legacy format; it is read with weights_only=True.
    The returned network is in eval mode, frozen, and takes and returns RGB in [0, 1] whatever range
    the weights were trained in. A file for another architecture or scale raises CheckpointError.
    """
    model = zoo.create(arch, scale)
    sd = read_state_dict(path)
    try:
        load_strict(model, sd, source=str(path))
    except CheckpointError as e:
        raise CheckpointError(f"{e} (expected a weight file of {arch} at x{scale})") from None
    model.eval().requires_grad_(False)
    return model.to(device)
