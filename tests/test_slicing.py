"""Volume <-> planes: exact round trip for any shape and axes, padding, layout."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from transmrsr.errors import TransMRSRError
from transmrsr.slicing import from_planes, padded_size, planes_axes, to_planes


@settings(max_examples=60, deadline=None)
@given(
    shape=st.tuples(*[st.integers(2, 23)] * 3),
    axes=st.permutations([0, 1, 2]),
    multiple=st.sampled_from([1, 4, 8, 16]),
    minimum=st.integers(0, 32),
    seed=st.integers(0, 2**16),
)
def test_round_trip_is_identity(shape, axes, multiple, minimum, seed):
    volume = np.random.default_rng(seed).normal(size=shape).astype(np.float32)
    thick, slice_axis = axes[0], axes[1]
    planes, layout = to_planes(volume, thick, slice_axis, multiple=multiple, minimum=minimum)
    assert planes.shape[0] == shape[slice_axis]
    assert planes.shape[1] % multiple == 0 and planes.shape[2] % multiple == 0
    assert planes.shape[1] >= max(shape[thick], minimum)
    np.testing.assert_array_equal(from_planes(planes, layout), volume)


def test_thick_axis_is_the_row_axis_and_padding_is_centred():
    volume = np.zeros((5, 6, 7), np.float32)
    volume[1, 2, 3] = 1.0
    planes, layout = to_planes(volume, thick_axis=2, slice_axis=0, multiple=8)
    assert planes.shape == (5, 8, 8)
    assert layout.padding == ((0, 1), (1, 1))
    assert planes[1, 3, 2 + 1] == 1.0


def test_invalid_axes_and_shapes_are_refused():
    with pytest.raises(TransMRSRError, match="different axes"):
        to_planes(np.zeros((4, 4, 4)), 1, 1)
    with pytest.raises(TransMRSRError, match="3-D"):
        to_planes(np.zeros((4, 4)), 0, 1)
    planes, layout = to_planes(np.zeros((4, 5, 6)), 0, 1)
    with pytest.raises(TransMRSRError, match="expected"):
        from_planes(planes[:, :-1], layout)


def test_helpers():
    assert planes_axes(1) == (0, 2)
    assert padded_size(250, multiple=8, minimum=256) == 256
    assert padded_size(257, multiple=8) == 264
