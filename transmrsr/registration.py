"""Rigid registration of a same-session guide scan onto a thick-slice scan, and the checks that
refuse a guide that cannot help.

A guided restore (``transmrsr restore THICK OUT --guide ISO``) borrows the anatomy of an
isotropic scan of the same session (a 1 mm T1 MPRAGE, typically) to restore a thick T2, FLAIR
or PD. The two series are acquired minutes apart, so the patient may have moved by a few
millimetres and degrees: the guide is registered onto the thick scan with a 6-parameter rigid
transform before any of its voxels is used. Contrasts differ, so the metric is Mattes mutual
information; the start is the scanner geometry of both headers (identity in world space), not a
centre-of-mass or moments initialisation, because a header that places the guide far from the
scan is itself a sign of a wrong guide and must not be hidden by the start.

A guide that would mislead a restore is refused with one line (:func:`check_guide`):

- a failed registration: a non-finite metric, or a transform far from the headers
  (:data:`MAX_SHIFT_MM`, :data:`MAX_ROTATION_DEG`), which two series of one session never need;
- a guide that covers too little of the scan's head (:data:`MIN_COVERAGE`): a restore would
  have no guide over the rest;
- a guide of another head. Two signs of the same head, from the contrast-independent
  similarity of the scan and the registered guide (:func:`guide_similarity`), and a guide
  must show at least one: a similarity of :data:`MIN_SIMILARITY` or more (edges shared
  throughout), or a similarity that peaks where the registration put the guide, losing
  :data:`MIN_ALIGNMENT` or more when the guide is moved :data:`PROBE_SHIFT_MM` off that pose
  (:func:`guide_alignment`). Another head shares only the smooth shape every brain has:
  little similarity, and what there is survives the move.

Geometry: :class:`~transmrsr.io.Volume` affines are voxel-to-world in RAS+ mm (NIfTI), ITK's
physical space is LPS; :func:`volume_to_sitk` and :func:`sitk_to_volume` convert exactly, and a
:class:`RigidRegistration` keeps its transform as a 4x4 RAS matrix, converting to ITK's
convention only to resample or to write a ``.tfm`` file.
"""

from __future__ import annotations

import logging
import math
import re
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import NamedTuple

import numpy as np
import SimpleITK as sitk  # noqa: N813 (the name SimpleITK's own documentation uses)
from scipy import ndimage

from transmrsr.errors import GuideError, OutputError, TransMRSRError
from transmrsr.geometry import resample_axis_grid
from transmrsr.io import Volume, atomic_path, check_affine, voxel_sizes

log = logging.getLogger(__name__)

#: RAS <-> LPS: the first two world axes flip (its own inverse).
RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])

#: Pyramid of the registration: voxel spacing of each level, in multiples of the finest
#: spacing of the two scans (the coarser of the two): 4 mm, 2 mm, then the native grids for a
#: 1 mm guide and a 1 x 1 x 5 mm scan. Axes already as coarse (the thick one) stay as they are.
SHRINK_LEVELS: tuple[int, ...] = (4, 2, 1)
#: Sample points of the metric per level (random, inside the scan's dilated head mask): enough
#: for a stable Mattes estimate, few enough that one level takes about a second on one core.
METRIC_SAMPLES = 20_000
#: Histogram bins of Mattes mutual information.
HISTOGRAM_BINS = 32
#: Seed of the metric's sample positions: the same inputs give the same transform.
SAMPLING_SEED = 2024
#: Iterations per level (regular-step gradient descent; most levels stop well before).
MAX_ITERATIONS = 200
#: Margin around the scan's head mask where the metric samples (mm): the head's outline is the
#: strongest feature the two contrasts share, and it lies on the mask's edge.
MASK_MARGIN_MM = 6.0
#: Voxels above this fraction of the 99.5th percentile are head (before closing and filling);
#: low enough for dark T1 CSF and T2 white matter, high enough to leave background noise out.
HEAD_THRESHOLD = 0.1

