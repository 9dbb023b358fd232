"""Loading official pretrained weights into zoo networks."""
from __future__ import annotations

import os
import re

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


def provenance_cells(text: str, file: str) -> dict[str, str]:
    """The row of weight file `file` in shared/teachers/PROVENANCE.md (its text), as {column header: cell},
    read with the header of the table that holds it. KeyError when the file has no row."""
    lines = text.splitlines()
    at = next((i for i, line in enumerate(lines) if line.startswith(f"| {file} |")), None)
    if at is None:
        raise KeyError(f"PROVENANCE.md has no table row for {file}")
    header = next(lines[i] for i in range(at, -1, -1) if lines[i].startswith("| file |"))

    def split(line: str) -> list[str]:
        return [c.strip() for c in line.strip().strip("|").split("|")]

    return dict(zip(split(header), split(lines[at]), strict=False))


def provenance_psnr(text: str, file: str, scale: int, dataset: str = "Set5") -> float:
    """The Y-PSNR measured in PROVENANCE.md for `file` at `scale` on `dataset`.

    Two table layouts: 'Set5 Y-PSNR measured' (bold figure, or 'x2 **a**, x3 **b**' per scale) and
    'Set5 / Set14 / B100 x4 (Y-PSNR, SSIM) measured' ('psnr/ssim, psnr/ssim, psnr/ssim')."""
    cells = provenance_cells(text, file)
    if dataset == "Set5" and "Set5 Y-PSNR measured" in cells:
        cell = cells["Set5 Y-PSNR measured"]
        per_scale = dict(re.findall(r"x(\d) \*\*([\d.]+)\*\*", cell))
        return float(per_scale[str(scale)] if per_scale else re.search(r"\*\*([\d.]+)\*\*", cell).group(1))
    for header, cell in cells.items():
        m = re.fullmatch(r"(.+) x(\d) \(Y-PSNR, SSIM\) measured", header)
        if m and int(m.group(2)) == scale and dataset in m.group(1).split(" / "):
            return float(re.findall(r"([\d.]+)/[\d.]+", cell)[m.group(1).split(" / ").index(dataset)])
    raise KeyError(f"PROVENANCE.md gives no {dataset} x{scale} figure for {file}")
