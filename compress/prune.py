"""Structured channel pruning: importance, widths for a target, and applying them to a network in place.

The couplings come from `compress.graph.trace_channels` (one traced forward pass). A *plan* maps each
prunable group (by name) to the sorted positions of the coupled channels it keeps; `apply_plan` slices every
conv's output and input channels, depthwise groups, per-channel parameters and split sizes accordingly, in
place, so module names and state-dict keys are unchanged and only shapes shrink.

Widths are rounded to a multiple (8 by default, 4 optional); a group narrower than the multiple, the conv
before the pixel shuffle (its 3*s^2 outputs are pinned) and anything the tracer could not model keep their
width. A pruned network is described by its spec plus `widths: {group name: width}` (the group name is the
path of the group's first conv, `#k` for chunk k of a split; `reparameterized: true` when it was fused
first) and is rebuilt by `restructure`: build the
unpruned network, re-parameterize it if the spec says so, trace it, cut every named group to its width (the
first channels: the weights come from the state dict loaded afterwards), and check tied widths.

Importance of one coupled channel:
  * `l1` / `l2`: the L1 norm / squared L2 norm of every weight slice it owns (producer filters and biases,
    consumer input slices, per-channel parameters), summed;
  * `taylor`: first-order Taylor (Molchanov et al., CVPR 2019): (sum over those slices of w * dL/dw)^2 per
    batch, averaged over batches; L is given by the caller (L1 to the ground truth, or to a teacher's output).
Targets: a parameter count, a MAC count (at the traced input size), a measured latency, or a channel ratio;
`plan_for_target` finds the smallest uniform ratio r (every group keeps round((1 - r) * width) channels,
rounded to the multiple) that meets the target, by bisection.
"""
from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import nn

from srcore.registry import register_spec_transform

from .graph import SPLIT_FIXUPS, ChannelGraph, Group, trace_channels

TRACE_SHAPE = (1, 3, 64, 64)
IMPORTANCE = ("l1", "l2", "taylor")
TARGET_KINDS = ("params", "macs", "latency", "ratio")


class PruneError(ValueError):
    """A pruning request that cannot be met (one-line message naming the value)."""


Plan = dict[str, list[int]]  # group name -> kept positions (sorted) among the group's coupled channels


# --- re-parameterization ------------------------------------------------------------------------------------


def reparameterize(model: nn.Module) -> nn.Module:
    """Fuse every multi-branch block into a plain conv, in place (compress.reparam); returns the model."""
    from compress.reparam import reparameterize as fuse_all

    out = fuse_all(model, inplace=True)
    return model if out is None else out


# --- importance ----------------------------------------------------------------------------------------------


def _slices(graph: ChannelGraph, model: nn.Module):
    """(class root, weight tensor, index) for every weight slice owned by a coupled channel: yields
    (root, tensor, fn) where fn(t) returns the slice of t (the weight or its gradient)."""
    modules = dict(model.named_modules())
    for node in graph.convs.values():
        m = modules[node.name]
        for j, s in enumerate(node.out_slots):
            r = graph.uf.find(s)
            yield r, m.weight, (lambda t, j=j: t[j])
            if m.bias is not None:
                yield r, m.bias, (lambda t, j=j: t[j:j + 1])
        if node.kind == "dense":
            for i, lab in enumerate(node.in_labels):
                if lab is not None:
                    yield graph.uf.find(lab), m.weight, (lambda t, i=i: t[:, i])
    for p in graph.params:
        t = getattr(modules[p.name.rsplit(".", 1)[0]] if "." in p.name else model, p.attr)
        for j, lab in enumerate(p.labels):
            yield graph.uf.find(lab), t, (lambda t, j=j, d=p.dim: t.select(d, j))