#: The least fraction of the scan's head mask that must lie inside the guide's field of view.
#: Real guides covered 98.5-100 % of the scans of :func:`guide_similarity`'s calibration (the
#: ds002748 ones are cropped to the brain), half a head 50 %: a restore must not invent the
#: part its guide does not show, and a few slices short at the vertex are still a guide.
MIN_COVERAGE = 0.95
#: Largest translation (of the head's centre) and rotation from the headers a registration may
#: find. Two series of one session differ by patient motion, a few mm and degrees; more means
#: the registration diverged or the guide belongs elsewhere.
MAX_SHIFT_MM = 30.0
MAX_ROTATION_DEG = 20.0
#: How far (mm) the registered guide is moved, both ways along each world axis, to see how
#: sharply its similarity to the scan peaks at the registration (:func:`guide_alignment`).
PROBE_SHIFT_MM = 2.0
#: A guide of this :func:`guide_similarity` or more is of the same head, whatever its
#: alignment: real same-head pairs scored 0.63-0.75, other heads 0.29 at most (calibration:
#: :func:`guide_alignment`).
MIN_SIMILARITY = 0.45
#: A guide of this :func:`guide_alignment` or more is of the same head, whatever its
#: similarity (calibration there).
MIN_ALIGNMENT = 0.03
#: The similarity leaves out the head's outline (the mask's edge, this deep): every head has
#: one, so it would make any two heads look alike.
OUTLINE_MARGIN_MM = 4.0
#: Fewer voxels than this in the head (within the guide) give no meaningful similarity.
MIN_SIMILARITY_VOXELS = 100


# --------------------------------------------------------------------------------------------
# Volume <-> SimpleITK


def _set_geometry(image: sitk.Image, affine: np.ndarray) -> None:
    """Give an ITK image the grid of a RAS voxel-to-world affine (spacing, origin, direction)."""
    lps = RAS_TO_LPS @ np.asarray(affine, np.float64)
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    direction = lps[:3, :3] / spacing
    image.SetSpacing([float(s) for s in spacing])
    image.SetOrigin([float(o) for o in lps[:3, 3]])
    image.SetDirection([float(d) for d in direction.ravel()])


def sitk_affine(image: sitk.Image) -> np.ndarray:
    """The RAS voxel-to-world affine of an ITK image (its LPS geometry with two axes flipped)."""
    direction = np.asarray(image.GetDirection(), np.float64).reshape(3, 3)
    lps = np.eye(4)
    lps[:3, :3] = direction * np.asarray(image.GetSpacing(), np.float64)
    lps[:3, 3] = image.GetOrigin()
    return RAS_TO_LPS @ lps


def volume_to_sitk(volume: Volume) -> sitk.Image:
    """A float32 ITK image of a volume, on the same world grid.

    ITK indexes arrays as (k, j, i) from numpy and describes the grid in LPS; the array is
    transposed and the affine's first two rows flipped, so that every voxel keeps its world
    position (oblique grids included: the direction is the affine's normalised columns).
    """
    data = np.ascontiguousarray(np.asarray(volume.data, np.float32).transpose(2, 1, 0))
    image = sitk.GetImageFromArray(data)
    _set_geometry(image, volume.affine)
    return image


def sitk_to_volume(image: sitk.Image) -> Volume:
    """The :class:`Volume` of a 3-D ITK image: the inverse of :func:`volume_to_sitk`."""
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise TransMRSRError(
            f"expected a 3-D scalar image, got {image.GetDimension()}-D with "
            f"{image.GetNumberOfComponentsPerPixel()} components"
        )
    data = sitk.GetArrayFromImage(image).transpose(2, 1, 0).astype(np.float32)
    return Volume(data=np.ascontiguousarray(data), affine=sitk_affine(image))


def _grid_image(shape: tuple[int, ...], affine: np.ndarray) -> sitk.Image:
    """An empty (uint8) ITK image that only carries a grid, as a resampling reference."""
    image = sitk.Image([int(s) for s in shape], sitk.sitkUInt8)
    _set_geometry(image, affine)
    return image


# --------------------------------------------------------------------------------------------
# Transforms


def rotation_angle_deg(matrix: np.ndarray) -> float:
    """Angle (degrees) of the rotation part of a rigid 4x4 (or 3x3) matrix."""
    rotation = np.asarray(matrix, np.float64)[:3, :3]
    cosine = (np.trace(rotation) - 1.0) / 2.0
    return float(np.degrees(np.arccos(np.clip(cosine, -1.0, 1.0))))


def rigid_matrix(
    rotation_deg: tuple[float, float, float] = (0.0, 0.0, 0.0),
    translation_mm: tuple[float, float, float] = (0.0, 0.0, 0.0),
    center: tuple[float, float, float] | np.ndarray = (0.0, 0.0, 0.0),
) -> np.ndarray:
    """A 4x4 world (RAS mm) rigid matrix: rotations about x, then y, then z (degrees) around
    ``center``, then a translation. For tests and calibration: a known motion to recover."""
    ax, ay, az = np.radians(rotation_deg)
    rx = np.array([[1, 0, 0], [0, math.cos(ax), -math.sin(ax)], [0, math.sin(ax), math.cos(ax)]])
    ry = np.array([[math.cos(ay), 0, math.sin(ay)], [0, 1, 0], [-math.sin(ay), 0, math.cos(ay)]])
    rz = np.array([[math.cos(az), -math.sin(az), 0], [math.sin(az), math.cos(az), 0], [0, 0, 1]])
    rotation = rz @ ry @ rx
    c = np.asarray(center, np.float64)
    matrix = np.eye(4)
    matrix[:3, :3] = rotation
    matrix[:3, 3] = c - rotation @ c + np.asarray(translation_mm, np.float64)
    return matrix


