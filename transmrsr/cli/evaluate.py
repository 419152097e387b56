"""``transmrsr evaluate``: PSNR and SSIM of a restored volume against its reference."""

from __future__ import annotations

import argparse
import json
import logging
import sys

from transmrsr.api import run_evaluate
from transmrsr.cli.common import positive_float
from transmrsr.evaluation.compare import Comparison
from transmrsr.geometry import axis_name
from transmrsr.io import load_volume
from transmrsr.stripes import stripe_ratio

log = logging.getLogger(__name__)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="PSNR/SSIM of a prediction against a reference (paper protocol and brain-masked)",
        description=(
            "Paper protocol: per 2-D slice, zero-padded to 256x256, intensities on the "
            "reference's 0-255 scale, Gaussian SSIM (11, sigma 1.5), empty slices skipped, "
            "averaged over slices. Also volume-level PSNR/SSIM inside a brain mask. The grids "
            "must match or differ by a whole-voxel shift (then the overlap is compared)."
        ),
    )
    parser.add_argument("pred", metavar="PRED", help="restored (or interpolated) volume")
    parser.add_argument("ref", metavar="REF", help="high-resolution reference volume")
    parser.add_argument(
        "--mask",
        metavar="MASK",
        help="brain mask on the reference grid (default: automatic foreground)",
    )
    parser.add_argument(
        "--thick-axis",
        metavar="A",
        help="the restored axis: slices for the paper protocol contain it",
    )
    parser.add_argument(
        "--slice-axis", metavar="A", help="slice along this axis instead (0, 1, 2 or LR, AP, SI)"
    )
    parser.add_argument(
        "--factor",
        type=positive_float,
        metavar="F",
        help="slab period along the thick axis in reference voxels (the restoration factor): "
        "also measure the slab-stripe index of prediction and reference",
    )
    parser.add_argument(
        "--input",
        metavar="THICK",
        help="the thick-slice scan that was restored: the slab-stripe index of its cubic "
        "interpolation is measured beside the prediction's (thick axis and factor from it)",
    )
    parser.add_argument("--json", action="store_true", help="print the numbers as JSON")
    parser.set_defaults(func=run)


def format_table(rows: dict[str, Comparison]) -> str:
    """A plain-text table of comparisons, one row per method."""
    width = max(12, *(len(name) for name in rows))
    lines = [
        f"{'method':<{width}}  {'PSNR paper':>10}  {'SSIM paper':>10}  "
        f"{'PSNR brain':>10}  {'SSIM brain':>10}",
    ]
    for name, c in rows.items():
        lines.append(
            f"{name:<{width}}  {c.psnr_paper:>10.2f}  {c.ssim_paper:>10.4f}  "
            f"{c.psnr_masked:>10.2f}  {c.ssim_masked:>10.4f}"
        )
    return "\n".join(lines)


def format_stripes(result: Comparison) -> str:
    """The slab-stripe indices, one line (cubic's only when the thick input was given)."""
    parts = [
        f"prediction {result.stripe_index:.4f}",
        f"reference {result.stripe_index_reference:.4f}",
    ]
    if result.stripe_index_cubic is not None:
        ratio = stripe_ratio(result.stripe_index, result.stripe_index_cubic)
        parts.append(f"cubic {result.stripe_index_cubic:.4f} (prediction/cubic {ratio:.2f})")
    return "slab-stripe index: " + ", ".join(parts)


def run(args: argparse.Namespace) -> int:
    pred = load_volume(args.pred, require_signal=False)
    ref = load_volume(args.ref)
    mask = load_volume(args.mask, require_signal=False) if args.mask else None
    thick = load_volume(args.input) if args.input else None
    result = run_evaluate(
        pred,
        ref,
        mask=mask,
        thick_axis=args.thick_axis,
        slice_axis=args.slice_axis,
        factor=args.factor,
        thick_input=thick,
    )
    if args.json:
        json.dump({"pred": args.pred, "ref": args.ref, **result.to_dict()}, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(format_table({"prediction": result}) + "\n")
        if result.stripe_index is not None:
            sys.stdout.write(format_stripes(result) + "\n")
        log.info(
            "paper protocol over %d slices along %s; brain mask: %s (%d voxels)",
            result.n_slices,
            axis_name(result.slice_axis, ref.affine),
            result.mask_source,
            result.mask_voxels,
        )
    return 0
