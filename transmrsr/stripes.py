"""The slab-stripe index: how much more of a volume's detail repeats with the slab period than
with any other period.

A restoration of a thick-slice scan works slab by slab along the thick axis: every output
voxel sits at some position inside the slab of the input slice it came from. If the network's
correction depends on that position in the same way over a region of the head, the output
carries a pattern that repeats once per slab: horizontal "venetian blind" stripes in sagittal
and coronal views, which a reader sees at once even when PSNR barely moves. Simulated
benchmarks hide them when their slices follow exactly the profile the model learnt; real scans
show them.

The pattern's amplitude at a period ``p`` (:func:`slab_pattern_amplitude`):

1. the detail along the thick axis: the volume minus its running mean over one slab period
   (a box exactly one slab wide removes every pattern of that period from the mean, so the
   residual keeps all of it);
2. the detail folded at period ``p`` (its mean at each position inside a period) over all
   periods a line crosses and over the lines of an in-plane block of :data:`BLOCK` x
   :data:`BLOCK` lines: a stripe is seen because it runs across the head, so it survives the
   block average, while most anatomy averages towards zero;
3. the spread of those folded means across positions, root-mean-square over the blocks,
   divided by the head's mean intensity. A pattern ``A cos(2 pi z / p)`` on a head of mean
   ``m`` reads about ``A / (sqrt(2) m)``.

Anatomy does not average to zero completely (the skull's top, the tentorium and the corpus
callosum run across many lines), and a restoration that brings back fine detail raises that
floor as much as the truth has it: measured against cubic interpolation, the true volume of a
simulated x7 scan reads ten times cubic's amplitude. The index therefore compares the amplitude
at the slab period with the amplitude of the same detail folded at the two neighbouring
periods ``p / RHO`` and ``p * RHO`` (their geometric mean): anatomy folds about as strongly at
any period near ``p``, a slab-locked pattern only at ``p``. **The index is that ratio**: about 1
for a volume without stripes (the true volume of a simulated scan reads 1.0-1.1), and above 1
by as much as the slabs show. It is read against the index of cubic interpolation of the same
input, which has no learnt slab-locked correction.
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
#: In-plane block (in measured lines) over which folded detail is averaged.
BLOCK = 16
#: The neighbouring periods that measure the anatomical floor: ``p / RHO`` and ``p * RHO``.
RHO = 1.3
#: The shortest slab period (in voxels) that stripes are measured and removed at.
MIN_PERIOD = 2.0
#: Floor of the baseline amplitude (relative to the head's mean): volumes without any detail
#: (smooth phantoms) read their pattern against this instead of against zero.
MIN_BASELINE = 1e-4


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
    """Slab-locked detail of ``volume`` at the slab period over that at neighbouring periods.

    Args:
        volume: 3-D array on the restored (fine) grid.
        thick_axis: array axis of the thick slices.
        period: slab period in voxels of ``volume`` along that axis (the restoration factor:
            input slice spacing / output spacing), at least 2.
        mask: voxels of the head (default: :func:`head_mask`).

    Returns:
        The index: about 1 without slab stripes, more with them.
    """
    amplitudes = slab_pattern_amplitude(
        volume, thick_axis, period, folds=(period, period / RHO, period * RHO), mask=mask
    )
    baseline = max(math.sqrt(amplitudes[1] * amplitudes[2]), MIN_BASELINE)
    return amplitudes[0] / baseline


def slab_pattern_amplitude(
    volume: np.ndarray,
    thick_axis: int,
    period: float,
    *,
    folds: tuple[float, ...] | None = None,
    mask: np.ndarray | None = None,
) -> tuple[float, ...]:
    """Amplitude of the detail (high-passed at ``period``) folded at each of ``folds``.

    Relative to the head's mean intensity (see the module's description); ``folds`` defaults
    to ``(period,)``.
    """
    volume = np.asarray(volume)
    _check_slabs(volume, thick_axis, period, "the stripe index needs")
    folds = (period,) if folds is None else folds
    n = volume.shape[thick_axis]
    if n < 2 * max(folds):
        raise TransMRSRError(
            f"{n} voxels along the thick axis hold fewer than two slabs of {max(folds):g}"
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
    level = float(volume[mask].mean(dtype=np.float64)) if mask.any() else 0.0
    if level <= 0:
        raise TransMRSRError("the head's mean intensity is not positive")
    # Running mean of the head alone (normalised convolution): the step from head to
    # background is no detail.
    weight = _running_mean(mask.astype(np.float32), 2, period)
    local = _running_mean(volume * mask, 2, period) / np.maximum(weight, 1e-6)
    detail = (volume - local) * mask
    return tuple(_folded_amplitude(detail, mask, fold) / level for fold in folds)


def _check_slabs(volume: np.ndarray, thick_axis: int, period: float, what: str) -> None:
    """Refuse what neither the index nor the pattern can be measured on."""
    if volume.ndim != 3:
        raise TransMRSRError(f"{what} a 3-D volume, got shape {volume.shape}")
    if not 0 <= thick_axis < 3:
        raise TransMRSRError(f"thick axis must be 0, 1 or 2, got {thick_axis}")
    if not np.isfinite(period) or period < MIN_PERIOD:
        raise TransMRSRError(f"the slab period must be at least 2 voxels, got {period}")


def _folded_amplitude(detail: np.ndarray, mask: np.ndarray, fold: float) -> float:
    """RMS over in-plane blocks of the spread of the block's detail folded at ``fold``."""
    n = detail.shape[-1]
    bins = max(2, round(fold))
    phase = np.floor((np.arange(n) % fold) / fold * bins).astype(int)
    sums = np.zeros((*detail.shape[:2], bins))
    counts = np.zeros_like(sums)
    for b in range(bins):
        at = phase == b
        sums[..., b] = detail[..., at].sum(axis=-1, dtype=np.float64)
        counts[..., b] = mask[..., at].sum(axis=-1)
    # Lines with at least MIN_SLABS periods in the head at every position count.
    lines = (counts >= MIN_SLABS).all(axis=-1)
    if not lines.any():
        raise TransMRSRError(f"no line of the head spans {MIN_SLABS} slabs along the thick axis")
    sums *= lines[..., None]
    counts *= lines[..., None]
    # Sum over blocks of BLOCK x BLOCK lines (the edge blocks are smaller).
    pad = [(0, -s % BLOCK) for s in detail.shape[:2]] + [(0, 0)]
    rows, cols = (s + p[1] for s, p in zip(detail.shape[:2], pad, strict=False))
    shape = (rows // BLOCK, BLOCK, cols // BLOCK, BLOCK, bins)
    block_sums = np.pad(sums, pad).reshape(shape).sum(axis=(1, 3))
    block_counts = np.pad(counts, pad).reshape(shape).sum(axis=(1, 3))
    full = (block_counts > 0).all(axis=-1)
    means = block_sums[full] / block_counts[full]
    weights = block_counts[full].sum(axis=-1)
    return float(np.sqrt(np.average(means.var(axis=-1), weights=weights)))


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


#: In-plane width (Gaussian sigma, voxels) over which :func:`slab_pattern` estimates the
#: slab-locked pattern: a stripe runs across the head, anatomy changes within a few voxels.
PATTERN_SIGMA = 8.0
#: Its extent along the thick axis, in slabs (Gaussian sigma): stripes come and go along the
#: head as the tissue the network corrects changes.
PATTERN_SLABS = 2.0
#: Lines are pooled in blocks of this many a side before the pattern is smoothed.
POOL = 4


def slab_pattern(
    volume: np.ndarray,
    thick_axis: int,
    period: float,
    *,
    mask: np.ndarray | None = None,
    sigma: float = PATTERN_SIGMA,
    slabs: float = PATTERN_SLABS,
) -> np.ndarray:
    """The part of ``volume``'s detail that repeats once per slab, estimated locally.

    The detail (the volume minus its running mean over one slab, as :func:`stripe_index`
    takes it) is sorted by its position inside the slab; at each voxel the pattern is the mean
    detail of the voxels around it (Gaussian weights, ``sigma`` voxels in-plane and ``slabs``
    slabs along the thick axis) that sit at the same position inside their slabs, minus the
    mean over positions. Anatomy averages out of that mean, a stripe does not.

    Returns:
        An array of ``volume``'s shape, zero outside ``mask`` (default :func:`head_mask`;
        all zero when the mask is empty).
    """
    volume = np.asarray(volume, np.float32)
    _check_slabs(volume, thick_axis, period, "slab patterns need")
    mask = head_mask(volume) if mask is None else np.asarray(mask, bool)
    if mask.shape != volume.shape:
        raise TransMRSRError(f"mask shape {mask.shape} differs from the volume's {volume.shape}")
    if not mask.any():
        return np.zeros_like(volume)
    volume, mask = np.moveaxis(volume, thick_axis, -1), np.moveaxis(mask, thick_axis, -1)
    weight = mask.astype(np.float32)
    detail = _running_mean(volume * weight, 2, period)
    detail /= np.maximum(_running_mean(weight, 2, period), 1e-6)
    np.subtract(volume, detail, out=detail)
    detail *= weight
    # Each voxel along a line sits in slab ``j`` at position ``b`` inside it: sum the detail
    # (and the mask) of each (position, slab) over blocks of POOL x POOL lines (the pattern
    # is smooth in-plane, and the filters then cost a sixteenth), then smooth over
    # neighbouring blocks and slabs.
    n = volume.shape[-1]
    bins = max(2, round(period))
    z = np.arange(n)
    slab = np.floor(z / period).astype(int)
    phase = np.minimum(np.floor((z - slab * period) / period * bins).astype(int), bins - 1)
    rows, cols = (-(-size // POOL) for size in volume.shape[:2])
    pad = ((0, rows * POOL - volume.shape[0]), (0, cols * POOL - volume.shape[1]))

    def pooled(image: np.ndarray) -> np.ndarray:
        return np.pad(image, pad).reshape(rows, POOL, cols, POOL).sum(axis=(1, 3))

    sums = np.zeros((bins, rows, cols, slab[-1] + 1), np.float32)
    counts = np.zeros_like(sums)
    for index in range(n):
        sums[phase[index], ..., slab[index]] += pooled(detail[..., index])
        counts[phase[index], ..., slab[index]] += pooled(weight[..., index])
    del detail
    width = (0, sigma / POOL, sigma / POOL, slabs)
    sums = ndimage.gaussian_filter(sums, width, mode="constant")
    counts = ndimage.gaussian_filter(counts, width, mode="constant")
    floor = 1e-3 * float(counts.max(initial=0.0))
    # Zero mean over positions (weighted by where each was seen), so that only what repeats
    # is removed, never the local level.
    centre = sums.sum(axis=0) / np.maximum(counts.sum(axis=0), floor)
    means = np.where(counts > floor, sums / np.maximum(counts, floor), centre[None]) - centre
    # Back onto every line (each block's value on its POOL x POOL lines) and voxel.
    lines = (np.arange(volume.shape[0]) // POOL)[:, None], (np.arange(volume.shape[1]) // POOL)
    pattern = np.empty_like(volume)
    for index in range(n):
        pattern[..., index] = means[phase[index]][..., slab[index]][lines]
    pattern *= weight
    return np.moveaxis(pattern, -1, thick_axis)
