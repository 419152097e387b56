"""Self-supervised adaptation of a restoration network to the very scan it restores.

A thick-slice scan is sharp within its slices. Its in-plane images (the planes perpendicular to
the thick axis) therefore hold the scan's own anatomy, noise, contrast and skull at the fine
resolution. Blurring them along one in-plane axis with the scan's slice model gives LR/HR pairs
with the same task the network solves on the planes through the thick axis, drawn from the
scan itself; a few fine-tuning steps on them move the network from the processed volumes it was
trained on towards this acquisition. This is SMORE's self-supervision (Zhao et al., TMI 2020)
used to fine-tune a pretrained network rather than to train one from scratch.

The shipped models were trained on five volumes, four of them processed (skull-stripped,
averaged, resampled); on the one routine scan held out from them, 20 steps raised the gain
over cubic interpolation as much as 100 did, and far more on contrasts the models never saw
(docs/experiments.md, adaptation to the scan), so ``restore`` adapts for :data:`DEFAULT_STEPS` steps
unless told otherwise.
"""

from __future__ import annotations

import copy
import functools
import logging
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from transmrsr.degradation import SLICE_PROFILES
from transmrsr.devices import map_in_threads, resolve_workers
from transmrsr.errors import TransMRSRError
from transmrsr.pairs import MIN_SIGNAL_FRACTION, SIGNAL_LEVEL, PairConfig, make_pair

log = logging.getLogger(__name__)

#: Pairs draw their factor within this distance of the scan's (the slice profile of a real
#: scanner is only approximately the model's) ...
FACTOR_SPREAD = 0.5
#: ... and a log-uniform gain in this range, as the shipped models were trained.
GAIN_RANGE = (0.75, 1.33)
#: Crop size for networks without a working size of their own (the CNN baselines).
DEFAULT_PATCH = 128
#: Slice thickness over spacing that pairs draw from when the scan's is not known and the
#: adaptation assumes a mix: real 2-D scans come with gaps (0.7-0.8) as often as without, and
#: sometimes with overlap.
UNKNOWN_THICKNESS = (0.6, 1.2)
#: What the adaptation's pairs assume when the scan's slice thickness is not known
#: (:attr:`AdaptConfig.unknown`): ``gaussian``, the SPEC's Gaussian as thick as the spacing;
#: ``gaussian-range``, Gaussians of :data:`UNKNOWN_THICKNESS`; ``mix``, every shape of
#: :data:`~transmrsr.degradation.SLICE_PROFILES` at those thicknesses; ``gaussian-mix``, the
#: Gaussian's pairs and the mix's on alternate steps; ``auto``, the Gaussian below
#: :data:`MIX_FROM_FACTOR` and ``gaussian-mix`` from it.
UNKNOWN_SLICES = ("auto", "gaussian", "gaussian-range", "mix", "gaussian-mix")
#: From this factor on, ``auto`` mixes the profile shapes into the Gaussian's pairs: at x8 the
#: Gaussian's alone cost a routine head with skull 0.07 dB, at x4 and x6 they were at or above
#: the mix's on every case of the regression suite (docs/experiments.md, 2026-12-07).
MIX_FROM_FACTOR = 7.0
#: What ``restore`` does unless told otherwise: about half of an 85-106 s default restore on a
#: 2-core CPU without bf16 units (docs/restore.md).
DEFAULT_STEPS = 20
#: Scans whose in-plane noise (:func:`~transmrsr.intensity.in_plane_noise`) is below this
#: fraction of their tissue level, and whose slice thickness is not known, are not adapted:
#: templates and averages of many scans (MNI152 0.5-0.6 %, Colin27 0.8-1.0 %), against
#: 1.4-4.9 % for every single acquisition measured (docs/experiments.md, 2026-12-07).
NOISE_FREE_LEVEL = 0.012
#: Factors at which such a noise-free scan is still adapted, with the mix of slice profiles:
#: those the shipped x6 file restores (4.5-7), which restores noise-free heads better adapted
#: (MNI152 x6 +2.48 dB over cubic against +2.40 without; Colin27 +1.74 against +1.62), where
#: the x4 and x8 files restore them better as they are (MNI152 x4 +3.85 against +3.24, x8
#: +2.86 against +2.51; Colin27 x4 +2.98 against +2.96; docs/experiments.md, 2026-12-07).
NOISE_FREE_ADAPT_FACTORS = (4.5, 7.0)
#: Which parameters the adaptation tunes (:func:`adaptable_parameters`); ``auto`` is made
#: concrete per scan by :meth:`AdaptConfig.scope_for`.
ADAPT_SCOPES = ("auto", "decoder", "all")
#: Factors at which ``auto`` tunes every parameter of a scan with noise: those of the shipped
#: x6 file (4.5-7), where the decoder side alone cost a real T2 0.065 dB at x6 (+1.097 against
#: +1.162 dB over cubic) for 0.017 dB on a T1 with skull; a noise-free scan there keeps the
#: decoder scope (MNI152 x6 +2.476 against +2.447; docs/experiments.md, 2026-12-07). Elsewhere
#: both scopes restored the suite's cases alike, and the decoder's step costs half.
ALL_SCOPE_FACTORS = (4.5, 7.0)
#: Parameters of the decoder side of a TransMRSR network: the generator, the channel-wise
#: scale & shift from the encoder's features, the reconstruction head and the guide branch.
DECODER_PREFIXES = ("decoder.", "cwss.", "reconstruction.", "guide_branch.")
#: Learnt attention biases, kept fixed by the ``decoder`` scope.
POSITION_TABLE = "relative_position_bias.table"


