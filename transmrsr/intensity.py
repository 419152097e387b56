"""Intensity normalisation for the network, and its exact inverse.

MRI intensities have no fixed scale: a T1 may range 0-125 (FreeSurfer), 0-4300 (raw IXI) or
0-1 (a template). The networks see every volume mapped so that its background is about 0 and
its bright tissue about 1, with robust percentiles rather than min/max so that a few hot voxels
(vessels, artefacts) do not squash the brain into a narrow range. The mapping is a pure affine
map of intensities with no clipping, so :meth:`IntensityScaler.inverse` returns outputs to the
input's intensity range exactly.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from transmrsr.errors import TransMRSRError

#: Default percentiles: the low one over all voxels (the background level, 0 for skull-stripped
#: or masked volumes), the high one over voxels above that level (bright tissue, not vessels).
LOW_PERCENTILE = 0.5
HIGH_PERCENTILE = 99.5


@dataclass(frozen=True)
class IntensityScaler:
    """``normalised = (x - low) / (high - low)``; ``inverse`` undoes it exactly."""

    low: float
    high: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.low) and math.isfinite(self.high)) or self.high <= self.low:
            raise TransMRSRError(
                f"intensity range [{self.low:g}, {self.high:g}] is empty: "
                "the volume has no contrast"
            )

    @classmethod
    def fit(
        cls,
        data: np.ndarray,
        *,
        low_percentile: float = LOW_PERCENTILE,
        high_percentile: float = HIGH_PERCENTILE,
    ) -> IntensityScaler:
        """Robust range of a volume from its intensity percentiles.

        The high percentile is taken over the voxels above the low one, so that it measures
        tissue rather than being dragged down by the large empty background of a head scan.
        """
        if not (0.0 <= low_percentile < high_percentile <= 100.0):
            raise TransMRSRError(
                f"percentiles must satisfy 0 <= low < high <= 100, got {low_percentile}, "
                f"{high_percentile}"
            )
        values = np.asarray(data, dtype=np.float32).ravel()
        # Percentiles of a strided subsample: identical in practice, several times faster.
        step = max(1, values.size // 2_000_000)
        sample = values[::step]
        low = float(np.percentile(sample, low_percentile))
        foreground = sample[sample > low]
        if foreground.size == 0:
            raise TransMRSRError("the volume has no voxel above its background level")
        high = float(np.percentile(foreground, high_percentile))
        if high <= low:
            high = float(foreground.max())
        return cls(low=low, high=high)

    def with_gain(self, gain: float) -> IntensityScaler:
        """The same map followed by a multiplication by ``gain`` (kept exactly invertible).

        Where a scan's tissue lands in the network's range depends on what sets its robust
        maximum (skull fat, vessels, the scanner); this lets a benchmark move that level on
        purpose and measure how much a model cares.
        """
        if not (math.isfinite(gain) and gain > 0):
            raise TransMRSRError(f"intensity gain must be a positive finite number, got {gain}")
        return IntensityScaler(low=self.low, high=self.low + (self.high - self.low) / gain)

    def __call__(self, data: np.ndarray) -> np.ndarray:
        """Map intensities to the network's scale (float32)."""
        scale = np.float32(1.0 / (self.high - self.low))
        return (np.asarray(data, dtype=np.float32) - np.float32(self.low)) * scale

    def inverse(self, data: np.ndarray) -> np.ndarray:
        """Map network outputs back to the input's intensities (float32)."""
        return np.asarray(data, dtype=np.float32) * np.float32(self.high - self.low) + np.float32(
            self.low
        )

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


#: Voxels above this fraction of a volume's 99th percentile are tissue for
#: :func:`in_plane_noise` (the background of a head scan is well below it).
TISSUE_LEVEL = 0.1
#: Median absolute deviation of a standard normal variable.
MAD_PER_SIGMA = 0.6745


def in_plane_noise(data: np.ndarray, thick_axis: int) -> float:
    """The white noise of a thick-slice scan, as a fraction of its median tissue intensity.

    Measured within the slices, where the scan is sharp: each plane perpendicular to
    ``thick_axis`` is cut into 2x2 blocks, and the median absolute value of their diagonal
    (checkerboard) Haar detail over tissue, divided by :data:`MAD_PER_SIGMA`, estimates the
    noise's sigma (Donoho and Johnstone's estimator in 2-D). Fine anatomy adds to it, so it errs
    high on sharp images. Single acquisitions read 1.4-4.9 % (thick slices of every real volume
    we have, 3 T research T1s lowest); the MNI152 template, an average of 152 heads, reads 0.5-0.6 %
    and the Colin27 average of 27 scans 0.8-1.0 % (docs/experiments.md, 2026-12-07).

    Raises:
        TransMRSRError: not 3-D, non-finite values, or no plane with tissue.
    """
    v = np.asarray(data)
    if v.ndim != 3:
        raise TransMRSRError(f"in-plane noise needs a 3-D volume, got shape {v.shape}")
    if not np.isfinite(v).all():
        raise TransMRSRError("the volume contains NaN or infinite values")
    top = float(np.percentile(v, 99))
    if top <= 0:
        raise TransMRSRError("the volume holds no tissue to measure its noise on")
    level = TISSUE_LEVEL * top
    details, tissue = [], []
    for index in range(v.shape[thick_axis]):
        plane = np.take(v, index, axis=thick_axis).astype(np.float64)
        rows, cols = plane.shape[0] // 2 * 2, plane.shape[1] // 2 * 2
        blocks = (
            plane[0:rows:2, 0:cols:2],
            plane[1:rows:2, 0:cols:2],
            plane[0:rows:2, 1:cols:2],
            plane[1:rows:2, 1:cols:2],
        )
        inside = np.logical_and.reduce([b > level for b in blocks])
        if not inside.any():
            continue
        details.append(((blocks[0] - blocks[1] - blocks[2] + blocks[3]) / 2)[inside])
        tissue.append(plane[plane > level])
    if not details:
        raise TransMRSRError("the volume holds no tissue to measure its noise on")
    sigma = float(np.median(np.abs(np.concatenate(details)))) / MAD_PER_SIGMA
    return sigma / float(np.median(np.concatenate(tissue)))
