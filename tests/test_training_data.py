"""Training data: names, subject splits, tar archives, on-the-fly pairs."""

from __future__ import annotations

import gzip
import io
import json
import tarfile
from dataclasses import replace

import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import oriented_affine, phantom

from transmrsr.degradation import simulate_interpolated_lr
from transmrsr.errors import TransMRSRError
from transmrsr.pairs import PairConfig, add_rician_noise, warp_plane
from transmrsr.training.config import SR_PRESETS, config_from_dict, with_overrides
from transmrsr.training.data import (
    PairDataset,
    Split,
    VolumeRecord,
    discover_volumes,
    parse_name,
    read_record,
    split_subjects,
)


@pytest.mark.parametrize(
    ("name", "contrast", "expected"),
    [
        ("IXI002-Guys-0828-T1.nii.gz", None, ("IXI002", "T1")),
        ("IXI012-HH-1211-T2.nii.gz", None, ("IXI012", "T2")),
        ("sub-07_ses-1_T1w.nii.gz", None, ("sub-07", "T1")),
        ("flair.nii.gz", None, ("flair", "FLAIR")),
        ("colin27_t1.nii.gz", None, ("colin27_t1", "T1")),
        ("brain.mgz", "t2", ("brain", "T2")),
    ],
)
def test_names_give_subject_and_contrast(name, contrast, expected):
    assert parse_name(name, contrast) == expected


def test_unknown_contrast_asks_for_the_flag():
    with pytest.raises(TransMRSRError, match="--contrast"):
        parse_name("brain.nii.gz")


def test_a_bids_tree_gives_its_anatomical_images_only(tmp_path):
    # Sessions, other datatypes and derivatives, as a BIDS dataset has them: only the T1w,
    # T2w and FLAIR images are training volumes, and a subject's sessions stay one subject.
    payload = _nifti_bytes(phantom((8, 8, 6)), oriented_affine("LAS"))
    files = [
        "sub-01/ses-1/anat/sub-01_ses-1_T1w.nii.gz",
        "sub-01/ses-2/anat/sub-01_ses-2_acq-mprage_T1w.nii.gz",
        "sub-01/ses-1/func/sub-01_ses-1_task-rest_bold.nii.gz",
        "sub-02/anat/sub-02_T2w.nii.gz",
        "sub-02/anat/sub-02_FLAIR.nii.gz",
        "sub-02/dwi/sub-02_dwi.nii.gz",
        "derivatives/fmriprep/sub-01/anat/sub-01_desc-preproc_T1w.nii.gz",
        "derivatives/masks/sub-02_desc-brain_mask.nii.gz",
        "sourcedata/sub-03_T1w.nii.gz",
        ".git/annex/sub-04_T1w.nii.gz",
    ]
    for name in files:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(payload)
    (tmp_path / "participants.tsv").write_text("participant_id\nsub-01\nsub-02\n")
    records = discover_volumes([tmp_path])
    assert [(r.subject, r.contrast, r.name) for r in records] == [
        ("sub-01", "T1", "sub-01_ses-1_T1w.nii.gz"),
        ("sub-01", "T1", "sub-01_ses-2_acq-mprage_T1w.nii.gz"),
        ("sub-02", "FLAIR", "sub-02_FLAIR.nii.gz"),
        ("sub-02", "T2", "sub-02_T2w.nii.gz"),
    ]
    # A derivatives folder given itself is searched: its preprocessed T1w counts.
    derived = discover_volumes([tmp_path / "derivatives" / "fmriprep"])
    assert [(r.subject, r.contrast) for r in derived] == [("sub-01", "T1")]
    split = split_subjects(records, val=1, test=0, seed=0)
    assert sorted(split.train + split.val) == ["sub-01", "sub-02"]


def _nifti_bytes(data, affine) -> bytes:
    image = nib.Nifti1Image(data, affine)
    return gzip.compress(image.to_bytes())


def test_folder_and_ixi_tar_are_discovered_and_read(tmp_path):
    affine = oriented_affine("PSR")
    data = phantom((12, 14, 10))
    folder = tmp_path / "plain"
    folder.mkdir()
    (folder / "IXI002-Guys-0828-T1.nii.gz").write_bytes(_nifti_bytes(data, affine))
    (folder / "notes.txt").write_text("ignored")
    archive = tmp_path / "IXI-T2.tar"
    with tarfile.open(archive, "w") as tar:
        for name in ("IXI002-Guys-0828-T2.nii.gz", "IXI013-HH-1212-T2.nii.gz"):
            payload = _nifti_bytes(data * 2, affine)
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    records = discover_volumes([folder, archive])
    assert [(r.subject, r.contrast) for r in records] == [
        ("IXI002", "T1"),
        ("IXI002", "T2"),
        ("IXI013", "T2"),
    ]
    volume = read_record(records[2])
    np.testing.assert_allclose(volume.data, data * 2)
    np.testing.assert_allclose(volume.affine, affine, atol=1e-5)
    with pytest.raises(TransMRSRError, match="no NIfTI"):
        discover_volumes([tmp_path / "plain" / "notes.txt"])


