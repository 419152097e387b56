"""Options and plumbing shared by ``train-prior`` and ``train`` (data, split, device, resume)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from transmrsr.cli.common import fraction, int_at_least
from transmrsr.devices import PRECISIONS
from transmrsr.training.distributed import DistContext, barrier, setup
from transmrsr.training.runs import RunData, prepare_out, select_data
from transmrsr.training.synthetic import (
    CONTRASTS,
    HeadConfig,
    LabelTables,
    SyntheticConfig,
    discover_label_maps,
)

log = logging.getLogger(__name__)


def add_run_arguments(parser: argparse.ArgumentParser, default_config: str) -> None:
    """DATA, --config, --out, --resume, split, device and run-length options."""
    parser.add_argument(
        "data",
        nargs="+",
        metavar="DATA",
        help="folders, NIfTI/MGZ files or IXI .tar archives of high-resolution volumes",
    )
    parser.add_argument(
        "--config",
        default=default_config,
        metavar="NAME|FILE",
        help=f"preset (paper, compact, tiny) or a JSON config file (default {default_config})",
    )
    parser.add_argument("--out", required=True, metavar="DIR", help="run folder")
    parser.add_argument(
        "--resume", action="store_true", help="continue the run in --out from its last.pt"
    )
    parser.add_argument(
        "--split",
        metavar="FILE",
        help="subject split (split.json of another run) instead of a new split by --seed",
    )
    parser.add_argument("--contrast", metavar="C", help="contrast of volumes whose name has none")
    parser.add_argument(
        "--contrasts", metavar="C,C", help="train only on these contrasts, e.g. T1 (default all)"
    )
    parser.add_argument("--batch-size", type=int_at_least(1), metavar="N", help="global batch")
    parser.add_argument("--seed", type=int, metavar="N", help="random seed of the run")
    parser.add_argument(
        "--device",
        default="auto",
        choices=("auto", "cpu", "cuda"),
        help="auto = GPU when present (default)",
    )
    parser.add_argument(
        "--precision",
        default="auto",
        choices=PRECISIONS,
        help="bf16 = bf16 autocast (fast on GPUs and on CPUs with AMX or AVX512-BF16); "
        "auto = bf16 on a GPU, fp32 on a CPU (default)",
    )
    parser.add_argument(
        "--stop-after",
        type=int_at_least(1),
        metavar="STEPS",
        help="stop after STEPS steps in total (checkpointed; --resume continues)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (logs only)")
    parser.add_argument(
        "--workers",
        type=int_at_least(0),
        default=0,
        metavar="N",
        help="processes that make training samples beside the training loop (default 0: "
        "in the loop; on a GPU a few keep it fed). Items are seeded by index, so the "
        "samples, and the run, do not depend on N",
    )

    synthetic = parser.add_argument_group(
        "synthetic heads",
        "whole heads made from label maps (SynthSeg/SynthSR recipe) mixed into the training "
        "samples; the run's config records it",
    )
    synthetic.add_argument(
        "--synthetic",
        metavar="DIR",
        help="folder of label maps and their tables (SynthSeg layout: generation_labels.npy, "
        "generation_classes.npy, prior_means_t1.npy, prior_stds_t1.npy)",
    )
    synthetic.add_argument(
        "--synthetic-ratio",
        type=fraction,
        default=0.3,
        metavar="R",
        help="fraction of training samples from synthetic heads (default 0.3)",
    )
    synthetic.add_argument(
        "--synthetic-contrast",
        choices=CONTRASTS,
        default="t1",
        help="t1: T1-like intensity priors; random: uniform per tissue (T2-, PD-, FLAIR-like "
        "heads appear) (default t1)",
    )
    synthetic.add_argument(
        "--synthetic-count",
        type=int_at_least(1),
        default=40,
        metavar="N",
        help="heads in the run's pool, made once and cached in OUT/synthetic (default 40)",
    )
    synthetic.add_argument(
        "--synthetic-val-maps",
        type=int_at_least(0),
        default=2,
        metavar="N",
        help="label maps (anatomies) kept out of training, chosen by the seed (default 2)",
    )
    synthetic.add_argument(
        "--synthetic-val-heads",
        type=int_at_least(0),
        default=0,
        metavar="N",
        help="heads with skull made from the kept-out anatomies and added to the validation "
        "set, so the best checkpoint is also chosen on heads (stage 2; default 0)",
    )


def synthetic_of(args: argparse.Namespace) -> SyntheticConfig | None:
    """The synthetic-head settings the options ask for (``None`` without ``--synthetic``)."""
    if args.synthetic is None:
        return None
    # Check the folder now, before a run folder is made or any volume read.
    LabelTables.load(args.synthetic)
    discover_label_maps(args.synthetic)
    return SyntheticConfig(
        labels=str(Path(args.synthetic).resolve()),
        ratio=args.synthetic_ratio,
        count=args.synthetic_count,
        val_maps=args.synthetic_val_maps,
        val_heads=args.synthetic_val_heads,
        head=HeadConfig(contrast=args.synthetic_contrast),
    )


def contrasts_of(args: argparse.Namespace) -> list[str] | None:
    return [c.strip() for c in args.contrasts.split(",") if c.strip()] if args.contrasts else None


def start(args: argparse.Namespace) -> tuple[DistContext, Path]:
    """Join torchrun's process group if any; quieten logging on ranks other than 0."""
    ctx = setup(args.device, args.precision)
    if not ctx.is_main:
        logging.getLogger("transmrsr").setLevel(logging.WARNING)
    log.info(
        "device %s, %d process(es), %s",
        ctx.device,
        ctx.world_size,
        "bf16 autocast" if ctx.use_bf16 else "fp32",
    )
    return ctx, Path(args.out)


def prepare_run(
    args: argparse.Namespace, ctx: DistContext, out: Path, config: Any
) -> tuple[Path | None, RunData]:
    """The run folder (rank 0 creates it, or checks there is a run to resume) and the data.

    Returns the checkpoint to resume from (``None`` for a fresh run) and the selected data,
    split with the config's ``val``/``test``/``seed`` unless ``--split`` is given.
    """
    resume_from = prepare_out(out, resume=args.resume) if ctx.is_main else None
    barrier(ctx)
    if args.resume:
        resume_from = out / "last.pt"
    data = select_data(
        args.data,
        contrast=args.contrast,
        split_file=args.split,
        val=config.val,
        test=config.test,
        seed=config.seed,
        contrasts=contrasts_of(args),
    )
    return resume_from, data
