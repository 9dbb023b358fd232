"""From architecture parameters to a `Genotype`: a pure function of alphas, betas and the space.

Rules:
  * cell level: each distillation stage keeps the op with the largest alpha (softmax is monotone, so
    the raw alphas decide; ties go to the op listed first). DARTS excludes only its `none` (zero) op
    from this argmax; this space has no zero op, and `identity` is a real, deployable choice here (the
    stage reduces to its residual add), so no op is excluded by default. `exclude` forbids ops (e.g.
    `("identity",)`) when at least one other op remains.
  * network level: cell k >= 3 keeps its `top_k` predecessors with the largest beta (ties: the earlier
    cell), listed in ascending order. Genotype version 1 fixes two inputs per cell, so top_k is 2.
  * shared alphas give a shared `cell:`; per-cell alphas give `cells:`.
The genotype records the searched op set, width, cell count, scale and image-space skip of the space,
and rgb_range 1 (the search trains on RGB in [0, 1]).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

from nas.config import SpaceConfig
from search_spaces.genotype import Genotype

TOP_K = 2  # inputs per cell in genotype version 1


def best_ops(alphas: torch.Tensor, ops: Sequence[str], exclude: Sequence[str] = ()) -> tuple[str, ...]:
    """argmax op name of each row of a (stages, |ops|) alpha tensor, skipping `exclude` if possible."""
    allowed = [i for i, name in enumerate(ops) if name not in exclude] or list(range(len(ops)))
    names = []
    for row in alphas.tolist():
        best = max(allowed, key=lambda i: (row[i], -i))
        names.append(ops[best])
    return tuple(names)


def top_inputs(beta: torch.Tensor, top_k: int = TOP_K) -> tuple[int, ...]:
    """The 1-based indices of the `top_k` largest betas (ties: the earlier cell), ascending."""
    values = beta.tolist()
    order = sorted(range(len(values)), key=lambda j: (-values[j], j))
    return tuple(sorted(j + 1 for j in order[:top_k]))


def derive_genotype(alphas: torch.Tensor, betas: Sequence[torch.Tensor], space: SpaceConfig, *,
                    top_k: int = TOP_K, exclude: Sequence[str] = ()) -> Genotype:
    """The genotype of raw `alphas` ((3, |ops|) shared or (N, 3, |ops|) per cell) and `betas` (one
    tensor of k-1 values for each cell k = 3..N)."""
    n, ops = space.num_cells, tuple(space.ops)
    if top_k != TOP_K:
        raise ValueError(f"top_k = {top_k}: genotype version 1 keeps exactly {TOP_K} inputs per cell")
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
    inputs = tuple(top_inputs(b.detach().cpu(), top_k) for b in betas)
    common = dict(ops=ops, inputs=inputs, channels=space.channels, num_cells=n, scale=space.scale, rgb_range=1.0,
                  skip=space.skip)
    if space.shared_alphas:
        return Genotype(cell=best_ops(alphas, ops, exclude), **common)
    return Genotype(cells=tuple(best_ops(a, ops, exclude) for a in alphas), **common)


def describe(g: Genotype) -> str:
    """A one-line summary for progress displays: the stage ops and the cell links."""
    if g.cell is not None:
        cells = "/".join(g.cell)
    else:
        cells = " | ".join("/".join(c) for c in g.cells)
    links = " ".join(f"{k}<{a},{b}" for k, (a, b) in enumerate(g.inputs, start=3))
    return f"{cells}  {links}"