def test_split_is_by_subject_deterministic_and_saved(tmp_path):
    records = [
        VolumeRecord(f"/x/IXI{i:03d}-{c}.nii.gz", f"IXI{i:03d}", c)
        for i in range(40)
        for c in ("T1", "T2")
    ]
    split = split_subjects(records, val=5, test=10, seed=3)
    assert (len(split.train), len(split.val), len(split.test)) == (25, 5, 10)
    assert not set(split.train) & set(split.val) and not set(split.train) & set(split.test)
    assert split_subjects(records, val=5, test=10, seed=3) == split
    assert split_subjects(records, val=5, test=10, seed=4) != split
    split.save(tmp_path / "split.json")
    assert Split.load(tmp_path / "split.json") == split
    with pytest.raises(TransMRSRError, match="leave one for training"):
        split_subjects(records[:4], val=1, test=1)


def test_pairs_are_degraded_along_the_rows_and_reproducible():
    affine = oriented_affine("LIA")
    volume = phantom((40, 36, 44)) / 160.0
    config = PairConfig(factor_range=(2.0, 6.0), thick_axis="SI", patch_size=32)
    dataset = PairDataset([volume], [affine], config, seed=1)
    assert len(dataset) > 40
    lr, hr, factor = dataset[5]
    assert lr.shape == hr.shape == (1, 32, 32) and lr.dtype == torch.float32
    assert 2.0 <= factor <= 6.0
    again = dataset[5]
    assert torch.equal(again[0], lr) and again[2] == factor
    dataset.set_epoch(1)
    assert dataset[5][2] != factor
    # Without augmentation the rows (thick axis) are blurred, the columns are not.
    plain = PairDataset([volume], [affine], PairConfig((4.0, 4.0), "SI", 32, augment=False))
    lr, hr, _ = plain[10]
    row_error = (lr - hr)[0].abs().mean().item()
    assert row_error > 0
    rough_rows = torch.diff(hr[0], dim=0).abs().mean() - torch.diff(lr[0], dim=0).abs().mean()
    rough_cols = torch.diff(hr[0], dim=1).abs().mean() - torch.diff(lr[0], dim=1).abs().mean()
    assert rough_rows > 1.5 * abs(rough_cols)


def _dihedral(a: torch.Tensor) -> dict[tuple[bool, tuple[int, ...]], torch.Tensor]:
    """The 8 flips/transposes of a 2-D tensor, keyed by (transposed, flipped dims)."""
    return {
        (t, dims): (a.T if t else a).flip(dims)
        for t in (False, True)
        for dims in ((), (0,), (1,), (0, 1))
    }


def test_flip_only_augmentation_keeps_the_thick_axis_on_the_rows():
    """With ``transpose`` off every augmented pair is a flip of the plain pair, so its thick
    axis stays on the rows (as restoration feeds planes); with it on (the SPEC's default)
    some pairs are transposed, their thick axis along the columns."""
    volume = phantom((40, 36, 44)) / 160.0
    affine = oriented_affine("LIA")
    plain = PairDataset([volume], [affine], PairConfig(augment=False), seed=3)

    def transposed(**options) -> list[bool]:
        augmented = PairDataset([volume], [affine], PairConfig(**options), seed=3)
        found = []
        for i in range(0, len(plain), 2):
            lr, hr = plain[i][0][0], plain[i][1][0]
            lr_aug, hr_aug = augmented[i][0][0], augmented[i][1][0]
            hr_views = _dihedral(hr)
            match = [
                key
                for key, view in _dihedral(lr).items()
                if torch.equal(view, lr_aug) and torch.equal(hr_views[key], hr_aug)
            ]
            assert match, f"pair {i} is not a flip or transpose of the plain pair"
            found.append(match[0][0])
        return found

    flips = transposed(transpose=False)
    assert len(flips) > 20 and not any(flips)
    assert 0.2 < np.mean(transposed()) < 0.8


