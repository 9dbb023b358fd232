"""The one YAML reader of srnas: `yaml.SafeLoader`, plus a bound on what aliases may expand to.

A YAML anchor can be referenced many times, and an anchored node may itself hold references: nine levels of
nine aliases are a few hundred bytes of text but 9^9 (387 million) values once walked. `yaml.safe_load`
builds that as shared objects in no time, and then whatever walks the result (a `repr` for an error message,
`dataclasses.asdict`, `json.dumps`) hangs. `safe_load` composes the document's node graph first, counts the
nodes it stands for with every alias expanded (linear in the graph: each distinct node is counted once), and
refuses the document, naming its source, when that count exceeds `MAX_NODES` or an alias refers to a node
that contains it (a recursive structure). Deeply nested documents (`MAX_DEPTH`) and documents larger than
`MAX_BYTES` are refused before PyYAML's scanner sees them (its time grows with the square of the nesting).

Every YAML read in srnas (configs, `--set` values, genotypes) goes through `safe_load`; writing stays
`yaml.safe_dump`. Problems are `YAMLLoadError` (a ValueError) with a one-line message.
"""
from __future__ import annotations

import re
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, SequenceNode

MAX_NODES = 100_000  # values in a document with every alias expanded (our configs have a few hundred)
MAX_DEPTH = 100  # nesting levels of sequences/mappings
MAX_BYTES = 1_000_000  # document size (our configs and genotypes are a few kB; PyYAML reads ~100 kB/s)


class YAMLLoadError(ValueError):
    """YAML text that is not valid YAML or that expands beyond the bounds."""


def _expanded_size(root: Node, source: str) -> int:
    """Nodes `root` stands for with aliases expanded; raises on a cycle or on exceeding the bounds."""
    sizes: dict[int, int] = {}
    on_path: set[int] = set()
    # iterative post-order walk (a recursive one could overflow the Python stack on deep documents)
    stack: list[tuple[Node, int, bool]] = [(root, 1, False)]
    while stack:
        node, depth, children_done = stack.pop()
        key = id(node)
        if children_done:
            on_path.discard(key)
            children = _children(node)
            sizes[key] = 1 + sum(sizes[id(c)] for c in children)
            if sizes[key] > MAX_NODES:
                raise YAMLLoadError(f"{source}: the document expands to more than {MAX_NODES} values (with its "
                                    "aliases expanded: a YAML alias bomb?); refused")
            continue
        if key in sizes:
            continue
        if key in on_path:
            raise YAMLLoadError(f"{source}: an alias refers to a node that contains it (a recursive structure); "
                                "refused")
        if depth > MAX_DEPTH:
            raise YAMLLoadError(f"{source}: nested more than {MAX_DEPTH} levels deep; refused")
        on_path.add(key)
        stack.append((node, depth, True))
        for child in _children(node):
            if id(child) not in sizes:
                stack.append((child, depth + 1, False))
    return sizes[id(root)]


def _children(node: Node) -> list[Node]:
    if isinstance(node, SequenceNode):
        return list(node.value)
    if isinstance(node, MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def _describe(e: yaml.YAMLError) -> str:
    """'problem at line L, column C' of a PyYAML error, on one line."""
    problem, mark = getattr(e, "problem", None), getattr(e, "problem_mark", None)
    if problem and mark is not None:
        return f"{problem} at line {mark.line + 1}, column {mark.column + 1}"
    return " ".join(str(e).split())


def _bracket_depth(text: str) -> int:
    """An upper bound of the flow nesting ([ and {) of `text`, counting every bracket (quoted ones too)."""
    depth = most = 0
    for ch in re.findall(r"[\[\]{}]", text):
        depth = depth + 1 if ch in "[{" else max(depth - 1, 0)
        most = max(most, depth)
    return most


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader whose composer stops at MAX_DEPTH levels (instead of recursing until Python's stack ends)."""

    source = "YAML"
    _depth = 0

    def compose_node(self, parent, index):
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise YAMLLoadError(f"{self.source}: nested more than {MAX_DEPTH} levels deep; refused")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def safe_load(text: str, source: str = "YAML") -> Any:
    """Parse YAML `text` like `yaml.safe_load`, refusing alias bombs, recursion and excessive nesting.

    Every problem is a one-line `YAMLLoadError` starting with `source` (a file name, `--set key`, ...).
    """
    if len(text) > MAX_BYTES:
        raise YAMLLoadError(f"{source}: {len(text)} characters, more than the {MAX_BYTES} a config or genotype "
                            "may have; refused")
    if _bracket_depth(text) > MAX_DEPTH:  # PyYAML's scanner is quadratic in flow nesting: refuse before it runs
        raise YAMLLoadError(f"{source}: nested more than {MAX_DEPTH} levels deep; refused")
    loader = _BoundedLoader(text)
    loader.source = source
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _expanded_size(node, source)
        return loader.construct_document(node)
    except yaml.YAMLError as e:
        raise YAMLLoadError(f"{source}: not valid YAML ({_describe(e)})") from None
    except RecursionError:
        raise YAMLLoadError(f"{source}: nested too deeply to parse; refused") from None
    finally:
        loader.dispose()
