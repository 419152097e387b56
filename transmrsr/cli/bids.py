"""``transmrsr bids``: restore the thick-slice anatomical images of a BIDS dataset into a BIDS
derivatives dataset, with the arguments of a BIDS App (``BIDS_DIR OUTPUT_DIR participant``)."""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

import nibabel as nib

from transmrsr import bids
from transmrsr.api import as_volume
from transmrsr.cli.common import positive_float
from transmrsr.cli.restore import (
    Job,
    Report,
    add_guide_arguments,
    add_restore_run_arguments,
    pending,
    restore_jobs,
    select_shard,
)
from transmrsr.cohort import resolve_shard
from transmrsr.errors import OutputError, TransMRSRError
from transmrsr.geometry import axis_name
from transmrsr.inference.restore import DEFAULT_MODEL, Restoration
from transmrsr.io import Volume, check_writable_folder, voxel_sizes, write_text

log = logging.getLogger(__name__)

#: Images whose largest spacing is less than this many times their finest are left alone.
DEFAULT_MIN_FACTOR = 1.5
#: The suffix of the session's isotropic scan that guides the others.
DEFAULT_GUIDE_SUFFIX = "T1w"


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "bids",
        help="restore the thick-slice anatomical images of a BIDS dataset (a BIDS App)",
        description=(
            "Finds the anatomical images of BIDS_DIR (sub-*/[ses-*/]anat/, with the --suffix "
            "given), restores those whose largest spacing is at least --min-factor times their "
            "finest, and writes a BIDS derivatives dataset into OUTPUT_DIR: "
            "dataset_description.json, and per image "
            "sub-X[_ses-Y][_acq-Z...]_desc-restored_<suffix>.nii.gz with a JSON sidecar saying "
            "what was restored from what, with what. Existing outputs are skipped unless "
            "--overwrite."
        ),
    )
    parser.add_argument("bids_dir", metavar="BIDS_DIR", help="the raw BIDS dataset")
    parser.add_argument("output_dir", metavar="OUTPUT_DIR", help="the derivatives dataset")
    parser.add_argument(
        "analysis_level",
        choices=("participant",),
        help="participant: restore each participant's images (there is no group level)",
    )
    parser.add_argument(
        "--participant-label",
        nargs="+",
        metavar="LABEL",
        help="only these participants (with or without sub-; default: all)",
    )
    parser.add_argument(
        "--suffix",
        nargs="+",
        default=list(bids.DEFAULT_SUFFIXES),
        metavar="SUFFIX",
        help=f"anatomical suffixes to restore (default: {' '.join(bids.DEFAULT_SUFFIXES)})",
    )
    parser.add_argument(
        "--min-factor",
        type=positive_float,
        default=DEFAULT_MIN_FACTOR,
        metavar="K",
        help="restore images whose largest spacing is at least K times their finest "
        f"(default {DEFAULT_MIN_FACTOR}); the others are isotropic enough already",
    )
    parser.add_argument(
        "--guide-suffix",
        default=None,
        metavar="SUFFIX",
        help="guide each restore with the same subject and session's isotropic image of this "
        f"suffix (default {DEFAULT_GUIDE_SUFFIX}; guided restoration, docs/restore.md): a "
        "guide branch is fitted to each image, and the sidecar lists the guide in Sources "
        "with GuideSimilarity and GuideHeldOutGainDB",
    )
    parser.add_argument(
        "--no-guide", action="store_true", help="restore every image without a guide"
    )
    add_guide_arguments(parser)
    add_restore_run_arguments(parser)
    parser.set_defaults(func=run)


def _anisotropy(path: Path) -> float | None:
    """Largest spacing over the finest, from the header alone (no voxels read)."""
    try:
        zooms = voxel_sizes(nib.load(path).affine)
    except (OSError, EOFError, ValueError, nib.filebasedimages.ImageFileError) as exc:
        log.debug("%s: header not readable (%s); the restore will say", path, exc)
        return None
    return float(zooms.max() / zooms.min())


