"""MINet baseline (Feng et al. 2021) for guided single-channel slice restoration.

MINet ("Multi-contrast MRI super-resolution via a multi-stage integration network", MICCAI
2021) restores one contrast with the help of another contrast of the same head: two CNN
branches of RCAN residual groups, the reference branch's features fused into the target
branch after every group, and the target's features of every stage integrated for the
reconstruction. The input is already the interpolated thick-slice plane at HR size, so, as for
every compared network, the upsampler of the original is dropped. The input is
``[B, 2, H, W]``: channel 0 the plane to restore, channel 1 its guide (the registered fine
plane of another contrast)::

    heads      conv3x3 (1 -> C) on the plane (target) and on the guide (reference)
    stage i    target    t_i = G^t_i(f_{i-1})                   (f_0 = target head output)
               reference r_i = G^r_i(r_{i-1})                   (r_0 = reference head output)
               fusion    f_i = conv1x1([t_i, r_i]) (2C -> C)    (the next target group's input)
    integrate  conv1x1([f_1, ..., f_N]) (N C -> C)
    tail       conv3x3 (C -> 1) = residual image R
    out        x[:, :1] + R (global residual learning, as every network of the package)

A residual group ``G`` is RCAN's: ``n_blocks`` residual channel-attention blocks
(conv3x3 - ReLU - conv3x3 - channel attention, plus identity), conv3x3, plus the group input.

Differences from the paper: the reference branch has no reconstruction tail of its own (the
guide is already fine, so there is no second loss to train it), and the stage features are
integrated by concatenation and a 1x1 conv alone, without the paper's re-weighting of each
stage by its similarity to the others. Convolutions are zero-padded and channel attention pools
globally, so any H x W works without padding the image.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass(frozen=True)
class MINetConfig:
    """Sizes of :class:`MINet`.

    Attributes:
        n_features: width of every convolution but the last, in both branches.
        n_groups: residual groups per branch, i.e. the number of integration stages.
        n_blocks: residual channel-attention blocks per group.
        reduction: channel attention squeezes ``n_features`` to ``n_features // reduction``.
        guide_channels: guide planes after the plane to restore; MINet has one reference
            branch, so exactly 1 (the field is what the restoration reads to pass the guide).
    """

    n_features: int = 64
    n_groups: int = 6
    n_blocks: int = 4
    reduction: int = 16
    guide_channels: int = 1

    def __post_init__(self) -> None:
        if self.n_features < 1:
            raise ValueError(f"n_features must be at least 1, got {self.n_features}")
        if self.n_groups < 1:
            raise ValueError(f"n_groups must be at least 1, got {self.n_groups}")
        if self.n_blocks < 1:
            raise ValueError(f"n_blocks must be at least 1, got {self.n_blocks}")
        if not 1 <= self.reduction <= self.n_features:
            raise ValueError(
                f"reduction must be in [1, n_features={self.n_features}] so that channel "
                f"attention keeps at least one channel, got {self.reduction}"
            )
        if self.guide_channels != 1:
            raise ValueError(
                "MINet takes exactly one guide plane (one reference branch): guide_channels "
                f"must be 1, got {self.guide_channels}"
            )

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (the one stored in checkpoints)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> MINetConfig:
        """Rebuild a config from :meth:`to_dict`'s output."""
        return cls(**d)


PRESETS: dict[str, MINetConfig] = {
    # Width 64, 6 stages of 4 blocks per branch, RCAN's reduction 16: 4,092,097 parameters.
    # One branch alone holds 2.0M, so the ~1.5-2M sometimes quoted for MINet x2 is not
    # reachable with two RCAN branches at width 64; 4 blocks (the fewest of the 4-6 range)
    # is the closest (test_minet.py has the count by hand).
    "paper": MINetConfig(),
    # 291,217 parameters, ~38 GFLOPs per 256 x 256 slice: a little more than the compact EDSR,
    # trainable on 2 CPU cores. Reduction 8 keeps 4 channels in the attention squeeze.
    "compact": MINetConfig(n_features=32, n_groups=3, n_blocks=2, reduction=8),
    # Two stages, so that the multi-stage integration is exercised in tests.
    "tiny": MINetConfig(n_features=8, n_groups=2, n_blocks=1, reduction=4),
}


class ChannelAttention(nn.Module):
    """RCAN's channel attention: global average pool, conv1x1 (C -> C / r) - ReLU - conv1x1
    (C / r -> C) - sigmoid, and the input scaled channel-wise by the result."""

    def __init__(self, channels: int, reduction: int) -> None:
        super().__init__()
        hidden = channels // reduction
        self.squeeze = nn.Conv2d(channels, hidden, 1)
        self.excite = nn.Conv2d(hidden, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        weights = x.mean(dim=(2, 3), keepdim=True)
        weights = torch.sigmoid(self.excite(F.relu(self.squeeze(weights))))
        return x * weights


class RCAB(nn.Module):
    """Residual channel-attention block: ``x + CA(conv(relu(conv(x))))``."""

    def __init__(self, channels: int, reduction: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.attention = ChannelAttention(channels, reduction)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.attention(self.conv2(F.relu(self.conv1(x))))


class ResidualGroup(nn.Module):
    """RCAN's residual group: ``n_blocks`` :class:`RCAB`, conv3x3, plus the group input."""

    def __init__(self, channels: int, n_blocks: int, reduction: int) -> None:
        super().__init__()
        self.blocks = nn.Sequential(*(RCAB(channels, reduction) for _ in range(n_blocks)))
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv(self.blocks(x))


class MINet(nn.Module):
    """MINet without upsampler: ``[B, 2, H, W]`` interpolated LR plane and its guide ->
    ``[B, 1, H, W]`` restored plane."""

    def __init__(self, config: MINetConfig) -> None:
        super().__init__()
        self.config = config
        c = config.n_features

        def groups() -> nn.ModuleList:
            return nn.ModuleList(
                ResidualGroup(c, config.n_blocks, config.reduction) for _ in range(config.n_groups)
            )

        self.target_head = nn.Conv2d(1, c, 3, padding=1)
        self.reference_head = nn.Conv2d(config.guide_channels, c, 3, padding=1)
        self.target_groups = groups()
        self.reference_groups = groups()
        self.fusions = nn.ModuleList(nn.Conv2d(2 * c, c, 1) for _ in range(config.n_groups))
        self.integrate = nn.Conv2d(config.n_groups * c, c, 1)
        self.tail = nn.Conv2d(c, 1, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        channels = 1 + self.config.guide_channels
        if x.ndim != 4 or x.shape[1] != channels:
            raise ValueError(
                f"MINet expects [B, {channels}, H, W] (the plane, then its guide), got "
                f"{tuple(x.shape)}"
            )
        plane, guide = x[:, :1], x[:, 1:]
        target = self.target_head(plane)
        reference = self.reference_head(guide)
        stages = []
        for target_group, reference_group, fusion in zip(
            self.target_groups, self.reference_groups, self.fusions, strict=True
        ):
            reference = reference_group(reference)
            target = fusion(torch.cat([target_group(target), reference], dim=1))
            stages.append(target)
        return plane + self.tail(self.integrate(torch.cat(stages, dim=1)))
