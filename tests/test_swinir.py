"""SwinIR baseline: configuration, sizes, shapes, residual structure, training signal."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from conftest import n_params

from transmrsr.models.swinir import PRESETS, SwinIR, SwinIRConfig

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_config_roundtrips_through_json():
    for config in PRESETS.values():
        d = json.loads(json.dumps(dataclasses.asdict(config)))
        assert SwinIRConfig(**d) == config
        assert SwinIRConfig.from_dict(config.to_dict()) == config


@pytest.mark.parametrize(
    "changes",
    [
        {"depths": (2, 2), "num_heads": (2,)},
        {"depths": ()},
        {"embed_dim": 30, "num_heads": (4, 4)},
        {"window": 0},
        {"depths": (0, 2)},
    ],
)
def test_config_rejects_bad_values(changes):
    with pytest.raises(ValueError):
        dataclasses.replace(PRESETS["tiny"], **changes)


def test_paper_preset_is_swinir_classical():
    paper = PRESETS["paper"]
    assert (paper.embed_dim, paper.depths, paper.num_heads, paper.window) == (
        180,
        (6,) * 6,
        (6,) * 6,
        8,
    )
    with torch.device("meta"):
        model = SwinIR(paper)
    # SwinIR classical x2 has 11.75M parameters, about 0.25M of which are its upsampler.
    assert 11.0e6 < n_params(model) < 12.0e6
    assert len(model.layers) == 6
    assert all(len(layer.blocks) == 6 for layer in model.layers)
    with torch.device("meta"):
        assert n_params(SwinIR(PRESETS["compact"])) < 1_000_000


@pytest.mark.parametrize(
    "shape", [(2, 1, 32, 32), (1, 1, 20, 27), (1, 1, 45, 70), (1, 1, 7, 9), (1, 1, 64, 16)]
)
def test_output_shapes(shape):
    torch.manual_seed(0)
    model = SwinIR(PRESETS["tiny"])
    with torch.no_grad():
        out = model(torch.rand(shape))
    assert out.shape == shape
    assert torch.isfinite(out).all()


def test_global_residual_and_rejects_bad_input():
    model = SwinIR(PRESETS["tiny"])
    with torch.no_grad():
        model.conv_last.weight.zero_()
        model.conv_last.bias.zero_()
        x = torch.rand(2, 1, 24, 24)
        assert torch.equal(model(x), x)
    with pytest.raises(ValueError):
        model(torch.rand(1, 3, 24, 24))


def test_translation_equivariance_away_from_borders():
    """A conv + window-attention network shifted by a whole number of windows gives the
    shifted output in the interior (a check that windows are cut consistently)."""
    torch.manual_seed(0)
    model = SwinIR(dataclasses.replace(PRESETS["tiny"], depths=(2,), num_heads=(2,)))
    x = torch.rand(1, 1, 64, 64)
    with torch.no_grad():
        out = model(x)
        shifted = model(torch.roll(x, shifts=(16, 16), dims=(2, 3)))
    # Output [16, 32) depends on inputs [7, 41) through whole windows only; far from borders
    # and from the wrapped windows of SW-MSA in both frames.
    torch.testing.assert_close(
        torch.roll(out, shifts=(16, 16), dims=(2, 3))[..., 32:48, 32:48],
        shifted[..., 32:48, 32:48],
        rtol=1e-4,
        atol=1e-4,
    )


def test_gradients_reach_every_parameter_and_training_lowers_loss():
    torch.manual_seed(0)
    model = SwinIR(PRESETS["tiny"])
    x = torch.rand(2, 1, 32, 32)
    target = torch.nn.functional.avg_pool2d(x, 3, stride=1, padding=1)
    loss = (model(x) - target).abs().mean()
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name
    optimiser = torch.optim.Adam(model.parameters(), lr=2e-3)
    first = loss.item()
    for _ in range(30):
        loss = (model(x) - target).abs().mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    assert loss.item() < 0.5 * first


def test_training_after_an_inference_mode_forward():
    """Cached window tensors built under inference_mode must not break a later backward."""
    model = SwinIR(PRESETS["tiny"])
    x = torch.rand(1, 1, 20, 28)
    with torch.inference_mode():
        model(x)
    model(x).sum().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
