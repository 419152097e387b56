"""Size, arithmetic and speed of the SR networks, as a Markdown table.

For each architecture and preset: parameters, GFLOPs per slice, time per slice, achieved
GFLOP/s, and that throughput as a share of a plain float32 matmul measured in the same run (so
that tables from different machines or loads compare by efficiency, not only by speed).

Examples::

    python benchmarks/bench_models.py                          # compact and paper, CPU, 2 threads
    python benchmarks/bench_models.py --configs compact --archs edsr restormer
    python benchmarks/bench_models.py --device cuda --backward --batch-size 8 --paper-batch-size 8

Paper configurations cost up to 5 TFLOPs per 256 x 256 slice (EDSR), a minute or more per
slice on two CPU cores: they run with ``--paper-batch-size`` (default 1) and
``--paper-repeats`` (default 1) unless told otherwise; ``--repeats 0`` counts without timing.
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass

import torch

from transmrsr.errors import TransMRSRError
from transmrsr.models import profiling, registry

log = logging.getLogger("bench_models")


@dataclass
class Row:
    arch: str
    preset: str
    parameters: int
    gflops: float
    batch: int
    ms: float | None

    def achieved(self) -> float | None:
        return None if self.ms is None else self.gflops / (self.ms / 1000.0)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--archs",
        nargs="+",
        default=registry.list_architectures(),
        choices=registry.list_architectures(),
        help="architectures (default: all)",
    )
    parser.add_argument(
        "--configs", nargs="+", default=["compact", "paper"], help="presets (default compact paper)"
    )
    parser.add_argument("--size", type=int, default=256, help="slice side (default 256)")
    parser.add_argument("--batch-size", type=int, default=8, help="slices per pass (default 8)")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes, median (default 3)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed passes first (default 1)")
    parser.add_argument(
        "--paper-batch-size", type=int, default=1, help="batch for paper configs (default 1)"
    )
    parser.add_argument(
        "--paper-repeats", type=int, default=1, help="timed passes for paper configs (default 1)"
    )
    parser.add_argument(
        "--paper-warmup", type=int, default=0, help="warm-up passes for paper configs (default 0)"
    )
    parser.add_argument(
        "--threads", type=int, default=2, help="CPU threads (default 2, the project's CPU)"
    )
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument(
        "--backward",
        action="store_true",
        help="time forward + backward (a training step without the optimiser); FLOPs too",
    )
    args = parser.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available")
    for name in ("size", "batch_size", "paper_batch_size", "threads"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    for name in ("repeats", "warmup", "paper_repeats", "paper_warmup"):
        if getattr(args, name) < 0:
            parser.error(f"--{name.replace('_', '-')} must be at least 0")
    return args


def measure(arch: str, preset: str, args: argparse.Namespace) -> Row:
    """Count and time one configuration (timing skipped when its repeats are 0)."""
    paper = preset == "paper"
    batch = args.paper_batch_size if paper else args.batch_size
    repeats = args.paper_repeats if paper else args.repeats
    warmup = args.paper_warmup if paper else args.warmup
    config = registry.get_config(arch, preset)
    channels = 1 + int(getattr(config, "guide_channels", 0))  # the plane and its guide(s)
    shape = (1, channels, args.size, args.size)
    flops = profiling.count_flops_of(
        lambda: registry.build_model(arch, config), shape, backward=args.backward
    )
    model = registry.build_model(arch, config)
    params = profiling.count_parameters(model)["total"]
    ms = None
    if repeats:
        model.to(args.device)
        profiling.fill_missing_centroids(model)
        log.info("timing %s %s: batch %d, %d repeats", arch, preset, batch, repeats)
        ms = profiling.time_forward(
            model,
            (batch, channels, args.size, args.size),
            threads=args.threads,
            repeats=repeats,
            warmup=warmup,
            backward=args.backward,
        )
    return Row(arch, preset, params, flops / 1e9, batch, ms)


def markdown(rows: list[Row], matmul: float, args: argparse.Namespace) -> str:
    """The result table, plus a line saying how it was measured."""
    pass_name = "fwd+bwd" if args.backward else "forward"
    lines = [
        f"| network | config | parameters | GFLOPs/slice ({pass_name}) | batch | ms/slice "
        "| GFLOP/s | % of matmul |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        achieved = r.achieved()
        ms = "-" if r.ms is None else f"{r.ms:.1f}"
        rate = "-" if achieved is None else f"{achieved:.1f}"
        share = "-" if achieved is None else f"{100.0 * achieved / matmul:.0f}%"
        lines.append(
            f"| {r.arch} | {r.preset} | {r.parameters / 1e6:.2f}M | {r.gflops:.1f} | {r.batch} "
            f"| {ms} | {rate} | {share} |"
        )
    device = args.device if args.device != "cpu" else f"cpu, {args.threads} threads"
    lines.append("")
    lines.append(
        f"{args.size}x{args.size} slices, {device}, torch {torch.__version__}; plain float32 "
        f"{profiling.MATMUL_SIZE}x{profiling.MATMUL_SIZE} matmul in the same run: "
        f"{matmul:.1f} GFLOP/s."
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    matmul = profiling.matmul_gflops(args.threads, device=args.device)
    try:
        rows = [measure(arch, preset, args) for preset in args.configs for arch in args.archs]
    except TransMRSRError as exc:
        print(f"bench_models: error: {exc}", file=sys.stderr)
        return 2
    print(markdown(rows, matmul, args))
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    sys.exit(main())
