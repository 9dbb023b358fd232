"""A name -> factory registry for SR architectures (timm style: `register`, `create`, explicit imports).

A model file decorates its factory with `@register("name", ...)`; the package that owns the model files
(`distill.zoo`) imports each file explicitly, so nothing is found by scanning folders.

Every registered network takes and returns RGB in [0, 1]. `rgb_range` records the range the *official*
weights were trained in (1 or 255); the network multiplies its input by it on the way in and divides on
the way out, so the caller never sees the difference.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn


@dataclass(frozen=True)
class ModelEntry:
    name: str
    factory: Callable[..., nn.Module]
    scales: tuple[int, ...]
    rgb_range: float
    paper: str


_MODELS: dict[str, ModelEntry] = {}


def register(name: str, *, scales: tuple[int, ...] = (2, 3, 4), rgb_range: float = 1.0, paper: str = ""):
    """Decorator: register `factory(scale=..., rgb_range=..., **kwargs) -> nn.Module` under `name`."""

    def deco(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _MODELS:
            raise ValueError(f"model {name!r} is registered twice")
        _MODELS[name] = ModelEntry(name, factory, tuple(scales), float(rgb_range), paper)
        return factory

    return deco


def list_models() -> list[str]:
    return sorted(_MODELS)


def get_entry(name: str) -> ModelEntry:
    try:
        return _MODELS[name]
    except KeyError:
        raise KeyError(f"unknown architecture {name!r}; known: {', '.join(list_models()) or '(none)'}") from None


def create(name: str, scale: int, **kwargs) -> nn.Module:
    """Build architecture `name` for `scale`; kwargs override the factory's defaults."""
    entry = get_entry(name)
    if scale not in entry.scales:
        raise ValueError(f"architecture {name!r} supports scales {list(entry.scales)}, got scale={scale}")
    kwargs.setdefault("rgb_range", entry.rgb_range)
    return entry.factory(scale=scale, **kwargs)
