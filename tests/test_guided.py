"""Guided restoration: a thick scan restored with another contrast of the same head as a guide.

The pieces under test: guided pairs (the guide's plane travels with the thick plane through
padding, warps, crops and flips, and is never degraded), guided synthetic heads (two contrasts
of one deformed anatomy, the guide slightly misregistered), guided training, the guide's path
through the adaptation and the restore, and the refusals. The heads of the registration tests
(two contrasts whose tissue order differs) serve as scan and guide.
"""

from __future__ import annotations

import dataclasses
import json

import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import phantom, write_dicom_series
from test_registration import T1, T2, head_labels, make_thick, render
from test_synthetic import PLAIN, write_label_maps, write_subjects, write_tables

import transmrsr
from transmrsr.cli.main import main
from transmrsr.errors import GuideError, TransMRSRError
from transmrsr.inference.adapt import AdaptConfig, adapt_network
from transmrsr.inference.guided import GuideFitConfig, add_guide_branch, fit_guide_branch
from transmrsr.inference.planes import restore_along_planes
from transmrsr.inference.restore import guide_channels, load_model, restore_volume
from transmrsr.intensity import IntensityScaler
from transmrsr.io import load_volume
from transmrsr.models.registry import config_to_dict
from transmrsr.models.transmrsr import with_guide
from transmrsr.pairs import PairConfig, make_pair
from transmrsr.registration import check_guide, guide_on_target
from transmrsr.training.checkpoint import save_model
from transmrsr.training.config import resolve_config
from transmrsr.training.data import PairDataset
from transmrsr.training.synthetic import HeadConfig, LabelTables, synthesize_guided_head

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def guided_model_file(tiny_model_file, tmp_path_factory):
    """The tiny model with a guide channel whose weights are not zero: its output depends on
    the guide."""
    model = with_guide(load_model(tiny_model_file).network)
    with torch.no_grad():
        weight = model.shallow.conv.weight
        weight[:, 1:] = 0.5 * weight[:, :1]
    path = tmp_path_factory.mktemp("guided") / "guided.safetensors"
    return save_model(path, model.state_dict(), config_to_dict(model.config), info={"test": 1})


@pytest.fixture(scope="module")
def zero_guide_file(tiny_model_file, tmp_path_factory):
    """The tiny model with a guide channel of zero weight (:func:`with_guide`)."""
    model = with_guide(load_model(tiny_model_file).network)
    path = tmp_path_factory.mktemp("zero") / "zero.safetensors"
    return save_model(path, model.state_dict(), config_to_dict(model.config), info={"test": 1})


@pytest.fixture(scope="module")
def session():
    """A thick T2-like scan and the same head's T1-like guide, on 2 mm grids."""
    labels = head_labels(seed=0)
    return make_thick(render(labels, T2)), render(labels, T1)


# ----------------------------------------------------------------------------- pairs


def test_the_guide_plane_travels_with_the_plane_and_is_never_degraded():
    rng = np.random.default_rng(0)
    plane = rng.uniform(0.1, 1.0, (48, 52)).astype(np.float32)
    guide = 2.0 * plane + 1.0
    config = PairConfig(factor_range=(3.0, 5.0), patch_size=32, augment=True)
    for key in [(0, 0, i) for i in range(6)]:
        lr, hr, factor = make_pair(plane, config, key, guide)
        alone = make_pair(plane, config, key)
        assert lr.shape == (2, 32, 32) and hr.shape == (1, 32, 32)
        # The same crop and flips as the plane's, and the guide as it is (not made thick).
        torch.testing.assert_close(lr[1], 2.0 * hr[0] + 1.0)
        # The guide draws nothing from the pair's random streams.
        torch.testing.assert_close(lr[:1], alone[0], rtol=0, atol=0)
        assert factor == alone[2]


def test_a_guide_plane_of_another_shape_is_refused():
    with pytest.raises(TransMRSRError, match="same shape"):
        make_pair(np.ones((40, 40)), PairConfig(patch_size=32), (0,), np.ones((40, 41)))


