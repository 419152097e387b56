"""Figure of guided restoration: a thick scan, cubic, the default restore, the guided restore
and the reference, with their errors (docs/figures/guided_<case>.png).

It reads the volumes the regression suite kept (``benchmarks/regression.py --keep``) for a
case and its guided twin, so that the figure shows exactly what the suite scored::

    python benchmarks/regression.py --keep --only flair_x4_gaussian_not-told \\
        flair_x4_gaussian_not-told_guide-stroke_t1 --out /tmp/guided
    python benchmarks/figure_guided.py --work /tmp/guided/work --case flair_x4_gaussian_not-told
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
import regression as reg

from transmrsr.evaluation.figures import methods_figure
from transmrsr.geometry import resolve_axis
from transmrsr.interpolation import upsample
from transmrsr.io import load_volume

log = logging.getLogger("figure_guided")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True, help="the suite's --work folder")
    parser.add_argument("--case", required=True, help="the unguided case's id")
    parser.add_argument("--guide", default="stroke_t1", help="the guided twin's guide")
    parser.add_argument("--out", type=Path, default=reg.ROOT / "docs" / "figures")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    guided_id = f"{args.case}_guide-{args.guide}"
    folders = {
        name: args.work / "cases" / case
        for name, case in (("unguided", args.case), ("guided", guided_id))
    }
    missing = [
        str(f / "restored.nii.gz")
        for f in folders.values()
        if not (f / "restored.nii.gz").is_file()
    ]
    if missing:
        raise SystemExit(f"not kept by the suite (run it with --keep): {', '.join(missing)}")
    case = next(c for c in reg.default_suite() if c.id == args.case)
    ref, _ = reg.load_reference(reg.REFERENCES[case.reference], args.work)
    axis = resolve_axis("SI", ref.affine)
    thick = load_volume(folders["unguided"] / "thick.nii.gz")
    nearest, near_affine = upsample(thick.data, thick.affine, axis, case.factor, "nearest")
    cubic, cubic_affine = upsample(thick.data, thick.affine, axis, case.factor, "cubic")
    images = {
        f"thick x{case.factor:g}": reg.on_reference(thick.with_data(nearest, near_affine), ref),
        "cubic": reg.on_reference(thick.with_data(cubic, cubic_affine), ref),
        "default restore": reg.on_reference(
            load_volume(folders["unguided"] / "restored.nii.gz"), ref
        ),
        f"guided by {args.guide}": reg.on_reference(
            load_volume(folders["guided"] / "restored.nii.gz"), ref
        ),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = methods_figure(
        images,
        ref.data,
        ref.affine,
        axis,
        args.out / f"guided_{case.reference}_x{case.factor:g}.png",
        title=f"{case.reference} x{case.factor:g}, slice thickness not told",
    )
    log.info("wrote %s", path)
    guide, _ = reg.load_reference(reg.REFERENCES[args.guide], args.work)
    beside = {
        "reference": ref.data,
        "default restore": images["default restore"],
        f"guided by {args.guide}": images[f"guided by {args.guide}"],
        f"the guide ({args.guide})": reg.on_reference(guide, ref),
    }
    path = guide_figure(
        beside, ref.affine, args.out / f"guided_{case.reference}_x{case.factor:g}_guide.png"
    )
    log.info("wrote %s", path)
    return 0


def guide_figure(images: dict[str, np.ndarray], affine: np.ndarray, out: Path) -> Path:
    """One coronal plane (the middle one) of each image on the reference's grid, side by side:
    what the guided restore took from the guide, and what it kept of the scan's own contrast
    (a lesion the guide does not show)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import nibabel as nib

    ornt = nib.orientations.ornt_transform(
        nib.orientations.io_orientation(affine), nib.orientations.axcodes2ornt("RAS")
    )
    fig, axes = plt.subplots(1, len(images), figsize=(3 * len(images), 3.4))
    for ax, (name, data) in zip(axes, images.items(), strict=True):
        ras = nib.orientations.apply_orientation(np.asarray(data, np.float32), ornt)
        ax.imshow(np.rot90(ras[:, ras.shape[1] // 2, :]), cmap="gray")
        ax.set_title(name)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


if __name__ == "__main__":
    raise SystemExit(main())
