"""StyleGAN2 (Karras et al., CVPR 2020): the generative prior of the GFP-GAN baseline.

``transmrsr train-prior --arch stylegan2`` trains this generator on single-channel HR brain
slices against the :class:`~transmrsr.models.styleswin.StyleGAN2Discriminator` (the same
discriminator the StyleSwin prior trains against); :class:`~transmrsr.models.gfpgan.GFPGAN`
then loads its synthesis network and modulates it with channel-split spatial feature
transforms (CS-SFT). One :class:`StyleGAN2Config` describes the generator and its
discriminator, as :class:`~transmrsr.models.styleswin.StyleSwinConfig` does for StyleSwin.

Generator = :class:`~transmrsr.models.styleswin.MappingNetwork` (z -> w, PixelNorm + ``n_mlp``
equalised linears, lr multiplier 0.01) + :class:`StyleGAN2Synthesis`::

    4 x 4      learned constant, one modulated conv3x3, ToRGB
    8 .. S     modulated conv3x3 with 2x upsampling, modulated conv3x3, ToRGB
               (ToRGB: modulated 1x1 conv to one channel without demodulation, plus the
               upsampled image of the resolutions before)

Every modulated convolution scales its input channels by a style (an equalised linear of its
latent, bias 1), demodulates its output (unit expected variance per output channel), adds
per-pixel noise times a learned scalar, a bias and the scaled leaky ReLU. Latent ``l`` drives
conv layer ``l``; the ToRGB of resolution index ``i`` takes latent ``2 i + 1`` (StyleGAN2's
order), so the synthesis takes ``2 (log2 S - 1)`` latents (W+), as StyleSwin's.

For GFP-GAN the synthesis takes per-layer latents and a ``layer_hook(layer, x)`` called after
every modulated convolution (where CS-SFT modulates), can run without noise (a restoration
must be deterministic), and returns its per-resolution feature maps on request.

Choices that differ from the authors' code, and why:

* single-channel ToRGB (MRI is greyscale);
* 2x upsampling is bilinear before the 3x3 modulated conv, and the RGB skip is upsampled
  bilinearly: StyleGAN2 uses a stride-2 transposed conv followed by the [1, 3, 3, 1] blur, and
  upfirdn with the same filter for the skip; bilinear 2x upsampling is that filter's polyphase
  form, without its zero border, and keeps the generator free of custom kernels;
* the modulation is applied to the activations (scale the input, convolve, demodulate the
  output) instead of to a per-sample weight in a grouped convolution: the same arithmetic (the
  authors' "non-fused" path), faster on a CPU, and any batch size;
* no path-length regularisation in training (``train-prior`` has non-saturating loss, lazy R1
  and EMA for both priors), and no style mixing.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from transmrsr.models.layers import EqualLinear, scaled_leaky_relu
from transmrsr.models.styleswin import MappingNetwork

#: A hook the synthesis network calls after every modulated convolution: ``hook(layer, x)``
#: with ``layer`` the conv index (0 at 4 x 4, then two per resolution) and x ``[B, C, H, W]``;
#: it returns the new x (GFP-GAN's CS-SFT).
LayerHook = Callable[[int, Tensor], Tensor]


def _is_power_of_two(n: int) -> bool:
    return n >= 1 and n & (n - 1) == 0


@dataclass(frozen=True)
class StyleGAN2Config:
    """Sizes of the StyleGAN2 generator and its discriminator.

    Attributes:
        img_size: output side, a power of two >= 8.
        style_dim: width of z, w and every latent.
        n_mlp: layers of the mapping network.
        channels: synthesis width per resolution 4, 8, ..., img_size.
        disc_channels: discriminator width per resolution 4, 8, ..., img_size.
        lr_mlp: learning-rate multiplier of the mapping network.
    """

    img_size: int = 256
    style_dim: int = 512
    n_mlp: int = 8
    channels: tuple[int, ...] = (512, 512, 512, 512, 256, 128, 64)
    disc_channels: tuple[int, ...] = (512, 512, 512, 512, 256, 128, 64)
    lr_mlp: float = 0.01

    def __post_init__(self) -> None:
        object.__setattr__(self, "channels", tuple(int(c) for c in self.channels))
        object.__setattr__(self, "disc_channels", tuple(int(c) for c in self.disc_channels))
        if not _is_power_of_two(self.img_size) or self.img_size < 8:
            raise ValueError(f"img_size must be a power of two >= 8, got {self.img_size}")
        n = self.n_stages
        for name in ("channels", "disc_channels"):
            table = getattr(self, name)
            if len(table) != n:
                raise ValueError(
                    f"{name} needs one width per resolution 4..{self.img_size} ({n} values), "
                    f"got {len(table)}"
                )
            if any(c < 1 for c in table):
                raise ValueError(f"{name} must be positive, got {table}")
        if self.style_dim < 1 or self.n_mlp < 1:
            raise ValueError("style_dim and n_mlp must be positive")
        if self.lr_mlp <= 0:
            raise ValueError(f"lr_mlp must be positive, got {self.lr_mlp}")

    @property
    def n_stages(self) -> int:
        """Number of resolutions 4, 8, ..., img_size."""
        return int(math.log2(self.img_size)) - 1

    @property
    def resolutions(self) -> tuple[int, ...]:
        return tuple(4 * 2**i for i in range(self.n_stages))

    @property
    def n_layers(self) -> int:
        """Modulated 3x3 convolutions: one at 4 x 4, two at every other resolution."""
        return 2 * self.n_stages - 1

    @property
    def n_latent(self) -> int:
        """Latent vectors consumed by the synthesis network: one per conv, one more for the
        last ToRGB."""
        return 2 * self.n_stages

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StyleGAN2Config:
        return cls(**d)


PRESETS: dict[str, StyleGAN2Config] = {
    # GFP-GAN's prior (StyleGAN2 with channel multiplier 1, as GFP-GAN v1 uses), at the 256 x
    # 256 slices of the package instead of 512 x 512 faces: the 512 resolution is dropped.
    "paper": StyleGAN2Config(),
    # The StyleSwin compact prior's widths: trains on 2 CPU cores.
    "compact": StyleGAN2Config(
        img_size=256,
        style_dim=128,
        channels=(128, 128, 128, 64, 64, 32, 16),
        disc_channels=(128, 128, 128, 128, 64, 32, 16),
    ),
    "tiny": StyleGAN2Config(
        img_size=32,
        style_dim=32,
        n_mlp=2,
        channels=(32, 32, 32, 16),
        disc_channels=(32, 32, 16, 8),
    ),
}


class ModulatedConv2d(nn.Module):
    """StyleGAN2's modulated convolution (equalised weight, style bias 1), computed as
    ``demod * conv(x * style)``; optional bilinear 2x upsampling of the input first."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        style_dim: int,
        *,
        demodulate: bool = True,
        upsample: bool = False,
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.demodulate = demodulate
        self.upsample = upsample
        self.padding = kernel_size // 2
        self.scale = 1.0 / math.sqrt(in_channels * kernel_size**2)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.modulation = EqualLinear(style_dim, in_channels, bias_init=1.0)

    def forward(self, x: Tensor, w: Tensor) -> Tensor:
        style = self.modulation(w)  # [B, C_in]
        if self.upsample:
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        weight = self.weight * self.scale
        out = F.conv2d(x * style[:, :, None, None], weight, padding=self.padding)
        if self.demodulate:
            # sum over (C_in, k, k) of (weight * style)^2, per sample and output channel
            energy = style.pow(2) @ weight.pow(2).sum(dim=(2, 3)).t()  # [B, C_out]
            out = out * torch.rsqrt(energy + 1e-8)[:, :, None, None].to(out.dtype)
        return out

    def extra_repr(self) -> str:
        k = self.weight.shape[-1]
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={k}, "
            f"demodulate={self.demodulate}, upsample={self.upsample}"
        )


