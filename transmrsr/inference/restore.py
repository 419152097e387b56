"""Restore a thick-slice volume: the main job of the tool (SPEC section 8).

``thick volume -> (with a resolution: in-plane axes to that spacing) -> interpolate along the
thick axis onto the isotropic grid -> normalise -> network on every plane that contains the
thick axis (one orientation, or both fused) -> intensities back to the input's scale ->
(optionally) onto a reference grid``.

The output grid is the one :func:`transmrsr.interpolation.upsample` defines (field of view
preserved, spacing divided by the factor), so ``restore`` and the ``upsample`` baselines are
voxel-for-voxel comparable. Models are shipped files (``t1``), model files written by ``train``
(``model_best.safetensors``) or training checkpoints (``best.pt``/``last.pt``).
"""

from __future__ import annotations

import functools
import logging
import math
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from transmrsr._version import __version__
from transmrsr.degradation import MAX_THICKNESS, MIN_THICKNESS
from transmrsr.devices import default_batch_size, inference_uses_bf16
from transmrsr.errors import TransMRSRError
from transmrsr.geometry import detect_thick_axis
from transmrsr.inference.adapt import AdaptConfig, adapt_network
from transmrsr.inference.consistency import (
    CONSISTENCY_METHODS,
    DEFAULT_CONSISTENCY,
    enforce_consistency,
    enforce_consistency_smoothly,
)
from transmrsr.inference.guided import GuideFitConfig, add_guide_branch, fit_guide_branch
from transmrsr.inference.planes import restore_along_planes
from transmrsr.intensity import IntensityScaler, in_plane_noise
from transmrsr.interpolation import resample_in_plane, resample_to_grid, upsample
from transmrsr.io import Volume, voxel_sizes
from transmrsr.models.files import load_checkpoint, load_model_file
from transmrsr.models.registry import build_model, config_from_dict
from transmrsr.registration import (
    GuideReport,
    ResampledGuide,
    check_guide,
    guide_on_target,
    resample_guide,
)
from transmrsr.slicing import planes_axes
from transmrsr.stripes import (
    MIN_PERIOD,
    WARN_RATIO,
    head_mask,
    slab_pattern,
    stripe_index,
    stripe_ratio,
)

log = logging.getLogger(__name__)

#: Models shipped inside the package (``transmrsr/weights``), by the name ``--model`` takes.
SHIPPED_MODELS: dict[str, str] = {
    "t1": "t1_compact.safetensors",
    "t1_x4": "t1_x4_compact.safetensors",
    "t1_x6": "t1_x6_compact.safetensors",
    "t1_x8": "t1_x8_compact.safetensors",
}
#: Shipped models fine-tuned on a narrow factor range from a general one. Restoring with the
#: general name uses the specialist whose training range holds the scan's factor (a model
#: that only ever sees one blur width gains more at it than one that spreads over 2-8).
SPECIALISTS: dict[str, tuple[str, ...]] = {"t1": ("t1_x4", "t1_x6", "t1_x8")}
DEFAULT_MODEL = "t1"
#: What ``--planes auto`` means; chosen by ``benchmarks/bench_restore.py`` (gain per second).
AUTO_PLANES = "one"
#: What ``--planes auto`` means for a restore that uses a guide: its branch's errors differ
#: between the two orientations and average out, +0.18 to +0.36 dB on the regression suite's
#: guided cases at x4 (docs/experiments.md, 2026-12-07), for a small part of a guided
#: restore's time (the branch's fit takes most of it).
GUIDED_AUTO_PLANES = "both"
PLANE_CHOICES = ("auto", "one", "both")


