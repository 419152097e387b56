"""``transmrsr model-summary`` through the real entry point, and through its own parser."""

from __future__ import annotations

import argparse
import json

import pytest

from transmrsr.cli import model_summary
from transmrsr.cli.main import main
from transmrsr.errors import TransMRSRError

EDSR_TINY_PARAMETERS = "3,073"  # head 80 + 2 blocks 2,336 + body conv 584 + tail 73


def test_summary_table(capsys):
    code = main(["model-summary", "--arch", "edsr", "--config", "tiny"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "edsr (tiny config)" in out
    assert "body" in out and EDSR_TINY_PARAMETERS in out
    assert "GFLOPs per 256x256 slice" in out
    assert "ms (batch 1" in out


def test_summary_json(capsys):
    argv = ["model-summary", "--arch", "restormer", "--config", "tiny", "--json", "--size", "24"]
    assert main([*argv, "--repeats", "1", "--threads", "1", "--batch-size", "2"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["arch"] == "restormer" and summary["preset"] == "tiny"
    params = summary["parameters"]
    assert params["total"] == sum(v for k, v in params.items() if k != "total")
    assert summary["gflops_per_slice"] > 0 and summary["ms_per_slice"] > 0
    assert summary["threads"] == 1 and summary["batch_size"] == 2


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--arch", "vdsr"], "unknown architecture 'vdsr'"),
        (["--arch", "edsr", "--config", "huge"], "unknown config 'huge'"),
        (["--arch", "edsr", "--batch-size", "0"], "--batch-size"),
    ],
)
def test_user_errors_are_one_line(capsys, argv, needle):
    assert main(["model-summary", *argv]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert needle in err
    assert len(err.strip().splitlines()) == 1
    assert "Traceback" not in err


def own_parser() -> argparse.ArgumentParser:
    """A parser with only this command, independent of the other command modules."""
    parser = argparse.ArgumentParser(prog="transmrsr")
    model_summary.add_parser(parser.add_subparsers(dest="command", required=True))
    return parser


def test_command_without_the_other_modules(capsys):
    args = own_parser().parse_args(
        ["model-summary", "--arch", "edsr", "--config", "tiny", "--repeats", "0", "--json"]
    )
    assert args.func is model_summary.run
    assert args.func(args) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["parameters"]["total"] == int(EDSR_TINY_PARAMETERS.replace(",", ""))
    assert summary["ms_per_slice"] is None  # --repeats 0: count only


def test_defaults_and_errors_of_the_own_parser():
    args = own_parser().parse_args(["model-summary"])
    assert (args.arch, args.config, args.batch_size, args.size) == ("transmrsr", "compact", 1, 256)
    bad = own_parser().parse_args(["model-summary", "--arch", "unet"])
    with pytest.raises(TransMRSRError, match="unknown architecture"):
        bad.func(bad)
