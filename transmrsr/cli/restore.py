"""``transmrsr restore``: thick-slice scans to isotropic volumes with a TransMRSR model."""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from transmrsr.api import run_restore
from transmrsr.cli.common import (
    add_axis_argument,
    add_dtype_argument,
    add_factor_arguments,
    add_network_run_arguments,
    int_at_least,
    slice_thickness_type,
)
from transmrsr.devices import resolve_device
from transmrsr.errors import TransMRSRError
from transmrsr.geometry import axis_name
from transmrsr.inference.restore import (
    DEFAULT_MODEL,
    PLANE_CHOICES,
    SHIPPED_MODELS,
    load_model,
)
from transmrsr.io import READABLE_SUFFIXES, check_output_path, load_volume, save_volume

log = logging.getLogger(__name__)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "restore",
        help="restore thick-slice scans to isotropic volumes (TransMRSR)",
        description=(
            "INPUT OUTPUT restores one scan; INPUT... --out-dir DIR restores many (files or "
            "folders), naming each output after its input plus --suffix. The thick axis and "
            "factor come from the header unless given; the output is on the isotropic grid "
            "that `upsample` writes (with --resolution, at that spacing; or on --like's "
            "grid), in the input's intensity range. Existing outputs are skipped unless "
            "--overwrite."
        ),
    )
    parser.add_argument(
        "paths", nargs="+", metavar="PATH", help="INPUT OUTPUT, or inputs with --out-dir"
    )
    parser.add_argument("--out-dir", metavar="DIR", help="restore every input into this folder")
    parser.add_argument(
        "--suffix", default="_restored", help="added to input names in --out-dir mode"
    )
    add_factor_arguments(parser)
    add_axis_argument(parser, "thick axis (default: the axis with the largest spacing)")
    parser.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        metavar="NAME|PATH",
        help=f"shipped model ({', '.join(SHIPPED_MODELS)}; default {DEFAULT_MODEL}), a model "
        "file from train (.safetensors) or a training checkpoint (.pt)",
    )
    parser.add_argument(
        "--planes",
        default="auto",
        choices=PLANE_CHOICES,
        help="one plane orientation (the one nearest to square voxels), or both orientations "
        "containing the thick axis fused (auto: the measured best per second)",
    )
    parser.add_argument(
        "--consistency",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="project the result so that its simulated thick slices equal the input's (a "
        "Gaussian slice profile as thick as --slice-thickness; default on)",
    )
    parser.add_argument(
        "--slice-thickness",
        type=slice_thickness_type,
        default="auto",
        metavar="MM|auto|spacing",
        help="acquired slice thickness in mm where it differs from the slice spacing (a gap: "
        "5 mm slices every 6.5 mm; or overlapping slices): the adaptation and the data "
        "consistency model slices that thick. auto (default): the SliceThickness of a "
        "BIDS/dcm2niix JSON sidecar beside the input (scan.json for scan.nii.gz) when there "
        "is one, else the spacing; spacing: as thick as the spacing, sidecar ignored",
    )
    add_network_run_arguments(parser)
    parser.add_argument("--like", metavar="REFERENCE", help="write onto this volume's grid")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument(
        "--batch-size",
        type=int_at_least(1),
        default=8,
        metavar="N",
        help="planes per forward pass (memory grows with it; default 8)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_dtype_argument(parser)
    parser.set_defaults(func=run)


def _is_volume(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(READABLE_SUFFIXES)


def _stem(path: Path) -> str:
    name = path.name
    for suffix in sorted(READABLE_SUFFIXES, key=len, reverse=True):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def plan_jobs(args: argparse.Namespace) -> list[tuple[Path, Path]]:
    """(input, output) pairs from the positional paths and --out-dir."""
    paths = [Path(p) for p in args.paths]
    if args.out_dir is None:
        if len(paths) != 2:
            raise TransMRSRError(
                "give INPUT OUTPUT for one scan, or inputs with --out-dir DIR for many"
            )
        if paths[0].is_dir():
            raise TransMRSRError(f"{paths[0]} is a folder: use --out-dir DIR for folders")
        return [(paths[0], paths[1])]
    out_dir = Path(args.out_dir)
    if not out_dir.is_dir():
        try:
            out_dir.mkdir(parents=True)
        except OSError as exc:
            raise TransMRSRError(f"{out_dir}: cannot create ({exc.strerror})") from None
    inputs: list[Path] = []
    for path in paths:
        if path.is_dir():
            inputs.extend(sorted(p for p in path.rglob("*") if _is_volume(p)))
        elif path.exists():
            inputs.append(path)
        else:
            raise TransMRSRError(f"{path}: no such file or folder")
    if not inputs:
        raise TransMRSRError("no NIfTI/MGZ volumes among the inputs")
    jobs = [(p, out_dir / f"{_stem(p)}{args.suffix}.nii.gz") for p in inputs]
    names = [out for _, out in jobs]
    if len(set(names)) != len(names):
        raise TransMRSRError("two inputs have the same name; their outputs would collide")
    return jobs


def run(args: argparse.Namespace) -> int:
    jobs = plan_jobs(args)
    todo = []
    for source, out in jobs:
        extra = [args.like] if args.like else []
        check_output_path(out, source, *extra)
        if out.exists() and not args.overwrite:
            log.info("%s exists, skipped (use --overwrite to redo it)", out)
            continue
        todo.append((source, out))
    if not todo:
        return 0
    device = resolve_device(args.device)
    model = load_model(args.model)
    like = load_volume(args.like, require_signal=False) if args.like else None
    log.info("model %s on %s", model.source, device)
    failures = 0
    for source, out in todo:
        start = time.perf_counter()
        try:
            volume = load_volume(source)
            # The Python interface's restore (transmrsr.restore), with what this log needs.
            result = run_restore(
                volume,
                model=model,
                axis=args.axis,
                factor=args.factor,
                resolution=args.resolution,
                planes=args.planes,
                like=like,
                batch_size=args.batch_size,
                device=device,
                progress=not args.no_progress,
                consistency=args.consistency,
                adapt=args.adapt,
                precision=args.precision,
                slice_thickness=args.slice_thickness,
            )
            save_volume(result.volume, out, dtype=args.dtype, description=result.describe())
        except TransMRSRError as exc:
            if len(todo) == 1:
                raise
            log.error("%s: %s", source, exc)
            failures += 1
            continue
        log.info(
            "restored %s: axis %d (%s) x%.4g, %s -> %s, %d plane orientation(s), model %s in %s, "
            "%.1f s -> %s",
            source,
            result.thick_axis,
            axis_name(result.thick_axis, volume.affine),
            result.factor,
            volume.shape,
            result.volume.shape,
            len(result.slice_axes),
            Path(result.model_source).name,
            result.precision,
            time.perf_counter() - start,
            out,
        )
    if failures:
        raise TransMRSRError(f"{failures} of {len(todo)} inputs failed (see above)")
    return 0
