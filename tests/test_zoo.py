"""Every registered architecture builds at every scale it declares and maps (1, 3, h, w) to (1, 3, s*h, s*w).

The LR input is 16x16, not smaller: the ESA block of RFDN/RLFN (stride-2 3x3 conv, then a 7x7 max-pool with
stride 3, as in the official code) needs at least 15 LR pixels.
"""
from __future__ import annotations

import pytest
import torch

from distill import zoo

CASES = [(name, s) for name in zoo.list_models() for s in zoo.get_entry(name).scales]
# RCAN's default (10 groups x 20 blocks, 15.6 M params) is slow to build on the CPU; the factory takes its size
SMALL = {"rcan": {"n_resgroups": 2, "n_resblocks": 2}}



@pytest.mark.parametrize("name,scale", CASES, ids=[f"{n}-x{s}" for n, s in CASES])
def test_builds_and_upscales(name, scale):
    torch.manual_seed(0)
    model = zoo.create(name, scale, **SMALL.get(name, {})).eval()
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        y = model(x)
    assert y.shape == (1, 3, 16 * scale, 16 * scale)
    assert y.dtype == torch.float32
    assert torch.isfinite(y).all()


def test_registry_is_not_empty_and_covers_x2_to_x4():
    assert len(CASES) >= 20
    for name in zoo.list_models():
        entry = zoo.get_entry(name)
        assert entry.name == name and entry.rgb_range in (1.0, 255.0) and entry.scales


def test_unknown_name_lists_the_known_names():
    with pytest.raises(KeyError) as e:
        zoo.create("no_such_net", 2)
    msg = e.value.args[0]
    assert "no_such_net" in msg
    for name in zoo.list_models():
        assert name in msg


@pytest.mark.parametrize("name,scale", [("imdn_aim19", 2), ("imdn", 5), ("rlfn", 8)])
def test_unsupported_scale_names_it(name, scale):
    with pytest.raises(ValueError) as e:
        zoo.create(name, scale)
    msg = str(e.value)
    assert name in msg and f"scale={scale}" in msg
    for s in zoo.get_entry(name).scales:
        assert str(s) in msg
