"""``transmrsr train-prior``: stage 1, the generative prior (SPEC section 4): StyleSwin for
TransMRSR, or StyleGAN2 for the GFP-GAN baseline (``--arch stylegan2``)."""

from __future__ import annotations

import argparse
import logging

from transmrsr.cli.common import int_at_least
from transmrsr.cli.training import add_run_arguments, prepare_run, start, synthetic_of
from transmrsr.errors import TransMRSRError
from transmrsr.models.priors import DEFAULT_PRIOR, list_priors
from transmrsr.training.config import (
    PRIOR_PRESETS,
    PriorTrainConfig,
    prior_preset,
    resolve_config,
    with_overrides,
)
from transmrsr.training.distributed import process_group
from transmrsr.training.prior import train_prior

log = logging.getLogger(__name__)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train-prior",
        help="stage 1: train a generative prior (GAN; StyleSwin, or --arch stylegan2 for "
        "GFP-GAN) on high-resolution slices",
        description=(
            "Trains a StyleSwin generator (or, with --arch stylegan2, the StyleGAN2 generator "
            "that the GFP-GAN baseline loads) against a StyleGAN2 discriminator on slices of "
            "all three planes of the training subjects (non-saturating loss, lazy R1, EMA). "
            "Writes checkpoints, sample grids (samples/*.png) and TensorBoard logs to --out, "
            "and at the end OUT/prior.safetensors for fit-centroids and train (a StyleGAN2 "
            "prior needs no centroids: train --arch gfpgan --prior). Multi-GPU: launch with "
            "torchrun --nproc-per-node N -m transmrsr train-prior ..."
        ),
    )
    add_run_arguments(parser, "compact")
    parser.add_argument("--steps", type=int_at_least(1), metavar="N", help="total steps")
    parser.add_argument(
        "--arch",
        choices=list_priors(),
        help=f"the prior: styleswin (TransMRSR's) or stylegan2 (GFP-GAN's); default "
        f"{DEFAULT_PRIOR} for a preset --config, the file's own for a JSON config",
    )
    parser.set_defaults(func=run)


def config_of(name_or_path: str, arch: str | None) -> PriorTrainConfig:
    """The run's config: the preset ``name_or_path`` for prior ``arch``, or a JSON config
    (whose own arch a different ``--arch`` contradicts)."""
    if name_or_path in PRIOR_PRESETS:
        return prior_preset(name_or_path, arch or DEFAULT_PRIOR)
    config = resolve_config(name_or_path, "prior")
    if arch is not None and arch != config.arch:
        raise TransMRSRError(
            f"{name_or_path} is a {config.arch} prior config; --arch {arch} contradicts it"
        )
    return config


def run(args: argparse.Namespace) -> int:
    config = config_of(args.config, args.arch)
    config = with_overrides(
        config,
        steps=args.steps,
        batch_size=args.batch_size,
        seed=args.seed,
        synthetic=synthetic_of(args),
    )
    ctx, out = start(args)
    with process_group(ctx):
        resume_from, data = prepare_run(args, ctx, out, config)
        result = train_prior(
            data,
            config,
            out,
            ctx,
            resume_from=resume_from,
            stop_after=args.stop_after,
            progress=not args.no_progress,
            workers=args.workers,
        )
    if ctx.is_main:
        if result.prior is not None:
            log.info(
                "stage 1 (%s) done: %d steps in %.0f s -> %s",
                config.arch,
                result.steps,
                result.seconds,
                result.prior,
            )
        else:
            log.info(
                "stopped at step %d after %.0f s; continue with --resume",
                result.steps,
                result.seconds,
            )
    return 0
