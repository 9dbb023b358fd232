"""What the supernet believes: the validation loss of a genotype evaluated inside a trained supernet.

    losses = supernet_losses(search, genotypes, batches=8)

A one-shot search ranks architectures by how they do with the supernet's shared weights. For a genotype
of the search's space, the supernet is run with the genotype's ops alone (a one-hot op mixture on every
edge, `SuperNet.weight_override`) and its two links per cell alone (the supernet's link weights of the two
kept inputs, the others zero, `beta_override`, as perturbation-based selection masks them), and its loss
(the search loss: L1, + HFEN if configured) is measured on fixed validation batches of the search. Set
beside the PSNR the same genotypes reach when trained on their own, it says whether the supernet's ranking
predicts the stand-alone ranking, the premise of weight-sharing NAS (`rank_correlation` gives Kendall's tau).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

from nas import distributed
from nas.search import Search, epoch_batches, load_batch
from search_spaces.genotype import Genotype


def _fits(search: Search, g: Genotype) -> None:
    s = search.cfg.space
    used = {op for k in range(1, g.num_cells + 1) for op in g.cell_ops(k)}
    if (g.channels, g.num_cells, g.scale) != (s.channels, s.num_cells, s.scale) or not used <= set(s.ops):
        raise ValueError(f"the genotype (C={g.channels}, {g.num_cells} cells, x{g.scale}, ops {sorted(used)}) is not "
                         f"in the search's space (C={s.channels}, {s.num_cells} cells, x{s.scale}, ops {list(s.ops)})")
    if s.shared_alphas and g.cell is None:
        raise ValueError("the search shares one cell across cells; the genotype has a cell per position")


def overrides(search: Search, g: Genotype) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The op weights (one-hot per edge, alphas' shape) and link weights (kept inputs only) of `g`."""
    _fits(search, g)
    model, ops = search.model, list(search.cfg.space.ops)
    shape = model.alphas.shape
    w = torch.zeros(shape, device=model.alphas.device)
    rows = w.view(-1, len(ops))
    names = g.cell if search.cfg.space.shared_alphas else [op for k in range(g.num_cells) for op in g.cell_ops(k + 1)]
    for e, name in enumerate(names):
        rows[e, ops.index(name)] = 1.0
    links = []
    with torch.no_grad():
        for k in range(3, g.num_cells + 1):
            full = model.link_weights(k - 1).detach()
            kept = torch.zeros_like(full)
            for j in g.cell_inputs(k):
                kept[j - 1] = full[j - 1]
            links.append(kept)
    return w, links


@torch.no_grad()
def supernet_losses(search: Search, genotypes: Sequence[Genotype], batches: int = 8) -> list[float]:
    """The supernet's validation loss of each genotype (lower = the supernet thinks it better)."""
    cfg = search.cfg
    order = epoch_batches(len(search.val_ds), cfg.data.batch_size, cfg.loop.seed + 17, 0)[:batches]
    data = [load_batch(search.val_ds, 0, distributed.shard(b), search.device, cfg.space.channels_last) for b in order]
    model = search.model
    was_training = model.training
    model.eval()
    out = []
    try:
        for g in genotypes:
            model.weight_override, model.beta_override = overrides(search, g)
            out.append(sum(float(search.loss(model, b)) for b in data) / len(data))
    finally:
        model.weight_override = model.beta_override = None
        model.train(was_training)
    return out


def rank_correlation(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Kendall's tau-b of two equally long sequences (None for fewer than 2 items or a constant one)."""
    n = len(x)
    if n != len(y):
        raise ValueError(f"rank_correlation: {n} and {len(y)} values")
    concordant = discordant = ties_x = ties_y = 0
    for i in range(n):
        for j in range(i + 1, n):
            dx, dy = x[i] - x[j], y[i] - y[j]
            if dx == 0 and dy == 0:
                continue
            if dx == 0:
                ties_x += 1
            elif dy == 0:
                ties_y += 1
            elif (dx > 0) == (dy > 0):
                concordant += 1
            else:
                discordant += 1
    denom = ((concordant + discordant + ties_x) * (concordant + discordant + ties_y)) ** 0.5
    return (concordant - discordant) / denom if denom else None
