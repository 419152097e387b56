"""Small layers shared by every network of the package.

* StyleGAN2's equalised-learning-rate layers (:class:`EqualLinear`, :class:`EqualConv2d`) and
  its scaled leaky ReLU, used by the mapping network, the style projections, the latent head of
  TransMRSR and the discriminator.
* :class:`PixelNorm`, the fixed [1, 3, 3, 1] :class:`Blur` of the discriminator, the plain
  :class:`ResidualBlock` of the shallow and reconstruction convolutions.
* :func:`sinusoidal_position_encoding_2d`, the fixed encoding StyleSwin adds after upsampling.
* :func:`tiled_forward`, which runs a network built for a fixed image size over a larger image.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

#: StyleGAN2 multiplies leaky-ReLU outputs by sqrt(2) so that activations keep unit variance.
LEAKY_RELU_SLOPE = 0.2
LEAKY_RELU_GAIN = math.sqrt(2.0)


def scaled_leaky_relu(x: Tensor) -> Tensor:
    """StyleGAN2's "fused" leaky ReLU: slope 0.2, output multiplied by sqrt(2)."""
    return F.leaky_relu(x, LEAKY_RELU_SLOPE) * LEAKY_RELU_GAIN


class EqualLinear(nn.Module):
    """Linear layer with equalised learning rate (Karras et al., StyleGAN).

    The stored weight is drawn from N(0, 1 / lr_mul^2) and scaled by ``lr_mul / sqrt(in)`` at
    run time, so Adam's step is the same relative size for every layer; ``lr_mul`` < 1 slows a
    layer down (0.01 for the mapping network and the TransMRSR latent head). With
    ``activation=True`` the bias is added before the scaled leaky ReLU, as in StyleGAN2's
    fused op.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        bias_init: float = 0.0,
        lr_mul: float = 1.0,
        activation: bool = False,
    ) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.lr_mul = lr_mul
        self.activation = activation
        self.scale = lr_mul / math.sqrt(in_features)
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_mul)
        self.bias = nn.Parameter(torch.full((out_features,), float(bias_init))) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        bias = self.bias * self.lr_mul if self.bias is not None else None
        if self.activation:
            out = F.linear(x, self.weight * self.scale)
            if bias is not None:
                out = out + bias
            return scaled_leaky_relu(out)
        return F.linear(x, self.weight * self.scale, bias)

    def extra_repr(self) -> str:
        return (
            f"{self.in_features}, {self.out_features}, lr_mul={self.lr_mul}, "
            f"activation={self.activation}"
        )


class EqualConv2d(nn.Module):
    """2-D convolution with equalised learning rate (weight N(0, 1) scaled by 1/sqrt(fan_in))."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        padding: int = 0,
        bias: bool = True,
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.stride = stride
        self.padding = padding
        self.scale = 1.0 / math.sqrt(in_channels * kernel_size**2)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(
            x, self.weight * self.scale, self.bias, stride=self.stride, padding=self.padding
        )

    def extra_repr(self) -> str:
        k = self.weight.shape[-1]
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={k}, stride={self.stride}, "
            f"padding={self.padding}"
        )


class PixelNorm(nn.Module):
    """Normalise each latent vector to unit root-mean-square (StyleGAN's mapping input)."""

    def __init__(self, eps: float = 1e-8) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + self.eps)


class Blur(nn.Module):
    """Fixed separable [1, 3, 3, 1] low-pass filter, applied per channel with zero padding.

    StyleGAN2's discriminator blurs before every stride-2 convolution so that downsampling does
    not alias. The kernel is normalised to sum to one and is a non-persistent buffer: it is a
    constant, not a weight, and does not belong in checkpoints.
    """

    def __init__(self, pad: tuple[int, int]) -> None:
        super().__init__()
        taps = torch.tensor([1.0, 3.0, 3.0, 1.0])
        kernel = torch.outer(taps, taps)
        self.register_buffer("kernel", kernel / kernel.sum(), persistent=False)
        self.pad = pad

    def forward(self, x: Tensor) -> Tensor:
        channels = x.shape[1]
        x = F.pad(x, (self.pad[0], self.pad[1], self.pad[0], self.pad[1]))
        weight = self.kernel.to(x.dtype).expand(channels, 1, 4, 4)
        return F.conv2d(x, weight, groups=channels)

    def extra_repr(self) -> str:
        return f"pad={self.pad}"


