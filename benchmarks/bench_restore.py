"""Restore wall time, peak memory and quality of the default and of each speed lever.

An IXI-sized T1 (256 x 256 in-plane, 1 mm: the MNI152 template that nilearn ships, held out
from every shipped model, padded to 256 x 256 and cropped to 150 slices) is degraded x4 along
SI to ~38 thick slices and restored to ~150: once as ``transmrsr restore`` does by default, and
once per lever, each changing one setting of the default. Each run is a separate process, so
the peak resident memory (ru_maxrss) is that run's own.

On a GPU (``--device cuda``) the clock starts after the model is loaded and the device warmed
up (one training step and one forward pass of the network on a dummy batch, which pay for
CUDA's context and kernel selection), and the peak is the GPU's allocated memory.

    python benchmarks/bench_restore.py --model t1
    python benchmarks/bench_restore.py --model t1 --levers default adapt-all batch-1
    python benchmarks/bench_restore.py --model t1 --device cuda --levers default adapt-100
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


#: Each lever: the settings it changes from the default restore, and what it means.
LEVERS: dict[str, tuple[dict, str]] = {
    "default": ({}, "`transmrsr restore` as it is"),
    "adapt-all": ({"scope": "all"}, "adaptation of all parameters (default until 2026-11-29)"),
    "adapt-0": ({"adapt": 0}, "no adaptation to the scan"),
    "adapt-10": ({"adapt": 10}, "10 adaptation steps instead of 20"),
    "adapt-100": ({"adapt": 100}, "100 adaptation steps instead of 20"),
    "both-planes": ({"planes": "both"}, "both plane orientations, fused"),
    "batch-1": ({"batch_size": 1}, "one plane per forward pass"),
    "batch-8": ({"batch_size": 8}, "eight planes per forward pass"),
    "threads-1": ({"threads": 1}, "one thread"),
    "workers-1": ({"workers": 1}, "one thread of batches (default until 2026-11-29)"),
    "no-destripe": ({"destripe": False}, "slab pattern kept (default until 2026-11-29)"),
}


def warm_up(network, device) -> None:
    """One training step and one forward pass on a dummy batch (a copy of the network)."""
    import copy

    import torch

    size = network.config.img_size
    x = torch.rand(2, 1, size, size, device=device)
    with torch.autocast(device.type, dtype=torch.bfloat16):
        copy.deepcopy(network).to(device).train()(x).mean().backward()
        with torch.no_grad():
            network.to(device).eval()(x)
    torch.cuda.synchronize(device)


def one_run(settings: dict) -> dict:
    """Child process: degrade, restore with ``settings``, score; report time and peak memory."""
    import torch

    from transmrsr.degradation import degrade
    from transmrsr.evaluation.compare import compare_volumes
    from transmrsr.inference.adapt import AdaptConfig
    from transmrsr.inference.restore import load_model, restore_volume

    torch.set_num_threads(settings["threads"])
    ref, si = ixi_sized_reference()
    lr_data, lr_affine = degrade(ref.data, ref.affine, si, 4.0)
    lr = ref.with_data(lr_data, lr_affine)
    loaded = load_model(settings["model"])
    device = torch.device(settings["device"])
    if device.type == "cuda":
        warm_up(loaded.for_factor(4.0).network, device)
        torch.cuda.reset_peak_memory_stats(device)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    steps = settings["adapt"]
    t0 = time.perf_counter()
    result = restore_volume(
        lr,
        loaded,
        axis=si,
        factor=4.0,
        planes=settings["planes"],
        batch_size=settings["batch_size"],
        precision=settings["precision"],
        adapt=AdaptConfig(steps=steps, scope=settings["scope"]) if steps else None,
        workers=settings["workers"],
        destripe=settings["destripe"],
        device=device,
    )
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) / 2**10
    score = compare_volumes(result.volume, ref, thick_axis=si)
    return {
        "planes": result.slice_axes,
        "precision": result.precision,
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
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument(
        "--batch-size", type=int, default=None, help="default: the restore's (1 on a CPU)"
    )
    add_network_run_arguments(parser)
    parser.add_argument(
        "--levers",
        nargs="+",
        default=list(LEVERS),
        choices=list(LEVERS),
        help="which runs to make (default: all); each changes one setting of the default",
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    if args.child:
        sys.stdout.write(json.dumps(one_run(json.loads(args.child))) + "\n")
        return 0
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    default = {
        "model": args.model,
        "threads": args.threads,
        "batch_size": args.batch_size,
        "planes": "auto",
        "precision": args.precision,
        "adapt": args.adapt,
        "scope": args.adapt_scope,
        "workers": None,
        "destripe": True,
        "device": args.device,
    }
    results = {}
    for lever in args.levers:
        settings = {**default, **LEVERS[lever][0]}
        log.info("%s: %s", lever, LEVERS[lever][1])
        done = subprocess.run(
            [sys.executable, __file__, "--child", json.dumps(settings)],
            capture_output=True,
            text=True,
            check=True,
        )
        results[lever] = {"settings": settings, **json.loads(done.stdout.strip().splitlines()[-1])}
    first = next(iter(results.values()))
    lines = [
        f"IXI-sized T1 x4 along SI: {first['input_shape']} -> {first['output_shape']}, "
        f"model {args.model}, {first['precision']} on {args.device}; default: {args.threads} "
        f"threads, batch {args.batch_size or 'default'}, adaptation {args.adapt} steps "
        f"({args.adapt_scope})",
        "| lever | what it changes | wall time | peak memory | masked PSNR / SSIM | paper PSNR "
        "| masked PSNR vs default |",
        "|---|---|---|---|---|---|---|",
    ]
    reference = results.get("default")
    for lever, r in results.items():
        versus = f"{r['psnr_masked'] - reference['psnr_masked']:+.3f} dB" if reference else "-"
        lines.append(
            f"| {lever} | {LEVERS[lever][1]} | {r['seconds']:.1f} s | {r['peak_rss_gib']:.2f} GiB "
            f"| {r['psnr_masked']:.3f} dB / {r['ssim_masked']:.4f} | {r['psnr_paper']:.2f} dB "
            f"| {versus} |"
        )
    sys.stdout.write("\n".join(lines) + "\n")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
