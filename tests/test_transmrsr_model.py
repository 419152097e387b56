"""The TransMRSR network: sizes, ablation switches, SDT, CWSS, prior loading, training."""

from __future__ import annotations

import dataclasses
import json
import time
import warnings

import numpy as np
import pytest
import torch
from scipy import ndimage

from transmrsr.errors import TransMRSRError
from transmrsr.models.layers import tiled_forward
from transmrsr.models.styleswin import StyleSwinGenerator
from transmrsr.models.transmrsr import (
    CENTROIDS_KEY,
    CWSS,
    PRESETS,
    SelfDistilledTruncation,
    TransMRSR,
    TransMRSRConfig,
    with_guide,
)

TINY = PRESETS["tiny"]
STYLE_DIM = TINY.prior.style_dim
OVERFIT_STEPS = 250


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def make_model(seed: int = 0, **switches: bool) -> TransMRSR:
    """A tiny TransMRSR with random centroids (when SDT is on)."""
    torch.manual_seed(seed)
    model = TransMRSR(dataclasses.replace(TINY, **switches))
    if model.sdt is not None:
        model.sdt.set_centroids(torch.randn(TINY.n_centroids, STYLE_DIM))
    return model


def randomise_cwss(model: TransMRSR) -> None:
    """Move CWSS away from its identity initialisation."""
    assert model.cwss is not None
    with torch.no_grad():
        for module in model.cwss.modules():
            if isinstance(module, torch.nn.Conv2d):
                module.weight.normal_(0.0, 0.1)


def capture(module: torch.nn.Module, store: dict, name: str, inputs: bool = False):
    def hook(_module, args, output):
        store[name] = args if inputs else output

    return module.register_forward_hook(hook)


# ---------------------------------------------------------------- config and sizes


def test_config_roundtrips_through_json():
    for config in PRESETS.values():
        d = json.loads(json.dumps(dataclasses.asdict(config)))
        assert TransMRSRConfig(**d) == config
        assert TransMRSRConfig.from_dict(config.to_dict()) == config


@pytest.mark.parametrize(
    "changes",
    [
        {"psi": 0.0},
        {"psi": 1.5},
        {"encoder_channels": (16, 16, 32)},
        {"encoder_channels": (8, 16, 32, 32)},  # F0 width must equal the decoder's last width
        {"tile_overlap": 32},
        {"n_centroids": 0},
    ],
)
def test_config_rejects_bad_values(changes):
    with pytest.raises(ValueError):
        dataclasses.replace(TINY, **changes)


def test_paper_parameter_count_matches_paper():
    with torch.device("meta"):
        model = TransMRSR(PRESETS["paper"])
    counts = model.parameter_counts()
    assert abs(counts["total"] - 161e6) < 0.1 * 161e6
    # The linear to the 14 latents alone is about 59M (SPEC 3.3).
    assert counts["latent_head"] == pytest.approx(59e6, rel=0.01)
    assert counts["total"] == sum(p.numel() for p in model.parameters())
    assert model.config.n_latent == 14


def test_compact_and_tiny_sizes():
    with torch.device("meta"):
        compact = TransMRSR(PRESETS["compact"])
        tiny = TransMRSR(TINY)
    assert compact.config.img_size == 256
    assert compact.parameter_counts()["total"] <= 8_000_000
    assert tiny.parameter_counts()["total"] <= 500_000


@pytest.mark.parametrize(
    "shape", [(2, 1, 32, 32), (1, 1, 20, 27), (1, 1, 45, 70), (1, 1, 33, 31), (2, 1, 7, 64)]
)
def test_tiny_output_shapes(shape):
    model = make_model()
    with torch.no_grad():
        out = model(torch.rand(shape))
    assert out.shape == shape
    assert torch.isfinite(out).all()


def test_smaller_inputs_are_padded_and_cropped():
    model = make_model()
    x = torch.rand(1, 1, 20, 27)
    padded = torch.nn.functional.pad(x, (2, 3, 6, 6))  # centred in 32 x 32
    with torch.no_grad():
        torch.testing.assert_close(model(x), model(padded)[..., 6:26, 2:29])