def test_a_guided_dataset_gives_two_channel_inputs_and_checks_its_guides():
    volume = phantom((36, 40, 30)) / 100.0
    affine = np.diag([1.0, 1.0, 1.0, 1.0])
    config = PairConfig(factor_range=(4, 4), patch_size=32, thick_axis="SI")
    pairs = PairDataset([volume], [affine], config, guides=[1.0 - volume])
    lr, _, _ = pairs[3]
    assert lr.shape == (2, 32, 32)
    np.testing.assert_allclose(pairs.plane(3, guide=True), 1.0 - pairs.plane(3), rtol=0, atol=1e-6)
    with pytest.raises(TransMRSRError, match="guide of its own shape"):
        PairDataset([volume], [affine], config, guides=[volume[:-1]])
    with pytest.raises(TransMRSRError, match="no guides"):
        PairDataset([volume], [affine], config).plane(0, guide=True)


# ----------------------------------------------------------------------------- synthetic heads


def test_a_guided_synthetic_head_is_one_anatomy_in_two_contrasts(tmp_path):
    tables = LabelTables.load(write_tables(tmp_path / "labels"))
    maps = write_label_maps(tmp_path / "maps", 1)
    labels = np.asarray(nib.load(maps / "seg_00.nii.gz").get_fdata(), np.int32)
    guide_config = PLAIN  # its own draw of class intensities: another contrast
    image, guide = synthesize_guided_head(
        labels, tables, PLAIN, guide_config, 4, shift_voxels=0.0, rotate_degrees=0.0
    )
    assert image.shape == guide.shape == labels.shape
    # Aligned and without artefacts, each region of one contrast is one region of the other:
    # as many distinct (image, guide) pairs as tissue classes, whatever the two contrasts.
    pairs = set(zip(image.round(3).ravel(), guide.round(3).ravel(), strict=True))
    assert len(pairs) <= len(np.unique(tables.lookup()[labels])) + 1
    assert not np.allclose(image, guide)  # two contrasts, not one
    again = synthesize_guided_head(
        labels, tables, PLAIN, guide_config, 4, shift_voxels=0.0, rotate_degrees=0.0
    )
    np.testing.assert_array_equal(again[1], guide)
    # Misregistered, the guide's edges no longer fall on the image's.
    _, moved = synthesize_guided_head(
        labels, tables, PLAIN, guide_config, 4, shift_voxels=2.0, rotate_degrees=3.0
    )
    assert not np.allclose(moved, guide)


# ----------------------------------------------------------------------------- the network


@pytest.mark.parametrize("branch", [0, 8])
def test_a_zero_weight_guide_restores_planes_as_the_unguided_network(tiny_model_file, branch):
    plain = load_model(tiny_model_file).network
    guided = with_guide(plain, branch=branch)
    assert (guided.guide_branch is not None) == bool(branch)
    assert guided.shallow.conv.in_channels == (1 if branch else 2)
    if branch:
        assert len(with_guide(plain, branch=branch, blocks=2).guide_branch.body) == 2
    volume = phantom((32, 36, 30)).astype(np.float32) / 100.0
    guide = np.random.default_rng(1).uniform(0, 1, volume.shape).astype(np.float32)
    alone = restore_along_planes(plain, volume, 2, batch_size=4)
    with_it = restore_along_planes(guided, volume, 2, batch_size=4, guide=guide)
    np.testing.assert_allclose(with_it, alone, rtol=0, atol=1e-5)
    with pytest.raises(TransMRSRError, match="differ in shape"):
        restore_along_planes(guided, volume, 2, guide=guide[:-1])


# ----------------------------------------------------------------------------- restore


def test_restore_with_a_guide_registers_checks_and_feeds_it(
    session, zero_guide_file, guided_model_file, tiny_model_file
):
    scan, guide = session
    plain = restore_volume(scan, load_model(tiny_model_file), planes="both")
    zero = restore_volume(scan, load_model(zero_guide_file), guide=guide)
    assert zero.guide is not None and zero.guide.similarity >= 0.45
    assert zero.guide.coverage > 0.99 and zero.guide.shift_mm < 2.0
    assert zero.describe().endswith("guided")
    # A guide of zero weight changes nothing: the guided restore is the unguided one (a
    # guided restore fuses both plane orientations by default, an unguided one takes one).
    np.testing.assert_allclose(zero.volume.data, plain.volume.data, rtol=0, atol=1e-4)
    one = restore_volume(scan, load_model(zero_guide_file), guide=guide, planes="one")
    default = restore_volume(scan, load_model(tiny_model_file))
    np.testing.assert_allclose(one.volume.data, default.volume.data, rtol=0, atol=1e-4)
    guided = restore_volume(scan, load_model(guided_model_file), guide=guide)
    np.testing.assert_array_equal(guided.volume.affine, plain.volume.affine)
    assert not np.allclose(guided.volume.data, plain.volume.data, atol=1e-3)


