"""benchmarks/noise_ceiling.py: the highest gain over cubic a reference's noise allows."""

from __future__ import annotations

import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import benchmark_module, oriented_affine
from scipy import ndimage

from transmrsr.degradation import degrade
from transmrsr.interpolation import upsample


@pytest.fixture(scope="module")
def bench():
    with benchmark_module("noise_ceiling") as module:
        yield module


def _noisy_head(tmp_path: Path, sigma: float) -> tuple[Path, Path, np.ndarray, np.ndarray]:
    """A smooth blob with white noise of ``sigma``, and its mask, written as NIfTI (RAS)."""
    rng = np.random.default_rng(0)
    grid = np.indices((48, 48, 48), dtype=np.float64) - 23.5
    clean = 100.0 * np.exp(-(grid**2).sum(axis=0) / (2 * 12.0**2))
    clean = ndimage.gaussian_filter(clean + 20.0 * (np.sin(grid[2] / 2.0) > 0), 1.0)
    data = clean + rng.normal(0.0, sigma, clean.shape)
    mask = clean > 30.0
    affine = oriented_affine("RAS")
    volume, mask_path = tmp_path / "head.nii.gz", tmp_path / "mask.nii.gz"
    nib.save(nib.Nifti1Image(data.astype(np.float32), affine), volume)
    nib.save(nib.Nifti1Image(mask.astype(np.uint8), affine), mask_path)
    return volume, mask_path, data.astype(np.float32), mask


def test_ceiling_is_cubic_error_over_the_noise_variance(bench, tmp_path, capsys):
    sigma = 2.0
    volume, mask, data, inside = _noisy_head(tmp_path, sigma)
    assert bench.main(["--volume", str(volume), str(mask), "--factors", "4"]) == 0
    row = capsys.readouterr().out.strip().splitlines()[-1].split("|")
    # By hand: cubic's masked squared error over the true noise variance.
    axis = 2  # SI of a RAS volume
    thick, thick_affine = degrade(data, oriented_affine("RAS"), axis, 4)
    cubic, _ = upsample(thick, thick_affine, axis, 4, "cubic")
    n = min(cubic.shape[axis], data.shape[axis])
    error = (cubic[..., :n] - data[..., :n])[inside[..., :n]]
    expected = float(np.mean(error.astype(np.float64) ** 2)) / sigma**2
    assert float(row[4]) == pytest.approx(expected, rel=0.1)
    assert float(row[5].split()[0]) == pytest.approx(10 * math.log10(expected), abs=0.5)


def test_a_mask_of_another_grid_fails_in_one_line(bench, tmp_path, caplog):
    volume, _, _, _ = _noisy_head(tmp_path, 1.0)
    other = tmp_path / "other.nii.gz"
    small = np.zeros((10, 10, 10), np.uint8)
    small[2:8, 2:8, 2:8] = 1
    nib.save(nib.Nifti1Image(small, oriented_affine("RAS")), other)
    assert bench.main(["--volume", str(volume), str(other)]) == 2
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "the mask's shape" in errors[0]
