"""DICOM series in: series made slice by slice from NIfTI volumes with pydicom must read back as
those volumes, restore to the same output as the NIfTI route (with the gap read from the
tags), and every series that cannot be restored must be refused with one line and exit 2."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from conftest import oblique_affine, oriented_affine, phantom, write_dicom_series

import transmrsr
from transmrsr import dicom
from transmrsr.api import run_restore
from transmrsr.cli.main import main
from transmrsr.errors import TransMRSRError
from transmrsr.io import load_volume

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def scan(shape=(32, 32, 8), seed=0) -> np.ndarray:
    """Integer voxels, as DICOM stores them, so both routes see exactly the same values."""
    return np.rint(phantom(shape, seed=seed) * 10).astype(np.int16)


def affine_for(codes: str, zooms=(1.0, 1.0, 4.0)) -> np.ndarray:
    return oblique_affine(zooms) if codes == "oblique" else oriented_affine(codes, zooms)


@pytest.mark.parametrize("codes", ["RAS", "LAS", "LIA", "PSR", "oblique"])
def test_a_series_reads_back_as_the_volume_it_was_made_from(codes, tmp_path):
    data, affine = scan(), affine_for(codes)
    write_dicom_series(tmp_path / "s", data, affine, slope=0.5, intercept=-20.0)
    volume = load_volume(tmp_path / "s")
    np.testing.assert_array_equal(volume.data, data.astype(np.float32))
    np.testing.assert_allclose(volume.affine, affine, atol=1e-6)
    assert volume.slice_thickness is None  # SliceThickness equals the spacing: no gap
    assert volume.path == tmp_path / "s"


def test_slice_order_follows_the_positions_when_numbers_run_backwards(tmp_path):
    data, affine = scan(), oriented_affine("RAS", (1.0, 1.0, 4.0))
    write_dicom_series(tmp_path / "s", data, affine, reverse_numbers=True)
    volume = load_volume(tmp_path / "s")
    # Numbered against the positions: stacked in the scanner's (instance) order, which is
    # the NIfTI's slices reversed, on a grid that puts every voxel where it was.
    np.testing.assert_array_equal(volume.data, data[:, :, ::-1].astype(np.float32))
    world = volume.affine @ np.array([5, 7, 0, 1.0])
    np.testing.assert_allclose(world, affine @ np.array([5, 7, 7, 1.0]), atol=1e-6)


def test_the_gap_comes_from_the_tags(tmp_path):
    affine = oriented_affine("RAS", (1.0, 1.0, 6.5))
    write_dicom_series(tmp_path / "s", scan(), affine, thickness=5.0, spacing_tag=6.5)
    volume = load_volume(tmp_path / "s")
    assert volume.slice_thickness == pytest.approx(5.0)
    np.testing.assert_allclose(volume.zooms, (1.0, 1.0, 6.5), atol=1e-9)


def test_spacing_between_slices_that_disagrees_with_the_positions_is_logged(tmp_path, caplog):
    write_dicom_series(tmp_path / "s", scan(), oriented_affine("RAS", (1, 1, 4)), spacing_tag=5)
    volume = load_volume(tmp_path / "s")
    np.testing.assert_allclose(volume.zooms[2], 4.0)
    assert "SpacingBetweenSlices says 5" in caplog.text


@pytest.mark.parametrize(
    ("codes", "zooms", "thickness"),
    [
        ("RAS", (1.0, 1.0, 6.5), 5.0),  # axial, 5 mm slices every 6.5 mm
        ("LIA", (1.0, 1.0, 4.0), None),  # coronal, FreeSurfer orientation, no gap
        ("oblique", (1.0, 1.0, 4.0), 3.0),
    ],
)
def test_a_series_restores_as_its_nifti_does(codes, zooms, thickness, tiny_model_file, tmp_path):
    data, affine = scan(), affine_for(codes, zooms)
    write_dicom_series(tmp_path / "series", data, affine, thickness=thickness)
    nifti = tmp_path / "converted.nii.gz"
    nib.save(nib.Nifti1Image(data, affine), nifti)
    common = ["--model", str(tiny_model_file), "--adapt", "0", "--device", "cpu"]
    common += ["--no-progress"]
    from_dicom, from_nifti = tmp_path / "dicom_out.nii.gz", tmp_path / "nifti_out.nii.gz"
    assert main(["restore", str(tmp_path / "series"), str(from_dicom), *common]) == 0
    told = ["--slice-thickness", str(thickness)] if thickness else []
    assert main(["restore", str(nifti), str(from_nifti), *common, *told]) == 0

    ours, theirs = nib.load(from_dicom), nib.load(from_nifti)
    assert ours.shape == theirs.shape
    np.testing.assert_allclose(ours.affine, theirs.affine, atol=1e-5)
    a, b = np.asanyarray(ours.dataobj), np.asanyarray(theirs.dataobj)
    assert np.abs(a - b).max() <= 1e-4 * np.abs(b).max()
    assert ours.header["descrip"] == theirs.header["descrip"]
    if thickness:
        ratio = thickness / zooms[2]
        assert f"thickness {ratio:.3g} spacing" in ours.header["descrip"].item().decode()

    # The Python interface takes the folder too, and gives the file the command wrote.
    api = transmrsr.restore(
        tmp_path / "series", model=tiny_model_file, adapt=0, device="cpu", progress=False
    )
    np.testing.assert_array_equal(np.asanyarray(api.dataobj), a)


def test_the_gap_can_be_overridden(tiny_model_file, tmp_path):
    affine = oriented_affine("RAS", (1.0, 1.0, 6.5))
    write_dicom_series(tmp_path / "s", scan(), affine, thickness=5.0)
    result = run_restore(
        tmp_path / "s", model=tiny_model_file, adapt=0, device="cpu", slice_thickness="spacing"
    )
    assert result.thickness == 1.0
    told = run_restore(tmp_path / "s", model=tiny_model_file, adapt=0, device="cpu")
    assert told.thickness == pytest.approx(5.0 / 6.5)


def _series(tmp_path, name="s", **options):
    return write_dicom_series(tmp_path / name, scan(), oriented_affine("RAS", (1, 1, 4)), **options)


def _make_bad(case: str, tmp_path):
    folder = tmp_path / "s"
    if case == "mixed":
        _series(tmp_path, series_number=3, description="T1 AX")
        _series(tmp_path, series_number=4, description="T2 AX", prefix="B")
    elif case == "missing":
        _series(tmp_path)[3].unlink()
    elif case == "localizer":
        _series(tmp_path, image_type=("ORIGINAL", "PRIMARY", "LOCALIZER"), description="x")
    elif case == "scout":
        _series(tmp_path, description="AAHead_Scout")
    elif case == "multi_echo":
        uid = "1.2.826.0.1.3680043.8.498.77"
        _series(tmp_path, series_uid=uid, echo_number=1)
        _series(tmp_path, series_uid=uid, echo_number=2, prefix="E2_")
    elif case == "diffusion":
        uid = "1.2.826.0.1.3680043.8.498.78"
        _series(tmp_path, series_uid=uid, image_type=("ORIGINAL", "PRIMARY", "DIFFUSION"))
        _series(
            tmp_path, series_uid=uid, image_type=("ORIGINAL", "PRIMARY", "DIFFUSION"), prefix="B"
        )
    elif case == "ct":
        _series(tmp_path, modality="CT")
    elif case == "unreadable":
        paths = _series(tmp_path)
        paths[2].write_bytes(paths[2].read_bytes()[:300])
    elif case == "empty":
        folder.mkdir()
        (folder / "notes.txt").write_text("no images here")
    return folder


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("mixed", "holds 2 DICOM series (3 'T1 AX', 4 'T2 AX')"),
        ("missing", "not evenly spaced (8 mm between two slices, 4 mm between the others)"),
        ("localizer", "localizer/scout"),
        ("scout", "localizer/scout"),
        ("multi_echo", "is 4-D (multi-echo, 2 echoes"),
        ("diffusion", "is 4-D (diffusion-weighted"),
        ("ct", "is not an MR series (CT)"),
        ("unreadable", "IM0002.dcm: "),
        ("empty", "without DICOM files"),
    ],
)
def test_series_that_cannot_be_restored_give_one_line_and_exit_2(
    case, message, tmp_path, tiny_model_file, capsys
):
    folder = _make_bad(case, tmp_path)
    out = tmp_path / "out.nii.gz"
    code = main(["restore", str(folder), str(out), "--model", str(tiny_model_file)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and message in err[0], err
    assert err[0].startswith("transmrsr: error: ")
    assert not out.exists()


def test_a_truncated_file_is_named_as_unreadable(tmp_path):
    paths = _series(tmp_path)
    paths[5].write_bytes(paths[5].read_bytes()[:200])
    with pytest.raises(TransMRSRError, match=r"IM0005.dcm: (not readable as DICOM|cannot read)"):
        load_volume(tmp_path / "s")


def test_a_study_folder_restores_every_series_and_skips_localizers_and_diffusion(
    tiny_model_file, tmp_path, caplog
):
    study = tmp_path / "study"
    affine = oriented_affine("RAS", (1, 1, 4))
    write_dicom_series(study / "a", scan(), affine, series_number=2, description="T1 AX 4mm")
    write_dicom_series(study / "b", scan(seed=1), affine, series_number=5, description="T2 TSE")
    write_dicom_series(study / "loc", scan(), affine, series_number=1, description="localizer")
    # A diffusion series beside the anatomy: two volumes at every slice position.
    for volume, prefix in ((0, "A"), (1, "B")):
        write_dicom_series(
            study / "dwi",
            scan(seed=2 + volume),
            affine,
            series_number=7,
            description="DTI",
            series_uid="1.2.826.0.1.3680043.8.498.79",
            image_type=("ORIGINAL", "PRIMARY", "DIFFUSION"),
            prefix=prefix,
        )
    (study / "DICOMDIR.txt").write_text("not dicom")
    out_dir = tmp_path / "out"
    args = ["restore", str(study), "--out-dir", str(out_dir), "--model", str(tiny_model_file)]
    assert main([*args, "--adapt", "0", "--no-progress"]) == 0
    assert sorted(p.name for p in out_dir.iterdir()) == [
        "T1_AX_4mm_s002_restored.nii.gz",
        "T2_TSE_s005_restored.nii.gz",
    ]
    assert "skipped: " in caplog.text and "localizer/scout" in caplog.text
    assert "series 7 'DTI': is 4-D (diffusion-weighted" in caplog.text
    series = dicom.find_series(study)
    assert [s.number for s in series] == [1, 2, 5, 7]
    assert nib.load(out_dir / "T2_TSE_s005_restored.nii.gz").shape == (32, 32, 32)
