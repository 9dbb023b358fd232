"""The architecture step: the gradient of the search objective w.r.t. alphas and betas, then Adam.

Three algorithms (`arch.algorithm`); w are the weights, a the arch parameters, L_t / L_v the loss on a
training / validation batch, P(a) the cost penalty:

* `first_order` (DARTS first order):      g = dL_v(w, a)/da + dP/da
* `dlsr` (DLSR's released search):        g = dL_t(w, a)/da + dL_v(w, a)/da + dP/da
  The train term is the alpha gradient of the weight step's own backward (passed in as `train_grads`),
  so it costs nothing extra; it is taken at the weights before the weight update (DLSR re-runs the
  training batch after the update, one weight step later).
* `second_order` (DARTS second order): the gradient through one virtual SGD step
  w' = w - xi (dL_t(w, a)/dw + wd w):
      g = dL_v(w', a)/da - xi * d2L_t(w, a)/(da dw) . dL_v(w', a)/dw' + dP/da,
  the Hessian-vector product by central finite differences at w +- eps v, eps = r / |v| (r =
  `arch.hvp_r`, DARTS's 0.01; the ReLUs, L1 and HFEN's max make the loss piecewise smooth, so a large
  r averages over kinks: in float64 r = 1e-5 matches exact autograd to ~1e-10),
  v = dL_v(w', a)/dw'. With an Adam weight optimizer the virtual step is still the plain SGD step,
  xi = `arch.unrolled_lr` or the current weight learning rate (DARTS's momentum term is not used).
  The weights are moved in place and restored bit for bit from a copy; no second network is built.

Every gradient here is `torch.autograd.grad(loss, arch_params)`: weight gradients are never computed
in an arch step (except dL_v/dw' where the formula needs it), and each graph is freed before the next
forward, so two graphs are never alive at once.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from nas.config import ArchConfig

LossFn = Callable[[nn.Module, dict], torch.Tensor]  # (model, {"lq", "gt"}) -> scalar loss


class Architect:
    def __init__(self, model: nn.Module, cfg: ArchConfig, loss_fn: LossFn,
                 penalty: Callable[[torch.Tensor], torch.Tensor] | None = None):
        self.model, self.cfg, self.loss_fn, self.penalty = model, cfg, loss_fn, penalty
        self.arch_params: list[nn.Parameter] = list(model.arch_parameters())
        self.weight_params: list[nn.Parameter] = list(model.weight_parameters())
        self.optimizer = torch.optim.Adam(self.arch_params, lr=cfg.lr, betas=tuple(cfg.betas),
                                          weight_decay=cfg.weight_decay)

    # --- the step ----------------------------------------------------------------------------------------

    def step(self, train_batch: dict, val_batch: dict, *, train_grads: Sequence[torch.Tensor] | None = None,
             weight_lr: float = 0.0, weight_decay: float = 0.0) -> dict[str, float]:
        """One arch update; returns {"val_loss", "penalty", "grad_norm"}."""
        grads, val_loss = self.gradient(train_batch, val_batch, train_grads=train_grads, weight_lr=weight_lr,
                                        weight_decay=weight_decay)
        pen = 0.0
        if self.penalty is not None:
            p = self.penalty(self.model.alphas)
            if p.requires_grad:
                (g_alpha,) = torch.autograd.grad(p, [self.model.alphas])
                grads[0] = grads[0] + g_alpha
            pen = float(p.detach())
        for param, g in zip(self.arch_params, grads):
            param.grad = g.detach()
        norm = torch.nn.utils.clip_grad_norm_(self.arch_params, self.cfg.grad_clip) if self.cfg.grad_clip > 0 \
            else torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return {"val_loss": val_loss, "penalty": pen, "grad_norm": float(norm)}

    def gradient(self, train_batch: dict, val_batch: dict, *, train_grads: Sequence[torch.Tensor] | None = None,
                 weight_lr: float = 0.0, weight_decay: float = 0.0) -> tuple[list[torch.Tensor], float]:
        """The loss part of the arch gradient (no penalty) for the configured algorithm, and L_v."""
        algorithm = self.cfg.algorithm
        if algorithm == "second_order":
            xi = self.cfg.unrolled_lr if self.cfg.unrolled_lr is not None else weight_lr
            return self.unrolled_gradient(train_batch, val_batch, xi, weight_decay, self.cfg.hvp_r)
        val_loss = self.loss_fn(self.model, val_batch)
        grads = list(torch.autograd.grad(val_loss, self.arch_params))
        if algorithm == "dlsr":
            if train_grads is None:
                train_loss = self.loss_fn(self.model, train_batch)
                train_grads = torch.autograd.grad(train_loss, self.arch_params)
            grads = [g + t for g, t in zip(grads, train_grads)]
        elif algorithm != "first_order":
            raise ValueError(f"arch.algorithm = {algorithm!r}: expected first_order, dlsr or second_order")
        return grads, float(val_loss.detach())

    # --- second order ------------------------------------------------------------------------------------

    def unrolled_gradient(self, train_batch: dict, val_batch: dict, xi: float, weight_decay: float = 0.0,
                          r: float = 1e-2) -> tuple[list[torch.Tensor], float]:
        """DARTS's second-order arch gradient (see the module docstring); the weights end unchanged."""
        weights, arch = self.weight_params, self.arch_params
        backup = [w.detach().clone() for w in weights]
        try:
            train_loss = self.loss_fn(self.model, train_batch)
            dw = torch.autograd.grad(train_loss, weights)
            with torch.no_grad():
                for w, g in zip(weights, dw):
                    w.sub_(xi * (g + weight_decay * w))  # w' = w - xi (dL_t/dw + wd w)
            del dw, train_loss
            val_loss = self.loss_fn(self.model, val_batch)
            grads = torch.autograd.grad(val_loss, arch + weights)
            g_arch, v = list(grads[:len(arch)]), grads[len(arch):]
            hvp = self.hessian_vector_product(train_batch, backup, v, r)
            return [g - xi * h for g, h in zip(g_arch, hvp)], float(val_loss.detach())
        finally:
            with torch.no_grad():
                for w, b in zip(weights, backup):
                    w.copy_(b)

    def hessian_vector_product(self, batch: dict, at: Sequence[torch.Tensor], v: Sequence[torch.Tensor],
                               r: float = 1e-2) -> list[torch.Tensor]:
        """d2L(w, a)/(da dw) . v at weights `at`, by (dL/da(w + eps v) - dL/da(w - eps v)) / (2 eps)."""
        weights = self.weight_params
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(x) for x in v]))
        eps = r / float(norm.clamp_min(1e-12))
        grads = []
        for sign in (1.0, -1.0):
            with torch.no_grad():
                for w, w0, d in zip(weights, at, v):
                    w.copy_(w0).add_(d, alpha=sign * eps)
            loss = self.loss_fn(self.model, batch)
            grads.append(torch.autograd.grad(loss, self.arch_params))
        return [(p - n) / (2 * eps) for p, n in zip(*grads)]
