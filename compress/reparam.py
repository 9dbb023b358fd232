"""Structural re-parameterization: train a multi-branch linear block, deploy one plain convolution.

Blocks such as RepVGG's kxk + 1x1 + identity, ECBSR's edge-oriented block, FMEN's RRRB and SPAN's Conv3XC
(all in `compress/blocks.py`) are sums and chains of linear convolutions. Trained in that form they
optimise better than one conv; for deployment they are folded into the one kxk convolution that computes
the same function. This module is the mechanism (`reparameterize`) and the kernel algebra the blocks use.

What counts as fusable
    A module is fusable when it has a method `fuse() -> nn.Module` returning its *deployed form* (a module
    that computes the same function with one plain convolution) and is not deployed already (a `deployed`
    attribute that is False or absent). The deployed form is either a bare `nn.Conv2d` (`RepConv`, `ECB`)
    or the same block class built with `deploy=True`, which holds only that conv under the name the
    published deployed checkpoints use (`RRRB.rep_conv`, `Conv3XC.eval_conv`, or `.conv` for SPANV2), so
    official deployed weights load strictly into a fused network. Fusion is exact in real arithmetic;
    it is computed in float64 and stored in the block's dtype, so the fused output matches the unfused
    one to float rounding (tested: <= 1e-5 max abs in fp32 on images in [0, 1]).

`reparameterize(model, inplace=False) -> nn.Module`
    Walks `model` top-down and replaces every fusable module by `module.fuse()` (without descending into
    it; a block shared by several parents is fused once and stays shared). By default it works on a deep
    copy and leaves `model` untouched; `inplace=True` changes `model` itself (cheaper for big models). The
    result keeps the train/eval mode, device, dtype and `requires_grad` of each block. A model without
    fusable blocks comes back unchanged (copied unless in place). `fusable_modules(model)` lists the
    qualified names that would be fused.

Saving and rebuilding a fused model
    A fused network is never pickled. Save its state dict with the spec of the *training-time* network
    marked as deployed, `deployed_spec(spec)` (adds `"reparameterized": true` to a `srcore.modelspec` spec,
    for zoo architectures and genotypes alike). `build_from_spec(spec)` builds the network the spec names
    and, when the mark is set, fuses it (its random weights are overwritten afterwards; fusing costs
    milliseconds), so the saved state dict loads strictly. Zoo families whose official files are deployed
    (`span`, `dscf`, `spanv2`, `pfdn`) also take `deploy=True|False` in their factory (default True): the
    spec `{"arch": "span", "kwargs": {"deploy": True}}` builds the same fused layout directly.
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

DEPLOYED_KEY = "reparameterized"


# ----------------------------------------------------------------------------------------------------
# the mechanism


def is_fusable(module: nn.Module) -> bool:
    """True for a module with a `fuse()` method that is not deployed already."""
    return callable(getattr(module, "fuse", None)) and not getattr(module, "deployed", False)


def fusable_modules(model: nn.Module) -> list[str]:
    """Qualified names of the outermost fusable modules of `model` ("" for the model itself)."""
    names: list[str] = []

    def walk(module: nn.Module, prefix: str) -> None:
        if is_fusable(module):
            names.append(prefix)
            return
        for name, child in module.named_children():
            walk(child, f"{prefix}.{name}" if prefix else name)

    walk(model, "")
    return names


def _fused(block: nn.Module) -> nn.Module:
    out = block.fuse()
    params = list(block.parameters())
    out.train(block.training)
    if params:
        out.requires_grad_(any(p.requires_grad for p in params))
    return out


def reparameterize(model: nn.Module, inplace: bool = False) -> nn.Module:
    """`model` with every fusable block replaced by its deployed form (see the module docstring)."""
    if not inplace:
        model = copy.deepcopy(model)
    if is_fusable(model):
        return _fused(model)
    done: dict[int, nn.Module] = {}

    def walk(module: nn.Module) -> None:
        for name, child in list(module.named_children()):
            if is_fusable(child):
                if id(child) not in done:
                    done[id(child)] = _fused(child)
                setattr(module, name, done[id(child)])
            else:
                walk(child)

    walk(model)
    return model


def deployed_spec(spec: dict) -> dict:
    """A copy of the model spec `spec` marked as describing the fused (deployed) network."""
    return {**spec, DEPLOYED_KEY: True}


def build_from_spec(spec: dict) -> nn.Module:
    """A fresh network for `spec` (`srcore.modelspec` format), fused when the spec is marked deployed."""
    from srcore.modelspec import build_model

    model = build_model({k: v for k, v in spec.items() if k != DEPLOYED_KEY})
    return reparameterize(model, inplace=True) if spec.get(DEPLOYED_KEY) else model


# ----------------------------------------------------------------------------------------------------
# kernel algebra (weights as (out, in, k, k) tensors; a missing bias is zero)


def bias_padded_expand(conv1x1: nn.Conv2d, x: torch.Tensor, pad: int) -> torch.Tensor:
    """conv1x1(x) surrounded by `pad` pixels holding the conv's bias (zero without bias), not zeros.

    A kxk conv applied (without padding) to this map equals, at every pixel including the borders, the
    fused kxk conv applied to the zero-padded x: outside the image the fused conv sees x = 0, for which
    the 1x1 conv gives exactly its bias. Padding the expanded map with zeros instead would be exact only
    in the interior. Computed as conv1x1 of the zero-padded input, which puts the bias there exactly.
    """
    return conv1x1(F.pad(x, (pad, pad, pad, pad)))


def as64(t: torch.Tensor | None, size: int | None = None, like: torch.Tensor | None = None) -> torch.Tensor:
    """`t` detached in float64; a missing bias becomes zeros of length `size` on `like`'s device."""
    if t is None:
        return torch.zeros(size, dtype=torch.float64, device=like.device)
    return t.detach().to(torch.float64)


