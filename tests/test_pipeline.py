"""The whole chain (search -> derive -> train -> evaluate) through tools/pipeline.py on the embedded images."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from search_spaces.genotype import load_genotype
from srcore.checkpoint import read_checkpoint

TOOLS = Path(__file__).resolve().parents[1] / "tools"


@pytest.fixture()
def pipeline(monkeypatch):
    monkeypatch.syspath_prepend(str(TOOLS))
    import pipeline

    return pipeline


def test_smoke_pipeline_chains_every_stage(pipeline, tmp_path, monkeypatch):
    monkeypatch.setenv("SRNAS_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "run"
    assert pipeline.main(["--config", "smoke", "--out", str(out)]) == 0
    g = load_genotype(out / "search" / "genotype.yaml")
    ckpt = read_checkpoint(out / "train" / "best.pt")
    # the trained network is the searched genotype (its own width and depth), carried by the checkpoint
    assert ckpt["spec"]["genotype"]["inputs"] == [list(p) for p in g.inputs]
    assert ckpt["spec"]["genotype"]["num_cells"] == g.num_cells and ckpt["spec"]["genotype"]["channels"] == g.channels
    summary = json.loads((out / "summary.json").read_text())
    (res,) = summary["results"]
    assert res["dataset"] == "builtin-val" and res["n_images"] == 2 and res["psnr_y"] > 0


def test_unknown_pipeline_key_is_an_error(pipeline, tmp_path):
    from srcore.config import ConfigError

    bad = tmp_path / "p.yaml"
    bad.write_text("search: {config: smoke}\ntrain: {config: smoke}\nevaluate: {datas: [builtin]}\n")
    with pytest.raises(ConfigError, match=r"evaluate\.datas: unknown key"):
        pipeline.main(["--config", str(bad), "--out", str(tmp_path / "o")])
    assert sys.modules.get("pipeline") is pipeline
