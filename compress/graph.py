"""Channel dependencies of a network, recorded from one concrete forward pass.

Structured pruning removes output channels of convolutions; wherever two tensors meet channel by channel
(a residual add, ESA's `x * sigmoid(...)`, a depthwise conv) their channels must go together, and every
layer that reads a removed channel loses its matching input slice. This module finds those couplings by
running the network once on a small input under a `TorchFunctionMode` that labels every tensor's channels:

  * every `nn.Conv2d` output channel is a *slot*; the image input's channels and anything made by an op this
    tracer does not know are *pinned* slots (never pruned);
  * element-wise ops between tensors unite their channel labels pairwise (union-find), cat along channels
    concatenates label lists, split/chunk along channels slices them, channel-wise ops (activations, pooling,
    interpolation, spatial means, pads) pass them through, a depthwise conv ties each output to its input;
  * `pixel_shuffle` and the network output pin their input channels: the conv before the pixel shuffle keeps
    its 3*s^2 outputs, and an image-space skip added there (the LR repeated s^2 times) is pinned with it;
  * a per-channel parameter or buffer that meets a labelled tensor (a PReLU slope, a learned scale) is sliced
    with it; any other op on labelled tensors (matmul, linear, reshapes that move channels, channel slicing by
    index) pins what it touches, so an unknown structure is left alone rather than broken.

The union-find classes are *coupled channels*; classes produced by the same set of convs (and falling into
the same chunk of a split) form a *group* whose width is pruned as one number. Splits whose sizes live in a
module's attributes (IMDN's `distilled`/`remaining`) tie the counts of the matching chunks and are updated
after pruning by a small per-class fix-up (`SPLIT_FIXUPS`); a split in a module without one is pinned.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

_ATTR = "_srnas_channel_labels"

# ops that act on each channel independently and keep the channel count: labels pass through
PASS_OPS = {
    "relu", "relu_", "leaky_relu", "leaky_relu_", "sigmoid", "sigmoid_", "tanh", "tanh_", "gelu", "silu", "silu_",
    "hardswish", "hardsigmoid", "elu", "selu", "softplus", "mish", "clamp", "clamp_", "clip", "neg", "abs", "pow",
    "sqrt", "rsqrt", "exp", "log", "square", "reciprocal", "interpolate", "upsample", "max_pool2d", "avg_pool2d",
    "adaptive_avg_pool2d", "adaptive_max_pool2d", "contiguous", "clone", "detach", "to", "float", "type_as",
    "dropout", "dropout2d", "pad", "flip", "rot90", "roll", "__neg__", "__abs__", "__pow__", "__rpow__",
    "hardtanh", "hardtanh_", "relu6", "threshold", "nan_to_num", "round", "sign",
}
# binary element-wise ops: labelled operands of the same channel count are united
ELEMENTWISE_OPS = {
    "add", "add_", "sub", "sub_", "mul", "mul_", "div", "div_", "__add__", "__radd__", "__iadd__", "__sub__",
    "__rsub__", "__isub__", "__mul__", "__rmul__", "__imul__", "__truediv__", "__rtruediv__", "__itruediv__",
    "maximum", "minimum", "lerp", "addcmul", "where", "true_divide",
}
REDUCE_OPS = {"mean", "sum", "amax", "amin", "max", "min", "std", "var", "norm", "logsumexp"}
IGNORED = {"__get__", "size", "dim", "numel", "__len__", "item", "tolist", "__bool__", "__format__", "__repr__",
           "data_ptr", "is_contiguous", "element_size", "__index__", "__int__", "__float__", "requires_grad_"}


class _UnionFind:
    def __init__(self):
        self.parent: list[int] = []

    def new(self) -> int:
        self.parent.append(len(self.parent))
        return len(self.parent) - 1

    def find(self, a: int) -> int:
        while self.parent[a] != a:
            self.parent[a] = self.parent[self.parent[a]]
            a = self.parent[a]
        return a

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


@dataclass
class ConvNode:
    """One nn.Conv2d: its output slots, the labels read by each input channel, and where it ran."""

    name: str
    module: nn.Conv2d
    out_slots: list[int]
    in_labels: list[int | None]
    kind: str = "dense"  # dense | depthwise | grouped (grouped convs are pinned)
    out_hw: int = 0  # output pixels at the traced input size, summed over the conv's calls
    calls: int = 0


@dataclass
class ChannelParam:
    """A per-channel parameter/buffer (e.g. a learned scale) read along `dim` with the channel labels."""

    name: str  # state-dict name
    module: nn.Module
    attr: str
    dim: int
    labels: list[int]


@dataclass
class SplitRecord:
    owner: str  # path of the innermost module whose forward made the split
    sizes: tuple[int, ...]
    chunks: list[list[int]]  # labels of each chunk


@dataclass
class Group:
    """Coupled channels pruned as one width: `classes` are union-find roots in channel order."""

    name: str  # the path of its first producer conv in module order, plus '#k' for chunk k of a split
    classes: list[int]
    producers: tuple[str, ...]
    prunable: bool
    tie: str | None = None  # groups with the same tie key keep the same width

    @property
    def width(self) -> int:
        return len(self.classes)


@dataclass
class ChannelGraph:
    convs: dict[str, ConvNode]
    params: list[ChannelParam]
    splits: list[SplitRecord]
    uf: _UnionFind
    pinned: set[int]
    input_shape: tuple[int, ...]
    groups: dict[str, Group] = field(default_factory=dict)


def _tensors(obj) -> list[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, (list, tuple)):
        return [t for o in obj for t in _tensors(o)]
    return []


def _labels(t) -> list[int] | None:
    return getattr(t, _ATTR, None) if isinstance(t, torch.Tensor) else None


def _set(t: torch.Tensor, labels: list[int]) -> None:
    setattr(t, _ATTR, list(labels))


def _chan_dim(t: torch.Tensor, ndim: int) -> int | None:
    """Size of `t`'s channel dim when broadcast against an `ndim`-d (N, C, ...) tensor (None if absent)."""
    k = t.dim() - (ndim - 1)
    return t.shape[k] if 0 <= k < t.dim() else None


