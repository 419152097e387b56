"""The guide branch fitted to the scan it restores.

A guided restore has the session's isotropic scan (the guide, another contrast of the same head)
beside the thick one. The guide shows the edges that the thick slices blurred, but how much of
its detail belongs in the restored contrast (which edges, with which sign and strength) depends
on the two contrasts, the scanners and the head. So the branch that adds it
(:class:`~transmrsr.models.transmrsr.GuideBranch`, a small residual CNN on the restored plane
and the guide's plane) learns that from the scan itself, as the adaptation does
(:mod:`transmrsr.inference.adapt`): the scan's in-plane images, made thick along one in-plane
axis with the adaptation's slice model, each with the guide's matching plane. The trunk of the
network (everything before the branch) is frozen, so it restores each pair once; the branch
then trains on crops of those restored planes, a few hundred steps at a fraction of the cost
of one of the adaptation's.

Pairs held out of the fit decide whether the branch is kept: when it does not restore them
better than the trunk alone (a guide of little use to this contrast, or one that lacks what the
scan shows), the restore goes on unguided and says so. A guide is never used without that
evidence from the scan.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from transmrsr.errors import TransMRSRError
from transmrsr.inference.adapt import AdaptConfig, in_plane_images, scan_pair_configs
from transmrsr.models.transmrsr import TransMRSR, with_guide
from transmrsr.pairs import SIGNAL_LEVEL, make_pair

log = logging.getLogger(__name__)

#: Width and residual blocks of a branch made for a guided restore with an unguided model.
GUIDE_WIDTH = 32
GUIDE_BLOCKS = 4
#: Seed-key offset of the fit's pairs, so that they are not the adaptation's.
_PAIR_KEY = 7_000_000


@dataclass(frozen=True)
class GuideFitConfig:
    """How the guide branch is fitted to a scan.

    ``pairs`` in-plane pairs are made and restored by the trunk once; ``held_out`` of them
    (a fraction) judge the fit. ``steps`` Adam steps at ``lr`` train the branch on
    ``batch_size`` crops of ``crop`` pixels centred on signal. ``min_gain_db``: the held-out
    PSNR gain the branch must bring over the trunk alone to be kept.
    """

    steps: int = 800
    pairs: int = 48
    held_out: float = 0.25
    crop: int = 96
    batch_size: int = 8
    lr: float = 1e-3
    seed: int = 0
    min_gain_db: float = 0.05

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise TransMRSRError(f"the guide fit needs at least 1 step, got {self.steps}")
        if self.pairs < 4:
            raise TransMRSRError(f"the guide fit needs at least 4 pairs, got {self.pairs}")
        if not 0.0 < self.held_out < 1.0:
            raise TransMRSRError(f"held_out must be in (0, 1), got {self.held_out}")
        if self.crop < 16 or self.batch_size < 1:
            raise TransMRSRError("the guide fit needs crops of 16 pixels or more, batches of 1+")
        if not 0.0 < self.lr < 1.0:
            raise TransMRSRError(f"the guide fit's learning rate must be in (0, 1), got {self.lr}")


@dataclass
class GuideFit:
    """A fitted branch: the network to restore with, and the evidence for it."""

    network: nn.Module
    #: held-out PSNR (dB, inside the signal) of the trunk alone and of trunk + branch
    trunk_psnr: float
    guided_psnr: float
    #: whether the branch is used (it helped the held-out pairs by ``min_gain_db``)
    kept: bool

    @property
    def gain_db(self) -> float:
        return self.guided_psnr - self.trunk_psnr


def add_guide_branch(network: nn.Module, seed: int = 0) -> TransMRSR:
    """``network`` with a new guide branch (:data:`GUIDE_WIDTH`, :data:`GUIDE_BLOCKS`) that
    starts at zero: it restores exactly as ``network`` until fitted."""
    if not isinstance(network, TransMRSR):
        raise TransMRSRError(
            f"a guided restore needs a TransMRSR network, got {type(network).__name__}"
        )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return with_guide(network, 1, branch=GUIDE_WIDTH, blocks=GUIDE_BLOCKS)


def _psnr(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> float:
    mse = float(((pred - target) ** 2)[mask].mean())
    return float(10 * np.log10(1.0 / max(mse, 1e-12)))


def fit_guide_branch(
    network: nn.Module,
    normalised: np.ndarray,
    guide: np.ndarray,
    thick_axis: int,
    factor: float,
    config: GuideFitConfig,
    adapt: AdaptConfig,
    *,
    thickness: float | None = 1.0,
    device: torch.device | str = "cpu",
    bf16: bool = False,
    progress: bool = False,
) -> GuideFit:
    """Fit ``network``'s guide branch to the scan; ``network`` itself is left unchanged.

    Args:
        network: a TransMRSR with a guide branch (:func:`add_guide_branch`).
        normalised: the thick scan on its own grid, in the network's intensity range.
        guide: the guide registered onto the scan's grid (slab-averaged) and normalised.
        thick_axis, factor: the scan's thick axis and factor.
        config: the fit.
        adapt: the adaptation's settings, for the slice model of the pairs
            (:func:`~transmrsr.inference.adapt.step_slices`).
        thickness: slice thickness over spacing (``None``: not known).
        device, bf16, progress: as for the adaptation.

    Returns:
        The fitted copy (in eval mode) and its held-out PSNRs; when the branch did not help the
        held-out pairs, a copy whose branch is zero again, which restores as the trunk alone.
    """
    branch = getattr(network, "guide_branch", None)
    if branch is None:
        raise TransMRSRError("fitting a guide needs a network with a guide branch")
    images = in_plane_images(normalised, thick_axis, guide)
    if not images:
        raise TransMRSRError("the scan has no in-plane image with signal to fit the guide to")
    device = torch.device(device)
    fitted = copy.deepcopy(network).to(device).eval()
    for parameter in fitted.parameters():
        parameter.requires_grad_(False)
    pair_configs = scan_pair_configs(fitted, factor, adapt, thickness)
    pick = np.random.default_rng((config.seed, _PAIR_KEY))
    restored, guides, targets = [], [], []
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        for i in tqdm(range(config.pairs), desc="guide pairs", disable=not progress):
            image = images[int(pick.integers(len(images)))]
            lr, hr, _ = make_pair(
                image[0], pair_configs[i % len(pair_configs)], (config.seed, _PAIR_KEY, i), image[1]
            )
            restored.append(fitted.trunk(lr[None, :1].to(device)).float()[0])
            guides.append(lr[1:].to(device))
            targets.append(hr.to(device))
    trunk_out, guide_in, target = (torch.stack(t) for t in (restored, guides, targets))
    n_held = max(1, round(config.pairs * config.held_out))
    train = np.arange(config.pairs - n_held)
    held = slice(config.pairs - n_held, config.pairs)
    signal = target > SIGNAL_LEVEL
    centres = [torch.nonzero(signal[i, 0]).cpu().numpy() for i in train]
    train = np.array([i for i in train if len(centres[i])])
    if not len(train):
        raise TransMRSRError("the guide fit's pairs hold no signal")
    branch = fitted.guide_branch
    for parameter in branch.parameters():
        parameter.requires_grad_(True)
    optimizer = torch.optim.Adam(branch.parameters(), lr=config.lr)
    size = target.shape[-1]
    crop = min(config.crop, size)
    branch.train()
    for _ in tqdm(range(config.steps), desc="guide fit", disable=not progress):
        chosen = pick.choice(train, size=config.batch_size)
        batch = []
        for i in chosen:
            cy, cx = centres[i][int(pick.integers(len(centres[i])))]
            top = int(np.clip(cy - crop // 2, 0, size - crop))
            left = int(np.clip(cx - crop // 2, 0, size - crop))
            window = (slice(None), slice(top, top + crop), slice(left, left + crop))
            batch.append((trunk_out[i][window], guide_in[i][window], target[i][window]))
        r, g, t = (torch.stack(parts) for parts in zip(*batch, strict=True))
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            pred = branch(r, g)
        loss = nn.functional.l1_loss(pred.float(), t)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    branch.eval()
    for parameter in fitted.parameters():
        parameter.requires_grad_(False)
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        guided = branch(trunk_out[held], guide_in[held]).float()
    trunk_psnr = _psnr(trunk_out[held], target[held], signal[held])
    guided_psnr = _psnr(guided, target[held], signal[held])
    kept = guided_psnr - trunk_psnr >= config.min_gain_db
    if kept:
        log.info(
            "guide branch fitted to the scan (%d steps): held-out pairs %.2f -> %.2f dB",
            config.steps,
            trunk_psnr,
            guided_psnr,
        )
    else:
        log.warning(
            "the guide did not help the scan's own held-out pairs (%.2f -> %.2f dB): "
            "restoring without it",
            trunk_psnr,
            guided_psnr,
        )
        nn.init.zeros_(branch.tail.weight)
        nn.init.zeros_(branch.tail.bias)
    for parameter in fitted.parameters():
        parameter.requires_grad_(True)
    return GuideFit(fitted.eval(), trunk_psnr, guided_psnr, kept)
