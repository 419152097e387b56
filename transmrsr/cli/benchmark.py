"""``transmrsr benchmark``: the paper's comparison (baselines, ablations, Dice), one report."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np

from transmrsr.cli.common import factor_type, int_at_least, positive_float
from transmrsr.cli.training import contrasts_of
from transmrsr.errors import TransMRSRError
from transmrsr.evaluation.benchmark import (
    METHODS,
    BenchmarkSettings,
    HeldOutVolume,
    run_benchmark,
    synthetic_config,
)
from transmrsr.evaluation.figures import methods_figure
from transmrsr.evaluation.report import write_report
from transmrsr.geometry import resolve_axis
from transmrsr.training.config import SR_PRESETS
from transmrsr.training.distributed import setup
from transmrsr.training.runs import select_data
from transmrsr.training.synthetic import CONTRASTS

log = logging.getLogger(__name__)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "benchmark",
        help="train baselines and TransMRSR (and its ablations) alike, score held-out volumes, "
        "write a report",
        description=(
            "Trains every learned method with the same pipeline, split and budget, restores the "
            "held-out volumes (the split's test subjects and the MNI152 template; with "
            "--synthetic, guided synthetic heads for MINet), scores them "
            "(paper-protocol and brain-masked PSNR/SSIM; GM/WM/CSF Dice of ANTs Atropos "
            "segmentations when antspyx is installed) and writes report.md, results.json and "
            "figures to --out. Rerunning continues an interrupted benchmark."
        ),
    )
    parser.add_argument(
        "--data", nargs="+", required=True, metavar="DIR", help="folders or files of HR volumes"
    )
    parser.add_argument("--out", required=True, metavar="DIR", help="benchmark folder")
    parser.add_argument(
        "--factors",
        type=factor_type,
        nargs="+",
        default=[4.0, 8.0],
        metavar="K",
        help="thick/thin factors to score (default 4 8)",
    )
    parser.add_argument(
        "--methods",
        default="all",
        metavar="M,M",
        help=f"comma-separated, from {', '.join(METHODS)} (default all)",
    )
    parser.add_argument(
        "--budget-steps", type=int_at_least(1), metavar="N", help="training steps per method"
    )
    parser.add_argument(
        "--budget-minutes", type=positive_float, metavar="M", help="training minutes per method"
    )
    parser.add_argument(
        "--config", default="compact", choices=list(SR_PRESETS), help="preset (default compact)"
    )
    parser.add_argument("--prior", metavar="FILE", help="prior with centroids for TransMRSR rows")
    parser.add_argument(
        "--stylegan2-prior",
        metavar="FILE",
        help="StyleGAN2 prior (train-prior --arch stylegan2) for the GFP-GAN row; without it "
        "one is trained here on the same training subjects for --prior-steps steps",
    )
    parser.add_argument(
        "--prior-steps",
        type=int_at_least(1),
        default=300,
        metavar="N",
        help="stage-1 steps of each prior trained here: StyleSwin when no --prior is given, "
        "StyleGAN2 when no --stylegan2-prior is (default 300; with --prior, give its steps so "
        "that both priors train alike)",
    )
    parser.add_argument("--split", metavar="FILE", help="subject split file (split.json)")
    parser.add_argument("--val", type=int_at_least(1), default=1, help="validation subjects")
    parser.add_argument("--test", type=int_at_least(0), default=1, help="test subjects")
    parser.add_argument("--contrast", metavar="C", help="contrast of volumes whose name has none")
    parser.add_argument(
        "--contrasts", default="T1", metavar="C,C", help="contrasts to use (default T1)"
    )
    parser.add_argument("--axis", default="SI", help="thick axis (default SI)")
    parser.add_argument("--planes", default="one", choices=("one", "both"))
    parser.add_argument("--no-mni", action="store_true", help="do not score the MNI152 template")
    parser.add_argument(
        "--skull-stripped",
        action="store_true",
        help="test volumes are brain-extracted: their foreground is the brain mask (Dice)",
    )
    guided = parser.add_argument_group(
        "guided methods (MINet)",
        "MINet restores with a guide of another contrast of the same head: it trains on guided "
        "synthetic heads (as train --arch minet --synthetic DIR --guide-contrast C) and is "
        "scored on held-out guided synthetic heads (synth-head-N, made from label maps its "
        "training keeps out), which every method restores too",
    )
    guided.add_argument(
        "--synthetic",
        metavar="DIR",
        help="label maps and their tables (SynthSeg layout, as for train --synthetic); without "
        "it, all leaves MINet out",
    )
    guided.add_argument(
        "--synthetic-contrast",
        choices=CONTRASTS,
        default="t1",
        help="contrast of the heads made thick (default t1)",
    )
    guided.add_argument(
        "--guide-contrast", choices=CONTRASTS, default="t1", help="their guides' (default t1)"
    )
    guided.add_argument(
        "--synthetic-count",
        type=int_at_least(1),
        default=40,
        metavar="N",
        help="heads in MINet's training pool (default 40)",
    )
    guided.add_argument(
        "--synthetic-val-maps",
        type=int_at_least(1),
        default=2,
        metavar="N",
        help="label maps kept out of training for the validation and held-out heads (default 2)",
    )
    guided.add_argument(
        "--synthetic-heads",
        type=int_at_least(1),
        default=4,
        metavar="N",
        help="held-out guided heads scored (default 4)",
    )
    parser.add_argument("--samples-per-epoch", type=int_at_least(1), metavar="N")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--title", default="TransMRSR benchmark", help="report title")
    parser.add_argument("--notes-file", metavar="FILE", help="Markdown put under the title")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.set_defaults(func=run)


def _figure_hook(out: Path):
    def hook(test: HeldOutVolume, factor: float, images: dict[str, np.ndarray]) -> dict[str, str]:
        ref = test.volume
        thick = resolve_axis("SI", ref.affine)
        name = f"fig_{test.name.split('.')[0]}_x{factor:g}.png"
        path = methods_figure(
            {METHODS[name].label: image for name, image in images.items()},
            ref.data,
            ref.affine,
            thick,
            out / name,
            title=f"{test.name}, x{factor:g} along SI",
        )
        return {f"{test.name} x{factor:g}": str(path)}

    return hook


def run(args: argparse.Namespace) -> int:
    settings = BenchmarkSettings(
        preset=args.config,
        factors=tuple(args.factors),
        methods=args.methods,
        budget_steps=args.budget_steps,
        budget_minutes=args.budget_minutes,
        prior=args.prior,
        prior_steps=args.prior_steps,
        stylegan2_prior=args.stylegan2_prior,
        thick_axis=args.axis,
        planes=args.planes,
        include_mni=not args.no_mni,
        skull_stripped=args.skull_stripped,
        samples_per_epoch=args.samples_per_epoch,
        seed=args.seed,
        synthetic=args.synthetic,
        synthetic_contrast=args.synthetic_contrast,
        guide_contrast=args.guide_contrast,
        synthetic_count=args.synthetic_count,
        synthetic_val_maps=args.synthetic_val_maps,
        synthetic_heads=args.synthetic_heads,
    )
    if settings.guided:
        synthetic_config(settings)  # check the label folder before the data is read
    notes = ""
    if args.notes_file:
        try:
            notes = Path(args.notes_file).read_text()
        except OSError as exc:
            raise TransMRSRError(f"{args.notes_file}: cannot read ({exc.strerror})") from None
    out = Path(args.out)
    data = select_data(
        args.data,
        contrast=args.contrast,
        split_file=args.split,
        val=args.val,
        test=args.test,
        seed=args.seed,
        contrasts=contrasts_of(args),
    )
    ctx = setup(args.device)
    result = run_benchmark(
        data, settings, out, ctx, progress=not args.no_progress, figure_hook=_figure_hook(out)
    )
    report = write_report(result, out, title=args.title, notes=notes)
    sys.stdout.write(report.read_text())
    log.info("report: %s", report)
    return 0
