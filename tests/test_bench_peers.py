"""The pure helpers of benchmarks/bench_peers.py (no peer method is run)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_peers.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_peers", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_peers"] = module  # dataclasses look it up there
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop("bench_peers", None)


def test_patches_for_budget_fills_whole_batches(bench):
    assert bench.patches_for_budget(100.0, 50.0, 10.0, 128) == 5 * 128
    assert bench.patches_for_budget(109.9, 50.0, 10.0, 16) == 5 * 16
    # a budget below the fixed cost still runs one batch
    assert bench.patches_for_budget(10.0, 50.0, 10.0, 128) == 128
    with pytest.raises(ValueError):
        bench.patches_for_budget(10.0, 0.0, 0.0, 128)


def test_calibration_predicts_fixed_cost_plus_steps(bench):
    cal = bench.Calibration(startup_s=2.0, step_s=8.0, batch=16, inference_s=30.0)
    assert cal.fixed_s == pytest.approx(32.0 + bench.ECLARE_FIXED_MARGIN)
    assert cal.predict(32, 16) == pytest.approx(cal.fixed_s + 16.0)
    # a batch twice as large is predicted twice as slow per step
    assert cal.predict(32, 32) == pytest.approx(cal.fixed_s + 16.0)


def test_relative_thickness_is_in_the_finest_in_plane_spacing(bench):
    affine = np.diag([1.0, 0.9, 3.6, 1.0])
    assert bench.relative_thickness(3.6, affine, 2) == pytest.approx(4.0)
    assert bench.relative_thickness(3.6, np.diag([3.6, 0.9, 0.9, 1.0]), 0) == pytest.approx(4.0)


def test_table_and_wins(bench):
    metrics = {"psnr_masked": 30.0, "ssim_masked": 0.9, "psnr_paper": 35.0, "ssim_paper": 0.95}
    better = dict(metrics, psnr_masked=30.5)
    run = bench.Measured(10.0, 9.0, 1024.0, 900.0, 0, "log")
    rows = [
        bench._row("v", 4.0, "cubic", "upsample", 0.1, metrics, None),
        bench._row("v", 4.0, "transmrsr", "defaults", run, metrics, metrics),
        bench._row("v", 4.0, "ECLARE", "n-patches 128", run, better, metrics),
    ]
    table = bench.markdown(rows, 1, "cpu")
    assert "| v | x4 | ECLARE | n-patches 128 | 10 s (9 s CPU) | 1.00 GiB | 30.50 / 0.9000" in table
    assert "+0.50 / +0.00 dB" in table
    assert bench.wins(rows) == ["v x4, ECLARE n-patches 128: psnr_masked +0.5 dB over transmrsr"]


def test_bad_input_is_exit_2(bench, tmp_path):
    assert bench.main(["--cases", str(tmp_path / "missing.nii.gz")]) == 2
    volume = tmp_path / "v.nii.gz"
    volume.write_bytes(b"")
    assert bench.main(["--cases", str(volume), "--factors", "1"]) == 2
    assert bench.main(["--cases", str(volume), "--eclare-bin", str(tmp_path / "none")]) == 2
