"""Where srnas finds the shared data and weights, and the `${SRNAS_SHARED}` path convention.

The shared folder holds `data/` (Set5, Set14, B100, T91, BSD200) and `teachers/` (official checkpoints). It
is `$SRNAS_SHARED` when set, else `../shared` next to the repository root (not the working directory).

A path in a config or on the command line may start with `${SRNAS_SHARED}` or `$SRNAS_SHARED` (e.g.
`${SRNAS_SHARED}/data/T91`): `expand` replaces it with the shared folder, so a config works from any
working directory and on any machine; `~` is expanded too. Configs keep the unexpanded text (so do the
checkpoints that store them); the data and weight loaders (`srcore.data`, `srcore.checkpoint`) expand it
when they open the path.
"""
from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SHARED_VAR = "SRNAS_SHARED"
_TOKENS = ("${SRNAS_SHARED}", "$SRNAS_SHARED")


def shared_dir() -> Path:
    """$SRNAS_SHARED, or ../shared relative to the repository root."""
    env = os.environ.get(SHARED_VAR)
    return Path(env).expanduser() if env else REPO.parent / "shared"


def expand(path: str | os.PathLike) -> str:
    """`path` with a leading ${SRNAS_SHARED} (or $SRNAS_SHARED) replaced by `shared_dir()` and ~ expanded."""
    s = os.fspath(path)
    for token in _TOKENS:
        if s.startswith(token):
            rest = s[len(token):].lstrip("/\\")
            return str(shared_dir() / rest) if rest else str(shared_dir())
    return os.path.expanduser(s)


def describe(path: str | os.PathLike) -> str:
    """A path for error messages: `${SRNAS_SHARED}/x (= /abs/x)` when it uses the prefix, else the path."""
    expanded = expand(path)
    return f"{os.fspath(path)} (= {expanded})" if expanded != os.fspath(path) else os.fspath(path)
