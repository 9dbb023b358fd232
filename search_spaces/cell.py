"""The derived (discrete) information-distillation cell of RFDN / DLSR, built from three op names.

An information-distillation cell refines C-channel LR features in three stages. At stage k:
  * a 1x1 conv (C -> C/2) + LeakyReLU(0.05) "distills" part of the features and sets it aside (`c{k}_d`);
  * the remaining features go through the searched op (C -> C, `c{k}_r`), are added to the stage input
    (a residual), and pass a LeakyReLU(0.05); this is the next stage's input.
After three stages a 3x3 conv (C -> C/2) + LeakyReLU(0.05) takes the last remaining features (`c4`); the
four C/2 parts are concatenated (distilled 1, 2, 3, then c4), fused back to C by a 1x1 conv (`c5`, no
activation) and reweighted per pixel by enhanced spatial attention (`esa`, RFDN's full ESA). The cell has
no cell-level residual. In RFDN all three searched ops are 3x3 convs with bias; DLSR searches them.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from search_spaces.ops import build_op
from srcore.layers import ESA, conv

NEG_SLOPE = 0.05  # LeakyReLU slope used throughout RFDN / DLSR


class DistillationCell(nn.Module):
    """RFDN/DLSR distillation cell with searched ops `ops = [stage1, stage2, stage3]`.

    Each entry of `ops` is an op name from `search_spaces.ops.OPS`, or an already-built C -> C module
    (a search-time mixed op, for instance). State-dict keys match DLSR's `RFDB_train`.
    """

    def __init__(self, channels: int, ops: Sequence[str | nn.Module]):
        super().__init__()
        if len(ops) != 3:
            raise ValueError(f"a distillation cell takes exactly 3 ops (one per stage), got {len(ops)}")
        c, d = channels, channels // 2
        stage_ops = [op if isinstance(op, nn.Module) else build_op(op, c) for op in ops]
        self.c1_d, self.c1_r = conv(c, d, 1), stage_ops[0]
        self.c2_d, self.c2_r = conv(c, d, 1), stage_ops[1]
        self.c3_d, self.c3_r = conv(c, d, 1), stage_ops[2]
        self.c4 = conv(c, d, 3)
        self.act = nn.LeakyReLU(NEG_SLOPE)
        self.c5 = conv(4 * d, c, 1)
        self.esa = ESA(c, full=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d1 = self.act(self.c1_d(x))
        r1 = self.act(self.c1_r(x) + x)
        d2 = self.act(self.c2_d(r1))
        r2 = self.act(self.c2_r(r1) + r1)
        d3 = self.act(self.c3_d(r2))
        r3 = self.act(self.c3_r(r2) + r2)
        r4 = self.act(self.c4(r3))
        return self.esa(self.c5(torch.cat([d1, d2, d3, r4], dim=1)))
