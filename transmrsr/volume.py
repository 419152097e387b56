"""One 3-D image on a grid, and the checks every image passes: the bottom of volume I/O.

:class:`Volume` and :func:`volume_from_array` live here, below both readers, so that the
NIfTI/MGZ reader (:mod:`transmrsr.io`) and the DICOM reader (:mod:`transmrsr.dicom`) build
their volumes alike and neither imports the other's module to do it: ``io`` dispatches a
folder to ``dicom``, and ``dicom`` imports only this.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np

from transmrsr.errors import TransMRSRError

log = logging.getLogger("transmrsr.io")


@dataclass
class Volume:
    """One 3-D image on a grid.

    Attributes:
        data: voxel values, float32, shape (I, J, K) in array (file) order.
        affine: 4x4 voxel-to-world (RAS+ millimetres) matrix, float64. Array index (i, j, k)
            lies at ``affine @ (i, j, k, 1)``.
        header: the NIfTI header of the source file when it was a NIfTI, kept so that written
            outputs can inherit its qform/sform codes and description; ``None`` otherwise.
        path: where it was read from, if anywhere (a DICOM series: its folder).
        slice_thickness: the acquired thickness in mm of the slices along array axis 2 where
            the source says it differs from their spacing (a DICOM series with a gap); NIfTI
            cannot say so, and a derived volume does not inherit it.
    """

    data: np.ndarray
    affine: np.ndarray
    header: nib.Nifti1Header | None = field(default=None, repr=False)
    path: Path | None = None
    slice_thickness: float | None = None

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.data.shape)  # type: ignore[return-value]

    @property
    def zooms(self) -> np.ndarray:
        """Voxel sizes in mm along the three array axes (from the affine, not the header)."""
        return voxel_sizes(self.affine)

    @property
    def axcodes(self) -> tuple[str, str, str]:
        """Anatomical direction of each array axis, e.g. ``('L', 'I', 'A')``."""
        return tuple(nib.aff2axcodes(self.affine))  # type: ignore[return-value]

    def with_data(self, data: np.ndarray, affine: np.ndarray | None = None) -> Volume:
        """A new volume on this (or the given) grid that keeps this one's header metadata."""
        return Volume(
            data=data,
            affine=self.affine.copy() if affine is None else np.asarray(affine, np.float64),
            header=self.header,
            path=None,
        )


def voxel_sizes(affine: np.ndarray) -> np.ndarray:
    """Voxel spacing along each array axis: the lengths of the affine's first three columns."""
    return np.sqrt(np.sum(np.asarray(affine, np.float64)[:3, :3] ** 2, axis=0))


def volume_from_array(
    raw: np.ndarray,
    affine: np.ndarray,
    *,
    header: nib.Nifti1Header | None = None,
    path: Path | None = None,
    source: str = "image",
    require_signal: bool = True,
) -> Volume:
    """One checked 3-D float32 :class:`Volume` from an array and its voxel-to-world affine.

    The checks of :func:`load_volume`, for arrays that come from a file or from memory (the
    Python interface takes numpy arrays and nibabel images): a 4-D array with a single volume
    loses its last axis; anything else that is not one 3-D volume, complex or non-finite
    voxels, a volume without signal (with ``require_signal``) and an affine that is not a grid
    are refused with a :class:`TransMRSRError` whose message starts with ``source``.
    """
    raw = np.asanyarray(raw)
    if raw.ndim == 4 and raw.shape[3] == 1:
        raw = raw[..., 0]
    if raw.ndim == 4:
        raise TransMRSRError(
            f"{source}: is a 4-D series of {raw.shape[3]} volumes; give one 3-D volume "
            "(e.g. extract it with fslroi or nibabel)"
        )
    if raw.ndim != 3:
        raise TransMRSRError(
            f"{source}: has {raw.ndim} dimensions {raw.shape}; expected a 3-D volume"
        )
    if min(raw.shape) < 2:
        raise TransMRSRError(f"{source}: shape {raw.shape} is not a 3-D volume (an axis of size 1)")
    if np.iscomplexobj(raw):
        raise TransMRSRError(f"{source}: complex-valued data is not supported")
    try:
        data = np.asarray(raw, dtype=np.float32)
    except (TypeError, ValueError):
        raise TransMRSRError(f"{source}: voxels of type {raw.dtype} are not numbers") from None
    n_bad = int(data.size - np.count_nonzero(np.isfinite(data)))
    if n_bad:
        raise TransMRSRError(f"{source}: {n_bad} voxels are NaN or infinite")
    if require_signal and float(data.max()) == float(data.min()):
        raise TransMRSRError(f"{source}: every voxel has the value {float(data.min()):g}; no image")

    try:
        grid = np.asarray(affine, dtype=np.float64)
    except (TypeError, ValueError):
        raise TransMRSRError(f"{source}: the voxel-to-world affine is not a 4x4 matrix") from None
    check_affine(grid, source=source)
    log.debug(
        "read %s: shape %s, voxel %s mm, %s",
        source,
        data.shape,
        voxel_sizes(grid),
        "".join(nib.aff2axcodes(grid)),
    )
    return Volume(data=data, affine=grid, header=header, path=path)


def check_affine(affine: np.ndarray, *, source: str = "affine") -> None:
    """Refuse an affine that cannot describe a grid (non-finite, singular, zero spacing)."""
    if affine.shape != (4, 4) or not np.all(np.isfinite(affine)):
        raise TransMRSRError(f"{source}: the voxel-to-world affine is not a finite 4x4 matrix")
    if np.any(voxel_sizes(affine) <= 1e-6) or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise TransMRSRError(f"{source}: the voxel-to-world affine is singular (zero voxel size)")