def sitk_transform_matrix(transform: sitk.Transform) -> np.ndarray:
    """The 4x4 RAS matrix of any linear ITK transform (read from a ``.tfm``, for instance),
    found by mapping the origin and the unit vectors."""
    points = np.vstack([np.zeros(3), np.eye(3)])
    mapped = np.array([transform.TransformPoint([float(v) for v in p]) for p in points])
    lps = np.eye(4)
    lps[:3, 3] = mapped[0]
    lps[:3, :3] = (mapped[1:] - mapped[0]).T
    return RAS_TO_LPS @ lps @ RAS_TO_LPS


@dataclass(frozen=True, eq=False)  # arrays: no field-wise ==
class RigidRegistration:
    """A rigid transform found by :func:`register_rigid`.

    Attributes:
        matrix: 4x4 world (RAS mm) matrix mapping a point of the thick scan (target) to the
            point of the guide that shows the same anatomy; the identity when the headers were
            right. Resampling the guide through it puts it on the scan.
        center: the centre of the scan's head (RAS mm), around which the rotation is reported.
        metric: the final Mattes mutual information (negative: lower is better).
        iterations: optimizer iterations over all pyramid levels.
        stop: why the last level's optimizer stopped.
        seconds: wall time of the registration.
    """

    matrix: np.ndarray
    center: np.ndarray
    metric: float = float("nan")
    iterations: int = 0
    stop: str = ""
    seconds: float = 0.0

    @property
    def translation_mm(self) -> np.ndarray:
        """How far the head's centre moves (RAS mm): the translation of the rigid motion
        written as a rotation about that centre."""
        centre = np.append(np.asarray(self.center, np.float64), 1.0)
        return (self.matrix @ centre)[:3] - centre[:3]

    @property
    def shift_mm(self) -> float:
        """Length of :attr:`translation_mm`."""
        return float(np.linalg.norm(self.translation_mm))

    @property
    def rotation_deg(self) -> float:
        """Angle of the rotation (degrees), whatever its axis."""
        return rotation_angle_deg(self.matrix)

    def to_sitk(self) -> sitk.VersorRigid3DTransform:
        """The transform in ITK's convention: LPS points of the scan (fixed) to LPS points of
        the guide (moving), centred on the head: what ITK, ANTs and Slicer resample with."""
        lps = RAS_TO_LPS @ np.asarray(self.matrix, np.float64) @ RAS_TO_LPS
        center = (RAS_TO_LPS[:3, :3] @ np.asarray(self.center, np.float64)).tolist()
        rotation = lps[:3, :3]
        transform = sitk.VersorRigid3DTransform()
        transform.SetCenter(center)
        transform.SetMatrix([float(v) for v in rotation.ravel()], 1e-6)
        # x -> R (x - c) + c + t equals x -> R x + b when t = b - c + R c.
        c = np.asarray(center)
        transform.SetTranslation([float(v) for v in lps[:3, 3] - c + rotation @ c])
        return transform

    def summary(self) -> str:
        """One line for logs and reports."""
        t = self.translation_mm
        return (
            f"shift {self.shift_mm:.1f} mm ({t[0]:+.1f}, {t[1]:+.1f}, {t[2]:+.1f} RAS), "
            f"rotation {self.rotation_deg:.1f} deg, metric {self.metric:.3f}, "
            f"{self.iterations} iterations, {self.seconds:.1f} s"
        )


# --------------------------------------------------------------------------------------------
# Head mask and the registration


