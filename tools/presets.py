#!/usr/bin/env python
"""Check (or rewrite) that every preset in configs/ is a complete, commented YAML a user can copy and edit.

A complete preset writes out every key of every section of its config (defaults included), each with a
comment: the preset's own where it has one, else the one on the field in the config's dataclass
(srcore/configdoc.py); --write fills in what is missing and keeps the header, the comments and the values.
Folders and their configs: configs/search (nas.config.SearchConfig, or ESRSearchConfig for `space.name: esr`),
configs/train (distill.config.TrainConfig), configs/pipeline (tools/pipeline.py's PipelineConfig), configs/study
(tools/study.py's StudyConfig).

Examples:
  python tools/presets.py               # list the presets to fix (exit status 1 if any)
  python tools/presets.py --write       # fix them
"""
from __future__ import annotations

import argparse
import dataclasses

from common import CONFIGS, run_cli, setup_logging
from pipeline import PipelineConfig
from study import StudyConfig

from distill.config import TrainConfig
from nas.config import search_config_class
from srcore.configdoc import complete_yaml, missing_keys, uncommented_keys
from srcore.yamlio import safe_load


def config_classes() -> dict[str, type]:
    """configs/<folder> -> the dataclass its presets load into."""
    return {"search": search_config_class, "train": TrainConfig, "pipeline": PipelineConfig, "study": StudyConfig}


def incomplete_presets() -> dict[str, list[str]]:
    """preset path -> what is wrong with it: keys it leaves to their defaults, keys without a comment (presets
    without either are left out)."""
    found = {}
    for folder, cls in config_classes().items():
        for path in sorted((CONFIGS / folder).glob("*.yaml")):
            text = path.read_text()
            data = safe_load(text, str(path)) or {}
            kind = cls if dataclasses.is_dataclass(cls) else cls(data, str(path))  # a family picks its dataclass
            problems = [f"{k} (not written out)" for k in missing_keys(kind, data)]
            problems += [f"{k} (no comment)" for k in uncommented_keys(text)]
            if problems:
                found[str(path.relative_to(CONFIGS.parent))] = problems
    return found


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--write", action="store_true", help="rewrite the presets to fix")
    args = p.parse_args(argv)
    log = setup_logging()
    todo = incomplete_presets()
    classes = config_classes()
    for path, problems in todo.items():
        if args.write:
            file = CONFIGS.parent / path
            cls = classes[file.parent.name]
            if not dataclasses.is_dataclass(cls):
                cls = cls(safe_load(file.read_text(), str(file)) or {}, str(file))
            file.write_text(complete_yaml(cls, file.read_text()))
            log.info(f"{path}: rewritten ({len(problems)} keys written out or commented)")
        else:
            log.warning(f"{path}: {len(problems)} keys to fix: {', '.join(problems[:6])}"
                        f"{', ...' if len(problems) > 6 else ''}")
    if not todo:
        log.info("every preset is complete and commented")
    return 1 if todo and not args.write else 0


if __name__ == "__main__":
    run_cli(main)