@dataclass
class LoadedModel:
    """A network ready for inference, with where it came from and what it was trained on."""

    network: nn.Module
    source: str
    info: dict[str, Any]
    specialists: tuple[LoadedModel, ...] = ()

    def for_factor(self, factor: float) -> LoadedModel:
        """The specialist trained on a factor range that holds ``factor``, else this model.

        Where two ranges meet (x6's 4.5-7 and x8's 7-8 both hold 7), the one whose centre is
        nearer wins: it saw more training pairs round that blur width.
        """
        holding = []
        for specialist in self.specialists:
            lo, hi = specialist.info["factor_range"]
            if lo - 1e-6 <= factor <= hi + 1e-6:
                holding.append((abs((lo + hi) / 2 - factor), specialist))
        return min(holding, key=lambda pair: pair[0])[1] if holding else self


def shipped_model_path(name: str) -> Path:
    """Path of a model shipped with the package."""
    if name not in SHIPPED_MODELS:
        raise TransMRSRError(f"unknown model {name!r}; shipped models: {', '.join(SHIPPED_MODELS)}")
    path = Path(str(resources.files("transmrsr.weights") / SHIPPED_MODELS[name]))
    if not path.is_file():
        raise TransMRSRError(
            f"the shipped model {name!r} is missing from this installation ({path}); "
            "reinstall transmrsr or pass --model FILE"
        )
    return path


def load_model(
    model: str | os.PathLike[str] = DEFAULT_MODEL, *, specialists: bool = True
) -> LoadedModel:
    """A shipped model by name, a ``.safetensors`` model file, or a ``.pt`` training checkpoint.

    A shipped general model comes with its :data:`SPECIALISTS` (unless ``specialists`` is
    false), which :func:`restore_volume` picks by the scan's factor.
    """
    key = str(model)
    shipped = key in SHIPPED_MODELS
    path = shipped_model_path(key) if shipped else Path(key)
    if not path.exists():
        raise TransMRSRError(
            f"{path}: no such model file (shipped models: {', '.join(SHIPPED_MODELS)})"
        )
    if path.suffix == ".pt":
        state = load_checkpoint(path)
        if state.get("stage") != "sr":
            raise TransMRSRError(f"{path}: a stage-1 checkpoint holds no restoration model")
        network_config = {"arch": "transmrsr", "config": state["config"]["model"]}
        pairs = state["config"].get("pairs", {})
        weights = state["model"]
        info = {"steps": state["step"], "factor_range": pairs.get("factor_range")}
    else:
        weights, network_config, info = load_model_file(path)
    try:
        config = config_from_dict(network_config)
        network = build_model(network_config["arch"], config)
        network.load_state_dict(weights)
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise TransMRSRError(f"{path}: the weights do not fit their config ({exc})") from None
    network.eval()
    narrow = (
        tuple(load_model(name, specialists=False) for name in SPECIALISTS.get(key, ()))
        if specialists
        else ()
    )
    return LoadedModel(network, str(path), dict(info), narrow)


def slice_axes_for(
    planes: str,
    thick_axis: int,
    shape: tuple[int, ...],
    spacing: tuple[float, ...] | None = None,
    guided: bool = False,
) -> list[int]:
    """Plane stacks to run: ``both`` orientations, or ``one``; ``auto`` is
    :data:`GUIDED_AUTO_PLANES` for a ``guided`` restore, else :data:`AUTO_PLANES`.

    ``one`` is the orientation whose planes are nearest to square voxels on the output grid
    (the in-plane axis spacing closest to the restored thick axis's), because the network was
    trained on isotropic planes: on a native IXI T1 (0.94 mm in-plane, 1.2 mm between sagittal
    slices) thick along SI, that is the sagittal planes. Ties (isotropic grids, or no
    ``spacing``) go to the orientation with the most planes.
    """
    if planes not in PLANE_CHOICES:
        raise TransMRSRError(f"--planes must be one of {', '.join(PLANE_CHOICES)}, got {planes!r}")
    if planes == "auto":
        planes = GUIDED_AUTO_PLANES if guided else AUTO_PLANES
    axes = list(planes_axes(thick_axis))
    if planes == "both":
        return axes

    def anisotropy(slice_axis: int) -> float:
        if spacing is None:
            return 0.0
        in_plane = 3 - thick_axis - slice_axis
        return round(abs(math.log(spacing[in_plane] / spacing[thick_axis])), 3)

    return [min(axes, key=lambda a: (anisotropy(a), -shape[a], a))]


