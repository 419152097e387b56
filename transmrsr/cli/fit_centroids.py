"""``transmrsr fit-centroids``: the SDT centroids of a stage-1 prior (SPEC 3.4)."""

from __future__ import annotations

import argparse
import logging
import time

from transmrsr.training.centroids import add_centroids_to_prior

log = logging.getLogger(__name__)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "fit-centroids",
        help="k-means centroids of a prior's latents, stored with the prior (SDT)",
        description=(
            "Maps N random z through the prior's mapping network and clusters the w's into K "
            "centroids with k-means. The centroids are added to the prior file (rewritten "
            "atomically) or written to --out."
        ),
    )
    parser.add_argument("prior", metavar="PRIOR", help="prior file (.safetensors) from train-prior")
    parser.add_argument(
        "--n-latents",
        type=int,
        default=60_000,
        metavar="N",
        help="number of latents to cluster (default 60000)",
    )
    parser.add_argument("--k", type=int, default=8, help="number of centroids (default 8)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--out", metavar="FILE", help="write the prior with centroids here instead")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    out = add_centroids_to_prior(
        args.prior, args.out, n_latents=args.n_latents, k=args.k, seed=args.seed
    )
    log.info(
        "fitted %d centroids from %d latents in %.1f s -> %s",
        args.k,
        args.n_latents,
        time.perf_counter() - start,
        out,
    )
    return 0
