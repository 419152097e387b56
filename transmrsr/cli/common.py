"""Argument types and helpers shared by the sub-commands, so every command reads alike."""

from __future__ import annotations

import argparse
import math

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


def add_dtype_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dtype",
        default="float32",
        choices=OUTPUT_DTYPES,
        help="data type of the written volume (default float32; integers are rounded and clipped)",
    )