@dataclass(frozen=True)
class AdaptConfig:
    """How to adapt: ``steps`` Adam steps of ``batch_size`` pairs at learning rate ``lr``.

    The default learning rate is the one the shipped specialists were last trained with; four
    times it was worse on the held-out routine scan (docs/experiments.md). The precision is the
    restore's (:func:`~transmrsr.devices.inference_uses_bf16`).

    ``scope``: which parameters are tuned (:func:`adaptable_parameters`). ``decoder`` leaves
    the encoder and the attention position tables as trained, so that no gradient flows
    through the encoder and attention runs PyTorch's fused kernel backwards as well: a step
    costs about half of one over ``all`` parameters on a 2-core CPU, with half the memory
    (docs/experiments.md). ``auto`` (default) is ``all`` for a scan with noise at
    :data:`ALL_SCOPE_FACTORS` and ``decoder`` elsewhere (:meth:`scope_for`).

    ``profiles``: the slice-profile shapes the pairs draw from. ``None`` (default): the
    SPEC's Gaussian when the scan's slice thickness is known (given, or from a sidecar or the
    DICOM tags), and as ``unknown`` says when it is not.

    ``unknown``: what the pairs assume when the thickness is not known (:data:`UNKNOWN_SLICES`).
    A scan whose slices are not what the adaptation assumes learns corrections locked to the
    wrong shape, which show as stripes one slab apart. Drawing from all shapes (``mix``) cost
    0.1-0.35 dB where the slices were the SPEC's Gaussian as thick as their spacing, the
    Gaussian alone (``gaussian``) 0.07 dB on a routine head with skull at x8. The default
    ``auto`` takes the Gaussian below :data:`MIX_FROM_FACTOR` and the Gaussian and the mix on
    alternate steps (``gaussian-mix``) from it (:meth:`for_factor`; docs/experiments.md,
    2026-12-07).

    ``min_noise``: a scan whose slice thickness is not known and whose in-plane noise is below
    this fraction of its tissue level (:data:`NOISE_FREE_LEVEL`; 0: never) is not adapted,
    unless ``unknown`` is ``mix`` or its factor lies in :data:`NOISE_FREE_ADAPT_FACTORS`
    (then with the mix; :meth:`for_noise_free`). Pairs made from a noise-free image (a
    template, an average of many scans, a denoised image) teach the network to undo the
    assumed profile exactly, with no noise to temper a wrong guess: on the MNI152 template
    with a slice gap not told, the Gaussian's pairs cost 0.88 dB against the mix's, and the
    mix's cost 0.35-0.6 dB at x4 and x8 against no adaptation (docs/experiments.md,
    2026-12-07).
    """

    steps: int = DEFAULT_STEPS
    lr: float = 5e-5
    batch_size: int = 4
    seed: int = 0
    profiles: tuple[str, ...] | None = None
    scope: str = "auto"
    unknown: str = "auto"
    min_noise: float = NOISE_FREE_LEVEL

    def for_noise_free(self, factor: float) -> AdaptConfig | None:
        """What a noise-free scan of unknown thickness (in-plane noise below ``min_noise``)
        gets at ``factor``: the mix at :data:`NOISE_FREE_ADAPT_FACTORS`, else no adaptation
        (``None``); asked for the mix (``unknown="mix"``), always the mix."""
        lo, hi = NOISE_FREE_ADAPT_FACTORS
        if self.unknown == "mix" or lo <= factor < hi:
            scope = "decoder" if self.scope == "auto" else self.scope
            return replace(self, unknown="mix", scope=scope)
        return None

    def scope_for(self, factor: float) -> str:
        """The scope the adaptation of a scan of ``factor`` tunes: ``auto`` made concrete
        (``all`` at :data:`ALL_SCOPE_FACTORS`, else ``decoder``); a noise-free scan's ``auto``
        was already made ``decoder`` (:meth:`for_noise_free`)."""
        if self.scope != "auto":
            return self.scope
        lo, hi = ALL_SCOPE_FACTORS
        return "all" if lo <= factor < hi else "decoder"

    def for_factor(self, factor: float) -> AdaptConfig:
        """This config for a scan of ``factor``: ``unknown="auto"`` made concrete."""
        if self.unknown != "auto":
            return self
        return replace(self, unknown="gaussian" if factor < MIX_FROM_FACTOR else "gaussian-mix")

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise TransMRSRError(f"adaptation needs at least 1 step, got {self.steps}")
        if not 0.0 < self.lr < 1.0:
            raise TransMRSRError(f"adaptation learning rate must be in (0, 1), got {self.lr}")
        if self.batch_size < 1:
            raise TransMRSRError(f"adaptation batch size must be at least 1, got {self.batch_size}")
        if self.unknown not in UNKNOWN_SLICES:
            raise TransMRSRError(
                f"unknown-thickness slices must be one of {', '.join(UNKNOWN_SLICES)}, "
                f"got {self.unknown!r}"
            )
        if not 0.0 <= self.min_noise < 1.0:
            raise TransMRSRError(
                f"adaptation noise floor must be in [0, 1), got {self.min_noise:g}"
            )
        if self.scope not in ADAPT_SCOPES:
            raise TransMRSRError(
                f"adaptation scope must be one of {', '.join(ADAPT_SCOPES)}, got {self.scope!r}"
            )


