"""Stage-2 loss: VGG19 weight loading, Gram matrices, perceptual terms, SRLoss."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from transmrsr.errors import TransMRSRError
from transmrsr.models.styleswin import PRESETS, StyleGAN2Discriminator
from transmrsr.training.losses import (
    VGG19_CONFIG,
    DiscriminatorFeatures,
    PerceptualLoss,
    SRLoss,
    VGG19Features,
    build_sr_loss,
    gram_matrix,
)

# torchvision vgg19().features conv indices (the others are ReLU / MaxPool).
TV_CONV_INDICES = (0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34)


def torchvision_like_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """A random state dict with torchvision's vgg19 key layout, classifier included."""
    g = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}
    in_ch, idx = 3, 0
    for v in VGG19_CONFIG:
        if v == "M":
            idx += 1
            continue
        out_ch = int(v)
        state[f"features.{idx}.weight"] = torch.randn(out_ch, in_ch, 3, 3, generator=g) * 0.05
        state[f"features.{idx}.bias"] = torch.randn(out_ch, generator=g) * 0.01
        in_ch, idx = out_ch, idx + 2
    state["classifier.0.weight"] = torch.randn(8, 4)
    state["classifier.0.bias"] = torch.randn(8)
    state["classifier.6.weight"] = torch.randn(3, 8)
    return state


@pytest.fixture(scope="module")
def vgg_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("vgg") / "vgg19-dcbb9e9d.pth"
    torch.save(torchvision_like_state(), path)
    return path


@pytest.fixture(scope="module")
def vgg(vgg_file: Path) -> VGG19Features:
    return VGG19Features.from_file(vgg_file)


def test_layout_matches_torchvision_indices() -> None:
    net = VGG19Features(layers=(36,))
    convs = tuple(i for i, m in enumerate(net.features) if isinstance(m, torch.nn.Conv2d))
    pools = tuple(i for i, m in enumerate(net.features) if isinstance(m, torch.nn.MaxPool2d))
    assert convs == TV_CONV_INDICES
    assert pools == (4, 9, 18, 27, 36)
    assert len(net.features) == 37
    assert all(not m.inplace for m in net.features if isinstance(m, torch.nn.ReLU)), (
        "in-place ReLU would overwrite conv-index feature maps"
    )


def test_from_file_loads_weights_and_truncates(vgg_file: Path, vgg: VGG19Features) -> None:
    state = torch.load(vgg_file, weights_only=True)
    assert len(vgg.features) == 11  # indices 0..10, nothing deeper
    for key, value in vgg.state_dict().items():
        assert torch.equal(value, state[key]), key
    assert set(vgg.state_dict()) == {
        f"features.{i}.{p}" for i in (0, 2, 5, 7, 10) for p in ("weight", "bias")
    }
    assert not any(p.requires_grad for p in vgg.parameters())
    assert not vgg.training


