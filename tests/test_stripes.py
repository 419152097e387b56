"""The slab-stripe index on volumes with stripes of known size."""

from __future__ import annotations

import json
import logging

import nibabel as nib
import numpy as np
import pytest
from conftest import oriented_affine, phantom
from scipy import ndimage

import transmrsr
from transmrsr.cli.main import main
from transmrsr.degradation import degrade
from transmrsr.errors import TransMRSRError
from transmrsr.inference.restore import _report_stripes as report_stripes
from transmrsr.inference.restore import load_model, restore_volume
from transmrsr.interpolation import upsample
from transmrsr.io import Volume
from transmrsr.stripes import (
    head_mask,
    slab_pattern,
    slab_pattern_amplitude,
    stripe_index,
    stripe_ratio,
)


def smooth_head(shape=(48, 56, 64)) -> np.ndarray:
    """A smooth ellipsoid head (mean about 100 inside) on a zero background."""
    grid = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    r2 = sum(g**2 for g in grid)
    return np.where(r2 < 0.8, 100.0 + 20.0 * grid[0] + 10.0 * np.sin(3 * grid[1]), 0.0)


def with_stripes(volume, axis, period, amplitude, phase=0.0):
    z = np.arange(volume.shape[axis])
    pattern = amplitude * np.cos(2 * np.pi * z / period + phase)
    shape = [1, 1, 1]
    shape[axis] = -1
    return volume + (volume > 0) * pattern.reshape(shape)


def textured_head(shape=(48, 56, 64), seed=0) -> np.ndarray:
    """The smooth head with isotropic fine texture (about 3% of its mean): anatomy-like detail
    that does not repeat with any period."""
    head = smooth_head(shape)
    noise = ndimage.gaussian_filter(np.random.default_rng(seed).normal(0, 1, head.shape), 1.5)
    return head + (head > 0) * 40.0 * noise


@pytest.mark.parametrize(("axis", "period"), [(2, 4), (2, 8), (0, 6), (1, 5.5)])
def test_amplitude_of_known_stripes(axis, period):
    head = smooth_head()
    mean = head[head > 0].mean()
    striped = with_stripes(head, axis, period, amplitude=3.0)
    expected = 3.0 / np.sqrt(2) / mean
    (amplitude,) = slab_pattern_amplitude(striped, axis, period, mask=head > 0)
    assert amplitude == pytest.approx(expected, rel=0.1)
    # Twice the stripes, twice the amplitude; the smooth head alone reads far less.
    double = with_stripes(head, axis, period, amplitude=6.0)
    (twice,) = slab_pattern_amplitude(double, axis, period, mask=head > 0)
    assert twice / expected == pytest.approx(2.0, rel=0.1)
    assert slab_pattern_amplitude(head, axis, period, mask=head > 0)[0] < 0.01 * expected


@pytest.mark.parametrize("period", [4, 6, 8])
def test_detail_that_does_not_repeat_reads_about_one_and_stripes_far_more(period):
    # Texture as strong as a real head's detail folds as much at the slab period as at its
    # neighbours; 2% stripes on it stand out several times.
    head = textured_head()
    mask = head > 0
    plain = stripe_index(head, 2, period, mask=mask)
    assert 0.6 < plain < 1.6
    weak = stripe_index(with_stripes(head, 2, period, 1.0), 2, period, mask=mask)
    strong = stripe_index(with_stripes(head, 2, period, 2.0), 2, period, mask=mask)
    assert plain < weak < strong
    assert strong > 2.5 * plain


def test_stripes_that_change_sign_across_the_head_still_count():
    # Stripes in opposite phase in the two halves cancel in a head-wide average, not in
    # the blocks of lines the index averages over.
    head = smooth_head()
    left = with_stripes(head, 2, 4, 3.0)
    right = with_stripes(head, 2, 4, 3.0, phase=np.pi)
    mixed = np.concatenate([left[:32], right[32:]], axis=0)
    assert slab_pattern_amplitude(mixed, 2, 4, mask=head > 0)[0] == pytest.approx(
        slab_pattern_amplitude(left, 2, 4, mask=head > 0)[0], rel=0.05
    )


