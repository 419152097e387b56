"""SwinIR baseline (Liang et al. 2021) for single-channel slice restoration.

The input is already the interpolated LR image at HR size, so there is no upsampler: shallow
conv3x3, N residual Swin transformer blocks (:class:`~transmrsr.models.swin.RSTB`), LayerNorm,
conv3x3 plus the shallow features, conv3x3 to one channel, plus the input (global residual,
as SwinIR's denoising / artefact-reduction variants).

Differences from the authors' code: no stochastic depth (drop-path) and no absolute position
embedding (SwinIR's default is off too); any H x W works without reflect-padding the image,
because the Swin blocks pad and mask internally.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from torch import Tensor, nn

from transmrsr.models.swin import RSTB


@dataclass(frozen=True)
class SwinIRConfig:
    """Sizes of :class:`SwinIR`.

    Attributes:
        embed_dim: width of every block.
        depths: Swin blocks per RSTB (one entry per RSTB).
        num_heads: attention heads per RSTB.
        window: attention window side.
        mlp_ratio: MLP hidden width relative to ``embed_dim`` (2 in SwinIR's SR models).
    """

    embed_dim: int = 180
    depths: tuple[int, ...] = (6, 6, 6, 6, 6, 6)
    num_heads: tuple[int, ...] = (6, 6, 6, 6, 6, 6)
    window: int = 8
    mlp_ratio: float = 2.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "depths", tuple(int(d) for d in self.depths))
        object.__setattr__(self, "num_heads", tuple(int(h) for h in self.num_heads))
        if not self.depths or len(self.depths) != len(self.num_heads):
            raise ValueError(
                f"depths and num_heads need one entry per RSTB, got {len(self.depths)} and "
                f"{len(self.num_heads)}"
            )
        if any(d < 1 for d in self.depths) or any(h < 1 for h in self.num_heads):
            raise ValueError("depths and num_heads must be positive")
        for h in self.num_heads:
            if self.embed_dim % h:
                raise ValueError(f"embed_dim {self.embed_dim} is not divisible by {h} heads")
        if self.window < 1 or self.mlp_ratio <= 0:
            raise ValueError("window and mlp_ratio must be positive")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SwinIRConfig:
        return cls(**d)


PRESETS: dict[str, SwinIRConfig] = {
    # SwinIR classical SR: 6 RSTB x 6 blocks, 180 channels, 6 heads, window 8, MLP ratio 2.
    "paper": SwinIRConfig(),
    # About the per-slice CPU time of the compact TransMRSR (~0.3 s at 256 x 256, 2 threads).
    "compact": SwinIRConfig(embed_dim=24, depths=(2, 2, 2), num_heads=(2, 2, 2)),
    "tiny": SwinIRConfig(embed_dim=16, depths=(2, 2), num_heads=(2, 2)),
}


class SwinIR(nn.Module):
    """SwinIR without upsampler: ``[B, 1, H, W]`` interpolated LR -> ``[B, 1, H, W]``."""

    def __init__(self, config: SwinIRConfig) -> None:
        super().__init__()
        self.config = config
        dim = config.embed_dim
        self.conv_first = nn.Conv2d(1, dim, 3, padding=1)
        self.patch_norm = nn.LayerNorm(dim)
        self.layers = nn.ModuleList(
            RSTB(dim, depth, heads, config.window, config.mlp_ratio)
            for depth, heads in zip(config.depths, config.num_heads, strict=True)
        )
        self.norm = nn.LayerNorm(dim)
        self.conv_after_body = nn.Conv2d(dim, dim, 3, padding=1)
        self.conv_last = nn.Conv2d(dim, 1, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 4 or x.shape[1] != 1:
            raise ValueError(f"SwinIR expects [B, 1, H, W], got {tuple(x.shape)}")
        shallow = self.conv_first(x)
        tokens = self.patch_norm(shallow.permute(0, 2, 3, 1))
        for layer in self.layers:
            tokens = layer(tokens)
        deep = self.norm(tokens).permute(0, 3, 1, 2)
        return x + self.conv_last(self.conv_after_body(deep) + shallow)
