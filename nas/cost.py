"""A cost term with a real gradient: the expected cost of the derived network under softmax(alpha).

FBNet / ProxylessNAS style: the cost of a derived DLSR network is additive over its parts,

    cost(net) = fixed + sum over cells k, stages s of c[op(k, s)],

where `fixed` is everything that does not depend on the op choice (head, distillation 1x1 convs, c4,
c5, ESA, the 2C -> C link convs, tail) and c[op] the cost of one stage op at width C. Relaxed, the
expected cost E = fixed + sum_k sum_s p_{k,s} . c, p = softmax(alpha / tau) the mixture weights, is
differentiable in alpha. The link convs of the derived network are 2C -> C whichever two cells are
kept, so the cost does not depend on beta (its gradient there is zero).

The penalty is a hinge around a target, weight * relu(E / target - 1), or two-sided, weight *
|E / target - 1| (never a bare linear pull, which drives every edge to the cheapest op), times a ramp
factor the search loop raises from 0 to 1 after the warm-up.

The per-op table `c` is one of
  * params:  parameters of the op (count);
  * macs:    multiply-accumulates of one forward pass at LR size `input_size` (count);
  * latency: median forward time in milliseconds at `input_size` on the search device, measured once
             (a lookup table, with the fixed part measured as the network with every stage op set to
             `identity`). A table is plain data: it is stored in the search checkpoint and reused on
             resume, so a resumed search sees the same costs.
"""
from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from nas.config import CostConfig, SpaceConfig
from search_spaces.genotype import Genotype
from search_spaces.network import DLSRNet
from search_spaces.ops import build_op
from srcore.cost import count_flops, count_params

UNITS = {"params": "params", "macs": "MACs", "latency": "ms"}


@dataclass
class CostTable:
    """Per-op costs of one stage op at width `channels`, and the op-independent rest of the network."""

    kind: str
    unit: str
    ops: dict[str, float]
    fixed: float
    channels: int
    num_cells: int
    input_size: tuple[int, int]
    device: str = "cpu"
    threads: int = 0

    def to_dict(self) -> dict:
        d = asdict(self)
        d["input_size"] = list(self.input_size)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> CostTable:
        return cls(**{**d, "input_size": tuple(d["input_size"])})

    def vector(self, names: Sequence[str]) -> torch.Tensor:
        """The costs of `names`, in that order, as a float64 tensor."""
        return torch.tensor([self.ops[n] for n in names], dtype=torch.float64)


def identity_genotype(space: SpaceConfig) -> Genotype:
    """The derived network with every stage op `identity`: what the network costs besides its stage ops."""
    inputs = tuple((k - 2, k - 1) for k in range(3, space.num_cells + 1))
    return Genotype(ops=("identity",), cell=("identity",) * 3, inputs=inputs, channels=space.channels,
                    num_cells=space.num_cells, scale=space.scale)


def _median_ms(module: nn.Module, x: torch.Tensor, repeats: int) -> float:
    sync = torch.cuda.synchronize if x.device.type == "cuda" else (lambda *a: None)
    with torch.no_grad():
        for _ in range(2):
            module(x)
        times = []
        for _ in range(repeats):
            sync(x.device)
            t0 = time.perf_counter()
            module(x)
            sync(x.device)
            times.append(time.perf_counter() - t0)
    return 1000.0 * statistics.median(times)


def build_cost_table(space: SpaceConfig, cost: CostConfig, device: str | torch.device = "cpu") -> CostTable:
    """Measure (or count) the per-op table for `cost.kind` on `device`."""
    kind = cost.kind
    if kind not in UNITS:
        raise ValueError(f"cost.kind = {kind!r}: no table to build (expected one of {', '.join(UNITS)})")
    device = torch.device(device)
    with torch.random.fork_rng(devices=[]):  # building ops draws initial weights: keep the caller's RNG
        return _build_table(space, cost, kind, device)


def _build_table(space: SpaceConfig, cost: CostConfig, kind: str, device: torch.device) -> CostTable:
    c, (h, w) = space.channels, cost.input_size
    base = DLSRNet(identity_genotype(space)).to(device).eval()
    ops: dict[str, float] = {}
    if kind == "params":
        for name in space.ops:
            ops[name] = float(count_params(build_op(name, c)))
        fixed = float(count_params(base))
    elif kind == "macs":
        x = torch.zeros(1, c, h, w, device=device)
        for name in space.ops:
            ops[name] = float(count_flops(build_op(name, c).to(device).eval(), x)["macs"])
        fixed = float(count_flops(base, torch.zeros(1, 3, h, w, device=device))["macs"])
    else:
        x = torch.full((1, c, h, w), 0.5, device=device)
        for name in space.ops:
            ops[name] = _median_ms(build_op(name, c).to(device).eval(), x, cost.latency_repeats)
        fixed = _median_ms(base, torch.full((1, 3, h, w), 0.5, device=device), cost.latency_repeats)
    return CostTable(kind, UNITS[kind], ops, fixed, c, space.num_cells, (h, w), str(device),
                     torch.get_num_threads() if device.type == "cpu" else 0)


class CostModel(nn.Module):
    """E[cost](alphas) and the penalty of `CostConfig`; no parameters of its own.

    `alphas` has shape (3, |ops|) (shared by all N cells: counted N times) or (N, 3, |ops|).
    """

    def __init__(self, table: CostTable, space: SpaceConfig, cfg: CostConfig):
        super().__init__()
        self.table, self.cfg, self.space = table, cfg, space
        self.register_buffer("op_cost", table.vector(space.ops), persistent=False)
        if cfg.target is None:
            raise ValueError("cost.target is needed for a cost penalty")

    def expected(self, alphas: torch.Tensor, tau: float = 1.0) -> torch.Tensor:
        """fixed + sum over cells and stages of softmax(alpha / tau) . cost, differentiable in alphas."""
        probs = F.softmax(alphas.to(self.op_cost.dtype) / tau, dim=-1)
        searched = (probs * self.op_cost).sum()
        if self.space.shared_alphas:
            searched = searched * self.space.num_cells
        return self.table.fixed + searched

    def penalty(self, alphas: torch.Tensor, tau: float = 1.0, ramp: float = 1.0) -> torch.Tensor:
        """weight * ramp * relu(E / target - 1) (hinge) or |E / target - 1| (two_sided), in alphas' dtype."""
        gap = self.expected(alphas, tau) / self.cfg.target - 1.0
        gap = F.relu(gap) if self.cfg.mode == "hinge" else gap.abs()
        return (self.cfg.weight * ramp * gap).to(alphas.dtype)

    def derived_cost(self, ops_per_cell: Sequence[Sequence[str]]) -> float:
        """The table's cost of a derived network given its stage ops, one triple per cell."""
        return self.table.fixed + sum(self.table.ops[name] for cell in ops_per_cell for name in cell)

    def genotype_cost(self, genotype: Genotype) -> dict:
        """The table's cost of a derived genotype beside the target, for the derive report."""
        value = self.derived_cost([genotype.cell_ops(k + 1) for k in range(genotype.num_cells)])
        return {"kind": self.table.kind, "unit": self.table.unit, "value": value, "target": self.cfg.target,
                "ratio_to_target": value / self.cfg.target}


def op_param_counts(ops: Sequence[str], channels: int) -> dict[str, float]:
    """Parameters of each stage op at width `channels` (without touching the caller's RNG)."""
    with torch.random.fork_rng(devices=[]):
        return {name: float(count_params(build_op(name, channels))) for name in ops}
