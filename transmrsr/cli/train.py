"""``transmrsr train``: stage 2, TransMRSR (or a baseline) super-resolution (SPEC section 4)."""

from __future__ import annotations

import argparse
import dataclasses
import logging
from pathlib import Path

from transmrsr.cli.common import int_at_least, positive_float
from transmrsr.cli.training import add_run_arguments, prepare_run, start, synthetic_of
from transmrsr.errors import TransMRSRError
from transmrsr.models.registry import list_architectures
from transmrsr.training.config import (
    PERCEPTUAL_BACKBONES,
    SR_PRESETS,
    resolve_config,
    sr_preset,
    with_overrides,
)
from transmrsr.training.distributed import process_group
from transmrsr.training.sr import guided_config, train_sr
from transmrsr.training.synthetic import CONTRASTS

log = logging.getLogger(__name__)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="stage 2: train TransMRSR on LR/HR pairs simulated from high-resolution volumes",
        description=(
            "Trains TransMRSR with the decoder initialised from --prior (with its SDT "
            "centroids). Pairs are simulated on the fly; validation PSNR (paper protocol) "
            "after every epoch drives the best checkpoint and early stopping. Writes last.pt, "
            "best.pt, model_best.safetensors (for restore), config/split files and TensorBoard "
            "logs to --out. Multi-GPU: torchrun --nproc-per-node N -m transmrsr train ..."
        ),
    )
    add_run_arguments(parser, "compact")
    parser.add_argument(
        "--prior",
        metavar="PRIOR",
        help="prior file from train-prior (a StyleGAN2 one, train-prior --arch stylegan2, for "
        "--arch gfpgan)",
    )
    parser.add_argument(
        "--init",
        metavar="MODEL",
        help=(
            "fine-tune: start from this trained model (shipped name, model file or train "
            "checkpoint) with the same network config; the prior then only supplies the "
            "perceptual discriminator"
        ),
    )
    parser.add_argument(
        "--vgg-weights",
        metavar="FILE",
        help="torchvision vgg19 state-dict file (.pth or .safetensors) for the perceptual loss",
    )
    parser.add_argument(
        "--perceptual",
        choices=PERCEPTUAL_BACKBONES,
        help="perceptual backbone: vgg19 (needs --vgg-weights) or the prior's discriminator",
    )
    parser.add_argument("--epochs", type=int_at_least(1), metavar="N", help="maximum epochs")
    parser.add_argument(
        "--samples-per-epoch", type=int_at_least(1), metavar="N", help="planes per epoch"
    )
    parser.add_argument(
        "--factor-range",
        type=positive_float,
        nargs=2,
        metavar=("LO", "HI"),
        help="thick/thin factors to simulate, drawn uniformly (e.g. 2 8)",
    )
    parser.add_argument(
        "--thickness-range",
        type=positive_float,
        nargs=2,
        metavar=("LO", "HI"),
        help="slice thickness / slice spacing to simulate, drawn uniformly (default 1 1, the "
        "SPEC's model; e.g. 0.6 1 for scans with slice gaps)",
    )
    parser.add_argument("--lr", type=positive_float, help="Adam learning rate")
    parser.add_argument(
        "--arch",
        choices=list_architectures(),
        help="train a baseline network instead of TransMRSR, with its preset of the --config "
        "name and the same pipeline (L1 loss; no prior needed but for gfpgan, whose generator "
        "starts from a StyleGAN2 --prior)",
    )
    parser.add_argument(
        "--guide-contrast",
        choices=CONTRASTS,
        help="train a guided network (one guide channel; docs/restore.md, guided restoration) "
        "on two contrasts of each synthetic head: the --synthetic-contrast one made thick, "
        "this one, slightly misregistered, as the guide. Needs --synthetic, --synthetic-ratio "
        "1 and --synthetic-val-heads; --init an unguided model starts it from that model with "
        "a guide of zero weight",
    )
    parser.add_argument(
        "--guide-branch",
        type=int_at_least(1),
        metavar="WIDTH",
        help="with --guide-contrast: the guide feeds a residual CNN branch of this width after "
        "the transformer instead of its first convolution, and only the branch learns "
        "(start from a trained model with --init)",
    )
    parser.add_argument(
        "--time-limit",
        type=positive_float,
        metavar="MINUTES",
        help="stop after MINUTES of wall time (checkpointed; --resume continues)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.arch is not None:
        if args.config not in SR_PRESETS:
            raise TransMRSRError("--arch needs a preset --config name (a JSON config has its arch)")
        config = sr_preset(args.config, args.arch)
    else:
        config = resolve_config(args.config, "sr")
    pairs = config.pairs
    if args.factor_range:
        lo, hi = args.factor_range
        pairs = dataclasses.replace(pairs, factor_range=(float(lo), float(hi)))
    if args.thickness_range:
        lo, hi = args.thickness_range
        pairs = dataclasses.replace(pairs, thickness_range=(float(lo), float(hi)))
    config = with_overrides(
        config,
        pairs=pairs,
        batch_size=args.batch_size,
        seed=args.seed,
        max_epochs=args.epochs,
        samples_per_epoch=args.samples_per_epoch,
        perceptual=args.perceptual,
        vgg_weights=args.vgg_weights,
        lr=args.lr,
        synthetic=synthetic_of(args),
    )
    if args.guide_branch is not None and args.guide_contrast is None:
        raise TransMRSRError("--guide-branch needs --guide-contrast")
    if args.guide_contrast is not None:
        config = guided_config(config, args.guide_contrast, branch=args.guide_branch or 0)
    if args.prior is not None and not Path(args.prior).is_file():
        raise TransMRSRError(f"{args.prior}: no such prior file")
    ctx, out = start(args)
    with process_group(ctx):
        resume_from, data = prepare_run(args, ctx, out, config)
        result = train_sr(
            data,
            config,
            out,
            ctx,
            prior_path=Path(args.prior) if args.prior else None,
            resume_from=resume_from,
            init=args.init,
            stop_after=args.stop_after,
            max_seconds=args.time_limit * 60 if args.time_limit else None,
            progress=not args.no_progress,
            workers=args.workers,
        )
    if ctx.is_main:
        log.info(
            "%s after %d steps (%d epochs) in %.0f s; best validation PSNR %.2f dB at epoch %d",
            "stopped early" if result.stopped_early else "ended",
            result.steps,
            result.epochs,
            result.seconds,
            result.best_psnr,
            result.best_epoch,
        )
    return 0
