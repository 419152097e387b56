"""Image-quality metrics, checked against scikit-image and against hand computations.

The SSIM cross-checks use scikit-image's Gaussian SSIM with population covariance, which is the
definition of Wang et al. (2004) that the paper protocol names; a kernel, border or covariance
mistake moves SSIM by 1e-4 or more, far above the tolerances asserted here.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage
from skimage.metrics import normalized_root_mse, peak_signal_noise_ratio, structural_similarity

from transmrsr.errors import TransMRSRError
from transmrsr.evaluation.metrics import (
    PSNR_CAP_DB,
    auto_brain_mask,
    cap_psnr,
    masked_volume_metrics,
    noise_sigma,
    paper_protocol,
    psnr,
    psnr_batch,
    ssim3d,
    ssim_batch,
    to_8bit_scale,
)

SK = {"gaussian_weights": True, "sigma": 1.5, "use_sample_covariance": False, "data_range": 255}
#: Agreement required with scikit-image (the brief asks for 1e-5; float64 gives ~1e-15).
TOL = 1e-9


def sk_ssim(a: np.ndarray, b: np.ndarray, **kw):
    return structural_similarity(a, b, **SK, **kw)


@pytest.fixture(scope="module")
def mni() -> np.ndarray:
    """The MNI152 T1 template (197 x 233 x 189, skull-stripped) on a 0..255 scale."""
    from nilearn.datasets import load_mni152_template

    data = np.asarray(load_mni152_template(resolution=1).dataobj, dtype=np.float64)
    return data / data.max() * 255.0


@pytest.fixture(scope="module")
def mni_degraded(mni) -> dict[str, np.ndarray]:
    """Realistic predictions: noisy, blurred, and blurred-plus-noisy copies of the template."""
    rng = np.random.default_rng(7)
    noise = rng.normal(0.0, 6.0, mni.shape)
    blur = ndimage.gaussian_filter(mni, (1.2, 0.0, 1.2))
    return {
        "noise": np.clip(mni + noise, 0, 255),
        "blur": blur,
        "blur+noise": np.clip(blur + 0.5 * noise, 0, 255),
    }


# ----------------------------------------------------------------------------- SSIM vs skimage


def test_ssim_batch_matches_skimage_on_random_images():
    rng = np.random.default_rng(0)
    a = rng.uniform(0, 255, (4, 37, 52))
    b = np.clip(a + rng.normal(0, 25, a.shape), 0, 255)
    b[1] = rng.uniform(0, 255, a.shape[1:])  # an unrelated image: SSIM near 0
    ours = ssim_batch(a, b, data_range=255)
    expected = [sk_ssim(a[i], b[i]) for i in range(4)]
    assert isinstance(ours, torch.Tensor) and ours.shape == (4,)
    assert np.abs(ours.numpy() - expected).max() < TOL
    assert abs(expected[1]) < 0.05 and expected[0] < 0.99


@settings(max_examples=20, deadline=None)
@given(
    h=st.integers(11, 30),
    w=st.integers(11, 30),
    noise=st.floats(0.0, 80.0),
    offset=st.floats(-40.0, 40.0),
    seed=st.integers(0, 2**16),
)
def test_ssim_matches_skimage_on_any_size(h, w, noise, offset, seed):
    rng = np.random.default_rng(seed)
    a = ndimage.gaussian_filter(rng.uniform(0, 255, (h, w)), 1.0)
    b = a + offset + rng.normal(0, noise + 1e-3, a.shape)
    ours = ssim_batch(a, b, data_range=255)
    assert ours.ndim == 0
    assert abs(float(ours) - sk_ssim(a, b)) < TOL


@pytest.mark.parametrize("kind", ["noise", "blur", "blur+noise"])
@pytest.mark.parametrize("axis", [0, 1, 2])
def test_ssim_matches_skimage_on_mni_slices(mni, mni_degraded, kind, axis):
    idx = np.linspace(40, mni.shape[axis] - 40, 4).astype(int)
    ref = np.moveaxis(np.take(mni, idx, axis=axis), axis, 0)
    pred = np.moveaxis(np.take(mni_degraded[kind], idx, axis=axis), axis, 0)
    ours = ssim_batch(pred, ref, data_range=255).numpy()
    expected = np.array([sk_ssim(pred[i], ref[i]) for i in range(len(idx))])
    assert np.abs(ours - expected).max() < TOL
    assert expected.min() > 0.3 and expected.max() < 0.999  # a real, imperfect comparison


def test_ssim_maps_match_skimage_full_map(mni, mni_degraded):
    ref = mni[:, 120, :]
    pred = mni_degraded["blur+noise"][:, 120, :]
    _, full = sk_ssim(pred, ref, full=True)
    _, same = ssim_batch(pred, ref, data_range=255, border="same", return_map=True)
    _, valid = ssim_batch(pred, ref, data_range=255, return_map=True)
    assert same.shape == ref.shape and valid.shape == (ref.shape[0] - 10, ref.shape[1] - 10)
    assert np.abs(same.numpy() - full).max() < TOL
    assert np.abs(valid.numpy() - full[5:-5, 5:-5]).max() < TOL


@pytest.mark.parametrize("kind", ["noise", "blur+noise"])
def test_ssim3d_matches_skimage(mni, mni_degraded, kind):
    ref = mni[70:118, 90:146, 60:104]
    pred = mni_degraded[kind][70:118, 90:146, 60:104]
    expected, full = sk_ssim(pred, ref, full=True)
    ours, valid = ssim3d(pred, ref, data_range=255, return_map=True)
    _, same = ssim3d(pred, ref, data_range=255, border="same", return_map=True)
    assert abs(float(ours) - expected) < TOL
    assert np.abs(valid.numpy() - full[5:-5, 5:-5, 5:-5]).max() < TOL
    assert np.abs(same.numpy() - full).max() < TOL


def test_ssim3d_small_volume_same_border_matches_skimage():
    """Slabs and reflection indices also work when an axis is shorter than the window."""
    rng = np.random.default_rng(3)
    a = rng.uniform(0, 255, (23, 12, 4))
    b = np.clip(a + rng.normal(0, 30, a.shape), 0, 255)
    ours, same = ssim3d(a, b, data_range=255, border="same", return_map=True)
    ref_map = _skimage_full_map_any_size(a, b)
    assert np.abs(same.numpy() - ref_map).max() < TOL
    assert float(ours) == pytest.approx(ref_map.mean(), abs=TOL)


def _skimage_full_map_any_size(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """scikit-image's SSIM map formula with scipy filtering (works below the window size)."""

    def f(x):
        return ndimage.gaussian_filter(x, 1.5, truncate=3.5, mode="reflect")

    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    ux, uy = f(a), f(b)
    vx, vy, vxy = f(a * a) - ux * ux, f(b * b) - uy * uy, f(a * b) - ux * uy
    return ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux**2 + uy**2 + c1) * (vx + vy + c2))