def _job(
    image: bids.BidsImage,
    root: Path,
    output: Path,
    args: argparse.Namespace,
    guide: bids.BidsImage | None = None,
) -> Job:
    relative = bids.derivative_path(image)
    out = output / relative
    side = output / bids.derivative_path(image, ".json")
    thickness: float | str | None = None
    skull_stripped = bids.inherited_metadata(image, root).get("SkullStripped") is True
    if args.slice_thickness == "auto":
        thickness = bids.slice_thickness_of(image, root)
        if thickness is None:
            thickness = "spacing"  # neither the tags nor an inherited sidecar say otherwise

    def write_sidecar(result: Restoration, volume: Volume) -> None:
        spacing = float(volume.zooms[result.thick_axis])
        content = bids.sidecar(
            image,
            model=Path(result.model_source).name,
            factor=result.factor,
            thick_axis=result.thick_axis,
            thick_axis_name=axis_name(result.thick_axis, volume.affine),
            slice_spacing=spacing,
            slice_thickness=result.thickness * spacing,
            adaptation_steps=result.adaptation_steps,
            consistency=args.consistency_method if args.consistency else False,
            precision=result.precision,
            destriped=args.destripe,
            guide=guide if result.guide is not None and result.guide_used else None,
            guide_similarity=None if result.guide is None else result.guide.similarity,
            guide_alignment=None if result.guide is None else result.guide.alignment,
            guide_gain_db=result.guide_gain_db,
            skull_stripped=skull_stripped,
        )
        write_text(side, bids.to_json(content))

    return Job(
        image.relative,
        out,
        lambda: as_volume(image.path),
        (image.path,),
        slice_thickness=thickness,
        before_write=write_sidecar,
        cleanup=lambda: side.unlink(missing_ok=True),
        guide=None if guide is None else guide.path,
    )


def plan(args: argparse.Namespace) -> list[Job]:
    """The jobs of the whole dataset (before any shard): anisotropic images only."""
    root, output = Path(args.bids_dir), Path(args.output_dir)
    if not root.is_dir():
        raise TransMRSRError(f"{root}: no such folder")
    images = bids.find_anat_images(root, participants=args.participant_label, suffixes=args.suffix)
    candidates = _guide_candidates(root, args)

    def is_isotropic(path: Path) -> bool:
        ratio = _anisotropy(path)
        return ratio is not None and ratio < args.min_factor

    jobs = []
    for image in images:
        ratio = _anisotropy(image.path)
        if ratio is not None and ratio < args.min_factor:
            log.info(
                "%s: spacing ratio %.2f below --min-factor, not restored", image.relative, ratio
            )
            continue
        guide = bids.session_guide(image, candidates, is_isotropic)
        if guide is not None:
            log.info("%s: guided by %s", image.relative, guide.relative)
        jobs.append(_job(image, root, output, args, guide))
    log.info(
        "%s: %d anatomical images of %d participants, %d to restore",
        root,
        len(images),
        len(bids.subjects(images)),
        len(jobs),
    )
    return jobs


def _guide_candidates(root: Path, args: argparse.Namespace) -> list[bids.BidsImage]:
    """The images that may guide (``--guide-suffix``), none with ``--no-guide`` or with a
    model of the user's that was not asked to take guides."""
    if args.no_guide:
        return []
    if args.model != DEFAULT_MODEL and args.guide_suffix is None:
        log.info("--model %s: restoring without guides (--guide-suffix to use them)", args.model)
        return []
    suffix = args.guide_suffix or DEFAULT_GUIDE_SUFFIX
    # Everyone's: a participant without one is restored unguided, not refused.
    return bids.find_anat_images(root, suffixes=[suffix])


def _prepare_output(root: Path, output: Path, jobs: list[Job]) -> None:
    """The derivatives folders and dataset_description.json, before any work: whatever cannot
    be written fails now, with one line."""
    bids.check_output_dataset(output, root)
    try:
        output.mkdir(parents=True, exist_ok=True)
        for folder in sorted({job.out.parent for job in jobs}):
            folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{output}: cannot create its folders ({exc.strerror})") from None
    check_writable_folder(output, what="OUTPUT_DIR")
    write_text(
        output / "dataset_description.json",
        bids.to_json(bids.dataset_description(root, output)),
    )
    if not any((output / name).exists() for name in ("README", "README.md", "README.txt")):
        write_text(output / "README.md", bids.readme(root))
    ignore = output / ".bidsignore"
    listed = ignore.read_text(encoding="utf-8").splitlines() if ignore.is_file() else []
    missing = [name for name in bids.BIDS_IGNORE if name not in listed]
    if missing:
        write_text(ignore, "".join(f"{line}\n" for line in [*listed, *missing]))


def run(args: argparse.Namespace) -> int:
    root, output = Path(args.bids_dir), Path(args.output_dir)
    shard = resolve_shard(args.shard, os.environ)
    jobs = plan(args)
    mine = select_shard(jobs, shard)
    _prepare_output(root, output, mine)
    todo = pending(mine, overwrite=args.overwrite)
    report = Report(output, [(job.name, job.out) for job in jobs]) if args.report else None
    return restore_jobs(todo, args, report=report)
