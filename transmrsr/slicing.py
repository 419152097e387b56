"""Volumes to stacks of 2-D planes and back, exactly.

The networks restore 2-D images that contain the thick axis: in such a plane one image axis is
sharp and the other blurred. :func:`to_planes` cuts a volume into planes perpendicular to a
``slice_axis`` (which must not be the thick axis), arranges each plane so that the thick axis is
the image's first (row) axis, and zero-pads it, centred, to a size the network accepts.
:func:`from_planes` undoes all of that. The round trip is the identity for any shape and axes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from transmrsr.errors import TransMRSRError


@dataclass(frozen=True)
class PlaneLayout:
    """Everything needed to put a stack of planes back into its volume.

    Attributes:
        volume_shape: shape of the volume the planes came from.
        thick_axis: array axis that is the rows of every plane.
        slice_axis: array axis indexed by the stack.
        padding: ((top, bottom), (left, right)) zero padding added to each plane.
    """

    volume_shape: tuple[int, int, int]
    thick_axis: int
    slice_axis: int
    padding: tuple[tuple[int, int], tuple[int, int]]

    @property
    def in_plane_axis(self) -> int:
        """The array axis that is the columns of every plane."""
        return 3 - self.thick_axis - self.slice_axis

    @property
    def plane_shape(self) -> tuple[int, int]:
        """Shape of one padded plane."""
        (top, bottom), (left, right) = self.padding
        return (
            self.volume_shape[self.thick_axis] + top + bottom,
            self.volume_shape[self.in_plane_axis] + left + right,
        )


def planes_axes(thick_axis: int) -> tuple[int, int]:
    """The two slice axes whose planes contain ``thick_axis``."""
    return tuple(a for a in range(3) if a != thick_axis)  # type: ignore[return-value]


def padded_size(n: int, *, multiple: int = 1, minimum: int = 0) -> int:
    """Smallest size >= max(n, minimum) that is a multiple of ``multiple``."""
    size = max(n, minimum)
    return -(-size // multiple) * multiple


def to_planes(
    volume: np.ndarray,
    thick_axis: int,
    slice_axis: int,
    *,
    multiple: int = 1,
    minimum: int = 0,
) -> tuple[np.ndarray, PlaneLayout]:
    """Cut a volume into zero-padded 2-D planes that contain the thick axis.

    Args:
        volume: a 3-D array.
        thick_axis: array axis that becomes the rows of each plane.
        slice_axis: array axis the planes are stacked along (not ``thick_axis``).
        multiple: pad each plane dimension to a multiple of this.
        minimum: pad each plane dimension to at least this.

    Returns:
        ``(planes, layout)`` with ``planes`` of shape (n_planes, rows, columns), contiguous.
    """
    if volume.ndim != 3:
        raise TransMRSRError(f"expected a 3-D volume, got shape {volume.shape}")
    if {thick_axis, slice_axis} - {0, 1, 2} or thick_axis == slice_axis:
        raise TransMRSRError(
            f"thick axis {thick_axis} and slice axis {slice_axis} must be two different axes 0-2"
        )
    in_plane = 3 - thick_axis - slice_axis
    planes = np.transpose(volume, (slice_axis, thick_axis, in_plane))
    pads = []
    for n in planes.shape[1:]:
        extra = padded_size(n, multiple=multiple, minimum=minimum) - n
        pads.append((extra // 2, extra - extra // 2))
    padded = np.pad(planes, ((0, 0), pads[0], pads[1]))
    layout = PlaneLayout(
        tuple(int(s) for s in volume.shape), thick_axis, slice_axis, (pads[0], pads[1])
    )  # type: ignore[arg-type]
    return np.ascontiguousarray(padded), layout


def from_planes(planes: np.ndarray, layout: PlaneLayout) -> np.ndarray:
    """Crop the padding and put the planes back into a volume of the original shape."""
    expected = (layout.volume_shape[layout.slice_axis], *layout.plane_shape)
    if tuple(planes.shape) != expected:
        raise TransMRSRError(f"planes have shape {planes.shape}, expected {expected}")
    (top, bottom), (left, right) = layout.padding
    cropped = planes[:, top : planes.shape[1] - bottom, left : planes.shape[2] - right]
    order = (layout.slice_axis, layout.thick_axis, layout.in_plane_axis)
    return np.ascontiguousarray(np.transpose(cropped, np.argsort(order)))
