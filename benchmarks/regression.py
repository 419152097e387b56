"""Regression suite: the default ``restore`` on every held-out real volume, against a floor.

A default of ``transmrsr restore`` (a model file, the adaptation, the clean-up steps) is better
only when it is better everywhere. This script runs the default restore exactly as a user runs
it, ``transmrsr restore THICK OUT`` in a subprocess (with ``--slice-thickness`` only in the
cases where the thickness is told), on a fixed suite of held-out volumes of every contrast we
have, and scores each restoration against its reference next to cubic interpolation of the same
input:

- simulated thick slices (SPEC degradation along SI) of real T1s without skull (ds002748
  subjects held out from every shipped file, ``stroke_t1`` of another site), a routine T1 with
  skull (``seg3d_epilepsy_t1``, brain mask from BET's Python port), two T2s, a FLAIR and the
  MNI152 template, at x4 and x8 (x6 on some), the Gaussian slices as thick as their spacing not
  told and told, a slice gap (slices 0.75 of their spacing) told and not, and a flat-top
  (spin-echo) profile;
- the real thick-slice PD scan (``papaya_pd_thick7mm``), which has no reference: its slab-stripe
  index over cubic interpolation's.

Each case records the brain- and head-masked PSNR/SSIM gains over cubic, the paper-protocol
gain, the slab-stripe index of the restoration over cubic's, the restore's wall time and its
peak resident memory. Cases run in parallel processes when the cores allow (``--jobs``; each
restore then gets ``cpu_count / jobs`` threads), every finished case is kept in ``--work`` so
that a killed run resumes where it stopped, and the suite ends by writing ``RESULTS.json`` and
``RESULTS.md`` (atomically) to ``--out``.

``--tree DIR`` restores with another checkout's code and model files (its ``transmrsr`` package
goes first on ``PYTHONPATH``); inputs, cubic interpolation and scores are always this
checkout's, so that two releases are scored on identical inputs. The committed baselines were
made that way (docs/evaluation.md, "The regression suite")::

    git worktree add ../rel-2026-11-28 release-2026-11-28
    python benchmarks/regression.py --tree ../rel-2026-11-28 --label release-2026-11-28 \\
        --out benchmarks/regression/baselines/2026-11-28

``--compare BASELINE.json [...]`` runs nothing: it reads ``--results`` (default the committed
``RESULTS.json``), takes as each case's floor the best brain-masked PSNR gain of the baselines,
prints the change per case and exits 1 when any case falls more than :data:`TOLERANCE_DB`
below its floor, when a case of the baselines was not measured, or when a stripe ratio passes
:data:`MAX_STRIPE_RATIO`::

    python benchmarks/regression.py                       # about 40 min on a 2-core CPU
    python benchmarks/regression.py --compare benchmarks/regression/baselines/*/RESULTS.json
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import dataclasses
import datetime
import json
import logging
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger("regression")

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
DEFAULT_OUT = ROOT / "benchmarks" / "regression"
#: A case may lose at most this much brain-masked PSNR gain against its floor.
TOLERANCE_DB = 0.05
#: A restoration's slab-stripe index may be at most this many times cubic interpolation's.
MAX_STRIPE_RATIO = 1.3
#: A guided case may lose at most this much against the same case restored without the guide
#: (a wrong guide must be refused or cost nothing; issue 40).
GUIDE_TOLERANCE_DB = 0.1
#: Version of the suite's definition; results of another version are not resumed from.
SUITE_VERSION = 1
#: Where a guided case's guide is moved to, in its header (rotation about the head's centre in
#: degrees, translation in mm): two series of one session are never quite aligned, and the
#: registration must find it (docs/restore.md, "Guided restoration").
GUIDE_MOTION = {"rotation_deg": (4.0, -3.0, 2.0), "translation_mm": (5.0, -4.0, 6.0)}


@dataclass(frozen=True)
class Reference:
    """A held-out volume of the suite: where it comes from and how it is masked.

    ``brain``: ``auto`` (the automatic foreground of a skull-stripped volume, which is its
    brain), ``bet`` (BET's Python port on the head, cached in the work folder) or ``mni`` (the
    template's own brain mask). ``path`` is relative to ``../shared/data``; ``None`` for the
    MNI152 template that nilearn ships.
    """

    name: str
    path: str | None
    contrast: str
    skull: bool
    brain: str
    #: a real thick-slice scan without reference: only its stripes are measured
    thick: bool = False


REFERENCES: dict[str, Reference] = {
    r.name: r
    for r in (
        Reference("sub-10", "ds002748/sub-10_T1w.nii.gz", "T1", False, "auto"),
        Reference("sub-20", "ds002748/sub-20_T1w.nii.gz", "T1", False, "auto"),
        Reference("sub-53", "ds002748/sub-53_T1w.nii.gz", "T1", False, "auto"),
        Reference("stroke_t1", "mri/stroke_t1.nii.gz", "T1", False, "auto"),
        Reference("seg3d_t1", "mri/seg3d_epilepsy_t1.nii.gz", "T1", True, "bet"),
        Reference("stroke_t2", "mri/stroke_t2.nii.gz", "T2", False, "auto"),
        Reference("m2208_t2", "mri/m2208_t2w.nii.gz", "T2", False, "auto"),
        Reference("flair", "mri/flair.nii.gz", "FLAIR", False, "auto"),
        Reference("mni152", None, "T1 template", False, "mni"),
        Reference("papaya_pd", "mri/papaya_pd_thick7mm.nii.gz", "PD", True, "auto", thick=True),
    )
}


@dataclass(frozen=True)
class Case:
    """One restore of the suite: a reference made thick along SI by ``factor`` with slices of
    ``profile`` shape, ``thickness`` times their spacing thick, the thickness ``told`` to
    ``restore`` or not. For a real thick scan only ``reference`` matters."""

    reference: str
    factor: float = 4.0
    profile: str = "gaussian"
    thickness: float = 1.0
    told: bool = False
    #: a guided restore (``--guide``) with this reference, moved by :data:`GUIDE_MOTION`
    guide: str | None = None
    #: ``--guide-fallback``: a guide that may be refused (another head's)
    fallback: bool = False

    @property
    def id(self) -> str:
        ref = REFERENCES[self.reference]
        if ref.thick:
            return f"{self.reference}_real"
        shape = self.profile if self.thickness == 1.0 else f"{self.profile}-{self.thickness:g}"
        told = "told" if self.told else "not-told"
        guide = "" if self.guide is None else f"_guide-{self.guide}"
        return f"{self.reference}_x{self.factor:g}_{shape}_{told}{guide}"


def default_suite() -> list[Case]:
    """The fixed suite (34 cases). Change a case only with :data:`SUITE_VERSION`; a new case
    needs no new version (finished cases stay valid, the new one is run)."""
    x4 = ["sub-10", "sub-20", "sub-53", "stroke_t1", "seg3d_t1", "stroke_t2", "m2208_t2"]
    x4 += ["flair", "mni152"]
    x8 = ["sub-10", "stroke_t1", "seg3d_t1", "stroke_t2", "m2208_t2", "flair", "mni152"]
    cases = [Case(r, 4.0) for r in x4] + [Case(r, 8.0) for r in x8]
    cases += [Case(r, 6.0) for r in ("seg3d_t1", "stroke_t2", "mni152")]
    cases += [Case(r, 4.0, told=True) for r in ("sub-10", "seg3d_t1", "stroke_t2")]
    cases += [Case(r, 4.0, thickness=0.75) for r in ("mni152", "stroke_t2")]
    cases += [Case("mni152", 4.0, thickness=0.75, told=True)]
    cases += [Case(r, 4.0, profile="flat-top") for r in ("seg3d_t1", "stroke_t2")]
    cases += [Case("papaya_pd")]
    # Guided by the same patient's scan of another contrast (one patient, co-registered, moved
    # apart here), and by another subject's T1, which must be refused or cost nothing.
    cases += [Case(r, k, guide="stroke_t1") for r in ("stroke_t2", "flair") for k in (4.0, 8.0)]
    cases += [Case("stroke_t1", 4.0, guide="stroke_t2")]
    cases += [Case("stroke_t2", 4.0, guide="sub-10", fallback=True)]
    return cases


# -- inputs ------------------------------------------------------------------------------------


def load_reference(ref: Reference, work: Path):
    """The reference volume and its brain mask (a :class:`~transmrsr.io.Volume` or ``None``
    for the automatic mask)."""
    from transmrsr.io import load_volume
    from transmrsr.templates import mni152_brain_mask, mni152_t1

    if ref.path is None:
        return mni152_t1(), mni152_brain_mask()
    volume = load_volume(SHARED / ref.path)
    if ref.brain == "bet":
        return volume, bet_mask(volume, work / "masks" / f"{ref.name}_brain.nii.gz")
    return volume, None


def bet_mask(volume, cache: Path):
    """BET's brain mask of ``volume`` (the ``brainextractor`` port), made once and cached."""
    from transmrsr.io import load_volume, save_volume

    if not cache.is_file():
        try:
            from brainextractor import BrainExtractor
        except ImportError:
            raise SystemExit(
                "the suite's routine T1 needs a BET brain mask: pip install brainextractor"
            ) from None
        import nibabel as nib

        cache.parent.mkdir(parents=True, exist_ok=True)
        bet = BrainExtractor(img=nib.Nifti1Image(volume.data.astype("float32"), volume.affine))
        with open(os.devnull, "w") as quiet, contextlib.redirect_stdout(quiet):
            bet.run()
        mask = np.asarray(bet.compute_mask(), dtype=np.float32)
        save_volume(volume.with_data(mask), cache, dtype="uint8")
    return load_volume(cache)


def available(case: Case) -> bool:
    """Whether this machine has the case's volumes."""
    names = [case.reference] + ([] if case.guide is None else [case.guide])
    return all(REFERENCES[n].path is None or (SHARED / REFERENCES[n].path).is_file() for n in names)


def restores_guided(tree: Path) -> bool:
    """Whether ``restore --guide`` works in ``tree`` with its default model: it fits a guide
    branch to each scan (``transmrsr/inference/guided.py``) or ships a guided model."""
    package = tree / "transmrsr"
    return (package / "inference" / "guided.py").is_file() or any(
        (package / "weights").glob("*guided*.safetensors")
    )


def moved_guide(ref: Reference, work: Path):
    """A guide reference with its header moved by :data:`GUIDE_MOTION` about its head's
    centre: the same voxels, somewhere else in the scanner."""
    from transmrsr.registration import head_center, rigid_matrix

    volume, _ = load_reference(ref, work)
    motion = rigid_matrix(**GUIDE_MOTION, center=head_center(volume))
    return volume.with_data(volume.data, motion @ volume.affine)


# -- one case ----------------------------------------------------------------------------------


def restore_command(
    thick: Path, out: Path, thickness_mm: float | None, extra: Sequence[str] = ()
) -> list[str]:
    """``transmrsr restore`` as a user types it (``extra``: options of a candidate default)."""
    cmd = [sys.executable, "-m", "transmrsr", "restore", str(thick), str(out), "--no-progress"]
    if thickness_mm is not None:
        cmd += ["--slice-thickness", f"{thickness_mm:.6g}"]
    return [*cmd, *extra]


def run_restore(cmd: list[str], tree: Path, threads: int, log_file: Path) -> tuple[float, float]:
    """Run ``cmd`` with ``tree`` first on the path; its wall time (s) and peak memory (GiB)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(tree), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["OMP_NUM_THREADS"] = str(threads)
    env["MKL_NUM_THREADS"] = str(threads)
    t0 = time.perf_counter()
    with open(log_file, "w") as handle:
        proc = subprocess.Popen(
            cmd, env=env, stdout=handle, stderr=subprocess.STDOUT, cwd=log_file.parent
        )
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        tail = log_file.read_text().strip().splitlines()[-1:] or ["(no output)"]
        raise RuntimeError(f"restore exited {proc.returncode}: {tail[0]}")
    return seconds, usage.ru_maxrss / 2**20


def header_factor(affine: np.ndarray, axis: int) -> float:
    """The factor ``restore`` reads from a header: the thick spacing over the finest other."""
    from transmrsr.io import voxel_sizes

    sizes = voxel_sizes(affine)
    return float(sizes[axis] / np.delete(sizes, axis).min())


def _scores(comparison) -> dict[str, float]:
    return {
        "psnr_masked": comparison.psnr_masked,
        "ssim_masked": comparison.ssim_masked,
        "psnr_paper": comparison.psnr_paper,
        "ssim_paper": comparison.ssim_paper,
    }


def on_reference(volume, ref) -> np.ndarray:
    """``volume``'s voxels on ``ref``'s grid (a whole-voxel crop or extension of it, as
    ``restore`` writes when the slice count is not a multiple of the factor), zero elsewhere."""
    from transmrsr.geometry import grid_overlap

    overlap = grid_overlap(volume.shape, volume.affine, ref.shape, ref.affine)
    out = np.zeros(ref.shape, np.float32)
    if overlap is not None:
        out[overlap.b_slices] = volume.data[overlap.a_slices]
    return out


def run_case(
    case: Case,
    tree: Path,
    work: Path,
    threads: int,
    keep: bool,
    extra: Sequence[str] = (),
    figures: Path | None = None,
) -> dict:
    """Make the case's input, restore it with ``tree``'s CLI (plus the options ``extra``),
    score it; the result record. ``figures``: write a PNG of one plane there (restored,
    cubic, reference and their errors)."""
    from transmrsr.degradation import degrade, slice_profile
    from transmrsr.evaluation.compare import compare_volumes
    from transmrsr.geometry import resolve_axis
    from transmrsr.interpolation import upsample
    from transmrsr.io import load_volume, save_volume, voxel_sizes
    from transmrsr.stripes import head_mask, stripe_index, stripe_ratio

    ref_spec = REFERENCES[case.reference]
    folder = work / "cases" / case.id
    folder.mkdir(parents=True, exist_ok=True)
    ref, brain = load_reference(ref_spec, work)
    axis = resolve_axis("SI", ref.affine)
    record: dict[str, object] = {"case": dataclasses.asdict(case), "contrast": ref_spec.contrast}
    record["skull"] = ref_spec.skull
    if ref_spec.thick:
        axis = int(np.argmax(voxel_sizes(ref.affine)))
        factor = header_factor(ref.affine, axis)
        thick_path = SHARED / ref_spec.path
        out = folder / "restored.nii.gz"
        out.unlink(missing_ok=True)  # a kept output of an earlier run: restore would skip it
        seconds, peak = run_restore(
            restore_command(thick_path, out, None, extra), tree, threads, folder / "restore.log"
        )
        restored = load_volume(out)
        cubic_data, _ = upsample(ref.data, ref.affine, axis, factor, "cubic")
        head = head_mask(cubic_data)
        ours = stripe_index(restored.data, axis, factor, mask=head)
        cubic = stripe_index(cubic_data, axis, factor, mask=head)
        record.update(
            factor=factor,
            stripe_index=ours,
            stripe_index_cubic=cubic,
            stripe_ratio=stripe_ratio(ours, cubic),
        )
    else:
        fwhm = case.factor * case.thickness
        profile = slice_profile(case.profile, case.factor, fwhm)
        lr_data, lr_affine = degrade(ref.data, ref.affine, axis, case.factor, profile=profile)
        thick = ref.with_data(lr_data.astype(np.float32), lr_affine)
        thick_path = folder / "thick.nii.gz"
        save_volume(thick, thick_path)
        spacing = float(voxel_sizes(lr_affine)[axis])
        told_mm = spacing * case.thickness if case.told else None
        options = [arg.replace("{spacing}", f"{spacing:.6g}") for arg in extra]
        if abs(header_factor(lr_affine, axis) - case.factor) > 1e-3:
            # thin voxels finer in-plane than along the thick axis (ds002748: 0.87 x 0.87 x
            # 1 mm): restore onto the reference's grid, as a user who wants that grid would
            options = ["--factor", f"{case.factor:g}", *options]
        if case.guide is not None:
            guide_path = folder / "guide.nii.gz"
            save_volume(moved_guide(REFERENCES[case.guide], work), guide_path)
            options = [*options, "--guide", str(guide_path)]
            if case.fallback:
                options.append("--guide-fallback")
        out = folder / "restored.nii.gz"
        out.unlink(missing_ok=True)  # a kept output of an earlier run: restore would skip it
        seconds, peak = run_restore(
            restore_command(thick_path, out, told_mm, options),
            tree,
            threads,
            folder / "restore.log",
        )
        restored = load_volume(out)
        cubic_data, cubic_affine = upsample(lr_data, lr_affine, axis, case.factor, "cubic")
        cubic = thick.with_data(cubic_data, cubic_affine)
        period = case.factor
        for label, mask in {"brain": brain, "head": None}.items():
            base = compare_volumes(cubic, ref, mask=mask, thick_axis=axis, period=period)
            ours = compare_volumes(restored, ref, mask=mask, thick_axis=axis, period=period)
            record[label] = {"cubic": _scores(base), "restored": _scores(ours)}
            record[f"gain_{label}_psnr"] = ours.psnr_masked - base.psnr_masked
            record[f"gain_{label}_ssim"] = ours.ssim_masked - base.ssim_masked
        record["gain_paper_psnr"] = ours.psnr_paper - base.psnr_paper
        if figures is not None:
            from transmrsr.evaluation.figures import methods_figure

            figures.mkdir(parents=True, exist_ok=True)
            methods_figure(
                {"cubic": on_reference(cubic, ref), "restored": on_reference(restored, ref)},
                ref.data,
                ref.affine,
                axis,
                figures / f"{case.id}.png",
                title=f"{case.id}: brain {record['gain_brain_psnr']:+.2f} dB over cubic",
            )
        record.update(
            factor=case.factor,
            stripe_index=ours.stripe_index,
            stripe_index_cubic=base.stripe_index,
            stripe_ratio=stripe_ratio(ours.stripe_index, base.stripe_index),
        )
    record.update(seconds=seconds, peak_gib=peak, threads=threads)
    if not keep:
        shutil.rmtree(folder, ignore_errors=True)
    return record


# -- the suite ---------------------------------------------------------------------------------


def _case_file(work: Path, case_id: str) -> Path:
    return work / "results" / f"{case_id}.json"


def _worker(
    case: Case,
    tree: str,
    work: str,
    threads: int,
    keep: bool,
    extra: tuple[str, ...],
    figures: str | None = None,
) -> tuple[str, dict]:
    logging.basicConfig(level=logging.WARNING)
    figure_dir = None if figures is None else Path(figures)
    try:
        return case.id, run_case(case, Path(tree), Path(work), threads, keep, extra, figure_dir)
    except Exception as exc:  # one failed case is reported, the others still run
        return case.id, {"error": f"{type(exc).__name__}: {exc}", "seconds": 0.0, "peak_gib": 0.0}


def write_json(path: Path, payload: dict) -> None:
    """``payload`` to ``path`` atomically (a temporary file renamed over it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def _git(tree: Path, *args: str) -> str:
    try:
        return subprocess.run(
            ["git", "-C", str(tree), *args], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def run_suite(
    cases: Sequence[Case],
    tree: Path,
    work: Path,
    jobs: int,
    keep: bool = False,
    extra: Sequence[str] = (),
    runner: Callable[..., tuple[str, dict]] = _worker,
    figures: Path | None = None,
) -> dict[str, dict]:
    """Every case's record: finished ones read from ``work``, the rest run in ``jobs``
    processes, each saved as soon as it ends."""
    threads = max(1, (os.cpu_count() or 1) // jobs)
    results: dict[str, dict] = {}
    todo = []
    for case in cases:
        done = _case_file(work, case.id)
        if done.is_file():
            record = json.loads(done.read_text())
            if record.get("suite_version") == SUITE_VERSION:
                results[case.id] = record
                continue
        todo.append(case)
    log.info("%d cases done before, %d to run in %d process(es)", len(results), len(todo), jobs)
    refs = {REFERENCES[c.reference] for c in todo}
    for ref in refs:
        if ref.brain == "bet":
            load_reference(ref, work)
    with concurrent.futures.ProcessPoolExecutor(max_workers=jobs) as pool:
        futures = [
            pool.submit(
                runner,
                case,
                str(tree),
                str(work),
                threads,
                keep,
                tuple(extra),
                None if figures is None else str(figures),
            )
            for case in todo
        ]
        for future in concurrent.futures.as_completed(futures):
            case_id, record = future.result()
            if "error" in record:
                log.error("%s failed: %s", case_id, record["error"])
                continue
            record["suite_version"] = SUITE_VERSION
            write_json(_case_file(work, case_id), record)
            results[case_id] = record
            log.info("%s: %s", case_id, summary(record))
    return {c.id: results[c.id] for c in cases if c.id in results}


def summary(record: dict) -> str:
    """One line of a case's figures."""
    parts = []
    if "gain_brain_psnr" in record:
        parts.append(f"brain {record['gain_brain_psnr']:+.3f} dB")
        parts.append(f"head {record['gain_head_psnr']:+.3f} dB")
    if record.get("stripe_ratio") is not None:
        parts.append(f"stripes {record['stripe_ratio']:.2f}x cubic")
    parts.append(f"{record['seconds']:.0f} s, {record['peak_gib']:.2f} GiB")
    return ", ".join(parts)


def _cell(record: dict, key: str, fmt: str) -> str:
    value = record.get(key)
    return "-" if value is None else format(value, fmt)


def results_markdown(payload: dict) -> str:
    """The results as a Markdown table."""
    meta = payload["meta"]
    lines = [
        f"# Regression suite: {meta['label']}",
        "",
        f"Code and models: `{meta['commit']}` ({meta['tree_name']}); run {meta['date']} on "
        f"{meta['machine']}, {meta['jobs']} case(s) at a time with {meta['threads']} thread(s) "
        f"each; suite version {meta['suite_version']}"
        + (
            f"; restore options `{' '.join(meta['restore_args'])}`"
            if meta.get("restore_args")
            else ""
        )
        + f". Command: `{meta['command']}`.",
        "",
        "Gains over cubic interpolation of the same input (PSNR dB, SSIM), brain- and "
        "head-masked; stripes: the slab-stripe index over cubic's.",
        "",
        "| case | contrast | brain PSNR | brain SSIM | head PSNR | head SSIM | stripes | time "
        "| peak memory |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for case_id, r in payload["cases"].items():
        lines.append(
            f"| {case_id} | {r['contrast']} | {_cell(r, 'gain_brain_psnr', '+.3f')} | "
            f"{_cell(r, 'gain_brain_ssim', '+.4f')} | {_cell(r, 'gain_head_psnr', '+.3f')} | "
            f"{_cell(r, 'gain_head_ssim', '+.4f')} | {_cell(r, 'stripe_ratio', '.2f')} | "
            f"{r['seconds']:.0f} s | {r['peak_gib']:.2f} GiB |"
        )
    return "\n".join(lines) + "\n"


# -- compare -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    """One case against its floor."""

    case: str
    value: float | None
    floor: float | None
    floor_from: str | None
    stripe_ratio: float | None
    failures: tuple[str, ...]

    @property
    def change(self) -> float | None:
        if self.value is None or self.floor is None:
            return None
        return self.value - self.floor


def unguided_twin(case_id: str) -> str | None:
    """The id of a guided case restored without its guide (``None`` for an unguided case)."""
    head, sep, _ = case_id.rpartition("_guide-")
    return head if sep else None


def compare(
    results: dict,
    baselines: Sequence[dict],
    tolerance: float = TOLERANCE_DB,
    max_stripes: float = MAX_STRIPE_RATIO,
) -> list[Verdict]:
    """Each case of ``results`` and of the baselines against its floor: the best
    brain-masked PSNR gain any baseline reached on it. A guided case is also held against its
    unguided twin in ``results`` (:data:`GUIDE_TOLERANCE_DB`)."""
    floors: dict[str, tuple[float, str]] = {}
    for base in baselines:
        label = base["meta"]["label"]
        for case_id, r in base["cases"].items():
            value = r.get("gain_brain_psnr")
            if value is not None and (case_id not in floors or value > floors[case_id][0]):
                floors[case_id] = (float(value), label)
    ids = list(results["cases"]) + [c for b in baselines for c in b["cases"]]
    verdicts = []
    for case_id in dict.fromkeys(ids):
        r = results["cases"].get(case_id)
        floor, source = floors.get(case_id, (None, None))
        failures = []
        value = stripes = None
        if r is None:
            failures.append("not measured")
        else:
            value = r.get("gain_brain_psnr")
            stripes = r.get("stripe_ratio")
            if floor is not None and value is not None and value < floor - tolerance:
                failures.append(f"{value - floor:+.3f} dB below the floor ({source})")
            if stripes is not None and stripes > max_stripes:
                failures.append(f"stripes {stripes:.2f}x cubic's (> {max_stripes:g})")
            twin = results["cases"].get(unguided_twin(case_id) or "")
            twin_value = None if twin is None else twin.get("gain_brain_psnr")
            if (
                value is not None
                and twin_value is not None
                and value < twin_value - GUIDE_TOLERANCE_DB
            ):
                failures.append(
                    f"{value - twin_value:+.3f} dB below the same case without its guide"
                )
        verdicts.append(Verdict(case_id, value, floor, source, stripes, tuple(failures)))
    return verdicts


def compare_table(verdicts: Sequence[Verdict]) -> str:
    """The verdicts as a Markdown table."""
    lines = [
        "| case | brain PSNR gain | floor (from) | change | stripes | verdict |",
        "|---|---|---|---|---|---|",
    ]
    for v in verdicts:
        value = "-" if v.value is None else f"{v.value:+.3f}"
        floor = "-" if v.floor is None else f"{v.floor:+.3f} ({v.floor_from})"
        change = "-" if v.change is None else f"{v.change:+.3f}"
        stripes = "-" if v.stripe_ratio is None else f"{v.stripe_ratio:.2f}"
        verdict = "; ".join(v.failures) if v.failures else "ok"
        lines.append(f"| {v.case} | {value} | {floor} | {change} | {stripes} | {verdict} |")
    return "\n".join(lines) + "\n"


def read_results(path: Path) -> dict:
    """A results file, checked enough for :func:`compare` to trust it."""
    try:
        payload = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise SystemExit(f"{path}: cannot read results ({exc})") from None
    if not isinstance(payload, dict) or not isinstance(payload.get("cases"), dict):
        raise SystemExit(f"{path}: not a regression results file (no 'cases')")
    payload.setdefault("meta", {}).setdefault("label", path.parent.name or path.stem)
    return payload


# -- command line ------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder of RESULTS.*")
    parser.add_argument(
        "--work",
        type=Path,
        help="finished cases and cached masks, for resuming (default: OUT/work, not committed)",
    )
    parser.add_argument(
        "--tree", type=Path, default=ROOT, help="checkout whose code and models restore"
    )
    parser.add_argument("--label", help="name of what is measured (default: the tree's commit)")
    parser.add_argument(
        "--jobs",
        type=int,
        default=max(1, (os.cpu_count() or 1) // 2),
        help="cases at a time (default: half the cores; each restore gets cores / jobs threads)",
    )
    parser.add_argument("--only", nargs="+", metavar="TEXT", help="cases whose id contains one")
    parser.add_argument("--keep", action="store_true", help="keep each case's volumes in --work")
    parser.add_argument(
        "--figures",
        action="store_true",
        help="write a PNG of each case to OUT/figures (one plane through the thick axis: "
        "cubic, restored, reference and the errors)",
    )
    parser.add_argument(
        "--restore-args",
        default="",
        metavar="OPTIONS",
        help="options added to every restore: a candidate default measured before it becomes "
        "one (e.g. '--adapt-scope all'; {spacing} stands for the case's slice spacing in mm); "
        "use its own --out",
    )
    parser.add_argument(
        "--guide-model",
        type=Path,
        metavar="FILE",
        help="a guided model file for the guided cases (default: the tree's shipped one; "
        "without either they are left out)",
    )
    parser.add_argument(
        "--compare",
        nargs="+",
        type=Path,
        metavar="BASELINE",
        help="run nothing: compare --results with the floor of these results files",
    )
    parser.add_argument(
        "--results", type=Path, help="results to compare (default: OUT/RESULTS.json)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    if args.compare:
        results = read_results(args.results or args.out / "RESULTS.json")
        verdicts = compare(results, [read_results(p) for p in args.compare])
        sys.stdout.write(compare_table(verdicts))
        failed = [v for v in verdicts if v.failures]
        log.info(
            "%d of %d cases at or above their floor", len(verdicts) - len(failed), len(verdicts)
        )
        return 1 if failed else 0
    if args.jobs < 1:
        parser.error("--jobs must be at least 1")
    tree = args.tree.resolve()
    if not (tree / "transmrsr" / "__init__.py").is_file():
        parser.error(f"--tree {tree}: no transmrsr package there")
    cases = [c for c in default_suite() if available(c)]
    if args.only:
        cases = [c for c in cases if any(part in c.id for part in args.only)]
    guided_options = (
        [] if args.guide_model is None else ["--model", str(args.guide_model.resolve())]
    )
    if args.guide_model is None and not restores_guided(tree):
        skipped = [c for c in cases if c.guide is not None]
        if skipped:
            log.info(
                "%d guided cases left out: %s restores no guide with its default model "
                "(--guide-model FILE measures a guided model)",
                len(skipped),
                tree,
            )
        cases = [c for c in cases if c.guide is None]
    if not cases:
        parser.error("no case to run (is ../shared/data there? does --only match?)")
    work = (args.work or args.out / "work").resolve()
    extra = shlex.split(args.restore_args)
    figures = (args.out / "figures").resolve() if args.figures else None
    results = {}
    for guided in (False, True):
        group = [c for c in cases if (c.guide is not None) == guided]
        if group:
            options = [*extra, *guided_options] if guided else extra
            results |= run_suite(group, tree, work, args.jobs, args.keep, options, figures=figures)
    commit = _git(tree, "rev-parse", "--short", "HEAD")
    dirty = _git(tree, "status", "--porcelain", "--untracked-files=no")
    payload = {
        "meta": {
            "label": args.label or commit,
            "commit": commit + ("+changes" if dirty and dirty != "unknown" else ""),
            "tree_name": tree.name,
            "date": datetime.date.today().isoformat(),
            "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
            "jobs": args.jobs,
            "threads": max(1, (os.cpu_count() or 1) // args.jobs),
            "suite_version": SUITE_VERSION,
            "restore_args": extra,
            "command": "python benchmarks/regression.py " + " ".join(argv or sys.argv[1:]),
        },
        "cases": results,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "RESULTS.json", payload)
    md = args.out / "RESULTS.md"
    tmp = md.with_name(f".{md.name}.tmp")
    tmp.write_text(results_markdown(payload))
    os.replace(tmp, md)
    sys.stdout.write(results_markdown(payload))
    missing = [c.id for c in cases if c.id not in results]
    if missing:
        log.error(
            "%d case(s) failed (run again to retry them): %s", len(missing), ", ".join(missing)
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