def test_a_guide_of_another_head_is_refused(session, zero_guide_file):
    scan, _ = session
    stranger = render(head_labels(seed=7, radii=(40.0, 50.0, 46.0)), T1)
    with pytest.raises(GuideError):
        restore_volume(scan, load_model(zero_guide_file), guide=stranger)


def test_models_and_guides_must_go_together(session, tiny_model_file, zero_guide_file):
    scan, guide = session
    with pytest.raises(TransMRSRError, match="takes no guide"):
        restore_volume(scan, load_model(tiny_model_file), guide=guide, guide_fit=None)
    with pytest.raises(TransMRSRError, match="give the guide"):
        restore_volume(scan, load_model(zero_guide_file))
    assert guide_channels(load_model(zero_guide_file).network) == 1
    assert guide_channels(load_model(tiny_model_file).network) == 0


def test_the_adaptation_pairs_each_scan_plane_with_the_guides(
    session, zero_guide_file, monkeypatch
):
    import transmrsr.inference.adapt as adapt_module

    seen = []

    def recording(plane, config, key, guide=None):
        seen.append((plane, guide))
        return make_pair(plane, config, key, guide)

    monkeypatch.setattr(adapt_module, "make_pair", recording)
    scan, guide = session
    result = restore_volume(
        scan, load_model(zero_guide_file), guide=guide, adapt=AdaptConfig(steps=2, batch_size=2)
    )
    assert result.adaptation_steps == 2 and len(seen) == 4
    for plane, guide_plane in seen:
        assert guide_plane is not None and guide_plane.shape == plane.shape
        # The guide's plane is of the same anatomy: its head outline is the scan plane's.
        inside = plane > 0.05
        assert ((guide_plane > 0.05) == inside).mean() > 0.9


def test_adapt_network_refuses_a_guide_of_another_shape(zero_guide_file):
    volume = phantom((24, 28, 10)).astype(np.float32) / 100.0
    with pytest.raises(TransMRSRError, match="differ in shape"):
        adapt_network(
            load_model(zero_guide_file).network,
            volume,
            2,
            4.0,
            AdaptConfig(steps=1),
            guide=volume[:-1],
        )


# ----------------------------------------------------------------------------- training


def _tiny_config(folder):
    config = resolve_config("tiny", "sr")
    model = dataclasses.replace(config.model, use_prior=False, use_sdt=False)
    config = dataclasses.replace(config, model=model, val_max_planes=4)
    path = folder / "tiny.json"
    path.write_text(json.dumps({"stage": "sr", **dataclasses.asdict(config)}))
    return path


