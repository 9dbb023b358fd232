"""Paths into the shared data and weights folder, written the same way on every machine.

Configs name files in the shared folder (benchmark sets, T91, official teacher weights) with the prefix
`$SRNAS_SHARED/`, e.g. `$SRNAS_SHARED/teachers/rlfn_x2.pth`. `expand_shared` replaces the prefix by the
folder given by the environment variable SRNAS_SHARED, or, when it is unset, by `<repo>/../shared` (the
default the tests use too): the same config works from any working directory and on any machine. Paths
without the prefix are returned unchanged (relative ones stay relative to the working directory).

The prefix is expanded where a file is opened (`srcore.data`, `srcore.checkpoint.load_file`), not when a
config is loaded, so checkpoints store the portable form.
"""
from __future__ import annotations

import os
from pathlib import Path

PREFIX = "$SRNAS_SHARED/"
REPO = Path(__file__).resolve().parent.parent


def shared_root() -> Path:
    """The shared folder: $SRNAS_SHARED, else <repo>/../shared."""
    env = os.environ.get("SRNAS_SHARED")
    return Path(env).expanduser() if env else REPO.parent / "shared"


def expand_shared(path: str | os.PathLike) -> str | os.PathLike:
    """`$SRNAS_SHARED/x` -> `<shared root>/x`; anything else unchanged (same type)."""
    s = os.fspath(path)
    if isinstance(s, str) and s.startswith(PREFIX):
        return str(shared_root() / s[len(PREFIX):])
    return path


def describe(path: str | os.PathLike) -> str:
    """A path for error messages: `$SRNAS_SHARED/x (= /abs/x)` when it uses the prefix, else the path."""
    expanded = expand_shared(path)
    return f"{os.fspath(path)} (= {expanded})" if os.fspath(expanded) != os.fspath(path) else os.fspath(path)
