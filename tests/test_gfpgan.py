"""The GFP-GAN comparison network: shapes, CS-SFT, the StyleGAN2 prior it loads, training
(a step, resume, a frozen generator), configs, sizes, and the wrong prior refused."""

from __future__ import annotations

import dataclasses
import itertools
import json
from pathlib import Path

import pytest
import torch

from transmrsr.cli.main import main
from transmrsr.errors import TransMRSRError
from transmrsr.models import profiling, registry, stylegan2, styleswin
from transmrsr.models.files import load_checkpoint
from transmrsr.models.gfpgan import GFPGAN, PRESETS, cs_sft
from transmrsr.models.stylegan2 import StyleGAN2Generator
from transmrsr.models.styleswin import StyleSwinGenerator
from transmrsr.training.checkpoint import DISCRIMINATOR_PREFIX, save_prior
from transmrsr.training.config import sr_preset, with_overrides
from transmrsr.training.distributed import DistContext
from transmrsr.training.runs import prepare_out, select_data
from transmrsr.training.sr import train_sr

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = PRESETS["tiny"]


def tiny(**overrides) -> GFPGAN:
    torch.manual_seed(0)
    return GFPGAN(dataclasses.replace(TINY, **overrides)).eval()


def randomise_zero_inits(model: GFPGAN) -> None:
    """Give the layers that start at zero (ToRGBs, last conv of each SFT branch) weights."""
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for rgb in model.generator.to_rgbs:
            rgb.conv.weight.copy_(torch.randn(rgb.conv.weight.shape, generator=gen))
            rgb.bias.fill_(0.1)
        for condition in model.conditions:
            for branch in (condition.scale, condition.shift):
                branch[-1].weight.copy_(0.1 * torch.randn(branch[-1].weight.shape, generator=gen))


def stylegan2_prior(path: Path, *, discriminator: bool = False, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    gen = StyleGAN2Generator(TINY.prior)
    state = dict(gen.state_dict())
    if discriminator:
        disc = styleswin.StyleGAN2Discriminator(TINY.prior)
        state.update({DISCRIMINATOR_PREFIX + k: v for k, v in disc.state_dict().items()})
    return save_prior(path, state, TINY.prior, info={"steps": 0})


def styleswin_prior(path: Path) -> Path:
    config = styleswin.PRESETS["tiny"]
    torch.manual_seed(0)
    return save_prior(path, StyleSwinGenerator(config).state_dict(), config)


# ---------------------------------------------------------------- the network


@pytest.mark.parametrize(
    "shape", [(2, 1, 32, 32), (1, 1, 13, 21), (1, 1, 30, 7), (1, 1, 40, 33), (1, 1, 3, 70)]
)
def test_output_has_the_input_shape(shape):
    """Smaller slices are padded to the generator's 32 x 32, larger ones tiled."""
    model = tiny()
    randomise_zero_inits(model)
    x = torch.randn(shape)
    with torch.no_grad():
        y = model(x)
    assert y.shape == shape
    assert torch.isfinite(y).all()
    assert not torch.allclose(y, x)


@pytest.mark.parametrize("shape", [(1, 2, 32, 32), (32, 32), (1, 32, 32)])
def test_rejects_other_inputs(shape):
    with pytest.raises(ValueError, match=r"\[B, 1, H, W\]"):
        tiny()(torch.zeros(shape))


def test_a_new_network_returns_its_input_and_the_image_is_a_residual():
    """ToRGBs start at zero: out = x exactly. Otherwise out - x is the generator's image."""
    model = tiny()
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x), x, rtol=0, atol=0)
        randomise_zero_inits(model)
        ws, conditions = model.encode(x)
        by_layer = {2 * i + 1: c for i, c in enumerate(conditions)}
        image = model.generator(
            ws, layer_hook=lambda k, y: cs_sft(y, *by_layer[k]) if k in by_layer else y, noise=False
        )
        torch.testing.assert_close(model(x), x + image)


