"""Adaptation to the scan (``restore --adapt``): its pairs, that it learns, that it is contained."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import oriented_affine, phantom
from torch import nn

from transmrsr.cli.main import main
from transmrsr.degradation import SLICE_PROFILES, degrade
from transmrsr.errors import TransMRSRError
from transmrsr.inference.adapt import (
    DECODER_PREFIXES,
    DEFAULT_STEPS,
    FACTOR_SPREAD,
    MIX_FROM_FACTOR,
    NOISE_FREE_ADAPT_FACTORS,
    NOISE_FREE_LEVEL,
    UNKNOWN_THICKNESS,
    AdaptConfig,
    adapt_network,
    adaptable_parameters,
    in_plane_images,
    pair_slices,
    scan_pair_configs,
    step_slices,
)
from transmrsr.inference.restore import load_model, restore_volume
from transmrsr.intensity import IntensityScaler, in_plane_noise
from transmrsr.io import Volume, load_volume
from transmrsr.pairs import PairConfig, make_pair

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _scan(factor: int = 4, noise: float = 0.03):
    """A thick phantom with white noise of ``noise`` times its tissue level: a scan as an
    acquisition gives it, which the default restore adapts to (0: a noise-free one)."""
    hr = phantom((40, 44, 48))
    data, affine = degrade(hr, oriented_affine("LAS"), 2, factor)  # LAS: axis 2 is SI
    tissue = float(np.median(data[data > 0.1 * np.percentile(data, 99)]))
    rng = np.random.default_rng(5)
    data = np.abs(data + rng.normal(0.0, noise * tissue, data.shape)).astype(np.float32)
    return Volume(data=data, affine=affine)


def test_in_plane_images_are_the_planes_across_the_thick_axis_both_ways():
    volume = np.zeros((6, 7, 5), np.float32)
    volume[1:5, 1:6, 1:4] = 1.0  # planes 0 and 4 along axis 2 are empty
    images = in_plane_images(volume, 2)
    assert len(images) == 2 * 3
    assert images[0].shape == (6, 7) and images[1].shape == (7, 6)
    np.testing.assert_array_equal(images[1], images[0].T)
    np.testing.assert_array_equal(images[2], volume[:, :, 2])
    assert len(in_plane_images(volume, 0)) == 2 * 4
    with pytest.raises(TransMRSRError, match="3-D"):
        in_plane_images(volume[0], 0)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("steps", 0, "at least 1 step"),
        ("lr", 0.0, "learning rate"),
        ("lr", 2.0, "learning rate"),
        ("batch_size", 0, "batch size"),
        ("scope", "encoder", "scope"),
    ],
)
def test_impossible_adaptation_settings_are_refused(field, value, message):
    with pytest.raises(TransMRSRError, match=message):
        AdaptConfig(**{field: value})


def test_adaptation_lowers_the_loss_on_the_scans_own_pairs_and_leaves_the_model_alone(
    tiny_model_file,
):
    model = load_model(tiny_model_file)
    scan = _scan()
    normalised = IntensityScaler.fit(scan.data)(scan.data)
    before = {k: v.clone() for k, v in model.network.state_dict().items()}
    config = AdaptConfig(steps=40, lr=1e-3, seed=3)
    adapted = adapt_network(model.network, normalised, 2, 4.0, config)
    # Pairs the adaptation never drew (other keys), made the way it makes them.
    images = in_plane_images(normalised, 2)
    size = model.network.config.img_size
    pairs = PairConfig((4.0 - FACTOR_SPREAD, 4.0 + FACTOR_SPREAD), patch_size=size)
    held = [make_pair(images[i % len(images)], pairs, (99, i)) for i in range(8)]
    x = torch.stack([p[0] for p in held])
    y = torch.stack([p[1] for p in held])
    with torch.no_grad():
        loss_before = torch.nn.functional.l1_loss(model.network(x), y).item()
        loss_after = torch.nn.functional.l1_loss(adapted(x), y).item()
    assert loss_after < 0.8 * loss_before
    assert not adapted.training and adapted is not model.network
    for name, value in model.network.state_dict().items():
        assert torch.equal(value, before[name]), name
    # The same seed gives the same network.
    again = adapt_network(model.network, normalised, 2, 4.0, config)
    for name, value in adapted.state_dict().items():
        assert torch.equal(value, again.state_dict()[name]), name


def test_restore_with_adaptation_keeps_the_grid_and_changes_the_voxels(tiny_model_file):
    model = load_model(tiny_model_file)
    scan = _scan()
    plain = restore_volume(scan, model)
    adapted = restore_volume(scan, model, adapt=AdaptConfig(steps=3, lr=1e-3))
    assert adapted.volume.shape == plain.volume.shape
    np.testing.assert_array_equal(adapted.volume.affine, plain.volume.affine)
    assert not np.allclose(adapted.volume.data, plain.volume.data)
    # With consistency on, both reproduce the thick slices, so they differ only in detail.
    scale = float(np.abs(plain.volume.data).max())
    assert np.abs(adapted.volume.data - plain.volume.data).mean() < 0.1 * scale


def test_restore_cli_adapts_and_refuses_negative_steps(tiny_model_file, tmp_path, capsys):
    scan = _scan()
    source = tmp_path / "thick.nii.gz"
    nib.save(nib.Nifti1Image(scan.data, scan.affine), source)
    out = tmp_path / "out.nii.gz"
    model = str(tiny_model_file)
    assert main(["restore", str(source), str(out), "--model", model, "--adapt", "2"]) == 0
    assert load_volume(out).shape == (40, 44, 48)
    capsys.readouterr()
    bad = tmp_path / "bad.nii.gz"
    code = main(["restore", str(source), str(bad), "--model", model, "--adapt", "-1"])
    assert code == 2 and not bad.exists()
    assert "--adapt" in capsys.readouterr().err


def test_a_scan_without_in_plane_signal_is_restored_unadapted_with_a_warning(
    tiny_model_file, caplog
):
    model = load_model(tiny_model_file)
    empty = np.zeros((8, 9, 6), np.float32)
    with caplog.at_level("WARNING"):
        same = adapt_network(model.network, empty, 2, 4.0, AdaptConfig(steps=2))
    assert same is model.network and not same.training
    assert "not adapted" in caplog.text


def test_restore_adapts_by_default_and_adapt_0_turns_it_off(tiny_model_file, tmp_path, caplog):
    scan = _scan()
    source = tmp_path / "thick.nii.gz"
    nib.save(nib.Nifti1Image(scan.data, scan.affine), source)
    model = str(tiny_model_file)
    outputs = {}
    for name, extra in (("default", []), ("off", ["--adapt", "0"])):
        out = tmp_path / f"{name}.nii.gz"
        caplog.clear()
        with caplog.at_level("INFO"):
            assert main(["restore", str(source), str(out), "--model", model, *extra]) == 0
        outputs[name] = load_volume(out).data
        adapted = f"adapting to the scan: {DEFAULT_STEPS} steps" in caplog.text
        assert adapted == (name == "default")
    assert not np.allclose(outputs["default"], outputs["off"])
    # --adapt 0 is the network as shipped: the API's restore without adaptation.
    plain = restore_volume(scan, load_model(tiny_model_file)).volume.data
    np.testing.assert_allclose(outputs["off"], plain, rtol=0, atol=1e-5 * np.abs(plain).max())


def test_pairs_model_the_known_thickness_or_the_spacing_when_it_is_unknown(
    tiny_model_file, monkeypatch
):
    import transmrsr.inference.adapt as adapt_module

    seen: list[PairConfig] = []

    def recording(plane, config, key, *guide):
        seen.append(config)
        return make_pair(plane, config, key, *guide)

    monkeypatch.setattr(adapt_module, "make_pair", recording)
    network = load_model(tiny_model_file).network
    scan = _scan()
    normalised = IntensityScaler.fit(scan.data)(scan.data)
    config = AdaptConfig(steps=1, batch_size=1)
    adapt_network(network, normalised, 2, 4.0, config, thickness=0.75)
    assert seen[-1].profiles == ("gaussian",) and seen[-1].thickness_range == (0.75, 0.75)
    adapt_network(network, normalised, 2, 4.0, config, thickness=None)
    assert seen[-1].profiles == ("gaussian",) and seen[-1].thickness_range == (1.0, 1.0)
    mix = AdaptConfig(steps=1, batch_size=1, unknown="mix")
    adapt_network(network, normalised, 2, 4.0, mix, thickness=None)
    assert seen[-1].profiles == SLICE_PROFILES
    assert seen[-1].thickness_range == UNKNOWN_THICKNESS
    adapt_network(network, normalised, 2, 4.0, AdaptConfig(steps=1, profiles=("boxcar",)))
    assert seen[-1].profiles == ("boxcar",) and seen[-1].thickness_range == (1.0, 1.0)


@pytest.mark.parametrize(
    ("scope", "factor", "tuned"),
    [
        ("decoder", 4.0, "decoder"),
        ("all", 4.0, "all"),
        ("auto", 4.0, "decoder"),
        ("auto", 6.0, "all"),
    ],
)
def test_the_scope_says_which_parameters_the_adaptation_tunes(
    tiny_model_file, scope, factor, tuned
):
    network = load_model(tiny_model_file).network
    scan = _scan()
    normalised = IntensityScaler.fit(scan.data)(scan.data)
    config = AdaptConfig(steps=2, lr=1e-3, scope=scope)
    adapted = adapt_network(network, normalised, 2, factor, config)
    before = dict(network.named_parameters())
    changed = {
        name for name, value in adapted.named_parameters() if not torch.equal(value, before[name])
    }
    decoder_side = {
        name
        for name in before
        if name.startswith(DECODER_PREFIXES) and "relative_position_bias" not in name
    }
    if tuned == "decoder":
        assert changed and changed <= decoder_side
    else:
        assert any(name.startswith("encoder.") for name in changed)
        assert any("relative_position_bias" in name for name in changed)
    # The copy is handed back ready to be trained further, like the network it came from.
    assert all(p.requires_grad for p in adapted.parameters())


def test_networks_without_a_decoder_side_adapt_all_their_parameters():
    from transmrsr.models.edsr import EDSR, EDSRConfig

    network = EDSR(EDSRConfig(n_blocks=1, n_features=8))
    tuned = adaptable_parameters(network, "decoder")
    assert [id(p) for p in tuned] == [id(p) for p in network.parameters()]


@pytest.mark.parametrize("batch_size", [4, 3])
def test_two_workers_sharing_the_pairs_take_the_steps_of_the_whole_batch(
    tiny_model_file, batch_size
):
    network = load_model(tiny_model_file).network
    scan = _scan()
    normalised = IntensityScaler.fit(scan.data)(scan.data)
    config = AdaptConfig(steps=3, lr=1e-3, batch_size=batch_size, seed=5)
    threads = torch.get_num_threads()
    alone = adapt_network(network, normalised, 2, 4.0, config, workers=1)
    shared = adapt_network(network, normalised, 2, 4.0, config, workers=2)
    assert torch.get_num_threads() == threads
    moved = 0.0
    for name, value in shared.named_parameters():
        torch.testing.assert_close(value, dict(alone.named_parameters())[name], rtol=0, atol=2e-5)
        moved = max(moved, (value - dict(network.named_parameters())[name]).abs().max().item())
    assert moved > 1e-3  # the steps did change the network


def test_what_the_pairs_assume_of_slices_of_unknown_thickness():
    told = pair_slices(AdaptConfig(unknown="mix"), 0.75)
    assert told == {"thickness_range": (0.75, 0.75), "profiles": ("gaussian",)}
    assert pair_slices(AdaptConfig(unknown="gaussian"), None) == {
        "thickness_range": (1.0, 1.0),
        "profiles": ("gaussian",),
    }
    assert pair_slices(AdaptConfig(unknown="gaussian-range"), None) == {
        "thickness_range": UNKNOWN_THICKNESS,
        "profiles": ("gaussian",),
    }
    assert pair_slices(AdaptConfig(unknown="mix"), None) == {
        "thickness_range": UNKNOWN_THICKNESS,
        "profiles": SLICE_PROFILES,
    }
    # profiles given explicitly win over the policy's
    flat = AdaptConfig(unknown="gaussian", profiles=("flat-top",))
    assert pair_slices(flat, None)["profiles"] == ("flat-top",)
    with pytest.raises(TransMRSRError, match="unknown-thickness slices must be one of"):
        AdaptConfig(unknown="boxcar")


def test_in_plane_noise_reads_the_noise_added_to_a_scan():
    clean = _scan(noise=0.0)
    assert in_plane_noise(clean.data, 2) < NOISE_FREE_LEVEL
    readings = [in_plane_noise(_scan(noise=level).data, 2) for level in (0.02, 0.04, 0.08)]
    # It grows with the noise and reads it, plus the share of the small phantom's own edges
    # (the clean phantom reads 0.7 %).
    assert readings[0] < readings[1] < readings[2]
    for level, reading in zip((0.02, 0.04, 0.08), readings, strict=True):
        assert level < reading < 1.2 * level + 0.01, (level, reading)
    # The thick axis matters: across the slices the anatomy changes from one to the next.
    assert in_plane_noise(clean.data, 0) > in_plane_noise(clean.data, 2)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (np.zeros((4, 5)), "3-D"),
        (np.full((4, 5, 6), np.nan), "NaN"),
        (np.zeros((4, 5, 6)), "no tissue"),
    ],
)
def test_in_plane_noise_refuses_what_it_cannot_measure(data, message):
    with pytest.raises(TransMRSRError, match=message):
        in_plane_noise(data, 2)


def test_a_noise_free_scan_of_unknown_thickness_is_not_adapted_but_at_x6_with_the_mix(
    tiny_model_file, caplog, monkeypatch
):
    import transmrsr.inference.adapt as adapt_module

    seen: list[PairConfig] = []

    def recording(plane, config, key, *guide):
        seen.append(config)
        return make_pair(plane, config, key, *guide)

    monkeypatch.setattr(adapt_module, "make_pair", recording)
    model = load_model(tiny_model_file)
    clean, noisy = _scan(noise=0.0), _scan()
    one = AdaptConfig(steps=1, batch_size=1)
    with caplog.at_level("INFO"):
        result = restore_volume(clean, model, adapt=one)
    assert result.adaptation_steps == 0 and "not adapted to the scan" in caplog.text
    assert not seen
    unadapted = restore_volume(clean, model, adapt=None).volume.data
    np.testing.assert_array_equal(result.volume.data, unadapted)
    # A noisy scan takes the Gaussian at this factor (x4); told its thickness, a noise-free
    # one too; asked for the mix, or with the rule off, a noise-free one adapts.
    assert restore_volume(noisy, model, adapt=one).adaptation_steps == 1
    assert seen[-1].profiles == ("gaussian",) and seen[-1].thickness_range == (1.0, 1.0)
    restore_volume(clean, model, adapt=one, slice_thickness=4.0)
    assert seen[-1].profiles == ("gaussian",)
    restore_volume(clean, model, adapt=AdaptConfig(steps=1, batch_size=1, min_noise=0.0))
    assert seen[-1].profiles == ("gaussian",)
    restore_volume(clean, model, adapt=AdaptConfig(steps=1, batch_size=1, unknown="mix"))
    assert seen[-1].profiles == SLICE_PROFILES
    # At the x6 file's factors a noise-free scan adapts with the mix.
    count = len(seen)
    x6 = restore_volume(clean, model, adapt=one, factor=6.0)
    assert x6.adaptation_steps == 1 and len(seen) == count + 1
    assert seen[-1].profiles == SLICE_PROFILES
    assert one.for_noise_free(4.0) is None and one.for_noise_free(8.0) is None
    assert one.for_noise_free(NOISE_FREE_ADAPT_FACTORS[0]).unknown == "mix"
    assert one.for_noise_free(NOISE_FREE_ADAPT_FACTORS[1]) is None
    # At x6 a scan with noise tunes every parameter by default; a noise-free one the decoder.
    assert one.scope_for(6.0) == "all" and one.scope_for(4.0) == one.scope_for(8.0) == "decoder"
    assert one.for_noise_free(6.0).scope_for(6.0) == "decoder"
    told = AdaptConfig(scope="all")
    assert told.for_noise_free(6.0).scope_for(6.0) == "all" and told.scope_for(4.0) == "all"
    with pytest.raises(TransMRSRError, match="noise floor"):
        AdaptConfig(min_noise=1.5)


def test_gaussian_mix_takes_the_gaussian_and_the_mix_on_alternate_steps():
    config = AdaptConfig(unknown="gaussian-mix")
    gaussian, mix = step_slices(config, None)
    assert gaussian == {"thickness_range": (1.0, 1.0), "profiles": ("gaussian",)}
    assert mix == {"thickness_range": UNKNOWN_THICKNESS, "profiles": SLICE_PROFILES}
    # told the thickness, every step takes it
    assert step_slices(config, 0.8) == [{"thickness_range": (0.8, 0.8), "profiles": ("gaussian",)}]


def test_auto_takes_the_gaussian_below_x7_and_mixes_from_it():
    auto = AdaptConfig()
    assert auto.unknown == "auto"
    assert auto.for_factor(4.0).unknown == "gaussian"
    assert auto.for_factor(6.9).unknown == "gaussian"
    assert auto.for_factor(MIX_FROM_FACTOR).unknown == "gaussian-mix"
    assert auto.for_factor(8.0).unknown == "gaussian-mix"
    # a choice made by the user stays
    assert AdaptConfig(unknown="mix").for_factor(4.0).unknown == "mix"
    with pytest.raises(TransMRSRError, match="for_factor"):
        step_slices(auto, None)
    # told the thickness, auto needs no factor
    assert step_slices(auto, 0.8) == [{"thickness_range": (0.8, 0.8), "profiles": ("gaussian",)}]
    x4 = scan_pair_configs(nn.Identity(), 4.0, auto, None)
    x8 = scan_pair_configs(nn.Identity(), 8.0, auto, None)
    assert [c.profiles for c in x4] == [("gaussian",)]
    assert [c.profiles for c in x8] == [("gaussian",), SLICE_PROFILES]
    assert x8[0].factor_range == (7.5, 8.5)
