"""A name -> factory registry for SR architectures (timm style: `register`, `create`, explicit imports).

A model file decorates its factory with `@register("name", ...)`; the package that owns the model files
(`distill.zoo`) imports each file explicitly, so nothing is found by scanning folders.

Checkpoint specs (`srcore.modelspec`) are built through the same kind of table: `{"arch": name, ...}` by
`create`, and every other kind of spec by the builder its owner registered with
`@register_builder(key)` (`search_spaces.network` registers "genotype"). srcore itself imports no model
code: the packages that define models register them when they are imported (`import distill.zoo`,
`import search_spaces.network`; `import distill` and `import search_spaces` do both).

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


# --- builders of checkpoint specs ----------------------------------------------------------------------------

_BUILDERS: dict[str, Callable[[dict], nn.Module]] = {}
_OWNERS = {"arch": "distill.zoo", "genotype": "search_spaces.network"}  # where the usual builders live


def register_builder(key: str):
    """Decorator: `builder(spec) -> nn.Module` builds every spec that has the key `key`."""

    def deco(builder: Callable[[dict], nn.Module]) -> Callable[[dict], nn.Module]:
        if key in _BUILDERS or key == "arch":
            raise ValueError(f"a builder for {key!r} specs is registered twice")
        _BUILDERS[key] = builder
        return builder

    return deco


def build_spec(spec: dict) -> nn.Module:
    """A fresh network for a checkpoint spec: `{"arch", "scale", "kwargs"}` or a registered key."""
    if "arch" in spec:
        if spec["arch"] not in _MODELS and not _MODELS:
            raise KeyError(f"unknown architecture {spec['arch']!r}: no architecture is registered "
                           f"(import {_OWNERS['arch']} first)")
        return create(spec["arch"], spec["scale"], **spec.get("kwargs", {}))
    for key, builder in _BUILDERS.items():
        if key in spec:
            return builder(spec)
    known = [k for k in spec if k in _OWNERS]
    if known:
        raise KeyError(f"no builder is registered for {known[0]!r} specs (import {_OWNERS[known[0]]} first)")
    keys = ["arch", *sorted((set(_BUILDERS) | set(_OWNERS)) - {"arch"})]
    raise KeyError(f"model spec needs an {' or a '.join(map(repr, keys))} key, got keys {sorted(spec)}")


# --- transforms of built networks (compressed specs) -----------------------------------------------------------
# A spec may carry keys that change the network built from its "arch"/"genotype" part: `reparameterized: true`
# (multi-branch blocks fused) and `widths: {group: channels}` (pruned). Their owner (`compress.prune`) registers
# one transform for them; it runs after the builder, before any state dict is loaded.

_TRANSFORMS: dict[tuple[str, ...], Callable[[nn.Module, dict], nn.Module]] = {}
_TRANSFORM_OWNERS = {"reparameterized": "compress", "widths": "compress"}


def register_spec_transform(*keys: str):
    """Decorator: `transform(model, spec) -> nn.Module` runs on every spec with a truthy value for any of `keys`."""

    def deco(fn: Callable[[nn.Module, dict], nn.Module]) -> Callable[[nn.Module, dict], nn.Module]:
        if any(k in ks for ks in _TRANSFORMS for k in keys):
            raise ValueError(f"a transform for spec keys {keys} is registered twice")
        _TRANSFORMS[tuple(keys)] = fn
        return fn

    return deco


def apply_spec_transforms(model: nn.Module, spec: dict) -> nn.Module:
    """Run the registered transforms whose keys `spec` sets (a clear KeyError when their owner is not imported)."""
    done: set[str] = set()
    for keys, fn in _TRANSFORMS.items():
        if any(spec.get(k) for k in keys):
            model = fn(model, spec)
            done.update(keys)
    missing = [k for k in _TRANSFORM_OWNERS if spec.get(k) and k not in done]
    if missing:
        raise KeyError(f"the spec sets {missing[0]!r} but no transform for it is registered "
                       f"(import {_TRANSFORM_OWNERS[missing[0]]} first)")
    return model
