"""The Python interface: what the ``transmrsr`` commands do, on images in memory.

A notebook or a pipeline calls these functions instead of writing files for the command line
and reading its outputs back. Each takes a nibabel image, a path to a NIfTI or MGZ file or to
a folder holding one DICOM series, or a numpy array with its ``affine=``, and returns a
nibabel image (:func:`evaluate`: a dict), so results go straight on into nibabel or nilearn
code::

    import transmrsr

    restored = transmrsr.restore("thick_t1.nii.gz")  # factor and axis from the header
    restored.to_filename("restored.nii.gz")

The commands call the same code: ``transmrsr restore`` runs :func:`run_restore`, which
:func:`restore` wraps, and likewise for ``degrade``, ``upsample`` and ``evaluate``. The
``run_*`` functions return what the commands log as well as the volume, so the command line and
the Python interface cannot drift apart: for the same input they give the same voxels, affine
and header description. Anything the user can fix (a 2-D array, an array without an affine,
NaN voxels, an absurd factor) raises :class:`~transmrsr.errors.TransMRSRError` with one clear
line, which the command line prints as ``transmrsr: error: ...`` with exit status 2.
"""

from __future__ import annotations

import logging
import math
import os
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

import nibabel as nib
import numpy as np
import torch

from transmrsr import degradation, interpolation
from transmrsr._version import __version__
from transmrsr.devices import check_precision, resolve_device
from transmrsr.errors import GuideError, TransMRSRError
from transmrsr.evaluation.compare import Comparison, compare_volumes
from transmrsr.geometry import check_factor, detect_thick_axis, resolve_axis
from transmrsr.inference import restore as restoring
from transmrsr.inference.adapt import DEFAULT_STEPS, AdaptConfig
from transmrsr.inference.consistency import CONSISTENCY_METHODS, DEFAULT_CONSISTENCY
from transmrsr.inference.guided import GuideFitConfig
from transmrsr.inference.restore import DEFAULT_MODEL, LoadedModel, Restoration
from transmrsr.io import (
    Volume,
    load_volume,
    sidecar_path,
    sidecar_slice_thickness,
    to_nifti,
    volume_from_array,
)
from transmrsr.registration import check_guide, save_transform

log = logging.getLogger(__name__)

#: What every function takes as an image. A :class:`~transmrsr.io.Volume` is accepted too
#: (the commands pass the volumes they read).
ImageLike: TypeAlias = nib.spatialimages.SpatialImage | str | os.PathLike | np.ndarray | Volume
#: A model: a shipped name (``t1``, ``t1_x4``...), a model file or checkpoint, or one loaded
#: with :func:`load_model` (load once, restore many).
ModelLike: TypeAlias = str | os.PathLike | LoadedModel


def as_volume(
    image: ImageLike,
    *,
    affine: np.ndarray | None = None,
    name: str = "image",
    require_signal: bool = True,
) -> Volume:
    """The checked 3-D :class:`~transmrsr.io.Volume` of anything the interface takes.

    Files go through :func:`~transmrsr.io.load_volume` and in-memory images and arrays through
    the same checks (:func:`~transmrsr.io.volume_from_array`), so a bad image is refused with
    the message the command line gives for a bad file.

    Args:
        image: a nibabel image, a NIfTI/MGZ path, a DICOM series folder, a numpy array, or a
            Volume.
        affine: the 4x4 voxel-to-world matrix of a numpy array (required for arrays: restoring
            depends on the voxel sizes and axis directions); refused for anything else, which
            has its own.
        name: what messages call the image.
        require_signal: refuse an image whose voxels are all equal.

    Raises:
        TransMRSRError: for anything that is not one finite 3-D image on a valid grid.
    """
    if isinstance(image, np.ndarray):
        if affine is None:
            raise TransMRSRError(
                f"{name}: a numpy array needs affine= (its 4x4 voxel-to-world matrix): the "
                "voxel sizes and axis directions decide what is restored"
            )
        return volume_from_array(image, affine, source=name, require_signal=require_signal)
    if affine is not None:
        raise TransMRSRError(
            f"{name}: affine= is only for numpy arrays; a {type(image).__name__} has its own"
        )
    if isinstance(image, Volume):
        return image
    if isinstance(image, str | os.PathLike):
        return load_volume(image, require_signal=require_signal)
    if isinstance(image, nib.spatialimages.SpatialImage):
        try:
            raw = np.asanyarray(image.dataobj)
        except (OSError, EOFError, zlib.error, ValueError) as exc:
            raise TransMRSRError(f"{name}: cannot read the image's data ({exc})") from None
        if image.affine is None:
            raise TransMRSRError(f"{name}: the nibabel image has no affine")
        header = image.header if isinstance(image.header, nib.Nifti1Header) else None
        return volume_from_array(
            raw, image.affine, header=header, source=name, require_signal=require_signal
        )
    raise TransMRSRError(
        f"{name}: expected a nibabel image, a NIfTI/MGZ path or a numpy array with affine=, "
        f"got {type(image).__name__}"
    )


