"""Complete, commented config files: every key of a config dataclass, with its comment.

A preset in configs/ is a file a user copies and edits, so it lists every key of every section (defaults
included) with what it means. The meaning is the comment on the field in the dataclass (`lr: float = 5e-4  #
peak learning rate`); a preset may keep its own comment on a key instead (a comment on the key's line or the
lines above it in the file), and keeps its header (the comment lines before the first key).

    missing_keys(TrainConfig, data)        # dotted keys a YAML mapping leaves to their defaults
    uncommented_keys(text)                 # keys written without a comment (on their line or above)
    complete_yaml(TrainConfig, text)       # the same config, every key written out, comments kept or added

Sections are the dataclass fields whose type is a dataclass (or an optional one: written out when the file
gives it, `null` otherwise); lists of dataclasses (loss terms, teachers) are written as the file gives them.
Library code: no I/O.
"""
from __future__ import annotations

import dataclasses
import inspect
import re
import types
import typing
from typing import Any

import yaml

from .config import to_dict
from .yamlio import safe_load

_FIELD = re.compile(r"^\s+(\w+)\s*:[^#\n]*#\s*(.+?)\s*$")
_DECL = re.compile(r"^\s{4}(\w+)\s*:")
_KEY = re.compile(r"^( *)(\w+):")


def field_comments(cls: type) -> dict[str, str]:
    """name -> the comment written on the field's line in the dataclass source, or on the comment line right
    above it ({} when the source is unavailable)."""
    try:
        lines = inspect.getsource(cls).splitlines()
    except (OSError, TypeError):
        return {}
    names = {f.name for f in dataclasses.fields(cls)}
    found = {}
    for i, line in enumerate(lines):
        m = _FIELD.match(line) or _DECL.match(line)
        if not m or m.group(1) not in names:
            continue
        if m.re is _FIELD:
            found[m.group(1)] = m.group(2)
        elif i and lines[i - 1].strip().startswith("#"):
            found[m.group(1)] = lines[i - 1].strip().lstrip("#").strip()
    return found


def _section_type(tp: Any) -> type | None:
    """The dataclass of a section annotation (`Foo` or `Foo | None`), else None."""
    if dataclasses.is_dataclass(tp):
        return tp
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        found = [a for a in typing.get_args(tp) if dataclasses.is_dataclass(a)]
        return found[0] if len(found) == 1 else None
    return None


def _defaults(cls: type) -> dict:
    """Field -> default value (plain data) of a dataclass, for the fields that have one."""
    out = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            value = f.default
        elif f.default_factory is not dataclasses.MISSING:
            value = f.default_factory()
        else:
            continue
        out[f.name] = to_dict(value) if dataclasses.is_dataclass(value) else _plain(value)
    return out


def _plain(v: Any) -> Any:
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    return v


def missing_keys(cls: type, data: dict | None) -> list[str]:
    """Dotted keys of `cls` (top level and inside each given section) that `data` does not write out."""
    data = data or {}
    hints = typing.get_type_hints(cls)
    missing = []
    for f in dataclasses.fields(cls):
        if f.name not in data:
            missing.append(f.name)
            continue
        sub = _section_type(hints[f.name])
        if sub is not None and isinstance(data[f.name], dict):
            missing += [f"{f.name}.{k}" for k in missing_keys(sub, data[f.name])]
    return missing


def _file_comments(text: str) -> tuple[list[str], dict[tuple, list[str]], dict[tuple, str]]:
    """The header (comment lines before the first key), and per (section, key) path the comment lines above
    it and the comment at the end of its line."""
    header, above, inline = [], {}, {}
    pending: list[str] = []
    section = None
    seen_key = False
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            (pending if seen_key else header).append(stripped)
            continue
        m = _KEY.match(line)
        if not m:
            if not stripped:
                if not seen_key and header:
                    header.append("")
                continue
            continue
        seen_key = True
        indent, key = len(m.group(1)), m.group(2)
        if indent == 0:
            section, path = key, (key,)
        elif indent == 2 and section is not None:
            path = (section, key)
        else:
            pending = []
            continue
        if pending:
            above[path] = pending
            pending = []
        comment = _inline_comment(line)
        if comment:
            inline[path] = comment
    while header and not header[-1]:
        header.pop()
    return header, above, inline