@torch.no_grad()
def magnitude_importance(model: nn.Module, graph: ChannelGraph, p: int = 1) -> dict[int, float]:
    """L1 (p=1) or squared L2 (p=2) norm of every weight slice of each coupled channel, summed."""
    scores: dict[int, float] = {}
    for r, t, sl in _slices(graph, model):
        v = sl(t.detach())
        scores[r] = scores.get(r, 0.0) + float(v.abs().sum() if p == 1 else v.pow(2).sum())
    return scores


def taylor_importance(model: nn.Module, graph: ChannelGraph, batches: Iterable,
                      loss_fn: Callable[[nn.Module, object], torch.Tensor]) -> dict[int, float]:
    """First-order Taylor: mean over batches of (sum over a channel's slices of w * dL/dw)^2."""
    params = [q for q in model.parameters()]
    was = model.training
    model.train()
    scores: dict[int, float] = {}
    n = 0
    try:
        for batch in batches:
            for q in params:
                q.grad = None
            loss_fn(model, batch).backward()
            per: dict[int, float] = {}
            with torch.no_grad():
                for r, t, sl in _slices(graph, model):
                    if t.grad is not None:
                        per[r] = per.get(r, 0.0) + float((sl(t) * sl(t.grad)).sum())
            for r, v in per.items():
                scores[r] = scores.get(r, 0.0) + v * v
            n += 1
    finally:
        for q in params:
            q.grad = None
        model.train(was)
    if n == 0:
        raise PruneError("taylor importance needs at least one batch")
    return {r: v / n for r, v in scores.items()}


# --- widths, plans and costs ---------------------------------------------------------------------------------


def prunable_groups(graph: ChannelGraph, multiple: int) -> list[Group]:
    return [g for g in graph.groups.values() if g.prunable and g.width > multiple]


def check_multiple(graph: ChannelGraph, multiple: int) -> None:
    if not isinstance(multiple, int) or multiple < 1:
        raise PruneError(f"width multiple {multiple!r}: must be a positive integer (8 or 4 for CPUs)")
    if not prunable_groups(graph, multiple):
        widest = max((g.width for g in graph.groups.values() if g.prunable), default=0)
        raise PruneError(f"width multiple {multiple} cannot be met: no prunable group is wider than {multiple} "
                         f"(the widest has {widest} channels)")


def uniform_widths(graph: ChannelGraph, ratio: float, multiple: int) -> dict[str, int]:
    """Every prunable group keeps round((1 - ratio) * width) channels, rounded to `multiple` (at least
    `multiple`, at most its width); tied groups keep the smallest of their widths."""
    widths = {}
    for g in prunable_groups(graph, multiple):
        if ratio <= 0:
            widths[g.name] = g.width
            continue
        w = multiple * round(g.width * (1.0 - ratio) / multiple)
        widths[g.name] = int(min(g.width, max(multiple, w)))
    ties: dict[str, int] = {}
    for name, w in widths.items():
        t = graph.groups[name].tie
        if t is not None:
            ties[t] = min(ties.get(t, w), w)
    for name in widths:
        t = graph.groups[name].tie
        if t is not None:
            widths[name] = ties[t]
    return widths


def plan_from_scores(graph: ChannelGraph, widths: dict[str, int], scores: dict[int, float] | None) -> Plan:
    """Keep the `widths[name]` most important coupled channels of each group (the first ones without scores)."""
    plan = {}
    for name, w in widths.items():
        g = graph.groups[name]
        if w >= g.width:
            continue
        if scores is None:
            keep = list(range(w))
        else:
            order = sorted(range(g.width), key=lambda i: (-scores.get(g.classes[i], 0.0), i))
            keep = sorted(order[:w])
        plan[name] = keep
    return plan