def test_larger_inputs_are_tiled():
    model = make_model()
    x = torch.rand(1, 1, 40, 56)
    with torch.no_grad():
        expected = tiled_forward(model._forward_fixed, x, 32, TINY.tile_overlap)
        torch.testing.assert_close(model(x), expected)


def test_rejects_wrong_input_layout():
    model = make_model()
    with pytest.raises(ValueError):
        model(torch.rand(1, 2, 32, 32))
    with pytest.raises(ValueError):
        model(torch.rand(32, 32))


def test_compact_forward_at_256():
    torch.manual_seed(0)
    model = TransMRSR(PRESETS["compact"]).eval()
    model.sdt.set_centroids(torch.randn(8, PRESETS["compact"].prior.style_dim))
    with torch.no_grad():
        out = model(torch.rand(1, 1, 256, 256))
    assert out.shape == (1, 1, 256, 256)
    assert torch.isfinite(out).all()


# ---------------------------------------------------------------- tiling


@pytest.mark.parametrize(("h", "w"), [(32, 32), (40, 56), (100, 33), (20, 70), (5, 5)])
def test_tiled_forward_is_exact_for_pointwise_functions(h, w):
    x = torch.randn(2, 1, h, w)

    def fn(t):
        return torch.cat([2 * t + 1, t**2], dim=1)

    out = tiled_forward(fn, x, tile=32, overlap=8)
    torch.testing.assert_close(out, fn(x))


def test_tiled_forward_blends_smoothly():
    """Each tile adds its own offset: the blend must move gradually between tiles."""
    calls = []

    def fn(t):
        calls.append(t.shape)
        return torch.full_like(t, float(len(calls)))

    out = tiled_forward(fn, torch.zeros(1, 1, 32, 80), tile=32, overlap=16)
    assert len(calls) == 4  # columns start at 0, 16, 32, 48
    row = out[0, 0, 16]
    assert row[0] == 1 and row[-1] == 4
    assert (row[1:] - row[:-1] >= -1e-6).all()  # monotone
    assert (row[1:] - row[:-1]).max() < 0.5  # no seam
    with pytest.raises(ValueError):
        tiled_forward(fn, torch.zeros(1, 1, 8, 8), tile=8, overlap=8)


# ---------------------------------------------------------------- SDT


def test_sdt_picks_nearest_centroid():
    torch.manual_seed(0)
    sdt = SelfDistilledTruncation(16, 5, psi=0.7)
    centroids = torch.randn(5, 16) * 3
    sdt.set_centroids(centroids)
    w = torch.randn(4, 6, 16) * 3
    out = sdt(w)
    c_np, w_np = centroids.numpy(), w.numpy().reshape(-1, 16)
    for i, wi in enumerate(w_np):
        dist = [float(np.sum((wi - c) ** 2)) for c in c_np]
        nearest = int(np.argmin(dist))
        assert int(sdt.nearest(w).reshape(-1)[i]) == nearest
        expected = c_np[nearest] + 0.7 * (wi - c_np[nearest])
        np.testing.assert_allclose(out.reshape(-1, 16)[i].numpy(), expected, rtol=1e-5, atol=1e-5)
    # Not the farthest centroid (the authors' argmax bug).
    farthest = torch.cdist(w.reshape(-1, 16), centroids).argmax(-1)
    assert not torch.equal(sdt.nearest(w).reshape(-1), farthest)


def test_sdt_identity_at_psi_one_and_refuses_without_centroids():
    w = torch.randn(2, 3, 8)
    assert torch.equal(SelfDistilledTruncation(8, 4, psi=1.0)(w), w)
    sdt = SelfDistilledTruncation(8, 4, psi=0.9)
    with pytest.raises(RuntimeError, match="no centroids"):
        sdt(w)
    with pytest.raises(TransMRSRError):
        sdt.set_centroids(torch.randn(3, 8))
    with pytest.raises(TransMRSRError):
        sdt.set_centroids(torch.full((4, 8), float("nan")))
    sdt.set_centroids(torch.zeros(4, 8))
    torch.testing.assert_close(sdt(w), 0.9 * w)
    assert {"centroids", "has_centroids"} <= set(sdt.state_dict())


