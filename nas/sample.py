"""Random genotypes of a search space at matched parameters: the baseline a search has to beat.

    result = sample_matched(space, target=150_000, tolerance=0.10, count=5, seed=0)
    result.genotypes, result.params, result.draws

A random genotype is drawn from the same space the search explores (`nas.config.SpaceConfig`: the same op
list, width, depth, skip and sharing of the cell): each searched edge takes an op uniformly from
`space.ops` (one shared cell, or one cell per position with per-cell alphas), and each cell k >= 3 takes
two distinct earlier cells uniformly from the k - 1 it could read. Draws are rejected until `count`
distinct genotypes have parameters within `tolerance` of `target` (|params / target - 1| <= tolerance);
`draws` counts every draw, accepted or not, so the acceptance rate is on record. The draws come from
`random.Random(seed)` alone: the same arguments give the same genotypes on every machine.

Parameters are counted exactly without building each network: a derived network's parameters are the
op-independent rest (the network with every stage op `identity`) plus the parameters of its stage ops
(`genotype_params`; `tests/test_study.py` checks it against the built network).
"""
from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from nas.config import SpaceConfig
from nas.cost import identity_genotype, op_param_counts
from nas.derive import make_genotype
from search_spaces.genotype import Genotype
from search_spaces.network import DLSRNet
from srcore.cost import count_params


@dataclass(frozen=True)
class SampleResult:
    genotypes: tuple[Genotype, ...]
    params: tuple[int, ...]
    draws: int  # genotypes drawn in all (accepted, rejected for their parameters, or repeats)
    target: float
    tolerance: float
    seed: int


class ParamCounter:
    """Exact parameter counts of the derived networks of `space` (see the module docstring)."""

    def __init__(self, space: SpaceConfig):
        self.space = space
        self.fixed = count_params(DLSRNet(identity_genotype(space)))
        self.ops = {k: int(v) for k, v in op_param_counts(space.ops, space.channels).items()}

    def __call__(self, g: Genotype) -> int:
        return self.fixed + sum(self.ops[op] for k in range(1, g.num_cells + 1) for op in g.cell_ops(k))

    def range(self) -> tuple[int, int]:
        """The fewest and the most parameters a genotype of the space can have."""
        edges = 3 * self.space.num_cells
        return self.fixed + edges * min(self.ops.values()), self.fixed + edges * max(self.ops.values())


def genotype_params(space: SpaceConfig, g: Genotype) -> int:
    """Parameters of the derived network of `g` (a genotype of `space`)."""
    return ParamCounter(space)(g)


def random_genotype(space: SpaceConfig, rng: random.Random) -> Genotype:
    """One genotype of `space`: an op per searched edge and two distinct earlier cells per cell k >= 3."""
    edges = 3 if space.shared_alphas else 3 * space.num_cells
    ops = [rng.choice(space.ops) for _ in range(edges)]
    inputs = [tuple(sorted(rng.sample(range(1, k), 2))) for k in range(3, space.num_cells + 1)]
    return make_genotype(space, ops, inputs)


def sample_matched(space: SpaceConfig, target: float, tolerance: float, count: int, seed: int = 0, *,
                   max_draws: int = 1_000_000, exclude: Sequence[Genotype] = ()) -> SampleResult:
    """`count` distinct random genotypes of `space` with parameters within `tolerance` of `target`
    (rejection sampling from `random.Random(seed)`); `exclude` lists genotypes not to accept (they still
    count as draws). A ValueError when `max_draws` draws do not find them (the target is out of the
    space's range, or too few genotypes of the space are that close to it)."""
    if count < 1 or tolerance < 0 or target <= 0:
        raise ValueError(f"sample_matched: count >= 1, tolerance >= 0 and target > 0 are required "
                         f"(got {count}, {tolerance}, {target})")
    counter = ParamCounter(space)
    lo, hi = counter.range()
    if target * (1 + tolerance) < lo or target * (1 - tolerance) > hi:
        raise ValueError(f"a parameter target of {target:,.0f} ± {tolerance:.0%} is outside the space's range "
                         f"({lo:,} to {hi:,} parameters)")
    rng = random.Random(seed)
    seen = set(exclude)
    genotypes, params = [], []
    draws = 0
    while len(genotypes) < count:
        if draws >= max_draws:
            raise ValueError(f"found only {len(genotypes)} of {count} distinct genotypes within {tolerance:.0%} of "
                             f"{target:,.0f} parameters in {max_draws:,} draws; widen the tolerance or move the "
                             "target")
        g = random_genotype(space, rng)
        draws += 1
        p = counter(g)
        if abs(p / target - 1) <= tolerance and g not in seen:
            seen.add(g)
            genotypes.append(g)
            params.append(p)
    return SampleResult(tuple(genotypes), tuple(params), draws, float(target), float(tolerance), seed)
