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