# ---------------------------------------------------------------- CWSS


def test_cwss_starts_as_exact_identity():
    torch.manual_seed(0)
    cwss = CWSS(24, 32)
    x = torch.randn(2, 8, 8, 32)
    cond = torch.randn(2, 8, 8, 24) * 10
    assert torch.equal(cwss(x, cond), x)
    randomise = torch.nn.init.normal_
    randomise(cwss.scale[-1].weight, std=0.1)
    out = cwss(x, cond)
    assert not torch.equal(out[..., :16], x[..., :16])
    assert torch.equal(out[..., 16:], x[..., 16:])  # second half passes unchanged


def test_model_with_fresh_cwss_equals_model_without_mref():
    with_mref = make_model(seed=0)
    without = make_model(seed=1, use_mref=False)
    shared = {k: v for k, v in with_mref.state_dict().items() if not k.startswith("cwss.")}
    without.load_state_dict(shared, strict=True)
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(with_mref(x), without(x), rtol=0, atol=0)


# ---------------------------------------------------------------- ablation switches


def _perturb_multiresolution_features(model: TransMRSR):
    """Forward hook on the encoder: scale every map except the 4 x 4 one (the latent input)."""

    def hook(_module, _args, feats):
        return [f * 3.0 + 1.0 for f in feats[:-1]] + [feats[-1]]

    return model.encoder.register_forward_hook(hook)


def test_no_mref_ignores_multiresolution_features():
    x = torch.rand(2, 1, 32, 32)
    for use_mref in (True, False):
        model = make_model(use_mref=use_mref)
        if use_mref:
            randomise_cwss(model)
        with torch.no_grad():
            base = model(x)
            handle = _perturb_multiresolution_features(model)
            perturbed = model(x)
            handle.remove()
        if use_mref:
            assert (perturbed - base).abs().max() > 1e-4
        else:
            assert model.cwss is None
            assert not any("cwss" in name for name, _ in model.named_parameters())
            torch.testing.assert_close(perturbed, base, rtol=0, atol=0)


def test_switches_leave_no_dead_parameters():
    full = make_model().parameter_counts()
    no_mref = make_model(use_mref=False).parameter_counts()
    assert no_mref["cwss"] == 0
    assert full["total"] - no_mref["total"] == full["cwss"]
    for switch in ("use_sdt", "use_skip", "use_prior"):
        assert make_model(**{switch: False}).parameter_counts() == full
    assert make_model(use_sdt=False).sdt is None


@pytest.mark.parametrize("use_skip", [True, False])
def test_skip_switch_controls_f0_in_fusion(use_skip):
    model = make_model(use_skip=use_skip)
    seen: dict = {}
    hooks = [
        capture(model.shallow, seen, "f0"),
        capture(model.decoder, seen, "decoder"),
        capture(model.reconstruction, seen, "fusion", inputs=True),
    ]
    with torch.no_grad():
        model(torch.rand(2, 1, 32, 32))
    for h in hooks:
        h.remove()
    fusion = seen["fusion"][0]
    expected = seen["decoder"] + seen["f0"] if use_skip else seen["decoder"]
    assert torch.equal(fusion, expected)


@pytest.mark.parametrize("use_sdt", [True, False])
def test_sdt_switch_controls_latents(use_sdt):
    model = make_model(use_sdt=use_sdt)
    seen: dict = {}
    hooks = [
        capture(model.latent_head, seen, "w"),
        capture(model.decoder, seen, "decoder_in", inputs=True),
    ]
    with torch.no_grad():
        model(torch.rand(2, 1, 32, 32))
    for h in hooks:
        h.remove()
    w, ws = seen["w"], seen["decoder_in"][0]
    assert w.shape == (2, TINY.n_latent, STYLE_DIM)
    if use_sdt:
        torch.testing.assert_close(ws, model.sdt(w))
        assert not torch.equal(ws, w)
    else:
        assert torch.equal(ws, w)


