"""Held-out quality of a restoration model against cubic interpolation.

Simulates thick-slice scans (SPEC degradation, along SI) of held-out volumes -- the MNI152
template from nilearn and, when ``../shared/data/mri`` is present, the real T1 ``otsu_t1`` (held
out for the shipped general model; the shipped specialists train on it, see the model card) --
restores them with the model and scores model and cubic with the paper protocol and inside a
mask (MNI: the template's brain mask; otsu_t1: the automatic head mask, and a brain mask when
``--otsu-brain-mask`` gives one, as none ships with the volume), and any volumes given with
``--extra`` (automatic head mask) or ``--extra-brain-mask VOLUME MASK`` (head and brain mask).
``--levels`` moves where the input's tissue lands in the network's range, to measure how
much a model depends on it; ``--adapt`` restores after adapting to each scan, as ``restore
--adapt`` does; ``--thickness`` simulates slices thinner than their spacing (a gap) and
``--told`` restores with and/or without that thickness given (``restore --slice-thickness``);
``--profile`` acquires the slices with another slice-profile shape than the SPEC's Gaussian
(flat-top as a spin echo, boxcar, cross-talk tails), as real 2-D scans are; every row also
gives the slab-stripe index of the restoration over cubic's (:mod:`transmrsr.stripes`).
``--only`` scores a subset of the volumes. A shipped general model restores each factor with
its specialist for that factor, as ``transmrsr restore`` does
(``--no-specialists``: the general model alone); the table names the file used. Prints a
Markdown table and writes every number to ``--json``.

    python benchmarks/eval_heldout.py --model t1 --factors 4 8 --json heldout.json

A brain mask for ``otsu_t1`` can be made with BET; without FSL, its Python port does it
(``pip install brainextractor``)::

    from brainextractor import BrainExtractor
    bet = BrainExtractor(img=nib.Nifti1Image(data.astype("float32"), affine))
    bet.run()
    bet.save_mask("otsu_brainmask.nii.gz")

On a scan that includes the neck (IXI), zero the planes below the skull base in ``data`` first,
or BET's starting sphere sits too low and the mask takes in the face and neck; check the
outline on a few planes either way.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import sys
import time
from pathlib import Path

import torch

from transmrsr.degradation import SLICE_PROFILES, degrade, slice_profile
from transmrsr.devices import PRECISIONS
from transmrsr.evaluation.compare import compare_volumes
from transmrsr.geometry import resolve_axis
from transmrsr.inference.adapt import ADAPT_SCOPES, DEFAULT_STEPS, AdaptConfig
from transmrsr.inference.consistency import CONSISTENCY_METHODS, DEFAULT_CONSISTENCY
from transmrsr.inference.restore import load_model, restore_volume
from transmrsr.intensity import IntensityScaler
from transmrsr.interpolation import upsample
from transmrsr.io import atomic_path, load_volume, voxel_sizes
from transmrsr.stripes import stripe_ratio
from transmrsr.templates import mni152_brain_mask, mni152_t1

log = logging.getLogger("eval_heldout")
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "mri"


def held_out_volumes(
    otsu_brain_mask: Path | None = None,
    extra: list[Path] | None = None,
    extra_masked: list[tuple[Path, Path]] | None = None,
) -> dict[str, tuple]:
    """``name -> (reference, {mask label: mask or None for the automatic head mask})``."""
    volumes = {"MNI152": (mni152_t1(), {"brain mask": mni152_brain_mask()})}
    otsu = SHARED / "otsu_t1.nii.gz"
    if otsu.is_file():
        masks = {"head mask": None}
        if otsu_brain_mask is not None:
            masks["brain mask"] = load_volume(otsu_brain_mask)
        volumes["otsu_t1 real T1"] = (load_volume(otsu), masks)
    for path in extra or []:
        volumes[path.name] = (load_volume(path), {"head mask": None})
    for path, mask in extra_masked or []:
        volumes[path.name] = (
            load_volume(path),
            {"head mask": None, "brain mask": load_volume(mask)},
        )
    return volumes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="t1", help="shipped name, model file or checkpoint")
    parser.add_argument("--factors", type=float, nargs="+", default=[4.0, 8.0])
    parser.add_argument("--planes", nargs="+", default=["one"], choices=["one", "both"])
    parser.add_argument(
        "--consistency",
        nargs="+",
        default=["on"],
        choices=["on", "off"],
        help="restore with and/or without the data-consistency projection",
    )
    parser.add_argument(
        "--levels",
        type=float,
        nargs="+",
        default=[1.0],
        help="multiply the network's normalised input by each (where tissue lands in its range "
        "varies between scans): how much the model cares",
    )
    parser.add_argument("--axis", default="SI")
    parser.add_argument(
        "--thickness",
        type=float,
        default=1.0,
        metavar="RATIO",
        help="simulate slices RATIO spacings thick (below 1: a slice gap; default 1, the "
        "SPEC's model)",
    )
    parser.add_argument(
        "--profile",
        default="gaussian",
        choices=SLICE_PROFILES,
        help="shape of the simulated slice profile (default gaussian, the SPEC's model)",
    )
    parser.add_argument(
        "--told",
        nargs="+",
        default=["on"],
        choices=["on", "off"],
        help="restore with the simulated slice thickness given (restore --slice-thickness) "
        "and/or without (slices assumed as thick as their spacing)",
    )
    parser.add_argument("--json", type=Path, help="write all numbers here")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--no-specialists",
        action="store_true",
        help="score a shipped general model alone, not its factor specialists",
    )
    parser.add_argument(
        "--otsu-brain-mask", type=Path, help="brain mask of otsu_t1 (e.g. from BET), scored too"
    )
    parser.add_argument(
        "--extra",
        type=Path,
        nargs="+",
        default=[],
        help="more high-resolution volumes to score (automatic head mask), e.g. other contrasts",
    )
    parser.add_argument(
        "--extra-brain-mask",
        type=Path,
        nargs=2,
        action="append",
        default=[],
        metavar=("VOLUME", "MASK"),
        help="one more volume, scored in its head mask and in this brain mask (repeatable)",
    )
    parser.add_argument(
        "--adapt",
        type=int,
        nargs="+",
        default=[0],
        metavar="STEPS",
        help="restore after adapting to each scan for these many steps (default 0: the "
        f"network alone, as the model card's tables; `restore` adapts for {DEFAULT_STEPS})",
    )
    parser.add_argument(
        "--consistency-method",
        default=DEFAULT_CONSISTENCY,
        choices=CONSISTENCY_METHODS,
        help=f"how consistency is enforced (default {DEFAULT_CONSISTENCY}, as restore)",
    )
    parser.add_argument(
        "--destripe",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="remove the detail that repeats once per slab, as restore does (default on)",
    )
    parser.add_argument(
        "--adapt-profiles",
        nargs="+",
        choices=SLICE_PROFILES,
        help="slice profiles the adaptation's pairs draw from (default: as restore, the "
        "Gaussian when the thickness is told, all when not)",
    )
    parser.add_argument(
        "--adapt-scope",
        nargs="+",
        default=["decoder"],
        choices=ADAPT_SCOPES,
        help="which parameters the adaptation tunes (default decoder, as restore)",
    )
    parser.add_argument(
        "--adapt-batch",
        type=int,
        default=AdaptConfig.batch_size,
        metavar="N",
        help=f"pairs per adaptation step (default {AdaptConfig.batch_size}, as restore)",
    )
    parser.add_argument(
        "--adapt-lr",
        type=float,
        default=AdaptConfig.lr,
        metavar="LR",
        help=f"adaptation learning rate (default {AdaptConfig.lr:g}, as restore)",
    )
    parser.add_argument(
        "--precision",
        nargs="+",
        default=["auto"],
        choices=PRECISIONS,
        help="restore (and adapt) with each: bf16 autocast or fp32 (auto: bf16 where the "
        "hardware multiplies bf16 natively, as `restore`)",
    )
    parser.add_argument(
        "--only",
        nargs="+",
        metavar="NAME",
        help="score only the volumes whose name contains one of these (e.g. otsu MNI152)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    torch.set_num_threads(args.threads)
    model = load_model(args.model, specialists=not args.no_specialists)
    volumes = held_out_volumes(args.otsu_brain_mask, args.extra, args.extra_brain_mask)
    if args.only:
        volumes = {k: v for k, v in volumes.items() if any(part in k for part in args.only)}
        if not volumes:
            parser.error(f"--only {' '.join(args.only)} matches none of the held-out volumes")
    rows = []
    for name, (ref, masks) in volumes.items():
        axis = resolve_axis(args.axis, ref.affine)
        for factor in args.factors:
            profile = slice_profile(args.profile, factor, factor * args.thickness)
            lr_data, lr_affine = degrade(ref.data, ref.affine, axis, factor, profile=profile)
            lr = ref.with_data(lr_data, lr_affine)
            cubic_data, cubic_affine = upsample(lr_data, lr_affine, axis, factor, "cubic")
            cubic = lr.with_data(cubic_data, cubic_affine)
            baselines = {
                label: compare_volumes(cubic, ref, mask=mask, thick_axis=axis)
                for label, mask in masks.items()
            }
            spacing = float(voxel_sizes(lr_affine)[axis])
            runs = itertools.product(
                args.planes,
                args.consistency,
                args.levels,
                args.adapt,
                args.precision,
                args.told,
                args.adapt_scope,
            )
            for planes, consistency, level, steps, precision, told, scope in runs:
                adapt = (
                    AdaptConfig(
                        steps=steps,
                        scope=scope,
                        batch_size=args.adapt_batch,
                        lr=args.adapt_lr,
                        profiles=tuple(args.adapt_profiles) if args.adapt_profiles else None,
                    )
                    if steps
                    else None
                )
                t0 = time.perf_counter()
                restored = restore_volume(
                    lr,
                    model,
                    axis=axis,
                    factor=factor,
                    planes=planes,
                    consistency=consistency == "on",
                    scaler=IntensityScaler.fit(lr.data).with_gain(level),
                    adapt=adapt,
                    precision=precision,
                    slice_thickness=spacing * args.thickness if told == "on" else None,
                    consistency_method=args.consistency_method,
                    destripe=args.destripe,
                )
                seconds = time.perf_counter() - t0
                for label, mask in masks.items():
                    base = baselines[label]
                    ours = compare_volumes(restored.volume, ref, mask=mask, thick_axis=axis)
                    rows.append(
                        {
                            "volume": f"{name} ({label})",
                            "factor": factor,
                            "planes": planes,
                            "consistency": consistency,
                            "level": level,
                            "thickness": args.thickness,
                            "profile": args.profile,
                            "stripe_index": restored.stripe_index,
                            "cubic_stripe_index": restored.cubic_stripe_index,
                            "told": told,
                            "adapt_steps": steps,
                            "adapt_scope": scope,
                            "adapt_batch": args.adapt_batch,
                            "adapt_lr": args.adapt_lr,
                            "adapt_profiles": args.adapt_profiles,
                            "consistency_method": args.consistency_method,
                            "destripe": args.destripe,
                            "precision": restored.precision,
                            "model_file": Path(restored.model_source).name,
                            "seconds": seconds,
                            "cubic": base.to_dict(),
                            "model": ours.to_dict(),
                            "gain_masked_db": ours.psnr_masked - base.psnr_masked,
                            "gain_paper_db": ours.psnr_paper - base.psnr_paper,
                        }
                    )
                log.info(
                    "%s x%g %s, consistency %s, level %g, adapt %d (%s), %s: done in %.0f s",
                    name,
                    factor,
                    planes,
                    consistency,
                    level,
                    steps,
                    scope,
                    restored.precision,
                    seconds,
                )
    lines = [
        f"model: {model.source}",
        "",
        "| volume | factor | profile, thickness, told | planes | consistency | level | adapt "
        "| precision "
        "| model file "
        "| cubic masked PSNR/SSIM | model masked PSNR/SSIM | gain masked | cubic paper PSNR/SSIM "
        "| model paper PSNR/SSIM | gain paper | stripes / cubic's | time |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        c, m = r["cubic"], r["model"]
        stripes = (
            "-"
            if r["stripe_index"] is None or r["cubic_stripe_index"] is None
            else f"{stripe_ratio(r['stripe_index'], r['cubic_stripe_index']):.2f}"
        )
        lines.append(
            f"| {r['volume']} | x{r['factor']:g} | "
            f"{r['profile']}, {r['thickness']:g}, {r['told']} | "
            f"{r['planes']} | {r['consistency']} | "
            f"{r['level']:g} | {r['adapt_steps']} ({r['adapt_scope']}) | {r['precision']} | "
            f"{r['model_file']} | "
            f"{c['psnr_masked']:.2f} / {c['ssim_masked']:.4f} | "
            f"{m['psnr_masked']:.2f} / {m['ssim_masked']:.4f} | {r['gain_masked_db']:+.2f} dB | "
            f"{c['psnr_paper']:.2f} / {c['ssim_paper']:.4f} | "
            f"{m['psnr_paper']:.2f} / {m['ssim_paper']:.4f} | {r['gain_paper_db']:+.2f} dB | "
            f"{stripes} | {r['seconds']:.0f} s |"
        )
    sys.stdout.write("\n".join(lines) + "\n")
    if args.json:
        with atomic_path(args.json, suffix=".json") as tmp, open(tmp, "w") as handle:
            json.dump({"model": model.source, "info": model.info, "rows": rows}, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
