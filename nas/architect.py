"""The architecture step: the gradient of the search objective w.r.t. alphas and betas, then Adam.

Four algorithms (`arch.algorithm`); w are the weights, a the arch parameters, L_t / L_v the loss on a
training / validation batch, P(a) the cost penalty:

* `first_order` (DARTS first order):      g = dL_v(w, a)/da + dP/da
* `dlsr_exact` (DLSR's released search, `search/RFDN6_para_loss.py`): after the weight step on the
  training batch, that batch is run again at the new weights w+:
                                          g = dL_t(w+, a)/da + dL_v(w+, a)/da + dP/da
* `dlsr_reuse`: the same sum with the train term taken from the weight step's own backward, at w
  before the update (passed in as `train_grads`): one forward and backward cheaper, one step stale.
* `second_order` (DARTS second order), run before the weight step on the same training batch: the
  gradient through the step the weight optimizer is about to take, w' = w - D(g), g = dL_t(w, a)/dw
  (+ weight decay):
      g_a = dL_v(w', a)/da - d2L_t(w, a)/(da dw) . (J v) + dP/da,   v = dL_v(w', a)/dw',
  J = dD/dg, the (diagonal) Jacobian of the optimizer's step in its gradient. For the search's Adam
  weight optimizer D and J come from its moments and step count (`adam_step`), so the correction has
  the size of the step Adam really takes; with `arch.unrolled_lr` = xi the virtual step is DARTS's
  plain w - xi g and J = xi. DARTS's xi is its SGD learning rate, i.e. its optimizer's effective step;
  xi = Adam's learning rate would make the correction about |g| / sqrt(v) times too small.
  The Hessian-vector product is by central finite differences at w +- eps J v, eps = r / |J v| (r =
  `arch.hvp_r`, DARTS's 0.01; in float64 r = 1e-5 matches exact autograd). The weights are moved in
  place and restored bit for bit; no second network is built.

Every gradient here is `torch.autograd.grad(loss, ...)` on this process's share of the batch, averaged
over processes (`reduce`, `nas.distributed.average`); each graph is freed before the next forward.
`step` returns the loss part and the cost part of the alpha gradient separately.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from nas.config import ArchConfig

LossFn = Callable[[nn.Module, dict], torch.Tensor]  # (model, {"lq", "gt"}) -> scalar loss
Reduce = Callable[[Sequence[torch.Tensor]], list[torch.Tensor]]


def adam_step(optimizer: torch.optim.Adam, params: Sequence[torch.Tensor], grads: Sequence[torch.Tensor],
              lr: float) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """The step D(g) that `optimizer` (torch.optim.Adam, no amsgrad) would subtract from each param for
    gradients `grads` (weight decay already added) at learning rate `lr`, and its derivative dD/dg
    (elementwise: Adam's step of a parameter depends on that parameter's gradient only)."""
    group = optimizer.param_groups[0]
    if group.get("amsgrad") or group.get("maximize"):
        raise ValueError("second order: the virtual Adam step supports neither amsgrad nor maximize")
    b1, b2 = group["betas"]
    eps = group["eps"]
    steps, jacobians = [], []
    for p, g in zip(params, grads):
        state = optimizer.state.get(p, {})
        t = float(state["step"]) + 1 if "step" in state else 1.0
        m = state.get("exp_avg", torch.zeros_like(p))
        v = state.get("exp_avg_sq", torch.zeros_like(p))
        c1, c2 = 1 - b1 ** t, 1 - b2 ** t
        m1 = b1 * m + (1 - b1) * g
        v1 = b2 * v + (1 - b2) * g * g
        root = v1.sqrt()
        denom = root / c2 ** 0.5 + eps
        steps.append(lr / c1 * m1 / denom)
        d_denom = torch.where(root > 0, (1 - b2) * g / (c2 ** 0.5 * root.clamp_min(1e-30)), torch.zeros_like(g))
        jacobians.append(lr / c1 * ((1 - b1) * denom - m1 * d_denom) / denom ** 2)
    return steps, jacobians


class Architect:
    def __init__(self, model: nn.Module, cfg: ArchConfig, loss_fn: LossFn,
                 penalty: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 weight_optimizer: torch.optim.Optimizer | None = None, reduce: Reduce | None = None):
        self.model, self.cfg, self.loss_fn, self.penalty = model, cfg, loss_fn, penalty
        self.weight_optimizer = weight_optimizer
        self.reduce: Reduce = reduce or list
        self.arch_params: list[nn.Parameter] = list(model.arch_parameters())
        self.weight_params: list[nn.Parameter] = list(model.weight_parameters())
        self.optimizer = torch.optim.Adam(self.arch_params, lr=cfg.lr, betas=tuple(cfg.adam_betas),
                                          weight_decay=cfg.weight_decay)

    def grad(self, loss: torch.Tensor, inputs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """d loss / d inputs on this process's batch share, averaged over processes."""
        return self.reduce(torch.autograd.grad(loss, list(inputs)))

    # --- the step ----------------------------------------------------------------------------------------

    def step(self, train_batch: dict, val_batch: dict, *, train_grads: Sequence[torch.Tensor] | None = None,
             weight_lr: float = 0.0, weight_decay: float = 0.0) -> dict:
        """One arch update; returns {"val_loss", "penalty", "grad_norm", "loss_grads" (one tensor per arch
        parameter), "cost_grad" (alphas' shape, zeros without a penalty)}."""
        grads, val_loss = self.gradient(train_batch, val_batch, train_grads=train_grads, weight_lr=weight_lr,
                                        weight_decay=weight_decay)
        loss_grads = [g.detach().clone() for g in grads]
        cost_grad = torch.zeros_like(self.model.alphas)
        pen = 0.0
        if self.penalty is not None:
            p = self.penalty(self.model.alphas)
            if p.requires_grad:
                (cost_grad,) = torch.autograd.grad(p, [self.model.alphas])
                grads[0] = grads[0] + cost_grad
            pen = float(p.detach())
        for param, g in zip(self.arch_params, grads):
            param.grad = g.detach()
        norm = torch.nn.utils.clip_grad_norm_(self.arch_params, self.cfg.grad_clip) if self.cfg.grad_clip > 0 \
            else torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return {"val_loss": val_loss, "penalty": pen, "grad_norm": float(norm), "loss_grads": loss_grads,
                "cost_grad": cost_grad.detach()}

    def gradient(self, train_batch: dict, val_batch: dict, *, train_grads: Sequence[torch.Tensor] | None = None,
                 weight_lr: float = 0.0, weight_decay: float = 0.0) -> tuple[list[torch.Tensor], float]:
        """The loss part of the arch gradient (no penalty) for the configured algorithm, and L_v."""
        algorithm = self.cfg.algorithm
        if algorithm == "second_order":
            return self.unrolled_gradient(train_batch, val_batch, weight_lr, weight_decay, self.cfg.hvp_r)
        val_loss = self.loss_fn(self.model, val_batch)
        grads = self.grad(val_loss, self.arch_params)
        if algorithm in ("dlsr_exact", "dlsr_reuse"):
            if algorithm == "dlsr_exact" or train_grads is None:
                train_grads = self.grad(self.loss_fn(self.model, train_batch), self.arch_params)
            grads = [g + t for g, t in zip(grads, train_grads)]
        elif algorithm != "first_order":
            raise ValueError(f"arch.algorithm = {algorithm!r}: expected first_order, dlsr_reuse, dlsr_exact or "
                             "second_order")
        return grads, float(val_loss.detach())

    # --- second order ------------------------------------------------------------------------------------

    def virtual_step(self, grads: Sequence[torch.Tensor], lr: float) -> tuple[list[torch.Tensor], list]:
        """The weight step D(g) to take for gradients g, and dD/dg (tensors, or the scalar xi)."""
        xi = self.cfg.unrolled_lr
        if xi is not None:
            return [xi * g for g in grads], [xi] * len(grads)
        if not isinstance(self.weight_optimizer, torch.optim.Adam):
            raise ValueError("second order without arch.unrolled_lr unrolls the weight optimizer's own step: "
                             "give the Architect the Adam weight optimizer (or set arch.unrolled_lr)")
        return adam_step(self.weight_optimizer, self.weight_params, grads, lr)

    def unrolled_gradient(self, train_batch: dict, val_batch: dict, lr: float, weight_decay: float = 0.0,
                          r: float = 1e-2) -> tuple[list[torch.Tensor], float]:
        """DARTS's second-order arch gradient (see the module docstring); the weights end unchanged."""
        weights, arch = self.weight_params, self.arch_params
        backup = [w.detach().clone() for w in weights]
        try:
            dw = self.grad(self.loss_fn(self.model, train_batch), weights)
            dw = [g + weight_decay * w.detach() for g, w in zip(dw, weights)]
            step, jac = self.virtual_step(dw, lr)
            with torch.no_grad():
                for w, d in zip(weights, step):
                    w.sub_(d)  # w' = w - D(g)
            del dw, step
            val_loss = self.loss_fn(self.model, val_batch)
            grads = self.grad(val_loss, arch + weights)
            g_arch = grads[:len(arch)]
            u = [j * v for j, v in zip(jac, grads[len(arch):])]
            hvp = self.hessian_vector_product(train_batch, backup, u, r)
            return [g - h for g, h in zip(g_arch, hvp)], float(val_loss.detach())
        finally:
            with torch.no_grad():
                for w, b in zip(weights, backup):
                    w.copy_(b)

    def hessian_vector_product(self, batch: dict, at: Sequence[torch.Tensor], v: Sequence[torch.Tensor],
                               r: float = 1e-2) -> list[torch.Tensor]:
        """d2L(w, a)/(da dw) . v at weights `at`, by (dL/da(w + eps v) - dL/da(w - eps v)) / (2 eps)."""
        weights = self.weight_params
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(x) for x in v]))
        if float(norm) == 0:
            return [torch.zeros_like(a) for a in self.arch_params]
        eps = r / float(norm)
        grads = []
        for sign in (1.0, -1.0):
            with torch.no_grad():
                for w, w0, d in zip(weights, at, v):
                    w.copy_(w0).add_(d, alpha=sign * eps)
            grads.append(self.grad(self.loss_fn(self.model, batch), self.arch_params))
        return [(p - n) / (2 * eps) for p, n in zip(*grads)]
