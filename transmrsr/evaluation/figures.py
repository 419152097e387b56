"""Figures a person looks at: the three orthogonal planes of each method, with error maps."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import nibabel as nib
import numpy as np

from transmrsr.io import atomic_path

PLANE_NAMES = ("sagittal", "coronal", "axial")


def save_figure(fig: plt.Figure, path: str | os.PathLike[str]) -> Path:
    """Write a matplotlib figure as PNG atomically, and close it (also when writing fails)."""
    out = Path(path)
    try:
        with atomic_path(out, suffix=".png") as tmp:
            fig.savefig(tmp, dpi=100)
    finally:
        plt.close(fig)
    return out


def to_ras(data: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """The array reordered and flipped so that its axes run R, A, S (for display only)."""
    ornt = nib.orientations.io_orientation(affine)
    return nib.orientations.apply_orientation(data, ornt)


def _plane(volume: np.ndarray, axis: int, index: int) -> np.ndarray:
    """A 2-D plane of an RAS-ordered volume, oriented for display (anterior/superior up)."""
    return np.rot90(np.take(volume, index, axis=axis))


def comparison_figure(
    images: dict[str, np.ndarray],
    reference: np.ndarray,
    path: str | os.PathLike[str],
    *,
    title: str = "",
    centre: tuple[int, int, int] | None = None,
) -> Path:
    """Write a PNG: one row per plane, one column per image, then absolute-error maps.

    All volumes must be on the reference's grid and in RAS array order (the caller reorients).
    Intensities share one grey scale (the reference's 0.5-99.5 percentiles); error maps share
    one scale too, so columns can be compared by eye.
    """
    centre = centre or tuple(s // 2 for s in reference.shape)
    lo, hi = np.percentile(reference, [0.5, 99.5])
    names = list(images)
    errors = {n: np.abs(images[n] - reference) for n in names if images[n].shape == reference.shape}
    err_hi = max((np.percentile(e, 99.5) for e in errors.values()), default=1.0) or 1.0
    columns = [*names, "reference", *(f"|{n} - ref|" for n in errors)]
    fig, axes = plt.subplots(3, len(columns), figsize=(2.4 * len(columns), 7.6), squeeze=False)
    for row, axis in enumerate(range(3)):
        for col, name in enumerate(columns):
            ax = axes[row, col]
            if name == "reference":
                ax.imshow(_plane(reference, axis, centre[axis]), cmap="gray", vmin=lo, vmax=hi)
            elif name in images:
                ax.imshow(_plane(images[name], axis, centre[axis]), cmap="gray", vmin=lo, vmax=hi)
            else:
                key = name[1:].split(" - ")[0]
                ax.imshow(
                    _plane(errors[key], axis, centre[axis]), cmap="inferno", vmin=0, vmax=err_hi
                )
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(name, fontsize=10)
            if col == 0:
                ax.set_ylabel(PLANE_NAMES[axis], fontsize=10)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return save_figure(fig, path)


def save_grid_png(
    grid: np.ndarray, path: str | os.PathLike[str], *, title: str | None = None
) -> Path:
    """A grey image (e.g. a grid of generated slices, values 0..1) as a PNG, atomically."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    height, width = grid.shape
    scale = max(1.0, 512 / max(height, width))
    fig, ax = plt.subplots(figsize=(width * scale / 100, height * scale / 100 + 0.3), dpi=100)
    ax.imshow(np.clip(grid, 0, 1), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout(pad=0.1)
    return save_figure(fig, out)


def methods_figure(
    images: dict[str, np.ndarray],
    reference: np.ndarray,
    affine: np.ndarray,
    thick_axis: int,
    path: str | os.PathLike[str],
    *,
    title: str = "",
) -> Path:
    """The paper's Fig. 5 layout: one plane through the thick axis for every method (top row)
    and its absolute error against the reference (bottom row), shared grey and error scales.

    ``images`` and ``reference`` are on the reference grid in its own array order; the plane is
    the middle one across the first of SI, AP, LR that is not the thick axis (coronal for
    axial acquisitions), shown in radiological display orientation.
    """
    ornt = nib.orientations.io_orientation(affine)
    ras_thick = int(ornt[thick_axis, 0])
    axis = next(a for a in (2, 1, 0) if a != ras_thick)
    ref = to_ras(reference, affine)
    index = ref.shape[axis] // 2
    lo, hi = np.percentile(ref, [0.5, 99.5])
    planes = {name: _plane(to_ras(img, affine), axis, index) for name, img in images.items()}
    ref_plane = _plane(ref, axis, index)
    errors = {name: np.abs(p - ref_plane) for name, p in planes.items()}
    err_hi = max((float(np.percentile(e, 99.5)) for e in errors.values()), default=1.0) or 1.0
    columns = [*planes, "reference"]
    fig, axes = plt.subplots(2, len(columns), figsize=(2.2 * len(columns), 4.8), squeeze=False)
    for col, name in enumerate(columns):
        top, bottom = axes[0, col], axes[1, col]
        top.imshow(
            ref_plane if name == "reference" else planes[name], cmap="gray", vmin=lo, vmax=hi
        )
        top.set_title(name, fontsize=9)
        if name in errors:
            bottom.imshow(errors[name], cmap="inferno", vmin=0, vmax=err_hi)
        for ax in (top, bottom):
            ax.set_xticks([])
            ax.set_yticks([])
            if name not in errors and ax is bottom:
                ax.set_axis_off()
    axes[1, 0].set_ylabel("|error|", fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)
