"""``--resolution MM``: restoring (and interpolating) onto an isotropic grid of a chosen spacing.

Clinical scans often have finer in-plane voxels than 1 mm (0.45 x 0.45 x 5 mm); restored at
their own in-plane spacing they would be x11 problems outside every model's training range.
With ``--resolution`` the in-plane axes are resampled to the target spacing first.
"""

from __future__ import annotations

import logging

import nibabel as nib
import numpy as np
import pytest
from conftest import oblique_affine, oriented_affine, phantom

from transmrsr.cli.main import main
from transmrsr.errors import TransMRSRError
from transmrsr.geometry import detect_thick_axis
from transmrsr.inference.restore import load_model, restore_volume, warn_if_untrained_factor
from transmrsr.interpolation import interpolate_axis, resample_axis, resample_in_plane, upsample
from transmrsr.io import Volume, load_volume, voxel_sizes
from transmrsr.models.files import load_model_file
from transmrsr.training.checkpoint import save_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _clinical(codes: str = "LIA", thick_axis: int = 1, shape=(40, 6, 36)) -> Volume:
    """A 0.5 mm in-plane, 4 mm thick phantom scan along ``thick_axis``."""
    zooms = [0.5, 0.5, 0.5]
    zooms[thick_axis] = 4.0
    return Volume(data=phantom(shape), affine=oriented_affine(codes, zooms=tuple(zooms)))


def _edge_corner(affine: np.ndarray) -> np.ndarray:
    """World position of the outer corner of voxel (0, 0, 0): what the grid keeps."""
    return affine[:3, :3] @ np.full(3, -0.5) + affine[:3, 3]


def test_the_factor_is_the_thick_spacing_over_the_resolution():
    volume = _clinical()
    assert detect_thick_axis(volume.affine, resolution=1.0) == (1, pytest.approx(4.0))
    assert detect_thick_axis(volume.affine, resolution=0.8) == (1, pytest.approx(5.0))
    assert detect_thick_axis(volume.affine, axis="SI", resolution=2.0)[1] == pytest.approx(2.0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"resolution": 1.0, "factor": 4.0}, "not both"),
        ({"resolution": 4.0}, "not finer than the thick spacing"),
        ({"resolution": 6.0}, "not finer than the thick spacing"),
        ({"resolution": 0.0}, "positive"),
        ({"resolution": float("nan")}, "positive"),
        ({"resolution": 0.1}, "out of range"),
    ],
)
def test_impossible_resolutions_are_refused(kwargs, message):
    with pytest.raises(TransMRSRError, match=message):
        detect_thick_axis(_clinical().affine, **kwargs)


@pytest.mark.parametrize("codes", ["RAS", "LIA", "PSR"])
def test_in_plane_resampling_keeps_the_field_of_view_and_the_thick_axis(codes):
    volume = _clinical(codes, thick_axis=2, shape=(40, 36, 6))
    data, affine = resample_in_plane(volume.data, volume.affine, 2, 1.0)
    assert data.shape == (20, 18, 6) and data.dtype == np.float32
    np.testing.assert_allclose(voxel_sizes(affine), [1.0, 1.0, 4.0], atol=1e-9)
    np.testing.assert_allclose(_edge_corner(affine), _edge_corner(volume.affine), atol=1e-9)
    # Directions unchanged, only lengths.
    unit = affine[:3, :3] / voxel_sizes(affine)
    np.testing.assert_allclose(unit, volume.affine[:3, :3] / voxel_sizes(volume.affine))


def test_axes_already_at_the_resolution_are_copied_untouched():
    volume = Volume(data=phantom((20, 18, 6)), affine=oriented_affine("RAS", zooms=(1, 1, 4)))
    data, affine = resample_in_plane(volume.data, volume.affine, 2, 1.0)
    np.testing.assert_array_equal(data, volume.data)
    np.testing.assert_array_equal(affine, volume.affine)


def _wave(period_mm: float, n: int = 96) -> np.ndarray:
    """A cosine along axis 0 of a 0.5 mm grid (voxel centres at (i + 0.5) * 0.5 mm)."""
    x = (np.arange(n) + 0.5) * 0.5
    return np.ascontiguousarray(
        np.broadcast_to(np.cos(2 * np.pi * x / period_mm)[:, None, None], (n, 4, 3)), np.float32
    )


def _gaussian_gain(period_mm: float, new_spacing_mm: float) -> float:
    """What a Gaussian of FWHM ``new_spacing_mm`` leaves of a wave's amplitude."""
    sigma = new_spacing_mm / (2 * np.sqrt(2 * np.log(2)))
    return float(np.exp(-2 * (np.pi * sigma / period_mm) ** 2))


def test_coarser_spacing_is_anti_aliased_and_smooth_signals_survive():
    affine = oriented_affine("RAS", zooms=(0.5, 0.5, 4.0))
    centres = (np.arange(48) + 0.5) * 1.0  # the 1 mm grid keeps the outer edge
    # A 1.5 mm wave is finer than 1 mm voxels can hold: sampled as it is, it comes back as a
    # false 3 mm wave at nearly full amplitude; the anti-aliasing removes most of it.
    fine = _wave(1.5)
    plain = interpolate_axis(fine, 0, (np.arange(48) + 0.5) * 2.0 - 0.5, "cubic")
    coarse, coarse_affine = resample_axis(fine, affine, 0, 2.0)
    assert coarse.shape == (48, 4, 3)
    inner = slice(4, -4)
    assert np.abs(plain[inner, 0, 0]).max() > 0.8
    assert np.abs(coarse[inner, 0, 0]).max() < 0.3
    # A 16 mm wave keeps its place and what the Gaussian passes of it (98.6 %).
    coarse, _ = resample_axis(_wave(16.0), affine, 0, 2.0)
    expected = _gaussian_gain(16.0, 1.0) * np.cos(2 * np.pi * centres / 16.0)
    np.testing.assert_allclose(coarse[inner, 0, 0], expected[inner], atol=0.01)
    np.testing.assert_allclose(voxel_sizes(coarse_affine), [1.0, 0.5, 4.0], atol=1e-9)


