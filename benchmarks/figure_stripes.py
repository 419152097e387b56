"""Figure: sagittal and coronal views of a real thick scan, cubic beside restorations.

Slab stripes show as horizontal lines one slab apart in the planes that contain the thick
axis. Every panel is titled with its slab-stripe index (:mod:`transmrsr.stripes`) and that
index over cubic interpolation's; the lower row zooms on the middle of the sagittal plane.
Restorations are made beforehand with ``transmrsr restore`` (so the figure shows exactly what
users get) and given as ``LABEL=PATH``::

    transmrsr restore ../shared/data/mri/papaya_pd_thick7mm.nii.gz kept.nii.gz \
        --resolution 1 --no-destripe
    transmrsr restore ../shared/data/mri/papaya_pd_thick7mm.nii.gz default.nii.gz \
        --resolution 1
    python benchmarks/figure_stripes.py ../shared/data/mri/papaya_pd_thick7mm.nii.gz \
        --resolution 1 --restored "restore --no-destripe=kept.nii.gz" \
        --restored "restore (default)=default.nii.gz" --out docs/figures/stripes_papaya.png
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import nibabel as nib
import numpy as np

from transmrsr.errors import TransMRSRError
from transmrsr.geometry import detect_thick_axis
from transmrsr.interpolation import resample_in_plane, upsample
from transmrsr.io import atomic_path, load_volume
from transmrsr.stripes import head_mask, stripe_index

log = logging.getLogger("figure_stripes")


def planes_through(volume: np.ndarray, affine: np.ndarray, thick: int) -> list[np.ndarray]:
    """The sagittal-like and coronal-like planes through the centre that hold the thick axis,
    with the thick axis vertical (superior up for an axial scan)."""
    ras = nib.as_closest_canonical(nib.Nifti1Image(volume, affine))
    data = np.asanyarray(ras.dataobj, dtype=np.float32)
    order = nib.orientations.io_orientation(affine)
    thick_ras = int(order[thick, 0])
    planes = []
    for cut in (a for a in range(3) if a != thick_ras):
        plane = np.take(data, data.shape[cut] // 2, axis=cut)
        rows = thick_ras if thick_ras < cut else thick_ras - 1
        plane = np.moveaxis(plane, rows, 0)[::-1]
        planes.append(plane)
    return planes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("thick", type=Path, help="the real thick-slice scan")
    parser.add_argument(
        "--restored",
        action="append",
        default=[],
        metavar="LABEL=PATH",
        help="a restoration of it on the grid restore writes (repeatable)",
    )
    parser.add_argument("--resolution", type=float, help="as given to restore")
    parser.add_argument("--out", type=Path, required=True, help="PNG to write")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        scan = load_volume(args.thick)
        thick, factor = detect_thick_axis(scan.affine, resolution=args.resolution)
        data, affine = scan.data, scan.affine
        if args.resolution is not None:
            data, affine = resample_in_plane(data, affine, thick, args.resolution)
        cubic, grid = upsample(data, affine, thick, factor, "cubic")
        panels = [("cubic", cubic)]
        for item in args.restored:
            label, _, path = item.partition("=")
            volume = load_volume(path)
            if volume.shape != cubic.shape or not np.allclose(volume.affine, grid, atol=1e-3):
                raise TransMRSRError(f"{path}: not on the grid restore writes for this scan")
            panels.append((label, volume.data))
    except TransMRSRError as exc:
        log.error("figure_stripes: %s", exc)
        return 2
    mask = head_mask(cubic)
    cubic_index = stripe_index(cubic, thick, factor, mask=mask)
    top = float(np.percentile(cubic[mask], 99.5))
    fig, axes = plt.subplots(3, len(panels), figsize=(3.6 * len(panels), 10), squeeze=False)
    for column, (label, volume) in enumerate(panels):
        index = stripe_index(volume, thick, factor, mask=mask)
        sagittal, coronal = planes_through(volume, grid, thick)
        rows, cols = sagittal.shape
        zoom = sagittal[rows // 4 : 3 * rows // 4, cols // 4 : 3 * cols // 4]
        for row, image in enumerate((sagittal, coronal, zoom)):
            ax = axes[row, column]
            ax.imshow(image, cmap="gray", vmin=0, vmax=top, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
        axes[0, column].set_title(
            f"{label}\nstripe index {index:.2f} ({index / cubic_index:.2f} x cubic)", fontsize=9
        )
    axes[0, 0].set_ylabel("sagittal")
    axes[1, 0].set_ylabel("coronal")
    axes[2, 0].set_ylabel("sagittal, zoomed")
    fig.suptitle(f"{args.thick.name}: x{factor:.3g} along array axis {thick}", fontsize=10)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(args.out, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    log.info("wrote %s", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
