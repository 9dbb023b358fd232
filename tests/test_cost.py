"""Cost counters: params, MACs/FLOPs, activations, peak memory and latency, checked against hand counts."""
from __future__ import annotations

import os

import torch
from torch import nn

from distill import zoo
from srcore.cost import (
    _without_kineto_lines,
    count_activations,
    count_flops,
    count_params,
    latency,
    measure_cost,
    peak_memory,
)


class TwoConv(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)  # 4*3*9 + 4 = 112 params
        self.conv2 = nn.Conv2d(4, 2, 1)  # 2*4 + 2 = 10 params

    def forward(self, x):
        return self.conv2(torch.relu(self.conv1(x)))


def test_two_conv_network_by_hand():
    m, x = TwoConv(), torch.rand(1, 3, 8, 10)
    assert count_params(m) == 112 + 10
    hw = 8 * 10
    macs = hw * 4 * 3 * 9 + hw * 2 * 4  # per output element: in_ch * k * k multiply-adds (bias not counted)
    assert count_flops(m, x) == {"macs": macs, "flops": 2 * macs}
    assert count_activations(m, x) == {"activations": hw * 4 + hw * 2, "conv_layers": 2}


def test_strided_grouped_conv_and_linear_by_hand():
    m = nn.Sequential(nn.Conv2d(4, 8, 3, stride=2, padding=1, groups=2, bias=False), nn.Flatten(),
                      nn.Linear(8 * 5 * 5, 7))
    x = torch.rand(2, 4, 10, 10)
    assert count_params(m) == 8 * 2 * 9 + 200 * 7 + 7
    conv_macs = 2 * 8 * 5 * 5 * (4 // 2) * 9  # batch 2, 8x5x5 outputs, 2 input channels per group
    lin_macs = 2 * 200 * 7
    f = count_flops(m, x)
    assert f["macs"] == conv_macs + lin_macs and f["flops"] == 2 * f["macs"]
    assert count_activations(m, x) == {"activations": 2 * 8 * 5 * 5, "conv_layers": 1}


def test_flops_scale_with_input_area():
    m = TwoConv()
    a = count_flops(m, torch.rand(1, 3, 8, 8))["macs"]
    b = count_flops(m, torch.rand(1, 3, 16, 16))["macs"]
    assert b == 4 * a


def test_peak_memory_positive_and_grows_with_input():
    m = TwoConv().eval()
    small = peak_memory(m, torch.rand(1, 3, 32, 32))
    big = peak_memory(m, torch.rand(1, 3, 128, 128))
    assert small > 0
    assert big > small
    # at least the 4-channel float32 feature map of the big input is alive at some point
    assert big >= 4 * 128 * 128 * 4


def test_peak_memory_drops_only_kineto_lines_from_stderr(capfd):
    peak_memory(TwoConv().eval(), torch.rand(1, 3, 16, 16))
    assert "USDT:" not in capfd.readouterr().err  # torch 2.13's kineto prints two such lines per trace
    with _without_kineto_lines():
        os.write(2, b"USDT:2026 SyncActivityProfilerHandler.cpp:52] profiler_start\na real warning\n")
    assert capfd.readouterr().err == "a real warning\n"


def test_latency_statistics():
    m, x = TwoConv().eval(), torch.rand(1, 3, 16, 16)
    threads = torch.get_num_threads()
    r = latency(m, x, warmup=1, repeats=5, threads=1)
    assert r["repeats"] == 5 and r["warmup"] == 1 and r["threads"] == 1 and r["device"] == "cpu"
    assert 0 < r["min_s"] <= r["median_s"] < 10
    assert torch.get_num_threads() == threads, "latency must restore the thread count"
    calls = []
    m.register_forward_hook(lambda *a: calls.append(1))
    latency(m, x, warmup=2, repeats=3)
    assert len(calls) == 5


def _conv_macs_by_hooks(model: nn.Module, x: torch.Tensor) -> int:
    total = 0

    def hook(mod, _inp, out):
        nonlocal total
        total += out.numel() * (mod.in_channels // mod.groups) * mod.kernel_size[0] * mod.kernel_size[1]

    hs = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        model(x)
    for h in hs:
        h.remove()
    return total


def test_measure_cost_on_a_zoo_model():
    model = zoo.create("rlfn_s", 4)
    c = measure_cost(model, (1, 3, 32, 32))
    assert c.params == sum(p.numel() for p in model.parameters())
    assert c.input_shape == (1, 3, 32, 32)
    assert c.flops == 2 * c.macs
    # RLFN-S has only convolutions (no linear layers): the MACs are the convolutions' multiply-adds
    assert c.macs == _conv_macs_by_hooks(model, torch.rand(1, 3, 32, 32))
    assert c.conv_layers == sum(isinstance(m, nn.Conv2d) for m in model.modules())
    assert c.activations > 3 * (32 * 4) ** 2  # at least the final 3x128x128 output's conv
    assert c.peak_memory_bytes > 0
    d = c.as_dict()
    assert d["params"] == c.params and set(d) >= {"params", "macs", "flops", "activations", "peak_memory_bytes"}