@dataclass
class CostModel:
    """Parameters and conv MACs (at the traced input size) of the network for any choice of group widths."""

    graph: ChannelGraph
    base_params: int

    def cost(self, widths: dict[str, int]) -> dict[str, int]:
        g = self.graph
        keep = {}  # class root -> fraction kept (counts only matter here)
        for name, w in widths.items():
            grp = g.groups[name]
            for r in grp.classes:
                keep[r] = w / grp.width
        params, macs = self.base_params, 0
        for node in g.convs.values():
            m = node.module
            if node.calls == 0:
                continue  # never ran (e.g. CARN's upsamplers for other scales): untouched
            k = m.kernel_size[0] * m.kernel_size[1]
            out_n = sum(keep.get(g.uf.find(s), 1.0) for s in node.out_slots)
            if node.kind == "depthwise":
                in_per = 1.0
            elif node.kind == "grouped":
                in_per = m.in_channels / m.groups
            else:
                in_per = sum(keep.get(g.uf.find(lab), 1.0) if lab is not None else 1.0 for lab in node.in_labels)
            old = m.weight.numel() + (m.bias.numel() if m.bias is not None else 0)
            new = out_n * in_per * k + (out_n if m.bias is not None else 0)
            params += round(new) - old
            macs += round(out_n * in_per * k * node.out_hw)
        for p in g.params:
            params -= round(sum(1.0 - keep.get(g.uf.find(lab), 1.0) for lab in p.labels))
        return {"params": int(params), "macs": int(macs)}


def group_widths(graph: ChannelGraph) -> dict[str, int]:
    return {name: g.width for name, g in graph.groups.items()}


# --- applying a plan ---------------------------------------------------------------------------------------


@torch.no_grad()
def apply_plan(model: nn.Module, graph: ChannelGraph, plan: Plan) -> nn.Module:
    """Cut `model` (the traced network, or a structurally identical copy) to `plan`, in place."""
    modules = dict(model.named_modules())
    removed: set[int] = set()
    for name, keep in plan.items():
        g = graph.groups[name]
        if not g.prunable:
            raise PruneError(f"group {name} is pinned and cannot be pruned")
        keep_set = set(keep)
        removed.update(r for i, r in enumerate(g.classes) if i not in keep_set)

    def kept(lab) -> bool:
        return lab is None or graph.uf.find(lab) not in removed

    for node in graph.convs.values():
        m = modules[node.name]
        if node.calls == 0:
            continue
        out_idx = [j for j, s in enumerate(node.out_slots) if kept(s)]
        if node.kind == "depthwise":
            if len(out_idx) == m.out_channels:
                continue
            m.weight = nn.Parameter(m.weight[out_idx].clone())
            m.in_channels = m.out_channels = m.groups = len(out_idx)
        else:
            in_idx = [i for i, lab in enumerate(node.in_labels) if kept(lab)] if node.kind == "dense" else \
                list(range(m.in_channels))
            if len(out_idx) == m.out_channels and len(in_idx) == m.in_channels:
                continue
            m.weight = nn.Parameter(m.weight[out_idx][:, in_idx].clone())
            m.out_channels, m.in_channels = len(out_idx), len(in_idx)
        if m.bias is not None:
            m.bias = nn.Parameter(m.bias[out_idx].clone())
    for p in graph.params:
        owner = modules[p.name.rsplit(".", 1)[0]] if "." in p.name else model
        idx = [j for j, lab in enumerate(p.labels) if kept(lab)]
        t = getattr(owner, p.attr)
        new = t.index_select(p.dim, torch.tensor(idx, device=t.device)).clone()
        if isinstance(t, nn.Parameter):
            setattr(owner, p.attr, nn.Parameter(new, requires_grad=t.requires_grad))
        else:
            owner.register_buffer(p.attr, new)
    sizes: dict[str, tuple[int, ...]] = {}
    for rec in graph.splits:
        if rec.owner not in modules or type(modules[rec.owner]).__name__ not in SPLIT_FIXUPS:
            continue
        new_sizes = tuple(sum(kept(lab) for lab in chunk) for chunk in rec.chunks)
        if sizes.setdefault(rec.owner, new_sizes) != new_sizes:
            raise PruneError(f"{rec.owner}: its splits would need different sizes {sizes[rec.owner]} and "
                             f"{new_sizes}; tied groups must keep the same width")
        SPLIT_FIXUPS[type(modules[rec.owner]).__name__](modules[rec.owner], new_sizes)
    for m in model.modules():  # widths kept in attributes of blocks pruned before re-parameterization
        fix = WIDTH_FIXUPS.get(type(m).__name__)
        if fix is not None:
            fix(m)
    return model


