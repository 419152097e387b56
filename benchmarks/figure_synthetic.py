"""Figure: synthetic heads (T1-like and random contrast) beside a real T1 with skull.

Each row is one head, in three planes through its centre: a real T1 (``otsu_t1`` from
``../shared/data/mri``), then heads made by :mod:`transmrsr.training.synthetic` from the
SynthSeg label maps with T1-like priors and with random contrast (seeds 0 and 1 of each).

    python benchmarks/figure_synthetic.py --labels ../shared/data/labels \
        --real ../shared/data/mri/otsu_t1.nii.gz --out docs/figures/synthetic_heads.png
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
from transmrsr.io import atomic_path
from transmrsr.training.synthetic import (
    HeadConfig,
    LabelTables,
    crop_to_head,
    discover_label_maps,
    load_label_map,
    synthesize_head,
)

log = logging.getLogger("figure_synthetic")


def three_planes(volume: np.ndarray, affine: np.ndarray) -> list[np.ndarray]:
    """Sagittal, coronal and axial planes through the centre, in radiological display order
    (the volume is turned to RAS first, so every head is shown the same way)."""
    image = nib.as_closest_canonical(nib.Nifti1Image(volume.astype(np.float32), affine))
    data = np.asarray(image.dataobj)
    cx, cy, cz = (n // 2 for n in data.shape)
    return [np.rot90(data[cx]), np.rot90(data[:, cy]), np.rot90(data[:, :, cz])]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--labels", type=Path, required=True)
    parser.add_argument("--real", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=Path("docs/figures/synthetic_heads.png"))
    parser.add_argument("--map", type=int, default=0, help="which label map (sorted order)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        tables = LabelTables.load(args.labels)
        entry = discover_label_maps(args.labels)[args.map]
        labels, affine = crop_to_head(*load_label_map(entry.path))
        real = nib.load(args.real)
        rows = [("real T1 (otsu_t1)", real.get_fdata(dtype=np.float32), real.affine)]
        for contrast in ("t1", "random"):
            for seed in (0, 1):
                image, _ = synthesize_head(labels, tables, HeadConfig(contrast=contrast), seed)
                rows.append((f"synthetic, {contrast} contrast, seed {seed}", image, affine))
    except (TransMRSRError, OSError) as exc:
        print(f"figure_synthetic: error: {exc}", file=sys.stderr)
        return 2
    fig, axes = plt.subplots(len(rows), 3, figsize=(9, 3 * len(rows)))
    for row, (title, volume, aff) in zip(axes, rows, strict=True):
        top = float(np.percentile(volume, 99.5))
        for ax, plane in zip(row, three_planes(volume, aff), strict=True):
            ax.imshow(plane, cmap="gray", vmin=0, vmax=top)
            ax.set_axis_off()
        row[0].set_title(title, loc="left", fontsize=10)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(args.out, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=80, format="png")
    log.info("wrote %s", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
