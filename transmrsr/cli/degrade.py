"""``transmrsr degrade``: simulate a thick-slice acquisition of a high-resolution volume."""

from __future__ import annotations

import argparse
import logging
import time

from transmrsr.api import run_degrade
from transmrsr.cli.common import (
    add_axis_argument,
    add_dtype_argument,
    factor_type,
    positive_float,
    profile_type,
)
from transmrsr.geometry import axis_name, check_factor
from transmrsr.io import check_output_path, load_volume, save_volume, voxel_sizes

log = logging.getLogger(__name__)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "degrade",
        help="simulate a thick-slice scan from a high-resolution volume (SMORE model)",
        description=(
            "Blur along one axis with a Gaussian slice profile (FWHM = factor voxels unless "
            "--fwhm says otherwise) and keep one slice per slab of FACTOR thin slices, at the "
            "slab centre. OUTPUT has the true thick spacing and an affine that keeps every "
            "thick slice at its world position."
        ),
    )
    parser.add_argument("input", metavar="INPUT", help="high-resolution NIfTI or MGZ volume")
    parser.add_argument("output", metavar="OUTPUT", help="thick-slice NIfTI to write")
    parser.add_argument(
        "--factor",
        type=factor_type,
        required=True,
        metavar="K",
        help="thick spacing / thin spacing (> 1; may be non-integer)",
    )
    add_axis_argument(parser, "axis that becomes thick (default SI)", default="SI")
    parser.add_argument(
        "--fwhm",
        type=positive_float,
        metavar="F",
        help="slice-profile FWHM in input voxels (default: the factor)",
    )
    parser.add_argument(
        "--profile",
        type=profile_type,
        metavar="W1,W2,...",
        help="a custom 1-D slice profile in input voxels, replacing the Gaussian",
    )
    add_dtype_argument(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    check_factor(args.factor)  # before the paths: the errors come in the order they always did
    output = check_output_path(args.output, args.input)
    result = run_degrade(
        load_volume(args.input),
        factor=args.factor,
        axis=args.axis,
        fwhm=args.fwhm,
        profile=args.profile,
    )
    save_volume(result.volume, output, dtype=args.dtype, description=result.description)
    log.info(
        "degraded %s along axis %d (%s) by %.4g: %s -> %s, voxel %s mm, in %.1f s",
        args.input,
        result.axis,
        axis_name(result.axis, result.source.affine),
        result.factor,
        result.source.shape,
        result.volume.shape,
        "x".join(f"{z:.3g}" for z in voxel_sizes(result.volume.affine)),
        time.perf_counter() - start,
    )
    return 0
