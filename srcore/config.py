"""Typed experiment configs: YAML (`srcore.yamlio.safe_load`) into nested dataclasses, with strict checking.

* Unknown keys are errors naming the file and the dotted key, with the nearest valid key when one is close
  (`optim.lrr: unknown key; did you mean 'lr'?`); so are values of the wrong type, and
  non-finite numbers (`.nan`, `.inf`). Ranges are checked by each dataclass's `__post_init__`
  (`check_min`, `check_range` here), so a config object is always usable.
* `--set a.b=value` overrides are applied to the loaded mapping before it is typed; the value is parsed
  as YAML (`--set train.lr=3e-4`, `--set data.scales=[2,4]`, `--set model.genotype=null`).
* Nothing is mutated in place: `load_config` builds a new object; `to_dict` gives a plain mapping to store
  in checkpoints and `from_dict` rebuilds the same config from it.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import re
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

from .yamlio import YAMLLoadError, safe_load

T = TypeVar("T")


class ConfigError(ValueError):
    """A config file, preset or override that does not fit the config's dataclass."""


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


_YAML11_FLOAT = re.compile(r"[-+]?[0-9]+(\.[0-9]*)?[eE][-+]?[0-9]+")


def _short(value: Any) -> str:
    """A one-line repr of a value for error messages, cut to 60 characters."""
    text = " ".join(repr(value).split())
    return text if len(text) <= 60 else text[:57] + "..."


def check_min(section: str, obj: Any, **minimum: float) -> None:
    """Raise ConfigError `section.key = value: must be >= m` for each field below its minimum (None skips)."""
    for key, lo in minimum.items():
        v = getattr(obj, key)
        if v is not None and v < lo:
            raise ConfigError(f"{section}.{key} = {v!r}: must be >= {lo}")


def check_range(section: str, obj: Any, key: str, lo: float, hi: float, *, hi_open: bool = False) -> None:
    """Raise ConfigError unless lo <= obj.key <= hi (or < hi with hi_open)."""
    v = getattr(obj, key)
    if v is not None and not (lo <= v < hi if hi_open else lo <= v <= hi):
        raise ConfigError(f"{section}.{key} = {v!r}: must be in [{lo}, {hi}{')' if hi_open else ']'}")