def test_index_does_not_depend_on_where_the_slabs_start():
    head = smooth_head()
    striped = with_stripes(head, 2, 8, 3.0)
    shifted = with_stripes(head, 2, 8, 3.0, phase=1.3)
    (a,) = slab_pattern_amplitude(striped, 2, 8, mask=head > 0)
    assert slab_pattern_amplitude(shifted, 2, 8, mask=head > 0)[0] == pytest.approx(a, rel=0.05)


def test_default_mask_is_the_head():
    head = smooth_head()
    np.testing.assert_array_equal(head_mask(head), head > 0)
    striped = with_stripes(textured_head(), 2, 4, 3.0)
    assert stripe_index(striped, 2, 4) == pytest.approx(stripe_index(striped, 2, 4, mask=head > 0))


@pytest.mark.parametrize(
    ("volume", "axis", "period", "message"),
    [
        (np.ones((8, 8)), 0, 4, "3-D"),
        (np.ones((8, 8, 8)), 3, 4, "thick axis"),
        (np.ones((8, 8, 8)), 0, 1.5, "at least 2"),
        (np.ones((8, 8, 8)), 0, 6, "two slabs"),
        (np.zeros((8, 8, 16)), 2, 4, "empty"),
    ],
)
def test_bad_input_is_refused(volume, axis, period, message):
    with pytest.raises(TransMRSRError, match=message):
        stripe_index(volume, axis, period)


def test_ratio():
    assert stripe_ratio(0.02, 0.01) == 2.0
    assert stripe_ratio(0.0, 0.0) == 1.0
    assert stripe_ratio(0.01, 0.0) == float("inf")


# ----------------------------------------------------------------------------- removal


@pytest.mark.parametrize(("axis", "period"), [(2, 4), (2, 8), (0, 6), (1, 5.5)])
def test_removing_the_pattern_takes_the_stripes_out_and_keeps_the_anatomy(axis, period):
    head = textured_head()
    mask = head > 0
    striped = with_stripes(head, axis, period, amplitude=3.0)
    pattern = slab_pattern(striped, axis, period, mask=mask)
    cleaned = striped - pattern
    stripe_error = np.abs(striped - head)[mask].mean()
    # Most of the stripes go (the rest is anatomy that happened to repeat, and the head's
    # edges, where fewer voxels estimate the pattern) ...
    assert np.abs(cleaned - head)[mask].mean() < 0.3 * stripe_error
    assert stripe_index(cleaned, axis, period, mask=mask) < 1.5 * stripe_index(
        head, axis, period, mask=mask
    )
    # ... and a head without stripes loses far less than the stripes were.
    assert np.abs(slab_pattern(head, axis, period, mask=mask))[mask].mean() < 0.3 * stripe_error
    # Nothing moves outside the mask, and the level of each slab stays.
    assert not pattern[~mask].any()
    assert abs(pattern[mask].mean()) < 0.01 * stripe_error


def test_stripes_that_change_across_the_head_are_removed_where_they_are():
    head = textured_head()
    mask = head > 0
    left = with_stripes(head, 2, 4, 3.0)
    right = with_stripes(head, 2, 4, 3.0, phase=np.pi)
    mixed = np.concatenate([left[:24], right[24:]], axis=0)
    cleaned = mixed - slab_pattern(mixed, 2, 4, mask=mask)
    error = np.abs(cleaned - head)
    # Away from the boundary between the halves, as clean as with stripes of one phase.
    assert error[:16][mask[:16]].mean() < 0.3 * np.abs(mixed - head)[mask].mean()
    assert error[32:][mask[32:]].mean() < 0.3 * np.abs(mixed - head)[mask].mean()


@pytest.mark.parametrize(
    ("volume", "axis", "period", "message"),
    [
        (np.ones((8, 8)), 0, 4, "3-D"),
        (np.ones((8, 8, 8)), 3, 4, "thick axis"),
        (np.ones((8, 8, 8)), 0, 1.5, "at least 2"),
        (np.ones((8, 8, 16)), 2, float("nan"), "at least 2"),
    ],
)
def test_pattern_of_bad_input_is_refused(volume, axis, period, message):
    with pytest.raises(TransMRSRError, match=message):
        slab_pattern(volume, axis, period)
    with pytest.raises(TransMRSRError, match="mask shape"):
        slab_pattern(np.ones((8, 8, 16)), 2, 4, mask=np.ones((8, 8, 8), bool))
    assert not slab_pattern(np.zeros((8, 8, 16)), 2, 4).any()  # nothing to remove


