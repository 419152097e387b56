"""The ``transmrsr`` command: one sub-command per module in this package.

Each command module exposes ``add_parser(subparsers)`` (declares its arguments and sets
``func=run`` on its parser) and ``run(args) -> int``. This file only wires them together and
turns :class:`~transmrsr.errors.TransMRSRError` into a one-line message with exit status 2, so
that users never see a traceback for a problem they can fix.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from transmrsr import __version__
from transmrsr.errors import TransMRSRError

log = logging.getLogger("transmrsr")

#: Command modules, in the order ``transmrsr --help`` lists them.
COMMAND_MODULES: tuple[str, ...] = (
    "transmrsr.cli.degrade",
    "transmrsr.cli.upsample",
    "transmrsr.cli.restore",
    "transmrsr.cli.evaluate",
    "transmrsr.cli.train_prior",
    "transmrsr.cli.fit_centroids",
    "transmrsr.cli.train",
    "transmrsr.cli.benchmark",
    "transmrsr.cli.model_summary",
    "transmrsr.cli.demo",
)


class _Parser(argparse.ArgumentParser):
    """ArgumentParser whose usage errors are one line, like every other error of the tool."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    """Build the top-level parser with every available sub-command."""
    parser = _Parser(
        prog="transmrsr",
        description="Thick-slice brain MRI to isotropic high-resolution volumes (TransMRSR).",
    )
    parser.add_argument("--version", action="version", version=f"transmrsr {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debugging details")
    parser.add_argument("-q", "--quiet", action="store_true", help="log warnings and errors only")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(name).add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``transmrsr`` console script; returns the process exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version and usage errors: already printed
        return int(exc.code or 0)
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    logging.basicConfig(level=level, format="%(message)s", stream=sys.stderr)
    try:
        return int(args.func(args) or 0)
    except TransMRSRError as exc:
        print(f"transmrsr: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("transmrsr: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