class ResidualBlock(nn.Module):
    """conv3x3 - ReLU - conv3x3 plus identity (EDSR-style, no normalisation)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv2(F.relu(self.conv1(x)))


def sinusoidal_position_encoding_2d(
    channels: int,
    height: int,
    width: int,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Fixed 2-D sinusoidal position encoding, shape [channels, height, width].

    The first half of the channels encodes the column (x) position, the second half the row
    (y) position; within each half, sines then cosines of the position (counted from 1, as in
    the fairseq encoding StyleSwin uses) at geometrically spaced frequencies from 1 down to
    1/10000. An odd channel in a half stays zero.
    """
    if channels < 4:
        raise ValueError(f"position encoding needs at least 4 channels, got {channels}")

    def axis_encoding(dim: int, length: int) -> Tensor:
        half = dim // 2
        step = math.log(10000.0) / max(half - 1, 1)
        freqs = torch.exp(torch.arange(half, device=device, dtype=torch.float64) * -step)
        pos = torch.arange(1, length + 1, device=device, dtype=torch.float64)
        angles = pos[:, None] * freqs[None, :]
        enc = torch.cat([angles.sin(), angles.cos()], dim=1)
        if dim % 2:
            enc = F.pad(enc, (0, 1))
        return enc.to(dtype)  # [length, dim]

    x_dim = channels // 2
    y_dim = channels - x_dim
    x_enc = axis_encoding(x_dim, width).t()[:, None, :].expand(x_dim, height, width)
    y_enc = axis_encoding(y_dim, height).t()[:, :, None].expand(y_dim, height, width)
    return torch.cat([x_enc, y_enc], dim=0)


def _tile_starts(length: int, tile: int, stride: int) -> list[int]:
    """Start offsets of tiles of size ``tile`` covering [0, length), the last one flush."""
    starts = list(range(0, length - tile + 1, stride))
    if starts[-1] != length - tile:
        starts.append(length - tile)
    return starts


def _blend_ramp(tile: int, overlap: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """1-D blending weight: raised-cosine ramps of ``overlap`` samples at both ends, 1 inside.

    Weights are strictly positive, so a pixel covered by a single tile (e.g. at the image
    border) still gets that tile's value exactly after normalisation.
    """
    weight = torch.ones(tile, device=device, dtype=torch.float64)
    if overlap > 0:
        i = torch.arange(overlap, device=device, dtype=torch.float64)
        ramp = 0.5 - 0.5 * torch.cos(math.pi * (i + 1) / (overlap + 1))
        weight[:overlap] = ramp
        weight[tile - overlap :] = torch.minimum(weight[tile - overlap :], ramp.flip(0))
    return weight.to(dtype)


def tiled_forward(fn: Callable[[Tensor], Tensor], x: Tensor, tile: int, overlap: int) -> Tensor:
    """Run a fixed-size image-to-image network over an image of any size.

    ``x`` [B, C, H, W] is zero-padded (symmetrically) to at least ``tile`` in each dimension,
    cut into ``tile`` x ``tile`` tiles that overlap by at least ``overlap`` pixels (the last
    tile of a row or column is placed flush with the border), each tile goes through ``fn``
    (which must return [B, C_out, tile, tile]), and the outputs are averaged with smooth
    raised-cosine weights so that no seam is visible. The result is cropped back to H x W.
    An image of exactly ``tile`` x ``tile`` makes a single call to ``fn``.
    """
    if x.ndim != 4:
        raise ValueError(f"tiled_forward expects [B, C, H, W], got shape {tuple(x.shape)}")
    if tile < 1 or not 0 <= overlap < tile:
        raise ValueError(f"need tile >= 1 and 0 <= overlap < tile, got {tile=} {overlap=}")
    height, width = x.shape[-2:]
    pad_h, pad_w = max(tile - height, 0), max(tile - width, 0)
    top, left = pad_h // 2, pad_w // 2
    if pad_h or pad_w:
        x = F.pad(x, (left, pad_w - left, top, pad_h - top))
    full_h, full_w = x.shape[-2:]
    stride = tile - overlap
    ramp = _blend_ramp(tile, overlap, x.device, x.dtype)
    weight = ramp[:, None] * ramp[None, :]

    out: Tensor | None = None
    total = torch.zeros(full_h, full_w, device=x.device, dtype=x.dtype)
    for y0 in _tile_starts(full_h, tile, stride):
        for x0 in _tile_starts(full_w, tile, stride):
            piece = fn(x[..., y0 : y0 + tile, x0 : x0 + tile])
            if piece.shape[-2:] != (tile, tile):
                raise ValueError(
                    f"tiled_forward: fn returned spatial size {tuple(piece.shape[-2:])}, "
                    f"expected {(tile, tile)}"
                )
            if out is None:
                out = x.new_zeros(x.shape[0], piece.shape[1], full_h, full_w)
            out[..., y0 : y0 + tile, x0 : x0 + tile] += piece * weight
            total[y0 : y0 + tile, x0 : x0 + tile] += weight
    assert out is not None
    out = out / total
    return out[..., top : top + height, left : left + width]
