"""The StyleGAN2 prior of GFP-GAN: config, modulated convolutions, synthesis, and its stage-1
training through ``train-prior --arch stylegan2`` (tiny run, exact resume, the prior file)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from transmrsr.cli.main import main
from transmrsr.errors import TransMRSRError
from transmrsr.models import priors, styleswin
from transmrsr.models.files import load_checkpoint
from transmrsr.models.stylegan2 import (
    PRESETS,
    ModulatedConv2d,
    StyleGAN2Config,
    StyleGAN2Generator,
    StyleGAN2Synthesis,
)
from transmrsr.models.styleswin import StyleGAN2Discriminator
from transmrsr.training.checkpoint import load_prior
from transmrsr.training.config import (
    PRIOR_PRESETS,
    PriorTrainConfig,
    config_from_dict,
    prior_preset,
    with_overrides,
)
from transmrsr.training.distributed import DistContext
from transmrsr.training.prior import train_prior
from transmrsr.training.runs import prepare_out, select_data

TINY = PRESETS["tiny"]

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def generator(seed: int = 0) -> StyleGAN2Generator:
    torch.manual_seed(seed)
    return StyleGAN2Generator(TINY).eval()


# ---------------------------------------------------------------- config


def test_config_round_trips_and_mirrors_the_styleswin_presets():
    for name, config in PRESETS.items():
        assert StyleGAN2Config.from_dict(json.loads(json.dumps(config.to_dict()))) == config
        same = styleswin.PRESETS[name]
        if name != "paper":  # compact and tiny have StyleSwin's sizes
            assert (config.img_size, config.style_dim, config.n_mlp) == (
                same.img_size,
                same.style_dim,
                same.n_mlp,
            )
            assert config.channels == same.channels
            assert config.disc_channels == same.disc_channels
    paper = PRESETS["paper"]  # GFP-GAN v1's StyleGAN2 (channel multiplier 1) up to 256
    assert paper.channels == (512, 512, 512, 512, 256, 128, 64)
    assert (paper.style_dim, paper.n_mlp, paper.lr_mlp) == (512, 8, 0.01)
    assert (TINY.n_stages, TINY.n_layers, TINY.n_latent) == (4, 7, 8)


@pytest.mark.parametrize(
    "changes",
    [
        {"img_size": 48},
        {"img_size": 4, "channels": (8,), "disc_channels": (8,)},
        {"channels": (32, 32, 32)},
        {"disc_channels": (8, 8)},
        {"channels": (32, 0, 32, 16)},
        {"style_dim": 0},
        {"lr_mlp": 0.0},
    ],
)
def test_config_rejects_bad_sizes(changes):
    with pytest.raises(ValueError):
        dataclasses.replace(TINY, **changes)


# ---------------------------------------------------------------- layers


def test_modulated_conv_equals_a_per_sample_weight():
    """Scaling the input by the style and demodulating the output is StyleGAN2's per-sample
    modulated, demodulated weight, computed the authors' way (one conv per sample)."""
    torch.manual_seed(0)
    conv = ModulatedConv2d(6, 5, 3, style_dim=4)
    x, w = torch.randn(3, 6, 8, 8), torch.randn(3, 4)
    out = conv(x, w)
    style = conv.modulation(w)
    for b in range(3):
        weight = conv.weight * conv.scale * style[b][None, :, None, None]
        weight = weight * torch.rsqrt(weight.pow(2).sum(dim=(1, 2, 3), keepdim=True) + 1e-8)
        ref = F.conv2d(x[b : b + 1], weight, padding=1)
        torch.testing.assert_close(out[b : b + 1], ref, rtol=1e-4, atol=1e-5)


def test_demodulation_removes_the_style_scale():
    """Demodulated: a style three times larger gives the same output. ToRGB (no
    demodulation): three times the output."""
    torch.manual_seed(0)
    x, w = torch.randn(2, 6, 8, 8), torch.randn(2, 4)
    for demodulate, factor in ((True, 1.0), (False, 3.0)):
        conv = ModulatedConv2d(6, 2, 3, style_dim=4, demodulate=demodulate)
        before = conv(x, w)
        with torch.no_grad():
            conv.modulation.weight.mul_(3.0)
            conv.modulation.bias.mul_(3.0)
        torch.testing.assert_close(conv(x, w), factor * before, rtol=1e-4, atol=1e-5)


