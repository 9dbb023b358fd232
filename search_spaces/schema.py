"""What the genotype checkers of every space share: one-line errors that name the file and the key."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def show(value: Any) -> str:
    """A short one-line rendering of an offending value for error messages."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_keys(raw: Any, source: str, keys: Sequence[str], required: Sequence[str], known: str = "known keys") -> None:
    """`raw` is a mapping with no key outside `keys` and every key of `required`, or a one-line ValueError."""
    if not isinstance(raw, Mapping):
        raise ValueError(f"{source}: a genotype is a mapping of keys ({', '.join(keys)}), "
                         f"got {type(raw).__name__} {show(raw)}")
    for key in raw:
        if key not in keys:
            raise ValueError(f"{source}: unknown key {show(key)}; {known}: {', '.join(keys)}")
    for key in required:
        if key not in raw:
            raise ValueError(f"{source}: missing key '{key}'")