#: How far (in factor units) past its training range a model is used without a warning; the
#: adaptation to the scan trains on the factor +/- 0.5 as well.
FACTOR_MARGIN = 0.5


def untrained_factor(model: LoadedModel, factor: float) -> tuple[float, float] | None:
    """The model's training range of factors when ``factor`` lies more than
    :data:`FACTOR_MARGIN` outside it, else ``None`` (also for models without a range)."""
    trained = model.info.get("factor_range")
    if not trained:
        return None
    lo, hi = (float(v) for v in trained)
    return None if lo - FACTOR_MARGIN <= factor <= hi + FACTOR_MARGIN else (lo, hi)


def warn_if_untrained_factor(model: LoadedModel, factor: float) -> bool:
    """Log a warning (and return true) when ``factor`` is outside the model's training range.

    Such a model still runs, but it has never seen slices that far apart: a clinical scan with
    0.45 mm in-plane voxels and 5 mm slices is x11 at its own resolution, where ``--resolution
    1`` makes it x5. Models without a recorded range are not checked.
    """
    trained = untrained_factor(model, factor)
    if trained is None:
        return False
    lo, hi = trained
    log.warning(
        "factor x%.3g is outside the factors %s was trained on (x%g-x%g): expect a poorer "
        "restoration%s",
        factor,
        Path(model.source).name,
        lo,
        hi,
        "; --resolution MM restores onto a coarser isotropic grid" if factor > hi else "",
    )
    return True


@dataclass
class Restoration:
    """The restored volume and what was done."""

    volume: Volume
    thick_axis: int
    factor: float
    slice_axes: list[int]
    model_source: str
    precision: str = "fp32"
    #: slice thickness over slice spacing assumed for the input (1: no gap, no overlap)
    thickness: float = 1.0
    #: slab-stripe index (:mod:`transmrsr.stripes`) of the output and of cubic interpolation
    #: of the same input (``None`` when the volume holds too few slabs to measure it)
    stripe_index: float | None = None
    cubic_stripe_index: float | None = None
    #: steps the network was adapted to the scan for (0: restored as trained)
    adaptation_steps: int = 0
    #: the guide's registration and checks, for a guided restore
    guide: GuideReport | None = None
    #: PSNR gain (dB) of the guide branch fitted to the scan on its held-out in-plane pairs
    guide_gain_db: float | None = None
    #: whether the guide shaped the output (False: the fit found no gain, restored unguided)
    guide_used: bool = True

    def describe(self) -> str:
        """One line for the output header: tool, version, model, factor and thick axis."""
        line = (
            f"transmrsr {__version__} restore {Path(self.model_source).stem} "
            f"x{self.factor:.3g} axis {self.thick_axis}"
        )
        if self.thickness != 1.0:
            line = f"{line} thickness {self.thickness:.3g} spacing"
        return line if self.guide is None or not self.guide_used else f"{line} guided"


