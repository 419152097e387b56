"""Interpolation along one axis: the baselines of the paper and the first step of restoration.

Every method is expressed as a 1-D interpolation *matrix* ``W`` (new samples x old samples) that
is applied along the chosen axis with one matrix product. The matrix of the cubic and linear
methods is built from :func:`scipy.ndimage.map_coordinates` itself (one unit impulse per column),
so the result is exactly scipy's spline interpolation, and the product is far faster than
calling scipy on a whole volume with 3-D coordinates. Boundaries are half-sample symmetric
(``reflect``), which matches the voxel-edge grid convention of :mod:`transmrsr.geometry`.
"""

from __future__ import annotations

import functools
import logging
import math
from typing import Literal

import numpy as np
from scipy import ndimage

from transmrsr.errors import TransMRSRError
from transmrsr.geometry import AxisResampling, grid_overlap, resample_axis_grid
from transmrsr.io import voxel_sizes

log = logging.getLogger(__name__)

Method = Literal["linear", "cubic", "lanczos"]
METHODS: tuple[str, ...] = ("linear", "cubic", "lanczos")
#: ``nearest`` is offered for display (thick slices shown as blocks), not as a baseline.
_SPLINE_ORDER = {"nearest": 0, "linear": 1, "cubic": 3}
LANCZOS_LOBES = 3
#: Gaussian sigma per unit of full width at half maximum.
FWHM_TO_SIGMA = 1.0 / (2.0 * math.sqrt(2.0 * math.log(2.0)))
#: Spacing ratios this close to one leave an axis as it is.
SAME_SPACING = 1e-3


def _reflect_index(index: np.ndarray, n: int) -> np.ndarray:
    """Half-sample symmetric boundary: ... 1 0 | 0 1 ... n-1 | n-1 n-2 ..."""
    period = 2 * n
    index = np.mod(index, period)
    return np.where(index >= n, period - 1 - index, index)


def _lanczos_matrix(n_in: int, positions: np.ndarray, lobes: int = LANCZOS_LOBES) -> np.ndarray:
    base = np.floor(positions).astype(np.int64)
    matrix = np.zeros((positions.size, n_in), dtype=np.float64)
    rows = np.arange(positions.size)
    taps = np.arange(-lobes + 1, lobes + 1)
    weights = np.stack(
        [np.sinc(positions - (base + t)) * np.sinc((positions - (base + t)) / lobes) for t in taps],
        axis=1,
    )
    weights /= weights.sum(axis=1, keepdims=True)
    for column, t in enumerate(taps):
        np.add.at(matrix, (rows, _reflect_index(base + t, n_in)), weights[:, column])
    return matrix


@functools.lru_cache(maxsize=64)
def _cached_matrix(method: str, n_in: int, positions: tuple[float, ...]) -> np.ndarray:
    pos = np.asarray(positions, dtype=np.float64)
    if method == "lanczos":
        return _lanczos_matrix(n_in, pos)
    order = _SPLINE_ORDER[method]
    matrix = np.empty((pos.size, n_in), dtype=np.float64)
    impulse = np.zeros(n_in, dtype=np.float64)
    for j in range(n_in):
        impulse[j] = 1.0
        matrix[:, j] = ndimage.map_coordinates(impulse, pos[None], order=order, mode="reflect")
        impulse[j] = 0.0
    return matrix


def interpolation_matrix(method: str, n_in: int, positions: np.ndarray) -> np.ndarray:
    """Matrix ``W`` with ``W @ samples`` = the signal interpolated at ``positions``.

    Args:
        method: ``linear``, ``cubic`` (cubic B-spline, with its prefilter) or ``lanczos``
            (Lanczos-3, weights normalised to sum to one).
        n_in: number of input samples.
        positions: where to interpolate, in input-index units (may lie slightly outside
            ``[0, n_in - 1]``; the signal is mirrored at its edges).
    """
    if method not in (*METHODS, "nearest"):
        raise TransMRSRError(f"unknown interpolation {method!r}; choose from {', '.join(METHODS)}")
    key = tuple(np.round(np.asarray(positions, np.float64), 9).tolist())
    return _cached_matrix(method, int(n_in), key).copy()


def apply_along_axis(matrix: np.ndarray, data: np.ndarray, axis: int) -> np.ndarray:
    """``matrix`` applied to every 1-D line of ``data`` along ``axis`` (float32 result)."""
    moved = np.moveaxis(np.asarray(data, dtype=np.float32), axis, 0)
    flat = moved.reshape(moved.shape[0], -1)
    out = (matrix.astype(np.float32) @ flat).reshape((matrix.shape[0], *moved.shape[1:]))
    return np.moveaxis(out, 0, axis)


