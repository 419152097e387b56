"""LR/HR training pairs: one thin-slice plane in, the same plane as a thick-slice scan sees it.

The one place that says how a pair is made (SPEC section 8, run backwards): the HR plane is
padded, optionally warped, scaled and noised, degraded along its rows with the SMORE slice
model and interpolated back, then input and target are cropped and flipped alike. Training
(:mod:`transmrsr.training.data`) makes its pairs from training volumes with it, and the
adaptation to a scan (:mod:`transmrsr.inference.adapt`) from the scan's own in-plane images,
so both learn exactly the same task. :data:`SIGNAL_LEVEL` and :data:`MIN_SIGNAL_FRACTION` are
the rule both (and restoration, :mod:`transmrsr.inference.planes`) use to skip empty planes.

It sits below training and inference so that inference never imports training code.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage

from transmrsr.degradation import (
    MAX_THICKNESS,
    MIN_THICKNESS,
    SLICE_PROFILES,
    simulate_interpolated_lr,
    slice_profile,
)
from transmrsr.errors import TransMRSRError

#: A reference voxel above this fraction of the normalised range counts as signal; a plane
#: with less than MIN_SIGNAL_FRACTION of such voxels is "empty" and dropped.
SIGNAL_LEVEL = 0.05
MIN_SIGNAL_FRACTION = 0.02


@dataclass(frozen=True)
class PairConfig:
    """How pairs are made. Factor range ``(lo, hi)``: each pair draws a factor in it.

    ``augment``: random vertical and horizontal flips, and with ``transpose`` also random
    transposes (the SPEC's augmentation). A transpose puts the thick axis along the columns,
    which restoration never does (it always feeds planes with the thick axis as rows), so a
    model for this pipeline learns its one direction faster without them.

    ``all_thick_axes``: pairs are also made with the thick axis along the other two anatomical
    axes (every plane, with either of its axes as rows), so the same row-wise task is seen on
    three times the anatomical variety; validation stays along ``thick_axis``. Unlike
    ``transpose`` (which turns a made pair), the plane is turned before it is degraded.

    ``noise_range`` ``(lo, hi)``: Rician noise of a standard deviation drawn in it (in the
    normalised scale, bright tissue = 1) is added to each HR plane before it is degraded, so
    the input carries the thick slices' averaged noise and the target the thin slices' own, as
    in a real acquisition. Processed training volumes (skull-stripped, averaged, zeroed
    background) are far cleaner than a routine scan; without it a model meets real noise, and a
    noisy background, for the first time at restoration. ``(0, 0)``: no noise.

    ``gain_range`` ``(lo, hi)``: each HR plane is multiplied by a gain drawn log-uniformly in it
    before it is degraded (input and target alike). Restoration normalises a volume by robust
    percentiles of the whole head, so where its tissue lands in the network's range depends on
    skull fat, vessels and the scanner; the gain teaches the network that range instead of the
    few levels its training volumes happen to have. ``(1, 1)``: no gain.

    ``rotate_degrees`` and ``zoom_range`` ``(lo, hi)``: each HR plane is turned by an angle
    drawn uniformly in ``[-rotate_degrees, rotate_degrees]`` about its centre and scaled by a
    factor drawn log-uniformly in the zoom range (below 1 the anatomy shrinks, as on a grid of
    coarser voxels) before it is degraded. Real scans are not aligned to a template: a clinical
    slab is tilted against the anatomy by tens of degrees and voxels range from about 0.8 to
    1.3 mm, while the few training volumes sit near one pose and one voxel size. The warp is a
    cubic spline; zooms above 1 would blur the target and are refused. ``0`` and ``(1, 1)``:
    no warp.

    ``thickness_range`` ``(lo, hi)``: the slice profile's FWHM as a fraction of the slice
    spacing, drawn uniformly per pair. Clinical 2-D scans are often acquired with a gap
    (5 mm slices every 6.5 mm: 0.77) and reconstructions sometimes overlap (above 1); the
    adaptation to a scan of known thickness makes its pairs that way. ``(1, 1)``: slices as
    thick as their spacing, the SPEC's model.

    ``profiles``: the slice-profile shapes (:data:`~transmrsr.degradation.SLICE_PROFILES`) a
    pair draws from, uniformly. Real 2-D scans are acquired with flat-topped, boxcar-like or
    cross-talking slices, not the SPEC's Gaussian; a network that only ever saw one shape
    learns corrections locked to it, and on a real scan they no longer cancel from slab to
    slab (horizontal stripes one slab apart, :mod:`transmrsr.stripes`).
    ``("gaussian",)``: the SPEC's model.
    """

    factor_range: tuple[float, float] = (4.0, 4.0)
    thick_axis: str = "SI"
    patch_size: int = 256
    interpolation: str = "cubic"
    augment: bool = True
    transpose: bool = True
    all_thick_axes: bool = False
    noise_range: tuple[float, float] = (0.0, 0.0)
    gain_range: tuple[float, float] = (1.0, 1.0)
    rotate_degrees: float = 0.0
    zoom_range: tuple[float, float] = (1.0, 1.0)
    thickness_range: tuple[float, float] = (1.0, 1.0)
    profiles: tuple[str, ...] = ("gaussian",)

    def __post_init__(self) -> None:
        object.__setattr__(self, "profiles", tuple(str(p) for p in self.profiles))
        unknown = [p for p in self.profiles if p not in SLICE_PROFILES]
        if not self.profiles or unknown:
            raise TransMRSRError(
                f"slice profiles must be among {', '.join(SLICE_PROFILES)}, got "
                f"{', '.join(self.profiles) or 'none'}"
            )
        names = ("factor_range", "noise_range", "gain_range", "zoom_range", "thickness_range")
        for name in names:
            object.__setattr__(self, name, tuple(float(v) for v in getattr(self, name)))
        lo, hi = self.noise_range
        if not 0.0 <= lo <= hi <= 0.5:
            raise TransMRSRError(f"noise range must satisfy 0 <= lo <= hi <= 0.5, got {lo}-{hi}")
        lo, hi = self.gain_range
        if not 0.25 <= lo <= hi <= 4.0:
            raise TransMRSRError(f"gain range must satisfy 0.25 <= lo <= hi <= 4, got {lo}-{hi}")
        lo, hi = self.zoom_range
        if not 0.5 <= lo <= hi <= 1.0:
            raise TransMRSRError(f"zoom range must satisfy 0.5 <= lo <= hi <= 1, got {lo}-{hi}")
        lo, hi = self.thickness_range
        if not MIN_THICKNESS <= lo <= hi <= MAX_THICKNESS:
            raise TransMRSRError(
                f"thickness range (slice FWHM / spacing) must satisfy {MIN_THICKNESS:g} <= lo "
                f"<= hi <= {MAX_THICKNESS:g}, got {lo}-{hi}"
            )
        object.__setattr__(self, "rotate_degrees", float(self.rotate_degrees))
        if not 0.0 <= self.rotate_degrees <= 180.0:
            raise TransMRSRError(f"rotate degrees must be in [0, 180], got {self.rotate_degrees}")

    @property
    def warps(self) -> bool:
        """Whether pairs are turned or scaled before they are degraded."""
        return self.rotate_degrees > 0 or self.zoom_range != (1.0, 1.0)


def make_pair(
    plane: np.ndarray,
    config: PairConfig,
    key: tuple[int, ...],
    guide: np.ndarray | None = None,
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """One ``(lr, hr, factor)`` pair from a 2-D HR ``plane`` whose rows are to be made thick.

    The plane is centre-padded to ``config.patch_size``, warped, scaled and noised as the
    config says, degraded along its rows with a factor drawn in the range, then the same random
    crop of input and target is taken and flipped. Every random choice comes from generators
    seeded by ``key``, so a pair is a pure function of (plane, config, key). Tensors are
    ``[1, patch, patch]``.

    ``guide``: the same plane of the same head in another contrast, at the fine resolution
    (guided restoration, :mod:`transmrsr.registration`). It is padded, warped, cropped and
    flipped with the plane but never degraded, noised or scaled: it is a real image with its
    own noise and intensities. The input is then ``[2, patch, patch]``: the thick plane, then
    the guide.
    """
    rng = np.random.default_rng(key)
    size = config.patch_size
    extra = [max(0, size - n) for n in plane.shape]
    padding = [(e // 2, e - e // 2) for e in extra]
    full = np.pad(plane, padding)
    guide_full = None
    if guide is not None:
        if guide.shape != plane.shape:
            raise TransMRSRError(
                f"guide plane {guide.shape} and plane {plane.shape} must have the same shape"
            )
        guide_full = np.pad(np.asarray(guide, np.float32), padding)
    lo, hi = config.factor_range
    factor = float(lo if hi <= lo else rng.uniform(lo, hi))
    if config.warps:
        # Its own stream, as the gain's: the rest of the pair is that of the unwarped one.
        warp_rng = np.random.default_rng((*key, 3))
        angle = warp_rng.uniform(-1.0, 1.0) * config.rotate_degrees
        zoom = float(np.exp(warp_rng.uniform(*np.log(config.zoom_range))))
        full = warp_plane(full, angle, zoom)
        if guide_full is not None:
            guide_full = warp_plane(guide_full, angle, zoom)
    if config.gain_range != (1.0, 1.0):
        # Its own stream, as the noise's: the rest of the pair is that of the gainless one.
        gain_rng = np.random.default_rng((*key, 2))
        log_gain = gain_rng.uniform(*np.log(config.gain_range))
        full = full * np.float32(np.exp(log_gain))
    if config.noise_range[1] > 0:
        # Its own stream: crops and flips stay those of the noiseless pair.
        noise_rng = np.random.default_rng((*key, 1))
        sigma = float(noise_rng.uniform(*config.noise_range))
        full = add_rician_noise(full, sigma, noise_rng)
    fwhm = None
    if config.thickness_range != (1.0, 1.0):
        # Its own stream, as the noise's: the rest of the pair is that of the plain one.
        fwhm = factor * float(np.random.default_rng((*key, 4)).uniform(*config.thickness_range))
    profile = None
    if config.profiles != ("gaussian",):
        # Its own stream, as the thickness's.
        kind = config.profiles[int(np.random.default_rng((*key, 5)).integers(len(config.profiles)))]
        profile = slice_profile(kind, factor, fwhm)
    # Degrade the whole plane, then crop both: no crop border enters the slice profile.
    full_lr = simulate_interpolated_lr(
        full, 0, factor, method=config.interpolation, fwhm=fwhm, profile=profile
    )
    r0 = int(rng.integers(0, full.shape[0] - size + 1))
    c0 = int(rng.integers(0, full.shape[1] - size + 1))
    window = (slice(r0, r0 + size), slice(c0, c0 + size))
    # The input's channels: the thick plane, then the guide where there is one.
    channels = [full_lr[window]] + ([] if guide_full is None else [guide_full[window]])
    hr = full[window]
    if config.augment:
        if rng.random() < 0.5:
            hr, channels = hr[::-1], [c[::-1] for c in channels]
        if rng.random() < 0.5:
            hr, channels = hr[:, ::-1], [c[:, ::-1] for c in channels]
        if rng.random() < 0.5 and config.transpose:
            hr, channels = hr.T, [c.T for c in channels]
    lr = torch.from_numpy(np.stack([np.ascontiguousarray(c, np.float32) for c in channels]))
    return lr, torch.from_numpy(np.ascontiguousarray(hr, np.float32))[None], factor


def warp_plane(plane: np.ndarray, degrees: float, zoom: float) -> np.ndarray:
    """``plane`` turned by ``degrees`` and scaled by ``zoom`` about its centre, same shape.

    Cubic spline, zero outside; the spline's small overshoot is clipped to the plane's own
    range (and zero), so the warp makes no values the plane did not have.
    """
    theta = np.deg2rad(degrees)
    # affine_transform maps output coordinates to input ones: the inverse of the warp.
    inverse = np.array([[np.cos(theta), np.sin(theta)], [-np.sin(theta), np.cos(theta)]]) / zoom
    centre = (np.asarray(plane.shape, np.float64) - 1.0) / 2.0
    offset = centre - inverse @ centre
    warped = ndimage.affine_transform(
        np.asarray(plane, np.float64), inverse, offset=offset, order=3, mode="constant", cval=0.0
    )
    low = min(float(plane.min()), 0.0)
    return np.clip(warped, low, max(float(plane.max()), 0.0)).astype(np.float32)


def add_rician_noise(image: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Magnitude of the image plus complex Gaussian noise of standard deviation ``sigma``:
    the noise of a magnitude MR image (Rician in tissue, Rayleigh in the background)."""
    real = image + rng.normal(0.0, sigma, image.shape)
    imag = rng.normal(0.0, sigma, image.shape)
    return np.sqrt(real * real + imag * imag).astype(np.float32)
