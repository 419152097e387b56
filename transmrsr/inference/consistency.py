"""Data consistency: make a restored volume reproduce its thick-slice input exactly.

The acquisition model of :mod:`transmrsr.degradation` is linear along the thick axis: every
line of thin voxels ``x`` (length ``n``) becomes the thick samples ``D x`` (length ``m``), with
``D`` the slice-profile blur followed by sampling at the slab centres. A network's output
``x`` rarely satisfies ``D x = y`` for the observed thick slices ``y``: it carries errors in the
smooth, through-plane part of the signal that the input itself pins down. The orthogonal
projection onto ``{x : D x = y}``,

    x' = x + D^T (D D^T + lambda I)^-1 (y - D x),

removes exactly that part of the error and leaves the rest (what the thick slices cannot see)
as the network made it. When the model of the slices is right, the true volume lies in that set,
so the projection can only bring the estimate closer to it (never farther, in L2). The
Gaussian is as thick as the slice spacing unless the scan's slices are known to be thinner (a
gap) or thicker (overlap): restore's ``--slice-thickness``. When a scanner's slice profile
differs from the model's, the set is slightly off; ``--no-consistency`` turns the step off.
"""

from __future__ import annotations

import numpy as np

from transmrsr.degradation import blur_through_plane, gaussian_slice_profile
from transmrsr.errors import TransMRSRError
from transmrsr.geometry import check_factor
from transmrsr.interpolation import apply_along_axis, interpolation_matrix

# Tikhonov weight relative to the mean diagonal of D D^T: keeps the solve stable for
# interpolated (non-integer factor) samples while changing the projection negligibly.
RIDGE = 1e-4


def thick_slice_operator(n: int, m: int, factor: float, fwhm: float | None = None) -> np.ndarray:
    """The matrix ``D`` (``m x n``) of the thick-slice model along one line of ``n`` thin voxels.

    Row ``j`` is thick slice ``j``: the line blurred by the Gaussian slice profile (FWHM
    ``fwhm`` thin voxels, by default ``factor``: slices as thick as their spacing; mirrored
    edges), sampled at thin index ``(j + 0.5) factor - 0.5`` (the grid convention of
    :mod:`transmrsr.geometry`), as :func:`transmrsr.degradation.simulate_thick` does it.
    """
    factor = check_factor(factor)
    if n < 2 or m < 1:
        raise TransMRSRError(f"cannot model {m} thick slices over {n} thin voxels")
    blur = blur_through_plane(np.eye(n), 0, gaussian_slice_profile(factor, fwhm)).astype(np.float64)
    positions = (np.arange(m, dtype=np.float64) + 0.5) * factor - 0.5
    return interpolation_matrix("cubic", n, positions) @ blur


def _check_pair(restored: np.ndarray, observed: np.ndarray, axis: int) -> None:
    """Refuse volumes that are not 3-D or differ off the thick axis."""
    if restored.ndim != 3 or observed.ndim != 3:
        raise TransMRSRError("data consistency needs two 3-D volumes")
    other = [a for a in range(3) if a != axis]
    if [restored.shape[a] for a in other] != [observed.shape[a] for a in other]:
        raise TransMRSRError(
            f"restored {restored.shape} and observed {observed.shape} differ off the thick axis"
        )


def enforce_consistency(
    restored: np.ndarray,
    observed: np.ndarray,
    axis: int,
    factor: float,
    *,
    fwhm: float | None = None,
) -> np.ndarray:
    """Project ``restored`` onto the volumes whose thick slices along ``axis`` are ``observed``.

    Args:
        restored: the volume on the thin grid (intensities in the units of ``observed``).
        observed: the thick-slice input; the same shape except along ``axis``.
        axis: the thick array axis.
        factor: thick spacing / thin spacing.
        fwhm: the slices' thickness in thin voxels (default ``factor``; less with a slice
            gap, more when slices overlap).

    Returns:
        A float32 array of ``restored``'s shape.
    """
    _check_pair(restored, observed, axis)
    n, m = int(restored.shape[axis]), int(observed.shape[axis])
    d = thick_slice_operator(n, m, factor, fwhm)
    gram = d @ d.T
    gram += RIDGE * float(np.mean(np.diag(gram))) * np.eye(m)
    back = np.linalg.solve(gram, d).T  # D^T (D D^T + ridge I)^-1, symmetric gram
    residual = np.asarray(observed, np.float32) - apply_along_axis(d, restored, axis)
    return np.asarray(restored, np.float32) + apply_along_axis(back, residual, axis)


#: The ways restore brings its output to reproduce the input: ``smooth``
#: (:func:`enforce_consistency_smoothly`) or ``projection`` (:func:`enforce_consistency`).
CONSISTENCY_METHODS = ("smooth", "projection")
#: What restore uses unless told (chosen by measurement: docs/experiments.md).
DEFAULT_CONSISTENCY = "smooth"

#: Iterations of :func:`enforce_consistency_smoothly` (each one a blur, a sampling and a cubic
#: interpolation along the thick axis) and the relative residual at which it stops earlier.
SMOOTH_ITERATIONS = 10
SMOOTH_TOLERANCE = 1e-3


def enforce_consistency_smoothly(
    restored: np.ndarray,
    observed: np.ndarray,
    axis: int,
    factor: float,
    *,
    fwhm: float | None = None,
    iterations: int = SMOOTH_ITERATIONS,
) -> np.ndarray:
    """Bring ``restored`` to reproduce ``observed`` with corrections that are smooth along the
    thick axis.

    The orthogonal projection (:func:`enforce_consistency`) corrects with ``D^T``: one bump of
    the slice profile's shape per thick slice. Where a real scanner's slices differ from the
    model's (another profile, a gap, cross-talk), the residual it corrects is systematic and
    its bumps line up slab after slab: horizontal stripes one slab apart in sagittal and
    coronal views. Here the residual is instead spread by cubic interpolation ``U`` of the
    thick samples onto the fine grid, ``x <- x + U (y - D x)``, repeated: a Landweber iteration
    preconditioned by interpolation, which converges to the same set ``{x : D x = y}``
    (``D U`` is a smooth low-pass with eigenvalues in (0, 1]) along corrections without a
    slab-locked shape. It stops after ``iterations`` or once the residual is below
    :data:`SMOOTH_TOLERANCE` of the observed range; the highest through-plane frequencies,
    the least determined by the thick slices, converge last and are corrected least.
    """
    _check_pair(restored, observed, axis)
    n, m = int(restored.shape[axis]), int(observed.shape[axis])
    d = thick_slice_operator(n, m, factor, fwhm)
    spread = interpolation_matrix("cubic", m, (np.arange(n, dtype=np.float64) + 0.5) / factor - 0.5)
    observed = np.asarray(observed, np.float32)
    scale = float(np.ptp(observed)) or 1.0
    out = np.array(restored, np.float32)
    for _ in range(iterations):
        residual = observed - apply_along_axis(d, out, axis)
        if float(np.abs(residual).max()) < SMOOTH_TOLERANCE * scale:
            break
        out += apply_along_axis(spread, residual, axis)
    return out