def test_cs_sft_modulates_the_second_half_only():
    x = torch.randn(2, 6, 5, 5)
    zero = torch.zeros(2, 3, 5, 5)
    torch.testing.assert_close(cs_sft(x, zero, zero), x, rtol=0, atol=0)
    scale, shift = torch.randn(2, 3, 5, 5), torch.randn(2, 3, 5, 5)
    out = cs_sft(x, scale, shift)
    torch.testing.assert_close(out[:, :3], x[:, :3], rtol=0, atol=0)
    torch.testing.assert_close(out[:, 3:], x[:, 3:] * (1 + scale) + shift)
    odd = torch.randn(1, 5, 2, 2)  # C // 2 pass, the rest is modulated
    assert cs_sft(odd, torch.ones(1, 3, 2, 2), torch.zeros(1, 3, 2, 2))[:, 2:].equal(2 * odd[:, 2:])


def test_zero_conditions_are_the_plain_generator_path():
    """A new network's SFT branches give zero scale and shift: the generator with CS-SFT is
    exactly the generator without it (the loaded prior intact), at every resolution; once the
    branches have weights the conditions change the features from 8 x 8 on."""
    model = tiny()
    x = torch.randn(2, 1, 32, 32)

    def features(m: GFPGAN, sft: bool) -> list[torch.Tensor]:
        ws, conditions = m.encode(x)
        by_layer = {2 * i + 1: c for i, c in enumerate(conditions)}

        def hook(layer: int, y: torch.Tensor) -> torch.Tensor:
            return cs_sft(y, *by_layer[layer]) if layer in by_layer else y

        _, feats = m.generator(
            ws, layer_hook=hook if sft else None, noise=False, return_features=True
        )
        return feats

    with torch.no_grad():
        for with_sft, plain in zip(features(model, True), features(model, False), strict=True):
            torch.testing.assert_close(with_sft, plain, rtol=0, atol=0)
        assert all(c[0].abs().max() == 0 and c[1].abs().max() == 0 for c in model.encode(x)[1])
        randomise_zero_inits(model)
        moved = features(model, True)
        plain = features(model, False)
    torch.testing.assert_close(moved[0], plain[0])  # 4 x 4 has no condition
    assert all(not torch.allclose(a, b) for a, b in zip(moved[1:], plain[1:], strict=True))


def test_gradients_reach_every_parameter():
    model = tiny().train()
    randomise_zero_inits(model)
    model(torch.randn(2, 1, 32, 32)).square().mean().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_training_steps_lower_the_loss_and_reach_every_weight():
    """From the identity start, Adam steps on brighter targets lower the L1 loss; the ToRGBs
    move first, the rest once they are non-zero, the SFT branches' first convs once their last
    convs are: after three steps every weight has moved."""
    torch.manual_seed(0)
    model = tiny().train()
    start = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.rand(4, 1, 32, 32)
    hr = x + 0.3
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for step in range(10):
        loss = (model(x) - hr).abs().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        if step == 0:
            moved = {k for k, v in model.state_dict().items() if not torch.equal(v, start[k])}
            assert moved and all(k.startswith("generator.to_rgbs.") for k in moved), moved
        if step == 2:
            for key, value in model.state_dict().items():
                assert not torch.equal(value, start[key]), key
    assert losses[0] == pytest.approx(0.3)  # the identity start
    assert all(b < a for a, b in itertools.pairwise(losses)), losses
    assert losses[-1] < 0.8 * losses[0], losses


# ---------------------------------------------------------------- the prior


def test_load_prior_takes_the_synthesis_but_not_the_torgbs(tmp_path):
    torch.manual_seed(3)
    prior = StyleGAN2Generator(TINY.prior)
    with torch.no_grad():
        for param in prior.synthesis.to_rgbs.parameters():  # as after training
            param.add_(0.5)
    model = tiny()
    before = {k: v.clone() for k, v in model.generator.state_dict().items()}
    model.load_prior(prior.state_dict())
    own = model.generator.state_dict()
    loaded = 0
    for key, value in prior.state_dict().items():
        name = key.removeprefix("synthesis.")
        if key.startswith("mapping.") or ".noise." in key:
            assert name not in own
        elif name.startswith("to_rgbs."):  # not loaded: they stay at zero, the output x + 0
            assert torch.equal(own[name], before[name]) and not torch.equal(own[name], value)
            if name.endswith(("conv.weight", "bias")) and ".modulation." not in name:
                assert own[name].abs().max() == 0, name
        else:
            assert torch.equal(own[name], value), key
            loaded += 1
    assert loaded == len([k for k in own if not k.startswith("to_rgbs.")])
    x = torch.randn(1, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x), x, rtol=0, atol=0)


