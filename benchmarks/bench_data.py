"""How fast training data arrive: loading a cohort, making synthetic heads, making pairs.

Measures, on the machine it runs on, what ``transmrsr train`` spends before and beside the
network: reading and normalising every training volume (seconds and resident memory), making
the synthetic-head pool from label maps (seconds per head), and making LR/HR training pairs
(slices per second) from real volumes, synthetic heads and their mix, in the loop and with
``--workers`` processes. A training step consumes ``batch`` slices; if pairs arrive slower
than the network eats them, the network waits.

    python benchmarks/bench_data.py ../shared/data/ds002748 --labels ../shared/data/labels
    python benchmarks/bench_data.py DATA --labels LABELS --workers 0 1 2 --batches 40

Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import logging
import resource
import sys
import time

from torch.utils.data import DataLoader

from transmrsr.errors import TransMRSRError
from transmrsr.intensity import IntensityScaler
from transmrsr.pairs import PairConfig
from transmrsr.training.data import PairDataset, discover_volumes, load_normalised
from transmrsr.training.distributed import ShardedBatchSampler
from transmrsr.training.synthetic import (
    HeadConfig,
    LabelTables,
    MixedDataset,
    discover_label_maps,
    generate_pool,
)

log = logging.getLogger("bench_data")


def rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def slices_per_second(dataset, batch: int, batches: int, workers: int) -> float:
    sampler = ShardedBatchSampler(len(dataset), batch, seed=0, samples_per_epoch=batch * batches)
    sampler.set_position(0, 0)
    loader = DataLoader(dataset, batch_sampler=sampler, num_workers=workers)
    start = time.perf_counter()
    seen = 0
    for lr, _hr, _factor in loader:
        seen += lr.shape[0]
    return seen / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", nargs="+", help="folders or files of training volumes")
    parser.add_argument("--labels", help="label-map folder for synthetic heads")
    parser.add_argument("--heads", type=int, default=4, help="synthetic heads to make")
    parser.add_argument("--contrast", default="T1")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--batches", type=int, default=25)
    parser.add_argument("--ratio", type=float, default=0.3)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        rows = []
        records = discover_volumes(args.data, contrast=args.contrast)
        start = time.perf_counter()
        volumes, affines = load_normalised(records)
        seconds = time.perf_counter() - start
        voxels = sum(v.size for v in volumes)
        rows.append(
            f"| load and normalise {len(records)} volumes | {seconds:.1f} s "
            f"({seconds / len(records):.2f} s each) | {voxels * 4 / 2**30:.2f} GiB as float32, "
            f"peak RSS {rss_gib():.2f} GiB |"
        )
        pairs = PairConfig(factor_range=(2.0, 8.0), transpose=False, thickness_range=(0.6, 1.0))
        real = PairDataset(volumes, affines, pairs, seed=0)
        datasets = {"real": real}
        if args.labels:
            tables = LabelTables.load(args.labels)
            maps = discover_label_maps(args.labels)
            start = time.perf_counter()
            heads, head_affines = generate_pool(maps, tables, HeadConfig(), args.heads, seed=0)
            seconds = time.perf_counter() - start
            rows.append(
                f"| synthetic heads ({args.heads}, T1-like, label map read included) | "
                f"{seconds:.1f} s ({seconds / args.heads:.1f} s each) | "
                f"{heads[0].shape} voxels each |"
            )
            heads = [IntensityScaler.fit(h)(h) for h in heads]
            synthetic = PairDataset(heads, head_affines, pairs, seed=0)
            datasets["synthetic"] = synthetic
            datasets[f"mix ({args.ratio:.0%} synthetic)"] = MixedDataset(
                real, synthetic, args.ratio, seed=0
            )
        rows.append(f"| training planes | {len(real)} real | |")
        for name, dataset in datasets.items():
            for workers in args.workers:
                rate = slices_per_second(dataset, args.batch, args.batches, workers)
                rows.append(
                    f"| pairs from {name}, {workers} worker(s) | {rate:.1f} slices/s | "
                    f"{args.batch * args.batches} slices of 256 x 256 |"
                )
    except TransMRSRError as exc:
        print(f"bench_data: error: {exc}", file=sys.stderr)
        return 2
    print("| what | time or rate | notes |\n|---|---|---|")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
