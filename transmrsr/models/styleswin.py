"""StyleSwin (Zhang et al., CVPR 2022): the generative prior of TransMRSR, and its discriminator.

Stage 1 of TransMRSR trains this GAN on single-channel HR brain slices; its synthesis network
(without ToRGB) then becomes the TransMRSR decoder. One :class:`StyleSwinConfig` describes the
generator, the discriminator and that decoder, so that the decoder is by construction the same
network as the prior and :meth:`TransMRSR.load_prior` can map weights by name.

Generator = :class:`MappingNetwork` (z -> w, PixelNorm + ``n_mlp`` equalised linears, lr
multiplier 0.01) + :class:`StyleSwinSynthesis`: a learned constant 4 x 4 map, then one stage per
resolution 4, 8, ..., img_size, each two :class:`StyleSwinBlock` s with their own latent,
bilinear 2x upsampling with a linear channel change and a sinusoidal position encoding between
stages, and (generator only) a 1x1 ToRGB per stage summed over upsampled skips.

Choices that differ from the authors' code, and why:

* heads = max(2, C / head_dim) with head_dim 32 (StyleSwin uses max(4, C / 32)): the same rule
  as the encoder (SPEC 3.2), and it keeps 2 heads, one per attention group, at small compact
  widths;
* single-channel ToRGB, and the RGB skip is upsampled bilinearly: bilinear 2x upsampling is the
  same [1, 3, 3, 1] polyphase filter StyleGAN2's ``Upsample`` applies, without its zero border;
* windows, masks and the relative-position index come from :mod:`transmrsr.models.swin` and are
  computed for the actual map size instead of being fixed buffers per block.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from transmrsr.models.layers import (
    Blur,
    EqualConv2d,
    EqualLinear,
    PixelNorm,
    scaled_leaky_relu,
    sinusoidal_position_encoding_2d,
)
from transmrsr.models.swin import Mlp, WindowMSA, init_transformer_weights

#: A hook the synthesis network calls after the blocks of each stage, before upsampling:
#: ``hook(stage_index, x)`` with x ``[B, H, W, C]`` channels-last, returns the new x.
StageHook = Callable[[int, Tensor], Tensor]


def _is_power_of_two(n: int) -> bool:
    return n >= 1 and n & (n - 1) == 0


def heads_for(channels: int, head_dim: int) -> int:
    """Attention heads for a width: ``max(2, channels // head_dim)`` (head dim 32 by default)."""
    return max(2, channels // head_dim)


@dataclass(frozen=True)
class StyleSwinConfig:
    """Sizes of the StyleSwin generator, its discriminator and the TransMRSR decoder.

    Attributes:
        img_size: output side, a power of two >= 8.
        style_dim: width of z, w and every latent.
        n_mlp: layers of the mapping network.
        channels: synthesis width per resolution 4, 8, ..., img_size.
        disc_channels: discriminator width per resolution 4, 8, ..., img_size.
        window: attention window (a stage at resolution r uses min(r, window)).
        mlp_ratio: hidden width of the transformer MLPs, relative to the block width.
        head_dim: target width of one attention head (see :func:`heads_for`).
        lr_mlp: learning-rate multiplier of the mapping network.
    """

    img_size: int = 256
    style_dim: int = 512
    n_mlp: int = 8
    channels: tuple[int, ...] = (512, 512, 512, 512, 256, 128, 64)
    disc_channels: tuple[int, ...] = (512, 512, 512, 512, 512, 256, 128)
    window: int = 8
    mlp_ratio: float = 4.0
    head_dim: int = 32
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
        for c in self.channels:
            heads = heads_for(c, self.head_dim)
            if heads % 2 or c % heads:
                raise ValueError(
                    f"synthesis width {c} must split into an even number of heads "
                    f"({heads} heads of {self.head_dim})"
                )
            if c < 4:
                raise ValueError(f"synthesis widths must be >= 4, got {c}")
        if self.style_dim < 1 or self.n_mlp < 1 or self.window < 1 or self.head_dim < 1:
            raise ValueError("style_dim, n_mlp, window and head_dim must be positive")
        if self.mlp_ratio <= 0 or self.lr_mlp <= 0:
            raise ValueError("mlp_ratio and lr_mlp must be positive")

    @property
    def n_stages(self) -> int:
        """Number of resolutions 4, 8, ..., img_size."""
        return int(math.log2(self.img_size)) - 1

    @property
    def resolutions(self) -> tuple[int, ...]:
        return tuple(4 * 2**i for i in range(self.n_stages))

    @property
    def n_latent(self) -> int:
        """Latent vectors consumed by the synthesis network: one per transformer block."""
        return 2 * self.n_stages

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StyleSwinConfig:
        return cls(**d)


PRESETS: dict[str, StyleSwinConfig] = {
    "paper": StyleSwinConfig(),
    "compact": StyleSwinConfig(
        img_size=256,
        style_dim=128,
        channels=(128, 128, 128, 64, 64, 32, 16),
        disc_channels=(128, 128, 128, 128, 64, 32, 16),
    ),
    "tiny": StyleSwinConfig(
        img_size=32,
        style_dim=32,
        n_mlp=2,
        channels=(32, 32, 32, 16),
        disc_channels=(32, 32, 16, 8),
    ),
}


class AdaptiveInstanceNorm(nn.Module):
    """AdaIN on tokens: instance-normalise every channel over the map, then gamma * x + beta
    with (gamma, beta) an equalised linear of the style (gamma's bias starts at 1)."""

    def __init__(self, dim: int, style_dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.style = EqualLinear(style_dim, 2 * dim)
        with torch.no_grad():
            self.style.bias[:dim] = 1.0

    def forward(self, x: Tensor, w: Tensor) -> Tensor:
        var, mean = torch.var_mean(x, dim=(1, 2), keepdim=True, unbiased=False)
        gamma, beta = self.style(w)[:, None, None, :].chunk(2, dim=-1)
        # gamma (x - mean) / std + beta as one fused pass over the map: x * scale + shift.
        scale = gamma * torch.rsqrt(var + self.eps)
        return torch.addcmul(beta - mean * scale, x, scale)


class StyleSwinBlock(nn.Module):
    """StyleSwin transformer block with double attention.

    ``x + proj([W-MSA(h1), SW-MSA(h2)])`` with h = AdaIN(x, w) and the heads split into two
    groups working on halves of the channels, one in plain windows and one in shifted windows
    (so every block sees across window borders); then ``x + MLP(AdaIN(x, w))``. On maps no
    larger than the window both groups use one window and nothing is shifted.
    """

    def __init__(
        self, dim: int, num_heads: int, window: int, style_dim: int, mlp_ratio: float = 4.0
    ) -> None:
        super().__init__()
        if num_heads % 2 or dim % 2:
            raise ValueError(f"need an even width and head count, got {dim=} {num_heads=}")
        self.norm1 = AdaptiveInstanceNorm(dim, style_dim)
        self.attn = nn.ModuleList(
            WindowMSA(dim, dim // 2, num_heads // 2, window, shifted=shifted)
            for shifted in (False, True)
        )
        self.proj = nn.Linear(dim, dim)
        self.norm2 = AdaptiveInstanceNorm(dim, style_dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: Tensor, w: Tensor) -> Tensor:
        h = self.norm1(x, w)
        x = x + self.proj(torch.cat([attn(h) for attn in self.attn], dim=-1))
        return x + self.mlp(self.norm2(x, w))


class BilinearUpsample(nn.Module):
    """Bilinear 2x upsampling, LayerNorm, linear ``dim -> out_dim`` (no bias), plus a 2-D
    sinusoidal position encoding scaled by a learned scalar that starts at 0 (as StyleSwin)."""

    def __init__(self, dim: int, out_dim: int) -> None:
        super().__init__()
        self.out_dim = out_dim
        self.norm = nn.LayerNorm(dim)
        self.reduction = nn.Linear(dim, out_dim, bias=False)
        self.pos_scale = nn.Parameter(torch.zeros(1))

    def forward(self, x: Tensor) -> Tensor:
        x = F.interpolate(x.permute(0, 3, 1, 2), scale_factor=2, mode="bilinear")
        x = self.reduction(self.norm(x.permute(0, 2, 3, 1)))
        h, w = x.shape[1:3]
        pos = sinusoidal_position_encoding_2d(self.out_dim, h, w, x.device, x.dtype)
        return x + self.pos_scale * pos.permute(1, 2, 0)


class SynthesisStage(nn.Module):
    """Two StyleSwin blocks at one resolution, then (except the last stage) upsampling."""

    def __init__(
        self,
        dim: int,
        out_dim: int | None,
        resolution: int,
        config: StyleSwinConfig,
    ) -> None:
        super().__init__()
        window = min(resolution, config.window)
        heads = heads_for(dim, config.head_dim)
        self.blocks = nn.ModuleList(
            StyleSwinBlock(dim, heads, window, config.style_dim, config.mlp_ratio) for _ in range(2)
        )
        self.upsample = BilinearUpsample(dim, out_dim) if out_dim is not None else None


class ToRGB(nn.Module):
    """1x1 convolution to one channel, plus the upsampled image of the previous stages."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(dim, 1, 1)
        nn.init.xavier_normal_(self.conv.weight, gain=0.02)
        nn.init.zeros_(self.conv.bias)

    def forward(self, x: Tensor, skip: Tensor | None) -> Tensor:
        out = self.conv(x)
        if skip is not None:
            if skip.shape[-1] != out.shape[-1]:
                skip = F.interpolate(skip, size=out.shape[-2:], mode="bilinear")
            out = out + skip
        return out


class StyleSwinSynthesis(nn.Module):
    """The StyleSwin synthesis network: latents ``[B, n_latent, style_dim]`` -> map.

    With ``to_rgb=True`` (the stage-1 generator) it returns the image ``[B, 1, S, S]``; without
    (the TransMRSR decoder) the last stage's features ``[B, C_last, S, S]``. Parameter names are
    identical in both cases apart from ``to_rgbs``, which is what lets the decoder load the
    prior by name.
    """

    def __init__(self, config: StyleSwinConfig, to_rgb: bool = True) -> None:
        super().__init__()
        self.config = config
        c = config.channels
        self.const = nn.Parameter(torch.randn(1, c[0], 4, 4))
        self.stages = nn.ModuleList(
            SynthesisStage(c[i], c[i + 1] if i + 1 < len(c) else None, res, config)
            for i, res in enumerate(config.resolutions)
        )
        self.stages.apply(init_transformer_weights)
        self.to_rgbs = (
            nn.ModuleList(ToRGB(c[min(i + 1, len(c) - 1)]) for i in range(len(c)))
            if to_rgb
            else None
        )

    def forward(self, ws: Tensor, stage_hook: StageHook | None = None) -> Tensor:
        """Run the synthesis.

        Args:
            ws: ``[B, n_latent, style_dim]`` (one latent per block, in order), or ``[B,
                style_dim]`` for the same latent everywhere.
            stage_hook: optional ``hook(stage_index, x)`` applied after each stage's blocks,
                before upsampling (TransMRSR's channel-wise scale and shift).
        """
        n_latent = self.config.n_latent
        if ws.ndim == 2:
            ws = ws[:, None, :].expand(-1, n_latent, -1)
        if ws.ndim != 3 or ws.shape[1] != n_latent:
            raise ValueError(
                f"expected latents [B, {n_latent}, {self.config.style_dim}], got {tuple(ws.shape)}"
            )
        x = self.const.repeat(ws.shape[0], 1, 1, 1).permute(0, 2, 3, 1)
        rgb = None
        for i, stage in enumerate(self.stages):
            for j, block in enumerate(stage.blocks):
                x = block(x, ws[:, 2 * i + j])
            if stage_hook is not None:
                x = stage_hook(i, x)
            if stage.upsample is not None:
                x = stage.upsample(x)
            if self.to_rgbs is not None:
                rgb = self.to_rgbs[i](x.permute(0, 3, 1, 2), rgb)
        if rgb is not None:
            return rgb
        return x.permute(0, 3, 1, 2)


class MappingNetwork(nn.Module):
    """z -> w: PixelNorm, then ``n_mlp`` equalised linears with scaled leaky ReLU."""

    def __init__(self, style_dim: int, n_mlp: int, lr_mul: float = 0.01) -> None:
        super().__init__()
        layers = [
            EqualLinear(style_dim, style_dim, lr_mul=lr_mul, activation=True) for _ in range(n_mlp)
        ]
        self.net = nn.Sequential(PixelNorm(), *layers)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z)


class StyleSwinGenerator(nn.Module):
    """Mapping network + synthesis network with ToRGB: the stage-1 generative prior."""

    def __init__(self, config: StyleSwinConfig) -> None:
        super().__init__()
        self.config = config
        self.mapping = MappingNetwork(config.style_dim, config.n_mlp, config.lr_mlp)
        self.synthesis = StyleSwinSynthesis(config, to_rgb=True)

    def map_to_w(self, z: Tensor) -> Tensor:
        """Map ``z`` ``[..., style_dim]`` to ``w`` of the same shape."""
        return self.mapping(z)

    @torch.no_grad()
    def mean_w(self, n: int = 4096) -> Tensor:
        """Average ``w`` over ``n`` random ``z`` (the centre used by classic truncation)."""
        z = torch.randn(n, self.config.style_dim, device=self.synthesis.const.device)
        return self.map_to_w(z).mean(dim=0)

    def forward(
        self,
        z: Tensor,
        *,
        input_is_w: bool = False,
        truncation: float = 1.0,
        truncation_w: Tensor | None = None,
    ) -> Tensor:
        """Generate images ``[B, 1, S, S]``.

        Args:
            z: ``[B, style_dim]`` (one code for every block) or ``[B, n_latent, style_dim]``
                (one per block, e.g. for style mixing); latent codes z, or w with
                ``input_is_w``.
            truncation: psi of the classic truncation trick, w <- c + psi (w - c); 1 = off.
            truncation_w: the centre c (e.g. :meth:`mean_w`), required when psi < 1.
        """
        w = z if input_is_w else self.map_to_w(z)
        if truncation != 1.0:
            if truncation_w is None:
                raise ValueError("truncation < 1 needs truncation_w (e.g. generator.mean_w())")
            w = truncation_w + truncation * (w - truncation_w)
        return self.synthesis(w)


class DiscriminatorConv(nn.Module):
    """StyleGAN2 ``ConvLayer``: optional [1, 3, 3, 1] blur + stride-2 conv, optional bias and
    scaled leaky ReLU."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        downsample: bool = False,
        activate: bool = True,
        bias: bool = True,
    ) -> None:
        super().__init__()
        self.activate = activate
        if downsample:
            p = 2 + kernel_size - 1  # blur taps - stride + kernel - 1
            self.blur: Blur | None = Blur(((p + 1) // 2, p // 2))
            self.conv = EqualConv2d(in_channels, out_channels, kernel_size, stride=2, bias=bias)
        else:
            self.blur = None
            self.conv = EqualConv2d(
                in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=bias
            )

    def forward(self, x: Tensor) -> Tensor:
        if self.blur is not None:
            x = self.blur(x)
        x = self.conv(x)
        return scaled_leaky_relu(x) if self.activate else x


class DiscriminatorBlock(nn.Module):
    """Residual down block: (conv3x3, blurred stride-2 conv3x3) + blurred stride-2 1x1 skip,
    divided by sqrt(2)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv1 = DiscriminatorConv(in_channels, in_channels, 3)
        self.conv2 = DiscriminatorConv(in_channels, out_channels, 3, downsample=True)
        self.skip = DiscriminatorConv(
            in_channels, out_channels, 1, downsample=True, activate=False, bias=False
        )

    def forward(self, x: Tensor) -> Tensor:
        return (self.conv2(self.conv1(x)) + self.skip(x)) / math.sqrt(2.0)


def minibatch_stddev(x: Tensor, group_size: int = 4) -> Tensor:
    """Append one feature map: the standard deviation across groups of images, averaged.

    Groups have ``min(4, B)`` images when that divides the batch, otherwise the largest divisor
    of B below it (StyleGAN2 fails on such batches, e.g. 6 images with groups of 4).
    """
    b, c, h, w = x.shape
    group = next(g for g in range(min(group_size, b), 0, -1) if b % g == 0)
    y = x.view(group, b // group, 1, c, h, w)
    y = torch.sqrt(y.var(dim=0, unbiased=False) + 1e-8)
    y = y.mean(dim=(2, 3, 4), keepdim=True).squeeze(2)  # [B / group, 1, 1, 1]
    y = y.repeat(group, 1, h, w)
    return torch.cat([x, y], dim=1)


class DiscriminatorSizes(Protocol):
    """What the discriminator reads of a prior's config (StyleSwin's or StyleGAN2's)."""

    @property
    def img_size(self) -> int: ...

    @property
    def disc_channels(self) -> tuple[int, ...]: ...


class StyleGAN2Discriminator(nn.Module):
    """StyleGAN2 residual discriminator for single-channel ``[B, 1, S, S]`` images.

    FromRGB 1x1 conv, residual down blocks from S to 4, minibatch standard deviation (groups
    of 4, one feature), conv3x3, then two equalised linears to one logit per image. Both priors
    (StyleSwin, :mod:`transmrsr.models.stylegan2`) train against it; ``config`` is either's.
    """

    def __init__(self, config: DiscriminatorSizes) -> None:
        super().__init__()
        self.config = config
        ch = config.disc_channels  # per resolution 4, ..., img_size
        self.from_rgb = DiscriminatorConv(1, ch[-1], 1)
        self.blocks = nn.ModuleList(
            DiscriminatorBlock(ch[i], ch[i - 1]) for i in range(len(ch) - 1, 0, -1)
        )
        self.final_conv = DiscriminatorConv(ch[0] + 1, ch[0], 3)
        self.final_linear = nn.Sequential(
            EqualLinear(ch[0] * 16, ch[0], activation=True), EqualLinear(ch[0], 1)
        )

    def features(self, x: Tensor) -> list[Tensor]:
        """Feature maps after FromRGB and after every residual block (S, S/2, ..., 4)."""
        feats = [self.from_rgb(x)]
        for block in self.blocks:
            feats.append(block(feats[-1]))
        return feats

    def forward(self, x: Tensor) -> Tensor:
        """Real/fake logits ``[B, 1]``."""
        size = self.config.img_size
        if x.ndim != 4 or x.shape[1:] != (1, size, size):
            raise ValueError(f"discriminator expects [B, 1, {size}, {size}], got {tuple(x.shape)}")
        x = self.features(x)[-1]
        x = self.final_conv(minibatch_stddev(x))
        return self.final_linear(x.flatten(1))
