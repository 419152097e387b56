"""transmrsr against a peer method, ECLARE, on the same simulated thick-slice scans.

ECLARE (Remedios et al., "ECLARE: efficient cross-planar learning for anisotropic resolution
enhancement") is self-supervised: for every scan it trains a network from scratch on that
scan's own in-plane patches, blurred and downsampled like its slices, then applies it to the
through-plane planes in two orientations and averages them. It is GPL-3.0 and pins
``scipy==1.11.4`` (so numpy below 1.28), so it is installed into a venv of its own and run
through its command ``run-eclare``; see ``docs/peers.md``::

    python3 -m venv /work/peers-venv
    /work/peers-venv/bin/pip install torch==2.13.0   # first: the CPU wheel, not CUDA's
    /work/peers-venv/bin/pip install eclare

For every case (a high-resolution volume and a factor) the thick scan is simulated with the
SPEC's Gaussian slice profile (``degrade(..., fwhm=factor)``, along ``--axis``) and written as
NIfTI; ``transmrsr restore`` (default settings, ``--slice-thickness spacing``) and
``run-eclare`` (told the same Gaussian profile with ``--relative-slice-thickness``, so it skips
its profile estimation) restore it as subprocesses, each timed (wall and CPU seconds) and its
peak memory sampled (the proportional set size of its process tree, data loader workers
included, and the largest process's ``ru_maxrss``). Both outputs and cubic interpolation are
scored against the original with :func:`transmrsr.evaluation.compare.compare_volumes` (paper
protocol and masked: in the brain mask given with ``--extra-brain-mask``, else the automatic
head mask).

ECLARE's settings, one row each: ``--eclare-patches N ...`` (its ``--n-patches``; neither
option: its defaults, a million patches: days on a CPU), and with
``--budget-match`` the patch counts whose predicted run time is ``--budget-multiples`` (default
1 and 10) times transmrsr's measured time on the case. The prediction comes from a short
calibration in ECLARE's venv: one training step and a few planes of inference with ECLARE's
own network, giving seconds per training patch and the fixed cost of its inference. When even
one training batch cannot fit a budget, the row runs that minimum and says so.

    python benchmarks/bench_peers.py \\
        --extra-brain-mask ../shared/data/mri/seg3d_epilepsy_t1.nii.gz \\
        /work/runs/masks/seg3d_epilepsy_t1_brainmask.nii.gz --factors 4 --budget-match \\
        --threads 1 --json peers.json --out-md peers_table.md
    python benchmarks/bench_peers.py --cases t1.nii.gz --factors 4 8 --device cuda  # defaults

``--threads N`` sets ``OMP_NUM_THREADS`` and ``MKL_NUM_THREADS`` for both tools alike (ECLARE
also starts one data-loader worker per thread). Run it alone: the times and memory are of a
machine shared with nothing else.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from transmrsr.degradation import degrade
from transmrsr.errors import TransMRSRError
from transmrsr.evaluation.compare import compare_volumes
from transmrsr.geometry import grid_overlap, resolve_axis
from transmrsr.interpolation import resample_to_grid, upsample
from transmrsr.io import Volume, atomic_path, load_volume, save_volume, voxel_sizes

log = logging.getLogger("bench_peers")
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "mri"
#: ``run-eclare`` beside this Python (installed with the ``peers`` extra), else in its own venv
DEFAULT_ECLARE = (
    Path(sys.executable).with_name("run-eclare")
    if Path(sys.executable).with_name("run-eclare").is_file()
    else Path("/work/peers-venv/bin/run-eclare")
)
#: ECLARE's own defaults (``run-eclare --help``)
ECLARE_BATCH = 128
ECLARE_DEFAULT_PATCHES = 1_000_000
#: seconds added to the predicted ECLARE run for reading, padding, patch centres and writing
ECLARE_FIXED_MARGIN = 10.0
SAMPLE_SECONDS = 0.5

#: Run in ECLARE's venv: seconds per training patch and per inference plane of its network
#: (WDSR, 16 blocks, 256 channels, as ``eclare.eclare.run_eclare`` builds it), fp32 as on a CPU.
CALIBRATE = """
import json, sys, time
t0 = time.perf_counter()
import torch
from eclare.models.wdsr import WDSR
sep, n_lr, d0, d1, batch, device = (float(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]),
                                    int(sys.argv[4]), int(sys.argv[5]), sys.argv[6])
