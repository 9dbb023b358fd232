"""The DLSR supernet: every distillation stage a mixed op, every cell input a softmax(beta)-weighted concat.

Layout (the derived `search_spaces.network.DLSRNet`, with both levels relaxed):
  * head: 3x3 conv RGB -> C (`fea_conv`);
  * N distillation cells `B1..BN`, each stage op a `MixedOp` over `space.ops`, weighted by
    softmax(alpha): one alpha tensor (3, |ops|) shared by every cell (DLSR) or (N, 3, |ops|), per cell;
  * cell 1 takes the head output, cell 2 cell 1's output; cell k >= 3 takes a 1x1 conv + LeakyReLU
    (`c{k}`, (k-1)C -> C) over the concat of all earlier cell outputs, output j scaled by softmax(beta_k)_j
    (DLSR's `RFDN_beta1`); deriving keeps the top-2 predecessors (a 2C -> C conv in the derived network);
  * tail: concat of all cell outputs -> 1x1 conv + LeakyReLU (`cout`) -> 3x3 conv (`LR_conv`) plus the
    head's output -> conv + pixel shuffle (`upsampler`) for x2, x3 or x4;
  * the image-space skip of the derived network (`space.skip`, srcore/skip.py), with the upsampler's conv
    starting at zero, so the candidate ops are compared on the residual they actually have to learn.
Input and output are RGB in [0, 1].

The architecture parameters are `nn.Parameter`s (`alphas`, `betas.{i}`), so they are in `state_dict()`
and in every checkpoint; `arch_parameters()` and `weight_parameters()` split `parameters()` into two
disjoint lists, for the two optimizers.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from nas.config import SpaceConfig
from nas.mixed import MixedOp
from search_spaces.cell import DistillationCell
from search_spaces.genotype import Genotype
from search_spaces.network import conv1x1_lrelu
from srcore.layers import conv, pixelshuffle_upsampler
from srcore.skip import ImageSkip, zero_init


class SuperNet(nn.Module):
    def __init__(self, space: SpaceConfig, init_std: float = 1e-3):
        super().__init__()
        self.space = space
        c, n, ops = space.channels, space.num_cells, space.ops
        self.fea_conv = conv(3, c, 3)
        self.cells = nn.ModuleList(
            DistillationCell(c, [MixedOp(c, ops, space.partial_channels, space.fuse) for _ in range(3)])
            for _ in range(n))
        self.links = nn.ModuleList(conv1x1_lrelu((k - 1) * c, c) for k in range(3, n + 1))
        self.cout = conv1x1_lrelu(n * c, c)
        self.LR_conv = conv(c, c, 3)
        self.upsampler = pixelshuffle_upsampler(c, 3, space.scale)
        self.skip = ImageSkip(space.skip, space.scale)
        if space.skip != "none":
            zero_init(self.upsampler[0])
        shape = (3, len(ops)) if space.shared_alphas else (n, 3, len(ops))
        self.alphas = nn.Parameter(init_std * torch.randn(shape))
        self.betas = nn.ParameterList(nn.Parameter(init_std * torch.randn(k - 1)) for k in range(3, n + 1))

    # --- parameters ------------------------------------------------------------------------------------

    def arch_parameters(self) -> list[nn.Parameter]:
        return [self.alphas, *self.betas]

    def weight_parameters(self) -> list[nn.Parameter]:
        arch = {id(p) for p in self.arch_parameters()}
        return [p for p in self.parameters() if id(p) not in arch]

    def cell_alphas(self, k: int) -> torch.Tensor:
        """The (3, |ops|) raw alphas of cell k (0-based)."""
        return self.alphas if self.space.shared_alphas else self.alphas[k]

    # --- forward ---------------------------------------------------------------------------------------

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights = F.softmax(self.alphas, dim=-1)
        fea = self.fea_conv(x)
        outs: list[torch.Tensor] = []
        for k, cell in enumerate(self.cells):
            if k == 0:
                h = fea
            elif k == 1:
                h = outs[0]
            else:
                h = self.link(k, outs)
            stage_w = weights if self.space.shared_alphas else weights[k]
            for stage, op in enumerate((cell.c1_r, cell.c2_r, cell.c3_r)):
                op.weights = stage_w[stage]
            try:
                outs.append(cell(h))
            finally:
                for op in (cell.c1_r, cell.c2_r, cell.c3_r):
                    op.weights = None
        lr = self.LR_conv(self.cout(torch.cat(outs, dim=1))) + fea
        return self.skip(x, self.upsampler[0](lr))

    def link(self, k: int, outs: list[torch.Tensor]) -> torch.Tensor:
        """Input of cell k (0-based, k >= 2): conv1x1(concat_j softmax(beta)_j * outs[j]) + LeakyReLU.

        The beta scaling is folded into the 1x1 kernel's input columns (the same function, without k
        scaled copies of the cell outputs).
        """
        conv1x1, act = self.links[k - 2]
        b = F.softmax(self.betas[k - 2], dim=-1).repeat_interleave(self.space.channels)
        return act(F.conv2d(torch.cat(outs, dim=1), conv1x1.weight * b[:, None, None], conv1x1.bias))

    # --- the discrete result -----------------------------------------------------------------------------

    def genotype(self, top_k: int = 2, exclude: tuple[str, ...] = ()) -> Genotype:
        """The derived genotype of the current alphas and betas (see `nas.derive`)."""
        from nas.derive import derive_genotype

        return derive_genotype(self.alphas.detach(), [b.detach() for b in self.betas], self.space,
                               top_k=top_k, exclude=exclude)
