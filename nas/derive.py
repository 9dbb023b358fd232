"""From architecture parameters to a `Genotype`: a pure function of alphas, betas and the space.

Rules:
  * cell level: each distillation stage keeps the op with the largest alpha (softmax is monotone, so
    the raw alphas decide; ties go to the op listed first). DARTS excludes only its `none` (zero) op
    from this argmax; this space has no zero op, and `identity` is a real, deployable choice here (the
    stage reduces to its residual add), so no op is excluded by default. `exclude` forbids ops (e.g.
    `("identity",)`) when at least one other op remains.
  * network level: cell k >= 3 keeps its two predecessors with the largest beta (ties: the earlier
    cell), listed in ascending order (the genotype fixes two inputs per cell).
  * shared alphas give a shared `cell:`; per-cell alphas give `cells:`.
The genotype records the searched op set, width, cell count, scale and image-space skip of the space,
and its rgb_range (the range the supernet worked in). Nothing of the search-only machinery (partial
channels, scale-free rescaling, temperature) is in a derived network. `nas.select` derives by
perturbation instead of argmax.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

from nas.config import SpaceConfig
from search_spaces.genotype import Genotype
from srcore.checkpoint import find_non_finite

TOP_K = 2  # inputs per cell k >= 3 in a genotype


def best_ops(alphas: torch.Tensor, ops: Sequence[str], exclude: Sequence[str] = ()) -> tuple[str, ...]:
    """argmax op name of each row of a (stages, |ops|) alpha tensor, skipping `exclude` if possible."""
    allowed = [i for i, name in enumerate(ops) if name not in exclude] or list(range(len(ops)))
    names = []
    for row in alphas.tolist():
        best = max(allowed, key=lambda i: (row[i], -i))
        names.append(ops[best])
    return tuple(names)


def top_inputs(beta: torch.Tensor) -> tuple[int, ...]:
    """The 1-based indices of the TOP_K largest betas (ties: the earlier cell), ascending."""
    values = beta.tolist()
    order = sorted(range(len(values)), key=lambda j: (-values[j], j))
    return tuple(sorted(j + 1 for j in order[:TOP_K]))


def check_arch_finite(alphas: torch.Tensor, betas: Sequence[torch.Tensor], source: str) -> None:
    """A ValueError naming `source` and the first of alphas, betas.0, ... holding NaN or Inf: a genotype
    read off a diverged search would be an argmax over garbage."""
    bad = find_non_finite({"alphas": alphas.detach(), **{f"betas.{i}": b.detach() for i, b in enumerate(betas)}})
    if bad is not None:
        raise ValueError(f"{source}: {bad}; the search diverged, so no genotype is derived from it")


def derive_genotype(alphas: torch.Tensor, betas: Sequence[torch.Tensor], space: SpaceConfig, *,
                    exclude: Sequence[str] = (), source: str = "architecture parameters") -> Genotype:
    """The genotype of raw `alphas` ((3, |ops|) shared or (N, 3, |ops|) per cell) and `betas` (one
    tensor of k-1 values for each cell k = 3..N): argmax per edge, top two inputs per cell. Non-finite
    values are a ValueError naming `source` (the checkpoint or history file they come from)."""
    n, ops = space.num_cells, tuple(space.ops)
    unknown = [name for name in exclude if name not in ops]
    if unknown:
        raise ValueError(f"exclude: {unknown} not in the searched ops ({', '.join(ops)})")
    alphas = alphas.detach().cpu()
    expected = (3, len(ops)) if space.shared_alphas else (n, 3, len(ops))
    if tuple(alphas.shape) != expected:
        raise ValueError(f"alphas of shape {tuple(alphas.shape)} do not fit the space (expected {expected})")
    if len(betas) != n - 2 or any(b.numel() != k - 1 for b, k in zip(betas, range(3, n + 1))):
        raise ValueError(f"betas {[b.numel() for b in betas]} do not fit {n} cells "
                         f"(expected sizes {list(range(2, n))})")
    check_arch_finite(alphas, betas, source)
    inputs = tuple(top_inputs(b.detach().cpu()) for b in betas)
    return make_genotype(space, best_ops(alphas.reshape(-1, len(ops)), ops, exclude), inputs)


def make_genotype(space: SpaceConfig, edge_ops: Sequence[str], inputs: Sequence[tuple[int, int]]) -> Genotype:
    """The genotype of the space with one op per searched edge (3 shared, or 3 per cell, cell-major)."""
    common = dict(ops=tuple(space.ops), inputs=tuple(inputs), channels=space.channels, num_cells=space.num_cells,
                  scale=space.scale, rgb_range=space.rgb_range, skip=space.skip)
    edge_ops = tuple(edge_ops)
    if space.shared_alphas:
        return Genotype(cell=edge_ops, **common)
    return Genotype(cells=tuple(edge_ops[3 * k:3 * k + 3] for k in range(space.num_cells)), **common)


def describe(g: Genotype) -> str:
    """A one-line summary for progress displays: the stage ops and the cell links."""
    if g.cell is not None:
        cells = "/".join(g.cell)
    else:
        cells = " | ".join("/".join(c) for c in g.cells)
    links = " ".join(f"{k}<{a},{b}" for k, (a, b) in enumerate(g.inputs, start=3))
    return f"{cells}  {links}"