@pytest.mark.parametrize("arch", ["transmrsr", "minet"])
def test_a_guided_network_trains_on_guided_heads(tmp_path, arch):
    data = write_subjects(tmp_path / "data", 2)
    labels = write_label_maps(write_tables(tmp_path / "labels"), 3)
    network = ["--arch", "minet", "--config", "tiny"] if arch == "minet" else []
    network = network or ["--config", str(_tiny_config(tmp_path))]
    args = [
        "train",
        str(data),
        *network,
        "--out",
        str(tmp_path / "run"),
        "--synthetic",
        str(labels),
        "--synthetic-ratio",
        "1",
        "--synthetic-count",
        "2",
        "--synthetic-val-heads",
        "1",
        "--synthetic-contrast",
        "random",
        "--guide-contrast",
        "t1",
        "--stop-after",
        "2",
        "--no-progress",
    ]
    assert main(args) == 0
    saved = resolve_config(str(tmp_path / "run" / "config.json"), "sr")
    assert saved.model.guide_channels == 1 and saved.synthetic.guide == HeadConfig("t1")
    heads = sorted((tmp_path / "run" / "synthetic").glob("*.npy"))
    assert len(heads) == 2 and np.load(heads[0]).shape[0] == 2  # head and guide stacked
    model = load_model(tmp_path / "run" / "model_last.safetensors")
    assert guide_channels(model.network) == 1 and saved.arch == arch


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ([], "needs synthetic heads"),
        (["--synthetic", "{labels}"], "synthetic ratio 1"),
        (["--synthetic", "{labels}", "--synthetic-ratio", "1"], "synthetic validation head"),
        (["--synthetic", "{labels}", "--arch", "edsr"], "not edsr"),
    ],
)
def test_guided_training_options_fail_in_one_line(tmp_path, capsys, extra, message):
    data = write_subjects(tmp_path / "data", 2)
    labels = write_label_maps(write_tables(tmp_path / "labels"), 2)
    extra = [e.format(labels=labels) for e in extra]
    config = "tiny" if "--arch" in extra else str(_tiny_config(tmp_path))
    args = ["train", str(data), "--config", config, "--out", str(tmp_path / "r")]
    assert main([*args, "--guide-contrast", "t1", "--no-progress", *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert message in err[-1] and not any("Traceback" in line for line in err)


# ----------------------------------------------------------------------------- command line


def _cli(tmp_path, session, write_nifti):
    """The session's scan and guide as files: (thick, guide NIfTI, guide DICOM folder)."""
    scan, guide = session
    thick = write_nifti(scan.data, scan.affine, "thick.nii.gz")
    stored = np.rint(guide.data)
    nifti = write_nifti(stored.astype(np.int16), guide.affine, "guide.nii.gz")
    write_dicom_series(tmp_path / "guide_dicom", stored, guide.affine, description="T1 3D")
    return thick, nifti, tmp_path / "guide_dicom"


def test_restore_cli_takes_a_guide_file_or_dicom_series_and_saves_its_transform(
    tmp_path, session, write_nifti, guided_model_file
):
    thick, nifti, dicom = _cli(tmp_path, session, write_nifti)
    base = ["restore", str(thick), "--model", str(guided_model_file), "--adapt", "0"]
    out = tmp_path / "from_nifti.nii.gz"
    assert (
        main([*base[:2], str(out), *base[2:], "--guide", str(nifti), "--save-guide-transform"]) == 0
    )
    transform = tmp_path / "from_nifti_guide.tfm"
    assert transform.is_file() and "VersorRigid3DTransform" in transform.read_text()
    from_dicom = tmp_path / "from_dicom.nii.gz"
    assert main([*base[:2], str(from_dicom), *base[2:], "--guide", str(dicom)]) == 0
    # The DICOM series is the NIfTI's voxels on the same grid: the same restore.
    np.testing.assert_allclose(
        load_volume(from_dicom).data, load_volume(out).data, rtol=0, atol=1e-4
    )
    assert "guided" in nib.load(out).header["descrip"].tobytes().decode()


def test_restore_cli_refuses_a_wrong_guide_in_one_line_or_falls_back(
    tmp_path, session, write_nifti, tiny_model_file, zero_guide_file, capsys, caplog
):
    thick, _, _ = _cli(tmp_path, session, write_nifti)
    stranger = render(head_labels(seed=7, radii=(40.0, 50.0, 46.0)), T1)
    other = write_nifti(stranger.data, stranger.affine, "other.nii.gz")
    out = tmp_path / "out.nii.gz"
    guided = ["--model", str(zero_guide_file), "--adapt", "0", "--guide", str(other)]
    assert main(["restore", str(thick), str(out), *guided]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "guide" in err[0] and not out.exists()
    missing = ["--model", str(zero_guide_file), "--guide", str(tmp_path / "nope.nii.gz")]
    assert main(["restore", str(thick), str(out), *missing]) == 2
    assert "no such guide" in capsys.readouterr().err
    # With --guide-fallback an unguided model restores it, with a warning.
    plain = ["--model", str(tiny_model_file), "--adapt", "0"]
    with caplog.at_level("WARNING"):
        code = main(
            ["restore", str(thick), str(out), *plain, "--guide", str(other), "--guide-fallback"]
        )
    assert code == 0 and "guide refused" in caplog.text
    alone = tmp_path / "alone.nii.gz"
    assert main(["restore", str(thick), str(alone), *plain]) == 0
    np.testing.assert_array_equal(load_volume(out).data, load_volume(alone).data)


def test_the_same_head_check_can_be_turned_off(
    tmp_path, session, write_nifti, zero_guide_file, capsys
):
    thick, guide, _ = _cli(tmp_path, session, write_nifti)
    out = tmp_path / "out.nii.gz"
    base = ["restore", str(thick), str(out), "--model", str(zero_guide_file), "--adapt", "0"]
    base += ["--guide", str(guide), "--guide-steps", "0"]
    # Another head's guide is refused, naming the way out; without the check it is used.
    other = render(head_labels(seed=7, radii=(40.0, 50.0, 46.0)), T1)
    stranger = write_nifti(other.data, other.affine, "stranger.nii.gz")
    base[base.index(str(guide))] = str(stranger)
    assert main(base) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "does not look like the scan's head" in err[0]
    assert "--no-guide-check" in err[0] and not out.exists()
    assert main([*base, "--no-guide-check"]) == 0 and out.exists()
    with pytest.raises(TransMRSRError, match="guide_check must be True or False"):
        transmrsr.restore(str(thick), guide=str(guide), guide_check="no")


# ----------------------------------------------------------------------------- BIDS


def test_bids_guides_each_scan_with_its_sessions_isotropic_t1w(
    tmp_path, session, write_nifti, zero_guide_file, tiny_model_file
):
    scan, guide = session
    root = tmp_path / "raw"
    anat = root / "sub-01" / "ses-1" / "anat"
    anat.mkdir(parents=True)
    (root / "dataset_description.json").write_text(
        json.dumps({"Name": "g", "BIDSVersion": "1.9.0"})
    )
    nib.save(nib.Nifti1Image(scan.data, scan.affine), anat / "sub-01_ses-1_T2w.nii.gz")
    nib.save(nib.Nifti1Image(guide.data, guide.affine), anat / "sub-01_ses-1_T1w.nii.gz")
    # Another session's T1w never guides this session's scan.
    other = root / "sub-01" / "ses-2" / "anat"
    other.mkdir(parents=True)
    nib.save(nib.Nifti1Image(guide.data, guide.affine), other / "sub-01_ses-2_T1w.nii.gz")
    out = tmp_path / "derivatives"
    args = ["bids", str(root), str(out), "participant", "--adapt", "0", "--no-progress"]
    model = ["--model", str(zero_guide_file), "--guide-suffix", "T1w", "--suffix", "T2w"]
    assert main([*args, *model]) == 0
    side = json.loads((out / "sub-01/ses-1/anat/sub-01_ses-1_desc-restored_T2w.json").read_text())
    assert side["Sources"] == [
        "bids:raw:sub-01/ses-1/anat/sub-01_ses-1_T2w.nii.gz",
        "bids:raw:sub-01/ses-1/anat/sub-01_ses-1_T1w.nii.gz",
    ]
    assert side["GuideSimilarity"] > 0.3 and side["GuideAlignment"] >= 0.06
    guided = load_volume(out / "sub-01/ses-1/anat/sub-01_ses-1_desc-restored_T2w.nii.gz")
    # --no-guide: the same restore without a guide, which the zero weight makes identical
    # (with both plane orientations, as a guided restore takes by default).
    plain_out = tmp_path / "plain"
    unguided = ["--model", str(tiny_model_file), "--suffix", "T2w", "--no-guide"]
    unguided += ["--planes", "both"]
    assert main([*args[:2], str(plain_out), *args[3:], *unguided]) == 0
    plain_side = plain_out / "sub-01/ses-1/anat/sub-01_ses-1_desc-restored_T2w.json"
    plain = json.loads(plain_side.read_text())
    assert len(plain["Sources"]) == 1 and "GuideAlignment" not in plain
    np.testing.assert_allclose(
        load_volume(plain_side.with_suffix("").with_suffix(".nii.gz")).data,
        guided.data,
        rtol=0,
        atol=1e-4,
    )
    # A model trained without a guide gets a branch fitted to the image; the sidecar says
    # what it gained on the image's own held-out pairs.
    fitted_out = tmp_path / "fitted"
    fitted = ["--model", str(tiny_model_file), "--suffix", "T2w", "--guide-suffix", "T1w"]
    fitted += ["--guide-steps", "60"]
    assert main([*args[:2], str(fitted_out), *args[3:], *fitted]) == 0
    side = json.loads((fitted_out / plain_side.relative_to(plain_out)).read_text())
    assert len(side["Sources"]) == 2 and side["GuideHeldOutGainDB"] >= 0.05


def test_a_guide_branch_learns_alone_from_a_trained_model(tmp_path, tiny_model_file):
    data = write_subjects(tmp_path / "data", 2)
    labels = write_label_maps(write_tables(tmp_path / "labels"), 3)
    args = ["train", str(data), "--config", "tiny", "--init", str(tiny_model_file)]
    args += ["--out", str(tmp_path / "run"), "--synthetic", str(labels), "--synthetic-ratio", "1"]
    args += ["--synthetic-count", "2", "--synthetic-val-heads", "1", "--guide-contrast", "t1"]
    assert main([*args, "--guide-branch", "8", "--stop-after", "2", "--no-progress"]) == 0
    trained = load_model(tmp_path / "run" / "model_last.safetensors").network
    start = with_guide(load_model(tiny_model_file).network, branch=8)
    moved = set()
    for name, value in trained.state_dict().items():
        if not torch.equal(value, start.state_dict()[name]):
            moved.add(name.split(".")[0])
    assert moved == {"guide_branch"}
    assert (
        main([*args, "--out", str(tmp_path / "r2"), "--arch", "edsr", "--guide-branch", "8"]) == 2
    )


def test_restore_cli_fits_a_guide_branch_for_a_model_trained_without_one(
    tmp_path, session, write_nifti, tiny_model_file, capsys
):
    thick, nifti, _ = _cli(tmp_path, session, write_nifti)
    base = ["restore", str(thick), "--model", str(tiny_model_file), "--adapt", "0"]
    base += ["--no-progress"]
    out = tmp_path / "out.nii.gz"
    assert main([*base[:2], str(out), *base[2:], "--guide", str(nifti), "--guide-steps", "20"]) == 0
    assert "guided" in nib.load(out).header["descrip"].tobytes().decode()
    capsys.readouterr()
    bad = tmp_path / "bad.nii.gz"
    assert main([*base[:2], str(bad), *base[2:], "--guide", str(nifti), "--guide-steps", "-1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "guide_steps must be" in err[0]
    assert not bad.exists()


# ----------------------------------------------------------------------------- the guide fit

FIT = GuideFitConfig(steps=80, pairs=16, crop=32, batch_size=4, lr=2e-3)


def _scan_and_guide(session):
    """The session's scan and its guide on the scan's grid, both normalised."""
    scan, guide = session
    report = check_guide(guide, scan)
    on_scan = guide_on_target(guide, report.registration, scan)
    return (
        IntensityScaler.fit(scan.data)(scan.data),
        IntensityScaler.fit(guide.data)(on_scan.volume.data).astype(np.float32),
    )


def test_a_guide_branch_fitted_to_the_scan_learns_the_guide(session, tiny_model_file):
    normalised, guide = _scan_and_guide(session)
    plain = load_model(tiny_model_file).network
    network = add_guide_branch(plain)
    before = {k: v.clone() for k, v in network.state_dict().items()}
    fit = fit_guide_branch(network, normalised, guide, 2, 4.0, FIT, AdaptConfig())
    # The scan's own held-out pairs are restored better with the guide than without it.
    assert fit.kept and fit.gain_db > 0.3, (fit.trunk_psnr, fit.guided_psnr)
    # Only the branch moved, and only in the copy.
    for name, value in fit.network.state_dict().items():
        assert torch.equal(value, before[name]) == (not name.startswith("guide_branch."))
    for name, value in network.state_dict().items():
        assert torch.equal(value, before[name])
    # A new branch restores as the model without one.
    x = torch.rand(1, 2, 32, 32)
    torch.testing.assert_close(network(x), plain(x[:, :1]), rtol=0, atol=1e-6)


def test_a_branch_that_does_not_gain_enough_on_held_out_pairs_is_not_used(session, tiny_model_file):
    normalised, guide = _scan_and_guide(session)
    network = add_guide_branch(load_model(tiny_model_file).network)
    demanding = dataclasses.replace(FIT, steps=10, min_gain_db=50.0)
    fit = fit_guide_branch(network, normalised, guide, 2, 4.0, demanding, AdaptConfig())
    assert not fit.kept and fit.gain_db < demanding.min_gain_db
    # Its branch is zero again: the network restores as its trunk, whatever the guide.
    x = torch.rand(1, 2, 32, 32)
    torch.testing.assert_close(fit.network(x), fit.network.trunk(x[:, :1]), rtol=0, atol=0)


def test_restore_fits_the_guide_and_says_what_it_gained(session, tiny_model_file):
    scan, guide = session
    model = load_model(tiny_model_file)
    plain = restore_volume(scan, model)
    guided = restore_volume(scan, model, guide=guide, guide_fit=FIT)
    assert guided.guide_used and guided.guide_gain_db > 0.3
    assert guided.describe().endswith("guided")
    np.testing.assert_array_equal(guided.volume.affine, plain.volume.affine)
    assert np.abs(guided.volume.data - plain.volume.data).max() > 1e-3
    # The restored head is closer to the truth with the guide than without it.
    truth = render(head_labels(seed=0), T2).data
    crop = tuple(slice(0, n) for n in plain.volume.shape)
    error = [np.abs(r.volume.data - truth[crop]).mean() for r in (plain, guided)]
    assert error[1] < error[0], error
