"""Slices thinner (a gap) or thicker (overlap) than their spacing: ``--slice-thickness``.

NIfTI records the distance between slices, not their thickness; clinical 2-D scans are often
5 mm slices every 6.5 mm. The acquisition model (SPEC: a Gaussian whose FWHM is the slice
thickness, by default the spacing) then has to be told the thickness, by the option or by the
``SliceThickness`` of a BIDS/dcm2niix sidecar, so that the adaptation's pairs and the data
consistency describe the real slices.
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace

import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import oriented_affine, phantom

from transmrsr.cli.main import main
from transmrsr.degradation import degrade, simulate_interpolated_lr, simulate_thick
from transmrsr.errors import TransMRSRError
from transmrsr.inference import adapt as adapt_module
from transmrsr.inference.adapt import AdaptConfig
from transmrsr.inference.consistency import enforce_consistency, thick_slice_operator
from transmrsr.inference.restore import load_model, restore_volume, thickness_ratio
from transmrsr.interpolation import apply_along_axis
from transmrsr.io import Volume, load_volume, sidecar_path, sidecar_slice_thickness
from transmrsr.pairs import PairConfig, make_pair
from transmrsr.training.config import SR_PRESETS, config_from_dict, with_overrides

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _gapped_scan(ratio: float = 0.75, factor: int = 4) -> tuple[Volume, np.ndarray]:
    """A phantom scanned along SI (LAS axis 2) with slices ``ratio`` spacings thick."""
    hr = phantom((36, 40, 48))
    data, affine = degrade(hr, oriented_affine("LAS"), 2, factor, fwhm=factor * ratio)
    return Volume(data=data, affine=affine), hr


@pytest.mark.parametrize(("factor", "fwhm"), [(4.0, 3.0), (6.0, 4.5), (2.4, 3.6)])
def test_the_operator_models_the_given_slice_thickness(factor, fwhm):
    rng = np.random.default_rng(1)
    data = rng.normal(size=(7, 96, 5)).astype(np.float32)
    thick = simulate_thick(data, 1, factor, fwhm=fwhm)
    told = thick_slice_operator(96, thick.shape[1], factor, fwhm)
    np.testing.assert_allclose(apply_along_axis(told, data, 1), thick, atol=1e-5)
    assumed = thick_slice_operator(96, thick.shape[1], factor)
    assert np.abs(apply_along_axis(assumed, data, 1) - thick).max() > 0.05


def test_only_the_true_thickness_leaves_the_true_volume_where_it_is():
    truth = phantom((20, 80, 22), seed=3)
    observed = simulate_thick(truth, 1, 4.0, fwhm=3.0)
    told = enforce_consistency(truth, observed, 1, 4.0, fwhm=3.0)
    assumed = enforce_consistency(truth, observed, 1, 4.0)
    scale = float(truth.max())
    assert np.abs(told - truth).max() < 2e-3 * scale
    # Projected onto the wrong set, the truth itself is moved by percents of its range.
    assert np.abs(assumed - truth).max() > 0.02 * scale


def test_thickness_ratio_is_thickness_over_spacing_within_the_models_range():
    assert thickness_ratio(None, 5.0) == 1.0
    assert thickness_ratio(4.0, 5.0) == pytest.approx(0.8)
    assert thickness_ratio(10.0, 4.0) == pytest.approx(2.5)
    for bad, message in [
        (0.0, "positive"),
        (-3.0, "positive"),
        (float("nan"), "positive"),
        (float("inf"), "positive"),
        (1.0, "0.2 times"),
        (20.0, "4 times"),
    ]:
        with pytest.raises(TransMRSRError, match=message):
            thickness_ratio(bad, 5.0)


def test_a_gapped_scan_restored_with_its_thickness_reproduces_its_slices(tiny_model_file):
    lr, _ = _gapped_scan(0.75)
    model = load_model(tiny_model_file)
    told = restore_volume(lr, model, slice_thickness=3.0)  # spacing 4 mm, slices 3 mm
    assumed = restore_volume(lr, model)
    assert told.volume.shape == assumed.volume.shape == (36, 40, 48)
    np.testing.assert_allclose(told.volume.affine, assumed.volume.affine)
    assert told.thickness == pytest.approx(0.75) and assumed.thickness == 1.0
    assert told.describe().endswith("thickness 0.75 spacing")
    assert "thickness" not in assumed.describe()
    inside = lr.data > 0.05 * lr.data.max()
    err_told = np.abs(simulate_thick(told.volume.data, 2, 4.0, fwhm=3.0) - lr.data)[inside]
    err_assumed = np.abs(simulate_thick(assumed.volume.data, 2, 4.0, fwhm=3.0) - lr.data)[inside]
    assert np.median(err_told) < 1e-3 * lr.data.max() < np.median(err_assumed)


def test_an_impossible_thickness_is_refused_before_any_work(tiny_model_file):
    lr, _ = _gapped_scan()
    with pytest.raises(TransMRSRError, match="times the slice spacing"):
        restore_volume(lr, load_model(tiny_model_file), slice_thickness=0.5)


def test_thinner_slices_make_other_inputs_for_the_same_targets():
    plane = phantom((64, 64, 3))[:, :, 1]
    base = PairConfig((4.0, 4.0), "SI", 48, augment=False)
    key = (0, 0, 7)
    lr, hr, _ = make_pair(plane, base, key)
    lr_thin, hr_thin, _ = make_pair(plane, replace(base, thickness_range=(0.6, 0.6)), key)
    assert torch.equal(hr, hr_thin)
    assert (lr_thin - lr).abs().max() > 1.0
    # The input is the plane degraded with a slice 0.6 x 4 = 2.4 rows thick, then cropped.
    target = hr.numpy()[0]
    r0, c0 = next(
        (r, c)
        for r in range(64 - 48 + 1)
        for c in range(64 - 48 + 1)
        if np.array_equal(plane[r : r + 48, c : c + 48], target)
    )
    expected = simulate_interpolated_lr(plane, 0, 4.0, fwhm=2.4)[r0 : r0 + 48, c0 : c0 + 48]
    np.testing.assert_allclose(lr_thin.numpy()[0], expected, atol=1e-5)


def test_thickness_draws_stay_in_their_range_and_leave_the_rest_of_the_pair():
    plane = phantom((64, 64, 3))[:, :, 1]
    base = PairConfig((3.0, 5.0), "SI", 48)
    spread = replace(base, thickness_range=(0.5, 1.5))
    for i in range(6):
        key = (1, 0, i)
        lr, hr, factor = make_pair(plane, base, key)
        lr_s, hr_s, factor_s = make_pair(plane, spread, key)
        assert torch.equal(hr, hr_s) and factor == factor_s
        assert not torch.equal(lr, lr_s)


@pytest.mark.parametrize("value", [(0.1, 1.0), (0.8, 0.6), (1.0, 3.5), (float("nan"), 1.0)])
def test_impossible_thickness_ranges_are_refused(value):
    with pytest.raises(TransMRSRError, match="thickness range"):
        PairConfig(thickness_range=value)


def test_the_thickness_range_survives_a_json_round_trip():
    tiny = SR_PRESETS["tiny"]
    config = with_overrides(tiny, pairs=replace(tiny.pairs, thickness_range=(0.6, 1.0)))
    again = config_from_dict(json.loads(json.dumps(config.to_dict())))
    assert again.pairs.thickness_range == (0.6, 1.0) and again == config
    # A config saved before the field existed reads as the SPEC's model.
    old = config.to_dict()
    del old["pairs"]["thickness_range"]
    assert config_from_dict(old).pairs.thickness_range == (1.0, 1.0)


def test_adaptation_makes_its_pairs_as_thick_as_the_scans_slices(tiny_model_file, monkeypatch):
    seen = []
    original = adapt_module.make_pair

    def spy(plane, config, key, *guide):
        seen.append(config.thickness_range)
        return original(plane, config, key, *guide)

    monkeypatch.setattr(adapt_module, "make_pair", spy)
    lr, _ = _gapped_scan(0.75)
    restore_volume(lr, load_model(tiny_model_file), slice_thickness=3.0, adapt=AdaptConfig(steps=1))
    assert seen and set(seen) == {(0.75, 0.75)}


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("scan.nii.gz", "scan.json"),
        ("scan.nii", "scan.json"),
        ("sub-01_T1w.mgz", "sub-01_T1w.json"),
    ],
)
def test_the_sidecar_sits_beside_the_image(tmp_path, name, expected):
    assert sidecar_path(tmp_path / name) == tmp_path / expected


@pytest.mark.parametrize(
    ("content", "expected", "warning"),
    [
        (None, None, None),
        ('{"SliceThickness": 5, "SpacingBetweenSlices": 6.5}', 5.0, None),
        ('{"RepetitionTime": 2.3}', None, None),
        ("{not json", None, "not readable"),
        ('{"SliceThickness": "5 mm"}', None, "not a number"),
        ('{"SliceThickness": true}', None, "not a number"),
        ('{"SliceThickness": -2}', None, "not a positive length"),
        ("[5]", None, None),
    ],
)
def test_sidecar_slice_thickness(tmp_path, caplog, content, expected, warning):
    image = tmp_path / "scan.nii.gz"
    if content is not None:
        (tmp_path / "scan.json").write_text(content)
    with caplog.at_level(logging.WARNING):
        assert sidecar_slice_thickness(image) == expected
    if warning:
        assert warning in caplog.text
    else:
        assert not caplog.records


def _write_gapped(tmp_path, sidecar: dict | None):
    lr, _ = _gapped_scan(0.75)
    path = tmp_path / "scan.nii.gz"
    nib.save(nib.Nifti1Image(lr.data, lr.affine), path)
    if sidecar is not None:
        (tmp_path / "scan.json").write_text(json.dumps(sidecar))
    return path


def _description(path) -> str:
    return nib.load(path).header["descrip"].tobytes().decode().rstrip("\0")


@pytest.mark.parametrize(
    ("sidecar", "option", "described"),
    [
        ({"SliceThickness": 3.0}, [], "thickness 0.75 spacing"),
        ({"SliceThickness": 3.0}, ["--slice-thickness", "spacing"], None),
        ({"SliceThickness": 3.0}, ["--slice-thickness", "6"], "thickness 1.5 spacing"),
        (None, ["--slice-thickness", "3"], "thickness 0.75 spacing"),
        (None, [], None),
    ],
)
def test_restore_cli_takes_the_thickness_from_the_option_or_the_sidecar(
    tiny_model_file, tmp_path, caplog, sidecar, option, described
):
    source = _write_gapped(tmp_path, sidecar)
    out = tmp_path / "out.nii.gz"
    common = ["--model", str(tiny_model_file), "--adapt", "0", "--no-progress"]
    with caplog.at_level(logging.INFO):
        assert main(["restore", str(source), str(out), *common, *option]) == 0
    text = _description(out)
    if described is None:
        assert "thickness" not in text
    else:
        assert text.endswith(described)
    assert ("from scan.json" in caplog.text) == (sidecar is not None and not option)
    assert load_volume(out).shape == (36, 40, 48)


@pytest.mark.parametrize(
    ("sidecar", "option", "message"),
    [
        ({"SliceThickness": 40.0}, [], "slice thickness 40 mm is 10 times the slice spacing"),
        (None, ["--slice-thickness", "0.1"], "0.025 times the slice spacing"),
        (None, ["--slice-thickness", "thin"], "not auto, spacing or a positive length"),
        (None, ["--slice-thickness", "-4"], "not auto, spacing or a positive length"),
    ],
)
def test_restore_cli_refuses_impossible_thicknesses_in_one_line(
    tiny_model_file, tmp_path, capsys, sidecar, option, message
):
    source = _write_gapped(tmp_path, sidecar)
    out = tmp_path / "out.nii.gz"
    code = main(["restore", str(source), str(out), "--model", str(tiny_model_file), *option])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert message in err[-1] and "Traceback" not in "\n".join(err)
    assert not out.exists()
