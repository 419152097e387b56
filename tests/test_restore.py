"""``restore``: geometry in every orientation, intensities, batches of inputs, bad inputs."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import oblique_affine, oriented_affine, phantom, shared_file

from transmrsr.cli.main import main
from transmrsr.degradation import degrade
from transmrsr.errors import TransMRSRError
from transmrsr.inference.restore import (
    SHIPPED_MODELS,
    SPECIALISTS,
    load_model,
    restore_volume,
    slice_axes_for,
)
from transmrsr.intensity import IntensityScaler
from transmrsr.interpolation import upsample
from transmrsr.io import Volume, load_volume
from transmrsr.models.files import load_model_file
from transmrsr.training.checkpoint import save_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _thick(codes: str, axis: int, factor: int, shape=(24, 28, 20)):
    hr_affine = oriented_affine(codes)
    hr = phantom(shape)
    data, affine = degrade(hr, hr_affine, axis, factor)
    return Volume(data=data, affine=affine), hr_affine


@pytest.mark.parametrize("codes", ["RAS", "LAS", "LIA", "PSR", "ILP"])
@pytest.mark.parametrize("axis", [0, 1, 2])
def test_output_grid_is_the_upsample_grid_in_every_orientation(codes, axis, tiny_model_file):
    lr, hr_affine = _thick(codes, axis, 4)
    model = load_model(tiny_model_file)
    result = restore_volume(lr, model, batch_size=16)
    expected_data, expected_affine = upsample(lr.data, lr.affine, axis, 4.0, "cubic")
    assert result.thick_axis == axis and result.factor == 4.0
    assert result.volume.shape == expected_data.shape
    np.testing.assert_allclose(result.volume.affine, expected_affine, atol=1e-9)
    # 24/28/20 voxels are multiples of 4: the restored grid is exactly the HR grid.
    np.testing.assert_allclose(result.volume.affine, hr_affine, atol=1e-9)
    assert np.isfinite(result.volume.data).all()
    assert result.volume.data.min() >= lr.data.min() and result.volume.data.max() <= lr.data.max()


def test_oblique_grid_and_non_integer_factor(tiny_model_file):
    affine = oblique_affine(zooms=(0.86, 0.86, 2.4))
    data = phantom((30, 32, 10))
    result = restore_volume(Volume(data=data, affine=affine), load_model(tiny_model_file))
    expected_data, expected_affine = upsample(data, affine, 2, 2.4 / 0.86, "cubic")
    assert result.factor == pytest.approx(2.4 / 0.86)
    assert result.volume.shape == expected_data.shape == (30, 32, 27)
    np.testing.assert_allclose(result.volume.affine, expected_affine, atol=1e-9)


def test_both_planes_average_two_orientations(tiny_model_file):
    lr, _ = _thick("RAS", 2, 4)
    model = load_model(tiny_model_file)
    one = restore_volume(lr, model, planes="one")
    both = restore_volume(lr, model, planes="both")
    assert one.slice_axes == [1] and both.slice_axes == [0, 1]
    assert not np.array_equal(one.volume.data, both.volume.data)
    assert slice_axes_for("one", 0, (10, 5, 30)) == [2]
    with pytest.raises(TransMRSRError, match="--planes"):
        slice_axes_for("three", 0, (10, 10, 10))


def test_a_given_scaler_replaces_the_inputs_own_normalisation(tiny_model_file):
    lr, _ = _thick("LAS", 2, 4)
    model = load_model(tiny_model_file)
    default = restore_volume(lr, model, consistency=False)
    own = restore_volume(lr, model, consistency=False, scaler=IntensityScaler.fit(lr.data))
    np.testing.assert_array_equal(default.volume.data, own.volume.data)
    moved = restore_volume(
        lr, model, consistency=False, scaler=IntensityScaler.fit(lr.data).with_gain(1.5)
    )
    # Another normalisation changes what the network sees, not the grid or the units.
    assert np.abs(moved.volume.data - default.volume.data).max() > 1e-3 * np.ptp(lr.data)
    np.testing.assert_allclose(moved.volume.affine, default.volume.affine)
    assert moved.volume.data.max() <= lr.data.max()


def test_a_model_with_specialists_restores_with_the_one_for_the_factor(tiny_model_file, tmp_path):
    weights, config, _ = load_model_file(tiny_model_file)
    narrow = {}
    for name, factors in {"x4": [3.5, 4.5], "x8": [7.0, 8.0]}.items():
        path = save_model(
            tmp_path / f"{name}.safetensors", weights, config, info={"factor_range": factors}
        )
        narrow[name] = load_model(path)
    general = load_model(tiny_model_file)
    general.specialists = (narrow["x4"], narrow["x8"])
    assert general.for_factor(4.0) is narrow["x4"] and general.for_factor(4.5) is narrow["x4"]
    assert general.for_factor(8.0) is narrow["x8"]
    assert general.for_factor(2.0) is general and general.for_factor(6.0) is general
    lr, _ = _thick("RAS", 2, 4)
    assert restore_volume(lr, general).model_source == narrow["x4"].source
    lr, _ = _thick("RAS", 2, 2)
    assert restore_volume(lr, general).model_source == general.source


def test_the_shipped_general_model_carries_its_shipped_specialists():
    general = load_model("t1")
    assert [Path(s.source).name for s in general.specialists] == [
        SHIPPED_MODELS[name] for name in SPECIALISTS["t1"]
    ]
    assert load_model("t1", specialists=False).specialists == ()
    assert load_model("t1_x4").specialists == ()
    assert Path(general.for_factor(4.0).source).name == SHIPPED_MODELS["t1_x4"]
    assert Path(general.for_factor(8.0).source).name == SHIPPED_MODELS["t1_x8"]
    assert Path(general.for_factor(5.0).source).name == SHIPPED_MODELS["t1_x6"]
    assert Path(general.for_factor(4.5).source).name == SHIPPED_MODELS["t1_x4"]
    assert Path(general.for_factor(7.0).source).name == SHIPPED_MODELS["t1_x8"]
    assert general.for_factor(2.5) is general


def test_one_plane_prefers_square_voxels_then_more_planes():
    # Native IXI T1 (PSR, 0.94 mm in-plane, 1.2 mm sagittal slices) restored along SI: the
    # sagittal planes (slice axis R) are isotropic, the coronal ones (more of them) are not.
    ixi = ((256, 256, 150), (0.9375, 0.9375, 1.2))
    assert slice_axes_for("one", 1, ixi[0], ixi[1]) == [2]
    assert slice_axes_for("auto", 1, ixi[0], ixi[1]) == [2]
    assert slice_axes_for("one", 1, ixi[0]) == [0]
    assert slice_axes_for("one", 1, ixi[0], (1.0, 1.0, 1.0)) == [0]
    assert slice_axes_for("both", 1, ixi[0], ixi[1]) == [0, 2]
    # A guided restore fuses both orientations unless told otherwise.
    assert slice_axes_for("auto", 1, ixi[0], ixi[1], guided=True) == [0, 2]
    assert slice_axes_for("one", 1, ixi[0], ixi[1], guided=True) == [2]


@pytest.mark.slow
def test_restore_a_real_scan_end_to_end(tiny_model_file, tmp_path):
    source = shared_file("ixi012_t1_2mm.nii.gz")
    hr = load_volume(source)
    thick, affine = degrade(hr.data, hr.affine, 1, 3)  # PSR: axis 1 is SI
    lr_path = tmp_path / "lr.nii.gz"
    nib.save(nib.Nifti1Image(thick, affine), lr_path)
    out = tmp_path / "restored.nii.gz"
    code = main(
        [
            "restore",
            str(lr_path),
            str(out),
            "--model",
            str(tiny_model_file),
            "--no-progress",
            "--planes",
            "both",
        ]
    )
    assert code == 0
    restored = load_volume(out)
    assert restored.shape == hr.shape
    np.testing.assert_allclose(restored.affine, hr.affine, atol=1e-6)
    assert restored.axcodes == hr.axcodes
    assert 0.5 * hr.data.max() < restored.data.max() <= thick.max() + 1e-3
    # the network is random, but the residual design keeps it near the cubic input
    assert np.corrcoef(restored.data.ravel(), hr.data.ravel())[0, 1] > 0.8


def test_like_puts_the_output_on_the_reference_grid(tiny_model_file, tmp_path):
    lr, _ = _thick("LAS", 1, 2)
    like = tmp_path / "like.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((20, 22, 18), np.float32), oriented_affine("RAS")), like)
    src = tmp_path / "lr.nii.gz"
    nib.save(nib.Nifti1Image(lr.data, lr.affine), src)
    out = tmp_path / "out.nii.gz"
    assert (
        main(
            [
                "restore",
                str(src),
                str(out),
                "--model",
                str(tiny_model_file),
                "--like",
                str(like),
                "--no-progress",
            ]
        )
        == 0
    )
    written = nib.load(out)
    assert written.shape == (20, 22, 18)
    np.testing.assert_allclose(written.affine, oriented_affine("RAS"), atol=1e-6)


def test_many_inputs_out_dir_skip_and_overwrite(tiny_model_file, tmp_path):
    folder = tmp_path / "cohort"
    folder.mkdir()
    for i, codes in enumerate(("RAS", "PSR")):
        lr, _ = _thick(codes, 2, 4)
        nib.save(nib.Nifti1Image(lr.data, lr.affine), folder / f"sub{i}_T1w.nii.gz")
    out_dir = tmp_path / "restored"
    args = [
        "restore",
        str(folder),
        "--out-dir",
        str(out_dir),
        "--model",
        str(tiny_model_file),
        "--no-progress",
    ]
    assert main(args) == 0
    outputs = sorted(p.name for p in out_dir.iterdir())
    assert outputs == ["sub0_T1w_restored.nii.gz", "sub1_T1w_restored.nii.gz"]
    stamp = (out_dir / outputs[0]).stat().st_mtime_ns
    assert main(args) == 0
    assert (out_dir / outputs[0]).stat().st_mtime_ns == stamp  # skipped
    assert main([*args, "--overwrite"]) == 0
    assert (out_dir / outputs[0]).stat().st_mtime_ns != stamp
    assert not [p for p in out_dir.iterdir() if p.name.startswith(".")]


def test_one_bad_input_in_a_cohort_does_not_stop_the_others(tiny_model_file, tmp_path, capsys):
    folder = tmp_path / "cohort"
    folder.mkdir()
    lr, _ = _thick("RAS", 2, 4)
    nib.save(nib.Nifti1Image(lr.data, lr.affine), folder / "good.nii.gz")
    (folder / "broken.nii.gz").write_bytes(b"not a nifti")
    code = main(
        [
            "restore",
            str(folder),
            "--out-dir",
            str(tmp_path / "o"),
            "--model",
            str(tiny_model_file),
            "--no-progress",
        ]
    )
    assert code == 2
    assert (tmp_path / "o" / "good_restored.nii.gz").exists()
    assert not (tmp_path / "o" / "broken_restored.nii.gz").exists()
    assert "1 of 2 inputs failed" in capsys.readouterr().err


def _write(tmp_path, data, affine, name="in.nii.gz"):
    path = tmp_path / name
    nib.save(nib.Nifti1Image(data, affine), path)
    return path


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("missing", "no such file"),
        ("nan", "NaN"),
        ("isotropic", "isotropic"),
        ("unknown_model", "no such model file (shipped models: t1, t1_x4, t1_x6, t1_x8)"),
        ("bad_model", "cannot read the model"),
        ("same_file", "inputs are never overwritten"),
        ("three_paths", "--out-dir"),
        ("huge_factor", "factor"),
    ],
)
def test_bad_inputs_give_one_line_and_exit_2(case, message, tiny_model_file, tmp_path, capsys):
    lr, _ = _thick("RAS", 2, 4)
    good = _write(tmp_path, lr.data, lr.affine)
    out = tmp_path / "out.nii.gz"
    model = str(tiny_model_file)
    args = {
        "missing": [str(tmp_path / "nope.nii.gz"), str(out)],
        "nan": [
            str(_write(tmp_path, np.full((8, 8, 4), np.nan, np.float32), lr.affine, "n.nii")),
            str(out),
        ],
        "isotropic": [
            str(_write(tmp_path, phantom((12, 12, 12)), np.eye(4), "i.nii.gz")),
            str(out),
        ],
        "unknown_model": [str(good), str(out), "--model", "t9"],
        "bad_model": [str(good), str(out), "--model", str(_write_bytes(tmp_path))],
        "same_file": [str(good), str(good)],
        "three_paths": [str(good), str(good), str(out)],
        "huge_factor": [str(good), str(out), "--factor", "40"],
    }[case]
    if case not in ("unknown_model", "bad_model"):
        args += ["--model", model]
    code = main(["restore", *args, "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and message in err[0], err
    assert not out.exists()


def _write_bytes(tmp_path):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(b"\x00" * 64)
    return path