# ----------------------------------------------------------------------------- in the tool


def test_restore_measures_its_output_and_cubic(tiny_model_file, caplog):
    hr = phantom((32, 36, 40))
    lr, affine = degrade(hr, oriented_affine("LAS"), 2, 4)
    with caplog.at_level(logging.INFO, logger="transmrsr"):
        result = restore_volume(Volume(data=lr, affine=affine), load_model(tiny_model_file))
    assert result.stripe_index is not None and result.cubic_stripe_index is not None
    cubic, _ = upsample(lr, affine, 2, 4.0, "cubic")
    assert result.cubic_stripe_index == pytest.approx(
        stripe_index(cubic, 2, 4.0, mask=head_mask(cubic))
    )
    assert "slab-stripe index" in caplog.text
    assert "repeats once per slab" in caplog.text


def test_restore_removes_the_slab_pattern_only_when_asked(tiny_model_file):
    hr = phantom((32, 36, 40))
    lr, affine = degrade(hr, oriented_affine("LAS"), 2, 4)
    model = load_model(tiny_model_file)
    volume = Volume(data=lr, affine=affine)
    kept = restore_volume(volume, model, destripe=False, consistency=False)
    removed = restore_volume(volume, model, consistency=False)
    cubic, _ = upsample(lr, affine, 2, 4.0, "cubic")
    expected = kept.volume.data - slab_pattern(kept.volume.data, 2, 4.0, mask=head_mask(cubic))
    # The same up to the clipping to the input's range, which comes last in restore.
    low, high = lr.min(), lr.max()
    difference = np.abs(removed.volume.data - np.clip(expected, low, high))
    assert difference.max() < 0.01 * (high - low)
    assert not np.array_equal(removed.volume.data, kept.volume.data)


def test_restore_warns_when_its_output_is_striped(caplog):
    with caplog.at_level(logging.INFO, logger="transmrsr"):
        report_stripes(1.10, 1.00)
    assert "slab-stripe index 1.10" in caplog.text and "WARNING" not in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="transmrsr"):
        report_stripes(2.00, 1.00)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "2.00 times" in warnings[0].getMessage()


def test_evaluate_reports_the_index_of_prediction_reference_and_cubic(tmp_path, capsys):
    hr = textured_head()
    affine = oriented_affine("RAS")
    lr, lr_affine = degrade(hr, affine, 2, 4)
    striped = with_stripes(hr, 2, 4, 3.0)
    result = transmrsr.evaluate(
        striped, hr, affine=affine, thick_input=nib.Nifti1Image(lr, lr_affine)
    )
    assert 0.6 < result["stripe_index_reference"] < 1.6
    assert result["stripe_index"] > 2.5 * result["stripe_index_reference"]
    assert result["stripe_index_cubic"] < 0.5 * result["stripe_index"]
    # The command prints the same numbers.
    for name, data, aff in (
        ("pred", striped, affine),
        ("ref", hr, affine),
        ("thick", lr, lr_affine),
    ):
        nib.save(nib.Nifti1Image(data.astype(np.float32), aff), tmp_path / f"{name}.nii.gz")
    args = [str(tmp_path / n) for n in ("pred.nii.gz", "ref.nii.gz")]
    assert main(["evaluate", *args, "--input", str(tmp_path / "thick.nii.gz")]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith("slab-stripe index: prediction") and "cubic" in line
    assert f"{result['stripe_index']:.4f}" in line
    # Without the thick input, --factor and --thick-axis give prediction and reference only.
    assert main(["evaluate", *args, "--factor", "4", "--thick-axis", "SI", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["stripe_index"] == pytest.approx(result["stripe_index"])
    assert printed["stripe_index_cubic"] is None
    assert main(["evaluate", *args, "--factor", "4"]) == 2
    assert "thick axis" in capsys.readouterr().err
