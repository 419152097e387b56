"""GFP-GAN baseline (Wang et al., CVPR 2021) for single-channel slice restoration.

GFP-GAN ("Towards Real-World Blind Face Restoration with Generative Facial Prior") restores an
image with a pretrained StyleGAN2 generator as its prior: a U-Net removes the degradation, its
bottleneck gives the generator's latents, and its decoder's features modulate the generator's
features spatially through channel-split SFT. The TransMRSR paper compares against it (SPEC
section 7); here its prior is a StyleGAN2 trained on HR brain slices (``transmrsr train-prior
--arch stylegan2``). For an interpolated slice x ``[B, 1, S, S]``::

    F = lrelu(conv1x1(x))                              1 -> u_S channels
    down     S -> 4: residual blocks (conv3x3 - lrelu - bilinear 1/2 - conv3x3 - lrelu, plus
             a bilinear 1/2 and conv1x1 skip); the maps at S/2, ..., 4 are the U-Net skips
    w+ = EqualLinear(flatten(lrelu(conv3x3(F_4))))     n_latent latents of style_dim (W+)
    up       4 -> S: F_2r = up_block(F_r + skip_r), same blocks with bilinear 2x; from every
             F_r (r = 8..S) two branches conv3x3 - lrelu 0.2 - conv3x3 give (scale_r, shift_r)
    G = StyleGAN2 synthesis(w+), without noise; after the first (upsampling) conv at each
        resolution r = 8..S, CS-SFT: the first half of the channels passes, the second half
        becomes x2 * (1 + scale_r) + shift_r
    out = x + G's image                                global residual, as every network here

GFP-GAN takes its degraded face at the output size (512 -> 512) and, like every network of
the package, this one takes the already-interpolated plane at HR size: there is no upsampler
to drop, and the generator's output size is the network's working size ``prior.img_size``.
Smaller inputs are zero-padded (centred) to it and cropped back, larger ones go through
:func:`~transmrsr.models.layers.tiled_forward`, as for TransMRSR.

Differences from the paper (and the authors' GFPGANv1 code), and why:

* Global residual. GFP-GAN's output is the generator's image; here the generator's image is
  added to the input, the convention of every compared network. The prior's ToRGB layers
  therefore do not fit (they draw a whole slice, not a residual): :meth:`GFPGAN.load_prior`
  loads every other synthesis weight, and the ToRGBs start at zero, so that an untrained
  network returns its input (the interpolation), as TransMRSR's CWSS starts as the identity.
* CS-SFT is ``x2 * (1 + scale) + shift`` with the last conv of each branch initialised to
  zero (GFP-GAN: ``x2 * scale + shift`` from randomly initialised branches): the same family,
  started at the identity so that the loaded prior is intact at the start of training (a zero
  condition is exactly the plain generator path).
* The generator is fine-tuned with the rest (the ``freeze_decoder`` training option fixes its
  prior weights instead, the ToRGBs excepted, as GFP-GAN v1's ``fix_decoder``): the priors
  this package trains on a CPU are short runs, and TransMRSR's decoder is fine-tuned too.
* No noise in the generator (GFP-GAN injects random noise): a restoration scored by PSNR must
  be deterministic; the StyleGAN2 prior's noise weights are not loaded.
* The U-Net's blocks are those of GFP-GAN's "clean" version (bilinear resampling; v1 uses
  StyleGAN2's blurred strided convolutions), and it has no ToRGB heads at each decoder scale:
  they only serve GFP-GAN's pyramid restoration loss. Training uses the package's stage-2
  pipeline with L1, as every baseline; GFP-GAN's adversarial, facial-component and identity
  losses have no meaning for brain slices.
* Like TransMRSR, the model does not hold the prior's mapping network (the latents come from
  the U-Net), and the sizes are GFP-GAN's (StyleGAN2 with channel multiplier 1, the U-Net at
  half its width) at the package's 256 x 256 slices instead of 512 x 512 faces.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from transmrsr.errors import TransMRSRError
from transmrsr.models import stylegan2
from transmrsr.models.layers import EqualLinear, tiled_forward
from transmrsr.models.stylegan2 import StyleGAN2Config, StyleGAN2Synthesis

log = logging.getLogger(__name__)

#: Keys of a StyleGAN2 prior state dict that GFP-GAN does not take (see the module docstring).
_SKIPPED_PRIOR_PREFIXES = ("mapping.", "synthesis.to_rgbs.", "centroids", "discriminator.")


@dataclass(frozen=True)
class GFPGANConfig:
    """Every size and switch of :class:`GFPGAN`.

    Attributes:
        prior: the StyleGAN2 configuration of the prior; ``prior.img_size`` is the model's
            working size.
        unet_channels: U-Net width at resolutions 4, 8, ..., img_size (GFP-GAN: half the
            generator's).
        use_prior: False = the generator stays randomly initialised; :meth:`GFPGAN.load_prior`
            refuses, and training needs no prior file.
        tile_overlap: overlap in pixels of the tiles used for inputs larger than img_size.
    """

    prior: StyleGAN2Config = field(default_factory=StyleGAN2Config)
    unet_channels: tuple[int, ...] = (256, 256, 256, 256, 128, 64, 32)
    use_prior: bool = True
    tile_overlap: int = 64

    def __post_init__(self) -> None:
        if isinstance(self.prior, Mapping):
            object.__setattr__(self, "prior", StyleGAN2Config(**self.prior))
        object.__setattr__(self, "unet_channels", tuple(int(c) for c in self.unet_channels))
        n = self.prior.n_stages
        if len(self.unet_channels) != n:
            raise ValueError(
                f"unet_channels needs one width per resolution 4..{self.img_size} ({n} values), "
                f"got {len(self.unet_channels)}"
            )
        if any(c < 1 for c in self.unet_channels):
            raise ValueError(f"unet_channels must be positive, got {self.unet_channels}")
        if not 0 <= self.tile_overlap < self.img_size:
            raise ValueError(
                f"tile_overlap must be in [0, {self.img_size}), got {self.tile_overlap}"
            )

    @property
    def img_size(self) -> int:
        return self.prior.img_size

    @property
    def n_latent(self) -> int:
        return self.prior.n_latent

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> GFPGANConfig:
        return cls(**d)


#: ``paper``: GFP-GAN v1's sizes (StyleGAN2 of channel multiplier 1 and style 512, U-Net at
#: half its width, W+ latents) at 256 x 256 and one channel. ``compact``: the StyleGAN2
#: compact prior (the StyleSwin compact prior's widths) with the U-Net at half its width.
#: ``tiny``: 32 x 32, for tests.
PRESETS: dict[str, GFPGANConfig] = {
    "paper": GFPGANConfig(),
    "compact": GFPGANConfig(
        prior=stylegan2.PRESETS["compact"], unet_channels=(64, 64, 64, 32, 32, 16, 8)
    ),
    "tiny": GFPGANConfig(
        prior=stylegan2.PRESETS["tiny"], unet_channels=(16, 16, 16, 8), tile_overlap=8
    ),
}


def cs_sft(x: Tensor, scale: Tensor, shift: Tensor) -> Tensor:
    """Channel-split SFT: the first ``C // 2`` channels of ``x [B, C, H, W]`` pass unchanged,
    the others become ``x2 * (1 + scale) + shift`` (zero scale and shift: the identity)."""
    keep = x.shape[1] // 2
    return torch.cat([x[:, :keep], torch.addcmul(shift, x[:, keep:], 1.0 + scale)], dim=1)


def _lrelu(x: Tensor) -> Tensor:
    return F.leaky_relu(x, 0.2)


class ResizeBlock(nn.Module):
    """GFP-GAN's (clean) residual block that halves or doubles the map: conv3x3 - lrelu -
    bilinear resize - conv3x3 - lrelu, plus a bilinear resize and a conv1x1 on the skip."""

    def __init__(self, in_channels: int, out_channels: int, factor: float) -> None:
        super().__init__()
        self.factor = factor
        self.conv1 = nn.Conv2d(in_channels, in_channels, 3, padding=1)
        self.conv2 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.skip = nn.Conv2d(in_channels, out_channels, 1, bias=False)

    def _resize(self, x: Tensor) -> Tensor:
        return F.interpolate(x, scale_factor=self.factor, mode="bilinear", align_corners=False)

    def forward(self, x: Tensor) -> Tensor:
        out = _lrelu(self.conv2(self._resize(_lrelu(self.conv1(x)))))
        return out + self.skip(self._resize(x))

    def extra_repr(self) -> str:
        return f"factor={self.factor}"


class SFTCondition(nn.Module):
    """The spatial condition of one resolution: (scale, shift), each conv3x3 - lrelu 0.2 -
    conv3x3 on the U-Net decoder's map. The last convs start at zero: CS-SFT is then the
    identity."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.scale = self._branch(in_channels, out_channels)
        self.shift = self._branch(in_channels, out_channels)

    @staticmethod
    def _branch(in_channels: int, out_channels: int) -> nn.Sequential:
        last = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        return nn.Sequential(
            nn.Conv2d(in_channels, in_channels, 3, padding=1), nn.LeakyReLU(0.2), last
        )

    def forward(self, feat: Tensor) -> tuple[Tensor, Tensor]:
        return self.scale(feat), self.shift(feat)


class GFPGAN(nn.Module):
    """GFP-GAN: interpolated LR slice ``[B, 1, H, W]`` -> restored slice, same shape.

    The network works at ``config.img_size``: smaller inputs are zero-padded (centred) to it
    and cropped back, larger ones (in either dimension) are tiled with ``config.tile_overlap``.
    """

    def __init__(self, config: GFPGANConfig) -> None:
        super().__init__()
        self.config = config
        prior = config.prior
        u = config.unet_channels
        n = prior.n_stages
        self.head = nn.Conv2d(1, u[-1], 1)
        self.down = nn.ModuleList(ResizeBlock(u[i], u[i - 1], 0.5) for i in range(n - 1, 0, -1))
        self.bottleneck = nn.Conv2d(u[0], u[0], 3, padding=1)
        self.latent_head = EqualLinear(16 * u[0], prior.n_latent * prior.style_dim)
        self.up = nn.ModuleList(ResizeBlock(u[i - 1], u[i], 2.0) for i in range(1, n))
        self.conditions = nn.ModuleList(
            SFTCondition(u[i], prior.channels[i] - prior.channels[i] // 2) for i in range(1, n)
        )
        self.generator = StyleGAN2Synthesis(prior, noise=False)
        with torch.no_grad():
            for to_rgb in self.generator.to_rgbs:
                to_rgb.conv.weight.zero_()
                to_rgb.bias.zero_()

    # ---------------------------------------------------------------- prior
    def load_prior(self, state_dict: Mapping[str, Tensor]) -> None:
        """Initialise the generator from a StyleGAN2 prior.

        ``state_dict`` is a :class:`~transmrsr.models.stylegan2.StyleGAN2Generator` state dict
        (a prior file's). Every ``synthesis.*`` weight but the ToRGBs and the noise weights is
        copied into the generator by name; the mapping network is not part of GFP-GAN here.
        Any generator key missing from the prior, any other key and any shape mismatch raise
        :class:`TransMRSRError` with the full list; nothing is loaded in that case.
        """
        if not self.config.use_prior:
            raise TransMRSRError(
                "this GFP-GAN was built with use_prior=False (randomly initialised generator); "
                "refusing to load a prior into it"
            )
        own = self.generator.state_dict()
        expected = {k for k in own if not k.startswith("to_rgbs.")}
        mapped: dict[str, Tensor] = {}
        unexpected: list[str] = []
        for key, value in state_dict.items():
            name = key.removeprefix("synthesis.")
            if key.startswith(_SKIPPED_PRIOR_PREFIXES) or (
                key.startswith("synthesis.") and name.endswith(".noise.weight")
            ):
                continue
            if key.startswith("synthesis.") and name in expected:
                mapped[name] = value
            else:
                unexpected.append(key)
        missing = sorted(f"synthesis.{k}" for k in expected - mapped.keys())
        wrong_shape = [
            f"synthesis.{k}: prior {tuple(v.shape)} vs generator {tuple(own[k].shape)}"
            for k, v in mapped.items()
            if v.shape != own[k].shape
        ]
        problems = []
        if missing:
            problems.append(f"missing keys: {missing}")
        if unexpected:
            problems.append(f"unexpected keys: {sorted(unexpected)}")
        if wrong_shape:
            problems.append(f"shape mismatches: {wrong_shape}")
        if problems:
            raise TransMRSRError(
                "the prior does not match this model's generator; " + "; ".join(problems)
            )
        self.generator.load_state_dict({**own, **mapped}, strict=True)
        log.info("loaded the StyleGAN2 prior into the generator (%d tensors)", len(mapped))

    def prior_parameters(self) -> list[nn.Parameter]:
        """The generator's parameters that come from the prior (all but the ToRGBs)."""
        return [p for k, p in self.generator.named_parameters() if not k.startswith("to_rgbs.")]

    # ---------------------------------------------------------------- forward
    def encode(self, x: Tensor) -> tuple[Tensor, list[tuple[Tensor, Tensor]]]:
        """The U-Net at working size: W+ latents ``[B, n_latent, style_dim]`` and the (scale,
        shift) conditions of the resolutions 8..S."""
        prior = self.config.prior
        feat = _lrelu(self.head(x))
        skips = []
        for block in self.down:
            feat = block(feat)
            skips.append(feat)
        feat = _lrelu(self.bottleneck(feat))
        ws = self.latent_head(feat.flatten(1)).view(-1, prior.n_latent, prior.style_dim)
        conditions = []
        for block, condition, skip in zip(self.up, self.conditions, reversed(skips), strict=True):
            feat = block(feat + skip)
            conditions.append(condition(feat))
        return ws, conditions

    def _forward_fixed(self, x: Tensor) -> Tensor:
        ws, conditions = self.encode(x)
        # Resolution index i >= 1 starts with conv layer 2 i - 1: CS-SFT after it.
        by_layer = {2 * i + 1: c for i, c in enumerate(conditions)}

        def hook(layer: int, y: Tensor) -> Tensor:
            condition = by_layer.get(layer)
            return y if condition is None else cs_sft(y, *condition)

        image = self.generator(ws, layer_hook=hook, noise=False)
        assert isinstance(image, Tensor)
        return x + image

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 4 or x.shape[1] != 1:
            raise ValueError(f"GFPGAN expects [B, 1, H, W], got {tuple(x.shape)}")
        size = self.config.img_size
        h, w = x.shape[-2:]
        if (h, w) == (size, size):
            return self._forward_fixed(x)
        if h <= size and w <= size:
            top, left = (size - h) // 2, (size - w) // 2
            padded = F.pad(x, (left, size - w - left, top, size - h - top))
            return self._forward_fixed(padded)[..., top : top + h, left : left + w]
        return tiled_forward(self._forward_fixed, x, size, self.config.tile_overlap)