def pad_kernel(w: torch.Tensor, k: int) -> torch.Tensor:
    """A centred zero-padding of the square kernels `w` (..., j, j) to k x k (k - j even)."""
    p = (k - w.shape[-1]) // 2
    return F.pad(w, (p, p, p, p))


def identity_kernel(channels: int, k: int, like: torch.Tensor) -> torch.Tensor:
    """The (channels, channels, k, k) kernel of the identity map: a centred 1 on the diagonal."""
    w = torch.zeros(channels, channels, k, k, dtype=like.dtype, device=like.device)
    w[torch.arange(channels), torch.arange(channels), k // 2, k // 2] = 1.0
    return w


def dense_depthwise(w: torch.Tensor) -> torch.Tensor:
    """A depthwise kernel (C, 1, k, k) as the equivalent dense (C, C, k, k) kernel."""
    c, k = w.shape[0], w.shape[-1]
    dense = torch.zeros(c, c, k, k, dtype=w.dtype, device=w.device)
    dense[torch.arange(c), torch.arange(c)] = w[:, 0]
    return dense


def merge_1x1_kxk(w1: torch.Tensor, b1: torch.Tensor, w2: torch.Tensor,
                  b2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A 1x1 conv (w1, b1) whose output is bias-padded, then an unpadded kxk conv (w2, b2): one kxk conv."""
    w = torch.einsum("omhw,mc->ochw", w2, w1[:, :, 0, 0])
    b = b2 + torch.einsum("omhw,m->o", w2, b1)
    return w, b


def merge_kxk_1x1(w: torch.Tensor, b: torch.Tensor, w3: torch.Tensor,
                  b3: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A kxk conv (w, b) followed by a 1x1 conv (w3, b3): one kxk conv."""
    m = w3[:, :, 0, 0]
    return torch.einsum("po,ochw->pchw", m, w), m @ b + b3


def make_conv(weight: torch.Tensor, bias: torch.Tensor | None, like: torch.Tensor) -> nn.Conv2d:
    """A 'same'-padded nn.Conv2d holding `weight`/`bias`, in the dtype and on the device of `like`."""
    out_ch, in_ch, k, _ = weight.shape
    conv = nn.Conv2d(in_ch, out_ch, k, padding=k // 2, bias=bias is not None)
    conv = conv.to(device=like.device, dtype=like.dtype)
    with torch.no_grad():
        conv.weight.copy_(weight)
        if bias is not None:
            conv.bias.copy_(bias)
    return conv