def test_upsampling_conv_doubles_the_map():
    conv = ModulatedConv2d(4, 3, 3, style_dim=4, upsample=True)
    assert conv(torch.randn(2, 4, 5, 7), torch.randn(2, 4)).shape == (2, 3, 10, 14)


# ---------------------------------------------------------------- synthesis


def test_generator_shapes_and_mapping():
    gen = generator()
    z = torch.randn(3, TINY.style_dim)
    with torch.no_grad():
        img = gen(z, noise=False)
        w = gen.map_to_w(z)
        same = gen.synthesis(w[:, None].expand(-1, TINY.n_latent, -1), noise=False)
    assert img.shape == (3, 1, 32, 32)
    torch.testing.assert_close(img, same)
    with pytest.raises(ValueError, match="latents"):
        gen.synthesis(torch.randn(3, TINY.n_latent - 1, TINY.style_dim))


def test_every_latent_of_w_plus_drives_the_output():
    """One latent per conv layer and one for the last ToRGB: changing any one of them
    changes the image."""
    gen = generator()
    with torch.no_grad():
        for rgb in gen.synthesis.to_rgbs:  # ToRGB weights are random at init; make sure
            rgb.conv.weight.normal_()
        ws = torch.randn(2, TINY.n_latent, TINY.style_dim)
        base = gen.synthesis(ws, noise=False)
        for layer in range(TINY.n_latent):
            moved = ws.clone()
            moved[:, layer] += 1.0
            assert not torch.allclose(gen.synthesis(moved, noise=False), base), layer


def test_layer_hook_and_features():
    """The hook sees every conv layer at its resolution; the features are the per-resolution
    maps after the hook, and what the hook changes reaches the image."""
    gen = generator()
    seen = []

    def record(layer: int, x: torch.Tensor) -> torch.Tensor:
        seen.append((layer, tuple(x.shape[1:])))
        return x

    ws = torch.randn(2, TINY.n_latent, TINY.style_dim)
    with torch.no_grad():
        img, feats = gen.synthesis(ws, layer_hook=record, noise=False, return_features=True)
    expected = [(0, (32, 4, 4))]
    for i, (c, r) in enumerate(zip(TINY.channels[1:], TINY.resolutions[1:], strict=True)):
        expected += [(2 * i + 1, (c, r, r)), (2 * i + 2, (c, r, r))]
    assert seen == expected
    assert [tuple(f.shape[1:]) for f in feats] == [
        (c, r, r) for c, r in zip(TINY.channels, TINY.resolutions, strict=True)
    ]

    def double_layer_three(layer: int, x: torch.Tensor) -> torch.Tensor:
        return 2 * x if layer == 3 else x

    with torch.no_grad():
        changed, changed_feats = gen.synthesis(
            ws, layer_hook=double_layer_three, noise=False, return_features=True
        )
    torch.testing.assert_close(changed_feats[1], feats[1])  # 8 x 8: before layer 3
    assert not torch.allclose(changed_feats[2], feats[2])
    assert not torch.allclose(changed, img)


def test_noise_and_a_synthesis_without_it():
    gen = generator()
    with torch.no_grad():
        for conv in gen.synthesis.convs:
            conv.noise.weight.fill_(0.5)
        z = torch.randn(2, TINY.style_dim)
        assert not torch.allclose(gen(z), gen(z))  # fresh noise every call
        torch.testing.assert_close(gen(z, noise=False), gen(z, noise=False))
    plain = StyleGAN2Synthesis(TINY, noise=False)
    names = set(plain.state_dict())
    assert names == {k for k in gen.synthesis.state_dict() if not k.endswith(".noise.weight")}


def test_truncation():
    gen = generator()
    z = torch.randn(2, TINY.style_dim)
    centre = gen.mean_w(256)
    with torch.no_grad():
        full = gen(z, noise=False)
        none = gen(z, truncation=0.0, truncation_w=centre, noise=False)
        mean = gen.synthesis(centre.expand(2, -1), noise=False)
    torch.testing.assert_close(none, mean)
    assert not torch.allclose(full, none)
    with pytest.raises(ValueError, match="truncation_w"):
        gen(z, truncation=0.7)


