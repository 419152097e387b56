"""Restormer baseline (Zamir et al. 2022) for single-channel slice restoration.

Restormer is a U-shaped transformer whose attention runs across channels instead of pixels,
so its cost grows linearly with the image size (SPEC section 7 compares against it)::

    embed      conv3x3 (1 -> C)                               overlapped patch embedding
    encoder    levels 1..3: transformer blocks, then downsample (conv3x3 C -> C/2, pixel
               unshuffle 2 -> 2C); level 4 ("latent") at 1/8 resolution, 8C channels
    decoder    levels 3..1: upsample (conv3x3 C -> 2C, pixel shuffle 2 -> C/2), concatenate
               the encoder map of the same level, 1x1 conv back to the level width (levels 3
               and 2; level 1 keeps the 2C of the concatenation), transformer blocks
    refinement transformer blocks at full resolution, 2C channels
    out        conv3x3 (2C -> 1) = residual R; output = x + R

A transformer block is ``x + MDTA(LN(x))`` then ``x + GDFN(LN(x))``:

* MDTA (multi-Dconv head transposed attention): q, k, v from a 1x1 conv and a depth-wise 3x3
  conv; q and k are L2-normalised along the pixels and the C/h x C/h attention map per head is
  scaled by a learnable temperature.
* GDFN (gated-Dconv feed-forward): 1x1 conv to 2 x hidden, depth-wise 3x3, GELU(x1) * x2, 1x1
  conv back; hidden = int(C * 2.66).

As in the authors' code every conv of the transformer blocks is bias-free by default, and the
LayerNorm is either "with_bias" (their default) or "bias_free" (mean not subtracted, no bias;
their denoising models). The image is reflect-padded to a multiple of 8 (three 2x
downsamplings) and cropped back.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

#: Input sides must be a multiple of this (three pixel-unshuffle downsamplings).
SIZE_MULTIPLE = 8

_LAYERNORM_TYPES = ("with_bias", "bias_free")


@dataclass(frozen=True)
class RestormerConfig:
    """Sizes of :class:`Restormer`.

    Attributes:
        dim: width at full resolution (level l has ``dim * 2**(l-1)`` channels).
        num_blocks: transformer blocks at levels 1..4 (encoder and decoder of a level alike).
        num_refinement_blocks: transformer blocks after the decoder, at full resolution.
        heads: attention heads at levels 1..4.
        ffn_expansion_factor: GDFN hidden width relative to the block width.
        bias: bias in the convolutions of the transformer blocks and the sampling layers.
        layernorm_type: "with_bias" or "bias_free".
    """

    dim: int = 48
    num_blocks: tuple[int, ...] = (4, 6, 6, 8)
    num_refinement_blocks: int = 4
    heads: tuple[int, ...] = (1, 2, 4, 8)
    ffn_expansion_factor: float = 2.66
    bias: bool = False
    layernorm_type: str = "with_bias"

    def __post_init__(self) -> None:
        object.__setattr__(self, "num_blocks", tuple(int(n) for n in self.num_blocks))
        object.__setattr__(self, "heads", tuple(int(h) for h in self.heads))
        if len(self.num_blocks) != 4 or len(self.heads) != 4:
            raise ValueError(
                f"num_blocks and heads need one entry per level (4), got {len(self.num_blocks)} "
                f"and {len(self.heads)}"
            )
        if self.dim < 2 or self.dim % 2:
            raise ValueError(f"dim must be an even number >= 2, got {self.dim}")
        if any(n < 1 for n in self.num_blocks) or self.num_refinement_blocks < 0:
            raise ValueError(
                "num_blocks must be positive and num_refinement_blocks non-negative, got "
                f"{self.num_blocks} and {self.num_refinement_blocks}"
            )
        for level, h in enumerate(self.heads):
            width = self.dim * 2**level
            if h < 1 or width % h:
                raise ValueError(f"level {level + 1} width {width} is not divisible by {h} heads")
        if self.ffn_expansion_factor <= 0:
            raise ValueError(
                f"ffn_expansion_factor must be positive, got {self.ffn_expansion_factor}"
            )
        if self.layernorm_type not in _LAYERNORM_TYPES:
            raise ValueError(
                f"layernorm_type must be one of {_LAYERNORM_TYPES}, got {self.layernorm_type!r}"
            )

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (the one stored in checkpoints)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RestormerConfig:
        """Rebuild a config from :meth:`to_dict`'s output (lists become tuples)."""
        return cls(**d)