# ---------------------------------------------------------------- prior loading


def prior_state_dict(seed: int = 5) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    state = dict(StyleSwinGenerator(TINY.prior).state_dict())
    state[CENTROIDS_KEY] = torch.randn(TINY.n_centroids, STYLE_DIM)
    return state


def test_load_prior_copies_synthesis_and_centroids():
    prior = prior_state_dict()
    model = make_model()
    model.load_prior(prior)
    decoder = model.decoder.state_dict()
    synthesis = {
        k.removeprefix("synthesis."): v
        for k, v in prior.items()
        if k.startswith("synthesis.") and not k.startswith("synthesis.to_rgbs.")
    }
    assert set(decoder) == set(synthesis)
    for key, value in synthesis.items():
        assert torch.equal(decoder[key], value), key
    assert torch.equal(model.sdt.centroids, prior[CENTROIDS_KEY])
    # The decoder now behaves exactly as the generator's synthesis network without ToRGB.
    gen = StyleSwinGenerator(TINY.prior)
    gen.load_state_dict({k: v for k, v in prior.items() if k != CENTROIDS_KEY})
    gen.synthesis.to_rgbs = None  # the generator's synthesis, returning features
    w = torch.randn(2, TINY.n_latent, STYLE_DIM)
    with torch.no_grad():
        torch.testing.assert_close(gen.synthesis(w), model.decoder(w), rtol=0, atol=0)


@pytest.mark.parametrize("corruption", ["missing", "unexpected", "shape"])
def test_load_prior_rejects_mismatches(corruption):
    prior = prior_state_dict()
    key = "synthesis.stages.1.blocks.0.attn.0.qkv.weight"
    if corruption == "missing":
        del prior[key]
    elif corruption == "unexpected":
        prior["synthesis.extra.weight"] = torch.zeros(1)
    else:
        prior[key] = torch.zeros(3, 3)
    model = make_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(TransMRSRError) as err:
        model.load_prior(prior)
    message = str(err.value)
    assert {"missing": key, "unexpected": "synthesis.extra.weight", "shape": key}[corruption] in (
        message
    )
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_no_prior_model_refuses_to_load():
    model = make_model(use_prior=False)
    with pytest.raises(TransMRSRError, match="use_prior=False"):
        model.load_prior(prior_state_dict())


def test_prior_centroids_ignored_without_sdt():
    model = make_model(use_sdt=False)
    model.load_prior(prior_state_dict())
    assert model.sdt is None


# ---------------------------------------------------------------- training


def test_gradients_reach_every_parameter():
    model = make_model()
    x = torch.rand(2, 1, 32, 32)
    target = torch.rand(2, 1, 32, 32)
    (model(x) - target).abs().mean().backward()
    zero = []
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        if p.grad.abs().sum() == 0:
            zero.append(name)
    # Identity-initialised CWSS: only the first conv of each branch waits for the last one.
    assert zero and all(n.startswith("cwss.") and ".0." in n for n in zero)
    model.zero_grad()
    randomise_cwss(model)
    (model(x) - target).abs().mean().backward()
    for name, p in model.named_parameters():
        assert p.grad.abs().sum() > 0, name