def test_all_thick_axes_adds_the_planes_of_the_other_two_thick_axes_with_rows_thick():
    volume = phantom((40, 36, 44)) / 160.0
    affine = oriented_affine("LIA")  # array axes: LR, SI, AP
    config = PairConfig(factor_range=(4.0, 4.0), patch_size=64, augment=False)
    every = PairDataset([volume], [affine], replace(config, all_thick_axes=True))
    single = [
        PairDataset([volume], [affine], replace(config, thick_axis=a)) for a in ("LR", "SI", "AP")
    ]
    assert len(every) == sum(len(d) for d in single)
    expected = [d.plane(i) for d in single for i in range(len(d))]
    for i in range(0, len(every), 7):
        np.testing.assert_array_equal(every.plane(i), expected[i])
    # Each plane is degraded along its rows, whichever axis they are (the 64-pixel patch
    # holds the whole padded plane, so the pair is exactly that plane and its degradation).
    offsets = np.cumsum([0] + [len(d) for d in single[:-1]])
    for i in offsets + np.array([len(d) // 2 for d in single]):
        lr, hr, _ = every[int(i)]
        along_rows = simulate_interpolated_lr(hr[0].numpy(), 0, 4.0, method="cubic")
        np.testing.assert_allclose(lr[0].numpy(), along_rows, atol=1e-6)
        along_cols = simulate_interpolated_lr(hr[0].numpy(), 1, 4.0, method="cubic")
        assert np.abs(lr[0].numpy() - along_cols).max() > 0.05


def test_rician_noise_has_the_magnitude_image_statistics():
    rng = np.random.default_rng(0)
    sigma = 0.05
    background = add_rician_noise(np.zeros((200, 200)), sigma, rng)
    tissue = add_rician_noise(np.full((200, 200), 0.8), sigma, rng)
    assert background.dtype == np.float32 and background.min() >= 0
    # Rayleigh in the background: mean sigma * sqrt(pi / 2); near-Gaussian in bright tissue.
    assert background.mean() == pytest.approx(sigma * np.sqrt(np.pi / 2), rel=0.02)
    assert tissue.mean() == pytest.approx(0.8, abs=0.002)
    assert tissue.std() == pytest.approx(sigma, rel=0.03)


def test_noise_augmentation_adds_thin_slice_noise_to_the_target_and_averaged_noise_to_the_input():
    volume = phantom((40, 36, 44)) / 160.0
    affine = oriented_affine("LIA")
    clean = PairDataset([volume], [affine], PairConfig((4.0, 4.0), "SI", 32, augment=False))
    noisy = PairDataset(
        [volume],
        [affine],
        PairConfig((4.0, 4.0), "SI", 32, augment=False, noise_range=(0.04, 0.04)),
    )
    off = PairDataset(
        [volume], [affine], PairConfig((4.0, 4.0), "SI", 32, augment=False, noise_range=(0, 0))
    )
    hr_noise, lr_noise = [], []
    for i in range(0, len(clean), 3):
        lr, hr, _ = clean[i]
        assert torch.equal(off[i][0], lr) and torch.equal(off[i][1], hr)
        lr_n, hr_n, _ = noisy[i]
        hr_noise.append((hr_n - hr).std().item())
        lr_noise.append((lr_n - lr).std().item())
    # Tissue and background noise of the HR plane are about sigma (Rician bias included) ...
    assert 0.025 < np.median(hr_noise) < 0.06
    # ... and the thick slices average it down: the input is much less noisy than the target.
    assert np.median(lr_noise) < 0.7 * np.median(hr_noise)
    assert noisy[4][1].min() >= 0


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("noise_range", (-0.01, 0.02)),
        ("noise_range", (0.03, 0.01)),
        ("noise_range", (0.0, 0.9)),
        ("gain_range", (0.0, 1.0)),
        ("gain_range", (1.5, 1.2)),
        ("gain_range", (0.5, 8.0)),
        ("zoom_range", (1.0, 1.2)),
        ("zoom_range", (0.3, 1.0)),
        ("zoom_range", (0.9, 0.8)),
        ("rotate_degrees", -5.0),
        ("rotate_degrees", 200.0),
    ],
)
def test_impossible_noise_gain_and_warp_ranges_are_refused(field, value):
    with pytest.raises(TransMRSRError, match=field.replace("_", " ")):
        PairConfig(**{field: value})


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("noise_range", (0.0, 0.03)),
        ("gain_range", (0.8, 1.25)),
        ("zoom_range", (0.8, 1.0)),
        ("rotate_degrees", 15.0),
    ],
)
def test_augmentation_ranges_survive_a_json_round_trip(field, value):
    tiny = SR_PRESETS["tiny"]
    config = with_overrides(tiny, pairs=replace(tiny.pairs, **{field: value}))
    again = config_from_dict(json.loads(json.dumps(config.to_dict())))
    assert getattr(again.pairs, field) == value and again == config


