"""Restore wall time, peak memory and the quality gain of fusing two plane orientations.

An IXI-sized T1 (256 x 256 in-plane, 1 mm: the MNI152 template that nilearn ships, held out
from every shipped model, padded to 256 x 256 and cropped to 150 slices) is degraded x4 along
SI to ~38 thick slices and restored to ~150, once with one plane orientation and once with both
fused. Each run is a separate process, so the peak resident memory (ru_maxrss) is that run's own.

    python benchmarks/bench_restore.py --model t1
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from transmrsr.cli.common import add_network_run_arguments

log = logging.getLogger("bench_restore")


def ixi_sized_reference():
    from transmrsr.geometry import resolve_axis
    from transmrsr.templates import mni152_t1

    vol = mni152_t1()
    si = resolve_axis("SI", vol.affine)
    centre = vol.shape[si] // 2
    index = [slice(None)] * 3
    index[si] = slice(centre - 75, centre + 75)
    data = vol.data[tuple(index)]
    pads = [
        (0, 0) if a == si else ((256 - n) // 2, 256 - n - (256 - n) // 2)
        for a, n in enumerate(data.shape)
    ]
    data = np.pad(data, [(max(p, 0), max(q, 0)) for p, q in pads])
    affine = vol.affine.copy()
    offset = np.array(
        [-(max(p, 0)) if a != si else index[si].start for a, (p, _) in enumerate(pads)], float
    )
    affine[:3, 3] = vol.affine[:3, :3] @ offset + vol.affine[:3, 3]
    return vol.with_data(data.astype(np.float32), affine), si


def one_run(model: str, planes: str, threads: int, precision: str, adapt: int) -> dict:
    """Child process: degrade, restore, score; report time and peak memory."""
    import torch

    from transmrsr.degradation import degrade
    from transmrsr.evaluation.compare import compare_volumes
    from transmrsr.inference.adapt import AdaptConfig
    from transmrsr.inference.restore import load_model, restore_volume

    torch.set_num_threads(threads)
    ref, si = ixi_sized_reference()
    lr_data, lr_affine = degrade(ref.data, ref.affine, si, 4.0)
    lr = ref.with_data(lr_data, lr_affine)
    loaded = load_model(model)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    result = restore_volume(
        lr,
        loaded,
        axis=si,
        factor=4.0,
        planes=planes,
        precision=precision,
        adapt=AdaptConfig(steps=adapt) if adapt else None,
    )
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    score = compare_volumes(result.volume, ref, thick_axis=si)
    return {
        "planes": planes,
        "precision": result.precision,
        "adapt_steps": adapt,
        "input_shape": list(lr.shape),
        "output_shape": list(result.volume.shape),
        "seconds": seconds,
        "peak_rss_gib": peak / 2**20,
        "rss_before_restore_gib": before / 2**20,
        "psnr_masked": score.psnr_masked,
        "ssim_masked": score.ssim_masked,
        "psnr_paper": score.psnr_paper,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="t1")
    parser.add_argument("--threads", type=int, default=2)
    add_network_run_arguments(parser)
    parser.add_argument("--child", choices=["one", "both"], help=argparse.SUPPRESS)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    if args.child:
        sys.stdout.write(
            json.dumps(one_run(args.model, args.child, args.threads, args.precision, args.adapt))
            + "\n"
        )
        return 0
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    results = {}
    for planes in ("one", "both"):
        done = subprocess.run(
            [
                sys.executable,
                __file__,
                "--child",
                planes,
                "--model",
                args.model,
                "--threads",
                str(args.threads),
                "--precision",
                args.precision,
                "--adapt",
                str(args.adapt),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        results[planes] = json.loads(done.stdout.strip().splitlines()[-1])
    one, both = results["one"], results["both"]
    gain = both["psnr_masked"] - one["psnr_masked"]
    extra = both["seconds"] - one["seconds"]
    lines = [
        f"IXI-sized T1 x4 along SI: {one['input_shape']} -> {one['output_shape']}, "
        f"{args.threads} threads, model {args.model}, {one['precision']}, "
        f"adaptation {args.adapt} steps",
        "| planes | wall time | peak memory | masked PSNR / SSIM | paper PSNR |",
        "|---|---|---|---|---|",
    ]
    for r in (one, both):
        lines.append(
            f"| {r['planes']} | {r['seconds']:.1f} s | {r['peak_rss_gib']:.2f} GiB | "
            f"{r['psnr_masked']:.2f} dB / {r['ssim_masked']:.4f} | {r['psnr_paper']:.2f} dB |"
        )
    lines.append(
        f"fusing two planes: {gain:+.3f} dB masked PSNR for {extra:+.1f} s "
        f"({gain / max(extra, 1e-9):+.4f} dB per extra second)"
    )
    sys.stdout.write("\n".join(lines) + "\n")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
