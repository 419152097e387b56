"""``transmrsr train-prior``: stage 1, the StyleSwin generative prior (SPEC section 4)."""

from __future__ import annotations

import argparse
import logging

from transmrsr.cli.common import int_at_least
from transmrsr.cli.training import add_run_arguments, prepare_run, start, synthetic_of
from transmrsr.training.config import resolve_config, with_overrides
from transmrsr.training.distributed import process_group
from transmrsr.training.prior import train_prior

log = logging.getLogger(__name__)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train-prior",
        help="stage 1: train the StyleSwin prior (GAN) on high-resolution slices",
        description=(
            "Trains a StyleSwin generator against a StyleGAN2 discriminator on slices of all "
            "three planes of the training subjects (non-saturating loss, lazy R1, EMA). Writes "
            "checkpoints, sample grids (samples/*.png) and TensorBoard logs to --out, and at "
            "the end OUT/prior.safetensors for fit-centroids and train. Multi-GPU: launch with "
            "torchrun --nproc-per-node N -m transmrsr train-prior ..."
        ),
    )
    add_run_arguments(parser, "compact")
    parser.add_argument("--steps", type=int_at_least(1), metavar="N", help="total steps")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    config = resolve_config(args.config, "prior")
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
                "stage 1 done: %d steps in %.0f s -> %s", result.steps, result.seconds, result.prior
            )
        else:
            log.info(
                "stopped at step %d after %.0f s; continue with --resume",
                result.steps,
                result.seconds,
            )
    return 0
