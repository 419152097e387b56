"""Output faults: an output that cannot be written fails before any work, in one line with
exit 2, and a write that fails on the way (a full disk) leaves nothing half-written."""

from __future__ import annotations

import builtins
import errno
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import pytest
from conftest import oriented_affine, phantom, write_thick_scans

import transmrsr.cli.restore as restore_cli
from transmrsr import io
from transmrsr.cli.main import main
from transmrsr.errors import OutputError
from transmrsr.io import Volume, save_volume, write_text

ROOT = Path(__file__).resolve().parents[1]
#: A restore that takes a second: the tiny random model, no adaptation.
FAST = ["--adapt", "0", "--device", "cpu", "--no-progress"]
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def scans(tmp_path):
    folder = tmp_path / "in"
    write_thick_scans(folder, 3)
    return folder


def _everything(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*"))


@pytest.mark.skipif(not Path("/proc/self").exists(), reason="needs Linux /proc")
def test_an_unwritable_output_fails_at_once_with_one_line(scans, tiny_model_file):
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "transmrsr", "restore", str(scans / "s0.nii.gz"), "/proc/x.nii.gz"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    seconds = time.perf_counter() - start
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "transmrsr: error: /proc/x.nii.gz: output folder /proc is not writable "
        "(No such file or directory)"
    ]
    assert seconds < 10  # the process start (Python, torch) included; the check itself is instant


@pytest.mark.parametrize("reason", [errno.EROFS, errno.EACCES, errno.EDQUOT])
def test_every_output_location_is_tried_before_any_work(
    reason, scans, tmp_path, monkeypatch, capsys
):
    """Read-only mount, permission, quota: the kernel's answer to creating a file, which root's
    permission bits never give; simulated where the tool asks."""

    def refuse(*_args, **_kwargs):
        raise OSError(reason, os.strerror(reason))

    def no_model(*_args, **_kwargs):
        raise AssertionError("the model was loaded before the outputs were checked")

    monkeypatch.setattr(io.tempfile, "mkstemp", refuse)
    monkeypatch.setattr(restore_cli, "load_model", no_model)
    out = tmp_path / "out"
    out.mkdir()
    start = time.perf_counter()
    code = main(["restore", str(scans), "--out-dir", str(out), "--model", "t1", "--no-progress"])
    assert time.perf_counter() - start < 5
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert f"is not writable ({os.strerror(reason)})" in err[0]
    assert _everything(out) == []


def test_an_out_dir_that_cannot_be_created_is_one_line(scans, capsys):
    code = main(["restore", str(scans), "--out-dir", "/proc/transmrsr-test/out"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "cannot create" in err[0], err


def _full_disk(monkeypatch, calls: list[str]):
    """nib.save that writes part of the file and then finds the disk full, as gzip does."""

    def save(image, filename, *args, **kwargs):
        calls.append(filename)
        Path(filename).write_bytes(b"\x1f\x8b" + b"\0" * 1000)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(nib, "save", save)


def test_a_full_disk_leaves_no_partial_file_and_stops_the_cohort(
    scans, tmp_path, tiny_model_file, monkeypatch, capsys
):
    calls: list[str] = []
    _full_disk(monkeypatch, calls)
    out = tmp_path / "out"
    code = main(
        ["restore", str(scans), "--out-dir", str(out), "--model", str(tiny_model_file), *FAST]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1, err
    assert err[0].startswith("transmrsr: error: ") and err[0].endswith(
        "s0_restored.nii.gz: cannot write (No space left on device); nothing was written"
    )
    assert len(calls) == 1  # the next scans would fail alike: not restored for nothing
    assert Path(calls[0]).parent == out and Path(calls[0]).name.startswith(".s0_restored")
    assert _everything(out) == []


def test_a_full_disk_in_a_single_restore(scans, tmp_path, tiny_model_file, monkeypatch, capsys):
    _full_disk(monkeypatch, [])
    out = tmp_path / "o.nii.gz"
    code = main(
        ["restore", str(scans / "s1.nii.gz"), str(out), "--model", str(tiny_model_file), *FAST]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "No space left on device" in err[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]


def test_text_and_volume_writers_leave_nothing_on_failure(tmp_path, monkeypatch):
    volume = Volume(phantom((8, 8, 8)), oriented_affine("RAS"))
    _full_disk(monkeypatch, [])
    with pytest.raises(OutputError, match="No space left on device"):
        save_volume(volume, tmp_path / "v.nii.gz")

    class FullDisk:
        """A text file that takes part of what is written and then finds the disk full."""

        def __init__(self, name, *args, **kwargs):
            self.file = builtins.open(name, *args, **kwargs)  # noqa: SIM115  (closed in __exit__)

        def write(self, text):
            self.file.write(text[: len(text) // 2])
            self.file.flush()
            raise OSError(errno.ENOSPC, "No space left on device")

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.file.close()

    monkeypatch.setattr(io, "open", FullDisk, raising=False)
    with pytest.raises(OutputError, match=r"report.html: cannot write \(No space left on device\)"):
        write_text(tmp_path / "report.html", "<html></html>")
    assert list(tmp_path.iterdir()) == []


def test_a_bids_sidecar_and_image_are_written_together(
    tmp_path, tiny_model_file, monkeypatch, capsys
):
    raw = tmp_path / "raw"
    (raw / "sub-01/anat").mkdir(parents=True)
    (raw / "dataset_description.json").write_text(json.dumps({"Name": "x", "BIDSVersion": "1.9.0"}))
    data = phantom((24, 24, 6))
    nib.save(
        nib.Nifti1Image(data, oriented_affine("RAS", (1, 1, 4))),
        raw / "sub-01/anat/sub-01_T1w.nii.gz",
    )
    _full_disk(monkeypatch, [])
    out = tmp_path / "deriv"
    code = main(["bids", str(raw), str(out), "participant", "--model", str(tiny_model_file), *FAST])
    assert code == 2
    assert "No space left on device" in capsys.readouterr().err
    # The sidecar went first and was taken back with the image: no orphan, nothing partial.
    assert _everything(out) == [
        ".bidsignore",
        "README.md",
        "dataset_description.json",
        "sub-01",
        "sub-01/anat",
    ]
