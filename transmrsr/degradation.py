"""The thick-slice acquisition model (SMORE, Zhao et al. 2020) used to make training pairs.

A thick slice integrates the signal over its slab: along the through-plane axis the
high-resolution volume is convolved with a slice profile (a Gaussian whose full width at half
maximum equals the slice thickness, by default the factor ``k``), then sampled once per slab,
at the slab's centre. With the voxel-edge grid of :mod:`transmrsr.geometry`, slab ``j`` covers
high-resolution slices ``[j k, (j + 1) k)`` and is sampled at index ``(j + 0.5) k - 0.5``; that
is a whole index for odd integer ``k`` and an interpolated one otherwise (cubic B-spline of the
already blurred signal). The result carries the true thick spacing and an affine that puts every
thick slice at its world position.
"""

from __future__ import annotations

import logging
import math

import numpy as np
from scipy import ndimage

from transmrsr.errors import TransMRSRError
from transmrsr.geometry import axis_positions, check_factor, resample_axis_grid
from transmrsr.interpolation import FWHM_TO_SIGMA, interpolate_axis

log = logging.getLogger(__name__)

#: Slice thickness over slice spacing that the acquisition model accepts: from slices a quarter
#: as thick as their spacing (wide gaps) to slices three spacings thick (overlapping
#: reconstructions). 1 is the SPEC's model, slices as thick as their spacing.
MIN_THICKNESS = 0.25
MAX_THICKNESS = 3.0


def gaussian_slice_profile(factor: float, fwhm: float | None = None) -> np.ndarray:
    """Gaussian slice profile in high-resolution voxels, normalised to sum to one.

    Args:
        factor: the thick/thin spacing ratio ``k``; the kernel has ``2 round(k) + 1`` taps.
        fwhm: full width at half maximum in high-resolution voxels (default ``k``: a slice as
            thick as its spacing, no gap and no overlap).
    """
    fwhm = float(factor if fwhm is None else fwhm)
    if not math.isfinite(fwhm) or fwhm <= 0:
        raise TransMRSRError(f"slice-profile FWHM {fwhm:g} must be a positive number of voxels")
    half = round(factor)
    x = np.arange(-half, half + 1, dtype=np.float64)
    profile = np.exp(-0.5 * (x / (fwhm * FWHM_TO_SIGMA)) ** 2)
    return profile / profile.sum()


#: Named slice-profile shapes (:func:`slice_profile`). Real 2-D acquisitions are not Gaussian:
#: a spin-echo slice is nearly flat-topped with soft edges, a boxcar is the idealised slab,
#: and interleaved acquisitions excite neighbours a little (cross-talk tails). A model trained
#: on one shape meets another on a real scan, and its slab-locked corrections stop cancelling.
SLICE_PROFILES = ("gaussian", "boxcar", "flat-top", "cross-talk")
#: Weight of the wide tail (twice the FWHM) in the ``cross-talk`` profile.
CROSS_TALK = 0.15


def slice_profile(kind: str, factor: float, fwhm: float | None = None) -> np.ndarray:
    """A slice profile of shape ``kind`` (:data:`SLICE_PROFILES`), FWHM ``fwhm`` voxels.

    ``gaussian`` is :func:`gaussian_slice_profile`. ``boxcar`` is a slab exactly ``fwhm``
    voxels wide (edge voxels weighted by their overlap). ``flat-top`` is a super-Gaussian of
    order 4 (``exp(-ln 2 (2x / fwhm)^4)``, half maximum at the slab edge): the shape of a
    spin-echo slice. ``cross-talk`` is the Gaussian plus :data:`CROSS_TALK` times one twice as
    wide: tails into the neighbouring slabs. All sum to one; ``fwhm`` defaults to ``factor``.
    """
    if kind not in SLICE_PROFILES:
        raise TransMRSRError(
            f"unknown slice profile {kind!r}; choose from {', '.join(SLICE_PROFILES)}"
        )
    if kind == "gaussian":
        return gaussian_slice_profile(factor, fwhm)
    width = float(factor if fwhm is None else fwhm)
    if not math.isfinite(width) or width <= 0:
        raise TransMRSRError(f"slice-profile FWHM {width:g} must be a positive number of voxels")
    if kind == "cross-talk":
        x = np.arange(-math.ceil(1.5 * width), math.ceil(1.5 * width) + 1, dtype=np.float64)
        narrow = np.exp(-0.5 * (x / (width * FWHM_TO_SIGMA)) ** 2)
        wide = np.exp(-0.5 * (x / (2 * width * FWHM_TO_SIGMA)) ** 2)
        profile = narrow / narrow.sum() + CROSS_TALK * wide / wide.sum()
    elif kind == "boxcar":
        x = np.arange(-math.ceil(width / 2), math.ceil(width / 2) + 1, dtype=np.float64)
        # overlap of voxel [x - 1/2, x + 1/2] with the slab [-width/2, width/2]
        profile = np.clip(np.minimum(x + 0.5, width / 2) - np.maximum(x - 0.5, -width / 2), 0, 1)
    else:
        x = np.arange(-math.ceil(width), math.ceil(width) + 1, dtype=np.float64)
        profile = np.exp(-math.log(2.0) * (2.0 * x / width) ** 4)
    return profile / profile.sum()