# Blocks that keep a channel count in an attribute used outside forward: class name -> fix-up after pruning.
WIDTH_FIXUPS = {
    "RepConv": lambda m: setattr(m, "channels", m.conv_kxk.out_channels),  # search_spaces.ops (fuse() uses it)
}


def prune_to_widths(model: nn.Module, widths: dict[str, int], *, scores: dict[int, float] | None = None,
                    graph: ChannelGraph | None = None, source: str = "widths") -> nn.Module:
    """Cut every named group of `model` to its width (keeping the highest-scoring channels, or the first)."""
    graph = graph or trace_channels(model, TRACE_SHAPE)
    for name, w in widths.items():
        g = graph.groups.get(name)
        if g is None or not g.prunable:
            known = ", ".join(n for n, x in graph.groups.items() if x.prunable)
            raise PruneError(f"{source}: {name!r} is not a prunable channel group of this network "
                             f"(groups: {known[:300]}...)")
        if not isinstance(w, int) or not 1 <= w <= g.width:
            raise PruneError(f"{source}: {name} = {w!r}: must be an integer in 1..{g.width}")
    ties: dict[str, int] = {}
    for name, w in widths.items():
        t = graph.groups[name].tie
        if t is not None and ties.setdefault(t, w) != w:
            raise PruneError(f"{source}: {name} = {w} but a tied group (same split in the same block) has "
                             f"{ties[t]}; tied groups keep the same width")
    for name, g in graph.groups.items():  # a tied group left out of `widths` keeps its full width: check it
        if g.tie in ties and name not in widths and ties[g.tie] != g.width:
            raise PruneError(f"{source}: {name} is tied to a group cut to {ties[g.tie]} but is not listed")
    return apply_plan(model, graph, plan_from_scores(graph, widths, scores))


@register_spec_transform("reparameterized", "widths")
def restructure(model: nn.Module, spec: dict) -> nn.Module:
    """Give a freshly built unpruned network the structure `spec` describes: re-parameterized if
    spec['reparameterized'] (compress.reparam's mark), cut to spec['widths']. Weights are meaningless until
    a state dict is loaded."""
    if spec.get("reparameterized"):
        model = reparameterize(model)
    widths = spec.get("widths") or {}
    if not isinstance(widths, dict):
        raise PruneError(f"spec.widths must be a mapping of group name -> width, got {type(widths).__name__}")
    if widths:
        prune_to_widths(model, dict(widths), source="spec.widths")
    return model


def widths_of(model: nn.Module, base_widths: dict[str, int]) -> dict[str, int]:
    """The spec widths of `model`: its group widths that differ from the unpruned network's."""
    now = group_widths(trace_channels(model, TRACE_SHAPE))
    return {name: w for name, w in now.items() if name in base_widths and w != base_widths[name]}


# --- targets -----------------------------------------------------------------------------------------------


@dataclass
class Target:
    kind: str  # params | macs | latency | ratio
    value: float

    def describe(self) -> str:
        return {"params": f"{self.value:,.0f} parameters", "macs": f"{self.value / 1e9:.3f} GMACs",
                "latency": f"{self.value * 1e3:.1f} ms", "ratio": f"{self.value:.0%} of channels removed"}[self.kind]