n_steps = 1 if device == "cpu" else 3
model = WDSR(n_resblocks=16, num_channels=256, scale=sep).to(device)
p2 = round(sep * max(model.calc_out_patch_size([8, 8])))
startup = time.perf_counter() - t0
opt = torch.optim.Adam(model.parameters(), lr=1e-4)
x = torch.rand(batch, 1, max(1, round(p2 / sep)), 8, device=device)
y = torch.rand(batch, 1, p2, 8, device=device)
def sync():
    if device != "cpu":
        torch.cuda.synchronize()
steps = []
for _ in range(n_steps):
    t = time.perf_counter()
    loss = torch.nn.functional.mse_loss(model(x), y)
    opt.zero_grad()
    loss.backward()
    opt.step()
    sync()
    steps.append(time.perf_counter() - t)
model.eval()
planes = {}
with torch.inference_mode():
    model(torch.rand(1, 1, n_lr, d1, device=device))
    for name, width in (("angle0", d1), ("angle90", d0)):
        t = time.perf_counter()
        model(torch.rand(1, 1, n_lr, width, device=device))
        sync()
        planes[name] = time.perf_counter() - t
json.dump({"startup_s": startup, "step_s": min(steps), "batch": batch,
           "patch_hr": [p2, 8], "plane_s": planes}, sys.stdout)