def test_from_file_safetensors(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    state = torchvision_like_state(seed=3)
    path = tmp_path / "vgg19.safetensors"
    save_file(state, str(path))
    net = VGG19Features.from_file(path, layers=(2,))
    assert torch.equal(net.features[2].weight, state["features.2.weight"])


def test_missing_deep_key_is_named(tmp_path: Path) -> None:
    state = torchvision_like_state()
    del state["features.34.weight"]
    path = tmp_path / "partial.pth"
    torch.save(state, path)
    # Shallow layers do not need the key ...
    VGG19Features.from_file(path, layers=(2, 4, 7, 10))
    # ... deep ones do.
    with pytest.raises(TransMRSRError, match=r"features\.34\.weight") as info:
        VGG19Features.from_file(path, layers=(2, 35))
    assert "vgg19-dcbb9e9d.pth" in str(info.value)
    assert "\n" not in str(info.value)


def test_wrong_shape_is_named(tmp_path: Path) -> None:
    state = torchvision_like_state()
    state["features.7.weight"] = torch.zeros(128, 64, 1, 1)
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    with pytest.raises(TransMRSRError, match=r"features\.7\.weight.*\(128, 64, 1, 1\)"):
        VGG19Features.from_file(path)


def test_missing_and_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(TransMRSRError, match=r"not found.*vgg19-dcbb9e9d\.pth.*--vgg-weights"):
        VGG19Features.from_file(tmp_path / "nope.pth")
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a torch file")
    with pytest.raises(TransMRSRError, match="cannot read") as info:
        VGG19Features.from_file(junk)
    assert "\n" not in str(info.value)


def test_forward_normalises_and_returns_requested_layers(vgg: VGG19Features) -> None:
    x = torch.rand(2, 1, 32, 32)
    feats = vgg(x)
    assert [tuple(f.shape) for f in feats] == [
        (2, 64, 32, 32),
        (2, 64, 16, 16),
        (2, 128, 16, 16),
        (2, 256, 8, 8),  # index 10: first 256-wide conv, after the 2nd pool
    ]
    # Reference: replicate + ImageNet normalisation, then the first conv.
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    ref = torch.nn.functional.conv2d(
        (x.repeat(1, 3, 1, 1) - mean) / std, vgg.features[0].weight, vgg.features[0].bias, padding=1
    )
    # Index 2 is the (pre-ReLU) output of the second conv applied to ReLU(first conv).
    ref = torch.nn.functional.conv2d(
        torch.relu(ref), vgg.features[2].weight, vgg.features[2].bias, padding=1
    )
    torch.testing.assert_close(feats[0], ref)
    assert torch.equal(vgg(x)[3], feats[3])  # deterministic, no in-place corruption


def test_gram_matrix_matches_einsum() -> None:
    f = torch.randn(2, 5, 4, 3)
    ref = torch.einsum("bchw,bdhw->bcd", f, f) / (5 * 4 * 3)
    torch.testing.assert_close(gram_matrix(f), ref)
    ones = torch.ones(1, 2, 4, 4)
    torch.testing.assert_close(gram_matrix(ones), torch.full((1, 2, 2), 16 / 32))


def test_identical_images_give_zero_loss(vgg: VGG19Features) -> None:
    x = torch.rand(2, 1, 32, 32)
    loss = SRLoss(vgg, 0.5, 0.5)
    total, parts = loss(x, x.clone())
    assert parts["l1"] == 0.0 and parts["content"] == 0.0 and parts["style"] == 0.0
    assert total.item() == 0.0


def test_total_is_weighted_sum_and_gradient_reaches_input(vgg: VGG19Features) -> None:
    torch.manual_seed(0)
    target = torch.rand(1, 1, 32, 32)
    pred = torch.rand(1, 1, 32, 32, requires_grad=True)
    content, style = PerceptualLoss(vgg)(pred, target)
    assert content.item() > 0 and style.item() > 0
    loss = SRLoss(vgg, content_weight=0.3, style_weight=2.0)
    total, parts = loss(pred, target)
    expected = parts["l1"] + 0.3 * parts["content"] + 2.0 * parts["style"]
    assert total.item() == pytest.approx(expected, rel=1e-5)
    total.backward()
    assert pred.grad is not None and pred.grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in vgg.parameters())


def test_backbone_stays_frozen_in_train_mode(vgg: VGG19Features) -> None:
    loss = SRLoss(vgg)
    loss.train()
    assert not vgg.training
    assert not any(p.requires_grad for p in loss.parameters())


def test_zero_weights_need_no_backbone() -> None:
    loss = build_sr_loss(vgg_weights=None, content_weight=0.0, style_weight=0.0)
    assert loss.perceptual is None
    pred, target = torch.rand(1, 1, 16, 16), torch.rand(1, 1, 16, 16)
    total, parts = loss(pred, target)
    assert total.item() == pytest.approx(torch.nn.functional.l1_loss(pred, target).item())
    assert parts["content"] == 0.0 and parts["style"] == 0.0


def test_positive_weights_without_weights_refuse() -> None:
    with pytest.raises(TransMRSRError, match="perceptual loss needs VGG19 weights"):
        build_sr_loss(vgg_weights=None)
    with pytest.raises(TransMRSRError, match="--vgg-weights"):
        SRLoss(None, content_weight=0.0, style_weight=0.5)


def test_build_sr_loss_from_file(vgg_file: Path) -> None:
    loss = build_sr_loss(vgg_weights=str(vgg_file))
    assert isinstance(loss.perceptual.backbone, VGG19Features)  # type: ignore[union-attr]
    assert (loss.content_weight, loss.style_weight) == (0.5, 0.5)
    with pytest.raises(TransMRSRError, match="unknown perceptual backbone"):
        build_sr_loss(backbone="alexnet", vgg_weights=str(vgg_file))
    with pytest.raises(TransMRSRError, match="needs a stage-1 discriminator"):
        build_sr_loss(backbone="discriminator", vgg_weights=None)


def test_discriminator_backbone() -> None:
    torch.manual_seed(0)
    disc = StyleGAN2Discriminator(PRESETS["tiny"])
    loss = build_sr_loss(backbone="discriminator", vgg_weights=None, discriminator=disc)
    backbone = loss.perceptual.backbone  # type: ignore[union-attr]
    assert isinstance(backbone, DiscriminatorFeatures)
    # The caller's discriminator is untouched (still trainable).
    assert all(p.requires_grad for p in disc.parameters())
    assert not any(p.requires_grad for p in backbone.parameters())
    x = torch.rand(2, 1, 32, 32)
    feats = backbone(x)
    assert [f.shape[-1] for f in feats] == [32, 16, 8, 4]
    assert loss(x, x.clone())[0].item() == 0.0
    pred = torch.rand(2, 1, 32, 32, requires_grad=True)
    total, parts = loss(pred, x)
    assert parts["content"] > 0 and parts["style"] > 0
    total.backward()
    assert pred.grad is not None and pred.grad.abs().sum() > 0