def restore_volume(
    volume: Volume,
    model: LoadedModel,
    *,
    axis: str | int | None = None,
    factor: float | None = None,
    planes: str = "auto",
    like: Volume | None = None,
    batch_size: int | None = None,
    device: torch.device | str = "cpu",
    progress: bool = False,
    consistency: bool = True,
    scaler: IntensityScaler | None = None,
    adapt: AdaptConfig | None = None,
    precision: str = "auto",
    resolution: float | None = None,
    slice_thickness: float | None = None,
    consistency_method: str = DEFAULT_CONSISTENCY,
    workers: int | None = None,
    destripe: bool = True,
    guide: Volume | None = None,
    guide_report: GuideReport | None = None,
    guide_fit: GuideFitConfig | None = GuideFitConfig(),  # noqa: B008 (frozen)
) -> Restoration:
    """Restore a thick-slice volume onto its isotropic grid (or onto ``like``'s grid).

    The thick axis and factor come from the header unless given (non-integer factors work).
    ``resolution`` (mm, instead of ``factor``) restores onto an isotropic grid of that spacing:
    the in-plane axes are resampled to it first (:func:`resample_in_plane`, anti-aliased when
    coarser) and the thick axis is restored by its spacing over ``resolution``. A factor
    outside the range the model was trained on is restored with a warning.
    Intensities are normalised for the network with the input's robust range and mapped back.
    With ``consistency`` the result is then brought to reproduce the input's thick slices
    (``consistency_method``: ``smooth``, corrections interpolated along the thick axis,
    :func:`~transmrsr.inference.consistency.enforce_consistency_smoothly`; or ``projection``,
    the orthogonal projection, :func:`~transmrsr.inference.consistency.enforce_consistency`),
    and finally clipped to the input's value range. A model with specialists runs the one trained
    for this factor (:meth:`LoadedModel.for_factor`). ``scaler`` replaces the input's own
    normalisation (:meth:`IntensityScaler.fit` of the input), e.g. one fitted once for a cohort.
    ``adapt`` first fine-tunes a copy of the network on the scan's own in-plane images
    (:func:`~transmrsr.inference.adapt.adapt_network`); the loaded model is left unchanged.
    ``precision`` (``auto``, ``fp32`` or ``bf16``) sets bf16 autocast for the network and the
    adaptation; ``auto`` uses it where the hardware multiplies bf16 natively
    (:func:`~transmrsr.devices.inference_uses_bf16`). ``slice_thickness`` (mm) is the
    acquired thickness of the input's slices when it differs from their spacing (a slice gap,
    or overlapping slices): the adaptation and the data consistency then model slices that
    thick (:func:`thickness_ratio`). ``batch_size``: planes per forward pass (default
    :func:`~transmrsr.devices.default_batch_size`: one on a CPU, eight on a GPU).
    ``workers``: threads that share the adaptation's pairs and the planes (default
    :func:`~transmrsr.devices.default_workers`: two on a CPU). ``destripe`` removes from the
    network's output, before the data consistency, the detail that repeats once per slab
    (:func:`~transmrsr.stripes.slab_pattern`): the "venetian blind" stripes a network adapted
    to the scan can leave, which no real anatomy has (docs/restore.md).

    ``guide``: another contrast of the same head, finer than the input (the session's
    isotropic T1, say), for a model that takes one (``guide_channels``). It is registered
    rigidly onto the input and checked (:func:`~transmrsr.registration.check_guide`: a
    :class:`~transmrsr.errors.GuideError` for a failed registration, a partial guide or
    another head), normalised with its own robust range, then resampled onto the scan's grid
    (slab-averaged, for the adaptation's pairs) and onto the output grid (the second channel
    of every plane the network restores). Outside its field of view it reads zero.
    ``guide_report``: the guide's registration and checks when they were made already
    (:func:`~transmrsr.registration.check_guide` of ``guide`` onto ``volume``).
    """
    if consistency_method not in CONSISTENCY_METHODS:
        raise TransMRSRError(
            f"consistency method must be one of {', '.join(CONSISTENCY_METHODS)}, "
            f"got {consistency_method!r}"
        )
    thick, k = detect_thick_axis(volume.affine, axis=axis, factor=factor, resolution=resolution)
    spacing = float(voxel_sizes(volume.affine)[thick])
    ratio = thickness_ratio(slice_thickness, spacing)
    if ratio != 1.0:
        log.info(
            "slices %.3g mm thick every %.3g mm: modelled as %.3g spacings thick",
            slice_thickness,
            spacing,
            ratio,
        )
    low, high = float(volume.data.min()), float(volume.data.max())
    if resolution is not None:
        volume = volume.with_data(*resample_in_plane(volume.data, volume.affine, thick, resolution))
    model = model.for_factor(k)
    warn_if_untrained_factor(model, k)
    takes_guide = guide_channels(model.network)
    if guide is not None and not takes_guide and guide_fit is None:
        raise TransMRSRError(
            f"model {Path(model.source).stem} takes no guide and the guide is not fitted to "
            "the scan: restore with a guided model, with the guide fit, or without --guide"
        )
    if guide is None and takes_guide:
        raise TransMRSRError(
            f"model {Path(model.source).stem} is a guided model: give the guide (--guide)"
        )
    report = None
    if guide is not None:
        report = guide_report if guide_report is not None else check_guide(guide, volume)
        guide_scaler = IntensityScaler.fit(guide.data)
    if scaler is None:
        scaler = IntensityScaler.fit(volume.data)
    device = torch.device(device)
    bf16 = inference_uses_bf16(precision, device)
    network = model.network.to(device)
    if (
        adapt is not None
        and slice_thickness is None
        and adapt.unknown != "mix"
        and adapt.min_noise > 0
    ):
        noise, threshold = in_plane_noise(volume.data, thick), adapt.min_noise
        if noise < threshold:
            adapt = adapt.for_noise_free(k)
            log.info(
                "in-plane noise %.2f%% of the tissue level, below %.2f%% (a template, an average "
                "or a denoised image), slice thickness not known: %s (--slice-thickness, "
                "--unknown-slices or --adapt-min-noise 0 says otherwise)",
                100 * noise,
                100 * threshold,
                "not adapted to the scan" if adapt is None else "adapted with the mix of profiles",
            )
    if adapt is not None and slice_thickness is None:
        adapt = adapt.for_factor(k)
        log.info("slice thickness not known: the adaptation assumes %s slices", adapt.unknown)

    # The scan and the guide on the scan's grid, normalised once for the adaptation and the
    # guide fit (both small: the thick grid).
    @functools.cache
    def scan_values() -> np.ndarray:
        return scaler(volume.data)

    @functools.cache
    def guide_on_scan() -> np.ndarray:
        return _guide_on(guide, report, guide_scaler, volume)

    if adapt is not None:
        # Before the volume is upsampled: the training step's memory and the isotropic
        # volume's arrays are then never held at the same time.
        network = adapt_network(
            network,
            scan_values(),
            thick,
            k,
            adapt,
            device=device,
            bf16=bf16,
            progress=progress,
            thickness=None if slice_thickness is None else ratio,
            workers=workers,
            guide=None if report is None or not takes_guide else guide_on_scan(),
        )
    fit = None
    if report is not None and guide_fit is not None:
        trunk = network
        if not takes_guide:
            network = add_guide_branch(network, guide_fit.seed)
        if getattr(network, "guide_branch", None) is not None:
            fit = fit_guide_branch(
                network,
                scan_values(),
                guide_on_scan(),
                thick,
                k,
                guide_fit,
                adapt or AdaptConfig(),
                thickness=None if slice_thickness is None else ratio,
                device=device,
                bf16=bf16,
                progress=progress,
            )
            # A branch the scan's pairs did not want leaves the unguided network as it was.
            network = fit.network if fit.kept or takes_guide else trunk
    data, affine = upsample(volume.data, volume.affine, thick, k, "cubic")
    head = head_mask(data)
    cubic_stripes = _stripes(data, thick, k, head)
    guided = report is not None and guide_channels(network) > 0
    axes = slice_axes_for(planes, thick, data.shape, tuple(voxel_sizes(affine)), guided)
    normalised = scaler(data)
    del data  # arrays of the output's size are dropped as soon as they are used up
    guide_planes = None
    if guided:
        on_output = resample_guide(guide, report.registration, normalised.shape, affine)
        guide_planes = _guide_values(on_output, guide_scaler)
    restored = restore_along_planes(
        network,
        normalised,
        thick,
        slice_axes=axes,
        batch_size=default_batch_size(device) if batch_size is None else batch_size,
        device=device,
        bf16=bf16,
        progress=progress,
        workers=workers,
        guide=guide_planes,
    )
    del normalised, guide_planes
    out = scaler.inverse(restored)
    del restored
    if destripe and k >= MIN_PERIOD and head.any():
        pattern = slab_pattern(out, thick, k, mask=head)
        log.info(
            "removed the detail that repeats once per slab: %.2f%% of the head's mean (RMS)",
            100 * float(np.sqrt(np.mean(pattern[head] ** 2)) / max(out[head].mean(), 1e-12)),
        )
        out -= pattern
        del pattern
    if consistency:
        enforce = (
            enforce_consistency_smoothly if consistency_method == "smooth" else enforce_consistency
        )
        out = enforce(out, volume.data, thick, k, fwhm=k * ratio)
    np.clip(out, low, high, out=out)
    stripes = _stripes(out, thick, k, head)
    _report_stripes(stripes, cubic_stripes)
    if like is not None:
        out = resample_to_grid(out, affine, like.shape, like.affine)
        affine = like.affine
    return Restoration(
        volume.with_data(out.astype(np.float32, copy=False), affine),
        thick,
        k,
        axes,
        model.source,
        "bf16" if bf16 else "fp32",
        ratio,
        stripes,
        cubic_stripes,
        0 if adapt is None else adapt.steps,
        report,
        None if fit is None else fit.gain_db,
        fit is None or fit.kept,
    )