def test_gain_augmentation_scales_input_and_target_alike_within_its_range():
    volume = phantom((40, 36, 44)) / 160.0
    affine = oriented_affine("LIA")
    base = PairConfig((4.0, 4.0), "SI", 32, augment=False)
    plain = PairDataset([volume], [affine], base)
    gained = PairDataset([volume], [affine], replace(base, gain_range=(0.5, 2.0)))
    gains = []
    for i in range(0, len(plain), 2):
        lr, hr, _ = plain[i]
        lr_g, hr_g, _ = gained[i]
        if hr.abs().max() < 0.05:
            continue
        g = (hr_g.abs().max() / hr.abs().max()).item()
        # One gain for the whole pair: the degradation is linear, so the input scales with it.
        torch.testing.assert_close(hr_g, g * hr, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(lr_g, g * lr, rtol=1e-4, atol=1e-4)
        gains.append(g)
    assert min(gains) >= 0.5 - 1e-4 and max(gains) <= 2.0 + 1e-4
    # Log-uniform: about as many gains below 1 as above, and a real spread.
    assert 0.25 < np.mean(np.array(gains) < 1.0) < 0.75
    assert max(gains) / min(gains) > 2.0


def test_unit_gain_leaves_the_pairs_unchanged():
    volume = phantom((40, 36, 44)) / 160.0
    affine = oriented_affine("RAS")
    base = PairConfig((2.0, 6.0), "SI", 32)
    a = PairDataset([volume], [affine], base)
    b = PairDataset([volume], [affine], replace(base, gain_range=(1.0, 1.0)))
    for i in range(0, len(a), 5):
        assert all(torch.equal(x, y) for x, y in zip(a[i][:2], b[i][:2], strict=True))


def test_warp_plane_turns_and_shrinks_about_the_centre():
    plane = np.zeros((33, 33), np.float32)
    plane[8:14, 16:25] = 1.0  # an off-centre bar: a turn moves it to another quadrant
    np.testing.assert_allclose(warp_plane(plane, 0.0, 1.0), plane, atol=1e-6)
    quarter = [warp_plane(plane, 90.0, 1.0), warp_plane(plane, -90.0, 1.0)]
    turned = [np.rot90(plane, 1), np.rot90(plane, -1)]
    # +90 and -90 are the two quarter turns, one each, exactly (the grid maps onto itself).
    assert any(np.allclose(quarter[0], t, atol=1e-5) for t in turned)
    assert any(np.allclose(quarter[1], t, atol=1e-5) for t in turned)
    assert not np.allclose(quarter[0], quarter[1], atol=1e-2)
    y, x = np.mgrid[:65, :65] - 32.0
    disc = (np.hypot(y, x) <= 20).astype(np.float32)
    half = warp_plane(disc, 0.0, 0.5)
    # Zoom 0.5: the radius halves, so the area falls to a quarter; the centre stays put.
    assert half.sum() == pytest.approx(disc.sum() / 4, rel=0.05)
    assert half[32, 32] == pytest.approx(1.0, abs=1e-3) and half[32, 45] < 1e-3
    # No new values: spline ringing is clipped to the plane's range.
    assert half.min() >= 0.0 and half.max() <= 1.0


def test_warped_pairs_are_degradations_of_a_turned_scaled_target():
    volume = phantom((40, 36, 44)) / 160.0
    affine = oriented_affine("LAS")
    base = PairConfig((4.0, 4.0), "SI", 64, augment=False)
    plain = PairDataset([volume], [affine], base)
    warped = PairDataset(
        [volume], [affine], replace(base, rotate_degrees=30.0, zoom_range=(0.7, 1.0))
    )
    off = PairDataset([volume], [affine], replace(base, rotate_degrees=0.0, zoom_range=(1.0, 1.0)))
    ratios = []
    for i in range(0, len(plain), 4):
        lr, hr, _ = plain[i]
        assert torch.equal(off[i][0], lr) and torch.equal(off[i][1], hr)
        lr_w, hr_w, _ = warped[i]
        # The input is the warped target degraded along its rows, as for any pair.
        expected = simulate_interpolated_lr(hr_w[0].numpy(), 0, 4.0)
        np.testing.assert_allclose(lr_w[0].numpy(), expected, atol=1e-4)
        if hr.sum() > 1.0:
            assert not torch.allclose(hr_w, hr, atol=1e-3)
            ratios.append((hr_w.sum() / hr.sum()).item())
    # Turning keeps the signal, zooming by z scales it by z^2: every ratio lies in 0.49-1.
    assert min(ratios) > 0.45 and max(ratios) < 1.03
    assert max(ratios) - min(ratios) > 0.1
