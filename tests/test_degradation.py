"""SMORE degradation and interpolation: profiles, grids, round trips, exactness."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import REAL_VOLUMES, oblique_affine, oriented_affine, phantom, shared_file
from scipy import ndimage

from transmrsr.degradation import (
    SLICE_PROFILES,
    degrade,
    gaussian_slice_profile,
    simulate_interpolated_lr,
    slice_profile,
)
from transmrsr.errors import TransMRSRError
from transmrsr.geometry import resolve_axis
from transmrsr.interpolation import interpolation_matrix, resample_to_grid, upsample
from transmrsr.io import load_volume
from transmrsr.pairs import PairConfig, make_pair


@pytest.mark.parametrize("factor", [2, 4, 5, 8, 2.79])
def test_gaussian_profile_has_fwhm_of_the_factor(factor):
    profile = gaussian_slice_profile(factor)
    assert profile.size == 2 * round(factor) + 1
    assert profile.sum() == pytest.approx(1.0)
    x = np.arange(profile.size) - profile.size // 2
    fine = np.linspace(x[0], x[-1], 20001)
    sigma = factor / (2 * np.sqrt(2 * np.log(2)))
    curve = np.exp(-0.5 * (fine / sigma) ** 2)
    above = fine[curve >= 0.5]
    assert above[-1] - above[0] == pytest.approx(factor, abs=1e-3)
    np.testing.assert_allclose(profile / profile.max(), np.exp(-0.5 * (x / sigma) ** 2))


@pytest.mark.parametrize("factor", [2, 3, 4, 8])
def test_degrade_then_upsample_lands_on_the_hr_grid(factor):
    affine = oriented_affine("LIA", zooms=(1.0, 1.0, 1.0))
    hr = phantom((24, 48, 20))  # 48 is a whole multiple of every factor here
    lr, lr_affine = degrade(hr, affine, 1, factor)
    assert lr.shape == (24, 48 // factor, 20)
    np.testing.assert_allclose(np.linalg.norm(lr_affine[:3, 1]), factor)
    up, up_affine = upsample(lr, lr_affine, 1, factor, "cubic")
    assert up.shape == hr.shape
    np.testing.assert_allclose(up_affine, affine, atol=1e-9)


def test_uneven_length_gives_the_cropped_hr_grid():
    affine = oblique_affine()
    hr = phantom((30, 20, 22))
    lr, lr_affine = degrade(hr, affine, 0, 4)
    assert lr.shape[0] == 7  # floor(30 / 4) whole slabs
    up, up_affine = upsample(lr, lr_affine, 0, 4)
    assert up.shape == (28, 20, 22)
    np.testing.assert_allclose(up_affine, affine, atol=1e-9)  # first 28 slices of the HR grid


def test_thick_slice_is_the_profile_weighted_slab_at_its_world_position():
    affine = oriented_affine("RAS")
    hr = phantom((20, 20, 25))
    lr, lr_affine = degrade(hr, affine, 2, 5)
    blurred = ndimage.convolve1d(hr, gaussian_slice_profile(5), axis=2, mode="reflect")
    np.testing.assert_allclose(lr[:, :, 1], blurred[:, :, 7], rtol=1e-5, atol=1e-4)
    # Thick slice 1 lies at the world position of thin slice 7 (the centre of slices 5-9).
    np.testing.assert_allclose(lr_affine @ [3, 4, 1, 1], affine @ [3, 4, 7, 1], atol=1e-9)


def test_non_integer_factor_and_custom_profile():
    hr = phantom((20, 20, 40))
    lr, lr_affine = degrade(hr, np.eye(4), 2, 2.5, profile=np.array([1.0, 2.0, 1.0]))
    assert lr.shape == (20, 20, 16)
    np.testing.assert_allclose(lr_affine[2, 2], 2.5)
    np.testing.assert_allclose(lr_affine[2, 3], 0.75)  # first slab covers thin 0..2.5
    with pytest.raises(TransMRSRError, match="non-negative"):
        degrade(hr, np.eye(4), 2, 2.5, profile=np.array([1.0, -1.0]))
    with pytest.raises(TransMRSRError, match="FWHM"):
        degrade(hr, np.eye(4), 2, 2.5, fwhm=-1.0)


def test_constant_along_axis_is_preserved_exactly():
    plane = phantom((16, 16, 1))
    hr = np.repeat(plane, 32, axis=2)
    lr, lr_affine = degrade(hr, np.eye(4), 2, 4)
    np.testing.assert_allclose(lr, np.repeat(plane, 8, axis=2), rtol=1e-5, atol=1e-4)
    for method in ("linear", "cubic", "lanczos"):
        up, _ = upsample(lr, lr_affine, 2, 4, method)
        np.testing.assert_allclose(up, hr, rtol=1e-5, atol=1e-3)


def test_interpolation_matrices_reproduce_scipy_and_ramps():
    rng = np.random.default_rng(1)
    signal = rng.normal(size=17)
    positions = np.linspace(-0.4, 16.4, 50)
    cubic = interpolation_matrix("cubic", 17, positions) @ signal
    reference = ndimage.map_coordinates(signal, positions[None], order=3, mode="reflect")
    np.testing.assert_allclose(cubic, reference, atol=1e-10)
    ramp = np.arange(17, dtype=float)
    inner = np.linspace(2, 14, 40)
    np.testing.assert_allclose(interpolation_matrix("linear", 17, inner) @ ramp, inner, atol=1e-9)
    # The cubic prefilter sees the mirrored kink at the edges; its effect decays by 0.27 per
    # sample, so the middle of the line is a ramp to 1e-3.
    middle = np.linspace(6, 10, 20)
    np.testing.assert_allclose(interpolation_matrix("cubic", 17, middle) @ ramp, middle, atol=1e-3)
    # A windowed sinc reproduces a ramp only approximately (to 2% of a voxel for Lanczos-3).
    np.testing.assert_allclose(
        interpolation_matrix("lanczos", 17, middle) @ ramp, middle, atol=0.025
    )
    np.testing.assert_allclose(interpolation_matrix("lanczos", 17, positions).sum(axis=1), 1.0)


def test_cubic_beats_linear_on_a_smooth_signal():
    hr = phantom((24, 24, 64))
    smooth = ndimage.gaussian_filter(hr, 2.0)
    errors = {}
    for method in ("linear", "cubic", "lanczos"):
        lr = simulate_interpolated_lr(smooth, 2, 4, method=method)
        assert lr.shape == smooth.shape
        errors[method] = float(np.abs(lr - smooth).mean())
    assert errors["cubic"] < errors["linear"]


def test_resample_to_grid_copies_shifted_grids_exactly():
    affine = oriented_affine("PSR")
    data = phantom((12, 14, 10))
    target = affine.copy()
    target[:3, 3] += affine[:3, :3] @ np.array([1, 2, 0])
    out = resample_to_grid(data, affine, (12, 14, 10), target)
    np.testing.assert_array_equal(out[:11, :12], data[1:, 2:])
    assert np.all(out[11:] == 0) and np.all(out[:, 12:] == 0)
    # A true resampling (half-voxel shift) of a constant stays constant inside.
    half = affine.copy()
    half[:3, 3] += affine[:3, 0] * 0.5
    flat = resample_to_grid(np.full((12, 14, 10), 5.0, np.float32), affine, (12, 14, 10), half)
    np.testing.assert_allclose(flat[2:-2, 2:-2, 2:-2], 5.0, atol=1e-5)


@pytest.mark.parametrize("name", sorted(REAL_VOLUMES))
def test_real_scans_round_trip_along_si(name):
    volume = load_volume(shared_file(name))
    axis = resolve_axis("SI", volume.affine)
    lr, lr_affine = degrade(volume.data, volume.affine, axis, 4)
    up, up_affine = upsample(lr, lr_affine, axis, 4)
    n = (volume.shape[axis] // 4) * 4
    assert up.shape[axis] == n
    np.testing.assert_allclose(up_affine, volume.affine, atol=1e-6)
    crop = np.take(volume.data, np.arange(n), axis=axis)
    # Interpolation recovers the volume roughly: a loose bound, but well below the signal scale,
    # and better than repeating each thick slice (nearest neighbour).
    error = np.abs(up - crop).mean()
    assert error < 0.25 * np.abs(crop).mean()
    nearest = np.repeat(lr, 4, axis=axis)
    assert error < np.abs(nearest - crop).mean()


@pytest.mark.parametrize("kind", SLICE_PROFILES)
@pytest.mark.parametrize(("factor", "fwhm"), [(4.0, 4.0), (6.0, 4.2), (7.07, 8.0)])
def test_named_slice_profiles_have_their_width(kind, factor, fwhm):
    profile = slice_profile(kind, factor, fwhm)
    assert profile.sum() == pytest.approx(1.0) and (profile >= 0).all()
    assert len(profile) % 2 == 1
    np.testing.assert_allclose(profile, profile[::-1], atol=1e-12)  # centred
    # Full width at half maximum, from the profile resampled finely (linear between taps).
    x = np.arange(len(profile)) - len(profile) // 2
    fine = np.linspace(x[0], x[-1], 20001)
    values = np.interp(fine, x, profile)
    above = fine[values >= values.max() / 2]
    width = above[-1] - above[0]
    if kind == "boxcar":
        # The taps of a slab hold its edge voxels at partial weight: width within a voxel.
        assert abs(width - fwhm) <= 1.0
    else:
        assert width == pytest.approx(fwhm, abs=0.6)


def test_profiles_differ_in_shape_at_equal_width():
    variance = {}
    for kind in SLICE_PROFILES:
        p = slice_profile(kind, 6.0, 6.0)
        x = np.arange(len(p)) - len(p) // 2
        variance[kind] = float((p * x * x).sum())
    # Flat tops and boxcars hold less of their weight far out than a Gaussian of the same
    # width; cross-talk tails hold more.
    assert variance["boxcar"] < variance["gaussian"] < variance["cross-talk"]
    assert variance["flat-top"] < variance["gaussian"]
    np.testing.assert_allclose(slice_profile("gaussian", 6.0), gaussian_slice_profile(6.0))
    with pytest.raises(TransMRSRError, match="unknown slice profile"):
        slice_profile("sinc", 4.0)
    with pytest.raises(TransMRSRError, match="FWHM"):
        slice_profile("boxcar", 4.0, 0.0)


def test_pairs_draw_their_profile_from_the_config():
    plane = np.random.default_rng(0).random((64, 64)).astype(np.float32)
    gaussian = PairConfig(factor_range=(4.0, 4.0), patch_size=64, augment=False)
    mixed = PairConfig(
        factor_range=(4.0, 4.0), patch_size=64, augment=False, profiles=SLICE_PROFILES
    )
    # Same key, same pair; the target never changes; the input does with the profile drawn.
    a = make_pair(plane, mixed, (1, 2))
    np.testing.assert_array_equal(a[0], make_pair(plane, mixed, (1, 2))[0])
    inputs = [make_pair(plane, mixed, (1, i))[0] for i in range(12)]
    plain = make_pair(plane, gaussian, (1, 0))
    np.testing.assert_array_equal(make_pair(plane, mixed, (1, 0))[1], plain[1])
    distinct = {round(float((x - plain[0]).abs().sum()), 3) for x in inputs}
    assert len(distinct) >= 3  # several shapes were drawn, the Gaussian among them
    assert 0.0 in distinct
    with pytest.raises(TransMRSRError, match="slice profiles"):
        PairConfig(profiles=("gaussian", "sinc"))
    with pytest.raises(TransMRSRError, match="slice profiles"):
        PairConfig(profiles=())
    assert PairConfig(profiles=["boxcar"]).profiles == ("boxcar",)