def test_load_prior_refuses_mismatches():
    model = tiny()
    state = StyleGAN2Generator(TINY.prior).state_dict()
    broken = {k: v for k, v in state.items() if k != "synthesis.const"}
    broken["synthesis.extra"] = torch.zeros(1)
    broken["synthesis.convs.0.bias"] = torch.zeros(7)
    with pytest.raises(TransMRSRError) as info:
        model.load_prior(broken)
    message = str(info.value)
    assert "synthesis.const" in message and "synthesis.extra" in message
    assert "synthesis.convs.0.bias" in message
    with pytest.raises(TransMRSRError, match="use_prior=False"):
        tiny(use_prior=False).load_prior(state)


# ---------------------------------------------------------------- configs and sizes


def test_presets_round_trip_through_json_and_the_registry():
    assert "gfpgan" in registry.list_architectures()
    assert registry.prior_of("gfpgan") == "stylegan2"
    for name, config in PRESETS.items():
        record = registry.config_to_dict(config)
        assert record["arch"] == "gfpgan"
        assert registry.config_from_dict(json.loads(json.dumps(record))) == config
        assert registry.get_config("gfpgan", name) == config
        assert config.prior == stylegan2.PRESETS[name]
        assert config.unet_channels == tuple(max(1, c // 2) for c in config.prior.channels)


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"unet_channels": (16, 16, 16)}, "one width per resolution"),
        ({"unet_channels": (16, 0, 16, 8)}, "positive"),
        ({"tile_overlap": 32}, "tile_overlap"),
    ],
)
def test_invalid_configs_are_refused(bad, message):
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(TINY, **bad)
    with pytest.raises(TransMRSRError, match=message):
        registry.get_config("gfpgan", "tiny", **bad)


def test_parameter_counts():
    """Paper: GFP-GAN v1's sizes at 256 x 256 (the latent head alone is 4096 -> 14 x 512);
    compact trains on 2 CPU cores."""
    counts = {}
    for name in ("paper", "compact"):
        with torch.device("meta"):
            counts[name] = profiling.count_parameters(registry.build_model("gfpgan", name))
    paper = counts["paper"]
    assert paper["latent_head"] == 16 * 256 * 14 * 512 + 14 * 512
    assert paper["head"] == 1 * 32 + 32
    with torch.device("meta"):
        prior = StyleGAN2Generator(stylegan2.PRESETS["paper"])
    to_rgbs = sum(p.numel() for p in prior.synthesis.to_rgbs.parameters())
    noise = 2 * stylegan2.PRESETS["paper"].n_stages - 1
    assert paper["generator"] == profiling.count_parameters(prior)["synthesis"] - noise
    assert to_rgbs < paper["generator"]
    assert paper["total"] == 69_777_991
    assert counts["compact"]["total"] == 3_894_615


