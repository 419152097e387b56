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
    "transmrsr.cli.bids",
    "transmrsr.cli.evaluate",
    "transmrsr.cli.train_prior",
    "transmrsr.cli.fit_centroids",
    "transmrsr.cli.train",
    "transmrsr.cli.benchmark",
    "transmrsr.cli.model_summary",
    "transmrsr.cli.demo",
)


def _command_name(module: str) -> str:
    """``transmrsr.cli.fit_centroids`` -> ``fit-centroids``: each module's command."""
    return module.rsplit(".", 1)[-1].replace("_", "-")


class _Parser(argparse.ArgumentParser):
    """ArgumentParser whose usage errors are one line, like every other error of the tool."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """Build the top-level parser with every available sub-command, or with ``command``'s
    alone: importing every command module loads scikit-learn, matplotlib and the training
    code, seconds that a command failing on a bad argument should not wait for."""
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
        if command is None or _command_name(name) == command:
            importlib.import_module(name).add_parser(sub)
    return parser


def _requested_command(argv: Sequence[str]) -> str | None:
    """The sub-command ``argv`` names (its first word that is not an option), when it is
    one; ``None`` (build every command) otherwise, so that help and errors list them all."""
    names = {_command_name(m) for m in COMMAND_MODULES}
    for word in argv:
        if not word.startswith("-"):
            return word if word in names else None
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``transmrsr`` console script; returns the process exit status."""
    words = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(_requested_command(words))
    try:
        args = parser.parse_args(words)
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
