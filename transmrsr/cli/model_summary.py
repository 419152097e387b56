"""``transmrsr model-summary``: size, arithmetic and speed of one network on this machine.

Answers "can I run this configuration here, and how long will a volume take?" before any
training or inference: parameters per part, forward GFLOPs per slice, and the measured
forward time per slice with the thread count the user will run with.
"""

from __future__ import annotations

import argparse
import json
import logging
from typing import Any

import torch

from transmrsr.cli.common import int_at_least
from transmrsr.models import profiling, registry

log = logging.getLogger(__name__)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "model-summary",
        help="parameters, GFLOPs and CPU time per slice of a network configuration",
        description=(
            "Builds a network (random weights), counts its parameters per part and its "
            "forward FLOPs per SIZE x SIZE slice, and times its forward pass on this machine. "
            f"Architectures: {', '.join(registry.list_architectures())}; configs: paper, "
            "compact, tiny."
        ),
    )
    parser.add_argument(
        "--arch",
        default="transmrsr",
        metavar="NAME",
        help=f"architecture ({', '.join(registry.list_architectures())}; default transmrsr)",
    )
    parser.add_argument(
        "--config",
        default=registry.DEFAULT_PRESET,
        metavar="NAME",
        help=f"preset configuration (paper, compact, tiny; default {registry.DEFAULT_PRESET})",
    )
    parser.add_argument(
        "--batch-size",
        type=int_at_least(1),
        default=1,
        metavar="N",
        help="slices per timed forward pass (default 1; larger batches cost less per slice)",
    )
    parser.add_argument(
        "--threads",
        type=int_at_least(1),
        default=None,
        metavar="N",
        help=f"CPU threads for the timing (default: PyTorch's, here {torch.get_num_threads()})",
    )
    parser.add_argument(
        "--size",
        type=int_at_least(1),
        default=256,
        metavar="S",
        help="slice side in pixels for FLOPs and timing (default 256)",
    )
    parser.add_argument(
        "--repeats",
        type=int_at_least(0),
        default=3,
        metavar="N",
        help="timed forward passes, median reported (default 3; 0 = count only, no timing)",
    )
    parser.add_argument(
        "--json", action="store_true", help="print one JSON object instead of the table"
    )
    parser.set_defaults(func=run)


def summarise(
    arch: str,
    preset: str,
    *,
    size: int = 256,
    batch_size: int = 1,
    threads: int | None = None,
    repeats: int = 3,
) -> dict[str, Any]:
    """The numbers the command reports, as a JSON-serialisable dict."""
    config = registry.get_config(arch, preset)
    model = registry.build_model(arch, config)
    profiling.fill_missing_centroids(model)
    channels = 1 + int(getattr(config, "guide_channels", 0))  # the plane and its guide(s)
    shape = (1, channels, size, size)
    flops = profiling.count_flops_of(lambda: registry.build_model(arch, config), shape)
    used_threads = threads if threads is not None else torch.get_num_threads()
    summary: dict[str, Any] = {
        "arch": arch,
        "preset": preset,
        "config": registry.config_to_dict(config)["config"],
        "parameters": profiling.count_parameters(model),
        "slice_size": size,
        "gflops_per_slice": flops / 1e9,
        "batch_size": batch_size,
        "threads": used_threads,
        "ms_per_slice": None,
        "achieved_gflops_per_s": None,
    }
    if repeats:
        log.info("timing %s (%s), batch %d, %d threads", arch, preset, batch_size, used_threads)
        ms = profiling.time_forward(
            model,
            (batch_size, channels, size, size),
            threads=used_threads,
            repeats=repeats,
            warmup=1,
        )
        summary["ms_per_slice"] = ms
        summary["achieved_gflops_per_s"] = flops / 1e9 / (ms / 1000.0)
    return summary


def format_summary(summary: dict[str, Any]) -> str:
    """A plain two-column table of :func:`summarise`'s numbers."""
    size = summary["slice_size"]
    rows: list[tuple[str, str]] = [("part", "parameters")]
    for name, count in summary["parameters"].items():
        rows.append((name, f"{count:,}"))
    width = max(len(name) for name, _ in rows)
    lines = [f"{summary['arch']} ({summary['preset']} config)", ""]
    lines += [f"  {name:<{width}}  {value:>13}" for name, value in rows]
    lines.append("")
    lines.append(f"GFLOPs per {size}x{size} slice: {summary['gflops_per_slice']:.2f}")
    if summary["ms_per_slice"] is not None:
        lines.append(
            f"forward time per slice: {summary['ms_per_slice']:.1f} ms (batch "
            f"{summary['batch_size']}, {summary['threads']} threads) = "
            f"{summary['achieved_gflops_per_s']:.1f} GFLOP/s"
        )
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Print the summary; unknown architectures and configs raise TransMRSRError (exit 2)."""
    summary = summarise(
        args.arch,
        args.config,
        size=args.size,
        batch_size=args.batch_size,
        threads=args.threads,
        repeats=args.repeats,
    )
    print(json.dumps(summary, indent=2) if args.json else format_summary(summary))
    return 0