def adaptable_parameters(network: nn.Module, scope: str) -> list[nn.Parameter]:
    """The parameters of ``network`` that an adaptation with ``scope`` tunes.

    ``all``: every parameter. ``decoder``: those of a TransMRSR network's decoder side
    (:data:`DECODER_PREFIXES`) except the attention position tables; the scan's domain shows
    in the encoder's features, and tuning what turns them into an image recovers most of what
    tuning everything does. Networks without a decoder side (the CNN baselines) tune every
    parameter.
    """
    if scope not in ("decoder", "all"):
        raise TransMRSRError(f"a concrete adaptation scope is decoder or all, got {scope!r}")
    named = list(network.named_parameters())
    if scope == "all":
        return [p for _, p in named]
    chosen = [
        p for name, p in named if name.startswith(DECODER_PREFIXES) and POSITION_TABLE not in name
    ]
    if not chosen:
        log.info("the network has no decoder side to adapt: adapting all of its parameters")
        return [p for _, p in named]
    return chosen


def pair_slices(config: AdaptConfig, thickness: float | None) -> dict[str, tuple]:
    """The slice model of the adaptation's pairs: ``thickness_range`` and ``profiles`` of a
    :class:`~transmrsr.pairs.PairConfig`, for a scan whose slices are ``thickness`` spacings
    thick (``None``: not known, then as ``config.unknown`` says; ``auto`` must first be made
    concrete for the scan's factor, :meth:`AdaptConfig.for_factor`)."""
    if thickness is None and config.unknown == "auto":
        raise TransMRSRError("unknown='auto' depends on the factor: use config.for_factor(k)")
    if thickness is not None:
        return {
            "thickness_range": (thickness, thickness),
            "profiles": config.profiles or ("gaussian",),
        }
    if config.unknown in ("gaussian", "gaussian-mix"):
        return {"thickness_range": (1.0, 1.0), "profiles": config.profiles or ("gaussian",)}
    if config.unknown == "gaussian-range":
        return {"thickness_range": UNKNOWN_THICKNESS, "profiles": config.profiles or ("gaussian",)}
    return {"thickness_range": UNKNOWN_THICKNESS, "profiles": config.profiles or SLICE_PROFILES}


