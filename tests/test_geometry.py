"""Thick axis and factor, anatomical axis names, the resampling grid and grid overlaps."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import oblique_affine, oriented_affine

from transmrsr.errors import TransMRSRError
from transmrsr.geometry import (
    axis_name,
    axis_positions,
    detect_thick_axis,
    grid_overlap,
    resample_axis_grid,
    resolve_axis,
)


@pytest.mark.parametrize(
    ("codes", "expected"),
    [("RAS", (0, 1, 2)), ("LAS", (0, 1, 2)), ("LIA", (0, 2, 1)), ("PSR", (2, 0, 1))],
)
def test_anatomical_names_resolve_through_the_affine(codes, expected):
    affine = oriented_affine(codes)
    lr, ap, si = expected
    assert resolve_axis("LR", affine) == lr
    assert resolve_axis("rl", affine) == lr
    assert resolve_axis("AP", affine) == ap
    assert resolve_axis("IS", affine) == si
    assert resolve_axis(1, affine) == 1 and resolve_axis("2", affine) == 2
    assert axis_name(si, affine) == "SI"


def test_oblique_axis_resolves_to_closest_array_axis():
    assert resolve_axis("SI", oblique_affine()) == 2
    assert resolve_axis("AP", oblique_affine()) == 1


@pytest.mark.parametrize("bad", ["3", "-1", "z", "up", ""])
def test_bad_axis_names_are_refused(bad):
    with pytest.raises(TransMRSRError, match="axis"):
        resolve_axis(bad, np.eye(4))


def test_thick_axis_and_non_integer_factor_from_spacing():
    affine = oriented_affine("LIA", zooms=(0.86, 2.4, 0.9))
    axis, factor = detect_thick_axis(affine)
    assert axis == 1
    assert factor == pytest.approx(2.4 / 0.86)


def test_overrides_and_isotropic_refusal():
    iso = oriented_affine("RAS")
    with pytest.raises(TransMRSRError, match="isotropic"):
        detect_thick_axis(iso)
    with pytest.raises(TransMRSRError, match="give the factor"):
        detect_thick_axis(iso, axis="SI")
    assert detect_thick_axis(iso, axis="SI", factor=4) == (2, 4.0)
    thick = oriented_affine("RAS", zooms=(1, 1, 5))
    assert detect_thick_axis(thick, factor=2.5) == (2, 2.5)


@pytest.mark.parametrize("factor", [0.5, 1.0, 17.0, float("nan"), float("inf")])
def test_absurd_factors_are_refused(factor):
    with pytest.raises(TransMRSRError, match="factor"):
        detect_thick_axis(oriented_affine("RAS"), axis=0, factor=factor)


def test_positions_tile_the_same_field_of_view():
    down = axis_positions(12, 4.0)
    np.testing.assert_allclose(down, [1.5, 5.5, 9.5])  # centres of slabs [0-3], [4-7], [8-11]
    up = axis_positions(3, 0.25)
    np.testing.assert_allclose((up + 0.5) * 4 - 0.5, np.arange(12))
    assert axis_positions(10, 2.5).size == 4
    # float32 header spacings: 476 voxels of 0.49999999 mm make 238 of 1 mm, not 237.
    assert axis_positions(476, 1.0 / 0.49999999).size == 238
    assert axis_positions(476, 2.001).size == 237
    with pytest.raises(TransMRSRError, match="too short"):
        axis_positions(5, 4.0)


@pytest.mark.parametrize("codes", ["RAS", "LIA", "PSR"])
def test_resampled_grid_puts_voxels_at_their_world_positions(codes):
    affine = oriented_affine(codes, zooms=(1.0, 1.2, 0.9))
    grid = resample_axis_grid((20, 30, 25), affine, axis=1, ratio=3.0)
    assert grid.shape == (20, 10, 25)
    for u, t in enumerate(grid.positions):
        new_world = grid.affine @ np.array([4, u, 7, 1.0])
        old_world = affine @ np.array([4, t, 7, 1.0])
        np.testing.assert_allclose(new_world, old_world, atol=1e-9)
    np.testing.assert_allclose(np.linalg.norm(grid.affine[:3, 1]), 3.6)


def test_grid_overlap_whole_voxel_shift_and_refusals():
    affine = oriented_affine("LIA")
    shifted = affine.copy()
    shifted[:3, 3] += affine[:3, :3] @ np.array([2, -1, 0])
    overlap = grid_overlap((10, 10, 10), shifted, (12, 10, 10), affine)
    assert overlap is not None and overlap.shift == (2, -1, 0)
    assert overlap.a_slices == (slice(0, 10), slice(1, 10), slice(0, 10))
    assert overlap.b_slices == (slice(2, 12), slice(0, 9), slice(0, 10))
    half = affine.copy()
    half[:3, 3] += affine[:3, 0] * 0.5
    assert grid_overlap((10, 10, 10), half, (10, 10, 10), affine) is None
    coarse = affine.copy()
    coarse[:3, 0] *= 2
    assert grid_overlap((10, 10, 10), coarse, (10, 10, 10), affine) is None