def _number(value: Any, what: str) -> float:
    """``value`` as a float, or a clear error (the command line's argument types do this)."""
    if isinstance(value, bool):
        raise TransMRSRError(f"{what} must be a number, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise TransMRSRError(f"{what} must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise TransMRSRError(f"{what} must be a finite number, got {value!r}")
    return number


def _optional_number(value: Any, what: str) -> float | None:
    return None if value is None else _number(value, what)


def _device(device: str | torch.device) -> torch.device:
    return device if isinstance(device, torch.device) else resolve_device(str(device))


def adapt_config(adapt: int | bool | AdaptConfig | None) -> AdaptConfig | None:
    """The adaptation ``adapt`` asks for; ``None`` for none.

    ``None`` and ``True`` mean what ``transmrsr restore`` does by default
    (:data:`~transmrsr.inference.adapt.DEFAULT_STEPS` steps), ``0`` and ``False`` no
    adaptation, a positive integer that many steps (``--adapt STEPS``), and an
    :class:`~transmrsr.inference.adapt.AdaptConfig` itself.
    """
    if adapt is None or adapt is True:
        return AdaptConfig(steps=DEFAULT_STEPS)
    if adapt is False:
        return None
    if isinstance(adapt, AdaptConfig):
        return adapt
    if isinstance(adapt, int | np.integer) and adapt >= 0:
        return AdaptConfig(steps=int(adapt)) if adapt else None
    raise TransMRSRError(
        f"adapt must be None (the default {DEFAULT_STEPS} steps), 0 (off), a number of steps "
        f"or an AdaptConfig, got {adapt!r}"
    )


def guide_fit_config(steps: int | GuideFitConfig | None) -> GuideFitConfig | None:
    """The guide branch's fit ``steps`` asks for; ``None`` for none.

    ``None`` means what ``transmrsr restore --guide`` does by default
    (:class:`~transmrsr.inference.guided.GuideFitConfig`), ``0`` no fit (the guide then
    serves only a model trained with one), a positive integer that many steps, and a
    :class:`~transmrsr.inference.guided.GuideFitConfig` itself.
    """
    if steps is None:
        return GuideFitConfig()
    if isinstance(steps, GuideFitConfig):
        return steps
    if isinstance(steps, int | np.integer) and not isinstance(steps, bool) and steps >= 0:
        return GuideFitConfig(steps=int(steps)) if steps else None
    raise TransMRSRError(
        f"guide_steps must be None (the default {GuideFitConfig.steps}), 0 (no fit), a "
        f"number of steps or a GuideFitConfig, got {steps!r}"
    )


def slice_thickness_for(
    volume: Volume, choice: float | str | None, thick_axis: int | None = None
) -> float | None:
    """The slice thickness (mm) to restore ``volume`` with; ``None``: as thick as the spacing.

    ``None`` or ``"auto"``: for a DICOM series, its SliceThickness where it differs from the
    spacing of its slice positions (``Volume.slice_thickness``), when the thick axis
    (``thick_axis``) is the axis across its slices; for a file, the ``SliceThickness`` of a
    BIDS/dcm2niix JSON sidecar beside it (``scan.json`` for ``scan.nii.gz``) when there is one,
    since NIfTI itself cannot say that slices have a gap; else the spacing. ``"spacing"``: the
    spacing, any sidecar or tag ignored. A number: that thickness in mm.
    """
    if choice == "spacing":
        return None
    if choice is not None and choice != "auto":
        if isinstance(choice, str):
            raise TransMRSRError(
                f"slice thickness must be auto, spacing or a length in mm, got {choice!r}"
            )
        return _number(choice, "slice thickness")
    if volume.slice_thickness is not None:
        if thick_axis not in (None, 2):
            log.info(
                "%s: SliceThickness is across the DICOM slices, not along the thick axis %d; "
                "not used",
                volume.path,
                thick_axis,
            )
            return None
        log.info(
            "%s: slice thickness %g mm from the DICOM tags (--slice-thickness spacing ignores it)",
            volume.path,
            volume.slice_thickness,
        )
        return volume.slice_thickness
    if volume.path is None or volume.path.is_dir():
        return None
    thickness = sidecar_slice_thickness(volume.path)
    if thickness is not None:
        log.info(
            "%s: slice thickness %g mm from %s (--slice-thickness spacing ignores it)",
            volume.path,
            thickness,
            sidecar_path(volume.path).name,
        )
    return thickness


def load_model(
    name_or_path: str | os.PathLike[str] = DEFAULT_MODEL,
    *,
    factor: float | None = None,
    device: str | torch.device = "auto",
) -> LoadedModel:
    """A restoration model ready to use, to load once and pass to :func:`restore` many times.

    Loading the shipped ``t1`` model reads four networks (the general one and its x4, x6 and
    x8 specialists), which takes longer than restoring a small scan; a loaded model skips that.

    Args:
        name_or_path: a shipped model (``t1``, ``t1_x4``, ``t1_x6``, ``t1_x8``), a model file
            written by ``transmrsr train`` (``.safetensors``) or a training checkpoint
            (``.pt``).
        factor: the specialist for this factor only (what :func:`restore` would pick for a scan
            of that factor) instead of the model with all its specialists.
        device: ``auto`` (a GPU when there is one), ``cpu``, ``cuda`` or a torch device.

    Returns:
        The loaded model: ``.network`` is the torch module (in eval mode), ``.source`` the file
        it came from, ``.info`` what it was trained on (``factor_range``) and ``.specialists``
        the narrow models :func:`restore` picks from by the scan's factor.

    Raises:
        TransMRSRError: for an unknown name, a missing or foreign file, or a bad factor.
    """
    target = _device(device)
    loaded = restoring.load_model(name_or_path)
    if factor is not None:
        loaded = loaded.for_factor(check_factor(_number(factor, "factor")))
    for model in (loaded, *loaded.specialists):
        model.network.to(target)
    return loaded


def run_restore(
    image: ImageLike,
    *,
    model: ModelLike = DEFAULT_MODEL,
    factor: float | None = None,
    axis: str | int | None = None,
    slice_thickness: float | str | None = None,
    resolution: float | None = None,
    adapt: int | bool | AdaptConfig | None = None,
    consistency: bool | str = True,
    precision: str = "auto",
    device: str | torch.device = "auto",
    affine: np.ndarray | None = None,
    progress: bool = False,
    planes: str = "auto",
    like: ImageLike | None = None,
    batch_size: int | None = None,
    destripe: bool = True,
    guide: ImageLike | None = None,
    guide_fallback: bool = False,
    save_guide_transform: str | os.PathLike[str] | None = None,
    guide_steps: int | GuideFitConfig | None = None,
    guide_check: bool = True,
) -> Restoration:
    """:func:`restore`, returning the :class:`~transmrsr.inference.restore.Restoration` (the
    volume, and the thick axis, factor, planes, model and precision used), which is what
    ``transmrsr restore`` runs and logs. Arguments as :func:`restore`'s."""
    # Options first, then the inputs, then the model: mistakes show before anything slow.
    if planes not in restoring.PLANE_CHOICES:
        raise TransMRSRError(
            f"planes must be one of {', '.join(restoring.PLANE_CHOICES)}, got {planes!r}"
        )
    if batch_size is not None and (
        isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1
    ):
        raise TransMRSRError(f"batch size must be a whole number of at least 1, got {batch_size!r}")
    check_precision(precision)
    if not isinstance(destripe, bool):
        raise TransMRSRError(f"destripe must be True or False, got {destripe!r}")
    if consistency not in (True, False, *CONSISTENCY_METHODS):
        raise TransMRSRError(
            f"consistency must be True, False or one of {', '.join(CONSISTENCY_METHODS)}, "
            f"got {consistency!r}"
        )
    config = adapt_config(adapt)
    fit = guide_fit_config(guide_steps)
    if guide_check not in (True, False):
        raise TransMRSRError(f"guide_check must be True or False, got {guide_check!r}")
    target = _device(device)
    volume = as_volume(image, affine=affine)
    reference = None if like is None else as_volume(like, name="like", require_signal=False)
    thick_axis = None
    if volume.slice_thickness is not None:
        thick_axis, _ = detect_thick_axis(
            volume.affine,
            axis=axis,
            factor=_optional_number(factor, "factor"),
            resolution=_optional_number(resolution, "resolution"),
        )
    thickness = slice_thickness_for(volume, slice_thickness, thick_axis)
    guide_volume, report = None, None
    if guide is not None:
        guide_volume = as_volume(guide, name="guide")
        try:
            report = check_guide(guide_volume, volume, same_head=guide_check)
        except GuideError as exc:
            if not guide_fallback:
                raise
            log.warning("guide refused (%s): restoring without it", exc)
            guide_volume = None
    if report is not None and save_guide_transform is not None:
        log.info(
            "guide transform written to %s",
            save_transform(report.registration, save_guide_transform),
        )
    if (
        guide is not None
        and guide_volume is None
        and isinstance(model, LoadedModel)
        and restoring.guide_channels(model.network)
    ):
        log.warning("the guided model needs its guide: restoring with %s", DEFAULT_MODEL)
        model = DEFAULT_MODEL
    loaded = model if isinstance(model, LoadedModel) else restoring.load_model(model)
    return restoring.restore_volume(
        volume,
        loaded,
        axis=axis,
        factor=_optional_number(factor, "factor"),
        resolution=_optional_number(resolution, "resolution"),
        planes=planes,
        like=reference,
        batch_size=batch_size,
        device=target,
        progress=progress,
        consistency=consistency is not False,
        adapt=config,
        precision=precision,
        slice_thickness=thickness,
        consistency_method=consistency if isinstance(consistency, str) else DEFAULT_CONSISTENCY,
        destripe=destripe,
        guide=guide_volume,
        guide_report=report,
        guide_fit=fit,
    )


def restore(
    image: ImageLike,
    *,
    model: ModelLike = DEFAULT_MODEL,
    factor: float | None = None,
    axis: str | int | None = None,
    slice_thickness: float | str | None = None,
    resolution: float | None = None,
    adapt: int | bool | AdaptConfig | None = None,
    consistency: bool | str = True,
    precision: str = "auto",
    device: str | torch.device = "auto",
    affine: np.ndarray | None = None,
    progress: bool = False,
    planes: str = "auto",
    like: ImageLike | None = None,
    batch_size: int | None = None,
    destripe: bool = True,
    guide: ImageLike | None = None,
    guide_fallback: bool = False,
    save_guide_transform: str | os.PathLike[str] | None = None,
    guide_steps: int | GuideFitConfig | None = None,
    guide_check: bool = True,
) -> nib.Nifti1Image:
    """Restore a thick-slice scan to an isotropic volume: ``transmrsr restore`` in Python.

    The thick axis and the factor come from the header (the axis with the largest spacing, and
    that spacing over the finest in-plane one) unless given. The shipped ``t1`` model hands the
    scan to its specialist for that factor, adapts a copy of it to the scan's own in-plane
    images first (20 steps unless ``adapt`` says otherwise), and the result is made consistent
    with the input's thick slices and clipped to the input's intensity range.

    Args:
        image: the thick-slice scan: a nibabel image, a NIfTI/MGZ path, a folder holding one
            DICOM series, or a numpy array with ``affine``.
        model: a shipped model name, a model file or checkpoint, or a model from
            :func:`load_model` (load once when restoring many scans).
        factor: the upsampling factor (default: thick spacing / finest in-plane spacing).
            Non-integer factors work.
        axis: the thick axis: an array axis 0, 1, 2 or an anatomical name ``LR``, ``AP``,
            ``SI`` (default: the axis with the largest spacing).
        slice_thickness: the acquired slice thickness in mm where it differs from the slice
            spacing (a gap, or overlapping slices); ``None``/``"auto"`` reads it from the tags of
            a DICOM series, or from a JSON sidecar beside a file input when there is one;
            ``"spacing"`` ignores both.
        resolution: an isotropic output spacing in mm instead of ``factor`` (the in-plane axes
            are resampled to it).
        adapt: steps of self-supervised adaptation to the scan: ``None`` the default
            (:data:`~transmrsr.inference.adapt.DEFAULT_STEPS`), ``0`` off, or an
            :class:`~transmrsr.inference.adapt.AdaptConfig`.
        consistency: make the result's simulated thick slices equal the input's: ``True``
            (default, with :data:`~transmrsr.inference.consistency.DEFAULT_CONSISTENCY`),
            ``"smooth"`` or ``"projection"`` (:mod:`transmrsr.inference.consistency`), or
            ``False``.
        precision: ``auto``, ``fp32`` or ``bf16`` (auto: bf16 where the hardware has bf16
            units).
        device: ``auto``, ``cpu``, ``cuda`` or a torch device.
        affine: the voxel-to-world matrix when ``image`` is a numpy array.
        progress: show progress bars.
        planes: ``auto``, ``one`` or ``both`` plane orientations through the thick axis.
        like: write onto this image's grid instead of the isotropic one.
        batch_size: planes per forward pass (memory grows with it; default one on a CPU,
            eight on a GPU: :func:`~transmrsr.devices.default_batch_size`).
        destripe: remove the detail that repeats once per slab from the network's output
            (:func:`~transmrsr.stripes.slab_pattern`; default on).
        guide: another contrast of the same head from the same session, finer than the scan
            (an isotropic T1, say; an image as ``image`` takes it): registered rigidly onto
            the scan, checked, and added to the restore by a guide branch fitted to the scan's
            own in-plane images (:mod:`transmrsr.inference.guided`; docs/restore.md, "Guided
            restoration"), or fed to a model trained with a guide.
        guide_fallback: when the guide is refused (a failed registration, a guide that covers
            less than the scan's head, or another head), restore without it with a warning
            instead of raising :class:`~transmrsr.errors.GuideError`.
        save_guide_transform: write the guide's rigid transform here (ITK ``.tfm``).
        guide_steps: steps of the guide branch's fit to the scan: ``None`` the default
            (:class:`~transmrsr.inference.guided.GuideFitConfig`), ``0`` no fit, or a
            :class:`~transmrsr.inference.guided.GuideFitConfig`.
        guide_check: refuse a guide that does not look like the scan's head once registered
            (:func:`~transmrsr.registration.check_guide`: its edge similarity to the scan
            and how sharply that peaks at the registered pose, calibrated on real and
            synthetic scans). ``False`` uses a guide of the same head that the check
            refuses; the registration's and the coverage's checks still apply.

    Returns:
        A float32 NIfTI image on the isotropic grid that ``upsample`` writes (field of view
        kept, thick spacing divided by the factor; or ``like``'s grid), whose header
        description says the tool, version, model, factor and axis.

    Raises:
        TransMRSRError: for a bad image, model or option.
    """
    result = run_restore(
        image,
        model=model,
        factor=factor,
        axis=axis,
        slice_thickness=slice_thickness,
        resolution=resolution,
        adapt=adapt,
        consistency=consistency,
        precision=precision,
        device=device,
        affine=affine,
        progress=progress,
        planes=planes,
        like=like,
        batch_size=batch_size,
        destripe=destripe,
        guide=guide,
        guide_fallback=guide_fallback,
        save_guide_transform=save_guide_transform,
        guide_steps=guide_steps,
        guide_check=guide_check,
    )
    return to_nifti(result.volume, description=result.describe())


@dataclass(frozen=True)
class Resampled:
    """A volume made from another along one axis (``degrade``, ``upsample``), with what the
    commands log about it.

    Attributes:
        source: the input volume.
        volume: the new volume.
        axis: the array axis that changed.
        factor: the spacing ratio along it.
        description: the header description of the output (tool, version, what was done).
    """

    source: Volume
    volume: Volume
    axis: int
    factor: float
    description: str

    def to_image(self) -> nib.Nifti1Image:
        """The new volume as the NIfTI image the command writes (float32)."""
        return to_nifti(self.volume, description=self.description)


def run_degrade(
    image: ImageLike,
    *,
    factor: float,
    axis: str | int = "SI",
    fwhm: float | None = None,
    profile: Sequence[float] | np.ndarray | None = None,
    affine: np.ndarray | None = None,
) -> Resampled:
    """:func:`degrade` with what ``transmrsr degrade`` logs. Arguments as :func:`degrade`'s."""
    k = check_factor(_number(factor, "factor"))
    volume = as_volume(image, affine=affine)
    index = resolve_axis(axis, volume.affine)
    weights = None if profile is None else np.asarray(profile, dtype=np.float64)
    data, new_affine = degradation.degrade(
        volume.data,
        volume.affine,
        index,
        k,
        fwhm=_optional_number(fwhm, "fwhm"),
        profile=weights,
    )
    description = f"transmrsr {__version__} degrade x{k:.3g} axis {index}"
    return Resampled(volume, volume.with_data(data, new_affine), index, k, description)


def degrade(
    image: ImageLike,
    *,
    factor: float,
    axis: str | int = "SI",
    fwhm: float | None = None,
    profile: Sequence[float] | np.ndarray | None = None,
    affine: np.ndarray | None = None,
) -> nib.Nifti1Image:
    """Simulate a thick-slice acquisition of a high-resolution image (``transmrsr degrade``).

    The SMORE model the networks are trained with: blur along ``axis`` with a Gaussian slice
    profile (FWHM ``factor`` voxels unless ``fwhm`` says otherwise) and keep one slice per
    slab of ``factor`` thin slices, at the slab centre. Useful to make a test scan whose
    ground truth is known.

    Args:
        image: the high-resolution image: a nibabel image, a NIfTI/MGZ path, or a numpy array
            with ``affine``.
        factor: thick spacing / thin spacing (above 1; may be non-integer).
        axis: the axis that becomes thick: 0, 1, 2 or ``LR``, ``AP``, ``SI``.
        fwhm: the slice profile's FWHM in input voxels (default: the factor).
        profile: a custom 1-D slice profile in input voxels, replacing the Gaussian.
        affine: the voxel-to-world matrix when ``image`` is a numpy array.

    Returns:
        A float32 NIfTI image with the true thick spacing, and an affine that keeps every
        thick slice at its world position.

    Raises:
        TransMRSRError: for a bad image, factor, axis or profile.
    """
    return run_degrade(
        image, factor=factor, axis=axis, fwhm=fwhm, profile=profile, affine=affine
    ).to_image()


def run_upsample(
    image: ImageLike,
    *,
    factor: float | None = None,
    axis: str | int | None = None,
    method: str = "cubic",
    resolution: float | None = None,
    like: ImageLike | None = None,
    affine: np.ndarray | None = None,
) -> Resampled:
    """:func:`upsample` with what ``transmrsr upsample`` logs. Arguments as :func:`upsample`'s."""
    if method not in interpolation.METHODS:
        raise TransMRSRError(
            f"unknown interpolation {method!r}; choose from {', '.join(interpolation.METHODS)}"
        )
    volume = as_volume(image, affine=affine)
    index, k = detect_thick_axis(
        volume.affine,
        axis=axis,
        factor=_optional_number(factor, "factor"),
        resolution=_optional_number(resolution, "resolution"),
    )
    data, new_affine = volume.data, volume.affine
    if resolution is not None:
        data, new_affine = interpolation.resample_in_plane(data, new_affine, index, resolution)
    data, new_affine = interpolation.upsample(data, new_affine, index, k, method)
    if like is not None:
        reference = as_volume(like, name="like", require_signal=False)
        data = interpolation.resample_to_grid(data, new_affine, reference.shape, reference.affine)
        new_affine = reference.affine
    description = f"transmrsr {__version__} upsample {method} x{k:.3g} axis {index}"
    return Resampled(volume, volume.with_data(data, new_affine), index, k, description)


def upsample(
    image: ImageLike,
    *,
    factor: float | None = None,
    axis: str | int | None = None,
    method: str = "cubic",
    resolution: float | None = None,
    like: ImageLike | None = None,
    affine: np.ndarray | None = None,
) -> nib.Nifti1Image:
    """Interpolate a thick-slice scan to its isotropic grid (``transmrsr upsample``).

    The baselines :func:`restore` is measured against, on exactly its output grid (field of
    view kept, thick spacing divided by the factor), so the two compare voxel for voxel.

    Args:
        image: the thick-slice scan: a nibabel image, a NIfTI/MGZ path, or a numpy array with
            ``affine``.
        factor: the upsampling factor (default: thick spacing / finest in-plane spacing).
        axis: the thick axis (default: the axis with the largest spacing).
        method: ``linear``, ``cubic`` (B-spline) or ``lanczos``.
        resolution: an isotropic output spacing in mm instead of ``factor``.
        like: write onto this image's grid instead.
        affine: the voxel-to-world matrix when ``image`` is a numpy array.

    Returns:
        A float32 NIfTI image on the upsampled grid.

    Raises:
        TransMRSRError: for a bad image, factor, axis or method.
    """
    return run_upsample(
        image,
        factor=factor,
        axis=axis,
        method=method,
        resolution=resolution,
        like=like,
        affine=affine,
    ).to_image()


def run_evaluate(
    restored: ImageLike,
    reference: ImageLike,
    *,
    mask: ImageLike | None = None,
    thick_axis: str | int | None = None,
    slice_axis: str | int | None = None,
    affine: np.ndarray | None = None,
    factor: float | None = None,
    thick_input: ImageLike | None = None,
) -> Comparison:
    """:func:`evaluate` as the :class:`~transmrsr.evaluation.compare.Comparison` that
    ``transmrsr evaluate`` prints. Arguments as :func:`evaluate`'s."""
    images = [restored, reference] + ([] if mask is None else [mask])
    if affine is not None and not any(isinstance(i, np.ndarray) for i in images):
        raise TransMRSRError("affine= is only for numpy arrays, and no image is one")

    def volume(image: ImageLike, name: str, require_signal: bool) -> Volume:
        own = affine if isinstance(image, np.ndarray) else None
        return as_volume(image, affine=own, name=name, require_signal=require_signal)

    ref = volume(reference, "reference", True)
    cubic = None
    period = _optional_number(factor, "factor")
    if thick_input is not None:
        interpolated = run_upsample(
            volume(thick_input, "thick input", True), axis=thick_axis, like=ref
        )
        thick_axis = interpolated.axis if thick_axis is None else thick_axis
        period = interpolated.factor if period is None else period
        cubic = interpolated.volume
    return compare_volumes(
        volume(restored, "restored", False),
        ref,
        mask=None if mask is None else volume(mask, "mask", False),
        thick_axis=thick_axis,
        slice_axis=slice_axis,
        period=period,
        cubic=cubic,
    )


def evaluate(
    restored: ImageLike,
    reference: ImageLike,
    *,
    mask: ImageLike | None = None,
    thick_axis: str | int | None = None,
    slice_axis: str | int | None = None,
    affine: np.ndarray | None = None,
    factor: float | None = None,
    thick_input: ImageLike | None = None,
) -> dict[str, Any]:
    """PSNR and SSIM of a restored image against its reference (``transmrsr evaluate``).

    The numbers every part of the tool reports: the paper protocol (per 2-D slice through the
    thick axis, zero-padded to 256x256 on the reference's 0-255 scale, empty slices skipped)
    and volume-level metrics inside a brain mask. The grids must be equal or differ by a
    whole-voxel shift; resample onto the reference grid first otherwise (``upsample(...,
    like=reference)``).

    Args:
        restored: the restored (or interpolated) image.
        reference: the high-resolution reference.
        mask: a brain mask on the reference grid (default: an automatic foreground mask).
        thick_axis: the restored axis: the paper protocol's slices contain it.
        slice_axis: slice along this axis instead (0, 1, 2 or ``LR``, ``AP``, ``SI``).
        affine: the voxel-to-world matrix of whichever inputs are numpy arrays.
        factor: the slab period along ``thick_axis`` in voxels of the reference (the
            restoration factor): the slab-stripe indices (:mod:`transmrsr.stripes`) of the
            restored image and the reference are measured too.
        thick_input: the thick-slice scan that was restored: its cubic interpolation onto the
            reference grid gets a slab-stripe index as well (the level to read the
            restoration's against), and it gives the thick axis and factor when not given.

    Returns:
        ``psnr_paper``, ``ssim_paper``, ``n_slices``, ``psnr_masked``, ``ssim_masked``,
        ``mae_masked``, ``nrmse_masked``, ``mask_voxels``, ``mask_source``, ``slice_axis``,
        ``voxels_compared``, ``grid_shift`` and ``stripe_index``, ``stripe_index_reference``,
        ``stripe_index_cubic`` (``None`` unless measured), as ``transmrsr evaluate --json``
        prints them.

    Raises:
        TransMRSRError: for bad images, or grids that cannot be compared.
    """
    return run_evaluate(
        restored,
        reference,
        mask=mask,
        thick_axis=thick_axis,
        slice_axis=slice_axis,
        affine=affine,
        factor=factor,
        thick_input=thick_input,
    ).to_dict()


__all__ = [
    "ImageLike",
    "ModelLike",
    "Resampled",
    "as_volume",
    "degrade",
    "evaluate",
    "load_model",
    "restore",
    "run_degrade",
    "run_evaluate",
    "run_restore",
    "run_upsample",
    "upsample",
]