def test_ssim_torch_input_and_float32():
    rng = np.random.default_rng(1)
    a = rng.uniform(0, 255, (2, 40, 40)).astype(np.float32)
    b = np.clip(a + rng.normal(0, 10, a.shape), 0, 255).astype(np.float32)
    expected = np.array([sk_ssim(b[i].astype(float), a[i].astype(float)) for i in range(2)])
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    out64 = ssim_batch(tb, ta, data_range=255)
    assert isinstance(out64, torch.Tensor) and out64.dtype == torch.float64
    assert np.abs(out64.numpy() - expected).max() < TOL
    out32 = ssim_batch(tb, ta, data_range=255, dtype=torch.float32)
    assert out32.dtype == torch.float32
    # float32 cancellation in E[x^2] - E[x]^2: about 1e-7 here, documented as ~1e-6 on a mean.
    assert 0 < np.abs(out32.numpy() - expected).max() < 1e-5


def test_ssim_data_range_matters():
    rng = np.random.default_rng(2)
    a = rng.uniform(0, 1, (30, 30))
    b = np.clip(a + rng.normal(0, 0.1, a.shape), 0, 1)
    ours = float(ssim_batch(a, b, data_range=1.0))
    assert ours == pytest.approx(structural_similarity(a, b, **{**SK, "data_range": 1.0}), abs=TOL)
    assert ours != pytest.approx(float(ssim_batch(a, b, data_range=255)), abs=1e-3)


# ----------------------------------------------------------------------------- PSNR


def test_psnr_matches_skimage(mni, mni_degraded):
    for kind, pred in mni_degraded.items():
        assert psnr(pred, mni, 255) == pytest.approx(
            peak_signal_noise_ratio(mni, pred, data_range=255), abs=1e-10
        ), kind