"""


class BenchError(Exception):
    """Bad input: reported in one line, exit status 2."""


@dataclass
class Measured:
    """One subprocess run: wall and CPU seconds, peak memory, exit status, its log."""

    seconds: float
    cpu_seconds: float
    peak_tree_mib: float | None
    max_rss_mib: float
    returncode: int
    log: str


@dataclass
class Calibration:
    """Predicted ECLARE run time: ``fixed_s + steps * step_s`` (``batch`` patches a step)."""

    startup_s: float
    step_s: float
    batch: int
    inference_s: float

    @property
    def fixed_s(self) -> float:
        return self.startup_s + self.inference_s + ECLARE_FIXED_MARGIN

    def predict(self, n_patches: int, batch: int) -> float:
        steps = math.ceil(n_patches / batch)
        return self.fixed_s + steps * self.step_s * batch / self.batch


def patches_for_budget(budget_s: float, fixed_s: float, step_s: float, batch: int) -> int:
    """ECLARE's ``--n-patches`` whose predicted run fits ``budget_s`` (whole batches, one at
    least): ``fixed_s`` of startup and inference, ``step_s`` per training batch of ``batch``."""
    if step_s <= 0 or batch < 1:
        raise ValueError("step time and batch size must be positive")
    steps = math.floor(max(budget_s - fixed_s, 0.0) / step_s)
    return max(steps, 1) * batch


def relative_thickness(fwhm_mm: float, lr_affine: np.ndarray, axis: int) -> float:
    """The slice FWHM in the unit ECLARE's ``--relative-slice-thickness`` takes: the finest
    in-plane spacing, to which it resamples the thick axis."""
    zooms = voxel_sizes(lr_affine)
    return float(fwhm_mm / min(z for i, z in enumerate(zooms) if i != axis))


def _process_tree(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as handle:
                stat = handle.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    tree, stack = [], [root]
    while stack:
        pid = stack.pop()
        tree.append(pid)
        stack.extend(children.get(pid, []))
    return tree


def _pss_kib(pid: int) -> int:
    """Proportional set size: shared pages (a forked worker's) counted once over the tree."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as handle:
            for line in handle:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def run_measured(cmd: list[str], env: dict[str, str], log_path: Path) -> Measured:
    """Run ``cmd`` with its output to ``log_path``, sampling its tree's memory."""
    log.info("running %s", " ".join(cmd))
    sample = Path("/proc/self/smaps_rollup").is_file()
    peak_kib = 0
    with open(log_path, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
        t0 = time.perf_counter()
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if sample:
                peak_kib = max(peak_kib, sum(_pss_kib(p) for p in _process_tree(proc.pid)))
            time.sleep(SAMPLE_SECONDS)
        seconds = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    return Measured(
        seconds=seconds,
        cpu_seconds=usage.ru_utime + usage.ru_stime,
        peak_tree_mib=peak_kib / 1024 if sample else None,
        max_rss_mib=usage.ru_maxrss / 1024,
        returncode=proc.returncode,
        log=str(log_path),
    )


def calibrate(
    python: Path,
    env: dict[str, str],
    sep: float,
    lr_shape: tuple[int, ...],
    axis: int,
    batch: int,
    gpu: bool,
) -> Calibration:
    """Time ECLARE's network in its venv for this scan's shape, at the batch size it will run.

    On a CPU one training step is timed (a step's activations are allocated afresh every
    time, so the first is typical, and a smaller batch would be faster per patch); on a GPU
    the fastest of three.
    """
    d0, d1 = (n for i, n in enumerate(lr_shape) if i != axis)
    cmd = [str(python), "-c", CALIBRATE, f"{sep:g}", str(lr_shape[axis]), str(d0), str(d1)]
    cmd += [str(batch), "cuda" if gpu else "cpu"]
    log.info("calibrating ECLARE's network (%s)", " ".join(cmd[3:]))
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()[-1:] or ["no output"]
        raise BenchError(f"ECLARE calibration failed: {tail[0]}")
    raw = json.loads(done.stdout)
    inference = d0 * raw["plane_s"]["angle0"] + d1 * raw["plane_s"]["angle90"]
    cal = Calibration(raw["startup_s"], raw["step_s"], int(raw["batch"]), inference)
    log.info(
        "ECLARE predicted: %.1f s per batch of %d patches, %.0f s fixed (inference %.0f s)",
        cal.step_s,
        cal.batch,
        cal.fixed_s,
        cal.inference_s,
    )
    return cal


def on_reference_grid(volume: Volume, ref: Volume) -> tuple[Volume, bool]:
    """``volume`` as ``compare_volumes`` takes it: as is on a whole-voxel shift of the
    reference grid, else resampled onto it (cubic spline); and whether it was resampled."""
    if grid_overlap(volume.shape, volume.affine, ref.shape, ref.affine) is not None:
        return volume, False
    log.warning("output grid is not the reference's: resampling it onto the reference grid")
    data = resample_to_grid(volume.data, volume.affine, ref.shape, ref.affine)
    return ref.with_data(data, ref.affine), True


def score(volume: Volume, ref: Volume, mask: Volume | None, axis: int, factor: float) -> dict:
    return compare_volumes(volume, ref, mask=mask, thick_axis=axis, period=factor).to_dict()


def _row(case, factor, tool, settings, measured, metrics, cubic, **extra) -> dict:
    row = {
        "case": case,
        "factor": factor,
        "tool": tool,
        "settings": settings,
        "measured": asdict(measured) if isinstance(measured, Measured) else measured,
        "metrics": metrics,
        **extra,
    }
    if metrics is not None and cubic is not None:
        row["gain_masked_db"] = metrics["psnr_masked"] - cubic["psnr_masked"]
        row["gain_paper_db"] = metrics["psnr_paper"] - cubic["psnr_paper"]
    return row


def markdown(rows: list[dict], threads: int | None, device: str) -> str:
    lines = [
        f"device: {device}; threads per tool: {threads or 'each tool default'}",
        "",
        "| case | factor | tool | settings | wall time (CPU time) | peak memory "
        "| masked PSNR / SSIM | paper PSNR / SSIM | gain over cubic, masked / paper |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        m, meas = r["metrics"], r["measured"]
        if meas is None:
            time_s, memory = "-", "-"
        elif isinstance(meas, dict) and "seconds" in meas:
            time_s = f"{meas['seconds']:.0f} s ({meas['cpu_seconds']:.0f} s CPU)"
            peak = meas["peak_tree_mib"] or meas["max_rss_mib"]
            memory = f"{peak / 1024:.2f} GiB"
        else:
            time_s, memory = f"{meas:.1f} s", "-"
        if m is None:
            quality = "failed | - | -"
        else:
            gain = (
                "-"
                if "gain_masked_db" not in r
                else f"{r['gain_masked_db']:+.2f} / {r['gain_paper_db']:+.2f} dB"
            )
            quality = (
                f"{m['psnr_masked']:.2f} / {m['ssim_masked']:.4f} | "
                f"{m['psnr_paper']:.2f} / {m['ssim_paper']:.4f} | {gain}"
            )
        lines.append(
            f"| {r['case']} | x{r['factor']:g} | {r['tool']} | {r['settings']} | {time_s} "
            f"| {memory} | {quality} |"
        )
    return "\n".join(lines) + "\n"


def wins(rows: list[dict]) -> list[str]:
    """Where an ECLARE row beats transmrsr's on the same case, metric by metric."""
    out = []
    ours = {(r["case"], r["factor"]): r for r in rows if r["tool"] == "transmrsr"}
    for r in rows:
        base = ours.get((r["case"], r["factor"]))
        if r["tool"] != "ECLARE" or base is None or r["metrics"] is None or not base["metrics"]:
            continue
        for key in ("psnr_masked", "ssim_masked", "psnr_paper", "ssim_paper"):
            diff = r["metrics"][key] - base["metrics"][key]
            if diff > 0:
                unit = " dB" if key.startswith("psnr") else ""
                out.append(
                    f"{r['case']} x{r['factor']:g}, ECLARE {r['settings']}: {key} "
                    f"+{diff:.4g}{unit} over transmrsr"
                )
    return out


def _check_inputs(args: argparse.Namespace) -> list[tuple[Path, Path | None]]:
    cases = [(Path(p), None) for p in args.cases]
    cases += [(Path(v), Path(m)) for v, m in args.extra_brain_mask]
    if not cases:
        otsu = SHARED / "otsu_t1.nii.gz"
        if not otsu.is_file():
            raise BenchError("no case: give --cases VOLUME ... or --extra-brain-mask VOLUME MASK")
        cases = [(otsu, None)]
    for volume, mask in cases:
        for path in (volume, mask):
            if path is not None and not path.is_file():
                raise BenchError(f"{path}: no such file")
    if any(not math.isfinite(f) or f <= 1 for f in args.factors):
        raise BenchError("--factors must be numbers above 1")
    if args.eclare_patches and min(args.eclare_patches) < 1:
        raise BenchError("--eclare-patches must be at least 1")
    if args.eclare_batch_size < 1:
        raise BenchError("--eclare-batch-size must be at least 1")
    if any(not m > 0 for m in args.budget_multiples):
        raise BenchError("--budget-multiples must be positive")
    if args.threads is not None and args.threads < 1:
        raise BenchError("--threads must be at least 1")
    for name, path in (("--transmrsr-bin", args.transmrsr_bin), ("--eclare-bin", args.eclare_bin)):
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise BenchError(f"{name} {path}: not an executable file (see docs/peers.md)")
    if args.budget_match and not (args.eclare_bin.parent / "python").is_file():
        raise BenchError(f"--budget-match needs ECLARE's venv python beside {args.eclare_bin}")
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise BenchError("--device cuda: no CUDA device is available")
    return cases


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--cases", nargs="+", default=[], metavar="VOLUME", help="high-resolution volumes"
    )
    parser.add_argument(
        "--extra-brain-mask",
        nargs=2,
        action="append",
        default=[],
        metavar=("VOLUME", "MASK"),
        help="one more case, scored in this brain mask (repeatable)",
    )
    parser.add_argument("--factors", type=float, nargs="+", default=[4.0, 8.0])
    parser.add_argument("--axis", default="SI", help="thick axis (default SI)")
    parser.add_argument(
        "--eclare-patches",
        type=int,
        nargs="+",
        default=[],
        metavar="N",
        help="ECLARE's --n-patches, one row each (neither this nor --budget-match: its "
        f"default, {ECLARE_DEFAULT_PATCHES})",
    )
    parser.add_argument(
        "--budget-match",
        action="store_true",
        help="also run ECLARE with the patch counts predicted to take --budget-multiples "
        "times transmrsr's time on the case",
    )
    parser.add_argument("--budget-multiples", type=float, nargs="+", default=[1.0, 10.0])
    parser.add_argument(
        "--eclare-batch-size",
        type=int,
        default=ECLARE_BATCH,
        help=f"ECLARE's --batch-size (default {ECLARE_BATCH}, its own)",
    )
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument(
        "--threads", type=int, help="OMP/MKL threads for both tools (default: their own)"
    )
    parser.add_argument(
        "--transmrsr-bin", type=Path, default=Path(sys.executable).with_name("transmrsr")
    )
    parser.add_argument("--eclare-bin", type=Path, default=DEFAULT_ECLARE)
    parser.add_argument(
        "--work-dir", type=Path, help="keep inputs, outputs and logs here (default: a temp dir)"
    )
    parser.add_argument("--json", type=Path, help="write every number here")
    parser.add_argument("--out-md", type=Path, help="write the Markdown table here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        return _run(args)
    except (BenchError, TransMRSRError) as exc:
        log.error("bench_peers: %s", exc)
        return 2


def _run(args: argparse.Namespace) -> int:
    cases = _check_inputs(args)
    env = dict(os.environ)
    if args.threads is not None:
        env.update(OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    gpu = args.device == "cuda"
    with tempfile.TemporaryDirectory(prefix="bench_peers_") as tmp:
        work = args.work_dir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        rows, calibrations = [], {}
        for volume_path, mask_path in cases:
            ref = load_volume(volume_path)
            mask = load_volume(mask_path) if mask_path else None
            if mask is not None and mask.shape != ref.shape:
                raise BenchError(f"{mask_path}: not on the grid of {volume_path}")
            axis = resolve_axis(args.axis, ref.affine)
            name = volume_path.name.split(".")[0]
            for factor in args.factors:
                case = f"{name} ({'brain' if mask else 'head'} mask)"
                rows += _run_case(
                    args, env, gpu, work, ref, mask, axis, name, case, factor, calibrations
                )
    table = markdown(rows, args.threads, args.device)
    sys.stdout.write(table)
    for line in wins(rows) or ["ECLARE beats transmrsr on no metric of these rows"]:
        log.info("%s", line)
    if args.out_md:
        with atomic_path(args.out_md, suffix=".md") as tmp_md, open(tmp_md, "w") as handle:
            handle.write(table)
    if args.json:
        with atomic_path(args.json, suffix=".json") as tmp_json, open(tmp_json, "w") as handle:
            json.dump(
                {
                    "device": args.device,
                    "threads": args.threads,
                    "axis": args.axis,
                    "calibrations": calibrations,
                    "rows": rows,
                    "eclare_wins": wins(rows),
                },
                handle,
                indent=2,
            )
    return 0


def _run_case(args, env, gpu, work, ref, mask, axis, name, case, factor, calibrations):
    folder = work / f"{name}_x{factor:g}"
    folder.mkdir(parents=True, exist_ok=True)
    lr_data, lr_affine = degrade(ref.data, ref.affine, axis, factor, fwhm=factor)
    lr = ref.with_data(lr_data, lr_affine)
    lr_path = save_volume(lr, folder / f"{name}_thick.nii.gz")
    fwhm_mm = factor * float(voxel_sizes(ref.affine)[axis])
    rows = []

    t0 = time.perf_counter()
    cubic_data, cubic_affine = upsample(lr_data, lr_affine, axis, factor, "cubic")
    cubic_s = time.perf_counter() - t0
    cubic = score(lr.with_data(cubic_data, cubic_affine), ref, mask, axis, factor)
    rows.append(_row(case, factor, "cubic", "transmrsr upsample", cubic_s, cubic, None))

    ours_path = folder / "transmrsr.nii.gz"
    cmd = [str(args.transmrsr_bin), "restore", str(lr_path), str(ours_path), "--factor"]
    cmd += [f"{factor:g}", "--axis", str(axis), "--slice-thickness", "spacing"]
    cmd += ["--device", args.device, "--no-progress", "--overwrite"]
    ours = run_measured(cmd, env, folder / "transmrsr.log")
    metrics, resampled = None, False
    if ours.returncode == 0:
        restored, resampled = on_reference_grid(load_volume(ours_path), ref)
        metrics = score(restored, ref, mask, axis, factor)
    else:
        log.error("transmrsr restore failed (exit %d): see %s", ours.returncode, ours.log)
    rows.append(
        _row(
            case,
            factor,
            "transmrsr",
            "defaults, --slice-thickness spacing",
            ours,
            metrics,
            cubic,
            resampled=resampled,
            command=cmd,
        )
    )

    sep = float(voxel_sizes(lr_affine)[axis]) / min(
        z for i, z in enumerate(voxel_sizes(lr_affine)) if i != axis
    )
    runs: dict[int, list[str]] = {n: ["given"] for n in args.eclare_patches}
    if args.budget_match and ours.returncode == 0:
        cal = calibrate(
            args.eclare_bin.parent / "python",
            env,
            round(sep, 3),
            lr.shape,
            axis,
            args.eclare_batch_size,
            gpu,
        )
        calibrations[f"{case} x{factor:g}"] = asdict(cal) | {"fixed_s": cal.fixed_s}
        step_s = cal.step_s * args.eclare_batch_size / cal.batch
        for multiple in args.budget_multiples:
            budget = multiple * ours.seconds
            n = patches_for_budget(budget, cal.fixed_s, step_s, args.eclare_batch_size)
            predicted = cal.predict(n, args.eclare_batch_size)
            label = f"{multiple:g}x budget ({budget:.0f} s"
            label += ", over it even at one batch)" if predicted > budget * 1.05 else ")"
            runs.setdefault(n, []).append(label)
            log.info("%s: n-patches %d, predicted %.0f s", label, n, predicted)
    if not runs:
        runs[ECLARE_DEFAULT_PATCHES] = ["defaults"]
    rel = relative_thickness(fwhm_mm, lr_affine, axis)
    for n, labels in runs.items():
        out_dir = folder / f"eclare_{n}"
        cmd = [str(args.eclare_bin), "--in-fpath", str(lr_path), "--out-dir", str(out_dir)]
        cmd += ["--n-patches", str(n), "--batch-size", str(args.eclare_batch_size)]
        cmd += ["--relative-slice-thickness", f"{rel:.6g}"]
        cmd += ["--relative-slice-profile-type", "gaussian", "--gpu-id", "0" if gpu else "-1"]
        peer = run_measured(cmd, env, folder / f"eclare_{n}.log")
        out_path = out_dir / lr_path.name.replace(".nii", "_eclare.nii")
        metrics, resampled = None, False
        if peer.returncode == 0 and out_path.is_file():
            restored, resampled = on_reference_grid(load_volume(out_path), ref)
            metrics = score(restored, ref, mask, axis, factor)
        else:
            log.error("run-eclare failed (exit %d): see %s", peer.returncode, peer.log)
        settings = f"n-patches {n}, batch {args.eclare_batch_size}, Gaussian FWHM {rel:.3g} ("
        settings += "; ".join(labels) + ")"
        rows.append(
            _row(
                case,
                factor,
                "ECLARE",
                settings,
                peer,
                metrics,
                cubic,
                resampled=resampled,
                command=cmd,
                n_patches=n,
            )
        )
    return rows


if __name__ == "__main__":
    sys.exit(main())