class NoiseInjection(nn.Module):
    """``x + weight * noise``, per-pixel Gaussian noise shared by the channels; the learned
    scalar starts at 0."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, x: Tensor) -> Tensor:
        b, _, h, w = x.shape
        noise = torch.randn(b, 1, h, w, device=x.device, dtype=x.dtype)
        return x + self.weight * noise


class StyledConv(nn.Module):
    """Modulated conv3x3, noise (when built with it), bias, scaled leaky ReLU."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        style_dim: int,
        upsample: bool = False,
        noise: bool = True,
    ) -> None:
        super().__init__()
        self.conv = ModulatedConv2d(in_channels, out_channels, 3, style_dim, upsample=upsample)
        self.noise = NoiseInjection() if noise else None
        self.bias = nn.Parameter(torch.zeros(out_channels))

    def forward(self, x: Tensor, w: Tensor, noise: bool = True) -> Tensor:
        out = self.conv(x, w)
        if noise and self.noise is not None:
            out = self.noise(out)
        return scaled_leaky_relu(out + self.bias[None, :, None, None])


class ToRGB(nn.Module):
    """Modulated 1x1 conv to one channel (no demodulation) plus a bias, plus the previous
    resolutions' image upsampled bilinearly."""

    def __init__(self, in_channels: int, style_dim: int) -> None:
        super().__init__()
        self.conv = ModulatedConv2d(in_channels, 1, 1, style_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(1))

    def forward(self, x: Tensor, w: Tensor, skip: Tensor | None) -> Tensor:
        out = self.conv(x, w) + self.bias[None, :, None, None]
        if skip is not None:
            skip = F.interpolate(skip, size=out.shape[-2:], mode="bilinear", align_corners=False)
            out = out + skip
        return out