def mni_training_pair(size: int, factor: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """A real HR slice (MNI152 template, axial) at ``size`` and its thick-slice version along
    the first axis (Gaussian slice profile, every ``factor``-th line, linear interpolation)."""
    from nilearn.datasets import load_mni152_template

    vol = np.asarray(load_mni152_template(resolution=1).get_fdata(), dtype=np.float32)
    sl = vol[:, :, vol.shape[2] // 2 + 10]
    nz = np.argwhere(sl > 0.05 * sl.max())
    (y0, x0), (y1, x1) = nz.min(0), nz.max(0) + 1
    half = max(y1 - y0, x1 - x0) // 2 + 2
    cy, cx = (y0 + y1) // 2 + half, (x0 + x1) // 2 + half
    sl = np.pad(sl, half)[cy - half : cy + half, cx - half : cx + half]
    hr = ndimage.zoom(sl, size / sl.shape[0], order=3)[:size, :size]
    hr = np.clip(hr / np.percentile(hr, 99.5), 0, 1).astype(np.float32)
    blurred = ndimage.gaussian_filter1d(hr, sigma=factor / 2.3548, axis=0, mode="nearest")
    thick = blurred[::factor]
    pos = np.arange(size) / factor
    lr = np.stack(
        [np.interp(pos, np.arange(thick.shape[0]), thick[:, j]) for j in range(size)], axis=1
    )
    return lr.astype(np.float32), hr


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(10 * torch.log10(1.0 / torch.mean((a - b) ** 2)))


def test_tiny_overfits_one_real_slice():
    """Adam on L1 for 250 steps raises PSNR by about 15 dB (10-20 s on one core)."""
    lr, hr = mni_training_pair(TINY.img_size)
    x = torch.from_numpy(lr)[None, None]
    y = torch.from_numpy(hr)[None, None]
    model = make_model(seed=0)
    with torch.no_grad():
        start = psnr(model(x), y)
    assert psnr(x, y) < 20  # the LR input is visibly degraded
    optimiser = torch.optim.Adam(model.parameters(), lr=2e-3)
    t0 = time.perf_counter()
    for _ in range(OVERFIT_STEPS):
        loss = (model(x) - y).abs().mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    with torch.no_grad():
        end = psnr(model(x), y)
    assert end - start > 10, (start, end, time.perf_counter() - t0)


def test_traces_for_export():
    """``torch.jit.trace`` (what ``torch.onnx.export`` records, and what OpenVINO reads) gives
    the eager output, with CWSS on and moved: the encoder maps are found by configured size,
    never by a traced shape."""
    model = make_model().eval()
    randomise_cwss(model)
    x = torch.rand(1, 1, 32, 32)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(model, x, check_trace=False)
        other = torch.rand(1, 1, 32, 32)
        torch.testing.assert_close(traced(other), model(other), rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- guided restoration


def test_a_guide_added_with_zero_weight_restores_exactly_as_without():
    model = make_model(3).eval()
    randomise_cwss(model)
    guided = with_guide(model).eval()
    assert guided.config.guide_channels == 1
    assert guided.shallow.conv.weight.shape[1] == 2
    torch.manual_seed(1)
    x = torch.randn(2, 1, 40, 36)  # padded and cropped
    big = torch.randn(1, 1, 50, 70)  # tiled
    with torch.no_grad():
        for plane in (x, big):
            alone = model(plane)
            for guide in (torch.zeros_like(plane), 5.0 * torch.randn_like(plane)):
                out = guided(torch.cat([plane, guide], dim=1))
                assert out.shape == alone.shape
                torch.testing.assert_close(out, alone, rtol=0, atol=1e-6)
    # the model it came from is left as it was
    assert model.shallow.conv.weight.shape[1] == 1


def test_a_guided_model_learns_from_its_guide_and_checks_its_input():
    model = make_model(4)
    guided = with_guide(model)
    with pytest.raises(ValueError, match=r"\[B, 2, H, W\] \(the plane and 1 guide plane"):
        guided(torch.zeros(1, 1, 32, 32))
    with pytest.raises(TransMRSRError, match="already takes a guide"):
        with_guide(guided)
    # one step moves the guide's weights: the gradient reaches them
    x = torch.randn(2, 2, 32, 32)
    loss = (guided(x) - torch.randn(2, 1, 32, 32)).abs().mean()
    loss.backward()
    assert guided.shallow.conv.weight.grad[:, 1].abs().sum() > 0
    cfg = TransMRSRConfig.from_dict(json.loads(json.dumps(guided.config.to_dict())))
    assert cfg.guide_channels == 1