def step_slices(config: AdaptConfig, thickness: float | None) -> list[dict[str, tuple]]:
    """The slice models of the adaptation's steps, taken in turn: :func:`pair_slices`'s, and
    for ``gaussian-mix`` with the thickness unknown also the mix's."""
    first = pair_slices(config, thickness)
    if thickness is None and config.unknown == "gaussian-mix":
        return [first, pair_slices(replace(config, unknown="mix"), None)]
    return [first]


def scan_pair_configs(
    network: nn.Module, factor: float, config: AdaptConfig, thickness: float | None
) -> list[PairConfig]:
    """How pairs are made from the scan's in-plane images, one config per step in turn
    (:func:`step_slices`): factors around the scan's, patches of the network's size."""
    config = config.for_factor(factor)
    patch = int(getattr(getattr(network, "config", None), "img_size", DEFAULT_PATCH))
    return [
        PairConfig(
            factor_range=(max(1.01, factor - FACTOR_SPREAD), factor + FACTOR_SPREAD),
            patch_size=patch,
            transpose=False,
            gain_range=GAIN_RANGE,
            **slices,
        )
        for slices in step_slices(config, thickness)
    ]


def in_plane_images(
    normalised: np.ndarray, thick_axis: int, guide: np.ndarray | None = None
) -> list[np.ndarray]:
    """The scan's planes perpendicular to ``thick_axis``, each in both orientations.

    Near-empty planes (less than the training data's minimum of signal) are left out. Either
    in-plane axis becomes the rows, the axis :func:`make_pair` makes thick. With ``guide``
    (another contrast on the scan's grid), each image is a ``[2, rows, cols]`` array: the
    scan's plane, then the guide's same plane.
    """
    if normalised.ndim != 3:
        raise TransMRSRError(f"adaptation needs a 3-D volume, got shape {normalised.shape}")
    if guide is not None and guide.shape != normalised.shape:
        raise TransMRSRError(f"guide {guide.shape} and scan {normalised.shape} differ in shape")
    images = []
    for index in range(normalised.shape[thick_axis]):
        plane = np.take(normalised, index, axis=thick_axis).astype(np.float32)
        if (plane > SIGNAL_LEVEL).mean() < MIN_SIGNAL_FRACTION:
            continue
        if guide is not None:
            plane = np.stack([plane, np.take(guide, index, axis=thick_axis).astype(np.float32)])
        images += [plane, np.ascontiguousarray(np.swapaxes(plane, -1, -2))]
    return images


def _share_gradient(
    network: nn.Module,
    tuned: list[nn.Parameter],
    pairs: PairConfig,
    bf16: bool,
    share: list[tuple[np.ndarray, tuple[int, ...]]],
) -> tuple[torch.Tensor, ...]:
    """Gradient with respect to ``tuned`` of the L1 loss over the pairs made from ``share``
    (image, key), left out of the parameters' ``.grad`` so that threads never write the same
    tensor. The pairs are made here, so that threads make theirs side by side; autocast is per
    thread, so it is entered here too."""
    made = []
    for image, key in share:
        plane, guide = (image, None) if image.ndim == 2 else (image[0], image[1])
        made.append(make_pair(plane, pairs, key, guide))
    device = next(network.parameters()).device
    lr_img = torch.stack([m[0] for m in made]).to(device)
    hr_img = torch.stack([m[1] for m in made]).to(device)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        pred = network(lr_img)
    loss = nn.functional.l1_loss(pred.float(), hr_img)
    return torch.autograd.grad(loss, tuned)


