"""The MINet comparison network: shapes, global residual, the guide's use, sizes, configs."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from conftest import n_params

from transmrsr.errors import TransMRSRError
from transmrsr.inference.restore import guide_channels
from transmrsr.models import registry
from transmrsr.models.minet import PRESETS, MINet, MINetConfig

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny(**overrides) -> MINet:
    torch.manual_seed(0)
    return MINet(dataclasses.replace(PRESETS["tiny"], **overrides)).eval()


@pytest.mark.parametrize("shape", [(2, 2, 16, 16), (1, 2, 13, 21), (1, 2, 30, 7), (1, 2, 3, 9)])
def test_output_is_one_plane_of_the_input_size(shape):
    """Odd, non-square and thinner-than-padding slices come back at their own size, one
    channel (the guide is not returned)."""
    x = torch.randn(shape)
    with torch.no_grad():
        y = tiny()(x)
    assert y.shape == (shape[0], 1, *shape[2:])
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("shape", [(1, 1, 16, 16), (1, 3, 16, 16), (2, 16, 16)])
def test_rejects_input_without_exactly_one_guide(shape):
    with pytest.raises(ValueError, match=r"\[B, 2, H, W\]"):
        tiny()(torch.zeros(shape))


def test_global_residual_is_on_the_plane():
    """Output = channel 0 + predicted residual: with the last conv zeroed the network gives
    back the plane exactly, and otherwise it does change it."""
    model = tiny()
    x = torch.randn(2, 2, 13, 19)
    with torch.no_grad():
        assert not torch.allclose(model(x), x[:, :1])
        model.tail.weight.zero_()
        model.tail.bias.zero_()
        torch.testing.assert_close(model(x), x[:, :1], rtol=0, atol=0)


def test_the_guide_changes_the_output_through_the_fusions_alone():
    """Another guide gives another output; with the fusions' weights on the reference
    features zeroed, the guide has no path to the output any more."""
    model = tiny()
    x = torch.randn(1, 2, 17, 15)
    other = x.clone()
    other[:, 1] = torch.randn(17, 15)
    width = model.config.n_features
    with torch.no_grad():
        assert not torch.allclose(model(x), model(other))
        for fusion in model.fusions:
            fusion.weight[:, width:] = 0.0
        torch.testing.assert_close(model(x), model(other), rtol=0, atol=0)


def test_gradients_reach_every_parameter():
    model = tiny().train()
    model(torch.randn(1, 2, 16, 16)).square().mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing


def test_every_stage_is_integrated():
    """The reconstruction reads the fused features of every stage: one fusion per group, and
    the integrating 1x1 conv takes n_groups x width channels."""
    for config in PRESETS.values():
        with torch.device("meta"):
            model = MINet(config)
        assert len(model.target_groups) == len(model.reference_groups) == config.n_groups
        assert len(model.fusions) == config.n_groups
        assert model.integrate.in_channels == config.n_groups * config.n_features
        assert all(len(g.blocks) == config.n_blocks for g in model.target_groups)


def test_paper_parameter_count():
    """Width 64, 6 groups of 4 RCABs per branch, reduction 16: 4,092,097 parameters.

    conv3x3 64 -> 64: 36,928; channel attention 64 -> 4 -> 64: 260 + 320 = 580;
    RCAB: 2 x 36,928 + 580 = 74,436; group: 4 x 74,436 + 36,928 = 334,672;
    branch: 640 (head) + 6 x 334,672 = 2,008,672, two branches 4,017,344;
    fusions 6 x (128 x 64 + 64) = 49,536; integration 384 x 64 + 64 = 24,640;
    tail 64 x 9 + 1 = 577.
    """
    with torch.device("meta"):
        model = MINet(PRESETS["paper"])
    conv = 64 * 64 * 9 + 64
    rcab = 2 * conv + (64 * 4 + 4) + (4 * 64 + 64)
    branch = (9 * 64 + 64) + 6 * (4 * rcab + conv)
    expected = 2 * branch + 6 * (128 * 64 + 64) + (384 * 64 + 64) + (64 * 9 + 1)
    assert expected == 4_092_097
    assert n_params(model) == expected


def test_compact_and_tiny_parameter_counts():
    with torch.device("meta"):
        assert n_params(MINet(PRESETS["compact"])) == 291_217
        assert n_params(MINet(PRESETS["tiny"])) == 7_817


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"n_features": 0}, "n_features"),
        ({"n_groups": 0}, "n_groups"),
        ({"n_blocks": 0}, "n_blocks"),
        ({"reduction": 0}, "reduction"),
        ({"n_features": 8, "reduction": 16}, "reduction"),
        ({"guide_channels": 0}, "guide_channels must be 1"),
        ({"guide_channels": 2}, "guide_channels must be 1"),
    ],
)
def test_invalid_configs_are_refused(bad, message):
    with pytest.raises(ValueError, match=message):
        MINetConfig(**bad)


def test_presets_round_trip_through_json_and_the_registry():
    assert {"paper", "compact", "tiny"} <= set(PRESETS)
    for config in PRESETS.values():
        restored = MINetConfig.from_dict(json.loads(json.dumps(config.to_dict())))
        assert restored == config and hash(restored) == hash(config)
        record = registry.config_to_dict(config)
        assert record["arch"] == "minet"
        assert registry.config_from_dict(json.loads(json.dumps(record))) == config


def test_registry_builds_a_guided_network():
    assert "minet" in registry.list_architectures()
    model = registry.build_model("minet", "tiny")
    assert isinstance(model, MINet) and model.config == PRESETS["tiny"]
    assert guide_channels(model) == 1
    assert registry.get_config("minet", "tiny", n_blocks=2).n_blocks == 2
    with pytest.raises(TransMRSRError, match="guide_channels must be 1"):
        registry.build_model("minet", "tiny", guide_channels=0)
