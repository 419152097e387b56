"""Grids: which axis is thick, by what factor, and where resampled slices lie in the world.

The one grid convention of the tool (used by ``degrade``, ``upsample``, ``restore``, training
and evaluation alike) is *field-of-view preserving*: a voxel of spacing ``s`` covers the slab
``[x - s/2, x + s/2]`` around its centre ``x``, and resampling along an axis by a spacing ratio
``r`` (new spacing / old spacing) tiles the same slabs with ``floor(n / r)`` new voxels that start
at the same outer edge. In old voxel-index coordinates new voxel ``u`` lies at::

    t(u) = (u + 0.5) * r - 0.5

So a thick slice made from ``k`` thin slices sits at the centre of those ``k`` slices, and
upsampling it by ``k`` puts ``k`` thin slices back exactly where they were: degrading a volume
of ``N`` slices by ``k`` and upsampling the result by ``k`` gives the original grid when ``N`` is
a whole multiple of ``k``, and otherwise its first ``floor(N / k) * k`` slices (same affine, the
trailing partial slab cropped). This is the convention of voxel-edge ("align corners = False")
resampling, and it keeps the world extent of every slab exact for non-integer factors too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import nibabel as nib
import numpy as np

from transmrsr.errors import TransMRSRError
from transmrsr.io import voxel_sizes

#: Anatomical axis names accepted wherever an axis is asked for, and the two letters that
#: nibabel's orientation codes use for each.
ANATOMICAL_AXES: dict[str, frozenset[str]] = {
    "LR": frozenset("LR"),
    "RL": frozenset("LR"),
    "AP": frozenset("AP"),
    "PA": frozenset("AP"),
    "SI": frozenset("SI"),
    "IS": frozenset("SI"),
}

#: Factors outside (1, MAX_FACTOR] are refused: below 1 is not super-resolution, above it the
#: thick slices are too far apart for any slice-wise method to restore.
MAX_FACTOR = 16.0
#: Spacings closer than this ratio count as equal when looking for the thick axis.
ISOTROPY_TOLERANCE = 1.05
#: A resampled axis keeps a last voxel that falls short of the field of view by less than this
#: fraction of a voxel. Headers store spacings in float32 (0.45 mm reads 0.449999988), so 476
#: voxels of "0.5 mm" brought to 1 mm come to 237.99999 voxels; they mean 238.
WHOLE_VOXEL_TOLERANCE = 1e-4


def resolve_axis(axis: str | int, affine: np.ndarray) -> int:
    """Turn an axis given by the user into an array axis (0, 1 or 2).

    Accepts an array axis (``0``, ``"1"``) or an anatomical direction (``LR``, ``AP``, ``SI``
    or their reverses, any case), which is resolved through the affine's orientation: for an
    oblique grid, the array axis closest to that direction.
    """
    text = str(axis).strip().upper()
    if text in {"0", "1", "2"}:
        return int(text)
    if text in ANATOMICAL_AXES:
        letters = ANATOMICAL_AXES[text]
        codes = nib.aff2axcodes(affine)
        for index, code in enumerate(codes):
            if code in letters:
                return index
        raise TransMRSRError(
            f"axis {axis!r}: no array axis runs {text} in this image ({''.join(codes)})"
        )
    raise TransMRSRError(f"axis {axis!r}: use 0, 1, 2 or an anatomical name LR, AP, SI")


def axis_name(axis: int, affine: np.ndarray) -> str:
    """Anatomical name (``LR``, ``AP`` or ``SI``) of an array axis, for messages and reports."""
    code = nib.aff2axcodes(affine)[axis]
    return next(name for name in ("LR", "AP", "SI") if code in ANATOMICAL_AXES[name])


def check_factor(factor: float) -> float:
    """Refuse a factor that is not a finite number in (1, MAX_FACTOR]."""
    if not math.isfinite(factor) or factor <= 1.0 or factor > MAX_FACTOR:
        raise TransMRSRError(
            f"factor {factor:g} is out of range: it must be above 1 and at most {MAX_FACTOR:g}"
        )
    return float(factor)


def detect_thick_axis(
    affine: np.ndarray,
    *,
    axis: str | int | None = None,
    factor: float | None = None,
    resolution: float | None = None,
) -> tuple[int, float]:
    """Find the through-plane (thick) axis and the upsampling factor of a thick-slice volume.

    The thick axis is the one with the largest spacing; the factor is that spacing divided by
    the finest in-plane spacing, so that the restored volume is isotropic at the finest
    resolution (it may be non-integer, e.g. 2.4 / 0.86). Either can be given explicitly. An
    isotropic volume is refused unless both are given, because nothing says which axis to
    restore or by how much.

    ``resolution`` (mm) asks for an isotropic volume of that spacing instead: the factor is the
    thick spacing divided by it (the in-plane axes are resampled to it separately, see
    :func:`~transmrsr.interpolation.resample_in_plane`). It excludes ``factor``. A clinical
    0.45 x 0.45 x 5 mm scan restored at 1 mm is a x5 problem rather than x11: inside the
    factors the models learnt, and 11 times fewer output voxels.
    """
    if resolution is not None and factor is not None:
        raise TransMRSRError("give the factor or the resolution (--factor, --resolution), not both")
    zooms = voxel_sizes(affine)
    isotropic = zooms.max() / zooms.min() < ISOTROPY_TOLERANCE
    if axis is None:
        if isotropic:
            raise TransMRSRError(
                f"the volume is isotropic ({'x'.join(f'{z:.3g}' for z in zooms)} mm): "
                "give the thick axis and factor (--axis, --factor)"
            )
        index = int(np.argmax(zooms))
    else:
        index = resolve_axis(axis, affine)
    if resolution is not None:
        resolution = float(resolution)
        if not math.isfinite(resolution) or resolution <= 0:
            raise TransMRSRError(f"resolution {resolution:g} mm must be a positive number")
        if zooms[index] / resolution < ISOTROPY_TOLERANCE:
            raise TransMRSRError(
                f"resolution {resolution:.3g} mm is not finer than the thick spacing "
                f"({zooms[index]:.3g} mm along axis {index}): nothing to restore"
            )
        factor = float(zooms[index] / resolution)
    if factor is None:
        in_plane = np.delete(zooms, index)
        ratio = float(zooms[index] / in_plane.min())
        if ratio < ISOTROPY_TOLERANCE:
            raise TransMRSRError(
                f"axis {index} is not thicker than the others ({zooms[index]:.3g} mm vs "
                f"{in_plane.min():.3g} mm): give the factor with --factor"
            )
        factor = ratio
    return index, check_factor(float(factor))


@dataclass(frozen=True)
class AxisResampling:
    """A resampling of one array axis: the new grid and where its voxels lie on the old one.

    Attributes:
        axis: the array axis that changes.
        ratio: new spacing / old spacing along it (``k`` to degrade, ``1/k`` to upsample).
        shape: the new array shape.
        affine: the new voxel-to-world affine.
        positions: for each new voxel along ``axis``, its position in old voxel-index units.
    """

    axis: int
    ratio: float
    shape: tuple[int, ...]
    affine: np.ndarray
    positions: np.ndarray


def axis_positions(n_old: int, ratio: float) -> np.ndarray:
    """Positions, in old voxel-index units, of the voxels of an axis resampled by ``ratio``.

    ``ratio`` is new spacing / old spacing; there are ``floor(n_old / ratio)`` new voxels (only
    whole ones inside the old field of view), counted with :data:`WHOLE_VOXEL_TOLERANCE`. See
    the module docstring for the convention.
    """
    if ratio <= 0 or not math.isfinite(ratio):
        raise TransMRSRError(f"spacing ratio {ratio!r} must be a positive number")
    n_new = math.floor(n_old / ratio + WHOLE_VOXEL_TOLERANCE)
    if n_new < 2:
        raise TransMRSRError(
            f"an axis of {n_old} voxels is too short for a spacing ratio of {ratio:g} "
            f"(it would leave {n_new})"
        )
    return (np.arange(n_new, dtype=np.float64) + 0.5) * ratio - 0.5


def resample_axis_grid(
    shape: tuple[int, ...], affine: np.ndarray, axis: int, ratio: float
) -> AxisResampling:
    """The field-of-view preserving grid with spacing multiplied by ``ratio`` along ``axis``."""
    positions = axis_positions(int(shape[axis]), ratio)
    offset = 0.5 * ratio - 0.5
    new_affine = np.asarray(affine, np.float64).copy()
    new_affine[:3, 3] = affine[:3, 3] + affine[:3, axis] * offset
    new_affine[:3, axis] = affine[:3, axis] * ratio
    new_shape = [int(s) for s in shape]
    new_shape[axis] = positions.size
    return AxisResampling(axis, float(ratio), tuple(new_shape), new_affine, positions)


@dataclass(frozen=True)
class GridOverlap:
    """How a grid ``a`` sits on a grid ``b`` when they differ by a whole-voxel shift only.

    ``a_slices`` and ``b_slices`` index the common part in each array.
    """

    shift: tuple[int, int, int]
    a_slices: tuple[slice, slice, slice]
    b_slices: tuple[slice, slice, slice]

    @property
    def identical(self) -> bool:
        return self.shift == (0, 0, 0)


def grid_overlap(
    shape_a: tuple[int, ...],
    affine_a: np.ndarray,
    shape_b: tuple[int, ...],
    affine_b: np.ndarray,
    *,
    tolerance_mm: float = 1e-3,
) -> GridOverlap | None:
    """Whether grid ``a`` equals grid ``b`` up to a whole-voxel shift, and where they overlap.

    Returns ``None`` when the grids have different spacing or orientation, or are offset by a
    fraction of a voxel: then no voxel of one lies on a voxel of the other.
    """
    if not np.allclose(affine_a[:3, :3], affine_b[:3, :3], atol=tolerance_mm * 1e-2):
        return None
    # Index in b of voxel (0, 0, 0) of a.
    origin_in_b = np.linalg.solve(affine_b[:3, :3], affine_a[:3, 3] - affine_b[:3, 3])
    shift = np.rint(origin_in_b)
    world_error = np.abs(affine_b[:3, :3] @ (origin_in_b - shift)).max()
    if world_error > tolerance_mm:
        return None
    a_sl, b_sl = [], []
    for d in range(3):
        s = int(shift[d])
        lo_b, hi_b = max(0, s), min(int(shape_b[d]), s + int(shape_a[d]))
        if hi_b <= lo_b:
            return None
        b_sl.append(slice(lo_b, hi_b))
        a_sl.append(slice(lo_b - s, hi_b - s))
    return GridOverlap(tuple(int(v) for v in shift), tuple(a_sl), tuple(b_sl))  # type: ignore[arg-type]
