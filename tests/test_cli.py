"""The command line as a user runs it: real files, exit codes, one-line errors, no leftovers."""

from __future__ import annotations

import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest
from conftest import oriented_affine, phantom

from transmrsr import __version__
from transmrsr.cli.main import main


@pytest.fixture
def hr_file(write_nifti):
    return write_nifti(phantom((24, 32, 40)), oriented_affine("LIA"), "hr.nii.gz")


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_help_lists_the_commands():
    result = subprocess.run(
        [sys.executable, "-m", "transmrsr", "--help"], capture_output=True, text=True, check=True
    )
    for command in ("degrade", "upsample", "evaluate", "model-summary"):
        assert command in result.stdout


def test_degrade_then_upsample_from_the_command_line(hr_file, tmp_path, capsys):
    lr = tmp_path / "lr.nii.gz"
    up = tmp_path / "up.nii.gz"
    code, _, err = run_cli(capsys, "degrade", hr_file, lr, "--factor", "4", "--axis", "AP")
    assert code == 0, err
    lr_img = nib.load(lr)
    assert lr_img.shape == (24, 32, 10)  # AP is array axis 2 in LIA
    np.testing.assert_allclose(lr_img.header.get_zooms(), (1, 1, 4))
    assert lr_img.header["descrip"].item() == f"transmrsr {__version__} degrade x4 axis 2".encode()
    code, _, err = run_cli(capsys, "upsample", lr, up, "--method", "lanczos")
    assert code == 0, err
    up_img = nib.load(up)
    assert up_img.shape == (24, 32, 40)
    np.testing.assert_allclose(up_img.affine, nib.load(hr_file).affine, atol=1e-5)
    assert up_img.get_data_dtype() == np.float32
    assert up_img.header["descrip"].item().endswith(b"upsample lanczos x4 axis 2")


def test_upsample_like_writes_onto_the_reference_grid(hr_file, tmp_path, capsys):
    lr = tmp_path / "lr.nii.gz"
    assert run_cli(capsys, "degrade", hr_file, lr, "--factor", "3", "--axis", "2")[0] == 0
    out = tmp_path / "like.nii.gz"
    code, _, err = run_cli(capsys, "upsample", lr, out, "--like", hr_file, "--dtype", "int16")
    assert code == 0, err
    img = nib.load(out)
    assert img.shape == (24, 32, 40) and img.get_data_dtype() == np.int16
    np.testing.assert_allclose(img.affine, nib.load(hr_file).affine, atol=1e-5)
    assert np.all(np.asanyarray(img.dataobj)[:, :, 39] == 0)  # beyond the last whole slab


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["degrade", "{missing}", "{out}", "--factor", "4"], "no such file"),
        (["degrade", "{hr}", "{out}", "--factor", "0.5"], "out of range"),
        (["degrade", "{hr}", "{out}", "--factor", "100"], "out of range"),
        (["degrade", "{hr}", "{out}", "--factor", "nan"], "not a finite number"),
        (["degrade", "{hr}", "{out}", "--factor", "four"], "not a number"),
        (["degrade", "{hr}", "{hr}", "--factor", "4"], "same file as input"),
        (["degrade", "{hr}", "{nodir}", "--factor", "4"], "does not exist"),
        (["degrade", "{hr}", "{out}", "--factor", "4", "--axis", "up"], "axis 'up'"),
        (["degrade", "{hr}", "{out}", "--factor", "16", "--axis", "0"], "too short"),
        (["upsample", "{hr}", "{out}"], "isotropic"),
        (["upsample", "{hr}", "{out}", "--method", "spline9"], "invalid choice"),
        (["degrade", "{corrupt}", "{out}", "--factor", "4"], "cannot read"),
        (["degrade", "{nan}", "{out}", "--factor", "4"], "NaN or infinite"),
        (["degrade", "{zero}", "{out}", "--factor", "4"], "every voxel"),
        (["degrade", "{flat}", "{out}", "--factor", "4"], "2 dimensions"),
        (["degrade", "{series}", "{out}", "--factor", "4"], "4-D series"),
    ],
)
def test_bad_input_gives_one_line_and_no_output(
    argv, message, hr_file, tmp_path, write_nifti, capsys
):
    nan = phantom((8, 8, 8))
    nan[1, 1, 1] = np.nan
    corrupt = tmp_path / "corrupt.nii.gz"
    corrupt.write_bytes(hr_file.read_bytes()[:200])
    paths = {
        "hr": hr_file,
        "out": tmp_path / "out.nii.gz",
        "missing": tmp_path / "missing.nii.gz",
        "nodir": tmp_path / "no" / "out.nii.gz",
        "corrupt": corrupt,
        "nan": write_nifti(nan, np.eye(4), "nan.nii.gz"),
        "zero": write_nifti(np.zeros((8, 8, 8), np.float32), np.eye(4), "zero.nii.gz"),
        "flat": write_nifti(np.ones((8, 8), np.float32), np.eye(4), "flat.nii.gz"),
        "series": write_nifti(np.ones((8, 8, 8, 2), np.float32), np.eye(4), "series.nii.gz"),
    }
    before = sorted(p.name for p in tmp_path.rglob("*"))
    code, _, err = run_cli(capsys, *[a.format(**paths) for a in argv])
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], err
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


def test_console_script_exit_code_and_stderr(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "transmrsr",
            "degrade",
            str(tmp_path / "x.nii.gz"),
            str(tmp_path / "y.nii.gz"),
            "--factor",
            "4",
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == f"transmrsr: error: {tmp_path / 'x.nii.gz'}: no such file"
