"""``transmrsr restore``: thick-slice scans to isotropic volumes with a TransMRSR model.

Inputs are NIfTI/MGZ files and DICOM series (a folder of one series, or with ``--out-dir`` a
folder of several). A cohort can be split over machines (``--shard I/N``, or a SLURM job array
or torchrun read from the environment) and gets a QC page with ``--report``. Every output
location is tried before any work, and a write that fails on the way stops the cohort with one
line and leaves nothing half-written. The loop over scans (:func:`restore_jobs`) is shared with
``transmrsr bids``.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from transmrsr.api import as_volume, run_restore
from transmrsr.cli.common import (
    adapt_config,
    add_axis_argument,
    add_dtype_argument,
    add_factor_arguments,
    add_network_run_arguments,
    int_at_least,
    slice_thickness_type,
)
from transmrsr.cohort import Shard, resolve_shard
from transmrsr.devices import resolve_device
from transmrsr.errors import OutputError, TransMRSRError
from transmrsr.geometry import axis_name
from transmrsr.inference.consistency import CONSISTENCY_METHODS, DEFAULT_CONSISTENCY
from transmrsr.inference.guided import GuideFitConfig
from transmrsr.inference.restore import (
    DEFAULT_MODEL,
    PLANE_CHOICES,
    SHIPPED_MODELS,
    LoadedModel,
    Restoration,
    load_model,
)
from transmrsr.io import (
    READABLE_SUFFIXES,
    Volume,
    check_output_path,
    check_writable_folder,
    save_volume,
)

log = logging.getLogger(__name__)


@dataclass
class Job:
    """One scan to restore.

    Attributes:
        name: how the log and the QC page name the input.
        out: the output file.
        load: reads the input (called when its turn comes, so a cohort holds one at a time).
        inputs: files the output must not be (inputs are never overwritten).
        slice_thickness: this scan's ``--slice-thickness`` where it has its own (BIDS
            metadata); ``None``: the command's.
        before_write: called with the restoration before the volume is written (a BIDS
            sidecar, written first so that an existing volume always has its sidecar).
        cleanup: called when writing the volume failed (removes that sidecar).
        guide: the guide of a guided restore (a file or DICOM folder; ``--guide``, or the
            session's isotropic scan in ``bids``); ``None``: unguided.
    """

    name: str
    out: Path
    load: Callable[[], Volume]
    inputs: tuple[Path, ...] = ()
    slice_thickness: float | str | None = None
    before_write: Callable[[Restoration, Volume], None] | None = None
    cleanup: Callable[[], None] | None = None
    guide: Path | None = None


def add_restore_run_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of how scans are restored and written, shared by ``restore`` and ``bids``."""
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
        "containing the thick axis fused (auto: the measured best per second, one; both "
        "for a restore that uses a guide)",
    )
    parser.add_argument(
        "--consistency",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="make the result's simulated thick slices equal the input's (a Gaussian slice "
        "profile as thick as --slice-thickness; default on)",
    )
    parser.add_argument(
        "--consistency-method",
        default=DEFAULT_CONSISTENCY,
        choices=CONSISTENCY_METHODS,
        help="smooth: corrections interpolated along the thick axis (fewer slab stripes when "
        "the scan's slices are not the model's); projection: the orthogonal projection "
        f"(default {DEFAULT_CONSISTENCY})",
    )
    parser.add_argument(
        "--destripe",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="remove from the network's output the detail that repeats once per slab (the "
        "'venetian blind' stripes of sagittal and coronal views), before the data "
        "consistency (default on)",
    )
    parser.add_argument(
        "--slice-thickness",
        type=slice_thickness_type,
        default="auto",
        metavar="MM|auto|spacing",
        help="acquired slice thickness in mm where it differs from the slice spacing (a gap: "
        "5 mm slices every 6.5 mm; or overlapping slices): the adaptation and the data "
        "consistency model slices that thick. auto (default): a DICOM series' SliceThickness "
        "tag, or the SliceThickness of a BIDS/dcm2niix JSON sidecar beside the input "
        "(scan.json for scan.nii.gz) when there is one, else the spacing; spacing: as thick "
        "as the spacing, tags and sidecars ignored",
    )
    add_network_run_arguments(parser)
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument(
        "--batch-size",
        type=int_at_least(1),
        default=None,
        metavar="N",
        help="planes per forward pass (memory grows with it; default 1 on a CPU, where "
        "larger batches were slower, and 8 on a GPU)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_dtype_argument(parser)
    parser.add_argument(
        "--shard",
        metavar="I/N",
        help="restore only the I-th of N shares of the inputs (I from 1 to N; every N-th "
        "input sorted by output name), to split a cohort over machines. Default: from a "
        "SLURM job array (SLURM_ARRAY_TASK_ID/SLURM_ARRAY_TASK_COUNT) or torchrun "
        "(RANK/WORLD_SIZE) when set; 1/1: all inputs whatever the environment says",
    )
    parser.add_argument(
        "--report",
        action="store_true",
        help="write report.html into the output folder: a self-contained QC page with three "
        "planes of every scan's input and output, its factor, model, time, slab-stripe index "
        "and warnings",
    )


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "restore",
        help="restore thick-slice scans to isotropic volumes (TransMRSR)",
        description=(
            "INPUT OUTPUT restores one scan (a NIfTI/MGZ file or a folder holding one DICOM "
            "series); INPUT... --out-dir DIR restores many (files, and folders searched for "
            "NIfTI/MGZ files and DICOM series), naming each output after its input (a DICOM "
            "series: after its SeriesDescription and SeriesNumber) plus --suffix. The thick "
            "axis and factor come from the header unless given; the output is on the "
            "isotropic grid that `upsample` writes (with --resolution, at that spacing; or on "
            "--like's grid), in the input's intensity range. Existing outputs are skipped "
            "unless --overwrite."
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
    parser.add_argument("--like", metavar="REFERENCE", help="write onto this volume's grid")
    parser.add_argument(
        "--guide",
        metavar="ISO",
        help="another contrast of the same head from the same session, finer than the input "
        "(an isotropic T1: a NIfTI/MGZ file or a DICOM series folder; one guide for every "
        "input in --out-dir mode): registered rigidly onto each input, checked, and added "
        "to the restore by a guide branch fitted to each scan (docs/restore.md)",
    )
    add_guide_arguments(parser)
    add_restore_run_arguments(parser)
    parser.set_defaults(func=run)


def add_guide_arguments(parser: argparse.ArgumentParser) -> None:
    """What to do with a guide: shared by ``restore --guide`` and ``bids --guide-suffix``."""
    parser.add_argument(
        "--guide-fallback",
        action="store_true",
        help="when the guide is refused (failed registration, a guide that covers less than "
        "the input's head, another head), restore without it with a warning instead of "
        "failing",
    )
    parser.add_argument(
        "--guide-steps",
        type=int,
        default=GuideFitConfig.steps,
        metavar="STEPS",
        help="steps of the guide branch's fit to each scan (default "
        f"{GuideFitConfig.steps}); 0: no fit (only a model trained with a guide uses it)",
    )
    parser.add_argument(
        "--no-guide-check",
        dest="guide_check",
        action="store_false",
        help="use the guide even when it does not look like the scan's head once registered "
        "(little edge similarity, and none that peaks at the registered pose): for a true "
        "guide the check refuses; the registration's and the coverage's checks still apply",
    )
    parser.add_argument(
        "--save-guide-transform",
        action="store_true",
        help="write the guide's rigid transform beside each output (OUTPUT stem + "
        "_guide.tfm, ITK text format: guide onto input, in world coordinates)",
    )


def guide_transform_path(out: Path) -> Path:
    """Where ``--save-guide-transform`` writes the transform of the restore written to ``out``."""
    name = out.name
    for ending in (".nii.gz", ".nii", ".mgz"):
        if name.endswith(ending):
            name = name[: -len(ending)]
            break
    return out.with_name(f"{name}_guide.tfm")


def _is_volume(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(READABLE_SUFFIXES)


def _hidden(path: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def _stem(path: Path) -> str:
    name = path.name
    for suffix in sorted(READABLE_SUFFIXES, key=len, reverse=True):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def _file_job(path: Path, out: Path) -> Job:
    return Job(str(path), out, lambda: as_volume(path), (path,))


def _folder_jobs(folder: Path, out_dir: Path, suffix: str) -> list[Job]:
    """The NIfTI/MGZ files under ``folder`` and its DICOM series; series that are no scan to
    restore (localizers, other modalities, 4-D) are skipped with a warning, as a study export
    holds them beside the scans."""
    jobs = [
        Job(str(p), out_dir / f"{_stem(p)}{suffix}.nii.gz", lambda p=p: as_volume(p), (p,))
        for p in sorted(folder.rglob("*"))
        if _is_volume(p) and not _hidden(p, folder)
    ]
    from transmrsr import dicom

    for series in dicom.find_series(folder):
        try:
            dicom.check_series_kind(series)
        except TransMRSRError as exc:
            log.warning("skipped: %s", exc)
            continue
        out = out_dir / f"{series.name}{suffix}.nii.gz"
        jobs.append(Job(series.label, out, lambda s=series: dicom.load_series(s)))
    return jobs


def plan_jobs(args: argparse.Namespace) -> list[Job]:
    """The jobs of the positional paths and --out-dir, whole cohort (before any shard)."""
    paths = [Path(p) for p in args.paths]
    if args.out_dir is None:
        if len(paths) != 2:
            raise TransMRSRError(
                "give INPUT OUTPUT for one scan, or inputs with --out-dir DIR for many"
            )
        if not paths[0].exists():
            raise TransMRSRError(f"{paths[0]}: no such file")
        return [_file_job(paths[0], paths[1])]
    out_dir = Path(args.out_dir)
    if not out_dir.is_dir():
        try:
            out_dir.mkdir(parents=True, exist_ok=True)  # shards of one cohort race here
        except OSError as exc:
            raise OutputError(f"{out_dir}: cannot create ({exc.strerror})") from None
    jobs: list[Job] = []
    for path in paths:
        if path.is_dir():
            found = _folder_jobs(path, out_dir, args.suffix)
            dicom_names = [job for job in found if not job.inputs]
            if len(paths) > 1:  # several folders given: their series names start with its name
                for job in dicom_names:
                    job.out = out_dir / f"{path.name}_{job.out.name}"
            jobs.extend(found)
        elif path.exists():
            jobs.append(_file_job(path, out_dir / f"{_stem(path)}{args.suffix}.nii.gz"))
        else:
            raise TransMRSRError(f"{path}: no such file or folder")
    if not jobs:
        raise TransMRSRError("no NIfTI/MGZ volumes or DICOM series among the inputs")
    names = [job.out for job in jobs]
    if len(set(names)) != len(names):
        raise TransMRSRError("two inputs have the same name; their outputs would collide")
    return jobs


def select_shard(jobs: list[Job], shard: Shard | None) -> list[Job]:
    """This process's share of a cohort (all of it without a shard), logged."""
    if shard is None:
        return jobs
    mine = shard.select(jobs, key=lambda job: str(job.out))
    log.info("shard %s (from %s): %d of %d inputs", shard, shard.source, len(mine), len(jobs))
    return mine


def pending(
    jobs: Sequence[Job], *, overwrite: bool, extra_inputs: Sequence[Path] = ()
) -> list[Job]:
    """The jobs still to do, after every output location was tried (before any work: an
    unwritable folder fails at once, not after the first scan); existing outputs skipped
    unless ``overwrite``."""
    todo = []
    for job in jobs:
        check_output_path(job.out, *job.inputs, *extra_inputs)
        if job.out.exists() and not overwrite:
            log.info("%s exists, skipped (use --overwrite to redo it)", job.out)
            continue
        todo.append(job)
    return todo


@dataclass
class Report:
    """Where the QC page goes, and the whole cohort it shows (every shard's scans).

    The page is rebuilt from the entries at most every ``interval`` seconds while a cohort
    runs, and at its end: a page of a thousand scans is large, and rewriting it after every
    scan would cost more than the scans.
    """

    folder: Path
    scans: list[tuple[str, Path]]
    interval: float = 60.0
    _written: float = field(default=-math.inf, init=False, repr=False)

    def restored(
        self, job: Job, volume: Volume, result: Restoration, model: LoadedModel, seconds: float
    ) -> None:
        """Keep the entry of a restored scan (picture, numbers, warnings)."""
        from transmrsr.evaluation import qc  # matplotlib: only for --report

        entry = qc.entry_for(
            volume,
            result.volume,
            input_name=job.name,
            output=job.out,
            seconds=seconds,
            factor=result.factor,
            thick_axis=axis_name(result.thick_axis, volume.affine),
            model=model,
            model_source=result.model_source,
            precision=result.precision,
            stripe_index=result.stripe_index,
            cubic_stripe_index=result.cubic_stripe_index,
        )
        self._keep(entry)

    def failed(self, job: Job, error: str, seconds: float) -> None:
        """Keep the entry of a scan that failed, with its error."""
        from transmrsr.evaluation import qc

        self._keep(qc.failed_entry(job.name, job.out, error, seconds))

    def _keep(self, entry: Any) -> None:
        from transmrsr.evaluation import qc

        qc.save_entry(self.folder, entry)
        if time.monotonic() - self._written >= self.interval:
            self.write()

    def write(self) -> None:
        from transmrsr.evaluation import qc

        qc.write_report(self.folder, self.scans)
        self._written = time.monotonic()


def restore_jobs(
    todo: Sequence[Job],
    args: argparse.Namespace,
    *,
    like: Volume | None = None,
    report: Report | None = None,
) -> int:
    """Restore each job in turn with one loaded model; 0, or a one-line error naming how many
    failed. A scan that fails is logged and the others go on (one scan alone: its error is the
    command's); an output that cannot be written (:class:`OutputError`) stops the cohort,
    since the next would fail alike. The model is loaded after the first input reads, so that
    a bad single input fails before that wait."""
    device = resolve_device(args.device) if todo else None
    models: dict[str, LoadedModel] = {}
    guides: dict[Path, Volume] = {}  # the last guide read: a cohort usually shares it
    failures = 0
    try:
        for job in todo:
            start = time.perf_counter()
            try:
                volume = job.load()
                guide = None
                if job.guide is not None:
                    if job.guide not in guides:
                        guides.clear()
                        guides[job.guide] = as_volume(job.guide, name="guide")
                    guide = guides[job.guide]
                if args.model not in models:
                    models[args.model] = _load_model(args.model, device)
                model = models[args.model]
                result = _restore(volume, job, args, model, device, like, guide)
                _write(job, result, volume, args)
            except (OutputError, _ModelError):
                raise
            except TransMRSRError as exc:
                if report is not None:
                    report.failed(job, str(exc), time.perf_counter() - start)
                if len(todo) == 1:
                    raise
                message = str(exc)
                named = message if message.startswith(job.name) else f"{job.name}: {message}"
                log.error("%s", named)
                failures += 1
                continue
            seconds = time.perf_counter() - start
            _log_restored(job, volume, result, seconds)
            if report is not None:
                report.restored(job, volume, result, model, seconds)
    finally:
        if report is not None:
            with contextlib.suppress(TransMRSRError):
                report.write()
    if failures:
        raise TransMRSRError(f"{failures} of {len(todo)} inputs failed (see above)")
    return 0


class _ModelError(TransMRSRError):
    """The model could not be loaded: the command's error, not one scan's."""


def _load_model(name: str, device: object) -> LoadedModel:
    try:
        model = load_model(name)
    except TransMRSRError as exc:
        raise _ModelError(str(exc)) from None
    log.info("model %s on %s", model.source, device)
    return model


def _log_restored(job: Job, volume: Volume, result: Restoration, seconds: float) -> None:
    log.info(
        "restored %s: axis %d (%s) x%.4g, %s -> %s, %d plane orientation(s), model %s in %s, "
        "%.1f s -> %s",
        job.name,
        result.thick_axis,
        axis_name(result.thick_axis, volume.affine),
        result.factor,
        volume.shape,
        result.volume.shape,
        len(result.slice_axes),
        Path(result.model_source).name,
        result.precision,
        seconds,
        job.out,
    )


def _restore(
    volume: Volume,
    job: Job,
    args: argparse.Namespace,
    model: LoadedModel,
    device: object,
    like: Volume | None,
    guide: Volume | None = None,
) -> Restoration:
    """The Python interface's restore (transmrsr.api.run_restore), with what the log needs."""
    thickness = job.slice_thickness if job.slice_thickness is not None else args.slice_thickness
    transform = None
    if guide is not None and getattr(args, "save_guide_transform", False):
        transform = guide_transform_path(job.out)
    return run_restore(
        volume,
        model=model,
        axis=getattr(args, "axis", None),
        factor=getattr(args, "factor", None),
        resolution=getattr(args, "resolution", None),
        planes=args.planes,
        like=like,
        batch_size=args.batch_size,
        device=device,  # type: ignore[arg-type]
        progress=not args.no_progress,
        consistency=args.consistency_method if args.consistency else False,
        destripe=args.destripe,
        adapt=adapt_config(args) or 0,
        precision=args.precision,
        slice_thickness=thickness,
        guide=guide,
        guide_fallback=getattr(args, "guide_fallback", False),
        save_guide_transform=transform,
        guide_steps=getattr(args, "guide_steps", GuideFitConfig.steps),
        guide_check=getattr(args, "guide_check", True),
    )


def _write(job: Job, result: Restoration, volume: Volume, args: argparse.Namespace) -> None:
    """The job's sidecar (if any), then its volume; the sidecar removed if the volume fails."""
    if job.before_write is not None:
        job.before_write(result, volume)
    try:
        save_volume(result.volume, job.out, dtype=args.dtype, description=result.describe())
    except BaseException:
        if job.cleanup is not None:
            with contextlib.suppress(OSError):
                job.cleanup()
        raise


def run(args: argparse.Namespace) -> int:
    if args.out_dir is None and args.shard is not None:
        raise TransMRSRError("--shard splits a cohort: give the inputs with --out-dir DIR")
    if args.out_dir is None and args.report:
        raise TransMRSRError("--report writes DIR/report.html: give the inputs with --out-dir DIR")
    shard = resolve_shard(args.shard, os.environ) if args.out_dir is not None else None
    jobs = plan_jobs(args)
    if args.guide is not None:
        guide = Path(args.guide)
        if not guide.exists():
            raise TransMRSRError(f"{guide}: no such guide file or folder")
        for job in jobs:
            job.guide = guide
    mine = select_shard(jobs, shard)
    extra = [Path(args.like)] if args.like else []
    if args.guide is not None:
        extra.append(Path(args.guide))
    todo = pending(mine, overwrite=args.overwrite, extra_inputs=extra)
    report = None
    if args.report:
        folder = check_writable_folder(Path(args.out_dir), what="--out-dir")
        report = Report(folder, [(job.name, job.out) for job in jobs])
    like = as_volume(args.like, name="like", require_signal=False) if args.like else None
    return restore_jobs(todo, args, like=like, report=report)
