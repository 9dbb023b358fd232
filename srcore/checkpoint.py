"""Checkpoint files: atomic saving, reading published weight files, strict loading with clear errors.

Published SR weights come in many wrappings: a bare state dict, one nested under `state_dict`,
`params`, `params_ema` or `model` (with `epoch` and optimizer state beside it), keys prefixed with
`module.` by DataParallel, and the legacy (pre-1.6, non-zip) pickle format. `read_state_dict` unwraps
all of them with `torch.load(weights_only=True)`, so no code in a weight file is ever run.
"""
from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .paths import describe, expand

_NESTING_KEYS = ("params_ema", "params", "state_dict", "model", "net", "network")


class CheckpointError(ValueError):
    """A weight/checkpoint file that does not fit the network it is loaded into."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_save(obj: Any, path: str | os.PathLike) -> None:
    """torch.save to a temp file in the same folder, fsync, then rename: a crash never leaves a torn file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; a checkpoint gets the usual permissions
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load_file(path: str | os.PathLike) -> Any:
    """torch.load with weights_only=True on CPU; a one-line error naming the file on failure.

    `$SRNAS_SHARED/...` paths are expanded (srcore.paths)."""
    if not Path(expand(path)).is_file():
        raise CheckpointError(f"{describe(path)}: no such checkpoint file")
    path = Path(expand(path))
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path}: not a readable PyTorch weight file ({first})") from None


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and len(obj) > 0 and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())


def extract_state_dict(obj: Any, source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """Find the tensors in a loaded file: unwrap nesting, strip `module.` prefixes."""
    seen = 0
    while not _is_state_dict(obj):
        if not isinstance(obj, Mapping) or seen > 3:
            raise CheckpointError(f"{source}: no state dict found (top-level keys: "
                                  f"{list(obj)[:8] if isinstance(obj, Mapping) else type(obj).__name__})")
        inner = next((obj[k] for k in _NESTING_KEYS if k in obj and isinstance(obj[k], Mapping)), None)
        if inner is None:
            tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
            if tensors and len(tensors) == len(obj):
                obj = tensors
                break
            raise CheckpointError(f"{source}: no state dict found under any of {list(_NESTING_KEYS)} "
                                  f"(top-level keys: {list(obj)[:8]})")
        obj, seen = inner, seen + 1
    sd = dict(obj)
    if all(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    return sd


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    return extract_state_dict(load_file(path), str(path))


def load_strict(model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str = "checkpoint") -> None:
    """Load every tensor or fail with one line listing missing, unexpected and mis-shaped keys."""
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    shapes = [f"{k} {tuple(state_dict[k].shape)} vs {tuple(own[k].shape)}"
              for k in own if k in state_dict and state_dict[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        def short(xs: list[str]) -> str:
            return ", ".join(xs[:6]) + (f" (+{len(xs) - 6} more)" if len(xs) > 6 else "")
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing: {short(missing)}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected: {short(unexpected)}")
        if shapes:
            parts.append(f"{len(shapes)} wrong shape (file vs model): {short(shapes)}")
        raise CheckpointError(f"{source} does not fit {type(model).__name__}: " + "; ".join(parts))
    check_finite(state_dict, source)
    model.load_state_dict(state_dict, strict=True)


def check_finite(state_dict: Mapping[str, torch.Tensor], source: str = "checkpoint") -> None:
    """Raise CheckpointError naming the first tensor (in file order) that holds NaN or Inf values."""
    for key, t in state_dict.items():
        if isinstance(t, torch.Tensor) and (t.is_floating_point() or t.is_complex()):
            bad = ~torch.isfinite(t)
            if bool(bad.any()):
                n_nan, n_inf = int(torch.isnan(t).sum()), int(torch.isinf(t).sum())
                raise CheckpointError(f"{source}: tensor {key} {tuple(t.shape)} holds {n_nan} NaN and {n_inf} Inf "
                                      f"values of {t.numel()}; the weights are corrupt (not loaded)")


# --- srnas's own checkpoints -------------------------------------------------------------------------
# A checkpoint carries what is needed to rebuild its network: `spec` is {"arch": name, "scale": s,
# "kwargs": {...}} for a zoo network or {"genotype": {...}} for a derived network, next to the weights,
# the experiment config and the metrics, so a network is never rebuilt from a hand-edited model file.

FORMAT = "srnas-checkpoint"


def save_checkpoint(path: str | os.PathLike, *, state_dict: Mapping[str, torch.Tensor], spec: dict,
                    config: dict | None = None, metrics: dict | None = None, step: int = 0,
                    **extra: Any) -> None:
    obj = {"format": FORMAT, "version": 1, "spec": spec, "state_dict": dict(state_dict),
           "config": config or {}, "metrics": metrics or {}, "step": step, **extra}
    atomic_save(obj, path)


def read_checkpoint(path: str | os.PathLike) -> dict:
    """Read an srnas checkpoint; a published weight file (no spec) is a clear error."""
    obj = load_file(path)
    if not isinstance(obj, Mapping) or obj.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not an srnas checkpoint (no '{FORMAT}' header); for published "
                              "weights give --arch/--genotype with --weights instead")
    if "spec" not in obj or "state_dict" not in obj:
        raise CheckpointError(f"{path}: srnas checkpoint without 'spec' or 'state_dict'")
    return dict(obj)
