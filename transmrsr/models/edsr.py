"""EDSR baseline (Lim et al. 2017) for single-channel slice restoration.

EDSR is the oldest comparison network of the paper (SPEC section 7): a plain deep residual CNN
without batch normalisation. The input is already the interpolated LR image at HR size, so the
upsampler of the original is dropped::

    head   conv3x3 (1 -> C)
    body   N residual blocks (conv3x3 - ReLU - conv3x3, scaled by ``res_scale``) + conv3x3,
           plus the head output (long skip)
    tail   conv3x3 (C -> 1) = residual image R
    out    x + R (global residual learning, as every network of the package)

Convolutions are zero-padded, so any H x W works without padding the image.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from transmrsr.models.layers import ResidualBlock


@dataclass(frozen=True)
class EDSRConfig:
    """Sizes of :class:`EDSR`.

    Attributes:
        n_blocks: residual blocks in the body.
        n_features: width of every convolution but the last.
        res_scale: factor on each block's residual branch; EDSR's large model uses 0.1 because
            training a 256-wide, 32-block body is unstable without it.
    """

    n_blocks: int = 32
    n_features: int = 256
    res_scale: float = 0.1

    def __post_init__(self) -> None:
        if self.n_blocks < 1:
            raise ValueError(f"n_blocks must be at least 1, got {self.n_blocks}")
        if self.n_features < 1:
            raise ValueError(f"n_features must be at least 1, got {self.n_features}")
        if not 0.0 < self.res_scale <= 1.0:
            raise ValueError(f"res_scale must be in (0, 1], got {self.res_scale}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (the one stored in checkpoints)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> EDSRConfig:
        """Rebuild a config from :meth:`to_dict`'s output."""
        return cls(**d)


PRESETS: dict[str, EDSRConfig] = {
    # EDSR (large): 32 blocks of 256 features, residual scaling 0.1 (~38M without upsampler).
    "paper": EDSRConfig(),
    # Half EDSR-baseline's width (64) and 3/4 of its depth (16): ~31 GFLOPs per 256 x 256 slice,
    # a few hundred ms on 2 CPU cores (the baseline itself costs 160 GFLOPs, seconds per slice).
    # Residual scaling is only needed for wide bodies, so it is off, as in EDSR-baseline.
    "compact": EDSRConfig(n_blocks=12, n_features=32, res_scale=1.0),
    "tiny": EDSRConfig(n_blocks=2, n_features=8, res_scale=1.0),
}


class EDSRBlock(ResidualBlock):
    """:class:`~transmrsr.models.layers.ResidualBlock` with EDSR's residual scaling.

    ``x + res_scale * conv(relu(conv(x)))``; with ``res_scale = 1`` it is the plain block.
    """

    def __init__(self, channels: int, res_scale: float) -> None:
        super().__init__(channels)
        self.res_scale = res_scale

    def forward(self, x: Tensor) -> Tensor:
        return x + self.res_scale * self.conv2(F.relu(self.conv1(x)))

    def extra_repr(self) -> str:
        return f"res_scale={self.res_scale}"


class EDSR(nn.Module):
    """EDSR without upsampler: ``[B, 1, H, W]`` interpolated LR -> ``[B, 1, H, W]``."""

    def __init__(self, config: EDSRConfig) -> None:
        super().__init__()
        self.config = config
        c = config.n_features
        self.head = nn.Conv2d(1, c, 3, padding=1)
        self.body = nn.Sequential(*(EDSRBlock(c, config.res_scale) for _ in range(config.n_blocks)))
        self.body_conv = nn.Conv2d(c, c, 3, padding=1)
        self.tail = nn.Conv2d(c, 1, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 4 or x.shape[1] != 1:
            raise ValueError(f"EDSR expects [B, 1, H, W], got {tuple(x.shape)}")
        shallow = self.head(x)
        deep = self.body_conv(self.body(shallow)) + shallow
        return x + self.tail(deep)
