"""Argument types and helpers shared by the sub-commands, so every command reads alike."""

from __future__ import annotations

import argparse
import math

from transmrsr.devices import PRECISIONS
from transmrsr.inference.adapt import (
    ADAPT_SCOPES,
    DEFAULT_STEPS,
    MIX_FROM_FACTOR,
    NOISE_FREE_LEVEL,
    UNKNOWN_SLICES,
    AdaptConfig,
)
from transmrsr.io import OUTPUT_DTYPES


def factor_type(text: str) -> float:
    """``--factor`` value: a finite number (its range is checked with the volume in hand)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def int_at_least(minimum: int):
    """An argparse type for integers of at least ``minimum`` (e.g. batch size, repeats)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{text!r} must be at least {minimum}")
        return value

    return parse


def positive_float(text: str) -> float:
    """A finite number above zero."""
    value = factor_type(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be above zero")
    return value


def noise_fraction(text: str) -> float:
    """A number in [0, 1): a noise level as a fraction of the tissue's intensity."""
    value = factor_type(text)
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"{text!r} must be in [0, 1)")
    return value


def fraction(text: str) -> float:
    """A number in (0, 1], e.g. a mixing ratio."""
    value = factor_type(text)
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text!r} must be in (0, 1]")
    return value


def slice_thickness_type(text: str) -> float | str:
    """``--slice-thickness`` value: ``auto``, ``spacing`` or a length in mm above zero."""
    if text in ("auto", "spacing"):
        return text
    try:
        return positive_float(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not auto, spacing or a positive length in mm"
        ) from None


def profile_type(text: str) -> list[float]:
    """A slice profile given as comma-separated weights, e.g. ``0.25,0.5,0.25``."""
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a comma-separated list of numbers"
        ) from None


def add_axis_argument(
    parser: argparse.ArgumentParser, help_text: str, default: str | None = None
) -> None:
    parser.add_argument(
        "--axis",
        default=default,
        metavar="A",
        help=f"{help_text}: an array axis 0, 1, 2 or an anatomical name LR, AP, SI",
    )


def add_factor_arguments(parser: argparse.ArgumentParser) -> None:
    """``--factor K`` or ``--resolution MM``: how far the thick axis is upsampled."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--factor",
        type=factor_type,
        metavar="K",
        help="upsampling factor (default: thick spacing / finest in-plane spacing)",
    )
    group.add_argument(
        "--resolution",
        type=positive_float,
        metavar="MM",
        help="isotropic output spacing in mm instead: the in-plane axes are resampled to it "
        "(anti-aliased when coarser) and the thick axis upsampled by its spacing / MM, e.g. 1 "
        "for a 0.45 x 0.45 x 5 mm clinical scan (x5 instead of x11)",
    )


def add_dtype_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dtype",
        default="float32",
        choices=OUTPUT_DTYPES,
        help="data type of the written volume (default float32; integers are rounded and clipped)",
    )


def add_network_run_arguments(parser: argparse.ArgumentParser) -> None:
    """``--adapt``, ``--adapt-scope`` and ``--precision``: how a restoring command runs its
    network (restore, demo)."""
    parser.add_argument(
        "--adapt",
        type=int_at_least(0),
        default=DEFAULT_STEPS,
        metavar="STEPS",
        help="first fine-tune the model for STEPS steps on the scan's own in-plane images "
        f"blurred like its slices (self-supervised, SMORE-style; default {DEFAULT_STEPS}, "
        "about 56 s on a 2-core CPU without bf16 units; 0: off, the network as shipped)",
    )
    parser.add_argument(
        "--adapt-scope",
        default=AdaptConfig.scope,
        choices=ADAPT_SCOPES,
        help="which parameters --adapt tunes: decoder (the decoder side, encoder frozen; half "
        "the time and memory per step), all, or auto (the default: all at x4.5-7 unless the "
        "scan is noise-free, decoder elsewhere)",
    )
    parser.add_argument(
        "--unknown-slices",
        default=AdaptConfig.unknown,
        choices=UNKNOWN_SLICES,
        help="what --adapt assumes of the slices when their thickness is not known (no "
        "--slice-thickness, sidecar or DICOM tag): gaussian (the SPEC's Gaussian as thick as "
        "the spacing), gaussian-range (Gaussians 0.6-1.2 spacings thick), mix (every "
        "profile shape at those thicknesses), gaussian-mix (the Gaussian and the mix on "
        f"alternate steps) or auto (the default: gaussian below x{MIX_FROM_FACTOR:g}, "
        "gaussian-mix from it)",
    )
    parser.add_argument(
        "--adapt-min-noise",
        type=noise_fraction,
        default=NOISE_FREE_LEVEL,
        metavar="FRACTION",
        help="a scan of unknown slice thickness whose in-plane noise is below FRACTION of its "
        "tissue level (a template, an average of many scans, a denoised image) is not "
        "adapted (unless --unknown-slices mix): with no noise to temper it, a wrong guess "
        f"of its slices costs more than adaptation gains (default {NOISE_FREE_LEVEL:g}; 0: "
        "never)",
    )
    parser.add_argument(
        "--precision",
        default="auto",
        choices=PRECISIONS,
        help="bf16 autocast for the network (and --adapt): auto = bf16 on GPUs and on CPUs "
        "with AMX tiles, where it is faster and the result the same to 0.01 dB; fp32 "
        "elsewhere (on AVX512-BF16 alone fp32 was measured faster)",
    )


def adapt_config(args: argparse.Namespace) -> AdaptConfig | None:
    """The adaptation ``--adapt`` asks for (None for 0 steps)."""
    if not args.adapt:
        return None
    return AdaptConfig(
        steps=args.adapt,
        scope=args.adapt_scope,
        unknown=args.unknown_slices,
        min_noise=args.adapt_min_noise,
    )
