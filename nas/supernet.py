"""The DLSR supernet: every distillation stage a mixed op, every cell input a softmax(beta)-weighted concat.

Layout (the derived `search_spaces.network.DLSRNet`, with both levels relaxed):
  * head: 3x3 conv RGB -> C (`fea_conv`);
  * N distillation cells `B1..BN`, each stage op a `MixedOp` over `space.ops`, weighted by
    softmax(alpha): one alpha tensor (3, |ops|) shared by every cell (DLSR) or (N, 3, |ops|), per cell;
  * cell 1 takes the head output, cell 2 cell 1's output; cell k >= 3 takes a 1x1 conv + LeakyReLU
    (`c{k}`, (k-1)C -> C) over the concat of all earlier cell outputs, output j scaled by softmax(beta_k)_j
    (DLSR's `RFDN_beta1`); deriving keeps the top-2 predecessors (a 2C -> C conv in the derived network).
    The 1x1 conv over a scaled concat is sum_j softmax(beta)_j W_j out_j, W_j the j-th C x C block of its
    kernel: PC-DARTS's edge normalisation (a softmax over the edges into a node); with `space.scale_free`
    each edge W_j out_j is also rescaled to the RMS of out_j before beta weights it, so beta cannot be
    undone by the kernel's columns;
  * tail: concat of all cell outputs -> 1x1 conv + LeakyReLU (`cout`) -> 3x3 conv (`LR_conv`) plus the
    head's output -> conv + pixel shuffle (`upsampler`) for x2, x3 or x4;
  * the image-space skip of the derived network (`space.skip`, srcore/skip.py), with the upsampler's conv
    starting at zero, so the candidate ops are compared on the residual they actually have to learn.
Input and output are RGB in [0, 1] (inside, RGB * `space.rgb_range`, as the derived network).

The op mixture is softmax(alpha / tau) (`temperature`, set by the search loop), plus `noise` during a
weight step (SDARTS random smoothing); `weight_override` / `beta_override` replace the mixture and the
link weights outright (perturbation-based selection masks ops and inputs with them).

The architecture parameters are `nn.Parameter`s (`alphas`, `betas.{i}`), so they are in `state_dict()`
and in every checkpoint; `arch_parameters()` and `weight_parameters()` split `parameters()` into two
disjoint lists, for the two optimizers.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from nas.config import SpaceConfig
from nas.mixed import MixedOp, rescale_to
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
            DistillationCell(c, [MixedOp(c, ops, space.partial_channels, space.fuse, group=3 * k + s,
                                         scale_free=space.scale_free) for s in range(3)])
            for k in range(n))
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
        self.temperature = 1.0
        self.noise: torch.Tensor | None = None  # added to the op mixture weights (random smoothing)
        self.weight_override: torch.Tensor | None = None  # op mixture weights, alphas' shape
        self.beta_override: list[torch.Tensor] | None = None  # link weights, one vector per cell k >= 3

    # --- parameters ------------------------------------------------------------------------------------

    def arch_parameters(self) -> list[nn.Parameter]:
        return [self.alphas, *self.betas]

    def weight_parameters(self) -> list[nn.Parameter]:
        arch = {id(p) for p in self.arch_parameters()}
        return [p for p in self.parameters() if id(p) not in arch]

    def cell_alphas(self, k: int) -> torch.Tensor:
        """The (3, |ops|) raw alphas of cell k (0-based)."""
        return self.alphas if self.space.shared_alphas else self.alphas[k]

    def op_weights(self) -> torch.Tensor:
        """The op mixture weights: softmax(alpha / temperature) (+ noise), or the override."""
        if self.weight_override is not None:
            return self.weight_override
        weights = F.softmax(self.alphas / self.temperature, dim=-1)
        return weights if self.noise is None else weights + self.noise

    def link_weights(self, k: int) -> torch.Tensor:
        """softmax(beta) over the k earlier cells feeding cell k (0-based, k >= 2), or the override."""
        if self.beta_override is not None:
            return self.beta_override[k - 2]
        return F.softmax(self.betas[k - 2], dim=-1)

    # --- forward ---------------------------------------------------------------------------------------

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights = self.op_weights()
        r = self.space.rgb_range
        fea = self.fea_conv(x * r if r != 1 else x)
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
        y = self.upsampler[0](lr)
        return self.skip(x, y / r if r != 1 else y)

    def link(self, k: int, outs: list[torch.Tensor]) -> torch.Tensor:
        """Input of cell k (0-based, k >= 2): conv1x1(concat_j softmax(beta)_j * outs[j]) + LeakyReLU.

        The beta scaling is folded into the 1x1 kernel's input columns (the same function, without k
        scaled copies of the cell outputs). With `scale_free`, sum_j b_j rescale(W_j outs[j]) + bias.
        """
        conv1x1, act = self.links[k - 2]
        b = self.link_weights(k)
        if self.space.scale_free:
            c = self.space.channels
            edges = [rescale_to(F.conv2d(o, conv1x1.weight[:, j * c:(j + 1) * c]), o) for j, o in enumerate(outs)]
            return act(sum(b[j] * e for j, e in enumerate(edges)) + conv1x1.bias[:, None, None])
        b = b.repeat_interleave(self.space.channels)
        return act(F.conv2d(torch.cat(outs, dim=1), conv1x1.weight * b[:, None, None], conv1x1.bias))

    # --- the discrete result -----------------------------------------------------------------------------

    def genotype(self, exclude: tuple[str, ...] = ()) -> Genotype:
        """The argmax genotype of the current alphas and betas (see `nas.derive`)."""
        from nas.derive import derive_genotype

        return derive_genotype(self.alphas.detach(), [b.detach() for b in self.betas], self.space, exclude=exclude)
