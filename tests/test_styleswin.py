"""StyleSwin generator, discriminator and the StyleGAN2 layers they share."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch
from conftest import n_params

from transmrsr.models.layers import (
    Blur,
    EqualConv2d,
    EqualLinear,
    PixelNorm,
    sinusoidal_position_encoding_2d,
)
from transmrsr.models.styleswin import (
    PRESETS,
    AdaptiveInstanceNorm,
    StyleGAN2Discriminator,
    StyleSwinBlock,
    StyleSwinConfig,
    StyleSwinGenerator,
    StyleSwinSynthesis,
    minibatch_stddev,
)

TINY = PRESETS["tiny"]

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ---------------------------------------------------------------- config


def test_config_roundtrips_through_json():
    for config in PRESETS.values():
        d = json.loads(json.dumps(dataclasses.asdict(config)))
        assert StyleSwinConfig(**d) == config
        assert StyleSwinConfig.from_dict(config.to_dict()) == config


@pytest.mark.parametrize(
    "changes",
    [
        {"img_size": 48},
        {"img_size": 4, "channels": (8,), "disc_channels": (8,)},
        {"channels": (32, 32, 32)},
        {"disc_channels": (8, 8)},
        {"channels": (96, 32, 32, 16)},  # 3 heads cannot split in two groups
        {"style_dim": 0},
    ],
)
def test_config_rejects_bad_sizes(changes):
    with pytest.raises(ValueError):
        dataclasses.replace(TINY, **changes)


def test_paper_config_matches_spec():
    paper = PRESETS["paper"]
    assert paper.img_size == 256
    assert paper.resolutions == (4, 8, 16, 32, 64, 128, 256)
    assert paper.channels == (512, 512, 512, 512, 256, 128, 64)
    assert paper.n_latent == 14
    with torch.device("meta"):
        gen = StyleSwinGenerator(paper)
    assert n_params(gen.mapping) == 8 * (512 * 512 + 512)


# ---------------------------------------------------------------- layers


def test_equal_linear_scales_weights_and_lr_multiplier():
    torch.manual_seed(0)
    layer = EqualLinear(64, 8, bias_init=0.5, lr_mul=0.01)
    x = torch.randn(4, 64)
    expected = x @ (layer.weight * 0.01 / 8.0).t() + 0.5 * 0.01
    torch.testing.assert_close(layer(x), expected)
    # The stored weight has std 1 / lr_mul, so the effective weight has std 1 / sqrt(in).
    assert 50 < float(layer.weight.detach().std()) < 150
    act = EqualLinear(64, 8, activation=True)
    pre = x @ (act.weight / 8.0).t()
    torch.testing.assert_close(act(x), torch.nn.functional.leaky_relu(pre, 0.2) * math.sqrt(2))


def test_equal_conv_and_pixel_norm():
    conv = EqualConv2d(3, 5, 3, padding=1)
    x = torch.randn(2, 3, 8, 8)
    expected = torch.nn.functional.conv2d(x, conv.weight / math.sqrt(27), padding=1)
    torch.testing.assert_close(conv(x), expected)
    z = PixelNorm()(torch.randn(4, 16) * 7)
    torch.testing.assert_close(z.pow(2).mean(-1), torch.ones(4), rtol=1e-5, atol=1e-5)


def test_blur_is_normalised_and_depthwise():
    blur = Blur((2, 1))
    flat = torch.ones(1, 3, 10, 10)
    out = blur(flat)
    assert out.shape == (1, 3, 10, 10)
    assert torch.allclose(out[..., 3:-3, 3:-3], torch.ones(1, 3, 4, 4))
    impulse = torch.zeros(1, 2, 9, 9)
    impulse[0, 0, 4, 4] = 1.0
    response = Blur((2, 1))(impulse)
    assert response[0, 1].abs().sum() == 0  # channels do not mix
    torch.testing.assert_close(response[0, 0].sum(), torch.tensor(1.0))
    taps = torch.tensor([1.0, 3.0, 3.0, 1.0]) / 8
    torch.testing.assert_close(response[0, 0, 3:7, 3:7], torch.outer(taps, taps).flip(0, 1))
    assert "kernel" not in blur.state_dict()


def test_sinusoidal_encoding_layout():
    enc = sinusoidal_position_encoding_2d(16, 5, 7)
    assert enc.shape == (16, 5, 7)
    # First half varies with the column only, second half with the row only.
    assert torch.equal(enc[:8], enc[:8, :1].expand(8, 5, 7))
    assert torch.equal(enc[8:], enc[8:, :, :1].expand(8, 5, 7))
    torch.testing.assert_close(enc[0, 0], torch.sin(torch.arange(1, 8, dtype=torch.float32)))
    torch.testing.assert_close(enc[4, 0], torch.cos(torch.arange(1, 8, dtype=torch.float32)))
    # Every position gets a distinct code.
    codes = enc.flatten(1).t()
    assert torch.cdist(codes, codes).add(torch.eye(35)).min() > 1e-3


# ---------------------------------------------------------------- generator


def test_adain_starts_as_instance_norm():
    norm = AdaptiveInstanceNorm(6, 4)
    x = torch.randn(2, 5, 7, 6) * 3 + 2
    w = torch.zeros(2, 4)
    out = norm(x, w)
    torch.testing.assert_close(out.mean(dim=(1, 2)), torch.zeros(2, 6), atol=1e-5, rtol=0)
    torch.testing.assert_close(
        out.var(dim=(1, 2), unbiased=False), torch.ones(2, 6), atol=1e-3, rtol=0
    )
    # The style changes gamma and beta per sample.
    assert not torch.allclose(norm(x, torch.randn(2, 4)), out)


def test_styleswin_block_splits_heads_into_plain_and_shifted_windows():
    block = StyleSwinBlock(16, 4, 4, style_dim=8)
    assert [a.shifted for a in block.attn] == [False, True]
    assert [a.num_heads for a in block.attn] == [2, 2]
    assert [a.dim for a in block.attn] == [8, 8]
    x = torch.randn(2, 8, 8, 16)
    assert block(x, torch.randn(2, 8)).shape == x.shape


def test_generator_shapes_and_mapping():
    torch.manual_seed(0)
    gen = StyleSwinGenerator(TINY)
    z = torch.randn(3, TINY.style_dim)
    img = gen(z)
    assert img.shape == (3, 1, 32, 32)
    assert torch.isfinite(img).all()
    w = gen.map_to_w(z)
    assert w.shape == z.shape
    torch.testing.assert_close(gen(w, input_is_w=True), img)
    # Per-block latents: the same w in every slot reproduces the broadcast call.
    ws = w[:, None].expand(-1, TINY.n_latent, -1)
    torch.testing.assert_close(gen.synthesis(ws), img)
    with pytest.raises(ValueError):
        gen.synthesis(torch.randn(3, TINY.n_latent + 1, TINY.style_dim))


def test_generator_truncation():
    torch.manual_seed(0)
    gen = StyleSwinGenerator(TINY)
    z = torch.randn(2, TINY.style_dim)
    centre = gen.mean_w(256)
    with pytest.raises(ValueError):
        gen(z, truncation=0.5)
    # psi = 0 collapses every sample onto the centre.
    collapsed = gen(z, truncation=0.0, truncation_w=centre)
    torch.testing.assert_close(collapsed[0], collapsed[1])
    torch.testing.assert_close(collapsed[:1], gen(centre[None], input_is_w=True))


def test_synthesis_without_torgb_returns_features_and_same_names():
    with_rgb = StyleSwinSynthesis(TINY, to_rgb=True)
    without = StyleSwinSynthesis(TINY, to_rgb=False)
    keys_rgb = {k for k in with_rgb.state_dict() if not k.startswith("to_rgbs.")}
    assert keys_rgb == set(without.state_dict())
    feats = without(torch.randn(2, TINY.style_dim))
    assert feats.shape == (2, TINY.channels[-1], 32, 32)


def test_synthesis_stage_hook_sees_every_stage():
    synthesis = StyleSwinSynthesis(TINY, to_rgb=False)
    seen = []

    def hook(stage, x):
        seen.append((stage, tuple(x.shape[1:])))
        return x

    synthesis(torch.randn(1, TINY.style_dim), stage_hook=hook)
    stages = zip(TINY.resolutions, TINY.channels, strict=True)
    assert seen == [(i, (r, r, c)) for i, (r, c) in enumerate(stages)]


# ---------------------------------------------------------------- discriminator


def test_discriminator_output_and_features():
    torch.manual_seed(0)
    disc = StyleGAN2Discriminator(TINY)
    x = torch.randn(4, 1, 32, 32)
    logits = disc(x)
    assert logits.shape == (4, 1)
    feats = disc.features(x)
    sizes = [f.shape[-1] for f in feats]
    assert sizes == [32, 16, 8, 4]
    assert [f.shape[1] for f in feats] == list(reversed(TINY.disc_channels))
    with pytest.raises(ValueError):
        disc(torch.randn(2, 1, 16, 16))


@pytest.mark.parametrize("batch", [1, 3, 4, 6, 8])
def test_minibatch_stddev_any_batch(batch):
    x = torch.randn(batch, 5, 4, 4)
    out = minibatch_stddev(x)
    assert out.shape == (batch, 6, 4, 4)
    torch.testing.assert_close(out[:, :5], x)
    if batch == 1:
        torch.testing.assert_close(out[:, 5], torch.full((1, 4, 4), 1e-4))
    else:
        assert (out[:, 5] > 0.1).all()


def test_minibatch_stddev_value_for_one_group():
    x = torch.tensor([0.0, 2.0]).view(2, 1, 1, 1).expand(2, 3, 4, 4).contiguous()
    out = minibatch_stddev(x)
    torch.testing.assert_close(out[:, 3], torch.ones(2, 4, 4), rtol=1e-6, atol=1e-6)


def test_gan_gradients_reach_every_parameter():
    torch.manual_seed(0)
    gen = StyleSwinGenerator(TINY)
    disc = StyleGAN2Discriminator(TINY)
    with torch.no_grad():
        for stage in gen.synthesis.stages:
            if stage.upsample is not None:
                stage.upsample.pos_scale.fill_(0.5)
    loss = torch.nn.functional.softplus(-disc(gen(torch.randn(4, TINY.style_dim)))).mean()
    loss.backward()
    for name, p in list(gen.named_parameters()) + list(disc.named_parameters()):
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name
