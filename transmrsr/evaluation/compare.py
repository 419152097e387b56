"""Compare a restored volume with its reference: grids, masks, and every metric in one place.

The ``evaluate`` command, the demo, training validation on whole volumes and the benchmark all
call :func:`compare_volumes`, so a number means the same thing wherever it is printed.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

import nibabel as nib
import numpy as np

from transmrsr.errors import TransMRSRError
from transmrsr.evaluation.metrics import auto_brain_mask, masked_volume_metrics, paper_protocol
from transmrsr.geometry import ANATOMICAL_AXES, grid_overlap, resolve_axis
from transmrsr.io import Volume
from transmrsr.stripes import head_mask, stripe_index

log = logging.getLogger(__name__)

#: Preferred slicing directions for the paper protocol, most preferred first. The paper slices
#: T1 (thick along SI) into coronal planes and T2 (thick along LR) into axial planes: both are
#: "the first of SI, AP, LR that is not the thick axis".
SLICE_PREFERENCE: tuple[str, ...] = ("SI", "AP", "LR")


def default_slice_axis(affine: np.ndarray, thick_axis: int | None) -> int:
    """Array axis to slice along for the paper protocol (planes that contain the thick axis)."""
    codes = nib.aff2axcodes(affine)
    for name in SLICE_PREFERENCE:
        axis = next(i for i, c in enumerate(codes) if c in ANATOMICAL_AXES[name])
        if axis != thick_axis:
            return axis
    raise AssertionError("unreachable: three axes, at most one excluded")


@dataclass(frozen=True)
class Comparison:
    """Every number of one prediction-reference comparison.

    The paper-protocol numbers are per 2-D slice (padded to 256, 8-bit scale, empty slices
    skipped) averaged over slices; the masked numbers are over the brain-mask voxels of the
    whole volume.
    """

    psnr_paper: float
    ssim_paper: float
    n_slices: int
    psnr_masked: float
    ssim_masked: float
    mae_masked: float
    nrmse_masked: float
    mask_voxels: int
    mask_source: str
    slice_axis: int
    voxels_compared: int
    grid_shift: tuple[int, int, int]
    #: slab-stripe indices (:mod:`transmrsr.stripes`) of the prediction, the reference and
    #: cubic interpolation of the thick input, in the reference's head mask (``None``: not
    #: measured: no slab period given, or too few slabs)
    stripe_index: float | None = None
    stripe_index_reference: float | None = None
    stripe_index_cubic: float | None = None

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def compare_volumes(
    pred: Volume,
    ref: Volume,
    *,
    mask: Volume | None = None,
    thick_axis: str | int | None = None,
    slice_axis: str | int | None = None,
    period: float | None = None,
    cubic: Volume | None = None,
) -> Comparison:
    """Score ``pred`` against ``ref`` on their common grid.

    The grids must be equal or differ by a whole-voxel shift (a cropped or extended copy of the
    same grid, as ``upsample`` produces when the slice count is not a multiple of the factor);
    then the overlapping voxels are compared and the shift is reported. Anything else (another
    spacing, orientation or a sub-voxel offset) is refused: resample first with
    ``transmrsr upsample --like``.

    Args:
        pred: the restored volume.
        ref: the high-resolution reference.
        mask: brain mask on the reference grid; without one, :func:`auto_brain_mask` of the
            reference is used.
        thick_axis: the restored axis (on ``ref``), which selects the paper-protocol slicing.
        slice_axis: slice along this axis of ``ref`` instead.
        period: the slab period along ``thick_axis`` in voxels (the restoration factor): the
            slab-stripe indices of prediction and reference are measured too.
        cubic: cubic interpolation of the thick input on the reference grid, whose index is
            measured beside them (the level a restoration's index is read against).
    """
    overlap = grid_overlap(pred.shape, pred.affine, ref.shape, ref.affine)
    if overlap is None:
        raise TransMRSRError(
            "prediction and reference are on different grids (spacing, orientation or a "
            "sub-voxel offset); resample first, e.g. transmrsr upsample ... --like REFERENCE"
        )
    p = pred.data[overlap.a_slices]
    r = ref.data[overlap.b_slices]
    if p.shape != ref.shape or p.shape != pred.shape:
        log.info(
            "prediction %s and reference %s share %s voxels (offset %s): comparing those",
            "x".join(map(str, pred.shape)),
            "x".join(map(str, ref.shape)),
            "x".join(map(str, p.shape)),
            overlap.shift,
        )
    if mask is None:
        m = auto_brain_mask(r)
        source = "automatic (Otsu foreground of the reference)"
    else:
        if mask.shape != ref.shape or not np.allclose(mask.affine, ref.affine, atol=1e-3):
            raise TransMRSRError("the mask must be on the reference grid (same shape and affine)")
        m = mask.data[overlap.b_slices] > 0.5
        source = str(mask.path) if mask.path else "given"
    thick = None if thick_axis is None else resolve_axis(thick_axis, ref.affine)
    if slice_axis is None:
        axis = default_slice_axis(ref.affine, thick)
    else:
        axis = resolve_axis(slice_axis, ref.affine)
    if thick is not None and axis == thick:
        raise TransMRSRError("the slice axis must differ from the thick axis")
    slices = paper_protocol(p, r, slice_axis=axis)
    volume = masked_volume_metrics(p, r, m)
    stripes: dict[str, float | None] = {}
    if period is not None:
        if thick is None:
            raise TransMRSRError("the slab-stripe index needs the thick axis (--thick-axis)")
        head = head_mask(r)
        arrays = {"stripe_index": p, "stripe_index_reference": r}
        if cubic is not None:
            if cubic.shape != ref.shape or not np.allclose(cubic.affine, ref.affine, atol=1e-3):
                raise TransMRSRError("the interpolated input must be on the reference grid")
            arrays["stripe_index_cubic"] = cubic.data[overlap.b_slices]
        for name, array in arrays.items():
            stripes[name] = stripe_index(array, thick, period, mask=head)
    return Comparison(
        psnr_paper=float(slices.psnr),
        ssim_paper=float(slices.ssim),
        n_slices=int(slices.n_slices),
        psnr_masked=float(volume.psnr),
        ssim_masked=float(volume.ssim),
        mae_masked=float(volume.mae),
        nrmse_masked=float(volume.nrmse),
        mask_voxels=int(np.count_nonzero(m)),
        mask_source=source,
        slice_axis=axis,
        voxels_compared=int(p.size),
        grid_shift=overlap.shift,
        **stripes,
    )
