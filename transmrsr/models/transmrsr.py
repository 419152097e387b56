"""TransMRSR (Huang et al. 2023): Swin encoder + self-distilled StyleSwin generative prior.

Data flow for an interpolated LR slice x ``[B, 1, S, S]`` (SPEC section 3)::

    F0 = shallow(x)                                   conv3x3 + ReLU + 2 residual blocks
    feats = encoder(F0)                               LN, then per resolution S..8: RSTB + merge
                                                      -> maps at S/2, S/4, ..., 4
    w = latent_head(feats[4x4])                       LN, flatten, EqualLinear(lr 0.01) + lrelu
    w' = SDT(w)                                       w' = c + psi (w - c), c nearest centroid
    D = decoder(w', CWSS(feats))                      StyleSwin synthesis without ToRGB; after
                                                      the stages at 4..S/2, half the channels
                                                      become x1 * alpha + beta
    out = x + reconstruction(D + F0)                  long skip, global residual

Decisions (see also SPEC 3 and the class docstrings):

* Parameter count. The paper's "about 161M" is reproduced without the mapping network: the
  decoder takes its latents from the encoder, so the prior's mapping network does not travel
  with the model (:meth:`TransMRSR.load_prior` skips ``mapping.*``). With the SPEC tables, 2
  Swin blocks per RSTB and head dim 32 the paper preset counts 160.8M (encoder 32.7M, latent
  head 58.7M, decoder 38.5M, CWSS 30.5M, shallow + reconstruction 0.3M). Keeping the 2.1M
  mapping network would give 162.9M, also within 10%, so the count alone does not decide; the
  SPEC ("no mapping network") does.
* Encoder features for CWSS are the patch-merging outputs: the merge of the stage at
  resolution 2r is the encoder's map at r, for every r in 4..S/2, exactly the decoder stages
  that are modulated. The 4 x 4 merge output also feeds the latent head.
* SDT picks the NEAREST centroid (the authors' argmax picks the farthest: a bug). Without
  loaded centroids the forward raises instead of silently skipping truncation (psi = 1 needs
  none). Centroids arrive with the prior (:meth:`load_prior`) or via
  :meth:`SelfDistilledTruncation.set_centroids`, and are saved in the model's state dict.
* CWSS is initialised to the exact identity (alpha = 1, beta = 0: zero weights and bias 1 / 0 in
  the last conv of each branch), so that training starts from the loaded prior's output; the
  first conv of each branch gets non-zero gradients once the last conv has moved.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from transmrsr.errors import TransMRSRError
from transmrsr.models import styleswin
from transmrsr.models.layers import EqualLinear, ResidualBlock, tiled_forward
from transmrsr.models.styleswin import StyleSwinConfig, StyleSwinSynthesis, heads_for
from transmrsr.models.swin import RSTB, PatchMerging

log = logging.getLogger(__name__)

#: Key of the SDT centroids ``[k, style_dim]`` in a prior state dict (next to the generator's
#: ``mapping.*`` and ``synthesis.*`` weights).
CENTROIDS_KEY = "centroids"


@dataclass(frozen=True)
class TransMRSRConfig:
    """Every size and switch of :class:`TransMRSR`.

    Attributes:
        prior: the StyleSwin configuration of the stage-1 prior; the decoder is its synthesis
            network, so ``prior.img_size`` is the model's working size.
        encoder_channels: encoder width at resolutions S, S/2, ..., 4 (one more than the
            number of encoder stages); the first is also the width of F0 and must equal the
            decoder's last width (they are summed by the long skip).
        encoder_depth: Swin blocks per RSTB (alternating W-MSA and SW-MSA).
        window, mlp_ratio, head_dim: encoder attention window, MLP ratio and head width
            (heads = max(2, C / head_dim)).
        n_centroids: number of SDT centroids; psi: SDT strength, in (0, 1], 1 = identity.
        use_prior: False = the decoder stays randomly initialised; :meth:`TransMRSR.load_prior`
            refuses.
        use_sdt: False = no truncation, latents go to the decoder unchanged.
        use_mref: False = no CWSS modules; multi-resolution encoder features are unused.
        use_skip: False = no long skip, F0 does not enter the fusion.
        tile_overlap: overlap in pixels of the tiles used for inputs larger than img_size.
        guide_channels: extra input channels after the thick-slice plane: the matching plane
            of another scan of the same head (guided restoration). They enter the first
            convolution only; :func:`with_guide` adds them to a trained model with zero
            weights, so that it starts out restoring exactly as without a guide.
        guide_branch: width of a guide branch instead (0: none): the guide then stays out
            of the encoder, and a residual CNN of ``guide_blocks`` blocks (:class:`GuideBranch`)
            adds to the restored plane the detail it finds in the restored plane and the guide
            together. Its last convolution starts at zero (:func:`with_guide`), and it can be
            trained alone on a trained model, cheaply: the transformer runs forward only.
    """

    prior: StyleSwinConfig = field(default_factory=StyleSwinConfig)
    encoder_channels: tuple[int, ...] = (64, 128, 256, 512, 512, 512, 512)
    encoder_depth: int = 2
    window: int = 8
    mlp_ratio: float = 4.0
    head_dim: int = 32
    n_centroids: int = 8
    psi: float = 0.9
    use_prior: bool = True
    use_sdt: bool = True
    use_mref: bool = True
    use_skip: bool = True
    tile_overlap: int = 64
    guide_channels: int = 0
    guide_branch: int = 0
    guide_blocks: int = 6

    def __post_init__(self) -> None:
        if isinstance(self.prior, Mapping):
            object.__setattr__(self, "prior", StyleSwinConfig(**self.prior))
        object.__setattr__(self, "encoder_channels", tuple(int(c) for c in self.encoder_channels))
        n = self.prior.n_stages
        if len(self.encoder_channels) != n:
            raise ValueError(
                f"encoder_channels needs one width per resolution {self.img_size}..4 "
                f"({n} values), got {len(self.encoder_channels)}"
            )
        for c in self.encoder_channels:
            if c < 1 or c % heads_for(c, self.head_dim):
                raise ValueError(
                    f"encoder width {c} must be positive and divisible by its "
                    f"{heads_for(c, self.head_dim)} heads"
                )
        if self.encoder_channels[0] != self.prior.channels[-1]:
            raise ValueError(
                f"encoder_channels[0] ({self.encoder_channels[0]}) must equal the decoder's "
                f"last width prior.channels[-1] ({self.prior.channels[-1]})"
            )
        if not 0.0 < self.psi <= 1.0:
            raise ValueError(f"psi must be in (0, 1], got {self.psi}")
        if self.n_centroids < 1 or self.encoder_depth < 1 or self.window < 1:
            raise ValueError("n_centroids, encoder_depth and window must be positive")
        if self.mlp_ratio <= 0 or self.head_dim < 1:
            raise ValueError("mlp_ratio and head_dim must be positive")
        if self.guide_channels < 0:
            raise ValueError(f"guide_channels must be 0 or more, got {self.guide_channels}")
        if self.guide_branch < 0 or self.guide_blocks < 1:
            raise ValueError("guide_branch must be 0 or more and guide_blocks at least 1")
        if self.guide_branch and not self.guide_channels:
            raise ValueError("a guide branch needs a guide: guide_channels at least 1")
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
    def from_dict(cls, d: Mapping[str, Any]) -> TransMRSRConfig:
        return cls(**d)


#: ``paper``: SPEC sizes, 160.8M parameters. ``compact``: the same structure for 2-core CPUs,
#: 6.5M parameters, about 11 GFLOPs and 0.3 s per 256 x 256 slice (batch 8, 2 threads). Its
#: full-resolution parts (F0, reconstruction, the encoder and decoder stages at 256) already
#: cost about 5.7 GFLOPs at 16 channels; they are memory-bound, so fewer channels would save
#: FLOPs but little time. Channels grow slowly with depth (CWSS convs scale with the square of
#: the encoder width). ``tiny``: 32 x 32, 0.4M parameters, for tests.
PRESETS: dict[str, TransMRSRConfig] = {
    "paper": TransMRSRConfig(),
    "compact": TransMRSRConfig(
        prior=styleswin.PRESETS["compact"],
        encoder_channels=(16, 16, 32, 64, 128, 128, 64),
    ),
    "tiny": TransMRSRConfig(
        prior=styleswin.PRESETS["tiny"],
        encoder_channels=(16, 16, 32, 32),
        tile_overlap=8,
    ),
}


class ShallowFeatures(nn.Module):
    """F0: conv3x3 (``in_channels`` -> C) + ReLU, then two residual blocks."""

    def __init__(self, channels: int, in_channels: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, channels, 3, padding=1)
        self.blocks = nn.Sequential(ResidualBlock(channels), ResidualBlock(channels))

    def forward(self, x: Tensor) -> Tensor:
        return self.blocks(F.relu(self.conv(x)))


class SwinEncoder(nn.Module):
    """LayerNorm on the tokens of F0, then per resolution S, S/2, ..., 8 an RSTB followed by
    patch merging. Returns the merged maps (channels-last) at S/2, S/4, ..., 4."""

    def __init__(self, config: TransMRSRConfig) -> None:
        super().__init__()
        ch = config.encoder_channels
        self.norm = nn.LayerNorm(ch[0])
        self.rstbs = nn.ModuleList(
            RSTB(
                c,
                config.encoder_depth,
                heads_for(c, config.head_dim),
                config.window,
                config.mlp_ratio,
            )
            for c in ch[:-1]
        )
        self.merges = nn.ModuleList(PatchMerging(ch[i], ch[i + 1]) for i in range(len(ch) - 1))

    def forward(self, f0: Tensor) -> list[Tensor]:
        x = self.norm(f0.permute(0, 2, 3, 1))
        feats = []
        for rstb, merge in zip(self.rstbs, self.merges, strict=True):
            x = merge(rstb(x))
            feats.append(x)
        return feats


class LatentHead(nn.Module):
    """LayerNorm on the 4 x 4 tokens, flatten, one equalised linear (lr multiplier 0.01, scaled
    leaky ReLU) to ``n_latent`` vectors of ``style_dim``: one latent per decoder block."""

    def __init__(self, channels: int, n_latent: int, style_dim: int) -> None:
        super().__init__()
        self.n_latent = n_latent
        self.style_dim = style_dim
        self.norm = nn.LayerNorm(channels)
        self.linear = EqualLinear(16 * channels, n_latent * style_dim, lr_mul=0.01, activation=True)

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[1:3] != (4, 4):
            raise ValueError(f"latent head expects a 4 x 4 map, got {tuple(x.shape[1:3])}")
        w = self.linear(self.norm(x).flatten(1))
        return w.view(-1, self.n_latent, self.style_dim)


class SelfDistilledTruncation(nn.Module):
    """Self-distilled truncation: ``w' = c + psi (w - c)``, c the nearest centroid of w.

    The centroids (k-means of the prior's w space) are a buffer ``centroids [k, style_dim]``
    saved with the model, with a flag buffer ``has_centroids``. The nearest centroid is used,
    in Euclidean distance: the authors' code takes the argmax, i.e. the farthest one, a bug
    (SPEC 3.4). Truncating towards an un-set (all-zero) centroid table would silently shrink
    every latent towards the origin, so the forward raises until centroids are set; psi = 1 is
    the identity and needs none.
    """

    def __init__(self, style_dim: int, n_centroids: int, psi: float) -> None:
        super().__init__()
        self.psi = psi
        self.register_buffer("centroids", torch.zeros(n_centroids, style_dim))
        self.register_buffer("has_centroids", torch.zeros((), dtype=torch.bool))

    @torch.no_grad()
    def set_centroids(self, centroids: Tensor) -> None:
        """Load centroids ``[k, style_dim]`` (k and style_dim must match the config)."""
        centroids = torch.as_tensor(centroids)
        if centroids.shape != self.centroids.shape:
            raise TransMRSRError(
                f"SDT centroids must have shape {tuple(self.centroids.shape)}, "
                f"got {tuple(centroids.shape)}"
            )
        if not torch.isfinite(centroids).all():
            raise TransMRSRError("SDT centroids contain NaN or infinite values")
        self.centroids.copy_(centroids)
        self.has_centroids.fill_(True)

    def nearest(self, w: Tensor) -> Tensor:
        """Index of the nearest centroid for every vector of ``w`` ``[..., style_dim]``."""
        diff = w.detach()[..., None, :] - self.centroids.to(w.dtype)
        return diff.pow(2).sum(dim=-1).argmin(dim=-1)

    def forward(self, w: Tensor) -> Tensor:
        if self.psi == 1.0:
            return w
        if not bool(self.has_centroids):
            raise RuntimeError(
                "SelfDistilledTruncation has no centroids: load a prior that carries them "
                f"(key {CENTROIDS_KEY!r}) with TransMRSR.load_prior, call set_centroids, or "
                "build the model with use_sdt=False"
            )
        c = self.centroids.to(w.dtype)[self.nearest(w)]
        return c + self.psi * (w - c)

    def extra_repr(self) -> str:
        return f"n_centroids={self.centroids.shape[0]}, psi={self.psi}"


class CWSS(nn.Module):
    """Channel-wise scale and shift from an encoder feature (SFT-style, as in GFP-GAN).

    alpha and beta each come from conv3x3 -> leaky ReLU 0.2 -> conv3x3 on the encoder map; the
    first half of the decoder channels becomes ``x1 * alpha + beta``, the second half passes
    unchanged. The last conv of each branch starts at zero weight with bias 1 (alpha) or 0
    (beta): an exact identity, so the loaded prior is intact at the start of training.
    """

    def __init__(self, encoder_channels: int, decoder_channels: int) -> None:
        super().__init__()
        self.half = decoder_channels // 2
        self.scale = self._branch(encoder_channels, self.half, bias=1.0)
        self.shift = self._branch(encoder_channels, self.half, bias=0.0)

    @staticmethod
    def _branch(in_channels: int, out_channels: int, bias: float) -> nn.Sequential:
        last = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        nn.init.zeros_(last.weight)
        nn.init.constant_(last.bias, bias)
        return nn.Sequential(
            nn.Conv2d(in_channels, in_channels, 3, padding=1), nn.LeakyReLU(0.2), last
        )

    def forward(self, x: Tensor, condition: Tensor) -> Tensor:
        """Modulate decoder tokens ``x [B, H, W, C]`` by an encoder map ``[B, H, W, C_enc]``."""
        cond = condition.permute(0, 3, 1, 2)
        alpha = self.scale(cond).permute(0, 2, 3, 1)
        beta = self.shift(cond).permute(0, 2, 3, 1)
        x1, x2 = x[..., : self.half], x[..., self.half :]
        return torch.cat([x1 * alpha + beta, x2], dim=-1)


class Reconstruction(nn.Module):
    """Fusion head: conv3x3 + ReLU, two residual blocks, conv3x3 to the 1-channel residual."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv_in = nn.Conv2d(channels, channels, 3, padding=1)
        self.blocks = nn.Sequential(ResidualBlock(channels), ResidualBlock(channels))
        self.conv_out = nn.Conv2d(channels, 1, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv_out(self.blocks(F.relu(self.conv_in(x))))


class GuideBranch(nn.Module):
    """Detail from the guide: a residual CNN on the restored plane and the guide's planes.

    The restored plane already holds what the thick slices say; the guide (another contrast
    of the same head, registered) holds edges the slabs blurred. From both together the branch
    predicts what to add where the anatomy's edges fall, so that no contrast is copied: what
    the guide lacks (a lesion of one contrast only) gives it no edge to add. Its last
    convolution starts at zero, so a new branch leaves the restore as it was.
    """

    def __init__(self, guide_channels: int, width: int, blocks: int) -> None:
        super().__init__()
        self.head = nn.Conv2d(1 + guide_channels, width, 3, padding=1)
        self.body = nn.Sequential(*(ResidualBlock(width) for _ in range(blocks)))
        self.tail = nn.Conv2d(width, 1, 3, padding=1)
        nn.init.zeros_(self.tail.weight)
        nn.init.zeros_(self.tail.bias)

    def forward(self, restored: Tensor, guide: Tensor) -> Tensor:
        x = torch.cat([restored, guide], dim=1)
        return restored + self.tail(self.body(F.relu(self.head(x))))


class TransMRSR(nn.Module):
    """The TransMRSR network: interpolated LR slice ``[B, 1, H, W]`` -> HR slice, same shape.

    With ``config.guide_channels`` = g the input is ``[B, 1 + g, H, W]``: the plane, then the
    same plane of the guide scans; the output is still the one restored plane.

    The network works at ``config.img_size``: smaller inputs are zero-padded (centred) to it
    and cropped back, larger ones (in either dimension) go through
    :func:`~transmrsr.models.layers.tiled_forward` with ``config.tile_overlap``.
    """

    def __init__(self, config: TransMRSRConfig) -> None:
        super().__init__()
        self.config = config
        prior = config.prior
        ch = config.encoder_channels
        # With a guide branch the guide stays out of the encoder.
        encoder_guides = 0 if config.guide_branch else config.guide_channels
        self.shallow = ShallowFeatures(ch[0], 1 + encoder_guides)
        self.guide_branch = (
            GuideBranch(config.guide_channels, config.guide_branch, config.guide_blocks)
            if config.guide_branch
            else None
        )
        self.encoder = SwinEncoder(config)
        self.latent_head = LatentHead(ch[-1], prior.n_latent, prior.style_dim)
        self.sdt = (
            SelfDistilledTruncation(prior.style_dim, config.n_centroids, config.psi)
            if config.use_sdt
            else None
        )
        self.decoder = StyleSwinSynthesis(prior, to_rgb=False)
        # Encoder map at resolution r: ch[i] with r = S / 2^i; decoder stage i is at 4 * 2^i.
        self.cwss = (
            nn.ModuleDict(
                {
                    str(res): CWSS(ch[int(math.log2(config.img_size // res))], prior.channels[i])
                    for i, res in enumerate(prior.resolutions[:-1])
                }
            )
            if config.use_mref
            else None
        )
        self.reconstruction = Reconstruction(ch[0])

    # ---------------------------------------------------------------- prior
    def load_prior(self, state_dict: Mapping[str, Tensor]) -> None:
        """Initialise the decoder (and the SDT centroids) from a stage-1 prior.

        ``state_dict`` is a :class:`~transmrsr.models.styleswin.StyleSwinGenerator` state dict,
        optionally with SDT centroids under :data:`CENTROIDS_KEY`. Every ``synthesis.*`` weight
        except ``synthesis.to_rgbs.*`` is copied into the decoder by name; the mapping network
        (``mapping.*``) is not part of TransMRSR and is skipped. Any decoder key missing from
        the prior, any other key, and any shape mismatch raise :class:`TransMRSRError` with the
        full list; nothing is loaded in that case.
        """
        if not self.config.use_prior:
            raise TransMRSRError(
                "this TransMRSR was built with use_prior=False (randomly initialised decoder); "
                "refusing to load a prior into it"
            )
        expected = self.decoder.state_dict()
        mapped: dict[str, Tensor] = {}
        unexpected: list[str] = []
        centroids = None
        for key, value in state_dict.items():
            if key == CENTROIDS_KEY:
                centroids = value
            elif key.startswith(("mapping.", "synthesis.to_rgbs.")):
                continue
            elif key.startswith("synthesis.") and key.removeprefix("synthesis.") in expected:
                mapped[key.removeprefix("synthesis.")] = value
            else:
                unexpected.append(key)
        missing = sorted(f"synthesis.{k}" for k in expected.keys() - mapped.keys())
        wrong_shape = [
            f"synthesis.{k}: prior {tuple(v.shape)} vs decoder {tuple(expected[k].shape)}"
            for k, v in mapped.items()
            if v.shape != expected[k].shape
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
                "the prior does not match this model's decoder; " + "; ".join(problems)
            )
        self.decoder.load_state_dict(mapped, strict=True)
        log.info("loaded the StyleSwin prior into the decoder (%d tensors)", len(mapped))
        if centroids is not None:
            if self.sdt is not None:
                self.sdt.set_centroids(centroids)
                log.info("loaded %d SDT centroids", centroids.shape[0])
            else:
                log.info("prior carries SDT centroids; unused because use_sdt=False")

    # ---------------------------------------------------------------- forward
    def latents(self, feats: list[Tensor]) -> Tensor:
        """Decoder latents ``[B, n_latent, style_dim]`` from the encoder maps (after SDT)."""
        w = self.latent_head(feats[-1])
        return self.sdt(w) if self.sdt is not None else w

    def _forward_fixed(self, x: Tensor) -> Tensor:
        f0 = self.shallow(x)
        feats = self.encoder(f0)
        ws = self.latents(feats)
        hook = None
        if self.cwss is not None:
            cwss = self.cwss
            by_resolution = {self.config.img_size >> (i + 1): f for i, f in enumerate(feats)}

            def hook(stage: int, y: Tensor) -> Tensor:
                res = 4 * 2**stage
                key = str(res)
                return cwss[key](y, by_resolution[res]) if key in cwss else y

        fused = self.decoder(ws, stage_hook=hook)
        if self.config.use_skip:
            fused = fused + f0
        return x[:, :1] + self.reconstruction(fused)

    def forward(self, x: Tensor) -> Tensor:
        channels = 1 + self.config.guide_channels
        if x.ndim != 4 or x.shape[1] != channels:
            raise ValueError(
                f"TransMRSR expects [B, {channels}, H, W] (the plane"
                + (f" and {channels - 1} guide plane(s)" if channels > 1 else "")
                + f"), got {tuple(x.shape)}"
            )
        if self.guide_branch is None:
            return self.trunk(x)
        return self.guide_branch(self.trunk(x[:, :1]), x[:, 1:])

    def trunk(self, x: Tensor) -> Tensor:
        """The restored plane before the guide branch (the whole network without one).

        ``x`` is ``[B, C, H, W]`` with the channels the encoder takes: the plane, and the
        guide planes when they enter the first convolution. The branch is convolutional and
        runs on the whole plane after it, so it sees no tile seams; fitting it to a scan
        (:func:`~transmrsr.inference.guided.fit_guide_branch`) computes this once per pair.
        """
        size = self.config.img_size
        h, w = x.shape[-2:]
        if (h, w) == (size, size):
            return self._forward_fixed(x)
        if h <= size and w <= size:
            top, left = (size - h) // 2, (size - w) // 2
            padded = F.pad(x, (left, size - w - left, top, size - h - top))
            return self._forward_fixed(padded)[..., top : top + h, left : left + w]
        return tiled_forward(self._forward_fixed, x, size, self.config.tile_overlap)

    # ---------------------------------------------------------------- bookkeeping
    def parameter_counts(self) -> dict[str, int]:
        """Parameters per part (shallow, encoder, latent_head, decoder, cwss, reconstruction)
        and their total."""
        parts: dict[str, nn.Module | None] = {
            "shallow": self.shallow,
            "encoder": self.encoder,
            "latent_head": self.latent_head,
            "decoder": self.decoder,
            "cwss": self.cwss,
            "reconstruction": self.reconstruction,
            "guide_branch": self.guide_branch,
        }
        counts = {
            name: sum(p.numel() for p in m.parameters()) if m is not None else 0
            for name, m in parts.items()
        }
        counts["total"] = sum(counts.values())
        return counts


def with_guide(
    model: TransMRSR, guide_channels: int = 1, branch: int = 0, blocks: int | None = None
) -> TransMRSR:
    """A copy of ``model`` that takes ``guide_channels`` guide planes after its input plane.

    Every weight is the model's. Without ``branch`` the guide enters the first convolution,
    whose weights for the new channels are zero; with ``branch`` (a width) it feeds a new
    :class:`GuideBranch` whose last convolution is zero. Either way the copy restores exactly
    as ``model`` whatever the guide holds, and training (or the adaptation to a scan) starts
    from there and learns how much to take from the guide. ``blocks``: the branch's residual
    blocks (default: the config's ``guide_blocks``).
    """
    if model.config.guide_channels:
        raise TransMRSRError("the model already takes a guide")
    config = replace(model.config, guide_channels=guide_channels, guide_branch=branch)
    if blocks is not None:
        config = replace(config, guide_blocks=blocks)
    guided = TransMRSR(config).to(next(model.parameters()).device)
    state = dict(model.state_dict())
    if branch:
        own = guided.state_dict()
        state.update({k: v for k, v in own.items() if k.startswith("guide_branch.")})
    else:
        weight = state["shallow.conv.weight"]
        extra = weight.new_zeros(weight.shape[0], guide_channels, *weight.shape[2:])
        state["shallow.conv.weight"] = torch.cat([weight, extra], dim=1)
    guided.load_state_dict(state, strict=True)
    return guided