class _Tracer(TorchFunctionMode):
    def __init__(self, graph: ChannelGraph, param_owner: dict[int, tuple[str, nn.Module, str]],
                 conv_of: dict[int, ConvNode], stack: list[str]):
        super().__init__()
        self.g, self.param_owner, self.conv_of, self.stack = graph, param_owner, conv_of, stack

    # --- helpers ---------------------------------------------------------------------------------------------
    def fresh(self, n: int, pinned: bool = True) -> list[int]:
        slots = [self.g.uf.new() for _ in range(n)]
        if pinned:
            self.g.pinned.update(slots)
        return slots

    def pin(self, labels: list[int] | None) -> None:
        if labels:
            self.g.pinned.update(labels)

    def opaque(self, args, kwargs, out) -> None:
        """An op this tracer does not model: pin every labelled input, give outputs fresh pinned labels."""
        for t in _tensors(list(args) + list(kwargs.values())):
            self.pin(_labels(t))
        for t in _tensors(out):
            if t.dim() >= 2:
                _set(t, self.fresh(t.shape[1]))

    # --- the mode ----------------------------------------------------------------------------------------------
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        name = getattr(func, "__name__", "")
        if name in IGNORED or not _tensors(out):
            return out
        ins = [t for t in _tensors(list(args) + list(kwargs.values())) if _labels(t) is not None]
        if not ins:
            return out  # nothing labelled involved (parameter arithmetic, constants)
        try:
            self.record(name, args, kwargs, out)
        except (IndexError, TypeError, ValueError):
            self.opaque(args, kwargs, out)
        return out

    def record(self, name: str, args, kwargs, out) -> None:
        x = args[0] if args else None
        if name == "conv2d" and id(args[1]) in self.conv_of:
            self.conv(args, kwargs, out)
        elif name in ("cat", "concat", "concatenate"):
            ts, dim = args[0], kwargs.get("dim", args[1] if len(args) > 1 else 0)
            labs = [_labels(t) for t in ts]
            if any(lab is None for lab in labs) or out.dim() < 2:
                return self.opaque(args, kwargs, out)
            if dim % out.dim() == 1:
                _set(out, [lab for ls in labs for lab in ls])
            else:
                for ls in labs[1:]:
                    self.unite(labs[0], ls)
                _set(out, labs[0])
        elif name in ("split", "split_with_sizes", "chunk", "tensor_split", "unbind"):
            dim = kwargs.get("dim", args[2] if len(args) > 2 else 0)
            labs = _labels(x)
            if name == "unbind" or dim % x.dim() != 1:
                for t in out:
                    _set(t, labs) if t.dim() == x.dim() else self.opaque(args, kwargs, out)
                return
            pos, chunks = 0, []
            for t in out:
                chunks.append(labs[pos:pos + t.shape[1]])
                _set(t, chunks[-1])
                pos += t.shape[1]
            self.g.splits.append(SplitRecord(self.stack[-1] if self.stack else "", tuple(len(c) for c in chunks),
                                             chunks))
        elif name in ("pixel_shuffle", "pixel_unshuffle"):
            self.opaque(args, kwargs, out)
        elif name in ELEMENTWISE_OPS:
            self.elementwise(args, kwargs, out)
        elif name in PASS_OPS or name in ("repeat", "repeat_interleave", "expand", "expand_as"):
            labs = _labels(x)
            if name in ("repeat", "repeat_interleave") and out.shape[1] != x.shape[1]:
                r = out.shape[1] // x.shape[1]
                labs = labs * r if name == "repeat" else [lab for lab in labs for _ in range(r)]
                if len(labs) != out.shape[1] or (name == "repeat_interleave" and
                                                 kwargs.get("dim", args[2] if len(args) > 2 else None) != 1):
                    return self.opaque(args, kwargs, out)
            if out.dim() != x.dim() or out.shape[1] != len(labs):
                return self.opaque(args, kwargs, out)
            _set(out, labs)
        elif name == "prelu":
            w = args[1]
            if w.numel() > 1 and id(w) in self.param_owner:
                self.channel_param(w, 0, _labels(x))
            _set(out, _labels(x))
        elif name in REDUCE_OPS and isinstance(out, torch.Tensor):
            dims = kwargs.get("dim", args[1] if len(args) > 1 else None)
            dims = [dims] if isinstance(dims, int) else list(dims or [])
            keep = out.dim() >= 2 and out.shape[1] == x.shape[1]
            if keep and all(d % x.dim() != 1 for d in dims) and dims and (0 not in [d % x.dim() for d in dims]):
                _set(out, _labels(x))  # a spatial reduction keeps the channels (with or without keepdim)
            elif out.dim() >= 2:
                _set(out, self.fresh(out.shape[1]))  # a reduction over channels reads them like a conv does
        elif name in ("view", "reshape", "flatten") and out.dim() >= 2 and out.shape[:2] == x.shape[:2]:
            _set(out, _labels(x))
        elif name in ("softmax", "log_softmax"):
            dim = kwargs.get("dim", args[1] if len(args) > 1 else None)
            if dim is not None and dim % x.dim() != 1:
                _set(out, _labels(x))
            else:
                self.opaque(args, kwargs, out)
        elif name == "__getitem__" and self.keeps_channels(x, args[1], out):
            _set(out, _labels(x))
        else:
            self.opaque(args, kwargs, out)

    @staticmethod
    def keeps_channels(x, index, out) -> bool:
        """Indexing that leaves the channel dim whole (spatial crops, batch picks with the dims kept)."""
        index = index if isinstance(index, tuple) else (index,)
        if not isinstance(out, torch.Tensor) or out.dim() != x.dim() or any(i is Ellipsis or i is None for i in index):
            return False
        return len(index) < 2 or index[1] == slice(None)

    def unite(self, a: list[int], b: list[int]) -> None:
        for p, q in zip(a, b, strict=True):
            self.g.uf.union(p, q)

    def channel_param(self, t: torch.Tensor, dim: int, labels: list[int]) -> None:
        name, module, attr = self.param_owner[id(t)]
        if not any(p.name == name for p in self.g.params):
            self.g.params.append(ChannelParam(name, module, attr, dim, list(labels)))
        else:
            self.unite(next(p for p in self.g.params if p.name == name).labels, labels)

    def elementwise(self, args, kwargs, out) -> None:
        if not isinstance(out, torch.Tensor) or out.dim() < 2:
            return self.opaque(args, kwargs, out)
        c = out.shape[1]
        base = None
        for t in _tensors(list(args) + list(kwargs.values())):
            labs = _labels(t)
            if labs is not None and t.dim() == out.dim() and len(labs) == c:
                if base is None:
                    base = labs
                else:
                    self.unite(base, labs)
        if base is None:
            return self.opaque(args, kwargs, out)
        for t in _tensors(list(args) + list(kwargs.values())):
            if _labels(t) is not None:
                if t.dim() == out.dim() and len(_labels(t)) not in (c, 1):
                    return self.opaque(args, kwargs, out)
                continue
            k = _chan_dim(t, out.dim())
            if k is None or k == 1:
                continue
            if k == c and id(t) in self.param_owner:
                self.channel_param(t, t.dim() - (out.dim() - 1), base)
            else:
                self.pin(base)
        _set(out, base)

    def conv(self, args, kwargs, out) -> None:
        node = self.conv_of[id(args[1])]
        x = args[0]
        labs = _labels(x)
        node.calls += 1
        node.out_hw += out.shape[-1] * out.shape[-2]  # summed over calls (a shared conv runs several times)
        m = node.module
        if m.groups == 1:
            for i, lab in enumerate(labs):
                if node.in_labels[i] is None:
                    node.in_labels[i] = lab
                else:
                    self.g.uf.union(node.in_labels[i], lab)
        elif m.groups == m.in_channels == m.out_channels:
            node.kind = "depthwise"
            for i, lab in enumerate(labs):
                self.g.uf.union(node.out_slots[i], lab)
                node.in_labels[i] = lab
        else:
            node.kind = "grouped"
            self.pin(labs)
            self.pin(node.out_slots)
            node.in_labels = list(labs)
        _set(out, node.out_slots)