def _inline_comment(line: str) -> str | None:
    """The comment at the end of a YAML line (a '#' after whitespace, outside quotes), without the '#'."""
    quote = None
    for i, ch in enumerate(line):
        if quote:
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and i > 0 and line[i - 1] in " \t":
            return line[i + 1:].strip()
    return None


def _flow(value: Any) -> list[str]:
    """`value` in YAML flow style (one line, or wrapped lines for a long list)."""
    text = yaml.safe_dump(value, default_flow_style=True, sort_keys=False, width=100, allow_unicode=True)
    lines = text.rstrip("\n").splitlines()
    return lines[:-1] if len(lines) > 1 and lines[-1] == "..." else lines


def _dump(key: str, value: Any, indent: int) -> list[str]:
    """`key: value` at `indent`: scalars and lists in flow style, a list of mappings as a block sequence of flow
    mappings (one per line, as loss terms are written)."""
    pad = " " * indent
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        return [f"{pad}{key}:"] + [f"{pad}  - {_flow(v)[0]}" if len(_flow(v)) == 1 else
                                   f"{pad}  - " + " ".join(x.strip() for x in _flow(v)) for v in value]
    lines = _flow(value)
    return [f"{pad}{key}: {lines[0]}"] + [f"{pad}  {ln.strip()}" for ln in lines[1:]]


def _with_comment(lines: list[str], path: tuple, indent: int, above: dict, inline: dict, fallback: str | None,
                  width: int = 118) -> list[str]:
    """A key's dumped lines with the file's comments above, and its own (or the field's) comment at the end of
    its first line when that fits, else on the line above."""
    out = [" " * indent + c for c in above.get(path, [])]
    comment = inline.get(path) or (fallback if path not in above else None)
    first = lines[0]
    if comment and len(lines) == 1 and len(first) + 3 + len(comment) <= width:
        first = f"{first}  # {comment}"
    elif comment:
        out.append(" " * indent + f"# {comment}")
    return out + [first] + lines[1:]


def complete_yaml(cls: type, text: str) -> str:
    """`text` (a YAML config of `cls`) with every key written out (see the module docstring)."""
    data = safe_load(text, "config") or {}
    header, above, inline = _file_comments(text)
    hints = typing.get_type_hints(cls)
    top_comments = field_comments(cls)
    defaults = _defaults(cls)
    out = list(header)
    if out:
        out.append("")
    for f in dataclasses.fields(cls):
        sub = _section_type(hints[f.name])
        given = data.get(f.name, defaults.get(f.name))
        if sub is not None and isinstance(given, dict):
            comments = field_comments(sub)
            unknown = [k for k in given if k not in {g.name for g in dataclasses.fields(sub)}]
            if unknown:
                raise ValueError(f"{f.name}.{unknown[0]}: unknown key")
            merged = {**_defaults(sub), **given}
            out += _with_comment([f"{f.name}:"], (f.name,), 0, above, inline, top_comments.get(f.name))
            for g in dataclasses.fields(sub):
                if g.name in merged:
                    out += _with_comment(_dump(g.name, _plain(merged[g.name]), 2), (f.name, g.name), 2, above,
                                         inline, comments.get(g.name))
        else:
            out += _with_comment(_dump(f.name, _plain(given), 0), (f.name,), 0, above, inline,
                                 top_comments.get(f.name))
    return "\n".join(out) + "\n"


def uncommented_keys(text: str) -> list[str]:
    """Dotted keys (top level and one level down) with neither a comment at the end of their line nor comment
    lines right above; a section header (a key whose value is on the following lines) needs none."""
    lines = text.splitlines()
    missing, section = [], None
    for i, line in enumerate(lines):
        m = _KEY.match(line)
        if not m or len(m.group(1)) > 2:
            continue
        key = m.group(2)
        if not m.group(1):
            section = key
        if line.rstrip().endswith(":"):  # a section (or a block list) header
            continue
        above = lines[i - 1].strip() if i else ""
        if _inline_comment(line) is None and not above.startswith("#"):
            missing.append(key if not m.group(1) else f"{section}.{key}")
    return missing
