"""Robust intensity normalisation and its exact inverse."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import phantom

from transmrsr.errors import TransMRSRError
from transmrsr.intensity import IntensityScaler


@pytest.mark.parametrize("scale", [1.0 / 133.0, 1.0, 125.0, 4300.0])
def test_inverse_is_exact_and_range_is_robust(scale):
    volume = phantom((30, 30, 30)) * scale
    volume[0, 0, 0] = volume.max() * 20  # one hot voxel must not set the scale
    scaler = IntensityScaler.fit(volume)
    normalised = scaler(volume)
    assert np.percentile(normalised[normalised > 0.01], 50) == pytest.approx(
        np.percentile(volume[volume > scaler.low + 1e-6 * scale], 50) / scaler.high, rel=0.05
    )
    assert normalised.max() > 10  # the hot voxel is kept, not clipped
    assert scaler.low == pytest.approx(0.0, abs=1e-3 * scale)
    assert 0.9 < np.percentile(normalised[normalised > 0.05], 99.5) < 1.1
    np.testing.assert_allclose(scaler.inverse(normalised), volume, rtol=1e-5, atol=1e-5 * scale)


def test_negative_background_and_serialisation():
    volume = phantom((20, 20, 20)) - 50
    scaler = IntensityScaler.fit(volume)
    assert scaler.low == pytest.approx(np.percentile(volume, 0.5), rel=1e-3)
    assert IntensityScaler(**scaler.to_dict()) == scaler


def test_constant_volume_and_bad_percentiles_are_refused():
    with pytest.raises(TransMRSRError, match="no voxel above"):
        IntensityScaler.fit(np.ones((5, 5, 5)))
    with pytest.raises(TransMRSRError, match="percentiles"):
        IntensityScaler.fit(phantom(), low_percentile=50, high_percentile=10)
    with pytest.raises(TransMRSRError, match="no contrast"):
        IntensityScaler(low=1.0, high=1.0)


@pytest.mark.parametrize("gain", [0.8, 1.0, 1.25])
def test_with_gain_multiplies_the_normalised_values_and_stays_invertible(gain):
    volume = phantom((20, 20, 20)) * 300.0 + 10.0
    scaler = IntensityScaler.fit(volume)
    moved = scaler.with_gain(gain)
    np.testing.assert_allclose(moved(volume), gain * scaler(volume), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(moved.inverse(moved(volume)), volume, rtol=1e-5, atol=1e-3)
    assert moved.low == scaler.low


@pytest.mark.parametrize("gain", [0.0, -1.0, float("nan"), float("inf")])
def test_impossible_gains_are_refused(gain):
    with pytest.raises(TransMRSRError, match="intensity gain"):
        IntensityScaler(low=0.0, high=1.0).with_gain(gain)