def test_psnr_batch_per_image_and_inf_for_identical():
    rng = np.random.default_rng(4)
    a = rng.uniform(0, 255, (3, 16, 16))
    b = a.copy()
    b[0] += 5.0  # MSE 25
    b[2] += rng.normal(0, 3, (16, 16))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no divide-by-zero warning for the perfect image
        values = psnr_batch(b, a, 255).numpy()
        assert psnr(a, a, 255) == math.inf
    assert values[0] == pytest.approx(10 * math.log10(255**2 / 25.0), abs=1e-12)
    assert values[1] == math.inf
    assert values[2] == pytest.approx(peak_signal_noise_ratio(a[2], b[2], data_range=255))
    capped = cap_psnr(values)
    assert capped[1] == PSNR_CAP_DB and capped[0] == values[0]
    assert np.isfinite(capped.mean())


# ----------------------------------------------------------------------------- 8-bit scale


def test_to_8bit_scale_uses_reference_range_and_does_not_round():
    ref = np.array([[[100.0, 150.0], [200.0, 300.0]]])
    pred = np.array([[[50.0, 151.0], [200.0, 400.0]]])
    p8, r8 = to_8bit_scale(pred, ref)
    assert isinstance(p8, np.ndarray) and p8.dtype == np.float64
    np.testing.assert_allclose(r8.ravel(), [0.0, 63.75, 127.5, 255.0])
    np.testing.assert_allclose(p8.ravel(), [0.0, 65.025, 127.5, 255.0])  # clipped both ends
    p8, r8 = to_8bit_scale(torch.tensor(pred), torch.tensor(ref), ref_range=(0.0, 400.0))
    assert isinstance(p8, torch.Tensor)
    np.testing.assert_allclose(r8.numpy().ravel(), [63.75, 95.625, 127.5, 191.25])
    np.testing.assert_allclose(p8.numpy().ravel(), [31.875, 96.2625, 127.5, 255.0])


def test_integer_and_big_endian_inputs_are_accepted(mni):
    """nibabel returns big-endian or integer arrays for some files; torch cannot wrap those."""
    ref = np.round(mni[::4, ::4, ::4] * 10).astype(np.uint16)
    pred = (ref.astype(np.float64) + 7.0).astype(">f4")
    result = paper_protocol(pred, ref, slice_axis=0, pad_to=64)
    expected = paper_protocol(
        pred.astype(np.float64), ref.astype(np.float64), slice_axis=0, pad_to=64
    )
    assert result.psnr == expected.psnr and result.ssim == expected.ssim
    assert masked_volume_metrics(pred, ref, ref.astype(np.int16)).n_voxels == np.count_nonzero(ref)


# ----------------------------------------------------------------------------- paper protocol


