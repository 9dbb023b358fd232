"""Channel pruning: couplings found by tracing are complete (pruning zeroed channels changes nothing), shapes
at x2/x3/x4, the pinned pixel-shuffle conv, the cost model, rebuilding from spec + widths, bad requests."""
from __future__ import annotations

import copy
import dataclasses

import pytest
import torch

from compress.graph import trace_channels
from compress.prune import (
    CostModel,
    PruneError,
    Target,
    _slices,
    apply_plan,
    group_widths,
    magnitude_importance,
    plan_for_target,
    plan_from_scores,
    prune_to_widths,
    reparameterize,
    uniform_widths,
    widths_of,
)
from distill import zoo
from search_spaces.genotype import load_genotype
from srcore.checkpoint import load_strict
from srcore.cost import count_flops, count_params
from srcore.modelspec import arch_spec, build_model, genotype_spec

torch.set_num_threads(1)


def dlsr_spec(scale: int, cell=("rep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3")) -> dict:
    g = load_genotype("dlsr_x2")
    g = dataclasses.replace(g, scale=scale, channels=16, num_cells=3, inputs=g.inputs[:1], cell=cell,
                            ops=tuple(dict.fromkeys(g.ops + cell)), rgb_range=1)
    return genotype_spec(g)


SPECS = {
    "dlsr": dlsr_spec,
    "imdn": lambda s: arch_spec("imdn", s, nf=32, num_blocks=2),
    "rfdn": lambda s: arch_spec("rfdn", s, nf=24, num_blocks=2),
    "rlfn_s": lambda s: arch_spec("rlfn_s", s, nf=16, num_blocks=2),
    "pan": lambda s: arch_spec("pan", s),
}


def _zero_removed(model, graph, plan):
    """Zero every weight slice of the channels `plan` removes (on the unpruned model)."""
    removed = set()
    for name, keep in plan.items():
        g = graph.groups[name]
        removed.update(r for i, r in enumerate(g.classes) if i not in set(keep))
    with torch.no_grad():
        for r, t, sl in _slices(graph, model):
            if r in removed:
                sl(t).zero_()


@pytest.mark.parametrize("scale", [2, 3, 4])
@pytest.mark.parametrize("name", list(SPECS))
def test_pruning_zeroed_channels_is_exact(name, scale):
    """Channels whose every weight slice is zero contribute nothing: removing them must not change the output.
    A coupling the tracer missed (a residual, a concat offset, ESA's gate, a depthwise tie, a split) breaks
    this equality or the forward pass."""
    torch.manual_seed(0)
    model = build_model(SPECS[name](scale)).eval()
    reparameterize(model)
    graph = trace_channels(model, (1, 3, 40, 40))
    widths = uniform_widths(graph, 0.5, 4)
    assert any(w < graph.groups[n].width for n, w in widths.items())
    plan = plan_from_scores(graph, widths, None)
    _zero_removed(model, graph, plan)
    pruned = apply_plan(copy.deepcopy(model), graph, plan)
    x = torch.rand(1, 3, 24, 28)
    with torch.no_grad():
        ref, out = model(x), pruned(x)
    assert out.shape == (1, 3, 24 * scale, 28 * scale)
    assert torch.allclose(out, ref, atol=1e-5), float((out - ref).abs().max())
    assert count_params(pruned) < 0.6 * count_params(model)
    # the conv before the pixel shuffle keeps its 3 s^2 outputs
    if any(isinstance(m, torch.nn.PixelShuffle) for m in model.modules()):
        convs = [m for m in pruned.modules() if isinstance(m, torch.nn.Conv2d)]
        assert convs[-1].out_channels == 3 * scale ** 2, "the pixel-shuffle conv lost channels"


@pytest.mark.parametrize("name", ["dlsr", "imdn"])
def test_cost_model_and_rebuild_from_spec(name):
    """Predicted params/MACs equal the measured ones; spec + widths + state dict rebuild the same network."""
    torch.manual_seed(0)
    spec = dict(SPECS[name](2), reparameterized=True)
    model = reparameterize(build_model(SPECS[name](2))).eval()
    base = group_widths(trace_channels(model))
    graph = trace_channels(model, (1, 3, 48, 48))
    full = CostModel(graph, count_params(model)).cost({})
    assert full["macs"] == count_flops(model, torch.rand(1, 3, 48, 48))["macs"]
    plan, widths, _ = plan_for_target(model, graph, Target("macs", 0.5 * full["macs"]), 8,
                                      magnitude_importance(model, graph))
    pruned = apply_plan(copy.deepcopy(model), graph, plan)
    predicted = CostModel(graph, count_params(model)).cost(widths)
    x = torch.rand(1, 3, 48, 48)
    assert predicted["params"] == count_params(pruned)
    assert predicted["macs"] == count_flops(pruned, x)["macs"] <= 0.5 * full["macs"]
    assert all(w % 8 == 0 for w in widths.values())
    spec["widths"] = widths_of(pruned, base)
    rebuilt = build_model(spec).eval()
    load_strict(rebuilt, pruned.state_dict())
    with torch.no_grad():
        assert torch.equal(rebuilt(x), pruned(x))