def head_mask(volume: Volume) -> np.ndarray:
    """The head (or brain, in a skull-stripped scan): a boolean mask on the volume's grid.

    Voxels above :data:`HEAD_THRESHOLD` of the 99.5th percentile, holes filled (ventricles,
    dark CSF), the largest connected part kept (background noise and ghosts left out). Used to
    place the metric's samples, to measure the guide's coverage and the similarity.
    """
    data = np.asarray(volume.data, np.float32)
    top = float(np.percentile(data, 99.5))
    if not math.isfinite(top) or top <= float(data.min()):
        return np.zeros(data.shape, bool)
    mask = data > float(data.min()) + HEAD_THRESHOLD * (top - float(data.min()))
    mask = ndimage.binary_closing(mask, iterations=1, border_value=0)
    labels, count = ndimage.label(mask)
    if count > 1:
        sizes = ndimage.sum_labels(mask, labels, index=np.arange(1, count + 1))
        mask = labels == (int(np.argmax(sizes)) + 1)
    return ndimage.binary_fill_holes(mask)


def _dilate_mm(mask: np.ndarray, affine: np.ndarray, margin_mm: float) -> np.ndarray:
    """Grow a mask by about ``margin_mm`` along each array axis (a box, in voxels per axis)."""
    reach = [math.ceil(margin_mm / z) for z in voxel_sizes(affine)]
    size = [2 * r + 1 for r in reach]
    return ndimage.maximum_filter(mask.astype(np.uint8), size=size, mode="constant") > 0


def _erode_mm(mask: np.ndarray, affine: np.ndarray, margin_mm: float) -> np.ndarray:
    """Shrink a mask by about ``margin_mm`` along each array axis, by at least one voxel."""
    reach = [max(1, round(margin_mm / z)) for z in voxel_sizes(affine)]
    structure = np.ones([2 * r + 1 for r in reach], bool)
    return ndimage.binary_erosion(mask, structure=structure, border_value=0)


def head_center(volume: Volume) -> np.ndarray:
    """World (RAS mm) centroid of the head (:func:`head_mask`): where rotations are reported."""
    return _mask_center(head_mask(volume), volume.affine)


