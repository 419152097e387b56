"""Comparisons of whole volumes, the evaluate command and the demo."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import oriented_affine, phantom

from transmrsr.cli.main import main
from transmrsr.errors import TransMRSRError
from transmrsr.evaluation.compare import compare_volumes, default_slice_axis
from transmrsr.io import Volume


def test_default_slice_axis_follows_the_paper():
    ras, lia = oriented_affine("RAS"), oriented_affine("LIA")
    assert default_slice_axis(ras, thick_axis=2) == 1  # T1 thick SI -> coronal slices
    assert default_slice_axis(ras, thick_axis=0) == 2  # T2 thick LR -> axial slices
    assert default_slice_axis(lia, thick_axis=None) == 1  # SI is array axis 1 in LIA


def test_shifted_grids_compare_their_overlap():
    affine = oriented_affine("PSR")
    ref = Volume(phantom((30, 32, 28)), affine)
    shifted = affine.copy()
    shifted[:3, 3] += affine[:3, :3] @ np.array([0, 0, 2])
    pred = Volume(ref.data[:, :, 2:26].copy(), shifted)
    result = compare_volumes(pred, ref, thick_axis=2)
    assert result.grid_shift == (0, 0, 2)
    assert result.voxels_compared == 30 * 32 * 24
    assert result.ssim_paper == pytest.approx(1.0) and result.ssim_masked == pytest.approx(1.0)


def test_worse_prediction_scores_lower_and_mask_matters():
    affine = oriented_affine("RAS")
    ref = Volume(phantom((32, 32, 32)), affine)
    rng = np.random.default_rng(0)
    mild = Volume(ref.data + rng.normal(0, 2, ref.shape).astype(np.float32), affine)
    strong = Volume(ref.data + rng.normal(0, 8, ref.shape).astype(np.float32), affine)
    a, b = compare_volumes(mild, ref), compare_volumes(strong, ref)
    assert a.psnr_paper > b.psnr_paper + 6 and a.ssim_masked > b.ssim_masked
    assert a.psnr_masked == pytest.approx(b.psnr_masked + 20 * np.log10(4), abs=0.5)


def test_refuses_other_grids_and_bad_masks():
    ref = Volume(phantom((16, 16, 16)), oriented_affine("RAS"))
    half = ref.affine.copy()
    half[0, 3] += 0.5
    with pytest.raises(TransMRSRError, match="different grids"):
        compare_volumes(Volume(ref.data, half), ref)
    with pytest.raises(TransMRSRError, match="mask must be on the reference grid"):
        compare_volumes(ref, ref, mask=Volume(np.ones((8, 8, 8)), ref.affine))
    with pytest.raises(TransMRSRError, match="differ from the thick axis"):
        compare_volumes(ref, ref, thick_axis=1, slice_axis=1)


def test_evaluate_command_json_and_table(tmp_path, write_nifti, capsys):
    affine = oriented_affine("LIA")
    ref = phantom((24, 24, 24))
    noisy = ref + np.random.default_rng(1).normal(0, 3, ref.shape).astype(np.float32)
    ref_path = write_nifti(ref, affine, "ref.nii.gz")
    pred_path = write_nifti(noisy, affine, "pred.nii.gz")
    mask_path = write_nifti((ref > 50).astype(np.uint8), affine, "mask.nii.gz")
    assert (
        main(["evaluate", str(pred_path), str(ref_path), "--mask", str(mask_path), "--json"]) == 0
    )
    numbers = json.loads(capsys.readouterr().out)
    assert 20 < numbers["psnr_paper"] < 60 and 0 < numbers["ssim_masked"] < 1
    assert numbers["mask_voxels"] == int((ref > 50).sum())
    assert main(["evaluate", str(pred_path), str(ref_path), "--thick-axis", "SI"]) == 0
    table = capsys.readouterr().out
    assert "PSNR paper" in table and "prediction" in table
    other = write_nifti(ref, oriented_affine("RAS", zooms=(2, 2, 2)), "other.nii.gz")
    assert main(["evaluate", str(other), str(ref_path)]) == 2
    assert "different grids" in capsys.readouterr().err


@pytest.mark.slow
def test_demo_writes_volumes_figure_and_metrics(tmp_path, capsys, tiny_model_file):
    out = tmp_path / "demo"
    args = ["demo", "--out", str(out), "--factor", "8", "--model", str(tiny_model_file)]
    assert main([*args, "--no-progress"]) == 0
    table = capsys.readouterr().out
    assert "cubic" in table and "TransMRSR" in table
    for name in ("reference.nii.gz", "lr.nii.gz", "cubic.nii.gz", "transmrsr.nii.gz", "figure.png"):
        assert (out / name).stat().st_size > 10_000, name
    metrics = json.loads((out / "metrics.json").read_text())
    assert 20 < metrics["cubic"]["psnr_paper"] < 40
    assert np.isfinite(metrics["TransMRSR"]["psnr_masked"]) and metrics["TransMRSR"]["seconds"] > 0
