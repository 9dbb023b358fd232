"""The derived DLSR-space SR network: a genotype turned into an nn.Module.

Layout (DLSR's network level, an RFDN backbone with searched cell links):
  * head: 3x3 conv RGB -> C features (`fea_conv`);
  * N distillation cells `B1..BN`: cell 1 takes the head output, cell 2 cell 1's output, and cell k >= 3
    takes a 1x1 conv + LeakyReLU(0.05) (`c{k}`) over the concat of the two earlier cells the genotype
    names (in the genotype's order);
  * tail: concat of all N cell outputs -> 1x1 conv + LeakyReLU (`cout`) -> 3x3 conv (`LR_conv`) plus a
    global residual from the head -> conv + pixel shuffle to RGB at `scale`x (`upsampler`);
  * image-space skip (`genotype.skip`, srcore/skip.py): none (DLSR), the nearest anchor added before the
    shuffle, or the bicubic upscaled input added after it; with a skip the upsampler's conv starts at zero,
    so the untrained network outputs its skip.
State-dict keys match DLSR's code, so its published checkpoints load strictly (the skip has no weights).

Like the zoo models, the network takes and returns RGB in [0,1]; it multiplies by `genotype.rgb_range`
on the way in and divides on the way out, so weights trained on [0,255] work unchanged.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from search_spaces.cell import NEG_SLOPE, DistillationCell
from search_spaces.esr_genotype import ESRGenotype
from search_spaces.esr_network import ESRNet
from search_spaces.genotype import Genotype, load_genotype, validate
from srcore.layers import conv, pixelshuffle_upsampler
from srcore.registry import register_builder
from srcore.skip import ImageSkip, zero_init


def conv1x1_lrelu(in_ch: int, out_ch: int) -> nn.Sequential:
    """1x1 conv + LeakyReLU(0.05), the fusion layer used for cell inputs and the tail (keys `0.*`)."""
    return nn.Sequential(conv(in_ch, out_ch, 1), nn.LeakyReLU(NEG_SLOPE))


class DLSRNet(nn.Module):
    """An SR network derived from a DLSR-space `Genotype` (see the module docstring)."""

    def __init__(self, genotype: Genotype):
        super().__init__()
        self.genotype = genotype
        self.rgb_range = float(genotype.rgb_range)
        self.scale = genotype.scale
        c, n = genotype.channels, genotype.num_cells
        self.fea_conv = conv(3, c, 3)
        for k in range(1, n + 1):
            self.add_module(f"B{k}", DistillationCell(c, genotype.cell_ops(k)))
        for k in range(3, n + 1):
            self.add_module(f"c{k}", conv1x1_lrelu(2 * c, c))
        self.cout = conv1x1_lrelu(n * c, c)
        self.LR_conv = conv(c, c, 3)
        self.upsampler = pixelshuffle_upsampler(c, 3, genotype.scale)
        self.skip = ImageSkip(genotype.skip, genotype.scale)
        if genotype.skip != "none":
            zero_init(self.upsampler[0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = self.genotype
        fea = self.fea_conv(x * self.rgb_range)
        outs: list[torch.Tensor] = []  # outs[k - 1] is cell k's output
        for k in range(1, g.num_cells + 1):
            if k == 1:
                h = fea
            elif k == 2:
                h = outs[0]
            else:
                a, b = g.cell_inputs(k)
                h = getattr(self, f"c{k}")(torch.cat([outs[a - 1], outs[b - 1]], dim=1))
            outs.append(getattr(self, f"B{k}")(h))
        lr = self.LR_conv(self.cout(torch.cat(outs, dim=1))) + fea
        return self.skip(x, self.upsampler[0](lr) / self.rgb_range)


def build_network(genotype: Genotype | ESRGenotype | str | Path) -> DLSRNet | ESRNet:
    """The derived network for a genotype (object, YAML file or named, e.g. "dlsr_x2", "span_x4"): a DLSRNet
    for the dlsr space, an ESRNet (training-time form, search_spaces/esr_network.py) for the esr space."""
    if not isinstance(genotype, (Genotype, ESRGenotype)):
        genotype = load_genotype(genotype)
    return ESRNet(genotype) if isinstance(genotype, ESRGenotype) else DLSRNet(genotype)


@register_builder("genotype")
def build_from_spec(spec: dict) -> DLSRNet | ESRNet:
    """The network of a checkpoint spec `{"genotype": mapping}` (srcore.modelspec.build_model)."""
    return build_network(validate(spec["genotype"], "checkpoint spec.genotype"))
