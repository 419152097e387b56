"""Data consistency: the operator is the degradation model, and the projection is exact."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import oriented_affine, phantom

from transmrsr.degradation import degrade, simulate_thick, slice_profile
from transmrsr.errors import TransMRSRError
from transmrsr.inference.consistency import (
    enforce_consistency,
    enforce_consistency_smoothly,
    thick_slice_operator,
)
from transmrsr.inference.restore import load_model, restore_volume
from transmrsr.interpolation import apply_along_axis, upsample
from transmrsr.io import Volume
from transmrsr.stripes import slab_pattern_amplitude

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("factor", [2.0, 2.4, 3.0, 4.0, 5.5, 8.0])
def test_operator_is_the_thick_slice_model(factor):
    rng = np.random.default_rng(1)
    data = rng.normal(size=(9, 96, 5)).astype(np.float32)
    thick = simulate_thick(data, 1, factor)
    d = thick_slice_operator(96, thick.shape[1], factor)
    np.testing.assert_allclose(apply_along_axis(d, data, 1), thick, atol=1e-5)


@pytest.mark.parametrize(("axis", "factor"), [(0, 4.0), (1, 2.4), (2, 8.0)])
def test_projection_reproduces_the_input_and_never_moves_away_from_the_truth(axis, factor):
    rng = np.random.default_rng(2)
    shape = [20, 22, 24]
    shape[axis] = 80
    truth = phantom(tuple(shape), seed=3)
    observed = simulate_thick(truth, axis, factor)
    estimate = truth + rng.normal(scale=0.1, size=truth.shape).astype(np.float32)
    projected = enforce_consistency(estimate, observed, axis, factor)
    d = thick_slice_operator(80, observed.shape[axis], factor)
    np.testing.assert_allclose(apply_along_axis(d, projected, axis), observed, atol=2e-3)
    before = np.linalg.norm(estimate - truth)
    after = np.linalg.norm(projected - truth)
    # The thick slices see about 1/factor of the noise's energy; at least half of that goes.
    assert after < before * np.sqrt(1 - 0.5 / factor)
    assert np.allclose(enforce_consistency(truth, observed, axis, factor), truth, atol=2e-3)


def test_mismatched_volumes_are_refused():
    with pytest.raises(TransMRSRError, match="differ off the thick axis"):
        enforce_consistency(np.zeros((8, 16, 8)), np.zeros((8, 4, 9)), 1, 4.0)
    with pytest.raises(TransMRSRError, match="3-D"):
        enforce_consistency(np.zeros((8, 16)), np.zeros((8, 4)), 1, 4.0)


def test_restore_output_degrades_back_to_its_input(tiny_model_file):
    hr_affine = oriented_affine("LIA")
    data, affine = degrade(phantom((24, 28, 20), seed=4), hr_affine, 1, 4)
    lr = Volume(data=data, affine=affine)
    model = load_model(tiny_model_file)
    on = restore_volume(lr, model, consistency=True).volume.data
    off = restore_volume(lr, model, consistency=False).volume.data
    # Clipping to the input's range may move background voxels; compare inside the object.
    inside = data > 0.05 * data.max()
    err_on = np.abs(simulate_thick(on, 1, 4.0) - data)[inside]
    err_off = np.abs(simulate_thick(off, 1, 4.0) - data)[inside]
    assert np.median(err_on) < 1e-3 * data.max() < np.median(err_off)


@pytest.mark.parametrize(("axis", "factor"), [(0, 4.0), (2, 7.07)])
def test_smooth_corrections_reach_the_input_too(axis, factor):
    rng = np.random.default_rng(5)
    shape = [20, 22, 24]
    shape[axis] = 90
    truth = phantom(tuple(shape), seed=6)
    observed = simulate_thick(truth, axis, factor)
    noise = 0.05 * float(np.ptp(truth))
    estimate = truth + rng.normal(scale=noise, size=truth.shape).astype(np.float32)
    smoothed = enforce_consistency_smoothly(estimate, observed, axis, factor, iterations=30)
    d = thick_slice_operator(90, observed.shape[axis], factor)
    before = np.abs(apply_along_axis(d, estimate, axis) - observed).mean()
    after = np.abs(apply_along_axis(d, smoothed, axis) - observed).mean()
    assert after < 0.05 * before
    assert np.linalg.norm(smoothed - truth) < np.linalg.norm(estimate - truth)


def test_smooth_corrections_of_a_mismatched_profile_leave_fewer_stripes():
    # Slices acquired flat-topped with a gap, corrected as if Gaussian and as thick as their
    # spacing: the projection's per-slab bumps line up with the slabs, interpolated
    # corrections do not.
    factor = 6.0
    truth = phantom((24, 26, 96), seed=7)
    observed = simulate_thick(truth, 2, factor, profile=slice_profile("flat-top", factor, 4.0))
    cubic, _ = upsample(observed, np.eye(4) * [1, 1, factor, 1], 2, factor, "cubic")
    mask = truth > 0.05 * truth.max()
    projected = enforce_consistency(cubic, observed, 2, factor)
    smoothed = enforce_consistency_smoothly(cubic, observed, 2, factor)
    amplitude = lambda v: slab_pattern_amplitude(v, 2, factor, mask=mask)[0]  # noqa: E731
    assert amplitude(smoothed) < 0.85 * amplitude(projected)
