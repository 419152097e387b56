"""Parameter, FLOP and time measurements, checked against hand formulas."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from transmrsr.models import profiling, registry

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_models.py"


def test_linear_flops():
    """y = x W^T + b: 2 FLOPs (multiply, add) per weight per row; the bias is not counted."""
    assert profiling.count_flops(nn.Linear(7, 5), (3, 7)) == 2 * 3 * 7 * 5


@pytest.mark.parametrize(
    ("conv", "in_shape", "out_hw"),
    [
        (nn.Conv2d(3, 4, 3, padding=1), (2, 3, 10, 12), (10, 12)),
        (nn.Conv2d(4, 8, 3, stride=2, groups=2), (1, 4, 11, 9), (5, 4)),
        (nn.Conv2d(6, 6, 3, padding=1, groups=6, bias=False), (1, 6, 8, 8), (8, 8)),
    ],
)
def test_conv_flops(conv, in_shape, out_hw):
    """2 * batch * C_out * output pixels * (C_in / groups) * kernel area."""
    batch = in_shape[0]
    k = conv.kernel_size[0] * conv.kernel_size[1]
    expected = 2 * batch * conv.out_channels * out_hw[0] * out_hw[1]
    expected *= conv.in_channels // conv.groups * k
    assert profiling.count_flops(conv, in_shape) == expected


def test_depthwise_backward_flops():
    """Each gradient of a conv costs its forward: the first conv (input needs no gradient)
    adds one forward's worth, the second two; PyTorch's own formula ignores groups."""
    model = nn.Sequential(
        nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.Conv2d(8, 8, 3, padding=1, groups=8)
    )
    one = 2 * 8 * 16 * 16 * 9
    assert profiling.count_flops(model, (1, 8, 16, 16)) == 2 * one
    assert profiling.count_flops(model, (1, 8, 16, 16), backward=True) == 5 * one


class _Attention(nn.Module):
    def forward(self, x):
        return F.scaled_dot_product_attention(x, x, x)


def test_cpu_attention_flops_are_counted():
    b, h, n, e = 2, 3, 16, 8
    expected = 2 * (2 * b * h * n * n * e)  # q k^T and attn v
    assert profiling.count_flops(_Attention(), (b, h, n, e)) == expected


class _Shared(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(4, 4)
        self.b = nn.Sequential(self.a, nn.Linear(4, 2))
        self.scale = nn.Parameter(torch.ones(3))


def test_parameters_per_part_sum_to_the_total():
    model = _Shared()
    counts = profiling.count_parameters(model)
    assert counts == {"a": 20, "b": 10, "(own)": 3, "total": 33}
    assert counts["total"] == sum(p.numel() for p in model.parameters())
    edsr = registry.build_model("edsr", "tiny")
    counts = profiling.count_parameters(edsr)
    assert sum(v for k, v in counts.items() if k != "total") == counts["total"]
    assert counts["total"] == sum(p.numel() for p in edsr.parameters())


def test_time_forward_restores_state():
    model = nn.Conv2d(1, 1, 3, padding=1).train()
    threads = torch.get_num_threads()
    ms = profiling.time_forward(model, (2, 1, 16, 16), threads=1, repeats=2, warmup=1)
    assert ms > 0
    assert torch.get_num_threads() == threads
    assert model.training
    ms = profiling.time_forward(model, (2, 1, 16, 16), repeats=1, warmup=0, backward=True)
    assert ms > 0 and model.weight.grad is None
    with pytest.raises(ValueError):
        profiling.time_forward(model, (1, 1, 8, 8), repeats=0)


def test_matmul_gflops_is_positive():
    threads = torch.get_num_threads()
    assert profiling.matmul_gflops(1, size=128, repeats=2) > 0
    assert torch.get_num_threads() == threads


def test_centroids_and_meta_fallback():
    """TransMRSR cannot run on the meta device (SDT reads a flag), so counting falls back to a
    real forward and gives the same number."""
    pytest.importorskip("transmrsr.models.transmrsr")
    model = registry.build_model("transmrsr", "tiny")
    assert profiling.fill_missing_centroids(model) == 1
    assert profiling.fill_missing_centroids(model) == 0
    shape = (1, 1, 32, 32)
    direct = profiling.count_flops(model, shape)
    assert profiling.count_flops_of(lambda: registry.build_model("transmrsr", "tiny"), shape) == (
        direct
    )


def test_meta_counting_matches_a_real_forward():
    shape = (1, 1, 24, 40)
    real = profiling.count_flops(registry.build_model("restormer", "tiny"), shape)
    assert profiling.count_flops_of(lambda: registry.build_model("restormer", "tiny"), shape) == (
        real
    )


def test_benchmark_script_prints_a_markdown_table(capsys, monkeypatch):
    spec = importlib.util.spec_from_file_location("bench_models", BENCH)
    bench = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "bench_models", bench)  # dataclasses look it up there
    spec.loader.exec_module(bench)
    argv = ["--archs", "edsr", "restormer", "--configs", "tiny", "--size", "32"]
    assert bench.main([*argv, "--batch-size", "2", "--repeats", "1", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].startswith("| network | config | parameters")
    assert any(line.startswith("| edsr | tiny |") for line in lines)
    assert any(line.startswith("| restormer | tiny |") for line in lines)
    assert "GFLOP/s" in lines[-1]
    assert bench.main(["--configs", "huge", "--archs", "edsr"]) == 2
