"""benchmarks/guide_check.py: the calibration pairs of the same-head check, and its table."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import benchmark_module
from test_registration import T1, T2, head_labels, make_thick, render

from transmrsr import registration as reg


@pytest.fixture(scope="module")
def gc():
    with benchmark_module("guide_check") as module:
        yield module


def test_a_pair_is_measured_and_another_head_marked_by_its_measures(gc):
    scan = make_thick(render(head_labels(0), T2))
    motion = ((0.0, 0.0, 4.0), (3.0, -2.0, 0.0))
    same = gc.measure("same:phantom", "same", scan, gc.moved(render(head_labels(0), T1), motion))
    other_head = render(head_labels(2, radii=(50.0, 50.0, 40.0)), T1)
    other = gc.measure("other:phantom", "other", scan, other_head)
    assert same["similarity"] > reg.MIN_SIMILARITY and same["alignment"] > reg.MIN_ALIGNMENT
    assert same["shift_mm"] == pytest.approx(np.hypot(3.0, 2.0), abs=1.5)
    assert other["alignment"] < reg.MIN_ALIGNMENT and other["similarity"] < reg.MIN_SIMILARITY
    table = gc.summary([same, other, {"id": "x", "group": "other", "error": "no overlap"}])
    rows = {line.split(" | ")[0].strip("| "): line for line in table.splitlines()[2:]}
    assert rows["same"].endswith("| 1 |") and rows["other"].endswith("| 0 |")
    assert f"{other['alignment']:.3f} to {other['alignment']:.3f}" in rows["other"]


def test_noise_and_thickness_are_those_of_the_calibration(gc):
    volume = render(head_labels(0), T1)
    noisy = gc.with_noise(volume, 0.05, np.random.default_rng(0))
    background = noisy.data[volume.data == 0]
    sigma = 0.05 * np.percentile(volume.data, 99)
    # Rician noise in the background: its mean is sigma * sqrt(pi / 2).
    assert background.mean() == pytest.approx(sigma * np.sqrt(np.pi / 2), rel=0.1)
    thick = gc.thick_of(volume, 4.0)
    assert thick.shape[2] == volume.shape[2] // 4