def guide_channels(network: nn.Module) -> int:
    """How many guide planes ``network`` takes after the plane it restores (0: unguided)."""
    return int(getattr(getattr(network, "config", None), "guide_channels", 0))


def _guide_values(guide: ResampledGuide, scaler: IntensityScaler) -> np.ndarray:
    """A resampled guide in the network's range, zero outside its field of view."""
    values = scaler(guide.volume.data).astype(np.float32, copy=False)
    values[~guide.covered] = 0.0
    return values


def _guide_on(
    guide: Volume, report: GuideReport, scaler: IntensityScaler, scan: Volume
) -> np.ndarray:
    """The guide on the scan's own grid, each slice averaged over the slab the scan's slice
    covers: the adaptation's pairs pair the scan's in-plane images with it."""
    return _guide_values(guide_on_target(guide, report.registration, scan), scaler)


def _stripes(data: np.ndarray, thick: int, k: float, mask: np.ndarray) -> float | None:
    """The slab-stripe index, or ``None`` where the volume holds too few slabs for it."""
    try:
        return stripe_index(data, thick, k, mask=mask)
    except TransMRSRError as exc:
        log.debug("slab-stripe index not measured: %s", exc)
        return None


def _report_stripes(ours: float | None, cubic: float | None) -> None:
    """Log the output's slab-stripe index against cubic's; warn when it is well above."""
    if ours is None or cubic is None:
        return
    ratio = stripe_ratio(ours, cubic)
    log.info("slab-stripe index %.2f (cubic interpolation %.2f: %.2f times)", ours, cubic, ratio)
    if ratio > WARN_RATIO:
        log.warning(
            "the output's detail repeats with the slab period %.2f times as much as cubic "
            "interpolation's (slab-stripe index %.2f against %.2f): look at sagittal and "
            "coronal views for horizontal stripes one slab apart",
            ratio,
            ours,
            cubic,
        )


def thickness_ratio(slice_thickness: float | None, spacing: float) -> float:
    """Slice thickness over slice ``spacing`` (both mm); 1 when the thickness is not given.

    Refused outside what the acquisition model accepts
    (:data:`~transmrsr.degradation.MIN_THICKNESS` to
    :data:`~transmrsr.degradation.MAX_THICKNESS` spacings), which also catches a thickness
    given in the wrong unit or for the wrong axis.
    """
    if slice_thickness is None:
        return 1.0
    value = float(slice_thickness)
    if not math.isfinite(value) or value <= 0:
        raise TransMRSRError(f"slice thickness must be a positive number of mm, got {value:g}")
    ratio = value / spacing
    if not MIN_THICKNESS <= ratio <= MAX_THICKNESS:
        raise TransMRSRError(
            f"slice thickness {value:g} mm is {ratio:.3g} times the slice spacing "
            f"({spacing:.4g} mm); expected {MIN_THICKNESS:g} to {MAX_THICKNESS:g} times"
        )
    return ratio
