"""The slab-stripe index: how much of a volume's detail repeats with the thick-slice period.

A restoration of a thick-slice scan works slab by slab along the thick axis: every output
voxel sits at some position inside the slab of the input slice it came from. If the network's
correction depends on that position in the same way all over the head, the output carries a
pattern that repeats once per slab: horizontal "venetian blind" stripes in sagittal and
coronal views, which a reader sees at once even when PSNR barely moves. Simulated benchmarks
hide them when their slices follow exactly the profile the model learnt; real scans show them.

The index measures that pattern and nothing else:

1. the detail along the thick axis: the volume minus its running mean over one slab period
   (a box exactly one period wide removes every pattern of that period from the mean, so the
   residual keeps all of it);
2. for every line along the thick axis inside the head, the residual averaged over all slabs
   at each position inside the slab (phase): anatomy differs from slab to slab and averages
   towards zero, a slab-locked pattern survives;
3. the spread of those phase averages across phases, root-mean-square over the head's lines,
   divided by the head's mean intensity.

It is a relative amplitude: a pattern ``A * cos(2 pi z / period)`` added to a smooth head of
mean ``m`` reads about ``A / (sqrt(2) m)``. Anatomy leaves a floor (the phase averages of a
few dozen slabs are not exactly zero), so the index is read against that of cubic
interpolation of the same input: cubic interpolation has no learnt slab-locked correction,
and a restoration whose index is well above it shows stripes cubic does not.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from transmrsr.errors import TransMRSRError

#: The restore log warns when the restoration's index exceeds cubic's by this ratio.
WARN_RATIO = 1.3
#: Lines along the thick axis count when they cross the head for this many slabs at least.
MIN_SLABS = 3
#: At most this many lines along the thick axis are measured (a regular subset beyond it).
MAX_LINES = 40_000


def head_mask(volume: np.ndarray, fraction: float = 0.1) -> np.ndarray:
    """Voxels above ``fraction`` of the 99th percentile, holes filled: a rough head mask."""
    level = fraction * float(np.percentile(volume, 99))
    mask = volume > level
    return ndimage.binary_fill_holes(mask) if mask.any() else mask


def stripe_index(
    volume: np.ndarray,
    thick_axis: int,
    period: float,
    *,
    mask: np.ndarray | None = None,
) -> float:
    """Slab-locked detail of ``volume`` along ``thick_axis``, relative to its mean in the mask.

    Args:
        volume: 3-D array on the restored (fine) grid.
        thick_axis: array axis of the thick slices.
        period: slab period in voxels of ``volume`` along that axis (the restoration factor:
            input slice spacing / output spacing), at least 2.
        mask: voxels of the head (default: :func:`head_mask`). Lines along the thick axis
            count where they are inside the mask.

    Returns:
        The index (0 for a volume with no slab-locked pattern beyond the anatomical floor).
    """
    volume = np.asarray(volume)
    if volume.ndim != 3:
        raise TransMRSRError(f"the stripe index needs a 3-D volume, got shape {volume.shape}")
    if not 0 <= thick_axis < 3:
        raise TransMRSRError(f"thick axis must be 0, 1 or 2, got {thick_axis}")
    if not np.isfinite(period) or period < 2:
        raise TransMRSRError(f"the slab period must be at least 2 voxels, got {period}")
    n = volume.shape[thick_axis]
    if n < 2 * period:
        raise TransMRSRError(
            f"{n} voxels along the thick axis hold fewer than two slabs of {period:g}"
        )
    if mask is None:
        mask = head_mask(volume)
    mask = np.asarray(mask, bool)
    if mask.shape != volume.shape:
        raise TransMRSRError(f"mask shape {mask.shape} differs from the volume's {volume.shape}")
    if not mask.any():
        raise TransMRSRError("the mask is empty")
    # Lines along the thick axis, thinned to at most MAX_LINES (stripes span the head, so a
    # regular subset of lines measures them as well; a large volume then costs little).
    volume, mask = np.moveaxis(volume, thick_axis, -1), np.moveaxis(mask, thick_axis, -1)
    stride = max(1, math.ceil(math.sqrt(volume.shape[0] * volume.shape[1] / MAX_LINES)))
    volume = np.asarray(volume[::stride, ::stride], np.float32)
    mask = mask[::stride, ::stride]
    thick_axis = 2
    # Running mean of the head alone (normalised convolution): the step from head to
    # background is no detail.
    weight = _running_mean(mask.astype(np.float32), thick_axis, period)
    local = _running_mean(volume * mask, thick_axis, period) / np.maximum(weight, 1e-6)
    detail = volume - local
    inside = mask
    bins = max(2, round(period))
    phase = np.floor((np.arange(n) % period) / period * bins).astype(int)
    # Per line and phase: mean of the detail over the in-mask voxels of that phase.
    sums = np.zeros((*detail.shape[:2], bins))
    detail *= inside
    counts = np.zeros_like(sums)
    for b in range(bins):
        at = phase == b
        sums[..., b] = detail[..., at].sum(axis=-1, dtype=np.float64)
        counts[..., b] = inside[..., at].sum(axis=-1)
    # Lines with at least MIN_SLABS slabs in the head at every phase.
    lines = (counts >= MIN_SLABS).all(axis=-1)
    if not lines.any():
        raise TransMRSRError(f"no line of the head spans {MIN_SLABS} slabs along the thick axis")
    means = sums[lines] / counts[lines]
    spread = means.var(axis=-1)
    weights = counts[lines].sum(axis=-1)
    rms = float(np.sqrt(np.average(spread, weights=weights)))
    level = float(volume[mask].mean(dtype=np.float64))
    if level <= 0:
        raise TransMRSRError("the head's mean intensity is not positive")
    return rms / level


def _running_mean(volume: np.ndarray, axis: int, period: float) -> np.ndarray:
    """Mean over a window of exactly ``period`` voxels (fractional ends weighted)."""
    whole = int(np.floor(period))
    frac = period - whole
    if whole % 2 == 0:  # an odd box plus two fractional end weights keeps it centred
        whole -= 1
        frac += 1.0
    kernel = np.ones(whole)
    if frac > 1e-9:
        kernel = np.concatenate([[frac / 2], kernel, [frac / 2]])
    kernel /= kernel.sum()
    return ndimage.convolve1d(volume, kernel.astype(volume.dtype), axis=axis, mode="reflect")


def stripe_ratio(restored: float, cubic: float) -> float:
    """Restoration's index over cubic's (``inf`` when cubic's is zero and ours is not)."""
    if cubic > 0:
        return restored / cubic
    return float("inf") if restored > 0 else 1.0
