"""How hard each loss term pulls on the student: gradient norms per term at the start of training.

A feature term's weight decides how much of the student's update it takes from the pixel loss, and the
right number depends on the student: a student with an image-space skip starts at bicubic, so its L1
gradient is small, and a weight set for a student without a skip lets the feature term dominate (and with
gradient clipping, crowd the pixel loss out of every step). `term_gradient_norms` measures, on the first
`batches` training batches of a `Trainer` (its data, teachers and seed; before any update), the norm of
each *unweighted* term's gradient with respect to the student's parameters; `weights_for_ratio` turns them
into the weights at which every other term's gradient is `ratio` times the reference term's (L1).

    trainer = Trainer(cfg, out_dir)
    norms = term_gradient_norms(trainer, batches=4)      # {"l1": 0.011, "fitnet": 0.35}
    weights_for_ratio(norms, ratio=0.25, reference="l1")  # {"fitnet": 0.0079}

Only training batches are used: no validation or benchmark image decides a weight.
"""
from __future__ import annotations

import itertools

import torch

from .trainer import Trainer


def term_gradient_norms(trainer: Trainer, batches: int = 4) -> dict[str, float]:
    """Mean over `batches` training batches of |d term / d student parameters| per unweighted term."""
    params = [p for p in trainer.student.parameters() if p.requires_grad]
    weights = dict(trainer.criterion.weights)
    sums: dict[str, float] = {}
    trainer.student.train()
    for step, batch in enumerate(itertools.islice(trainer._batches(0), batches)):
        losses = trainer.step_losses(batch, step)
        names = [n for n in losses if n != "total"]
        for i, name in enumerate(names):
            grads = torch.autograd.grad(losses[name], params, retain_graph=i < len(names) - 1, allow_unused=True)
            norm = torch.sqrt(sum((g.float() ** 2).sum() for g in grads if g is not None)).item()
            w = weights[name]
            sums[name] = sums.get(name, 0.0) + (norm / w if w else 0.0)
    return {k: v / batches for k, v in sums.items()}


def weights_for_ratio(norms: dict[str, float], ratio: float, reference: str = "l1") -> dict[str, float]:
    """The weight of every term but `reference` at which its gradient norm is `ratio` x the reference's."""
    if reference not in norms:
        raise ValueError(f"no {reference!r} term among {sorted(norms)}")
    ref = norms[reference]
    return {k: ratio * ref / v for k, v in norms.items() if k != reference and v > 0}
