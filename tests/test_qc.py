"""The QC page: every scan of a cohort on one self-contained HTML page with its pictures,
numbers and warning flags, built from per-scan entries so that shards and re-runs add up; and
the page as a browser shows it (headless Chromium, where installed)."""

from __future__ import annotations

import base64
import io
import re
import shutil
import subprocess

import nibabel as nib
import numpy as np
import pytest
from conftest import oriented_affine, phantom
from PIL import Image

from transmrsr.api import run_upsample
from transmrsr.cli.main import main
from transmrsr.evaluation import qc
from transmrsr.inference.restore import LoadedModel
from transmrsr.io import Volume

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FAST = ["--adapt", "0", "--device", "cpu", "--no-progress"]
THICK = oriented_affine("LIA", (1.0, 1.0, 4.0))


def test_intensity_warnings():
    head = phantom((32, 32, 16))
    assert qc.intensity_warnings(head) == []
    assert "negative intensities" in qc.intensity_warnings(head - 60.0)[0]
    spiky = head.copy()
    spiky[3, 3, 3] = 50 * head.max()
    assert "bright outliers (maximum" in qc.intensity_warnings(spiky)[0]
    empty = np.zeros((32, 32, 16), np.float32)
    empty[10, 10, 5] = 1.0
    assert "hardly any signal" in qc.intensity_warnings(empty)[0]


def test_factor_and_stripe_warnings():
    model = LoadedModel(network=None, source="m.safetensors", info={"factor_range": [3.5, 4.5]})
    assert qc.factor_warning(model, 4.0) is None
    assert qc.factor_warning(model, 4.9) is None  # within the margin the adaptation covers
    assert qc.factor_warning(model, 7.0) == "factor x7 outside the model's training range x3.5-x4.5"
    assert qc.factor_warning(LoadedModel(None, "m", {}), 12.0) is None  # no range recorded
    assert qc.stripe_warning(0.013, 0.01) is None
    assert "1.50 times cubic's" in qc.stripe_warning(0.015, 0.01)
    assert qc.stripe_warning(None, 0.01) is None