def adapt_network(
    network: nn.Module,
    normalised: np.ndarray,
    thick_axis: int,
    factor: float,
    config: AdaptConfig,
    *,
    device: torch.device | str = "cpu",
    bf16: bool = False,
    progress: bool = False,
    thickness: float | None = 1.0,
    workers: int | None = None,
    guide: np.ndarray | None = None,
) -> nn.Module:
    """A copy of ``network`` fine-tuned on pairs made from the scan's own in-plane images.

    Args:
        network: the restoration network (left unchanged).
        normalised: the thick-slice scan on its own grid, in the network's intensity range.
        thick_axis: its thick array axis.
        factor: thick spacing / thin spacing of the restoration.
        config: steps, learning rate, batch and seed.
        device: where to train.
        bf16: bf16 autocast for the forward passes (weights, optimiser and loss stay fp32).
        progress: show a progress bar.
        thickness: the scan's slice thickness over its slice spacing (below 1 with a slice
            gap): the pairs' slices are made that thick; ``None`` (not known): as
            ``config.unknown`` says (:func:`pair_slices`).
        workers: threads that share each step's pairs (default
            :func:`~transmrsr.devices.default_workers`: two on a CPU); each computes the
            gradient of its share, and the step applies their weighted mean, the gradient of
            the whole batch.
        guide: for a guided network, the guide registered onto the scan's own grid and
            normalised: each pair's input carries the guide's plane matching its scan plane.

    Returns:
        The adapted copy, in eval mode, on ``device``; ``network`` itself (with a warning)
        when no in-plane image holds enough signal to learn from.
    """
    images = in_plane_images(normalised, thick_axis, guide)
    if not images:
        log.warning("the scan has no in-plane image with signal to adapt to: not adapted")
        return network.to(device).eval()
    pairs = scan_pair_configs(network, factor, config, thickness)
    device = torch.device(device)
    adapted = copy.deepcopy(network).to(device).train()
    scope = config.scope_for(factor)
    tuned = adaptable_parameters(adapted, scope)
    chosen = {id(p) for p in tuned}
    for parameter in adapted.parameters():
        parameter.requires_grad_(id(parameter) in chosen)
    optimizer = torch.optim.Adam(tuned, lr=config.lr)
    workers = min(config.batch_size, resolve_workers(workers, device))
    pick = np.random.default_rng(config.seed)
    log.info(
        "adapting to the scan: %d steps of %d pairs from %d in-plane images (%s: %d of %d "
        "parameters)",
        config.steps,
        config.batch_size,
        len(images),
        scope,
        sum(p.numel() for p in tuned),
        sum(p.numel() for p in adapted.parameters()),
    )
    shares = [s for s in np.array_split(np.arange(config.batch_size), workers) if len(s)]
    weights = [len(share) / config.batch_size for share in shares]
    for step in tqdm(range(config.steps), desc="adapt", disable=not progress):
        gradient = functools.partial(
            _share_gradient, adapted, tuned, pairs[step % len(pairs)], bf16
        )
        chosen = pick.integers(0, len(images), size=config.batch_size)
        batch = [(images[c], (config.seed, step, j)) for j, c in enumerate(chosen)]
        parts = list(map_in_threads(gradient, [[batch[j] for j in s] for s in shares], workers))
        for i, parameter in enumerate(tuned):
            parameter.grad = sum(w * grads[i] for w, grads in zip(weights, parts, strict=True))
        optimizer.step()
    for parameter in adapted.parameters():
        parameter.requires_grad_(True)
    return adapted.eval()
