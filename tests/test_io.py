"""Volume I/O: orientations, formats, geometry kept exact, bad input refused, atomic writes."""

from __future__ import annotations

import gzip
import os
import stat

import nibabel as nib
import numpy as np
import pytest
from conftest import REAL_VOLUMES, oblique_affine, oriented_affine, phantom, shared_file

from transmrsr.errors import TransMRSRError
from transmrsr.io import Volume, check_output_path, load_volume, save_volume, voxel_sizes


@pytest.mark.parametrize("codes", ["RAS", "LAS", "LIA", "PSR", "ILP"])
def test_round_trip_keeps_data_and_affine_in_every_orientation(codes, write_nifti, tmp_path):
    data = phantom((20, 24, 18))
    affine = oriented_affine(codes, zooms=(0.9, 1.1, 2.5))
    volume = load_volume(write_nifti(data, affine))
    assert volume.axcodes == tuple(codes)
    np.testing.assert_allclose(volume.zooms, (0.9, 1.1, 2.5), rtol=1e-6)
    out = save_volume(volume, tmp_path / "out.nii.gz")
    image = nib.load(out)
    np.testing.assert_array_equal(image.get_fdata(dtype=np.float32), data)
    np.testing.assert_allclose(image.affine, affine, atol=1e-5)
    np.testing.assert_allclose(image.get_qform(), affine, atol=1e-4)
    np.testing.assert_allclose(image.get_sform(), affine, atol=1e-5)
    assert image.header.get_xyzt_units()[0] == "mm"
    assert image.get_data_dtype() == np.float32


def test_sheared_affine_keeps_sform_and_drops_qform(write_nifti, tmp_path):
    affine = oblique_affine((1.0, 1.0, 3.0))
    affine[0, 1] += 0.3  # a shear no qform can hold
    volume = load_volume(write_nifti(phantom((10, 12, 8)), affine))
    image = nib.load(save_volume(volume, tmp_path / "out.nii"))
    np.testing.assert_allclose(image.get_sform(), affine, atol=1e-5)
    assert int(image.header["qform_code"]) == 0
    np.testing.assert_allclose(image.affine, affine, atol=1e-5)


def test_sform_code_of_the_source_carries_over(tmp_path):
    image = nib.Nifti1Image(phantom((10, 12, 8)), oriented_affine("RAS"))
    image.set_sform(image.affine, code=4)  # MNI space
    nib.save(image, tmp_path / "mni.nii.gz")
    out = save_volume(load_volume(tmp_path / "mni.nii.gz"), tmp_path / "copy.nii.gz")
    assert int(nib.load(out).header["sform_code"]) == 4


def test_description_carries_over_or_is_replaced(tmp_path):
    image = nib.Nifti1Image(phantom((10, 12, 8)), oriented_affine("RAS"))
    image.header["descrip"] = b"scanner protocol T1 MPRAGE"
    nib.save(image, tmp_path / "scan.nii.gz")
    volume = load_volume(tmp_path / "scan.nii.gz")
    kept = save_volume(volume, tmp_path / "kept.nii.gz")
    assert nib.load(kept).header["descrip"].item() == b"scanner protocol T1 MPRAGE"
    made = save_volume(volume, tmp_path / "made.nii.gz", description="transmrsr restore x4")
    assert nib.load(made).header["descrip"].item() == b"transmrsr restore x4"
    long = save_volume(volume, tmp_path / "long.nii.gz", description="m\u00e9thode " + "x" * 100)
    text = nib.load(long).header["descrip"].item()
    assert len(text) == 79 and text.startswith(b"m?thode xxx")


def test_mgz_is_read_with_its_affine(tmp_path):
    data = phantom((16, 16, 16))
    affine = oriented_affine("LIA")
    nib.save(nib.MGHImage(data, affine), tmp_path / "vol.mgz")
    volume = load_volume(tmp_path / "vol.mgz")
    np.testing.assert_allclose(volume.affine, affine, atol=1e-5)
    np.testing.assert_array_equal(volume.data, data)


def test_single_volume_4d_is_accepted(write_nifti):
    volume = load_volume(write_nifti(phantom((10, 12, 8))[..., None], oriented_affine("RAS")))
    assert volume.shape == (10, 12, 8)


def test_integer_output_dtype_rounds_and_clips(write_nifti, tmp_path):
    data = np.full((6, 6, 6), 300.4, np.float32)
    data[0] = -5.0
    out = save_volume(
        load_volume(write_nifti(data, np.eye(4))), tmp_path / "u8.nii.gz", dtype="uint8"
    )
    stored = np.asanyarray(nib.load(out).dataobj)
    assert stored.dtype == np.uint8 and stored.max() == 255 and stored.min() == 0