def test_restore_at_a_resolution_writes_that_isotropic_grid(tiny_model_file):
    volume = _clinical("LIA", thick_axis=1)
    result = restore_volume(volume, load_model(tiny_model_file), resolution=1.0)
    in_plane, in_plane_affine = resample_in_plane(volume.data, volume.affine, 1, 1.0)
    expected, expected_affine = upsample(in_plane, in_plane_affine, 1, 4.0, "cubic")
    assert result.factor == pytest.approx(4.0) and result.thick_axis == 1
    assert result.volume.shape == expected.shape == (20, 24, 18)
    np.testing.assert_allclose(result.volume.affine, expected_affine, atol=1e-9)
    np.testing.assert_allclose(voxel_sizes(result.volume.affine), 1.0, atol=1e-9)
    assert result.volume.data.min() >= volume.data.min()
    assert result.volume.data.max() <= volume.data.max()


def test_restore_at_a_resolution_on_an_oblique_grid(tiny_model_file):
    volume = Volume(data=phantom((36, 30, 8)), affine=oblique_affine(zooms=(0.45, 0.45, 5.0)))
    result = restore_volume(volume, load_model(tiny_model_file), resolution=1.0)
    assert result.factor == pytest.approx(5.0)
    assert result.volume.shape == (16, 13, 40)
    np.testing.assert_allclose(voxel_sizes(result.volume.affine), 1.0, atol=1e-9)
    np.testing.assert_allclose(
        _edge_corner(result.volume.affine), _edge_corner(volume.affine), atol=1e-9
    )


def test_factors_outside_the_training_range_are_warned_about(tiny_model_file, tmp_path, caplog):
    weights, config, _ = load_model_file(tiny_model_file)
    path = save_model(tmp_path / "x4.safetensors", weights, config, info={"factor_range": [4, 4]})
    model = load_model(path)
    with caplog.at_level(logging.WARNING, logger="transmrsr.inference.restore"):
        assert not warn_if_untrained_factor(model, 4.4)
        assert not warn_if_untrained_factor(model, 3.6)
        assert warn_if_untrained_factor(model, 8.0)
        assert warn_if_untrained_factor(model, 2.0)
        assert not warn_if_untrained_factor(load_model(tiny_model_file), 11.0)  # no range known
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2
    assert "x8 is outside the factors x4.safetensors was trained on (x4-x4)" in messages[0]
    assert "--resolution" in messages[0] and "--resolution" not in messages[1]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="transmrsr.inference.restore"):
        restore_volume(_clinical(), model)  # x8 at 0.5 mm
    assert any("x8 is outside" in r.getMessage() for r in caplog.records)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="transmrsr.inference.restore"):
        restore_volume(_clinical(), model, resolution=1.0)  # x4 at 1 mm
    assert not caplog.records


def test_the_shipped_model_records_its_factor_range():
    assert load_model("t1", specialists=False).info["factor_range"] == [2.0, 8.0]


def _write(tmp_path, volume: Volume, name: str = "clinical.nii.gz"):
    path = tmp_path / name
    nib.save(nib.Nifti1Image(volume.data, volume.affine), path)
    return path


def test_restore_and_upsample_at_a_resolution_from_the_command_line(tiny_model_file, tmp_path):
    source = _write(tmp_path, _clinical())
    restored, cubic = tmp_path / "restored.nii.gz", tmp_path / "cubic.nii.gz"
    common = ["--model", str(tiny_model_file), "--no-progress", "--adapt", "0"]
    assert main(["restore", str(source), str(restored), "--resolution", "1", *common]) == 0
    assert main(["upsample", str(source), str(cubic), "--resolution", "1"]) == 0
    a, b = load_volume(restored), load_volume(cubic)
    assert a.shape == b.shape == (20, 24, 18)
    np.testing.assert_allclose(a.affine, b.affine, atol=1e-6)
    np.testing.assert_allclose(voxel_sizes(a.affine), 1.0, atol=1e-6)
    # The header says what made each file.
    assert nib.load(restored).header["descrip"].item().endswith(b"restore tiny x4 axis 1")
    assert nib.load(cubic).header["descrip"].item().endswith(b"upsample cubic x4 axis 1")


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--resolution", "1", "--factor", "4"], "not allowed with argument"),
        (["--resolution", "0"], "must be above zero"),
        (["--resolution", "inf"], "not a finite number"),
        (["--resolution", "8"], "not finer than the thick spacing"),
    ],
)
@pytest.mark.parametrize("command", ["restore", "upsample"])
def test_bad_resolutions_give_one_line_and_exit_2(
    command, extra, message, tiny_model_file, tmp_path, capsys
):
    source = _write(tmp_path, _clinical())
    out = tmp_path / "out.nii.gz"
    model = ["--model", str(tiny_model_file), "--no-progress"] if command == "restore" else []
    code = main([command, str(source), str(out), *extra, *model])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and message in err[0], err
    assert not out.exists()
