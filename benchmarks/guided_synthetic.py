"""Guided restore on held-out synthetic heads: the gain a same-session guide brings.

Each head is made from a SynthSeg label map that no shipped file trained on (the two kept out
by ``split_label_maps(..., 2, seed 0)``, as the shipped files' runs kept them): the anatomy is
deformed once, then drawn in two independent contrasts (the thick one and its guide, each with
its own intensities, blur, bias field and noise), and the guide is moved by a small random
rigid motion, as two series of one session are. The thick scan is made with the SPEC's
Gaussian slice profile along SI (thickness not told). Each head is restored twice by the
default ``restore``: unguided and with ``guide=``; the score is the brain-masked PSNR/SSIM
gain over cubic, the brain being the label map's brain structures (FreeSurfer labels below
100, CSF included).

    python benchmarks/guided_synthetic.py --labels ../shared/data/labels --heads 2 \
        --factors 4 8 --out /tmp/guided_synthetic

Prints a Markdown table and writes ``results.json`` beside it; a head already scored in
``--out`` is not restored again.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from pathlib import Path

import numpy as np

log = logging.getLogger("guided_synthetic")

#: Seed of the held-out heads' draws (not the training pools' nor the benchmark's).
HEAD_SEED = 90_210


def make_head(labels_dir: Path, index: int, contrast: str, guide_contrast: str):
    """``(image, guide, brain, affine, subject)`` of held-out head ``index``."""
    from transmrsr.training.synthetic import (
        HeadConfig,
        LabelTables,
        crop_to_head,
        deform_labels,
        discover_label_maps,
        load_label_map,
        misalign,
        split_label_maps,
        synthesize_head,
    )

    tables = LabelTables.load(labels_dir)
    _, kept = split_label_maps(discover_label_maps(labels_dir), 2, 0)
    entry = kept[index % len(kept)]
    labels, affine = crop_to_head(*load_label_map(entry.path))
    key = (HEAD_SEED, index)
    head, guide = HeadConfig(contrast=contrast), HeadConfig(contrast=guide_contrast)
    moved = deform_labels(labels, head, np.random.default_rng((*key, 0)))
    image, _ = synthesize_head(moved, tables, head, (*key, 1), deform=False)
    other, _ = synthesize_head(moved, tables, guide, (*key, 2), deform=False)
    other = misalign(other, np.random.default_rng((*key, 3)), shift_voxels=1.0, rotate_degrees=1.0)
    brain = (moved > 0) & (moved < 100)
    return image, other, brain, affine, entry.subject


def score_head(args: argparse.Namespace, index: int, factor: float) -> dict:
    from transmrsr.api import run_restore
    from transmrsr.degradation import degrade
    from transmrsr.errors import GuideError
    from transmrsr.evaluation.compare import compare_volumes
    from transmrsr.geometry import resolve_axis
    from transmrsr.interpolation import upsample
    from transmrsr.volume import Volume

    image, guide, brain, affine, subject = make_head(
        args.labels, index, args.contrast, args.guide_contrast
    )
    ref = Volume(data=image.astype(np.float32), affine=affine)
    axis = resolve_axis("SI", affine)
    lr_data, lr_affine = degrade(ref.data, affine, axis, factor)
    thick = Volume(data=lr_data.astype(np.float32), affine=lr_affine)
    cubic_data, cubic_affine = upsample(lr_data, lr_affine, axis, factor, "cubic")
    cubic = Volume(data=cubic_data, affine=cubic_affine)
    brain = Volume(data=brain.astype(np.float32), affine=affine)
    base = compare_volumes(cubic, ref, mask=brain, thick_axis=axis, period=factor)
    record: dict = {"head": index, "subject": subject, "factor": factor}

    def scored(restored: Volume, seconds: float) -> dict:
        ours = compare_volumes(restored, ref, mask=brain, thick_axis=axis, period=factor)
        return {
            "gain_psnr": ours.psnr_masked - base.psnr_masked,
            "gain_ssim": ours.ssim_masked - base.ssim_masked,
            "seconds": seconds,
        }

    for name, guide_volume in (
        ("unguided", None),
        ("guided", Volume(data=guide, affine=affine)),
    ):
        start = time.perf_counter()
        try:
            result = run_restore(thick, guide=guide_volume, progress=False)
        except GuideError as exc:
            # A refused guide is a result too: the check's false refusals are measured here,
            # and what the guide would have given had it been taken (the check turned off).
            log.warning("head %d x%g: guide refused: %s", index, factor, exc)
            record["refused"] = str(exc)
            result = run_restore(thick, guide=guide_volume, guide_check=False, progress=False)
            record["forced"] = {
                **scored(result.volume, time.perf_counter() - start),
                "held_out_gain_db": result.guide_gain_db,
                "guide_used": bool(result.guide_used),
            }
            # The default restore then falls back to the unguided one, already scored.
            record[name] = dict(record["unguided"])
            continue
        record[name] = scored(result.volume, time.perf_counter() - start)
        if guide_volume is not None:
            record[name]["held_out_gain_db"] = result.guide_gain_db
            record[name]["guide_used"] = bool(result.guide_used)
        log.info("head %d x%g %s: %+.3f dB", index, factor, name, record[name]["gain_psnr"])
    return record


def table(records: list[dict]) -> str:
    lines = [
        "| head (anatomy) | factor | unguided | guided | guided - unguided | SSIM gain "
        "(unguided / guided) | guided time |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in records:
        u, g = r["unguided"], r["guided"]
        if "refused" in r:
            forced = r.get("forced")
            taken = (
                ""
                if forced is None
                else f"; with the check off {forced['gain_psnr']:+.3f} "
                f"({forced['gain_psnr'] - u['gain_psnr']:+.3f} over unguided)"
            )
            lines.append(
                f"| {r['head']} ({r['subject']}) | x{r['factor']:g} | {u['gain_psnr']:+.3f} | "
                f"refused: {r['refused']}{taken} | | | |"
            )
            continue
        lines.append(
            f"| {r['head']} ({r['subject']}) | x{r['factor']:g} | {u['gain_psnr']:+.3f} | "
            f"{g['gain_psnr']:+.3f} | **{g['gain_psnr'] - u['gain_psnr']:+.3f}** | "
            f"{u['gain_ssim']:+.4f} / {g['gain_ssim']:+.4f} | {g['seconds']:.0f} s |"
        )
    for factor in sorted({r["factor"] for r in records}):
        diffs = [
            r["guided"]["gain_psnr"] - r["unguided"]["gain_psnr"]
            for r in records
            if r["factor"] == factor and "refused" not in r
        ]
        if diffs:
            lines.append(f"| mean | x{factor:g} | | | **{np.mean(diffs):+.3f}** | | |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--labels", type=Path, default=Path("../shared/data/labels"))
    parser.add_argument("--heads", type=int, default=2)
    parser.add_argument("--factors", type=float, nargs="+", default=[4.0, 8.0])
    parser.add_argument("--contrast", default="random", choices=["t1", "random"])
    parser.add_argument("--guide-contrast", default="t1", choices=["t1", "random"])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if not (args.labels / "labels_table.txt").is_file():
        parser.error(f"no label maps in {args.labels}")
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "results.json"
    done = json.loads(path.read_text()) if path.is_file() else []
    for index in range(args.heads):
        for factor in args.factors:
            if any(r["head"] == index and r["factor"] == factor for r in done):
                continue
            done.append(score_head(args, index, factor))
            tmp = path.with_name(f".{path.name}.tmp")
            tmp.write_text(json.dumps(done, indent=1))
            os.replace(tmp, path)
    markdown = table(sorted(done, key=lambda r: (r["factor"], r["head"])))
    (args.out / "results.md").write_text(markdown + "\n")
    log.info("\n%s", markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