def test_gan_gradients_reach_every_parameter_with_the_shared_discriminator():
    gen = generator()
    disc = StyleGAN2Discriminator(TINY)  # StyleSwin's discriminator, from a StyleGAN2 config
    with torch.no_grad():
        for conv in gen.synthesis.convs:
            conv.noise.weight.fill_(0.1)
    loss = F.softplus(-disc(gen(torch.randn(4, TINY.style_dim)))).mean()
    loss.backward()
    for name, p in list(gen.named_parameters()) + list(disc.named_parameters()):
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_the_prior_table():
    assert priors.list_priors() == ["styleswin", "stylegan2"]
    assert priors.prior_arch_of(TINY) == "stylegan2"
    assert priors.prior_arch_of(styleswin.PRESETS["tiny"]) == "styleswin"
    assert isinstance(priors.build_prior_generator(TINY), StyleGAN2Generator)
    with pytest.raises(TransMRSRError, match="unknown prior"):
        priors.prior_config_class("biggan")


# ---------------------------------------------------------------- stage-1 training


def test_the_stylegan2_prior_config():
    config = prior_preset("tiny", "stylegan2")
    assert config.arch == "stylegan2" and config.model == TINY
    assert config.lr == 2e-3 and config.steps == PRIOR_PRESETS["tiny"].steps
    assert prior_preset("tiny") == PRIOR_PRESETS["tiny"]  # StyleSwin stays the default
    assert config_from_dict(json.loads(json.dumps(config.to_dict()))) == config
    # Checkpoints of runs made before the field are StyleSwin runs.
    old = PRIOR_PRESETS["tiny"].to_dict()
    del old["arch"]
    assert config_from_dict(old) == PRIOR_PRESETS["tiny"]
    with pytest.raises(TransMRSRError, match="not a stylegan2 config"):
        PriorTrainConfig(arch="stylegan2", model=styleswin.PRESETS["tiny"])


def test_stylegan2_prior_resume_matches_an_uninterrupted_run(phantom_data, tmp_path):
    """The generator's noise draws from the global RNG: a run stopped and resumed (whose data
    loader is made at another step) still ends with the same weights."""
    config = with_overrides(
        prior_preset("tiny", "stylegan2"), steps=5, r1_every=2, checkpoint_every=1
    )
    data = select_data([phantom_data], contrast=None, split_file=None, val=1, test=0, seed=0)

    def run(out: Path, stop_after: int | None = None, resume: bool = False) -> None:
        train_prior(
            data,
            config,
            out,
            DistContext(),
            resume_from=prepare_out(out, resume=resume),
            stop_after=stop_after,
            progress=False,
        )

    run(tmp_path / "whole")
    run(tmp_path / "parts", stop_after=2)
    assert not (tmp_path / "parts" / "prior.safetensors").exists()
    run(tmp_path / "parts", resume=True)
    a = load_checkpoint(tmp_path / "whole" / "last.pt")
    b = load_checkpoint(tmp_path / "parts" / "last.pt")
    assert a["config"]["arch"] == "stylegan2"
    for part in ("generator", "discriminator", "ema"):
        for key in a[part]:
            assert torch.equal(a[part][key], b[part][key]), (part, key)
    state, prior_config, info = load_prior(tmp_path / "parts" / "prior.safetensors")
    assert prior_config == TINY and info["steps"] == 5
    trained = StyleGAN2Generator(TINY)  # strict: the file holds a whole StyleGAN2 generator
    trained.load_state_dict({k: v for k, v in state.items() if not k.startswith("discriminator.")})
    assert not torch.equal(trained.synthesis.const, generator().synthesis.const)


def test_train_prior_command_with_arch(phantom_data, tmp_path, capsys):
    out = tmp_path / "prior"
    args = ["train-prior", str(phantom_data), "--config", "tiny", "--arch", "stylegan2"]
    args += ["--out", str(out), "--steps", "3", "--no-progress"]
    assert main(args) == 0
    assert json.loads((out / "config.json").read_text())["arch"] == "stylegan2"
    assert priors.prior_arch_of(load_prior(out / "prior.safetensors")[1]) == "stylegan2"
    assert list((out / "samples").glob("*.png"))
    # A JSON config is of its own arch; --arch may not contradict it.
    conflict = ["train-prior", str(phantom_data), "--config", str(out / "config.json")]
    conflict += ["--arch", "styleswin", "--out", str(tmp_path / "other"), "--no-progress"]
    capsys.readouterr()
    assert main(conflict) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "contradicts" in err[0], err