def plan_for_target(model: nn.Module, graph: ChannelGraph, target: Target, multiple: int,
                    scores: dict[int, float] | None = None,
                    measure_latency: Callable[[nn.Module], float] | None = None,
                    steps: int = 14) -> tuple[Plan, dict[str, int], float]:
    """(plan, widths, ratio) with the smallest uniform ratio whose network meets `target`.

    params/macs use the analytic `CostModel` (MACs at the traced input size); latency builds each
    candidate and calls `measure_latency(model) -> seconds`; ratio applies the ratio directly."""
    check_multiple(graph, multiple)
    if target.kind == "ratio":
        if not 0 < target.value < 1:
            raise PruneError(f"--prune-ratio {target.value}: must be in (0, 1)")
        widths = uniform_widths(graph, target.value, multiple)
        return plan_from_scores(graph, widths, scores), widths, target.value
    if target.kind not in TARGET_KINDS:
        raise PruneError(f"unknown target kind {target.kind!r}; known: {', '.join(TARGET_KINDS)}")
    cm = CostModel(graph, sum(p.numel() for p in model.parameters()))

    def value(r: float) -> float:
        widths = uniform_widths(graph, r, multiple)
        if target.kind == "latency":
            m = copy.deepcopy(model)
            apply_plan(m, graph, plan_from_scores(graph, widths, None))
            return measure_latency(m)
        return cm.cost(widths)[target.kind]

    now, least = value(0.0), value(1.0)
    if target.value >= now:
        raise PruneError(f"target {target.describe()} is not below the network's {Target(target.kind, now).describe()}")
    if least > target.value:
        raise PruneError(f"target {target.describe()} cannot be reached with width multiple {multiple}: every "
                         f"group at its minimum still gives {Target(target.kind, least).describe()}")
    lo, hi = 0.0, 1.0
    for _ in range(steps):
        mid = (lo + hi) / 2
        if value(mid) <= target.value:
            hi = mid
        else:
            lo = mid
    widths = uniform_widths(graph, hi, multiple)
    if target.kind != "latency":  # between the two ratios, remove the least important steps first
        widths = _refine(graph, cm, target, uniform_widths(graph, lo, multiple), widths, multiple, scores)
    return plan_from_scores(graph, widths, scores), widths, hi


def _refine(graph: ChannelGraph, cm: CostModel, target: Target, start: dict[str, int], floor: dict[str, int],
            multiple: int, scores: dict[int, float] | None) -> dict[str, int]:
    """From `start` (above the target) step groups down by `multiple` towards `floor` (which meets it),
    each time the group (or set of tied groups) whose next `multiple` channels matter least relative to the
    group's mean importance, until the cost meets the target."""
    units: dict[str, list[str]] = {}
    for name in start:
        units.setdefault(graph.groups[name].tie or name, []).append(name)
    w = dict(start)

    def step(name: str) -> int:  # the next lower multiple
        return (w[name] - 1) // multiple * multiple

    def loss(names: list[str]) -> float:
        total = 0.0
        for name in names:
            g = graph.groups[name]
            if scores is None:
                total -= g.width  # no scores: cut the widest group first
                continue
            vals = sorted((scores.get(r, 0.0) for r in g.classes), reverse=True)
            mean = sum(vals) / len(vals) or 1.0
            total += sum(vals[step(name):w[name]]) / mean
        return total

    while cm.cost(w)[target.kind] > target.value:
        movable = [names for names in units.values() if step(names[0]) >= max(floor[names[0]], multiple)]
        if not movable:
            return dict(floor)
        best = min(movable, key=loss)
        for name in best:
            w[name] = step(name)
    return w


def importance_scores(model: nn.Module, graph: ChannelGraph, kind: str, batches: Iterable | None = None,
                      loss_fn: Callable | None = None) -> dict[int, float]:
    if kind == "l1":
        return magnitude_importance(model, graph, 1)
    if kind == "l2":
        return magnitude_importance(model, graph, 2)
    if kind == "taylor":
        if batches is None or loss_fn is None:
            raise PruneError("taylor importance needs batches and a loss")
        return taylor_importance(model, graph, batches, loss_fn)
    raise PruneError(f"unknown importance {kind!r}; known: {', '.join(IMPORTANCE)}")