def test_imdn_split_sizes_follow_the_pruned_chunks():
    model = zoo.create("imdn", 2, nf=32, num_blocks=1).eval()
    graph = trace_channels(model)
    tied = [g for g in graph.groups.values() if g.tie and g.tie.endswith("#0")]
    assert len(tied) == 3 and len({g.tie for g in tied}) == 1  # c1, c2, c3's distilled parts share a width
    prune_to_widths(model, {g.name: 4 for g in tied})
    assert (model.IMDB1.distilled, model.IMDB1.remaining) == (4, 24)
    assert model(torch.rand(1, 3, 20, 20)).shape == (1, 3, 40, 40)


def test_bad_requests_are_one_line_errors():
    model = build_model(SPECS["rlfn_s"](2)).eval()
    graph = trace_channels(model)
    params = count_params(model)
    with pytest.raises(PruneError, match="not below the network's"):
        plan_for_target(model, graph, Target("params", params + 1), 8)
    with pytest.raises(PruneError, match="cannot be reached"):
        plan_for_target(model, graph, Target("params", 10), 8)
    with pytest.raises(PruneError, match="width multiple 32 cannot be met"):
        plan_for_target(model, graph, Target("ratio", 0.5), 32)
    with pytest.raises(PruneError, match="positive integer"):
        plan_for_target(model, graph, Target("ratio", 0.5), 0)
    with pytest.raises(PruneError, match="'nope' is not a prunable channel group"):
        prune_to_widths(model, {"nope": 8})
    with pytest.raises(PruneError, match="must be an integer in 1..16"):
        prune_to_widths(model, {"conv_1": 17})
    with pytest.raises(PruneError, match="is not a prunable"):  # the pinned upsampler conv
        prune_to_widths(model, {"upsampler.0": 4})
    for msg in ("\n",):
        with pytest.raises(PruneError) as e:
            plan_for_target(model, graph, Target("params", 10), 8)
        assert msg not in str(e.value)


class _SkipNet(torch.nn.Module):
    """A head, a body conv and a conv to 3 s^2 plus the LR repeated s^2 times before the pixel shuffle (the
    genotypes' `nearest` image-space skip), then a bicubic skip after it."""

    def __init__(self, s: int):
        super().__init__()
        self.s = s
        self.head, self.body = torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.Conv2d(16, 16, 3, padding=1)
        self.up = torch.nn.Conv2d(16, 3 * s * s, 3, padding=1)

    def forward(self, x):
        h = self.head(x)
        h = torch.relu(self.body(h)) + h
        y = torch.nn.functional.pixel_shuffle(self.up(h) + x.repeat_interleave(self.s ** 2, dim=1), self.s)
        return y + torch.nn.functional.interpolate(x, scale_factor=self.s, mode="bicubic")


def test_image_space_skips_stay_pinned():
    model = _SkipNet(3).eval()
    graph = trace_channels(model, (1, 3, 16, 16))
    assert not graph.groups["up"].prunable and graph.groups["head"].prunable
    prune_to_widths(model, {"head": 8})
    assert model.up.out_channels == 27 and model(torch.rand(1, 3, 10, 12)).shape == (1, 3, 30, 36)


def test_latency_target_uses_the_measured_candidates():
    """A latency target bisects on networks built and measured by the caller's function (here: a fake clock
    proportional to the parameter count, so the result is deterministic)."""
    model = build_model(SPECS["rlfn_s"](2)).eval()
    graph = trace_channels(model)
    fake = lambda m: count_params(m) * 1e-6  # noqa: E731
    plan, widths, ratio = plan_for_target(model, graph, Target("latency", 0.6 * fake(model)), 4, None,
                                          measure_latency=fake, steps=6)
    pruned = apply_plan(copy.deepcopy(model), graph, plan)
    assert fake(pruned) <= 0.6 * fake(model) and 0 < ratio < 1
    assert pruned(torch.rand(1, 3, 16, 16)).shape == (1, 3, 32, 32)


def test_pruned_before_reparam_still_fuses_exactly():
    model = build_model(dlsr_spec(2)).eval()  # rep_conv_3x3 in every cell, not fused
    prune_to_widths(model, uniform_widths(trace_channels(model), 0.5, 4))
    x = torch.rand(1, 3, 20, 20)
    with torch.no_grad():
        before = model(x)
        assert torch.allclose(reparameterize(model)(x), before, atol=1e-5)


def test_compressed_specs_need_the_compress_transform():
    """srcore builds a compressed spec only through the transform `import compress` registers (srcore imports
    nothing above it); without it, the error says what to import (a toy builder keeps the model packages out)."""
    import subprocess
    import sys

    from conftest import REPO

    code = """
import torch
from srcore.checkpoint import CheckpointError
from srcore.modelspec import build_model
from srcore.registry import register_builder
register_builder("toy")(lambda spec: torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.Conv2d(8, 3, 3)))
spec = {"toy": 1, "widths": {"0": 4}}
try:
    build_model(spec)
except (KeyError, CheckpointError) as e:
    print("ERR", e)
import compress
print(build_model(spec)[0].out_channels)
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert "import compress first" in out and out.strip().endswith("4")
