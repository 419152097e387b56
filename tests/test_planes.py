"""restore_along_planes: empty planes pass through, the others go through the network."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch
from torch import nn

from transmrsr.errors import TransMRSRError
from transmrsr.inference.planes import has_signal, restore_along_planes
from transmrsr.pairs import MIN_SIGNAL_FRACTION, SIGNAL_LEVEL


class PlusOne(nn.Module):
    """Adds 1 to every pixel and counts the planes it was given."""

    def __init__(self) -> None:
        super().__init__()
        self.seen = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen += x.shape[0]
        return x + 1.0


def head_volume(shape=(12, 10, 9), lo=3, hi=8) -> np.ndarray:
    """Signal (0.8) in array-axis-0 planes lo..hi-1 only, a little noise below the signal
    level elsewhere."""
    rng = np.random.default_rng(0)
    volume = rng.uniform(0.0, SIGNAL_LEVEL * 0.9, shape).astype(np.float32)
    volume[lo:hi, 2:-2, 2:-2] = 0.8
    return volume


def test_has_signal_is_the_training_criterion():
    planes = np.zeros((3, 10, 10), np.float32)
    planes[1].flat[: int(np.ceil(MIN_SIGNAL_FRACTION * 100))] = SIGNAL_LEVEL * 2
    planes[2].flat[: int(MIN_SIGNAL_FRACTION * 100) - 1] = SIGNAL_LEVEL * 2
    np.testing.assert_array_equal(has_signal(planes), [False, True, False])


def test_empty_planes_skip_the_network_and_pass_through():
    volume = head_volume()
    model = PlusOne()
    out = restore_along_planes(model, volume, thick_axis=2, slice_axes=[0], batch_size=3)
    assert model.seen == 5  # planes 3..7 of axis 0
    np.testing.assert_array_equal(out[3:8], volume[3:8] + 1.0)
    np.testing.assert_array_equal(out[:3], volume[:3])
    np.testing.assert_array_equal(out[8:], volume[8:])


def test_skip_empty_off_runs_every_plane():
    volume = head_volume()
    model = PlusOne()
    out = restore_along_planes(
        model, volume, thick_axis=2, slice_axes=[0], batch_size=4, skip_empty=False
    )
    assert model.seen == volume.shape[0]
    np.testing.assert_allclose(out, volume + 1.0)


def test_fused_axes_average_passed_and_restored_planes():
    volume = head_volume()
    model = PlusOne()
    out = restore_along_planes(model, volume, thick_axis=2, batch_size=5)
    # The signal block is in planes 3..7 along axis 0 and 2..7 along axis 1: a voxel in both
    # is restored twice (+1), in one of them once ((v + 1 + v) / 2), in neither not at all.
    assert model.seen == 5 + 6
    np.testing.assert_allclose(out[3:8, 2:8], volume[3:8, 2:8] + 1.0, rtol=1e-6)
    np.testing.assert_allclose(out[:3, 2:8], volume[:3, 2:8] + 0.5, rtol=1e-6)
    np.testing.assert_allclose(out[3:8, :2], volume[3:8, :2] + 0.5, rtol=1e-6)
    np.testing.assert_array_equal(out[:3, :2], volume[:3, :2])


@pytest.mark.parametrize("indices", [[0, 4, 9, 5], [11, 3]])
def test_picked_planes_keep_their_order(indices):
    volume = head_volume()
    out = restore_along_planes(
        PlusOne(), volume, thick_axis=2, slice_axes=[0], plane_indices=indices, batch_size=2
    )
    # Picked planes come as [n, thick, in-plane]: axis 2 as rows.
    expected = [volume[i].T + (1.0 if 3 <= i < 8 else 0.0) for i in indices]
    np.testing.assert_allclose(out, np.stack(expected))


class Recorder(nn.Module):
    """Doubles its input; notes the threads that ran it and whether they recorded gradients."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(2.0))
        self.lock = threading.Lock()
        self.threads: set[int] = set()
        self.grad_modes: set[bool] = set()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with self.lock:
            self.threads.add(threading.get_ident())
            self.grad_modes.add(torch.is_grad_enabled())
        time.sleep(0.02)  # long enough that both workers get planes
        return x * self.scale


def test_two_workers_share_the_planes_without_gradients_and_give_the_same_volume():
    volume = head_volume(lo=2, hi=10)
    threads = torch.get_num_threads()
    alone = restore_along_planes(Recorder(), volume, 2, slice_axes=[0], batch_size=1, workers=1)
    model = Recorder()
    shared = restore_along_planes(model, volume, 2, slice_axes=[0], batch_size=1, workers=2)
    np.testing.assert_array_equal(shared, alone)
    np.testing.assert_allclose(shared[2:10], volume[2:10] * 2.0, rtol=1e-6)
    assert len(model.threads) == 2 and threading.get_ident() not in model.threads
    assert model.grad_modes == {False}
    assert torch.get_num_threads() == threads


def test_zero_workers_are_refused():
    with pytest.raises(TransMRSRError, match="workers must be at least 1"):
        restore_along_planes(PlusOne(), head_volume(), 2, workers=0)