PRESETS: dict[str, RestormerConfig] = {
    # The authors' configuration (their deraining/motion-deblurring models): ~26M parameters.
    "paper": RestormerConfig(),
    # ~3.6 GFLOPs per 256 x 256 slice, ~0.4M parameters, a few hundred ms on 2 CPU cores.
    # Restormer's CPU time is dominated by memory-bound full-resolution layers (GDFN's
    # 2 x 2.66 C hidden maps, depth-wise convs, LayerNorms), not by its FLOPs: the full-resolution
    # width is what must stay small, while depth at 1/8 resolution is nearly free.
    "compact": RestormerConfig(dim=8, num_blocks=(1, 2, 2, 4), num_refinement_blocks=1),
    "tiny": RestormerConfig(dim=4, num_blocks=(1, 1, 1, 1), num_refinement_blocks=1),
}


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channels of a ``[B, C, H, W]`` map, at every pixel.

    Equal to the authors' ``to_3d -> LayerNorm -> to_4d`` without the two reshapes. The
    "bias_free" variant divides by the standard deviation without subtracting the mean and
    has no bias (Restormer's ``BiasFree_LayerNorm``).
    """

    def __init__(self, channels: int, bias: bool, eps: float = 1e-5) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels)) if bias else None
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        var = x.var(dim=1, keepdim=True, unbiased=False)
        if self.bias is None:
            return x * torch.rsqrt(var + self.eps) * self.weight[:, None, None]
        mean = x.mean(dim=1, keepdim=True)
        normed = (x - mean) * torch.rsqrt(var + self.eps)
        return normed * self.weight[:, None, None] + self.bias[:, None, None]


class MDTA(nn.Module):
    """Multi-Dconv head transposed attention: attention across channels, per head."""

    def __init__(self, dim: int, heads: int, bias: bool) -> None:
        super().__init__()
        self.heads = heads
        self.temperature = nn.Parameter(torch.ones(heads, 1, 1))
        self.qkv = nn.Conv2d(dim, dim * 3, 1, bias=bias)
        self.qkv_dwconv = nn.Conv2d(dim * 3, dim * 3, 3, padding=1, groups=dim * 3, bias=bias)
        self.project_out = nn.Conv2d(dim, dim, 1, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv_dwconv(self.qkv(x)).chunk(3, dim=1)
        q = F.normalize(q.reshape(b, self.heads, c // self.heads, h * w), dim=-1)
        k = F.normalize(k.reshape(b, self.heads, c // self.heads, h * w), dim=-1)
        v = v.reshape(b, self.heads, c // self.heads, h * w)
        attn = (q @ k.transpose(-2, -1) * self.temperature).softmax(dim=-1)
        return self.project_out((attn @ v).reshape(b, c, h, w))


class GDFN(nn.Module):
    """Gated-Dconv feed-forward network: ``W_out(GELU(x1) * x2)``, [x1, x2] = DWConv(W_in x)."""

    def __init__(self, dim: int, expansion: float, bias: bool) -> None:
        super().__init__()
        hidden = int(dim * expansion)
        self.project_in = nn.Conv2d(dim, hidden * 2, 1, bias=bias)
        self.dwconv = nn.Conv2d(hidden * 2, hidden * 2, 3, padding=1, groups=hidden * 2, bias=bias)
        self.project_out = nn.Conv2d(hidden, dim, 1, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        x1, x2 = self.dwconv(self.project_in(x)).chunk(2, dim=1)
        return self.project_out(F.gelu(x1) * x2)


class RestormerBlock(nn.Module):
    """Pre-norm transformer block: ``x + MDTA(LN(x))``, then ``x + GDFN(LN(x))``."""

    def __init__(self, dim: int, heads: int, config: RestormerConfig) -> None:
        super().__init__()
        ln_bias = config.layernorm_type == "with_bias"
        self.norm1 = ChannelLayerNorm(dim, ln_bias)
        self.attn = MDTA(dim, heads, config.bias)
        self.norm2 = ChannelLayerNorm(dim, ln_bias)
        self.ffn = GDFN(dim, config.ffn_expansion_factor, config.bias)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.ffn(self.norm2(x))


def _blocks(n: int, dim: int, heads: int, config: RestormerConfig) -> nn.Sequential:
    return nn.Sequential(*(RestormerBlock(dim, heads, config) for _ in range(n)))


class Downsample(nn.Module):
    """conv3x3 (C -> C/2) then pixel unshuffle 2: half the resolution, twice the channels."""

    def __init__(self, dim: int, bias: bool) -> None:
        super().__init__()
        self.conv = nn.Conv2d(dim, dim // 2, 3, padding=1, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        return F.pixel_unshuffle(self.conv(x), 2)


class Upsample(nn.Module):
    """conv3x3 (C -> 2C) then pixel shuffle 2: twice the resolution, half the channels."""

    def __init__(self, dim: int, bias: bool) -> None:
        super().__init__()
        self.conv = nn.Conv2d(dim, dim * 2, 3, padding=1, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        return F.pixel_shuffle(self.conv(x), 2)


class Restormer(nn.Module):
    """Restormer without upsampler: ``[B, 1, H, W]`` interpolated LR -> ``[B, 1, H, W]``."""

    def __init__(self, config: RestormerConfig) -> None:
        super().__init__()
        self.config = config
        d, n, h, bias = config.dim, config.num_blocks, config.heads, config.bias
        self.patch_embed = nn.Conv2d(1, d, 3, padding=1, bias=bias)
        self.encoder1 = _blocks(n[0], d, h[0], config)
        self.down1 = Downsample(d, bias)
        self.encoder2 = _blocks(n[1], d * 2, h[1], config)
        self.down2 = Downsample(d * 2, bias)
        self.encoder3 = _blocks(n[2], d * 4, h[2], config)
        self.down3 = Downsample(d * 4, bias)
        self.latent = _blocks(n[3], d * 8, h[3], config)
        self.up3 = Upsample(d * 8, bias)
        self.reduce3 = nn.Conv2d(d * 8, d * 4, 1, bias=bias)
        self.decoder3 = _blocks(n[2], d * 4, h[2], config)
        self.up2 = Upsample(d * 4, bias)
        self.reduce2 = nn.Conv2d(d * 4, d * 2, 1, bias=bias)
        self.decoder2 = _blocks(n[1], d * 2, h[1], config)
        self.up1 = Upsample(d * 2, bias)
        self.decoder1 = _blocks(n[0], d * 2, h[0], config)
        self.refinement = _blocks(config.num_refinement_blocks, d * 2, h[0], config)
        self.output = nn.Conv2d(d * 2, 1, 3, padding=1, bias=bias)

    def _forward_padded(self, x: Tensor) -> Tensor:
        e1 = self.encoder1(self.patch_embed(x))
        e2 = self.encoder2(self.down1(e1))
        e3 = self.encoder3(self.down2(e2))
        y = self.latent(self.down3(e3))
        y = self.decoder3(self.reduce3(torch.cat([self.up3(y), e3], dim=1)))
        y = self.decoder2(self.reduce2(torch.cat([self.up2(y), e2], dim=1)))
        y = self.decoder1(torch.cat([self.up1(y), e1], dim=1))
        return x + self.output(self.refinement(y))

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 4 or x.shape[1] != 1:
            raise ValueError(f"Restormer expects [B, 1, H, W], got {tuple(x.shape)}")
        height, width = x.shape[-2:]
        pad_h, pad_w = -height % SIZE_MULTIPLE, -width % SIZE_MULTIPLE
        if not (pad_h or pad_w):
            return self._forward_padded(x)
        # Reflect padding continues the anatomy; an image thinner than its padding cannot be
        # reflected, and replicating its border is the closest substitute.
        mode = "reflect" if pad_h < height and pad_w < width else "replicate"
        padded = F.pad(x, (0, pad_w, 0, pad_h), mode=mode)
        return self._forward_padded(padded)[..., :height, :width]
