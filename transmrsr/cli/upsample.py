"""``transmrsr upsample``: interpolation baselines back to the isotropic grid."""

from __future__ import annotations

import argparse
import logging
import time

from transmrsr.api import run_upsample
from transmrsr.cli.common import add_axis_argument, add_dtype_argument, add_factor_arguments
from transmrsr.geometry import axis_name
from transmrsr.interpolation import METHODS
from transmrsr.io import check_output_path, load_volume, save_volume, voxel_sizes

log = logging.getLogger(__name__)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "upsample",
        help="interpolate a thick-slice volume to an isotropic grid (baselines)",
        description=(
            "Interpolate along the thick axis onto the grid whose slices tile the same slabs "
            "with spacing divided by the factor (the grid `restore` writes). Axis and factor "
            "come from the header unless given; --resolution MM brings every axis to MM "
            "(in-plane resampled as `restore --resolution` does)."
        ),
    )
    parser.add_argument("input", metavar="INPUT", help="thick-slice NIfTI or MGZ volume")
    parser.add_argument("output", metavar="OUTPUT", help="NIfTI to write")
    parser.add_argument(
        "--method", choices=METHODS, default="cubic", help="interpolation (default cubic B-spline)"
    )
    add_factor_arguments(parser)
    add_axis_argument(parser, "thick axis (default: the axis with the largest spacing)")
    parser.add_argument(
        "--like", metavar="REFERENCE", help="write onto the grid of this volume instead"
    )
    add_dtype_argument(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    inputs = [args.input] + ([args.like] if args.like else [])
    output = check_output_path(args.output, *inputs)
    result = run_upsample(
        load_volume(args.input),
        factor=args.factor,
        axis=args.axis,
        method=args.method,
        resolution=args.resolution,
        like=args.like,
    )
    save_volume(result.volume, output, dtype=args.dtype, description=result.description)
    log.info(
        "upsampled %s along axis %d (%s) by %.4g with %s: %s -> %s, voxel %s mm, in %.1f s",
        args.input,
        result.axis,
        axis_name(result.axis, result.source.affine),
        result.factor,
        args.method,
        result.source.shape,
        result.volume.shape,
        "x".join(f"{z:.3g}" for z in voxel_sizes(result.volume.affine)),
        time.perf_counter() - start,
    )
    return 0