def test_model_summary_command(capsys):
    argv = ["model-summary", "--arch", "gfpgan", "--config", "compact", "--json"]
    assert main([*argv, "--repeats", "0", "--size", "64"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["arch"] == "gfpgan" and summary["parameters"]["total"] == 3_894_615
    assert summary["gflops_per_slice"] > 0


# ---------------------------------------------------------------- training


def _run(data_dir: Path, prior: Path, out: Path, *, stop_after=None, resume=False, **overrides):
    config = with_overrides(
        sr_preset("tiny", "gfpgan"),
        samples_per_epoch=8,
        max_epochs=3,
        checkpoint_every=1,
        **overrides,
    )
    data = select_data(
        [data_dir], contrast=None, split_file=None, val=1, test=1, seed=0, contrasts=["T1"]
    )
    return train_sr(
        data,
        config,
        out,
        DistContext(),
        prior_path=prior,
        resume_from=prepare_out(out, resume=resume),
        stop_after=stop_after,
        progress=False,
    )


def test_training_resumes_exactly(phantom_data, tmp_path):
    prior = stylegan2_prior(tmp_path / "prior.safetensors", discriminator=True)
    whole = _run(phantom_data, prior, tmp_path / "whole")
    assert whole.steps == 6 and whole.epochs == 3
    _run(phantom_data, prior, tmp_path / "parts", stop_after=3)
    parts = _run(phantom_data, prior, tmp_path / "parts", resume=True)
    assert parts.steps == 6
    a = load_checkpoint(tmp_path / "whole" / "last.pt")
    b = load_checkpoint(tmp_path / "parts" / "last.pt")
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    # The prior's discriminator travelled with the run, recorded as a StyleGAN2 one.
    assert b["discriminator_arch"] == "stylegan2"
    assert b["discriminator_config"]["channels"] == TINY.prior.channels
    # Fine-tuned: the generator moved from the prior (seed 0), the ToRGBs from zero.
    torch.manual_seed(0)
    prior_state = StyleGAN2Generator(TINY.prior).state_dict()
    model = b["model"]
    assert model["generator.to_rgbs.3.conv.weight"].abs().sum() > 0
    before = prior_state["synthesis.convs.6.conv.weight"]
    assert not torch.equal(model["generator.convs.6.conv.weight"], before)


def test_a_frozen_generator_keeps_the_prior(phantom_data, tmp_path):
    prior = stylegan2_prior(tmp_path / "prior.safetensors")
    _run(phantom_data, prior, tmp_path / "run", stop_after=2, freeze_decoder=True)
    model = load_checkpoint(tmp_path / "run" / "last.pt")["model"]
    torch.manual_seed(0)
    prior_state = StyleGAN2Generator(TINY.prior).state_dict()
    for key, value in prior_state.items():
        name = "generator." + key.removeprefix("synthesis.")
        if name in model and ".to_rgbs." not in name:
            assert torch.equal(model[name], value), key
    assert model["generator.to_rgbs.3.conv.weight"].abs().sum() > 0  # the ToRGBs learn


def _train_args(data: Path, prior: Path, out: Path, arch: str | None) -> list[str]:
    args = ["train", str(data), "--config", "tiny", "--prior", str(prior), "--out", str(out)]
    args += ["--epochs", "1", "--samples-per-epoch", "4", "--no-progress"]
    return [*args, "--arch", arch] if arch else args


def test_train_command_with_a_stylegan2_prior(phantom_data, tmp_path):
    prior = stylegan2_prior(tmp_path / "prior.safetensors")
    assert main(_train_args(phantom_data, prior, tmp_path / "run", "gfpgan")) == 0
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["arch"] == "gfpgan" and saved["content_weight"] == 0.0


@pytest.mark.parametrize(
    ("arch", "make", "message"),
    [
        ("gfpgan", styleswin_prior, "a styleswin prior, but gfpgan needs a stylegan2 prior"),
        (None, stylegan2_prior, "a stylegan2 prior, but transmrsr needs a styleswin prior"),
    ],
)
def test_a_prior_of_the_other_kind_is_a_one_line_error(
    phantom_data, tmp_path, capsys, arch, make, message
):
    prior = make(tmp_path / "prior.safetensors")
    assert main(_train_args(phantom_data, prior, tmp_path / "run", arch)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert "train-prior --arch" in err[0]


def test_gfpgan_without_a_prior_is_a_one_line_error(phantom_data, tmp_path, capsys):
    args = ["train", str(phantom_data), "--arch", "gfpgan", "--config", "tiny"]
    assert main([*args, "--out", str(tmp_path / "run"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "train-prior --arch stylegan2" in err[0], err


def test_the_benchmark_refuses_a_styleswin_prior_for_gfpgan(phantom_data, tmp_path, capsys):
    prior = styleswin_prior(tmp_path / "prior.safetensors")
    args = ["benchmark", "--data", str(phantom_data), "--out", str(tmp_path / "bench")]
    args += ["--config", "tiny", "--methods", "cubic,gfpgan", "--budget-steps", "1", "--no-mni"]
    assert main([*args, "--stylegan2-prior", str(prior), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "gfpgan needs a stylegan2 prior" in err[0], err
