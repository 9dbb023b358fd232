"""Perturbation-based architecture selection (Wang et al., "Rethinking Architecture Selection in
Differentiable NAS", ICLR 2021), an alternative to reading the argmax of alpha.

The magnitude of alpha need not say how much an op matters to the supernet (an op's weights can
absorb its alpha). Selection by perturbation asks the supernet instead:
  * edge by edge (a distillation stage; with shared alphas the stage of every cell), each op still
    allowed is removed from the mixture (its weight set to 0, the others unchanged) and the
    validation loss measured; the edge keeps the op whose removal raises the loss most and becomes
    that op alone (a one-hot mixture); `tune()` (some weight steps with the decided edges fixed)
    then lets the supernet adapt before the next edge, as Wang et al. fine-tune between decisions;
  * then, cell by cell (k >= 3), each input is removed from the link (its weight set to 0) and the
    cell keeps the two inputs whose removal hurts most.
The supernet's `weight_override` / `beta_override` carry the masks; both are cleared at the end.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from nas.supernet import SuperNet


def perturbation_select(model: SuperNet, measure: Callable[[], float], tune: Callable[[], None] | None = None,
                        exclude: Sequence[str] = ()) -> tuple[list[str], list[tuple[int, int]], dict]:
    """(one op per edge, two inputs per cell k >= 3, the measured loss increases); see the module docstring.

    `measure()` returns the supernet's validation loss as it is now (with the overrides in place).
    """
    ops = tuple(model.space.ops)
    n_ops = len(ops)
    allowed = [i for i, name in enumerate(ops) if name not in exclude] or list(range(n_ops))
    with torch.no_grad():
        w = model.op_weights().detach().clone()
        betas = [model.link_weights(k).detach().clone() for k in range(2, model.space.num_cells)]
    rows = w.view(-1, n_ops)
    chosen: list[str] = []
    inputs: list[tuple[int, int]] = []
    record: dict = {"edges": [], "links": []}
    try:
        for e in range(rows.shape[0]):
            model.weight_override = w
            base = measure()
            increase = {}
            for i in allowed:
                masked = w.clone()
                masked.view(-1, n_ops)[e, i] = 0.0
                model.weight_override = masked
                increase[ops[i]] = measure() - base
            best = max(allowed, key=lambda i: (increase[ops[i]], -i))
            chosen.append(ops[best])
            rows[e] = 0.0
            rows[e, best] = 1.0
            model.weight_override = w
            record["edges"].append({"edge": e, "base_loss": base, "loss_increase": increase, "op": ops[best]})
            if tune is not None:
                tune()
        model.weight_override = w
        for idx in range(len(betas)):
            model.beta_override = betas
            base = measure()
            increase = []
            for j in range(len(betas[idx])):
                masked = list(betas)
                masked[idx] = betas[idx].clone()
                masked[idx][j] = 0.0
                model.beta_override = masked
                increase.append(measure() - base)
            order = sorted(range(len(increase)), key=lambda j: (-increase[j], j))
            keep = tuple(sorted(j + 1 for j in order[:2]))
            inputs.append(keep)
            kept = torch.zeros_like(betas[idx])
            for j in keep:
                kept[j - 1] = betas[idx][j - 1]
            betas[idx] = kept
            record["links"].append({"cell": idx + 3, "base_loss": base, "loss_increase": increase,
                                    "inputs": list(keep)})
    finally:
        model.weight_override = None
        model.beta_override = None
    return chosen, inputs, record