class StyleGAN2Synthesis(nn.Module):
    """The StyleGAN2 synthesis network: latents ``[B, n_latent, style_dim]`` -> ``[B, 1, S, S]``.

    ``convs[l]`` is conv layer ``l`` (0 at 4 x 4; ``2 i - 1`` upsamples to resolution index
    ``i``, ``2 i`` follows it); ``to_rgbs[i]`` is the ToRGB of resolution index ``i``. Built
    with ``noise=False`` it has no noise injection at all (GFP-GAN's generator: no parameter
    that never gets a gradient); parameter names are otherwise the same.
    """

    def __init__(self, config: StyleGAN2Config, noise: bool = True) -> None:
        super().__init__()
        self.config = config
        c = config.channels
        s = config.style_dim
        self.const = nn.Parameter(torch.randn(1, c[0], 4, 4))
        convs = [StyledConv(c[0], c[0], s, noise=noise)]
        for i in range(1, len(c)):
            convs += [
                StyledConv(c[i - 1], c[i], s, upsample=True, noise=noise),
                StyledConv(c[i], c[i], s, noise=noise),
            ]
        self.convs = nn.ModuleList(convs)
        self.to_rgbs = nn.ModuleList(ToRGB(width, s) for width in c)

    @staticmethod
    def resolution_index(layer: int) -> int:
        """The resolution index (4 * 2^i) of conv layer ``layer``."""
        return (layer + 1) // 2

    def forward(
        self,
        ws: Tensor,
        *,
        layer_hook: LayerHook | None = None,
        noise: bool = True,
        return_features: bool = False,
    ) -> Tensor | tuple[Tensor, list[Tensor]]:
        """Run the synthesis.

        Args:
            ws: ``[B, n_latent, style_dim]`` (W+: one latent per layer, in order), or ``[B,
                style_dim]`` for the same latent everywhere.
            layer_hook: optional ``hook(layer, x)`` applied after each modulated conv.
            noise: add the per-pixel noise (False: none, a deterministic output).
            return_features: also return the feature map of every resolution (after its last
                conv and the hook), from 4 x 4 to S x S.
        """
        n_latent = self.config.n_latent
        if ws.ndim == 2:
            ws = ws[:, None, :].expand(-1, n_latent, -1)
        if ws.ndim != 3 or ws.shape[1] != n_latent:
            raise ValueError(
                f"expected latents [B, {n_latent}, {self.config.style_dim}], got {tuple(ws.shape)}"
            )
        x = self.const.repeat(ws.shape[0], 1, 1, 1)
        rgb: Tensor | None = None
        features: list[Tensor] = []
        for layer, conv in enumerate(self.convs):
            x = conv(x, ws[:, layer], noise=noise)
            if layer_hook is not None:
                x = layer_hook(layer, x)
            if layer % 2 == 0:  # the last conv of a resolution
                i = self.resolution_index(layer)
                rgb = self.to_rgbs[i](x, ws[:, 2 * i + 1], rgb)
                features.append(x)
        assert rgb is not None
        return (rgb, features) if return_features else rgb


class StyleGAN2Generator(nn.Module):
    """Mapping network + synthesis network: the generative prior of GFP-GAN.

    The same interface as :class:`~transmrsr.models.styleswin.StyleSwinGenerator`, so that
    ``train-prior`` and ``fit-centroids`` treat both priors alike.
    """

    def __init__(self, config: StyleGAN2Config) -> None:
        super().__init__()
        self.config = config
        self.mapping = MappingNetwork(config.style_dim, config.n_mlp, config.lr_mlp)
        self.synthesis = StyleGAN2Synthesis(config)

    def map_to_w(self, z: Tensor) -> Tensor:
        """Map ``z`` ``[..., style_dim]`` to ``w`` of the same shape."""
        return self.mapping(z)

    @torch.no_grad()
    def mean_w(self, n: int = 4096) -> Tensor:
        """Average ``w`` over ``n`` random ``z`` (the centre of the truncation trick)."""
        z = torch.randn(n, self.config.style_dim, device=self.synthesis.const.device)
        return self.map_to_w(z).mean(dim=0)

    def forward(
        self,
        z: Tensor,
        *,
        input_is_w: bool = False,
        truncation: float = 1.0,
        truncation_w: Tensor | None = None,
        noise: bool = True,
    ) -> Tensor:
        """Generate images ``[B, 1, S, S]``.

        Args:
            z: ``[B, style_dim]`` (one code for every layer) or ``[B, n_latent, style_dim]``;
                latent codes z, or w with ``input_is_w``.
            truncation: psi of the truncation trick, w <- c + psi (w - c); 1 = off.
            truncation_w: the centre c (e.g. :meth:`mean_w`), required when psi < 1.
            noise: add the per-pixel noise.
        """
        w = z if input_is_w else self.map_to_w(z)
        if truncation != 1.0:
            if truncation_w is None:
                raise ValueError("truncation < 1 needs truncation_w (e.g. generator.mean_w())")
            w = truncation_w + truncation * (w - truncation_w)
        out = self.synthesis(w, noise=noise)
        assert isinstance(out, Tensor)
        return out
