"""``transmrsr bids``: a small BIDS dataset made here must give a derivatives dataset whose
every file name the BIDS schema's derivative rules accept, with a description and a sidecar
per restored image, that the official validator (bids-validator-deno) passes, restricted by
--participant-label, and a re-run must write nothing."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from bidsschematools import rules as schema_rules
from bidsschematools import schema as bids_schema
from conftest import oriented_affine, phantom

from transmrsr import __version__, bids
from transmrsr.cli.main import main

pytestmark = pytest.mark.usefixtures("one_torch_thread")

THICK = oriented_affine("RAS", (1.0, 1.0, 4.0))
ISOTROPIC = oriented_affine("RAS", (1.0, 1.0, 1.0))


def _image(path, affine, seed=0, shape=(32, 32, 8)):
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(phantom(shape, seed=seed), affine), path)


@pytest.fixture
def dataset(tmp_path):
    root = tmp_path / "raw"
    root.mkdir()
    (root / "dataset_description.json").write_text(
        json.dumps({"Name": "thick", "BIDSVersion": "1.9.0"})
    )
    (root / "T1w.json").write_text(json.dumps({"SliceThickness": 3.5}))  # inherited by all T1w
    _image(root / "sub-01/anat/sub-01_T1w.nii.gz", THICK, 0)
    (root / "sub-01/anat/sub-01_T1w.json").write_text(json.dumps({"SliceThickness": 3.0}))
    _image(root / "sub-01/ses-2/anat/sub-01_ses-2_acq-ax5mm_T2w.nii.gz", THICK, 1)
    _image(root / "sub-02/anat/sub-02_FLAIR.nii.gz", THICK, 2)
    _image(root / "sub-02/anat/sub-02_T1w.nii.gz", ISOTROPIC, 3, (16, 16, 16))  # not thick
    _image(root / "sub-03/anat/sub-03_acq-cor_run-1_T1w.nii.gz", THICK, 4)
    _image(root / "sub-03/anat/sub-03_acq-cor_run-1_defacemask.nii.gz", THICK, 5)  # not anat
    _image(root / "sub-01/func/sub-01_task-rest_bold.nii.gz", THICK, 6)
    _image(root / "derivatives/old/sub-01/anat/sub-01_desc-x_T1w.nii.gz", THICK, 7)
    return root


def _run(root, out, model, *extra):
    args = ["bids", str(root), str(out), "participant", "--model", str(model), "--adapt", "0"]
    return main([*args, "--device", "cpu", "--no-progress", *extra])


def _files(folder):
    return sorted(
        p.relative_to(folder).as_posix()
        for p in folder.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )


def _schema_accepts(relative: str) -> bool:
    """The derivative and common rules of the BIDS schema, as the validator builds them."""
    schema = bids_schema.load_schema()
    found = []
    for group in (schema.rules.files.common, schema.rules.files.deriv):
        found += schema_rules.regexify_filename_rules(group, schema, level=2)
    return any(re.match(rule["regex"], relative) for rule in found)


def test_a_dataset_gives_a_valid_derivatives_dataset(dataset, tmp_path, tiny_model_file):
    out = tmp_path / "derivatives"
    assert _run(dataset, out, tiny_model_file) == 0
    assert _files(out) == [
        "README.md",
        "dataset_description.json",
        "sub-01/anat/sub-01_desc-restored_T1w.json",
        "sub-01/anat/sub-01_desc-restored_T1w.nii.gz",
        "sub-01/ses-2/anat/sub-01_ses-2_acq-ax5mm_desc-restored_T2w.json",
        "sub-01/ses-2/anat/sub-01_ses-2_acq-ax5mm_desc-restored_T2w.nii.gz",
        "sub-02/anat/sub-02_desc-restored_FLAIR.json",
        "sub-02/anat/sub-02_desc-restored_FLAIR.nii.gz",
        "sub-03/anat/sub-03_acq-cor_run-1_desc-restored_T1w.json",
        "sub-03/anat/sub-03_acq-cor_run-1_desc-restored_T1w.nii.gz",
    ]
    for name in _files(out):
        assert _schema_accepts(name), name
    assert not _schema_accepts("sub-01/anat/sub-01_restored_T1w.nii.gz")  # the check can fail

    description = json.loads((out / "dataset_description.json").read_text())
    assert description["DatasetType"] == "derivative"
    assert description["BIDSVersion"] == "1.9.0"  # the raw dataset's, a released version
    assert "Authors" not in description  # the raw dataset names none
    assert description["GeneratedBy"] == [{"Name": "transmrsr", "Version": __version__}]
    assert (out / description["DatasetLinks"]["raw"]).resolve() == dataset.resolve()

    restored = nib.load(out / "sub-01/anat/sub-01_desc-restored_T1w.nii.gz")
    assert restored.shape == (32, 32, 32)
    np.testing.assert_allclose(restored.header.get_zooms(), (1, 1, 1))
    sidecar = json.loads((out / "sub-01/anat/sub-01_desc-restored_T1w.json").read_text())
    assert sidecar["Sources"] == ["bids:raw:sub-01/anat/sub-01_T1w.nii.gz"]
    assert sidecar["InputPath"] == str((dataset / "sub-01/anat/sub-01_T1w.nii.gz").resolve())
    assert sidecar["Model"] == "tiny.safetensors"
    assert sidecar["Factor"] == 4.0
    assert (sidecar["ThickAxis"], sidecar["ThickAxisName"]) == (2, "SI")
    assert sidecar["InputSliceSpacing"] == 4.0
    assert sidecar["InputSliceThicknessUsed"] == pytest.approx(3.0)  # its own sidecar wins
    assert sidecar["AdaptationSteps"] == 0
    assert sidecar["SlabPatternRemoved"] is True
    assert sidecar["SoftwareVersion"] == f"transmrsr {__version__}"
    inherited = json.loads(
        (out / "sub-03/anat/sub-03_acq-cor_run-1_desc-restored_T1w.json").read_text()
    )
    assert inherited["InputSliceThicknessUsed"] == pytest.approx(3.5)  # from the root T1w.json
    flair = json.loads((out / "sub-02/anat/sub-02_desc-restored_FLAIR.json").read_text())
    assert flair["InputSliceThicknessUsed"] == pytest.approx(4.0)  # none said: the spacing

    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*.nii.gz")}
    assert _run(dataset, out, tiny_model_file) == 0
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.nii.gz")} == stamps


def test_the_description_takes_a_released_version_of_the_raw_dataset_or_the_schemas(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    for version, expected in (("1.10.0", "1.10.0"), ("0.9-dev", bids.bids_version())):
        (raw / "dataset_description.json").write_text(
            json.dumps({"Name": "r", "BIDSVersion": version, "Authors": "one string"})
        )
        made = bids.dataset_description(raw, tmp_path / "out")
        assert made["BIDSVersion"] == expected
        assert "Authors" not in made  # not a list of names: not copied
    (raw / "dataset_description.json").write_text("{broken")
    assert bids.dataset_description(raw, tmp_path / "out")["BIDSVersion"] == bids.bids_version()


def _validate(dataset: Path) -> tuple[int, list[dict]]:
    """The official validator's exit status and issues for ``dataset``."""
    path = Path(sys.executable).with_name("bids-validator-deno")
    if not path.is_file():
        pytest.skip("bids-validator-deno is not installed (pip install -e '.[dev]')")
    run = subprocess.run(
        [str(path), str(dataset), "--format", "json"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    return run.returncode, json.loads(run.stdout)["issues"]["issues"]


def test_the_official_validator_passes_the_derivatives(dataset, tmp_path, tiny_model_file):
    description = dataset / "dataset_description.json"
    raw = json.loads(description.read_text())
    description.write_text(json.dumps({**raw, "Authors": ["A. Author", "B. Author"]}))
    (dataset / "README.md").write_text("A thick-slice dataset made by the tests.\n")
    (dataset / "sub-01/anat/sub-01_T1w.json").write_text(
        json.dumps({"SliceThickness": 3.0, "SkullStripped": True})
    )
    out = tmp_path / "derivatives"
    assert _run(dataset, out, tiny_model_file, "--report") == 0
    assert (out / "report.html").is_file()
    status, issues = _validate(out)
    found = sorted({(i["severity"], i["code"], i.get("subCode") or "") for i in issues})
    assert found == [], found
    assert status == 0
    # What made it pass: the QC page is listed as not BIDS, every sidecar says whether its
    # image is skull-stripped (as its input's sidecar says, else not), a README, the raw
    # dataset's BIDS version and authors.
    assert "report.html" in (out / ".bidsignore").read_text().splitlines()
    side = json.loads((out / "sub-01/anat/sub-01_desc-restored_T1w.json").read_text())
    assert side["SkullStripped"] is True
    flair = json.loads((out / "sub-02/anat/sub-02_desc-restored_FLAIR.json").read_text())
    assert flair["SkullStripped"] is False
    assert (out / "README.md").is_file()
    written = json.loads((out / "dataset_description.json").read_text())
    assert written["BIDSVersion"] == "1.9.0" and written["Authors"] == ["A. Author", "B. Author"]
    # The check can fail: an image's sidecar without SkullStripped is an error.
    del side["SkullStripped"]
    (out / "sub-01/anat/sub-01_desc-restored_T1w.json").write_text(json.dumps(side))
    status, issues = _validate(out)
    assert status != 0 and "SkullStripped" in {i.get("subCode") for i in issues}


def test_participant_label_and_suffix_restrict_the_run(dataset, tmp_path, tiny_model_file):
    out = tmp_path / "d"
    assert _run(dataset, out, tiny_model_file, "--participant-label", "sub-01", "03") == 0
    restored = [n for n in _files(out) if n.endswith(".nii.gz")]
    assert restored == [
        "sub-01/anat/sub-01_desc-restored_T1w.nii.gz",
        "sub-01/ses-2/anat/sub-01_ses-2_acq-ax5mm_desc-restored_T2w.nii.gz",
        "sub-03/anat/sub-03_acq-cor_run-1_desc-restored_T1w.nii.gz",
    ]
    out2 = tmp_path / "d2"
    assert _run(dataset, out2, tiny_model_file, "--participant-label", "01", "--suffix", "T2w") == 0
    assert [n for n in _files(out2) if n.endswith(".nii.gz")] == [
        "sub-01/ses-2/anat/sub-01_ses-2_acq-ax5mm_desc-restored_T2w.nii.gz"
    ]


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("not_bids", "not a BIDS dataset (no dataset_description.json)"),
        ("unknown_participant", "participant 09: no T1w/T2w/FLAIR/PDw/T2starw images"),
        ("bad_suffix", "--suffix bold: not an anatomical BIDS suffix"),
        ("into_raw", "is the raw dataset"),
        ("foreign_output", "holds another dataset"),
    ],
)
def test_bad_runs_give_one_line_and_exit_2(
    case, message, dataset, tmp_path, tiny_model_file, capsys
):
    root, out, extra = dataset, tmp_path / "out", []
    if case == "not_bids":
        (root / "dataset_description.json").unlink()
    elif case == "unknown_participant":
        extra = ["--participant-label", "09"]
    elif case == "bad_suffix":
        extra = ["--suffix", "bold"]
    elif case == "into_raw":
        out = root
    elif case == "foreign_output":
        out.mkdir()
        (out / "dataset_description.json").write_text(json.dumps({"Name": "fmriprep"}))
    code = _run(root, out, tiny_model_file, *extra)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and message in err[0], err
    assert not list(out.rglob("*.nii.gz")) or case == "into_raw"


def test_entities_are_parsed_and_named_in_the_schemas_order():
    image = bids.parse_anat_path("sub-7/ses-b/anat/sub-7_ses-b_acq-x_ce-gad_run-2_T1w.nii.gz")
    assert image is not None
    assert image.entities == {
        "subject": "7",
        "session": "b",
        "acquisition": "x",
        "ceagent": "gad",
        "run": "2",
    }
    assert bids.derivative_path(image) == (
        "sub-7/ses-b/anat/sub-7_ses-b_acq-x_ce-gad_run-2_desc-restored_T1w.nii.gz"
    )
    assert bids.parse_anat_path("sub-7/anat/sub-8_T1w.nii.gz") is None  # subject mismatch
    assert bids.parse_anat_path("sub-7/anat/sub-7_T1w.mgz") is None
