"""Peak memory and wall time of the default restore of a large scan: a 512 x 512 x 300 output.

The MNI152 template that nilearn ships is resampled to 0.5 mm (linear), zero-padded to
512 x 512 in-plane and cut to 300 slices along SI, then degraded x4 along SI (75 thick slices of
2 mm, as a fine-matrix clinical scan) and restored with ``restore``'s defaults. Peak memory is
this process's resident maximum (ru_maxrss), so run it alone; the figure to hold is the issue's
"a 512x512x300 output must not need more than a few GB".

    python benchmarks/bench_memory.py --model t1
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import sys
import time
from pathlib import Path

import numpy as np

from transmrsr.cli.common import adapt_config, add_network_run_arguments

log = logging.getLogger("bench_memory")

IN_PLANE = 512
SLICES = 300
FACTOR = 4.0


def large_reference():
    """The template at 0.5 mm on a 512 x 512 x 300 grid (SI the last of the kept slices)."""
    from scipy import ndimage

    from transmrsr.geometry import resolve_axis
    from transmrsr.io import Volume
    from transmrsr.templates import mni152_t1

    vol = mni152_t1()
    si = resolve_axis("SI", vol.affine)
    fine = ndimage.zoom(vol.data.astype(np.float32), 2.0, order=1)
    affine = vol.affine.copy()
    affine[:3, :3] = vol.affine[:3, :3] / 2.0
    # Voxel centres of the 0.5 mm grid: old index (u + 0.5) / 2 - 0.5.
    affine[:3, 3] = vol.affine[:3, :3] @ np.full(3, -0.25) + vol.affine[:3, 3]
    index, offset = [], []
    for axis, n in enumerate(fine.shape):
        size = SLICES if axis == si else IN_PLANE
        start = (n - size) // 2
        index.append(slice(max(start, 0), max(start, 0) + min(size, n)))
        offset.append(start)
    data = fine[tuple(index)]
    pads = []
    for axis, n in enumerate(data.shape):
        size = SLICES if axis == si else IN_PLANE
        pads.append(((size - n) // 2, size - n - (size - n) // 2))
    data = np.pad(data, pads)
    shift = np.array([o if o > 0 else -p for o, (p, _) in zip(offset, pads, strict=True)], float)
    affine[:3, 3] = affine[:3, :3] @ shift + affine[:3, 3]
    return Volume(data=np.ascontiguousarray(data, np.float32), affine=affine), si


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="t1")
    parser.add_argument("--threads", type=int, default=2)
    add_network_run_arguments(parser)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    import torch

    from transmrsr.degradation import degrade
    from transmrsr.inference.restore import load_model, restore_volume

    torch.set_num_threads(args.threads)
    ref, si = large_reference()
    lr_data, lr_affine = degrade(ref.data, ref.affine, si, FACTOR)
    lr = ref.with_data(lr_data, lr_affine)
    del ref
    model = load_model(args.model)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    result = restore_volume(
        lr,
        model,
        axis=si,
        factor=FACTOR,
        adapt=adapt_config(args),
        precision=args.precision,
        progress=True,
    )
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    row = {
        "input_shape": list(lr.shape),
        "output_shape": list(result.volume.shape),
        "precision": result.precision,
        "adapt_steps": args.adapt,
        "threads": args.threads,
        "seconds": seconds,
        "peak_rss_gib": peak / 2**20,
        "rss_before_restore_gib": before / 2**20,
    }
    sys.stdout.write(
        f"large scan x4 along SI: {row['input_shape']} -> {row['output_shape']}, "
        f"{args.threads} threads, {row['precision']}, adaptation {args.adapt} steps: "
        f"{seconds:.0f} s, peak memory {row['peak_rss_gib']:.2f} GiB "
        f"({row['rss_before_restore_gib']:.2f} GiB before the restore)\n"
    )
    if args.json:
        args.json.write_text(json.dumps(row, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
