"""Contracts across packages: srcore is the ground floor (it imports nothing above it; the model packages
register their builders), the cost functions leave a model as it was, and tools/train.py's teacher options
(--teacher NAME, a teacher trained here with the student's skip)."""
from __future__ import annotations

import ast
import subprocess
import sys

import pytest
import torch
from conftest import REPO

from srcore.cost import count_params, measure_cost

UPPER = ("distill", "search_spaces", "nas", "compress", "tools")


def test_srcore_never_imports_upward():
    for path in sorted((REPO / "srcore").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
            bad = [n for n in names if n.split(".")[0] in UPPER]
            assert not bad, f"{path.name} imports {bad}"


def test_specs_are_built_by_registered_builders():
    """In a fresh interpreter: srcore alone cannot build a genotype spec (and says what to import); after the
    model packages are imported, it builds both kinds of spec."""
    code = """
import sys
from srcore.checkpoint import CheckpointError
from srcore.modelspec import arch_spec, build_model
spec = {"genotype": {"version": 2, "space": "dlsr", "scale": 2, "channels": 8, "num_cells": 1,
                     "ops": ["conv_3x3"], "cell": ["conv_3x3"] * 3, "inputs": [], "skip": "bicubic"}}
for s, hint in ((spec, "search_spaces.network"), (arch_spec("rlfn_s", 2), "distill.zoo")):
    try:
        build_model(s)
    except CheckpointError as e:
        assert hint in str(e), e
    else:
        raise SystemExit("built without its package")
assert not any(m.split(".")[0] in ("distill", "search_spaces", "nas") for m in sys.modules)
import distill, search_spaces
print(type(build_model(spec)).__name__, type(build_model(arch_spec("rlfn_s", 2))).__name__)
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["DLSRNet", "RLFN"]


def test_cost_functions_leave_the_model_as_it_was():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.BatchNorm2d(4)).train()
    model[1].eval()  # a mixed-mode model: each module's mode comes back as it was
    before = [p.data_ptr() for p in model.parameters()]
    cost = measure_cost(model, (1, 3, 8, 8))
    assert cost.params == count_params(model) == 3 * 4 * 9 + 4 + 8
    assert model.training and not model[1].training and model[0].training
    assert [p.data_ptr() for p in model.parameters()] == before and next(model.parameters()).device.type == "cpu"


@pytest.mark.parametrize("args,expect", [
    (("rlfn_s_x2", None), {"name": "rlfn_s_x2", "weights": None}),
    (("rlfn_s_x2", "/my/copy.pth"), {"name": "rlfn_s_x2", "weights": "/my/copy.pth"}),
    (("rlfn_s", "/w.pth"), {"arch": "rlfn_s", "weights": "/w.pth"}),
])
def test_train_teacher_argument(args, expect):
    from conftest import import_tool

    tc = import_tool("train").teacher_from_args(*args)
    assert {k: getattr(tc, k) for k in expect} == expect


@pytest.mark.parametrize("args,match", [
    (("rlfn_s", None), "rlfn_s_x2"),  # an arch without a file: names the registered weights for it
    (("nosuch", None), "neither registered"),
    ((None, "/w.pth"), "needs --teacher"),
])
def test_train_teacher_argument_errors(args, match):
    from conftest import import_tool

    from srcore.config import ConfigError

    with pytest.raises(ConfigError, match=match):
        import_tool("train").teacher_from_args(*args)


def test_teacher_trained_here_gets_the_skip_or_a_clear_error():
    import dataclasses

    from conftest import import_tool

    from distill.config import PretrainTeacherConfig, TrainConfig
    from srcore.config import ConfigError, load_config

    train = import_tool("train")
    cfg = load_config(TrainConfig, REPO / "configs" / "train" / "quickstart.yaml")
    assert train.teacher_run_config(cfg).student.kwargs == {"rgb_range": 1.0, "skip": "bicubic"}
    with pytest.raises(ConfigError, match="pretrain_teacher: imdn .*skip: none"):
        train.teacher_run_config(dataclasses.replace(cfg, pretrain_teacher=PretrainTeacherConfig(arch="imdn")))