def check_profile(profile: np.ndarray) -> np.ndarray:
    """Validate a user-given 1-D slice profile and normalise it to sum to one."""
    profile = np.asarray(profile, dtype=np.float64).ravel()
    if profile.size == 0 or not np.all(np.isfinite(profile)) or np.any(profile < 0):
        raise TransMRSRError(
            "slice profile must be a non-empty list of finite, non-negative weights"
        )
    if profile.sum() <= 0:
        raise TransMRSRError("slice profile must have a positive sum")
    return profile / profile.sum()


def blur_through_plane(data: np.ndarray, axis: int, profile: np.ndarray) -> np.ndarray:
    """Convolve every line along ``axis`` with the slice profile (mirrored boundaries)."""
    return ndimage.convolve1d(
        np.asarray(data, np.float32), profile.astype(np.float32), axis=axis, mode="reflect"
    )


def simulate_thick(
    data: np.ndarray,
    axis: int,
    factor: float,
    *,
    fwhm: float | None = None,
    profile: np.ndarray | None = None,
) -> np.ndarray:
    """The thick-slice samples of an array (any number of dimensions) along ``axis``.

    Steps 1 and 2 of the SMORE model: blur with the slice profile, then take one sample per slab
    of ``factor`` thin voxels at the slab centre (``floor(N / factor)`` samples).
    """
    factor = check_factor(factor)
    kernel = gaussian_slice_profile(factor, fwhm) if profile is None else check_profile(profile)
    positions = axis_positions(int(data.shape[axis]), factor)
    blurred = blur_through_plane(data, axis, kernel)
    if np.allclose(positions, np.rint(positions), atol=1e-9):
        thick = np.take(blurred, np.rint(positions).astype(np.int64), axis=axis)
    else:
        thick = interpolate_axis(blurred, axis, positions, "cubic")
    return np.ascontiguousarray(thick, dtype=np.float32)


def degrade(
    data: np.ndarray,
    affine: np.ndarray,
    axis: int,
    factor: float,
    *,
    fwhm: float | None = None,
    profile: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Simulate a thick-slice acquisition of a high-resolution volume, with its grid.

    Args:
        data: the high-resolution volume.
        affine: its voxel-to-world affine.
        axis: the array axis that becomes thick.
        factor: thick spacing / thin spacing (``k``); non-integer values are sampled by
            interpolation.
        fwhm: slice thickness in thin voxels for the default Gaussian profile (default ``k``).
        profile: a user-given 1-D slice profile replacing the Gaussian.

    Returns:
        The thick-slice volume (``floor(N / k)`` slices along ``axis``) and its affine.
    """
    thick = simulate_thick(data, axis, factor, fwhm=fwhm, profile=profile)
    grid = resample_axis_grid(data.shape, affine, axis, factor)
    log.debug("degrade axis %d by %.4g: %s -> %s", axis, factor, data.shape, thick.shape)
    return thick, grid.affine


def simulate_interpolated_lr(
    hr: np.ndarray,
    axis: int,
    factor: float,
    *,
    method: str = "cubic",
    fwhm: float | None = None,
    profile: np.ndarray | None = None,
) -> np.ndarray:
    """The network input for a high-resolution array: degraded, then interpolated back.

    All three SMORE steps; the result has the shape of ``hr`` (slices past the last whole slab
    are interpolated from the mirrored edge), so it pairs voxel for voxel with ``hr``.
    """
    thick = simulate_thick(hr, axis, factor, fwhm=fwhm, profile=profile)
    n = int(hr.shape[axis])
    positions = (np.arange(n, dtype=np.float64) + 0.5) / factor - 0.5
    return interpolate_axis(thick, axis, positions, method)
