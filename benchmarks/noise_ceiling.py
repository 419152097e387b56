"""The highest brain-masked gain over cubic interpolation a reference's own noise allows.

A restoration predicts the anatomy from the thick slices; the reference's noise is not in them,
so however good the model, its squared error inside the mask stays at least the noise variance.
Cubic interpolation's error holds the same noise, so no method can gain more than
``10 log10(MSE_cubic / sigma^2)`` dB over it, with sigma from
:func:`transmrsr.evaluation.metrics.noise_sigma`. The table also gives the noise as a fraction
of the brain's 99th percentile, to compare scans.

Each volume is degraded along ``--axis`` with the SPEC's Gaussian slice profile and upsampled
back with cubic interpolation, as ``benchmarks/eval_heldout.py`` does::

    python benchmarks/noise_ceiling.py --mni --factors 4 8 \\
        --volume ../shared/data/mri/otsu_t1.nii.gz otsu_brainmask.nii.gz
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
from pathlib import Path

import numpy as np

from transmrsr.degradation import degrade
from transmrsr.errors import TransMRSRError
from transmrsr.evaluation.metrics import noise_sigma
from transmrsr.geometry import resolve_axis
from transmrsr.interpolation import upsample
from transmrsr.io import Volume, load_volume
from transmrsr.templates import mni152_brain_mask, mni152_t1

log = logging.getLogger("noise_ceiling")


def ceiling_rows(
    name: str, ref: Volume, mask: Volume, factors: list[float], axis_name: str
) -> list[str]:
    """Markdown rows: the noise, and per factor cubic's masked MSE over it and the ceiling."""
    if mask.shape != ref.shape:
        raise TransMRSRError(f"{name}: the mask's shape {mask.shape} is not the volume's")
    data = ref.data.astype(np.float64)
    inside = mask.data > 0.5
    sigma = noise_sigma(data, inside)
    level = float(np.percentile(data[inside], 99))
    axis = resolve_axis(axis_name, ref.affine)
    rows = []
    for factor in factors:
        thick, thick_affine = degrade(ref.data, ref.affine, axis, factor)
        cubic, _ = upsample(thick, thick_affine, axis, factor, "cubic")
        n = min(cubic.shape[axis], data.shape[axis])
        common = tuple(slice(0, n) if a == axis else slice(None) for a in range(3))
        error = (cubic[common] - data[common])[inside[common]]
        ratio = float(np.mean(error**2)) / sigma**2
        rows.append(
            f"| {name} | {100 * sigma / level:.2f} % | x{factor:g} | {ratio:.1f} | "
            f"+{10 * math.log10(ratio):.1f} dB |"
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--volume",
        nargs=2,
        action="append",
        default=[],
        metavar=("VOLUME", "MASK"),
        help="a high-resolution volume and its brain mask (repeatable)",
    )
    parser.add_argument("--mni", action="store_true", help="add the MNI152 template (nilearn)")
    parser.add_argument("--factors", type=float, nargs="+", default=[4.0, 8.0])
    parser.add_argument("--axis", default="SI", help="the thick axis (default SI)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if not args.volume and not args.mni:
        parser.error("give --volume VOLUME MASK and/or --mni")
    try:
        cases = [(Path(v).name, load_volume(v), load_volume(m)) for v, m in args.volume]
        if args.mni:
            cases.append(("MNI152", mni152_t1(), mni152_brain_mask()))
        rows = []
        for name, ref, mask in cases:
            rows += ceiling_rows(name, ref, mask, args.factors, args.axis)
    except TransMRSRError as exc:
        log.error("error: %s", exc)
        return 2
    header = [
        "| volume | noise / brain p99 | factor | cubic MSE / noise variance | ceiling |",
        "|---|---|---|---|---|",
    ]
    sys.stdout.write("\n".join(header + rows) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