def trace_channels(model: nn.Module, input_shape: tuple[int, ...] = (1, 3, 64, 64)) -> ChannelGraph:
    """Run `model` once on a random input of `input_shape` and return its channel dependency graph."""
    graph = ChannelGraph({}, [], [], _UnionFind(), set(), tuple(input_shape))
    conv_of: dict[int, ConvNode] = {}
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            node = ConvNode(name, m, [graph.uf.new() for _ in range(m.out_channels)], [None] * m.in_channels)
            graph.convs[name] = node
            conv_of[id(m.weight)] = node
    param_owner = {}
    for mname, m in model.named_modules():
        for attr, t in list(m.named_parameters(recurse=False)) + list(m.named_buffers(recurse=False)):
            param_owner[id(t)] = (f"{mname}.{attr}" if mname else attr, m, attr)
    stack: list[str] = []
    handles = []

    def pop(_m, _i, _o) -> None:
        stack.pop()

    for mname, m in model.named_modules():
        handles.append(m.register_forward_pre_hook(lambda _m, _i, n=mname: stack.append(n) and None))
        handles.append(m.register_forward_hook(pop))
    p = next(model.parameters(), None)
    x = torch.rand(*input_shape, device=p.device if p is not None else "cpu",
                   dtype=p.dtype if p is not None else torch.float32)
    was_training = model.training
    model.eval()
    try:
        tracer = _Tracer(graph, param_owner, conv_of, stack)
        _set(x, tracer.fresh(x.shape[1]))
        with torch.no_grad(), tracer:
            y = model(x)
        for t in _tensors(y):
            tracer.pin(_labels(t))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    _build_groups(graph, model)
    return graph


