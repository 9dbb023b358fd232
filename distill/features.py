"""Intermediate features by module path, and the small adapters that map student widths to teacher widths.

`FeatureHooks(model, ["B2", "B4"])` is a context manager: on entry it puts a forward hook on each named
submodule (`model.get_submodule(path)`), every forward then leaves that module's output in
`hooks.features[path]`, and on exit every hook is removed, so the model is exactly as before. Outputs are
multiplied by `1 / model.rgb_range` (when the model has one): a network trained on [0, 255] then gives
features on the same scale as one trained on [0, 1], which feature losses need.
"""
from __future__ import annotations

import torch
from torch import nn


class FeatureHooks:
    """Record the outputs of `model`'s submodules named by `paths` (see the module docstring)."""

    def __init__(self, model: nn.Module, paths: list[str] | tuple[str, ...], scale: float | None = None):
        self.model, self.paths = model, list(paths)
        self.scale = 1.0 / float(getattr(model, "rgb_range", 1.0)) if scale is None else scale
        self.features: dict[str, torch.Tensor] = {}
        self.enabled = True
        self._handles: list = []
        for p in self.paths:  # fail early, with the path, if a name is wrong
            try:
                model.get_submodule(p)
            except AttributeError:
                names = [n for n, _ in model.named_children()]
                raise ValueError(f"{type(model).__name__} has no submodule {p!r} (top-level modules: "
                                 f"{', '.join(names)})") from None

    def _hook(self, path: str):
        def hook(module, inputs, output):
            if not self.enabled:
                return
            if not isinstance(output, torch.Tensor):
                raise ValueError(f"module {path!r} returns {type(output).__name__}, not a tensor; pick another")
            self.features[path] = output * self.scale if self.scale != 1.0 else output
        return hook

    def __enter__(self) -> FeatureHooks:
        for p in self.paths:
            self._handles.append(self.model.get_submodule(p).register_forward_hook(self._hook(p)))
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()
        self.features = {}

    def take(self) -> list[torch.Tensor]:
        """The recorded features in `paths` order; clears them (the next forward records afresh)."""
        missing = [p for p in self.paths if p not in self.features]
        if missing:
            raise RuntimeError(f"no output was recorded for {missing} (was the model run inside the hooks?)")
        out = [self.features[p] for p in self.paths]
        self.features = {}
        return out


@torch.no_grad()
def probe_channels(model: nn.Module, paths: list[str], in_size: int = 16,
                   device: str | torch.device = "cpu") -> list[int]:
    """The channel count of each named submodule's output, from one forward of a small random input."""
    if not paths:
        return []
    was_training = model.training
    model.eval()
    with FeatureHooks(model, paths, scale=1.0) as hooks:
        model(torch.zeros(1, 3, in_size, in_size, device=device))
        chans = [f.shape[1] for f in hooks.take()]
    model.train(was_training)
    return chans


def adapter(c_in: int, c_out: int, kernel: int = 1) -> nn.Module:
    """A learned conv from student width to teacher width; Identity for 1x1 when the widths are equal."""
    if kernel == 1 and c_in == c_out:
        return nn.Identity()
    return nn.Conv2d(c_in, c_out, kernel, padding=kernel // 2)


def local_regressor(c_in: int, c_out: int, hidden: int | None = None) -> nn.Sequential:
    """LSFD's local regressor: two 3x3 convs with a ReLU between them (sees a 5x5 neighbourhood)."""
    hidden = hidden or max(c_in, c_out)
    return nn.Sequential(nn.Conv2d(c_in, hidden, 3, padding=1), nn.ReLU(inplace=True),
                         nn.Conv2d(hidden, c_out, 3, padding=1))
