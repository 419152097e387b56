"""``transmrsr demo``: a simulated thick-slice scan of the MNI152 template, restored and scored.

Needs nothing but the installed package: the template ships with nilearn. It writes the
reference, the simulated thick-slice scan, each method's restoration, a figure and a metrics
table, so a new user sees in a few minutes what the tool does and how it is measured.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from transmrsr.cli.common import adapt_config, add_network_run_arguments, factor_type
from transmrsr.cli.evaluate import format_table
from transmrsr.degradation import degrade
from transmrsr.devices import resolve_device
from transmrsr.errors import TransMRSRError
from transmrsr.evaluation.compare import compare_volumes
from transmrsr.evaluation.figures import comparison_figure, to_ras
from transmrsr.geometry import check_factor, resolve_axis
from transmrsr.inference.restore import DEFAULT_MODEL, load_model, restore_volume
from transmrsr.interpolation import resample_to_grid, upsample
from transmrsr.io import atomic_path, save_volume, voxel_sizes
from transmrsr.templates import mni152_brain_mask, mni152_t1

log = logging.getLogger(__name__)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="simulate a thick-slice MNI152 scan, restore it and score it (no data needed)",
        description=(
            "Takes the MNI152 T1 template that nilearn ships, simulates a thick-slice "
            "acquisition (x4 along SI by default), restores it, and writes the NIfTI files, a "
            "PNG figure and a metrics table to --out."
        ),
    )
    parser.add_argument(
        "--out",
        default="transmrsr-demo",
        metavar="DIR",
        help="output folder (created; default ./transmrsr-demo)",
    )
    parser.add_argument(
        "--factor",
        type=factor_type,
        default=4.0,
        metavar="K",
        help="simulated thick/thin spacing ratio (default 4)",
    )
    parser.add_argument("--axis", default="SI", metavar="A", help="thick axis (default SI)")
    parser.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        metavar="NAME|PATH",
        help=f"restoration model (default: the shipped {DEFAULT_MODEL!r} model)",
    )
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    add_network_run_arguments(parser)
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    factor = check_factor(args.factor)
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TransMRSRError(f"{out}: cannot create the output folder ({exc.strerror})") from None

    reference = mni152_t1()
    mask = mni152_brain_mask()
    axis = resolve_axis(args.axis, reference.affine)
    log.info(
        "MNI152 T1 %s, simulating x%g thick slices along axis %d", reference.shape, factor, axis
    )
    lr_data, lr_affine = degrade(reference.data, reference.affine, axis, factor)
    lr = reference.with_data(lr_data, lr_affine)
    save_volume(reference, out / "reference.nii.gz")
    save_volume(lr, out / "lr.nii.gz")

    restored, scores, timings = {}, {}, {}
    for method in ("cubic",):
        t0 = time.perf_counter()
        data, affine = upsample(lr.data, lr.affine, axis, factor, method)
        timings[method] = time.perf_counter() - t0
        volume = lr.with_data(data, affine)
        save_volume(volume, out / f"{method}.nii.gz")
        scores[method] = compare_volumes(volume, reference, mask=mask, thick_axis=axis)
        restored[method] = resample_to_grid(data, affine, reference.shape, reference.affine)

    model = load_model(args.model)
    t0 = time.perf_counter()
    result = restore_volume(
        lr,
        model,
        axis=axis,
        factor=factor,
        device=resolve_device(args.device),
        progress=not args.no_progress,
        precision=args.precision,
        adapt=adapt_config(args),
        # The demo made the acquisition, so it knows its slices: as thick as their spacing.
        slice_thickness=float(voxel_sizes(lr.affine)[axis]),
    )
    timings["TransMRSR"] = time.perf_counter() - t0
    save_volume(result.volume, out / "transmrsr.nii.gz", description=result.describe())
    scores["TransMRSR"] = compare_volumes(result.volume, reference, mask=mask, thick_axis=axis)
    restored["TransMRSR"] = resample_to_grid(
        result.volume.data, result.volume.affine, reference.shape, reference.affine
    )
    log.info(
        "TransMRSR (%s, %s) restored the volume in %.1f s",
        result.model_source,
        result.precision,
        timings["TransMRSR"],
    )

    blocks, blocks_affine = upsample(lr.data, lr.affine, axis, factor, "nearest")
    lr_display = resample_to_grid(blocks, blocks_affine, reference.shape, reference.affine)
    figure = comparison_figure(
        {"thick-slice input": to_ras(lr_display, reference.affine)}
        | {name: to_ras(v, reference.affine) for name, v in restored.items()},
        to_ras(reference.data, reference.affine),
        out / "figure.png",
        title=f"MNI152 T1, x{factor:g} thick slices along {args.axis}",
    )
    with atomic_path(out / "metrics.json", suffix=".json") as tmp, open(tmp, "w") as handle:
        json.dump(
            {name: {**c.to_dict(), "seconds": timings[name]} for name, c in scores.items()},
            handle,
            indent=2,
        )
    sys.stdout.write(format_table(scores) + "\n")
    log.info(
        "wrote %s (NIfTI volumes, %s, metrics.json) in %.1f s",
        out,
        figure.name,
        time.perf_counter() - start,
    )
    return 0
