"""JSON-lines logs of a run (metrics.jsonl, alpha_history.jsonl): read them, trim them for a resume.

A process killed while appending a line leaves the file's last line cut off. `read_jsonl` drops such a torn
final line with a warning (logger "srnas"); a malformed line anywhere else is a one-line ValueError naming
the file and the line number. `trim_jsonl` keeps the records up to a step (those after a checkpoint are
redone by a resumed run) and rewrites the file atomically.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

log = logging.getLogger("srnas")


def read_jsonl_lines(path: str | os.PathLike, *, need: tuple[str, ...] = ()) -> list[tuple[int, dict]]:
    """(line number, JSON object) of each record of a JSON-lines file: blank lines are skipped, a torn last
    line is dropped with a warning. `need`: keys every record must have. Problems are one-line ValueErrors
    naming `path:line`."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not a UTF-8 text file ({e.reason} at byte {e.start})") from None
    lines = text.split("\n")
    last = max((i for i, line in enumerate(lines) if line.strip()), default=-1)
    records = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            if i == last:
                log.warning(f"{path}:{i + 1}: dropped a torn last line ({len(line)} characters; the process "
                            "writing it was probably killed)")
                continue
            raise ValueError(f"{path}:{i + 1}: not a JSON object ({e.msg} at column {e.colno})") from None
        if not isinstance(rec, dict):
            raise ValueError(f"{path}:{i + 1}: expected a JSON object, got {type(rec).__name__}")
        missing = [k for k in need if k not in rec]
        if missing:
            raise ValueError(f"{path}:{i + 1}: record without '{missing[0]}'")
        records.append((i + 1, rec))
    return records


def read_jsonl(path: str | os.PathLike, *, need: tuple[str, ...] = ()) -> list[dict]:
    """The JSON objects of a JSON-lines file (see `read_jsonl_lines`)."""
    return [rec for _, rec in read_jsonl_lines(path, need=need)]


def trim_jsonl(path: str | os.PathLike, max_step: int) -> int:
    """Keep the records with `step` <= max_step (dropping a torn last line); returns how many were kept."""
    path = Path(path)
    if not path.is_file():
        return 0
    keep = [r for r in read_jsonl(path, need=("step",)) if not isinstance(r["step"], (int, float))
            or r["step"] <= max_step]
    tmp = path.with_name(f".{path.name}.trim.tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in keep), encoding="utf-8")
    os.replace(tmp, path)
    return len(keep)
