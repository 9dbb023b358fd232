"""The search spaces the engine knows, by name: what the search loop needs from each.

    space = space_of(config.space)          # DLSR for a SpaceConfig, ESR for an ESRSpaceConfig
    model = space.supernet(config.space, init_std)

Each entry provides
  supernet(space, init_std)           the relaxed network: `alphas` (the parameter the cost term reads),
                                      `betas` (a list), `temperature`, `noise`, `arch_parameters()`,
                                      `weight_parameters()`, `genotype(exclude)`;
  cost_table(space, cost, device)     the per-choice cost table (`nas.cost.CostTable`, plain data) measured
                                      or counted on `device`;
  cost_model(table, space, cost)      `expected(alphas, tau)` and `penalty(alphas, tau, ramp)`;
  derive(alphas, betas, space, exclude, source)  the argmax genotype of raw architecture parameters
                                      (non-finite ones: a ValueError naming `source`);
  report(alphas, betas, space, tau, table, decided_prob, genotype)  the collapse report (nas/report.py's shape);
  choices(space)                      the candidate names written to alpha_history.jsonl ("ops");
  describe(genotype)                  a one-line summary.
Registered: `dlsr` (nas/supernet.py, nas/cost.py, nas/derive.py, nas/report.py; DLSR's two-level space) and
`esr` (nas/esr_supernet.py, nas/esr_cost.py, nas/esr_derive.py; the efficient-SR space of the NTIRE winners).
"""
from __future__ import annotations

import torch

from nas.config import ESRSpaceConfig, SpaceConfig
from nas.cost import CostModel, CostTable, build_cost_table, op_param_counts
from nas.derive import check_arch_finite, derive_genotype, describe
from nas.esr_cost import ESRCostModel, build_esr_cost_table, conv_costs
from nas.esr_derive import derive_esr, describe_esr, esr_report
from nas.esr_supernet import ESRSuperNet, layout
from nas.report import collapse_report
from nas.supernet import SuperNet


class DLSR:
    name = "dlsr"
    supernet = staticmethod(SuperNet)
    cost_table = staticmethod(build_cost_table)
    cost_model = staticmethod(CostModel)
    describe = staticmethod(describe)

    @staticmethod
    def derive(alphas, betas, space: SpaceConfig, exclude=(), source: str = "architecture parameters"):
        return derive_genotype(alphas, betas, space, exclude=exclude, source=source)

    @staticmethod
    def choices(space: SpaceConfig) -> list[str]:
        return list(space.ops)

    @staticmethod
    def report(alphas, betas, space: SpaceConfig, tau: float, table: CostTable | None, decided_prob: float,
               genotype=None, chosen=None, inputs=None) -> dict:
        params = op_param_counts(space.ops, space.channels)
        costs, unit = (dict(table.ops), table.unit) if table is not None else (params, "params")
        with torch.no_grad():
            weights = torch.softmax(alphas.detach().double() / tau, dim=-1)
        if genotype is not None and chosen is None:
            chosen = [op for k in range(1 if genotype.cell is not None else genotype.num_cells)
                      for op in genotype.cell_ops(k + 1)]
            inputs = genotype.inputs
        return collapse_report(weights, list(betas), space, costs, params, decided_prob=decided_prob, chosen=chosen,
                               inputs=inputs, cost_unit=unit)


class ESR:
    name = "esr"
    supernet = staticmethod(ESRSuperNet)
    cost_table = staticmethod(build_esr_cost_table)
    cost_model = staticmethod(ESRCostModel)
    describe = staticmethod(describe_esr)

    @staticmethod
    def derive(alphas, betas, space: ESRSpaceConfig, exclude=(), source: str = "architecture parameters"):
        check_arch_finite(alphas, list(betas), source)
        return derive_esr(alphas, betas, space, exclude=exclude)

    @staticmethod
    def choices(space: ESRSpaceConfig) -> list[str]:
        return [f"{s.name}:{c}" for s in layout(space) if s.stop > s.start for c in s.candidates]

    @staticmethod
    def report(alphas, betas, space: ESRSpaceConfig, tau: float, table: CostTable | None, decided_prob: float,
               genotype=None, exclude=()) -> dict:
        costs, unit = conv_costs(table, space)
        return esr_report(alphas, betas[0], space, tau, costs, decided_prob=decided_prob, cost_unit=unit,
                          genotype=genotype, exclude=exclude)


SPACES = {"dlsr": DLSR, "esr": ESR}


def space_of(space_config) -> type[DLSR] | type[ESR]:
    """The registry entry of a space config (`SpaceConfig`: dlsr, `ESRSpaceConfig`: esr)."""
    return ESR if isinstance(space_config, ESRSpaceConfig) else DLSR