def interpolate_axis(data: np.ndarray, axis: int, positions: np.ndarray, method: str) -> np.ndarray:
    """Sample ``data`` along ``axis`` at fractional ``positions`` (index units)."""
    matrix = interpolation_matrix(method, data.shape[axis], positions)
    return apply_along_axis(matrix, data, axis)


def upsample_grid(
    shape: tuple[int, ...], affine: np.ndarray, axis: int, factor: float
) -> AxisResampling:
    """The output grid of upsampling by ``factor`` along ``axis``: spacing divided by ``factor``.

    This is the grid ``upsample`` and ``restore`` write by default (see
    :mod:`transmrsr.geometry` for the convention).
    """
    return resample_axis_grid(shape, affine, axis, 1.0 / factor)


def upsample(
    data: np.ndarray, affine: np.ndarray, axis: int, factor: float, method: str = "cubic"
) -> tuple[np.ndarray, np.ndarray]:
    """Interpolate a thick-slice volume onto its isotropic grid along the thick axis.

    Returns the upsampled data and its affine.
    """
    grid = upsample_grid(data.shape, affine, axis, factor)
    log.debug(
        "upsample axis %d by %.4g with %s: %s -> %s", axis, factor, method, data.shape, grid.shape
    )
    return interpolate_axis(data, axis, grid.positions, method), grid.affine


def resample_axis(
    data: np.ndarray, affine: np.ndarray, axis: int, ratio: float, method: str = "cubic"
) -> tuple[np.ndarray, np.ndarray]:
    """One axis onto the field-of-view preserving grid of ``ratio`` times its spacing.

    A coarser spacing (``ratio`` above one) is first low-passed with a Gaussian as wide as the
    new voxel (FWHM ``ratio`` old voxels, the slice model of :mod:`transmrsr.degradation`), so
    that the result looks acquired at that spacing rather than aliased; a finer one is plain
    interpolation.
    """
    grid = resample_axis_grid(data.shape, affine, axis, ratio)
    data = np.asarray(data, np.float32)
    if ratio > 1:
        data = ndimage.gaussian_filter1d(data, ratio * FWHM_TO_SIGMA, axis=axis, mode="reflect")
    return interpolate_axis(data, axis, grid.positions, method).astype(np.float32), grid.affine


def resample_in_plane(
    data: np.ndarray, affine: np.ndarray, thick_axis: int, spacing: float, method: str = "cubic"
) -> tuple[np.ndarray, np.ndarray]:
    """The two axes other than ``thick_axis`` resampled to ``spacing`` mm (``--resolution``).

    Restoring a 0.45 mm in-plane, 5 mm scan at 1 mm first brings its in-plane axes to 1 mm, so
    that the thick axis is then a x5 problem on a grid the models know. Axes already at
    ``spacing`` are left untouched (no interpolation).
    """
    zooms = voxel_sizes(affine)
    for axis in range(3):
        ratio = float(spacing / zooms[axis])
        if axis == thick_axis or abs(ratio - 1.0) < SAME_SPACING:
            continue
        log.debug("resample axis %d from %.4g to %.4g mm", axis, zooms[axis], spacing)
        data, affine = resample_axis(data, affine, axis, ratio, method)
    return data, affine


def resample_to_grid(
    data: np.ndarray,
    affine: np.ndarray,
    target_shape: tuple[int, ...],
    target_affine: np.ndarray,
    *,
    order: int = 3,
) -> np.ndarray:
    """Resample a volume onto another grid (``--like``), exactly where the grids line up.

    When the target grid is the source grid shifted by whole voxels (the usual case: the same
    scan, cropped differently), voxels are copied without interpolation; elsewhere the target
    is filled with zeros. Otherwise the volume is resampled in 3-D with a spline of ``order``
    (outside the source field of view: zero).
    """
    target_shape = tuple(int(s) for s in target_shape[:3])
    overlap = grid_overlap(target_shape, target_affine, data.shape, affine)
    if overlap is not None:
        out = np.zeros(target_shape, dtype=np.float32)
        out[overlap.a_slices] = data[overlap.b_slices]
        return out
    log.info("target grid is not a whole-voxel shift of the output grid: resampling in 3-D")
    to_source = np.linalg.solve(affine, target_affine)
    coeffs = (
        ndimage.spline_filter(np.asarray(data, np.float64), order=order, mode="mirror")
        if order > 1
        else data
    )
    return ndimage.affine_transform(
        coeffs,
        to_source[:3, :3],
        offset=to_source[:3, 3],
        output_shape=target_shape,
        order=order,
        mode="constant",
        cval=0.0,
        prefilter=False,
    ).astype(np.float32)