# --- groups ----------------------------------------------------------------------------------------------------


def _fixup_imdb(module: nn.Module, sizes: tuple[int, ...]) -> None:
    module.distilled, module.remaining = sizes


# Modules whose forward splits channels with sizes kept in attributes: class name -> fix-up(module, new sizes).
SPLIT_FIXUPS: dict[str, Callable[[nn.Module, tuple[int, ...]], None]] = {
    "IMDB": _fixup_imdb,
    "SimpleIMDB": _fixup_imdb,
}


def _build_groups(g: ChannelGraph, model: nn.Module) -> None:
    modules = dict(model.named_modules())
    order = {name: i for i, name in enumerate(g.convs)}
    # which chunk of which (tied) split each class falls in
    chunk_of: dict[int, tuple[str, int]] = {}
    for rec in g.splits:
        fix = SPLIT_FIXUPS.get(type(modules.get(rec.owner)).__name__) if rec.owner in modules else None
        for k, chunk in enumerate(rec.chunks):
            if fix is None:
                g.pinned.update(chunk)
            else:
                for lab in chunk:
                    chunk_of[g.uf.find(lab)] = (f"{rec.owner}|{rec.sizes}", k)
    pinned = {g.uf.find(s) for s in g.pinned}
    producers: dict[int, list[str]] = {}
    for node in g.convs.values():
        if node.calls == 0:
            pinned.update(g.uf.find(s) for s in node.out_slots)  # never ran: leave it alone
        for s in node.out_slots:
            producers.setdefault(g.uf.find(s), []).append(node.name)
    by_key: dict[tuple, list[int]] = {}
    for root, convs in producers.items():
        key = (tuple(sorted(set(convs), key=order.get)), chunk_of.get(root))
        by_key.setdefault(key, []).append(root)
    for (convs, chunk), roots in sorted(by_key.items(), key=lambda kv: order[kv[0][0][0]]):
        first = g.convs[convs[0]]
        pos = {g.uf.find(s): j for j, s in enumerate(first.out_slots)}
        roots.sort(key=lambda r: pos.get(r, 0))
        name = convs[0] if chunk is None else f"{convs[0]}#{chunk[1]}"
        prunable = not any(r in pinned for r in roots)
        tie = None if chunk is None else f"{chunk[0]}#{chunk[1]}"
        g.groups[name] = Group(name, roots, convs, prunable, tie)