def test_the_input_row_shows_the_output_planes():
    """Sampling the input on the output's planes must give what ``upsample`` (cubic) gives on
    the whole output grid: the two rows of a picture show the same planes, and the top row is
    the baseline."""
    thick = Volume(phantom((24, 28, 8)), THICK)
    cubic = run_upsample(thick).volume
    ras = qc.to_ras(cubic.data, cubic.affine)
    ras_affine = qc._ras_affine(cubic.data, cubic.affine)
    centre = [s // 2 for s in ras.shape]
    sampled = qc._sample_planes(thick, ras_affine, ras.shape, centre)
    for plane, ours in zip(sampled, qc._planes_of(ras, centre), strict=True):
        assert plane.shape == ours.shape
        assert np.abs(plane - ours).max() < 1e-4 * np.abs(ours).max()


@pytest.fixture
def cohort(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    nib.save(nib.Nifti1Image(phantom((24, 28, 8)), THICK), folder / "a.nii.gz")
    nib.save(nib.Nifti1Image(phantom((24, 28, 8), seed=1) - 90.0, THICK), folder / "b.nii.gz")
    (folder / "c.nii.gz").write_bytes(b"not a nifti")
    return folder


def _sections(page: str) -> dict[str, str]:
    found = re.findall(
        r"<section id=['\"]scan\d+['\"]([^>]*)><h2>([^<]+)</h2>(.*?)</section>", page, re.S
    )
    return {name.rsplit("/", 1)[-1]: css + body for css, name, body in found}


def _png(section: str) -> Image.Image:
    data = re.search(r"src='data:image/png;base64,([^']+)'", section).group(1)
    return Image.open(io.BytesIO(base64.b64decode(data)))


def test_the_report_shows_every_scan_with_its_flags(cohort, tmp_path, tiny_model_file, capsys):
    out = tmp_path / "out"
    args = ["restore", str(cohort), "--out-dir", str(out), "--model", str(tiny_model_file)]
    assert main([*args, *FAST, "--report"]) == 2  # c.nii.gz failed; the others went on
    page = (out / "report.html").read_text()
    sections = _sections(page)
    assert sorted(sections) == ["a.nii.gz", "b.nii.gz", "c.nii.gz"]
    # a.nii.gz is a clean input: the random-weight model may still leave slab stripes.
    stripes = "class='flag'" in sections["a.nii.gz"]
    if stripes:
        assert "times cubic" in sections["a.nii.gz"] and "intensities" not in sections["a.nii.gz"]
    assert f"3 scans, {2 + stripes} flagged" in page
    assert "negative intensities" in sections["b.nii.gz"]
    assert "failed: " in sections["c.nii.gz"] and "cannot read as an image" in sections["c.nii.gz"]
    assert "x4 along" in sections["a.nii.gz"] and "tiny.safetensors" in sections["a.nii.gz"]
    assert "slab-stripe index" in sections["a.nii.gz"]
    for name in ("a.nii.gz", "b.nii.gz"):
        picture = _png(sections[name])
        assert picture.size[0] > 300 and picture.size[1] > 200
        assert np.asarray(picture.convert("L")).std() > 10  # not a blank picture
    assert "<img" not in sections["c.nii.gz"]
    # Self-contained: no file or address outside the page.
    assert not re.search(r"(src|href)=['\"](?!data:|#)", page)
    assert "http" not in page

    # A re-run tries the failed scan again only, and the page still shows every scan.
    assert main([*args, *FAST, "--report"]) == 2
    again = _sections((out / "report.html").read_text())
    assert sorted(again) == ["a.nii.gz", "b.nii.gz", "c.nii.gz"]
    assert _png(again["a.nii.gz"]).size == _png(sections["a.nii.gz"]).size
    capsys.readouterr()


def test_a_shards_page_lists_the_other_shards_scans(cohort, tmp_path, tiny_model_file):
    (cohort / "c.nii.gz").unlink()
    out = tmp_path / "out"
    args = ["restore", str(cohort), "--out-dir", str(out), "--model", str(tiny_model_file)]
    assert main([*args, *FAST, "--report", "--shard", "1/2"]) == 0
    sections = _sections((out / "report.html").read_text())
    assert "<img" in sections["a.nii.gz"]
    assert "not restored yet" in sections["b.nii.gz"]
    assert main([*args, *FAST, "--report", "--shard", "2/2"]) == 0
    sections = _sections((out / "report.html").read_text())
    assert "<img" in sections["a.nii.gz"] and "<img" in sections["b.nii.gz"]


def test_report_needs_an_out_dir(cohort, tmp_path, capsys):
    code = main(["restore", str(cohort / "a.nii.gz"), str(tmp_path / "o.nii.gz"), "--report"])
    assert code == 2 and "--report writes DIR/report.html" in capsys.readouterr().err


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium is not installed")
def test_the_page_renders_in_headless_chromium(cohort, tmp_path, tiny_model_file):
    out = tmp_path / "out"
    args = ["restore", str(cohort), "--out-dir", str(out), "--model", str(tiny_model_file)]
    main([*args, *FAST, "--report"])
    page = (out / "report.html").resolve().as_uri()
    browser = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]
    dom = subprocess.run(
        [*browser, "--dump-dom", page], capture_output=True, text=True, timeout=120, check=True
    ).stdout
    assert len(_sections(dom)) == 3
    shot = tmp_path / "qc.png"
    subprocess.run(
        [*browser, f"--screenshot={shot}", "--window-size=1400,2000", page],
        capture_output=True,
        timeout=120,
        check=True,
    )
    picture = np.asarray(Image.open(shot).convert("L"))
    assert picture.shape == (2000, 1400)
    assert picture.std() > 20  # the table and the scans, not an empty page
