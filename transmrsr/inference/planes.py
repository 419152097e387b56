"""Run a 2-D network over the planes of a volume that contain the thick axis, in batches.

The network sees each plane with the thick axis as rows, as in training. With two slice axes
(both plane orientations that contain the thick axis) the two restorations are averaged, as
SMORE/ECLARE fuse their orthogonal passes. Memory is bounded by the batch: only ``batch_size``
planes are on the device at a time, and results are written straight into the output array.

Planes with less signal than any training plane (background outside the head, the padding of
a large field of view) are passed through as interpolated: the network never learnt them, and
on a 2-core CPU without bf16 units each plane costs about 0.5 s.

On a CPU the batches are shared among Python threads (:func:`~transmrsr.devices.map_in_threads`),
each running the network with its share of the intra-op threads. The forward pass keeps no
state, so the threads only share the read-only weights.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from transmrsr.devices import map_in_threads, resolve_workers
from transmrsr.errors import TransMRSRError
from transmrsr.pairs import MIN_SIGNAL_FRACTION, SIGNAL_LEVEL
from transmrsr.slicing import planes_axes


def has_signal(planes: np.ndarray) -> np.ndarray:
    """Which of ``planes`` ``[n, rows, cols]`` (normalised) hold enough signal to restore: the
    criterion that drops empty planes from training."""
    above = planes > SIGNAL_LEVEL
    return above.reshape(len(planes), -1).mean(axis=1) >= MIN_SIGNAL_FRACTION


def _forward_planes(
    model: nn.Module,
    stack: np.ndarray,
    guide: np.ndarray | None,
    device: torch.device,
    bf16: bool,
    chunk: np.ndarray,
) -> np.ndarray:
    """The network on planes ``stack[chunk]`` (with the guide's same planes as a second
    channel); grad and autocast modes are per thread, so they are set here, in the thread
    that runs it."""
    planes = [stack[chunk]] + ([] if guide is None else [guide[chunk]])
    x = torch.from_numpy(np.ascontiguousarray(np.stack(planes, axis=1), np.float32))
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        y = model(x.to(device))
    return y[:, 0].float().cpu().numpy()


def restore_along_planes(
    model: nn.Module,
    volume: np.ndarray,
    thick_axis: int,
    *,
    slice_axes: Sequence[int] | None = None,
    plane_indices: Sequence[int] | None = None,
    batch_size: int = 8,
    device: torch.device | str = "cpu",
    bf16: bool = False,
    progress: bool = False,
    skip_empty: bool = True,
    workers: int | None = None,
    guide: np.ndarray | None = None,
) -> np.ndarray:
    """The network applied to every plane of ``volume`` (already interpolated, normalised).

    Args:
        model: maps ``[B, 1, rows, cols]`` to the same shape (rows along the thick axis).
        volume: 3-D float array on the output grid.
        thick_axis: the array axis that was acquired thick.
        slice_axes: which plane stacks to run (default: both that contain the thick axis);
            their outputs are averaged.
        plane_indices: restore only these planes of the (single) slice axis and return them
            as ``[n, rows, cols]`` (used by validation to score a subset).
        batch_size: planes per forward pass.
        bf16: autocast to bfloat16 (GPUs, CPUs with AMX or AVX512-BF16: see
            :mod:`transmrsr.devices`).
        skip_empty: planes without signal (:func:`has_signal`) are returned as they are given
            instead of through the network.
        workers: threads that share the batches (default
            :func:`~transmrsr.devices.default_workers`); the result does not depend on it
            beyond float rounding.
        guide: for a guided network, another contrast of the same head on the same grid
            (registered, normalised): each plane's twin enters as the second channel.
    """
    if volume.ndim != 3:
        raise TransMRSRError(f"expected a 3-D volume, got shape {volume.shape}")
    if guide is not None and guide.shape != volume.shape:
        raise TransMRSRError(f"guide {guide.shape} and volume {volume.shape} differ in shape")
    axes = list(slice_axes) if slice_axes is not None else list(planes_axes(thick_axis))
    if not axes or any(a == thick_axis or a not in (0, 1, 2) for a in axes):
        raise TransMRSRError(f"slice axes {axes} must be array axes other than {thick_axis}")
    if batch_size < 1:
        raise TransMRSRError(f"batch size must be at least 1, got {batch_size}")
    device = torch.device(device)
    workers = resolve_workers(workers, device)
    was_training = model.training
    model.eval()
    if plane_indices is not None and len(axes) != 1:
        raise TransMRSRError("plane_indices needs exactly one slice axis")
    total = sum(volume.shape[a] for a in axes) if plane_indices is None else len(plane_indices)
    bar = tqdm(total=total, unit="plane", disable=not progress, leave=False)
    out = np.zeros(volume.shape, np.float32) if plane_indices is None else None
    picked: list[np.ndarray] = []
    try:
        for axis in axes:
            in_plane = 3 - thick_axis - axis
            # [slice, thick, in_plane] view; planes are copied batch by batch.
            stack = np.transpose(volume, (axis, thick_axis, in_plane))
            guide_stack = (
                None if guide is None else np.transpose(guide, (axis, thick_axis, in_plane))
            )
            result = None if out is None else np.transpose(out, (axis, thick_axis, in_plane))
            indices = (
                np.arange(stack.shape[0]) if plane_indices is None else np.asarray(plane_indices)
            )
            if skip_empty:
                keep = np.array([has_signal(stack[i : i + 1])[0] for i in indices], bool)
            else:
                keep = np.ones(len(indices), bool)
            done = np.empty((len(indices), *stack.shape[1:]), np.float32) if out is None else None
            for position in np.flatnonzero(~keep):
                plane = np.asarray(stack[indices[position]], np.float32)
                if result is not None:
                    result[indices[position]] += plane
                else:
                    done[position] = plane
            bar.update(int((~keep).sum()))
            run = np.flatnonzero(keep)
            batches = [run[i : i + batch_size] for i in range(0, len(run), batch_size)]
            forward = functools.partial(_forward_planes, model, stack, guide_stack, device, bf16)
            outputs = map_in_threads(forward, [indices[p] for p in batches], workers)
            for positions, y_np in zip(batches, outputs, strict=True):
                chunk = indices[positions]
                if result is not None:
                    result[chunk] += y_np
                else:
                    done[positions] = y_np
                bar.update(len(chunk))
            if done is not None:
                picked.append(done)
    finally:
        bar.close()
        model.train(was_training)
    if out is None:
        return np.concatenate(picked, axis=0)
    if len(axes) > 1:
        out /= len(axes)
    return out