def _mask_center(mask: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """World (RAS) centroid of a mask; the grid's centre when the mask is empty."""
    if mask.any():
        index = np.array(ndimage.center_of_mass(mask))
    else:
        index = (np.asarray(mask.shape, np.float64) - 1.0) / 2.0
    return (affine[:3, :3] @ index) + affine[:3, 3]


def _pyramid_level(
    data: np.ndarray, affine: np.ndarray, spacing: float, *, smooth: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Smooth and subsample a volume to about ``spacing`` mm per axis (axes already that coarse
    stay as they are): the low-pass that makes the coarse levels see the shapes, not the
    texture, and gives the optimizer a wide basin."""
    zooms = voxel_sizes(affine)
    steps = [max(1, round(spacing / z)) for z in zooms]
    if all(s == 1 for s in steps):
        return data, affine
    if smooth:
        sigma = [0.5 * math.sqrt(max(spacing**2 - z**2, 0.0)) / z for z in zooms]
        data = ndimage.gaussian_filter(data, sigma=sigma, mode="nearest", truncate=3.0)
    data = np.ascontiguousarray(data[:: steps[0], :: steps[1], :: steps[2]])
    return data, affine @ np.diag([*steps, 1.0])


def register_rigid(
    guide: Volume,
    target: Volume,
    *,
    levels: tuple[int, ...] = SHRINK_LEVELS,
    samples: int = METRIC_SAMPLES,
    iterations: int = MAX_ITERATIONS,
    seed: int = SAMPLING_SEED,
    threads: int = 1,
    initial: np.ndarray | None = None,
) -> RigidRegistration:
    """Register the guide (moving) rigidly onto the thick-slice scan (fixed).

    Mattes mutual information (the contrasts differ), versor-rigid transform optimised by
    regular-step gradient descent over a pyramid of ``levels`` (:data:`SHRINK_LEVELS`),
    starting from the headers (identity in world space). The metric samples ``samples`` random
    points per level inside the scan's dilated head mask, drawn with ``seed``, so the same
    inputs give the same transform; ``threads`` (default 1) fixes the order of the metric's
    sums as well, and the whole registration of a 1 mm head takes a few seconds on one core.

    Args:
        guide: the isotropic scan of the same session.
        target: the thick-slice scan.
        initial: a start other than the headers (4x4 RAS, target world -> guide world); for
            calibration and for users who know better than the headers.

    Raises:
        TransMRSRError: when ITK gives up (the images hardly overlap, for instance).
    """
    start = time.perf_counter()
    mask = head_mask(target)
    if not mask.any():
        raise TransMRSRError("the scan has no head to register the guide on (no signal)")
    center = _mask_center(mask, target.affine)
    sample_mask = _dilate_mm(mask, target.affine, MASK_MARGIN_MM)
    if not levels or any(int(s) < 1 for s in levels):
        raise TransMRSRError(f"registration levels {levels!r}: give shrink factors of 1 or more")
    matrix = np.eye(4) if initial is None else np.asarray(initial, np.float64)
    _check_rigid(matrix, source="the initial transform")
    transform = RigidRegistration(matrix=matrix, center=center).to_sitk()

    # Levels count from the coarser of the two finest spacings: a 0.45 mm in-plane scan and a
    # 1 mm guide meet at 1 mm, where the guide has all its detail and the scan 5x fewer voxels.
    base = max(float(voxel_sizes(target.affine).min()), float(voxel_sizes(guide.affine).min()))
    fixed_data = np.asarray(target.data, np.float32)
    moving_data = np.asarray(guide.data, np.float32)
    total_iterations, metric, stop = 0, float("nan"), ""
    for shrink in levels:
        spacing = shrink * base
        fixed_level, fixed_affine = _pyramid_level(fixed_data, target.affine, spacing)
        mask_level, _ = _pyramid_level(sample_mask, target.affine, spacing, smooth=False)
        moving_level, moving_affine = _pyramid_level(moving_data, guide.affine, spacing)
        fixed = volume_to_sitk(Volume(fixed_level, fixed_affine))
        moving = volume_to_sitk(Volume(moving_level, moving_affine))
        fixed_mask = sitk.GetImageFromArray(
            np.ascontiguousarray(mask_level.transpose(2, 1, 0).astype(np.uint8))
        )
        fixed_mask.CopyInformation(fixed)

        method = sitk.ImageRegistrationMethod()
        method.SetNumberOfThreads(threads)
        method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=HISTOGRAM_BINS)
        method.SetMetricSamplingStrategy(method.RANDOM)
        method.SetMetricSamplingPercentage(min(1.0, samples / max(int(mask_level.sum()), 1)), seed)
        method.SetMetricFixedMask(fixed_mask)
        method.SetInterpolator(sitk.sitkLinear)
        method.SetOptimizerAsRegularStepGradientDescent(
            learningRate=spacing,
            minStep=spacing / 200.0,
            numberOfIterations=iterations,
            relaxationFactor=0.5,
            gradientMagnitudeTolerance=1e-8,
        )
        method.SetOptimizerScalesFromPhysicalShift()
        method.SetInitialTransform(transform, inPlace=True)
        try:
            method.Execute(fixed, moving)
        except RuntimeError as exc:
            reason = _itk_reason(exc)
            raise TransMRSRError(
                f"the registration of the guide onto the scan failed ({reason}): is the guide "
                "a scan of the same head and session?"
            ) from None
        total_iterations += int(method.GetOptimizerIteration())
        metric = float(method.GetMetricValue())
        stop = method.GetOptimizerStopConditionDescription()
        log.debug(
            "registration level %.3g mm: metric %.4f after %d iterations (%s)",
            spacing,
            metric,
            method.GetOptimizerIteration(),
            stop,
        )
    result = RigidRegistration(
        matrix=sitk_transform_matrix(transform),
        center=center,
        metric=metric,
        iterations=total_iterations,
        stop=stop,
        seconds=time.perf_counter() - start,
    )
    log.info("registered the guide: %s", result.summary())
    return result


def _check_rigid(matrix: np.ndarray, *, source: str) -> None:
    """Refuse a matrix that is not a finite rigid motion (a rotation and a translation)."""
    check_affine(matrix, source=source)
    rotation = matrix[:3, :3]
    if (
        not np.allclose(rotation.T @ rotation, np.eye(3), atol=1e-6)
        or np.linalg.det(rotation) <= 0
        or not np.allclose(matrix[3], [0, 0, 0, 1])
    ):
        raise TransMRSRError(f"{source} is not a rigid motion (a rotation and a translation)")


def _itk_reason(exc: BaseException) -> str:
    """The useful sentence of an ITK exception, without its file, line and object address
    (``... MattesMutualInformationImageToImageMetricv4(0x55d...): All samples map outside
    moving image buffer. The images do not ...`` -> ``all samples map outside moving image
    buffer``)."""
    text = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
    match = re.search(r"ITK ERROR: [^:]*: (.*)", text) or re.search(r"[Dd]escription: (.*)", text)
    reason = (match.group(1) if match else text).strip() or type(exc).__name__
    reason = reason.split(". ")[0].rstrip(".")
    return reason[:1].lower() + reason[1:]


# --------------------------------------------------------------------------------------------
# Resampling and saving


class ResampledGuide(NamedTuple):
    """The guide on another grid: its values and where it covers that grid."""

    volume: Volume
    covered: np.ndarray


def resample_guide(
    guide: Volume,
    registration: RigidRegistration,
    shape: tuple[int, ...],
    affine: np.ndarray,
) -> ResampledGuide:
    """The guide resampled onto a grid (the restore's output grid) through the registration.

    Linear interpolation, zero outside the guide; ``covered`` is True where a voxel's centre
    falls inside the guide's field of view (within half a voxel of its outer voxel centres,
    ITK's rule), so that a restore knows where it has no guide rather than reading zeros as
    anatomy.
    """
    reference = _grid_image(tuple(shape), np.asarray(affine, np.float64))
    transform = registration.to_sitk()
    values = sitk.Resample(
        volume_to_sitk(guide), reference, transform, sitk.sitkLinear, 0.0, sitk.sitkFloat32
    )
    ones = sitk.Image(list(guide.shape), sitk.sitkUInt8) + 1
    _set_geometry(ones, guide.affine)
    inside = sitk.Resample(ones, reference, transform, sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    volume = sitk_to_volume(values)
    volume = Volume(data=volume.data, affine=np.asarray(affine, np.float64).copy())
    covered = sitk.GetArrayViewFromImage(inside).transpose(2, 1, 0) > 0
    return ResampledGuide(volume, np.ascontiguousarray(covered))


def save_transform(registration: RigidRegistration, path: str | Path) -> Path:
    """Write the transform as an ITK text transform (``.tfm`` or ``.txt``), atomically.

    The file maps the scan's (fixed) points to the guide's (moving) ones in ITK's LPS
    convention, which is what ``antsApplyTransforms -i guide -r scan -t file``, ITK and 3D
    Slicer expect; it is written to a temporary file in the same folder and renamed, so a
    killed run never leaves half a transform.
    """
    out = Path(path)
    suffix = out.suffix.lower()
    if suffix not in (".tfm", ".txt"):
        raise TransMRSRError(f"{out}: a transform file must end in .tfm or .txt")
    with atomic_path(out, suffix=suffix) as tmp_name:
        try:
            sitk.WriteTransform(registration.to_sitk(), tmp_name)
        except RuntimeError as exc:
            raise OutputError(f"{out}: cannot write ({_itk_reason(exc)})") from None
    return out


# --------------------------------------------------------------------------------------------
# The checks


def guide_on_target(
    guide: Volume, registration: RigidRegistration, target: Volume
) -> ResampledGuide:
    """The registered guide degraded to the thick scan's grid: sampled on the scan's grid with
    its thick axis cut into thin sub-slices, and averaged over each slice's sub-slices (the
    box profile of a thick slice), so that it looks at the anatomy as the scan does."""
    zooms = voxel_sizes(target.affine)
    axis = int(np.argmax(zooms))
    sub = max(1, round(float(zooms[axis] / np.delete(zooms, axis).min())))
    if sub == 1:
        return resample_guide(guide, registration, target.shape, target.affine)
    fine = resample_axis_grid(target.shape, target.affine, axis, 1.0 / sub)
    on_fine = resample_guide(guide, registration, fine.shape, fine.affine)
    shape = list(fine.shape)
    shape[axis : axis + 1] = [target.shape[axis], sub]
    data = on_fine.volume.data.reshape(shape).mean(axis=axis + 1)
    covered = on_fine.covered.reshape(shape).all(axis=axis + 1)
    return ResampledGuide(Volume(data.astype(np.float32), target.affine.copy()), covered)


def coverage(
    guide: Volume,
    registration: RigidRegistration,
    target: Volume,
    mask: np.ndarray | None = None,
) -> float:
    """Fraction of the scan's head mask (``mask``, default :func:`head_mask`) whose voxel
    centres lie inside the guide's field of view once registered."""
    mask = head_mask(target) if mask is None else mask
    index = np.argwhere(mask).astype(np.float64)
    if index.size == 0:
        return 0.0
    to_guide = np.linalg.inv(guide.affine) @ registration.matrix @ target.affine
    points = index @ to_guide[:3, :3].T + to_guide[:3, 3]
    upper = np.asarray(guide.shape, np.float64) - 0.5
    inside = np.all((points >= -0.5) & (points <= upper), axis=1)
    return float(inside.mean())


def guide_similarity(target: Volume, guide: np.ndarray, mask: np.ndarray) -> float:
    """How much the registered guide looks like the scan's head, whatever the two contrasts.

    The Pearson correlation of the gradient magnitudes (per mm) of the scan and of the guide
    degraded to its grid (:func:`guide_on_target`), inside ``mask`` less its outer
    :data:`OUTLINE_MARGIN_MM`. Edges lie where tissues meet in every contrast (T1, T2, FLAIR,
    PD), even where the contrast between them inverts, so the edge strengths of two scans of
    one head correlate. The head's outline is left out because every head has one (two
    skull-stripped brains share it almost exactly).

    On its own it does not tell a guide of the same head from another head's: real same-head
    pairs scored 0.63-0.75, other heads up to 0.29, but a true guide whose contrast shares
    few edges with the scan's scored 0.26-0.40 (synthetic heads of random contrast). What
    tells them apart is how the similarity depends on the exact pose: :func:`guide_alignment`.
    """
    inner = _erode_mm(np.asarray(mask, bool), target.affine, OUTLINE_MARGIN_MM)
    if int(inner.sum()) < MIN_SIMILARITY_VOXELS:
        return 0.0
    zooms = [float(z) for z in voxel_sizes(target.affine)]
    edges = []
    for data in (target.data, guide):
        gradient = np.gradient(np.asarray(data, np.float64), *zooms)
        edges.append(np.sqrt(sum(g**2 for g in gradient))[inner])
    if min(float(e.std()) for e in edges) <= 0.0:
        return 0.0
    return float(np.corrcoef(edges[0], edges[1])[0, 1])


def _moved_by(registration: RigidRegistration, shift_mm: np.ndarray) -> RigidRegistration:
    """The registration with the scan's points moved by ``shift_mm`` (RAS) before it."""
    step = np.eye(4)
    step[:3, 3] = shift_mm
    return replace(registration, matrix=registration.matrix @ step)


def guide_alignment(
    guide: Volume,
    registration: RigidRegistration,
    target: Volume,
    mask: np.ndarray | None = None,
    shift_mm: float = PROBE_SHIFT_MM,
) -> tuple[float, float]:
    """``(similarity, alignment)``: :func:`guide_similarity` of the scan and the registered
    guide, and how much of it is lost when the guide is moved ``shift_mm`` off that pose
    (the mean over the six moves, both ways along each world axis).

    A guide of the same head lines up with the scan fold by fold: a move of 2 mm takes its
    edges off the scan's, and its similarity falls steeply from the peak the registration
    found, whatever the two contrasts share. Another head's similarity comes from what every
    brain has (a smooth outline, ventricles in about the same place), which a move of 2 mm
    barely changes. All seven similarities are measured over the same voxels (the head mask
    where the guide covers the scan in every pose).

    Calibration of :data:`MIN_SIMILARITY` (0.45) and :data:`MIN_ALIGNMENT` (0.03), on scans
    made thick (Gaussian slices along SI), the guide registered by :func:`register_rigid` from
    its headers (docs/experiments.md, 2026-12-08), as ``similarity / alignment``:

    - same head, real: ``stroke_t1``, ``stroke_t2``, ``flair`` (one patient), the five pairs
      of two contrasts as scan and guide at x4, the guide first moved by (3, -4, 5) deg and
      (4, -3, 5) mm or (-6, 2, 3) deg and (-8, 6, -4) mm: 0.63-0.75 / 0.190-0.285; at x4
      and x8 with Rician noise of 5 % of the scan's 99th percentile: 0.51-0.67 / 0.125-0.263;
    - same head, synthetic: eight SynthSeg anatomies drawn in a random contrast (the scan,
      x4) and a T1-like one (the guide, moved up to 1 voxel and 1 degree): 0.20-0.73 /
      0.046-0.267. Where one measure is low the other is not: the scans with few edges
      shared (0.20-0.44) peak sharply (0.077-0.153), and the one with the broadest peak
      (0.046) shares edges throughout (0.51);
    - other heads: ``sub-10``, ``sub-20`` (ds002748), ``m2208_t2w``, ``coregqa_bet_t1``,
      ``antsxnet_brain_t1`` on each thick stroke scan, ``otsu_t1``, ``ixi012_t1_2mm``,
      ``m2208_t2w``, ``sub-20`` on a thick ``colin27_t1``, and each synthetic head's guide on
      the next head (39 pairs, 12 of them with the noise above): at most 0.29 / 0.019,
      whether or not the registration's motion passed :data:`MAX_SHIFT_MM` and
      :data:`MAX_ROTATION_DEG`.

    The similarity alone refused five of the eight synthetic heads' true guides (0.20-0.44);
    the alignment alone, at 0.03, would take every same-head guide, the one with the
    broadest peak by a factor of 1.5. Reproduce: ``python benchmarks/guide_check.py``.
    """
    mask = head_mask(target) if mask is None else np.asarray(mask, bool)
    moves = [np.zeros(3)] + [sign * shift_mm * np.eye(3)[k] for k in range(3) for sign in (-1, 1)]
    views = [guide_on_target(guide, _moved_by(registration, move), target) for move in moves]
    common = mask & np.logical_and.reduce([view.covered for view in views])
    similarities = [guide_similarity(target, view.volume.data, common) for view in views]
    return similarities[0], similarities[0] - float(np.mean(similarities[1:]))


@dataclass(frozen=True, eq=False)
class GuideReport:
    """What :func:`check_guide` measured of an accepted guide.

    Attributes:
        registration: the rigid transform (guide onto the scan).
        coverage: fraction of the scan's head inside the guide's field of view.
        similarity: :func:`guide_similarity` of the scan and the registered guide.
        alignment: how much of it a move of :data:`PROBE_SHIFT_MM` loses
            (:func:`guide_alignment`).
    """

    registration: RigidRegistration
    coverage: float
    similarity: float
    alignment: float

    @property
    def translation_mm(self) -> np.ndarray:
        return self.registration.translation_mm

    @property
    def shift_mm(self) -> float:
        return self.registration.shift_mm

    @property
    def rotation_deg(self) -> float:
        return self.registration.rotation_deg

    def summary(self) -> str:
        """One line for logs and reports."""
        return (
            f"guide covers {100 * self.coverage:.0f} % of the head, similarity "
            f"{self.similarity:.2f}, alignment {self.alignment:.2f}; "
            f"{self.registration.summary()}"
        )


def check_guide(
    guide: Volume,
    target: Volume,
    registration: RigidRegistration | None = None,
    *,
    min_coverage: float = MIN_COVERAGE,
    min_similarity: float = MIN_SIMILARITY,
    min_alignment: float = MIN_ALIGNMENT,
    same_head: bool = True,
    max_shift_mm: float = MAX_SHIFT_MM,
    max_rotation_deg: float = MAX_ROTATION_DEG,
) -> GuideReport:
    """Register the guide onto the thick-slice scan (unless ``registration`` is given) and
    refuse it, with one line, when it cannot guide a restore of that scan.

    In order: a failed registration (non-finite, or a transform beyond ``max_shift_mm`` and
    ``max_rotation_deg`` from the headers: on a wild transform the other measures mean
    nothing), a guide that covers less than ``min_coverage`` of the scan's head, and, with
    ``same_head``, a guide that shows no sign of being the same head: :func:`guide_similarity`
    below ``min_similarity`` and :func:`guide_alignment` below ``min_alignment`` (another
    head's guide, or a registration that missed). The thresholds and their calibration are
    documented at :data:`MIN_COVERAGE`, :data:`MAX_SHIFT_MM` and :func:`guide_alignment`.

    Raises:
        GuideError: the first check that fails, in one line.
    """
    if registration is None:
        registration = register_rigid(guide, target)
    if not (math.isfinite(registration.metric) and np.all(np.isfinite(registration.matrix))):
        raise GuideError(
            "the registration of the guide onto the scan failed (the metric is not finite): "
            "is the guide a scan of the same head?"
        )
    shift, angle = registration.shift_mm, registration.rotation_deg
    if shift > max_shift_mm or angle > max_rotation_deg:
        raise GuideError(
            f"the registration moved the guide {shift:.0f} mm and {angle:.0f} degrees from "
            f"where the headers place it (two scans of one session differ by at most "
            f"{max_shift_mm:g} mm and {max_rotation_deg:g} degrees): the guide is of another "
            "head or session, or the registration failed"
        )
    mask = head_mask(target)
    covered = coverage(guide, registration, target, mask)
    if covered < min_coverage:
        raise GuideError(
            f"the guide covers only {math.floor(100 * covered)} % of the scan's head (at least "
            f"{100 * min_coverage:.0f} % needed): give a guide whose field of view holds the "
            "whole head"
        )
    similarity, alignment = guide_alignment(guide, registration, target, mask)
    if same_head and not (similarity >= min_similarity or alignment >= min_alignment):
        raise GuideError(
            f"the guide does not look like the scan's head once registered (edge similarity "
            f"{similarity:.2f}, below {min_similarity:g}, and alignment {alignment:.3f}, below "
            f"{min_alignment:g}; scans of one head pass one or both): is it a scan of the same "
            "patient? (If it is, --no-guide-check uses it anyway.)"
        )
    report = GuideReport(
        registration=registration, coverage=covered, similarity=similarity, alignment=alignment
    )
    log.info("%s", report.summary())
    return report
