"""The EDSR and Restormer comparison networks: shapes, global residual, sizes, configs."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
import torch.nn.functional as F

from transmrsr.models import edsr, restormer
from transmrsr.models.edsr import EDSR, EDSRConfig
from transmrsr.models.restormer import ChannelLayerNorm, Restormer, RestormerConfig

NETWORKS = [(EDSR, edsr.PRESETS), (Restormer, restormer.PRESETS)]


def tiny(cls, presets, **overrides):
    torch.manual_seed(0)
    return cls(dataclasses.replace(presets["tiny"], **overrides)).eval()


@pytest.mark.parametrize(("cls", "presets"), NETWORKS)
@pytest.mark.parametrize("shape", [(2, 1, 16, 16), (1, 1, 13, 21), (1, 1, 30, 7), (1, 1, 3, 9)])
def test_output_has_the_input_shape(cls, presets, shape):
    """Odd, non-square and thinner-than-padding slices all come back at their own size."""
    model = tiny(cls, presets)
    x = torch.randn(shape)
    with torch.no_grad():
        y = model(x)
    assert y.shape == x.shape
    assert torch.isfinite(y).all()


@pytest.mark.parametrize(("cls", "presets"), NETWORKS)
def test_rejects_multi_channel_input(cls, presets):
    with pytest.raises(ValueError, match=r"\[B, 1, H, W\]"):
        tiny(cls, presets)(torch.zeros(1, 3, 16, 16))


@pytest.mark.parametrize(
    ("cls", "presets", "last"), [(*NETWORKS[0], "tail"), (*NETWORKS[1], "output")]
)
def test_global_residual(cls, presets, last):
    """Output = input + predicted residual: with the last conv zeroed the network is identity,
    and otherwise it does change the image (the residual branch is really used)."""
    model = tiny(cls, presets)
    x = torch.randn(2, 1, 13, 19)
    with torch.no_grad():
        assert not torch.allclose(model(x), x)
        conv = getattr(model, last)
        conv.weight.zero_()
        if conv.bias is not None:
            conv.bias.zero_()
        torch.testing.assert_close(model(x), x, rtol=0, atol=0)


@pytest.mark.parametrize(("cls", "presets"), NETWORKS)
def test_gradients_reach_every_parameter(cls, presets):
    model = tiny(cls, presets).train()
    model(torch.randn(1, 1, 16, 16)).square().mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing


def test_restormer_crop_matches_unpadded_interior():
    """Padding happens only at the bottom/right, so a multiple-of-8 input is not padded and a
    padded one is cropped back to the original pixels (top-left aligned)."""
    model = tiny(Restormer, restormer.PRESETS)
    x = torch.randn(1, 1, 21, 13)
    padded = F.pad(x, (0, 3, 0, 3), mode="reflect")
    with torch.no_grad():
        torch.testing.assert_close(model(x), model(padded)[..., :21, :13])


def test_edsr_residual_scaling_is_applied():
    model = tiny(EDSR, edsr.PRESETS, res_scale=0.1)
    block = model.body[0]
    x = torch.randn(1, 8, 5, 5)
    with torch.no_grad():
        branch = block.conv2(F.relu(block.conv1(x)))
        torch.testing.assert_close(block(x), x + 0.1 * branch)


@pytest.mark.parametrize("bias", [True, False])
def test_channel_layernorm(bias):
    norm = ChannelLayerNorm(6, bias=bias)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
        if norm.bias is not None:
            norm.bias.uniform_(-1, 1)
    x = torch.randn(2, 6, 4, 5) * 3 + 1
    tokens = x.permute(0, 2, 3, 1)
    if bias:
        expected = F.layer_norm(tokens, (6,), norm.weight, norm.bias, 1e-5)
    else:  # BiasFree_LayerNorm: scale by 1/std without centring
        var = tokens.var(-1, keepdim=True, unbiased=False)
        expected = tokens / torch.sqrt(var + 1e-5) * norm.weight
    torch.testing.assert_close(norm(x), expected.permute(0, 3, 1, 2))


def test_restormer_bias_free_variant_has_no_norm_bias():
    model = tiny(Restormer, restormer.PRESETS, layernorm_type="bias_free")
    assert all(m.bias is None for m in model.modules() if isinstance(m, ChannelLayerNorm))
    assert model(torch.randn(1, 1, 8, 8)).shape == (1, 1, 8, 8)


def test_edsr_paper_parameter_count():
    """EDSR's large model has 43M parameters with its x4 upsampler and 3 colour channels;
    without the upsampler and with one channel it is 38.4M (the 32 blocks hold 37.8M)."""
    with torch.device("meta"):
        model = EDSR(edsr.PRESETS["paper"])
    conv = 256 * 256 * 9 + 256
    expected = 32 * 2 * conv + conv + (9 * 256 + 256) + (256 * 9 + 1)
    count = sum(p.numel() for p in model.parameters())
    assert count == expected
    assert 37e6 < count < 40e6


def test_restormer_paper_parameter_count():
    """The Restormer paper reports 26.13M parameters (3-channel input and output); one channel
    removes only the 2,592 weights of the first and last 3x3 convs."""
    with torch.device("meta"):
        model = Restormer(restormer.PRESETS["paper"])
    count = sum(p.numel() for p in model.parameters())
    assert 26.0e6 < count < 26.2e6


@pytest.mark.parametrize(
    ("config_cls", "presets"), [(EDSRConfig, edsr.PRESETS), (RestormerConfig, restormer.PRESETS)]
)
def test_presets_round_trip_through_json(config_cls, presets):
    assert {"paper", "compact", "tiny"} <= set(presets)
    for config in presets.values():
        restored = config_cls.from_dict(json.loads(json.dumps(config.to_dict())))
        assert restored == config
        assert hash(restored) == hash(config)


@pytest.mark.parametrize(
    ("config_cls", "bad", "message"),
    [
        (EDSRConfig, {"n_blocks": 0}, "n_blocks"),
        (EDSRConfig, {"n_features": 0}, "n_features"),
        (EDSRConfig, {"res_scale": 0.0}, "res_scale"),
        (RestormerConfig, {"num_blocks": (1, 1, 1)}, "one entry per level"),
        (RestormerConfig, {"dim": 7}, "dim"),
        (RestormerConfig, {"heads": (1, 2, 4, 5)}, "not divisible by 5 heads"),
        (RestormerConfig, {"num_refinement_blocks": -1}, "num_refinement_blocks"),
        (RestormerConfig, {"layernorm_type": "group"}, "layernorm_type"),
        (RestormerConfig, {"ffn_expansion_factor": 0}, "ffn_expansion_factor"),
    ],
)
def test_invalid_configs_are_refused(config_cls, bad, message):
    with pytest.raises(ValueError, match=message):
        config_cls(**bad)