def _pad(slices: np.ndarray, size: int) -> np.ndarray:
    _, a, b = slices.shape
    pa, pb = max(size - a, 0), max(size - b, 0)
    return np.pad(slices, ((0, 0), (pa // 2, pa - pa // 2), (pb // 2, pb - pb // 2)))


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_paper_protocol_matches_hand_computation(mni, mni_degraded, axis):
    ref = mni[::3, ::3, ::3] * 4.0 + 100.0  # not on the 8-bit scale yet
    pred = mni_degraded["blur+noise"][::3, ::3, ::3] * 4.0 + 100.0
    result = paper_protocol(pred, ref, slice_axis=axis, pad_to=100)
    lo, hi = ref.min(), ref.max()
    r8 = np.moveaxis((ref - lo) / (hi - lo) * 255, axis, 0)
    p8 = np.moveaxis(np.clip((pred - lo) / (hi - lo) * 255, 0, 255), axis, 0)
    keep = np.flatnonzero(r8.reshape(len(r8), -1).max(axis=1) > 1.0)
    assert 0 < len(keep) < len(r8)  # the template has empty border slices on every axis
    rs, ps = _pad(r8[keep], 100), _pad(p8[keep], 100)
    ssim_hand = np.array([sk_ssim(ps[i], rs[i]) for i in range(len(keep))])
    psnr_hand = np.array(
        [peak_signal_noise_ratio(rs[i], ps[i], data_range=255) for i in range(len(keep))]
    )
    np.testing.assert_array_equal(result.slice_indices, keep)
    assert result.n_slices == len(keep) and result.slice_axis == axis
    assert np.abs(result.ssim_per_slice - ssim_hand).max() < TOL
    np.testing.assert_allclose(result.psnr_per_slice, psnr_hand, rtol=0, atol=1e-9)
    assert result.ssim == pytest.approx(ssim_hand.mean(), abs=TOL)
    assert result.psnr == pytest.approx(psnr_hand.mean(), abs=1e-9)


def test_padding_adds_perfect_pixels(mni, mni_degraded):
    ref = mni[:, 100:140:4, :]
    pred = mni_degraded["noise"][:, 100:140:4, :]
    plain = paper_protocol(pred, ref, slice_axis=1, pad_to=1)
    padded = paper_protocol(pred, ref, slice_axis=1)  # 197 x 189 planes -> 256 x 256
    np.testing.assert_array_equal(plain.slice_indices, padded.slice_indices)
    # Same squared error over 256^2 instead of 197 x 189 pixels: an exact PSNR shift.
    shift = 10 * math.log10(256 * 256 / (197 * 189))
    np.testing.assert_allclose(padded.psnr_per_slice - plain.psnr_per_slice, shift, atol=1e-9)
    assert padded.ssim > plain.ssim + 0.02
    assert np.all(padded.ssim_per_slice > plain.ssim_per_slice)


def test_dimensions_larger_than_pad_are_kept():
    rng = np.random.default_rng(5)
    ref = rng.uniform(0, 255, (3, 20, 30))
    pred = np.clip(ref + rng.normal(0, 10, ref.shape), 0, 255)
    result = paper_protocol(pred, ref, slice_axis=0, pad_to=24, ref_range=(0, 255))
    padded_ref, padded_pred = _pad(ref, 24), _pad(pred, 24)
    assert padded_ref.shape == (3, 24, 30)
    expected = [sk_ssim(padded_pred[i], padded_ref[i]) for i in range(3)]
    assert np.abs(result.ssim_per_slice - expected).max() < TOL


@pytest.mark.parametrize("axis", [0, 1, 2, -1])
def test_slice_count_and_empty_slices(axis):
    rng = np.random.default_rng(6)
    ref = np.zeros((20, 24, 28))
    ref[3:15, 5:20, 2:27] = rng.uniform(50, 200, (12, 15, 25))
    pred = ref + rng.normal(0, 2, ref.shape)
    result = paper_protocol(pred, ref, slice_axis=axis, pad_to=32)
    box = {0: range(3, 15), 1: range(5, 20), 2: range(2, 27)}[axis % 3]
    np.testing.assert_array_equal(result.slice_indices, list(box))
    assert len(result.psnr_per_slice) == len(result.ssim_per_slice) == len(box)


def test_empty_slice_threshold_is_one_grey_level():
    ref = np.zeros((5, 16, 16))
    ref[0, 4, 4] = 255.0  # sets the scale: 1 unit = 1 grey level
    ref[1, 8, 8] = 0.9  # not above 1 grey level: empty
    ref[2, 8, 8] = 1.0  # exactly 1: still empty
    ref[3, 8, 8] = 1.5  # kept
    result = paper_protocol(ref + 0.5, ref, slice_axis=0, pad_to=16)
    np.testing.assert_array_equal(result.slice_indices, [0, 3])
    with pytest.raises(TransMRSRError, match="empty"):
        paper_protocol(ref, ref, slice_axis=0, ref_range=(0.0, 1e6))


def test_self_comparison_is_perfect_and_mean_stays_finite(mni, mni_degraded):
    ref = mni[::3, ::3, ::3]
    same = paper_protocol(ref, ref, slice_axis=2, pad_to=96)
    assert same.ssim == pytest.approx(1.0, abs=1e-12)
    assert same.psnr == PSNR_CAP_DB and same.n_perfect == same.n_slices > 0
    assert np.all(same.psnr_per_slice == PSNR_CAP_DB)
    pred = mni_degraded["noise"][::3, ::3, ::3].copy()
    pred[:, :, 30] = ref[:, :, 30]  # one perfect slice among noisy ones
    mixed = paper_protocol(pred, ref, slice_axis=2, pad_to=96)
    assert mixed.n_perfect == 1 and math.isfinite(mixed.psnr)
    perfect = mixed.psnr_per_slice[mixed.slice_indices == 30]
    assert perfect.tolist() == [PSNR_CAP_DB]
    assert mixed.psnr == pytest.approx(mixed.psnr_per_slice.mean())
    assert mixed.psnr < 45.0


# ----------------------------------------------------------------------------- masked metrics


def test_masked_psnr_exact_for_known_error():
    rng = np.random.default_rng(8)
    ref = rng.uniform(10, 240, (24, 24, 24))
    mask = np.zeros(ref.shape, bool)
    mask[4:20, 6:18, 5:19] = True
    pred = ref.copy()
    signs = rng.choice([-1.0, 1.0], size=int(mask.sum()))
    pred[mask] += 3.0 * signs  # MSE = 9 grey levels^2 inside the mask
    pred[~mask] += rng.normal(0, 40, int((~mask).sum()))  # ignored by PSNR
    result = masked_volume_metrics(pred, ref, mask, ref_range=(0.0, 255.0))
    assert result.psnr == pytest.approx(10 * math.log10(255**2 / 9.0), abs=1e-10)
    assert result.mae == pytest.approx(3.0, abs=1e-12)
    assert result.nrmse == pytest.approx(
        normalized_root_mse(ref[mask], pred[mask], normalization="euclidean"), rel=1e-12
    )
    assert result.n_voxels == int(mask.sum()) and not result.perfect


def test_masked_ssim_is_mean_of_skimage_map_over_mask(mni, mni_degraded):
    ref = mni[60:110, 80:140, 50:100]
    pred = mni_degraded["blur+noise"][60:110, 80:140, 50:100]
    mask = ref > 60
    result = masked_volume_metrics(pred, ref, mask)
    lo, hi = ref.min(), ref.max()
    r8 = (ref - lo) / (hi - lo) * 255
    p8 = np.clip((pred - lo) / (hi - lo) * 255, 0, 255)
    _, full = sk_ssim(p8, r8, full=True)
    assert result.ssim == pytest.approx(full[mask].mean(), abs=TOL)
    assert result.psnr == pytest.approx(
        10 * math.log10(255**2 / np.mean((p8[mask] - r8[mask]) ** 2)), abs=1e-9
    )


def test_voxels_outside_mask_only_matter_within_the_ssim_window():
    rng = np.random.default_rng(9)
    ref = ndimage.gaussian_filter(rng.uniform(0, 255, (40, 40, 40)), 2.0)
    pred = ref + rng.normal(0, 3, ref.shape)
    mask = np.zeros(ref.shape, bool)
    mask[15:25, 15:25, 15:25] = True
    base = masked_volume_metrics(pred, ref, mask, ref_range=(0, 255))
    far = pred.copy()
    near_window = ndimage.binary_dilation(mask, np.ones((11, 11, 11), bool))
    far[~near_window] = rng.uniform(0, 255, int((~near_window).sum()))
    assert masked_volume_metrics(far, ref, mask, ref_range=(0, 255)) == base
    near = pred.copy()
    ring = ndimage.binary_dilation(mask, np.ones((3, 3, 3), bool)) & ~mask
    near[ring] = 0.0
    changed = masked_volume_metrics(near, ref, mask, ref_range=(0, 255))
    assert (changed.psnr, changed.mae, changed.nrmse) == (base.psnr, base.mae, base.nrmse)
    assert changed.ssim < base.ssim - 1e-3  # the window sees across the mask edge (documented)


def test_masked_self_comparison_is_perfect(mni):
    ref = mni[50:90, 60:100, 40:80]
    result = masked_volume_metrics(ref, ref, ref > 30)
    assert result.perfect and result.psnr == PSNR_CAP_DB
    assert result.ssim == pytest.approx(1.0, abs=1e-12)
    assert result.mae == 0.0 and result.nrmse == 0.0


# ----------------------------------------------------------------------------- brain mask


def test_auto_mask_of_mni_template_matches_nilearn_brain_mask(mni):
    from nilearn.datasets import load_mni152_brain_mask

    brain = np.asarray(load_mni152_brain_mask(resolution=1).dataobj) > 0
    auto = auto_brain_mask(mni)
    assert auto.dtype == bool and auto.shape == mni.shape
    dice = 2 * np.count_nonzero(auto & brain) / (np.count_nonzero(auto) + np.count_nonzero(brain))
    # Measured 0.987: the template is skull-stripped, so the foreground *is* the brain; the
    # residual disagreement is the 1-voxel rim where nilearn thresholds the unsmoothed template.
    assert dice > 0.97
    assert 0.19 < auto.mean() < 0.24  # brain volume fraction of the 197x233x189 box: 0.217


def test_auto_mask_fills_cavities_and_drops_debris():
    rng = np.random.default_rng(10)
    zz, yy, xx = np.mgrid[:48, :48, :48]
    r = np.sqrt((zz - 24) ** 2 + (yy - 24) ** 2 + (xx - 24) ** 2)
    head = (r < 16).astype(float) * 100.0
    head[r < 5] = 5.0  # a dark "ventricle"
    head[2:5, 2:5, 2:5] = 100.0  # debris, disconnected
    head += rng.normal(0, 3, head.shape)
    mask = auto_brain_mask(head)
    assert mask[24, 24, 24] and not mask[3, 3, 3]
    assert np.count_nonzero(mask ^ (r < 16)) < 0.03 * np.count_nonzero(r < 16)


# ----------------------------------------------------------------------------- bad input


def test_bad_inputs_raise_user_errors():
    a = np.ones((12, 12, 12))
    a[0, 0, 0] = 2.0
    nan = a.copy()
    nan[3, 3, 3] = np.nan
    inf = a.copy()
    inf[1, 2, 3] = np.inf
    mask = np.ones(a.shape, bool)
    cases = [
        (lambda: paper_protocol(a, a[:-1], slice_axis=0), "shapes differ"),
        (lambda: masked_volume_metrics(a, a[:, :-1], mask), "shapes differ"),
        (lambda: ssim_batch(a, a[:, :, :-1], data_range=1), "shapes differ"),
        (lambda: psnr(a, a[:-1], 255), "shapes differ"),
        (lambda: paper_protocol(nan, a, slice_axis=0), "NaN"),
        (lambda: masked_volume_metrics(a, nan, mask), "NaN"),
        (lambda: ssim3d(inf, a, data_range=1), "NaN or infinite"),
        (lambda: masked_volume_metrics(a, a, np.zeros(a.shape, bool)), "mask is empty"),
        (lambda: masked_volume_metrics(a, a, mask[:-1]), "mask shape"),
        (lambda: paper_protocol(a, np.zeros(a.shape), slice_axis=0), "constant"),
        (lambda: to_8bit_scale(a, a, ref_range=(5, 1)), "hi > lo"),
        (lambda: paper_protocol(a, a, slice_axis=3), "slice_axis"),
        (lambda: paper_protocol(a[0], a[0], slice_axis=0), "3-D"),
        (lambda: ssim_batch(a[:, :8], a[:, :8], data_range=1), ">= 11"),
        (lambda: psnr(a, a, 0), "data_range"),
        (lambda: auto_brain_mask(np.zeros((8, 8, 8))), "constant"),
        (lambda: auto_brain_mask(nan), "NaN"),
    ]
    for call, message in cases:
        with pytest.raises(TransMRSRError, match=message):
            call()


# ----------------------------------------------------------------------------- noise


def test_noise_sigma_finds_white_noise_under_smooth_anatomy(mni):
    rng = np.random.default_rng(0)
    smooth = ndimage.gaussian_filter(mni.astype(np.float64), 2.0)
    mask = smooth > 0.3 * smooth.max()
    for sigma in (0.5, 2.0, 8.0):
        noisy = smooth + rng.normal(0.0, sigma, mni.shape)
        assert noise_sigma(noisy, mask) == pytest.approx(sigma, rel=0.05)
    # Without noise the anatomy alone reads far below the weakest noise above.
    assert noise_sigma(smooth, mask) < 0.1


def test_noise_sigma_counts_only_blocks_inside_the_mask():
    rng = np.random.default_rng(1)
    volume = np.zeros((40, 40, 40))
    volume[:20] = rng.normal(0.0, 3.0, (20, 40, 40))
    volume[20:] = rng.normal(0.0, 0.5, (20, 40, 40))
    quiet = np.zeros(volume.shape, dtype=bool)
    quiet[20:] = True
    assert noise_sigma(volume, quiet) == pytest.approx(0.5, rel=0.1)
    assert noise_sigma(volume, ~quiet) == pytest.approx(3.0, rel=0.1)
    # An edge inside the mask is detail, not noise: erosion keeps it out of the estimate.
    assert noise_sigma(volume, quiet, erode=0) > noise_sigma(volume, quiet)


def test_noise_sigma_refuses_what_it_cannot_measure():
    with pytest.raises(TransMRSRError, match="3-D"):
        noise_sigma(np.zeros((10, 10)))
    bad = np.ones((20, 20, 20))
    bad[3, 3, 3] = np.nan
    with pytest.raises(TransMRSRError, match="NaN"):
        noise_sigma(bad)
    with pytest.raises(TransMRSRError, match="mask shape"):
        noise_sigma(np.ones((20, 20, 20)), np.ones((20, 20, 21)))
    with pytest.raises(TransMRSRError, match="too few voxels"):
        noise_sigma(np.ones((20, 20, 20)), np.ones((20, 20, 20)), erode=8)