def _coerce(tp: Any, value: Any, where: str) -> Any:
    """Check (and lightly convert: int -> float, list -> tuple) `value` against annotation `tp`."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(a, value, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if len(errors) == 1 else
                          f"{where}: {_short(value)} is none of {', '.join(_type_name(a) for a in args)}")
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping for {tp.__name__}, got {type(value).__name__}")
        return _build(tp, value, where)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {_short(value)}")
        args = typing.get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ConfigError(f"{where}: expected {len(args)} items, got {len(value)}")
            return tuple(_coerce(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value, strict=True)))
        item = args[0] if args else Any
        items = [_coerce(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {_short(value)}")
        return dict(value)
    if tp is float:
        if isinstance(value, str) and _YAML11_FLOAT.fullmatch(value.strip()):
            value = float(value)  # PyYAML (YAML 1.1) reads 3e-4 / 1E5 (no dot) as strings
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {_short(value)}")
        try:
            value = float(value)
        except OverflowError:
            raise ConfigError(f"{where}: {_short(value)} is too large for a number") from None
        if not math.isfinite(value):
            raise ConfigError(f"{where}: expected a finite number, got {value}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {_short(value)}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {_short(value)}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {_short(value)}")
        return value
    if typing.get_origin(tp) is typing.Literal:
        if value not in typing.get_args(tp):
            raise ConfigError(f"{where}: expected one of {list(typing.get_args(tp))}, got {_short(value)}")
        return value
    raise ConfigError(f"{where}: unsupported annotation {tp!r}")


def suggest(word: str, known: list[str]) -> str:
    """'; did you mean 'x'?' for the known name closest to a mistyped one (difflib), else ''."""
    close = difflib.get_close_matches(word, known, n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


def _build(cls: type[T], data: dict, where: str) -> T:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = [k for k in data if k not in fields]
    if unknown:
        prefix = f"{where}." if where and not where.endswith(":") else where
        raise ConfigError(f"{prefix}{unknown[0]}: unknown key{suggest(str(unknown[0]), list(fields))} "
                          f"(known: {', '.join(fields)})")
    kwargs = {}
    for name, value in data.items():
        sub = f"{where}.{name}" if where and not where.endswith(":") else f"{where}{name}"
        kwargs[name] = _coerce(hints[name], value, sub)
    missing = [n for n, f in fields.items() if n not in kwargs and f.default is dataclasses.MISSING
               and f.default_factory is dataclasses.MISSING]
    if missing:
        sep = "." if where and not where.endswith(":") else ""
        raise ConfigError(f"{where}{sep}{missing[0]}: required key is missing")
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise ConfigError(_located(where, str(e))) from None


def _located(where: str, msg: str) -> str:
    """Prefix a dataclass's own message with the file and section: 'f.yaml:data' + 'data.x = 0: ...' gives
    'f.yaml:data.x = 0: ...' (the section is not repeated); other messages are appended after a space."""
    head, _, path = where.rpartition(":")
    name = re.sub(r"\[\d+\]$", "", path.rsplit(".", 1)[-1])
    if name and msg.startswith((name + ".", name + "[", name + ":")):
        return f"{head}:{path}{msg[len(name):]}"
    return f"{where} {msg}"


def apply_overrides(data: dict, overrides: list[str] | tuple[str, ...]) -> dict:
    """Return a copy of `data` with each `a.b.c=value` set (value parsed as YAML)."""
    import copy

    out = copy.deepcopy(data)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key.path=value")
        key, raw = item.split("=", 1)
        try:
            value = safe_load(raw, f"--set {key}") if raw != "" else ""
        except YAMLLoadError as e:
            raise ConfigError(str(e)) from None
        node = out
        parts = key.strip().split(".")
        for p in parts[:-1]:
            if not isinstance(node.get(p, {}), dict):
                raise ConfigError(f"--set {key}: {p} is not a section")
            node = node.setdefault(p, {})
        node[parts[-1]] = value
    return out


def from_dict(cls: type[T], data: dict, source: str = "config") -> T:
    return _build(cls, data, f"{source}:")


def to_dict(cfg: Any) -> dict:
    d = dataclasses.asdict(cfg)

    def plain(v):
        if isinstance(v, tuple):
            return [plain(x) for x in v]
        if isinstance(v, list):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return plain(d)


def read_back(cls: type, saved: dict) -> dict:
    """A config saved by an earlier run (a plain dict) as this version writes it: read through `cls`, so a key
    added since (with its default) does not make an old run look different. Unreadable: returned as it is."""
    try:
        return to_dict(from_dict(cls, saved))
    except (ConfigError, TypeError, AttributeError):
        return saved


def resolve_preset(config: str | Path, preset_dir: Path) -> Path:
    """A path to a YAML file, or the name of a preset `preset_dir/<name>.yaml`."""
    p = Path(config)
    if p.suffix in (".yaml", ".yml") or p.exists():
        if not p.is_file():
            raise ConfigError(f"{p}: no such config file")
        return p
    cand = preset_dir / f"{config}.yaml"
    if not cand.is_file():
        known = sorted(q.stem for q in preset_dir.glob("*.yaml"))
        raise ConfigError(f"{config!r} is neither a YAML file nor a preset in {preset_dir}"
                          f"{suggest(str(config), known)} (presets: {', '.join(known)})")
    return cand


def load_config(cls: type[T], config: str | Path, overrides: list[str] | tuple[str, ...] = (),
                preset_dir: Path | None = None) -> T:
    """Read a YAML file (or preset name), apply `--set` overrides, and type it into `cls` (a dataclass, or a
    function `(mapping, source) -> dataclass` that picks one from the mapping, e.g. by a `name` key)."""
    path = resolve_preset(config, preset_dir) if preset_dir is not None else Path(config)
    try:
        data = safe_load(path.read_text(encoding="utf-8"), str(path))
    except OSError as e:
        raise ConfigError(f"{path}: cannot read config ({e.strerror})") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not a UTF-8 text file ({e.reason} at byte {e.start})") from None
    except YAMLLoadError as e:
        raise ConfigError(str(e)) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping, got {type(data).__name__}")
    data = apply_overrides(data, overrides)
    if not dataclasses.is_dataclass(cls):  # a function of the mapping that picks the dataclass (a config family)
        cls = cls(data, str(path))
    return from_dict(cls, data, str(path))