def _write_text(path, text):
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p / "missing.nii.gz", "no such file"),
        (lambda p: _write_text(p / "text.nii.gz", "not an image"), "cannot read"),
        (lambda p: _write_text(p / "notes.txt", "x"), "unsupported file type"),
        (lambda p: p, "is a folder"),
    ],
)
def test_unreadable_inputs_are_refused(tmp_path, make, message):
    with pytest.raises(TransMRSRError, match=message):
        load_volume(make(tmp_path))


def test_truncated_gzip_is_refused(write_nifti, tmp_path):
    path = write_nifti(phantom((30, 30, 30)), np.eye(4))
    raw = path.read_bytes()
    cut = tmp_path / "cut.nii.gz"
    cut.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(TransMRSRError, match="cannot read"):
        load_volume(cut)
    # A gzip whose payload is a valid header but too little data.
    body = gzip.decompress(raw)
    short = tmp_path / "short.nii.gz"
    short.write_bytes(gzip.compress(body[: len(body) // 3]))
    with pytest.raises(TransMRSRError, match="cannot read"):
        load_volume(short)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (np.ones((10, 10), np.float32), "2 dimensions"),
        (np.ones((10, 10, 10, 3), np.float32), "4-D series of 3 volumes"),
        (np.zeros((10, 10, 10), np.float32), "every voxel has the value 0"),
        (np.ones((10, 1, 10), np.float32), "axis of size 1"),
    ],
)
def test_not_one_volume_is_refused(write_nifti, data, message):
    with pytest.raises(TransMRSRError, match=message):
        load_volume(write_nifti(data, np.eye(4)))


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_voxels_are_refused(write_nifti, bad):
    data = phantom((10, 10, 10))
    data[3, 4, 5] = bad
    with pytest.raises(TransMRSRError, match="1 voxels are NaN or infinite"):
        load_volume(write_nifti(data, np.eye(4)))


def test_singular_affine_is_refused(tmp_path):
    affine = np.eye(4)
    affine[2, 2] = 0.0
    image = nib.Nifti1Image(phantom((8, 8, 8)), None)
    image.set_sform(affine, code=1)
    nib.save(image, tmp_path / "flat.nii")
    with pytest.raises(TransMRSRError, match="singular"):
        load_volume(tmp_path / "flat.nii")


def test_output_checks(tmp_path, write_nifti):
    src = write_nifti(phantom((8, 8, 8)), np.eye(4))
    with pytest.raises(TransMRSRError, match="same file as input"):
        check_output_path(src, src)
    with pytest.raises(TransMRSRError, match="does not exist"):
        check_output_path(tmp_path / "nowhere" / "out.nii.gz")
    with pytest.raises(TransMRSRError, match="must end in"):
        check_output_path(tmp_path / "out.mgz")
    with pytest.raises(TransMRSRError, match="exists already"):
        check_output_path(src, overwrite=False)


def test_unwritable_folder_is_refused(tmp_path, monkeypatch):
    # Root ignores permission bits, so simulate what the kernel says to an ordinary user.
    monkeypatch.setattr("transmrsr.io.os.access", lambda *_args: False)
    with pytest.raises(TransMRSRError, match="not writable"):
        check_output_path(tmp_path / "out.nii.gz")


def test_failed_write_leaves_nothing(tmp_path, monkeypatch):
    volume = Volume(phantom((8, 8, 8)), np.eye(4))

    def boom(*_args, **_kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(nib, "save", boom)
    with pytest.raises(TransMRSRError, match=r"out.nii.gz: cannot write \(disk full\)"):
        save_volume(volume, tmp_path / "out.nii.gz")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", sorted(REAL_VOLUMES))
def test_real_scans_load_in_their_orientation(name):
    volume = load_volume(shared_file(name))
    assert "".join(volume.axcodes) == REAL_VOLUMES[name]
    assert volume.data.dtype == np.float32 and volume.data.ndim == 3
    np.testing.assert_allclose(volume.zooms, voxel_sizes(nib.load(volume.path).affine))


def test_outputs_get_the_permissions_of_a_new_file(tmp_path):
    """Atomic writes go through an owner-only temporary file; the output must still get the
    usual ``0o666 & ~umask`` (readable by the group on a shared server)."""
    volume = Volume(np.zeros((4, 5, 6), np.float32), np.eye(4))
    old = os.umask(0o022)
    try:
        out = save_volume(volume, tmp_path / "out.nii.gz")
        assert stat.S_IMODE(out.stat().st_mode) == 0o644
        os.umask(0o077)
        private = save_volume(volume, tmp_path / "private.nii.gz")
        assert stat.S_IMODE(private.stat().st_mode) == 0o600
    finally:
        os.umask(old)
