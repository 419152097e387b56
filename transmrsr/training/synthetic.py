"""Synthetic whole heads from label maps (the SynthSeg / SynthSR recipe, written here).

Real training volumes are few, and most are skull-stripped or processed; a model that only
ever saw those learns that a head ends at the brain. Label maps of real heads (brain
structures plus skull, scalp, eyes and other tissue) turn into any number of images: draw an
intensity per tissue, deform the anatomy, then add what an acquisition adds (partial-volume
blur, a smooth bias field, a gamma change of contrast and Rician noise). The recipe follows
Billot et al., SynthSeg (Medical Image Analysis 2023) and Iglesias et al., SynthSR (Science
Advances 2023):

1. a random affine (rotation, scaling, shear, translation) and a random smooth deformation
   move the label map; labels are looked up with nearest neighbours, so no label value is
   made that the map did not have;
2. each intensity class gets a mean and a standard deviation, and every voxel of that class a
   Gaussian draw from them. ``"t1"``: the class means and spreads are drawn from the T1-like
   priors (``prior_means_t1.npy`` / ``prior_stds_t1.npy``: row 0 the mean, row 1 the spread);
   ``"random"``: drawn uniformly, so T2-, PD- and FLAIR-like heads (and impossible ones)
   appear. Labels of one class share a draw;
3. a Gaussian blur of about one voxel, a smooth multiplicative bias field, a random gamma and
   Rician noise.

Every random choice comes from one generator seeded by ``(seed, index)``: the same seed gives
the same head, voxel for voxel.

The T1-like priors come with 25 classes (SynthSeg's "contrast-specific" grouping), but the
class table shipped beside them, ``generation_classes.npy``, has 48 (its random-contrast
grouping), and SynthSeg's contrast-specific table is not in the data. :data:`T1_PRIOR_COLUMN`
is this project's own table from label to prior column: brain labels take the column whose
mean is nearest their real T1 intensity relative to white matter (measured on the FreeSurfer
``norm.mgz`` and ``aparc+aseg`` of a real subject, with white matter on the brightest narrow
column), non-brain labels the column of their tissue (skull dark, scalp and soft tissue on the
wide columns, the eyes like CSF). A folder with a table whose classes match its priors
(``generation_classes_t1.npy``) uses that instead.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from scipy import ndimage
from torch.utils.data import Dataset

from transmrsr.errors import TransMRSRError
from transmrsr.intensity import IntensityScaler
from transmrsr.io import atomic_path
from transmrsr.pairs import add_rician_noise
from transmrsr.training.distributed import DistContext, barrier

log = logging.getLogger(__name__)

CONTRASTS = ("t1", "random")
#: Files a label folder must hold (``generation_classes_t1.npy`` is optional).
TABLE_FILES = (
    "generation_labels.npy",
    "generation_classes.npy",
    "prior_means_t1.npy",
    "prior_stds_t1.npy",
)

#: Label value -> column of the T1-like priors (see the module docstring for how it was made).
#: Measured T1 intensity relative to white matter in brackets for the brain labels.
T1_PRIOR_COLUMN: dict[int, int] = {
    0: 0,  # background
    2: 2,
    41: 2,  # cerebral white matter (1.00)
    3: 3,
    42: 3,  # cerebral cortex (0.66)
    4: 22,
    43: 22,  # lateral ventricles (0.24)
    5: 11,
    44: 11,  # inferior lateral ventricles (0.50, partial volume)
    7: 4,
    46: 4,  # cerebellar white matter (0.87)
    8: 3,
    47: 3,  # cerebellar cortex (0.61)
    10: 9,
    49: 9,  # thalamus (0.90)
    11: 7,
    50: 7,  # caudate (0.79)
    12: 4,
    51: 4,  # putamen (0.85)
    13: 8,
    52: 8,  # pallidum (0.97)
    14: 21,
    15: 21,
    72: 21,  # third, fourth and fifth ventricles (0.25-0.30)
    16: 4,  # brain stem (0.85)
    17: 10,
    53: 10,  # hippocampus (0.70)
    18: 10,
    54: 10,  # amygdala (0.72)
    24: 21,  # CSF (0.28)
    25: 5,
    57: 5,  # lesions (0.55)
    26: 7,
    58: 7,  # accumbens (0.76)
    28: 8,
    60: 8,  # ventral diencephalon (0.94)
    30: 3,
    62: 3,  # vessels (0.62)
    85: 10,  # optic chiasm (0.71)
    136: 3,
    137: 3,
    163: 3,
    164: 3,  # other small brain structures, grey-matter-like
    502: 23,  # deep soft tissue below the skull base
    506: 1,  # eyes (vitreous, CSF-like)
    507: 19,  # face and neck soft tissue (muscle and fat: wide)
    508: 20,  # orbital tissue
    509: 24,  # nose and anterior face
    511: 14,  # scalp and skin (fat: bright and wide)
    512: 4,  # spinal cord (as the brain stem)
    514: 18,  # tissue at the skull base
    515: 15,  # skull (cortical bone: dark)
    516: 17,  # skull base and sinuses (wide)
    530: 16,  # optic nerves
}


@dataclass(frozen=True)
class LabelTables:
    """The tables that turn a label map into intensities.

    Attributes:
        labels: the label values a map may hold, ``(K,)``.
        classes: intensity class of each label for random contrast, ``(K,)``.
        t1_classes: column of the T1 priors for each label, ``(K,)``.
        prior_means, prior_stds: T1-like priors, ``(2, C)``: row 0 the mean of the class
            mean (or standard deviation), row 1 its spread, on a 0-255 scale.
    """

    labels: np.ndarray
    classes: np.ndarray
    t1_classes: np.ndarray
    prior_means: np.ndarray
    prior_stds: np.ndarray

    @classmethod
    def load(cls, folder: str | os.PathLike[str]) -> LabelTables:
        """Read and check the tables in ``folder`` (the layout of SynthSeg's data folder)."""
        folder = Path(folder)
        if not folder.is_dir():
            raise TransMRSRError(f"{folder}: no such label folder")
        missing = [name for name in TABLE_FILES if not (folder / name).is_file()]
        if missing:
            raise TransMRSRError(f"{folder}: missing label tables {', '.join(missing)}")
        arrays = {}
        for name in TABLE_FILES:
            try:
                arrays[name] = np.load(folder / name, allow_pickle=False)
            except (OSError, ValueError) as exc:
                raise TransMRSRError(f"{folder / name}: cannot read ({exc})") from None
        labels = _integers(arrays["generation_labels.npy"], folder / "generation_labels.npy")
        classes = _integers(arrays["generation_classes.npy"], folder / "generation_classes.npy")
        means = np.asarray(arrays["prior_means_t1.npy"], np.float64)
        stds = np.asarray(arrays["prior_stds_t1.npy"], np.float64)
        if labels.ndim != 1 or classes.shape != labels.shape:
            raise TransMRSRError(
                f"{folder}: generation_labels and generation_classes must be 1-D and of one "
                f"length, got {labels.shape} and {classes.shape}"
            )
        if len(np.unique(labels)) != len(labels) or labels.min() < 0:
            raise TransMRSRError(f"{folder}: generation_labels must be distinct and >= 0")
        if means.ndim != 2 or means.shape[0] != 2 or stds.shape != means.shape:
            raise TransMRSRError(
                f"{folder}: prior_means_t1 and prior_stds_t1 must both be (2, classes), got "
                f"{means.shape} and {stds.shape}"
            )
        if not (np.isfinite(means).all() and np.isfinite(stds).all()):
            raise TransMRSRError(f"{folder}: the T1 priors hold NaN or infinite values")
        own = folder / "generation_classes_t1.npy"
        if own.is_file():
            t1_classes = _integers(np.load(own, allow_pickle=False), own)
            if t1_classes.shape != labels.shape:
                raise TransMRSRError(f"{own}: one class per label expected")
        else:
            unknown = sorted(int(v) for v in labels if int(v) not in T1_PRIOR_COLUMN)
            if unknown:
                raise TransMRSRError(
                    f"{folder}: labels {unknown} have no T1 prior class; add "
                    "generation_classes_t1.npy (one prior column per label)"
                )
            t1_classes = np.array([T1_PRIOR_COLUMN[int(v)] for v in labels])
        if t1_classes.min() < 0 or t1_classes.max() >= means.shape[1]:
            raise TransMRSRError(
                f"{folder}: T1 classes must index the {means.shape[1]} prior columns"
            )
        return cls(labels, classes, t1_classes, means, stds)

    def lookup(self) -> np.ndarray:
        """Label value -> row in :attr:`labels` (``-1`` for values not in the table)."""
        table = np.full(int(self.labels.max()) + 1, -1, np.int64)
        table[self.labels] = np.arange(len(self.labels))
        return table


def _integers(array: np.ndarray, source: Path) -> np.ndarray:
    array = np.asarray(array)
    if array.dtype.kind not in "iuf" or not np.all(np.isfinite(array)):
        raise TransMRSRError(f"{source}: a table of integers expected")
    if np.any(array != np.round(array)):
        raise TransMRSRError(f"{source}: a table of integers expected")
    return array.astype(np.int64)


@dataclass(frozen=True)
class HeadConfig:
    """Ranges of the random choices that make one head (defaults: moderate, SynthSR-like).

    Attributes:
        contrast: ``"t1"`` (T1-like priors) or ``"random"`` (uniform class intensities).
        rotate_degrees: each rotation angle uniform in ``[-r, r]``.
        scale_range: each axis scaled log-uniformly in the range.
        shear: each shear term uniform in ``[-s, s]``.
        translate_voxels: each shift uniform in ``[-t, t]``.
        deform_voxels: largest standard deviation of the smooth deformation (drawn uniformly
            up to it), in voxels; ``deform_grid`` control points per axis.
        mean_range, std_range: uniform ranges of the class means / voxel spreads for random
            contrast (0-255 scale). The background keeps a dark mean (``background_max``), as
            a magnitude MR image has.
        blur_range: Gaussian blur sigma in voxels, drawn uniformly (partial volume).
        bias_std: largest standard deviation of the log bias field (drawn up to it);
            ``bias_grid`` control points per axis.
        gamma_std: standard deviation of the log of the gamma exponent.
        noise_range: Rician noise sigma, a fraction of the head's 99th percentile.
    """

    contrast: str = "t1"
    rotate_degrees: float = 15.0
    scale_range: tuple[float, float] = (0.85, 1.15)
    shear: float = 0.02
    translate_voxels: float = 10.0
    deform_voxels: float = 3.0
    deform_grid: int = 8
    mean_range: tuple[float, float] = (0.0, 255.0)
    std_range: tuple[float, float] = (0.0, 25.0)
    background_max: float = 20.0
    blur_range: tuple[float, float] = (0.5, 1.0)
    bias_std: float = 0.3
    bias_grid: int = 4
    gamma_std: float = 0.2
    noise_range: tuple[float, float] = (0.0, 0.03)

    def __post_init__(self) -> None:
        if self.contrast not in CONTRASTS:
            raise TransMRSRError(
                f"synthetic contrast must be one of {', '.join(CONTRASTS)}, got {self.contrast!r}"
            )
        for name in ("scale_range", "mean_range", "std_range", "blur_range", "noise_range"):
            lo, hi = (float(v) for v in getattr(self, name))
            object.__setattr__(self, name, (lo, hi))
            if not 0.0 <= lo <= hi:
                raise TransMRSRError(f"{name} must satisfy 0 <= lo <= hi, got {lo}-{hi}")
        if self.scale_range[0] <= 0:
            raise TransMRSRError("scale_range must be positive")
        if self.deform_grid < 2 or self.bias_grid < 2:
            raise TransMRSRError("deform_grid and bias_grid must be at least 2")
        for name in ("rotate_degrees", "shear", "translate_voxels", "deform_voxels"):
            if getattr(self, name) < 0:
                raise TransMRSRError(f"{name} must be >= 0")
        if self.bias_std < 0 or self.gamma_std < 0 or self.background_max < 0:
            raise TransMRSRError("bias_std, gamma_std and background_max must be >= 0")


def load_label_map(path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray]:
    """A 3-D label map (integer-valued; stored as any dtype) and its affine.

    Raises :class:`TransMRSRError` for a file that cannot be read, a map that is not 3-D or
    whose values are not integers.
    """
    path = Path(path)
    if not path.is_file():
        raise TransMRSRError(f"{path}: no such label map")
    try:
        image = nib.load(path)
        data = np.asarray(image.dataobj)
    except Exception as exc:  # nibabel raises several types for a bad file
        raise TransMRSRError(f"{path}: cannot read the label map ({exc})") from None
    return check_label_map(data, str(path)), np.asarray(image.affine, np.float64)


def check_label_map(data: np.ndarray, source: str = "label map") -> np.ndarray:
    """``data`` as an int32 3-D label map, or a clear error."""
    data = np.asarray(data)
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise TransMRSRError(f"{source}: a label map must be 3-D, got shape {data.shape}")
    if data.dtype.kind not in "iuf":
        raise TransMRSRError(f"{source}: a label map must hold numbers, got {data.dtype}")
    if data.dtype.kind == "f":
        if not np.isfinite(data).all():
            raise TransMRSRError(f"{source}: the label map holds NaN or infinite values")
        rounded = np.round(data)
        if np.abs(data - rounded).max() > 1e-3:
            raise TransMRSRError(f"{source}: label values must be integers (not an image?)")
        data = rounded
    if data.min() < 0:
        raise TransMRSRError(f"{source}: label values must be >= 0")
    return data.astype(np.int32)


def check_labels(labels: np.ndarray, tables: LabelTables, source: str = "label map") -> None:
    """Refuse label values the tables do not know."""
    present = np.unique(labels)
    known = set(int(v) for v in tables.labels)
    unknown = [int(v) for v in present if int(v) not in known]
    if unknown:
        shown = ", ".join(str(v) for v in unknown[:8])
        raise TransMRSRError(
            f"{source}: labels {shown}{' ...' if len(unknown) > 8 else ''} are not in "
            "generation_labels.npy"
        )


def crop_to_head(labels: np.ndarray, affine: np.ndarray, margin: int = 8):
    """The label map cropped to its non-zero box plus ``margin`` voxels, affine adjusted."""
    nonzero = np.nonzero(labels)
    if not nonzero[0].size:
        raise TransMRSRError("the label map is empty (all zero)")
    lo = [max(0, int(a.min()) - margin) for a in nonzero]
    hi = [min(n, int(a.max()) + 1 + margin) for a, n in zip(nonzero, labels.shape, strict=True)]
    cropped = labels[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
    shifted = affine.copy()
    shifted[:3, 3] = affine[:3, :3] @ np.asarray(lo, np.float64) + affine[:3, 3]
    return np.ascontiguousarray(cropped), shifted


def _upsampling_matrix(n: int, grid: int) -> np.ndarray:
    """``(n, grid)``: cubic-spline upsampling of ``grid`` control points to ``n`` samples."""
    basis = np.eye(grid)
    columns = [
        ndimage.zoom(basis[k], n / grid, order=3, mode="nearest", grid_mode=True)[:n]
        for k in range(grid)
    ]
    return np.stack(columns, axis=1).astype(np.float32)


def _smooth_field(shape: Sequence[int], grid: int, std: float, rng: np.random.Generator):
    """A smooth random field of ``shape``: Gaussian control points upsampled cubically.

    The tensor-product spline is applied one axis at a time as a small matrix product, about
    thirty times faster than zooming the volume.
    """
    field = rng.normal(0.0, std, (grid,) * len(shape)).astype(np.float32)
    for axis, n in enumerate(shape):
        field = np.moveaxis(np.tensordot(_upsampling_matrix(n, grid), field, (1, axis)), 0, axis)
    return np.ascontiguousarray(field, dtype=np.float32)


def _random_affine(config: HeadConfig, rng: np.random.Generator) -> np.ndarray:
    angles = np.deg2rad(rng.uniform(-1.0, 1.0, 3) * config.rotate_degrees)
    rotation = np.eye(3)
    for axis, angle in enumerate(angles):
        a, b = [i for i in range(3) if i != axis]
        turn = np.eye(3)
        turn[a, a] = turn[b, b] = np.cos(angle)
        turn[a, b], turn[b, a] = -np.sin(angle), np.sin(angle)
        rotation = rotation @ turn
    scales = np.exp(rng.uniform(*np.log(config.scale_range), 3))
    shear = np.eye(3)
    shear[np.triu_indices(3, 1)] = rng.uniform(-1.0, 1.0, 3) * config.shear
    return rotation @ shear @ np.diag(scales)


def deform_labels(labels: np.ndarray, config: HeadConfig, rng: np.random.Generator) -> np.ndarray:
    """``labels`` moved by a random affine and smooth deformation (nearest neighbours).

    The output grid is the input's; each output voxel looks up the label at its moved position
    (outside the map: background), so only label values of the map appear.
    """
    shape = labels.shape
    matrix = _random_affine(config, rng)
    shift = rng.uniform(-1.0, 1.0, 3) * config.translate_voxels
    sigma = rng.uniform(0.0, config.deform_voxels)
    centre = (np.asarray(shape, np.float64) - 1.0) / 2.0
    grid = np.indices(shape, dtype=np.float32).reshape(3, -1)
    inverse = np.linalg.inv(matrix).astype(np.float32)
    offset = (centre - inverse @ (centre + shift)).astype(np.float32)
    coords = inverse @ grid + offset[:, None]
    for axis in range(3):
        field = _smooth_field(shape, config.deform_grid, sigma, rng)
        coords[axis] += field.reshape(-1)
    moved = ndimage.map_coordinates(labels, coords, order=0, mode="constant", cval=0)
    return moved.reshape(shape).astype(np.int32)


def class_intensities(
    tables: LabelTables, config: HeadConfig, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation of every label (rows of ``tables.labels``), 0-255 scale.

    Labels of one class share their draw. T1-like: class means and spreads from the T1
    priors (normal, clipped at zero); random: uniform in ``mean_range`` / ``std_range`` with a
    dark background.
    """
    if config.contrast == "t1":
        classes = tables.t1_classes
        means = rng.normal(tables.prior_means[0], tables.prior_means[1])
        stds = rng.normal(tables.prior_stds[0], tables.prior_stds[1])
    else:
        classes = tables.classes
        n = int(classes.max()) + 1
        means = rng.uniform(*config.mean_range, n)
        stds = rng.uniform(*config.std_range, n)
        background = classes[tables.labels == 0]
        if background.size:
            means[background] = rng.uniform(0.0, config.background_max)
    means, stds = np.clip(means, 0.0, None), np.clip(stds, 0.0, None)
    return means[classes], stds[classes]


def synthesize_head(
    labels: np.ndarray,
    tables: LabelTables,
    config: HeadConfig,
    seed: int | Sequence[int],
    *,
    deform: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """One synthetic head from a label map: ``(image, deformed labels)``, both of its shape.

    The image is float32, non-negative, on roughly a 0-255 scale (before the training
    pipeline's own normalisation). ``seed`` (an int or a tuple) fixes every random choice.
    """
    labels = check_label_map(labels)
    check_labels(labels, tables)
    rng = np.random.default_rng(seed)
    moved = deform_labels(labels, config, rng) if deform else labels
    means, stds = class_intensities(tables, config, rng)
    row = tables.lookup()[moved]
    noise = rng.standard_normal(moved.shape, dtype=np.float32)
    image = means.astype(np.float32)[row] + stds.astype(np.float32)[row] * noise
    image = np.clip(image, 0.0, None)
    image = ndimage.gaussian_filter(image, rng.uniform(*config.blur_range), mode="nearest")
    bias = _smooth_field(image.shape, config.bias_grid, rng.uniform(0, config.bias_std), rng)
    image *= np.exp(bias)
    top = float(np.percentile(image[moved > 0], 99)) if (moved > 0).any() else 1.0
    top = max(top, 1e-6)
    gamma = float(np.exp(rng.normal(0.0, config.gamma_std)))
    image = (np.clip(image / top, 0.0, None) ** gamma) * 255.0
    sigma = rng.uniform(*config.noise_range) * 255.0
    if sigma > 0:
        image = add_rician_noise(image, sigma, rng)
    return image.astype(np.float32), moved


def misalign(
    image: np.ndarray, rng: np.random.Generator, *, shift_voxels: float, rotate_degrees: float
) -> np.ndarray:
    """``image`` moved rigidly about its centre by a random rotation (each angle uniform in
    ``[-rotate_degrees, rotate_degrees]``) and shift (each uniform in ``[-shift_voxels,
    shift_voxels]``), trilinear: the residual misregistration of two series of one session."""
    config = HeadConfig(rotate_degrees=rotate_degrees, scale_range=(1.0, 1.0), shear=0.0)
    rotation = _random_affine(config, rng)
    shift = rng.uniform(-1.0, 1.0, 3) * shift_voxels
    centre = (np.asarray(image.shape, np.float64) - 1.0) / 2.0
    inverse = rotation.T
    offset = centre - inverse @ (centre + shift)
    moved = ndimage.affine_transform(image, inverse, offset=offset, order=1, mode="nearest")
    return moved.astype(np.float32)


def synthesize_guided_head(
    labels: np.ndarray,
    tables: LabelTables,
    config: HeadConfig,
    guide: HeadConfig,
    seed: int | Sequence[int],
    *,
    shift_voxels: float = 1.0,
    rotate_degrees: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Two contrasts of one synthetic head: ``(image, guide)``, both of the label map's shape.

    The anatomy is deformed once (``config``'s ranges); each contrast then draws its own
    intensities, blur, bias field, gamma and noise (``config`` and ``guide``), and the guide
    is moved by a small random rigid motion (:func:`misalign`), so that a guided network learns
    from a guide as a registration leaves it: another contrast, its own artefacts, not quite
    aligned.
    """
    labels = check_label_map(labels)
    check_labels(labels, tables)
    key = (seed,) if isinstance(seed, int | np.integer) else tuple(seed)
    moved = deform_labels(labels, config, np.random.default_rng((*key, 0)))
    image, _ = synthesize_head(moved, tables, config, (*key, 1), deform=False)
    other, _ = synthesize_head(moved, tables, guide, (*key, 2), deform=False)
    rng = np.random.default_rng((*key, 3))
    other = misalign(other, rng, shift_voxels=shift_voxels, rotate_degrees=rotate_degrees)
    return image, other


@dataclass(frozen=True)
class LabelMap:
    """A label map file and the subject it belongs to (its file stem)."""

    path: str
    subject: str


def discover_label_maps(folder: str | os.PathLike[str]) -> list[LabelMap]:
    """The label maps (``*.nii``, ``*.nii.gz``, ``*.mgz``) in ``folder``, sorted."""
    folder = Path(folder)
    if not folder.is_dir():
        raise TransMRSRError(f"{folder}: no such label folder")
    maps = []
    for path in sorted(folder.iterdir()):
        name = path.name.lower()
        if path.is_file() and name.endswith((".nii", ".nii.gz", ".mgz")):
            stem = path.name.split(".")[0]
            maps.append(LabelMap(str(path), stem))
    if not maps:
        raise TransMRSRError(f"{folder}: no label maps (.nii, .nii.gz, .mgz)")
    return maps


def split_label_maps(maps: Sequence[LabelMap], val: int, seed: int):
    """``(train, val)`` label maps: ``val`` anatomies, chosen by ``seed``, never train."""
    if val < 0 or val >= len(maps):
        raise TransMRSRError(
            f"{len(maps)} label maps cannot keep {val} for validation and still train"
        )
    order = np.random.default_rng((seed, 7)).permutation(len(maps))
    held = {maps[i].subject for i in order[:val]}
    return [m for m in maps if m.subject not in held], [m for m in maps if m.subject in held]


def generate_pool(
    maps: Sequence[LabelMap],
    tables: LabelTables,
    config: HeadConfig,
    count: int,
    seed: int,
    *,
    cache: Path | None = None,
    guide: HeadConfig | None = None,
    misalignment: tuple[float, float] = (1.0, 1.0),
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """``count`` synthetic heads (images and affines), cycling over ``maps``.

    Head ``i`` is made from map ``i % len(maps)`` with seed ``(seed, i)``, so the pool is a
    pure function of its arguments. With ``cache`` (a folder), heads already made there are
    read back instead of made again (a resumed run starts at once); a head is written
    atomically, so a killed run leaves no half-written file. With ``guide``, each image is a
    ``[2, ...]`` stack: the head and its guide (:func:`synthesize_guided_head`, moved by up to
    ``misalignment`` = (voxels, degrees)).
    """
    if count < 1:
        raise TransMRSRError("the synthetic pool needs at least one head")
    images: dict[int, np.ndarray] = {}
    affines: dict[int, np.ndarray] = {}
    kind = config.contrast if guide is None else f"{config.contrast}-guide-{guide.contrast}"
    for m, entry in enumerate(maps):
        heads = range(m, count, len(maps))
        if not heads:
            break
        labels, affine = crop_to_head(*load_label_map(entry.path))
        for i in heads:
            name = f"head-{i:04d}-{entry.subject}-{kind}.npy"
            target = cache / name if cache is not None else None
            if target is not None and target.is_file():
                image = np.load(target)
            else:
                if guide is None:
                    image, _ = synthesize_head(labels, tables, config, (seed, i))
                else:
                    shift, angle = misalignment
                    image = np.stack(
                        synthesize_guided_head(
                            labels,
                            tables,
                            config,
                            guide,
                            (seed, i),
                            shift_voxels=shift,
                            rotate_degrees=angle,
                        )
                    )
                if target is not None:
                    image = image.astype(np.float16)
                    cache.mkdir(parents=True, exist_ok=True)
                    tmp = target.with_name(f".{target.name}.tmp")
                    with open(tmp, "wb") as handle:
                        np.save(handle, image)
                    os.replace(tmp, target)
            images[i] = np.asarray(image, np.float32)
            affines[i] = affine
            log.info("synthetic head %d/%d from %s", i + 1, count, entry.subject)
    return [images[i] for i in range(count)], [affines[i] for i in range(count)]


def normalise_head(image: np.ndarray) -> np.ndarray:
    """A pool's head in the network's range; a guided head's two contrasts each by its own
    robust range, as restoration normalises a scan and its guide."""
    if image.ndim == 4:
        return np.stack([IntensityScaler.fit(c)(c) for c in image])
    return IntensityScaler.fit(image)(image)


@dataclass(frozen=True)
class SyntheticConfig:
    """Synthetic heads mixed into a training run (saved with the run's config).

    Attributes:
        labels: folder of label maps and tables (SynthSeg's layout, e.g.
            ``../shared/data/labels``).
        ratio: fraction of training samples taken from synthetic heads.
        count: heads in the run's pool (made once, cached in the run folder).
        val_maps: label maps (anatomies) kept out of the pool, chosen by the run's seed.
        val_heads: heads made from those kept-out anatomies and added to the validation set.
            The real validation subjects are often skull-stripped; a checkpoint chosen on them
            alone can lose on routine heads with skull, scalp and neck while the validation
            score rises (measured, docs/experiments.md). Each head weighs as one subject.
        head: how each head is made (contrast, deformation, artefacts).
        guide: for a guided network, how each head's guide is made (its contrast and
            artefacts; the anatomy is the head's): heads are then pairs of two contrasts.
        guide_shift_voxels, guide_rotate_degrees: the guide's largest residual
            misregistration (each shift and angle drawn uniformly up to it).
    """

    labels: str
    ratio: float = 0.3
    count: int = 40
    val_maps: int = 2
    val_heads: int = 0
    head: HeadConfig = field(default_factory=HeadConfig)
    guide: HeadConfig | None = None
    guide_shift_voxels: float = 1.0
    guide_rotate_degrees: float = 1.0

    def __post_init__(self) -> None:
        for part in ("head", "guide"):
            value = getattr(self, part)
            if isinstance(value, dict):
                value = dict(value)
                for name in ("scale_range", "mean_range", "std_range", "blur_range", "noise_range"):
                    if name in value:
                        value[name] = tuple(value[name])
                object.__setattr__(self, part, HeadConfig(**value))
        if self.guide_shift_voxels < 0 or self.guide_rotate_degrees < 0:
            raise TransMRSRError("the guide's misregistration must be 0 or more")
        object.__setattr__(self, "ratio", float(self.ratio))
        if not 0.0 < self.ratio <= 1.0:
            raise TransMRSRError(f"synthetic ratio must be in (0, 1], got {self.ratio}")
        if self.count < 1 or self.val_maps < 0 or self.val_heads < 0:
            raise TransMRSRError("synthetic count must be >= 1, val_maps and val_heads >= 0")
        if self.val_heads and not self.val_maps:
            raise TransMRSRError("synthetic validation heads need kept-out anatomies (val_maps)")


def _guide_options(config: SyntheticConfig) -> dict[str, Any]:
    """:func:`generate_pool`'s guide options for a run's synthetic config."""
    return {
        "guide": config.guide,
        "misalignment": (config.guide_shift_voxels, config.guide_rotate_degrees),
    }


def build_pool(
    config: SyntheticConfig, seed: int, *, cache: Path | None = None
) -> tuple[list[np.ndarray], list[np.ndarray], dict[str, list[str]]]:
    """The run's synthetic heads (raw intensities), their affines and the label-map split."""
    tables = LabelTables.load(config.labels)
    maps = discover_label_maps(config.labels)
    train, val = split_label_maps(maps, config.val_maps, seed)
    images, affines = generate_pool(
        train, tables, config.head, config.count, seed, cache=cache, **_guide_options(config)
    )
    split = {"train": [m.subject for m in train], "val": [m.subject for m in val]}
    return images, affines, split


#: Added to the run's seed for the validation heads, so that their draws are not those of the
#: training pool's heads of the same index.
VALIDATION_SEED_OFFSET = 100_003


def validation_heads(
    config: SyntheticConfig, seed: int, *, cache: Path | None = None
) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """``(name, image, affine)`` of ``config.val_heads`` heads made from the anatomies the pool
    keeps out, normalised like the run's real volumes (none when ``val_heads`` is 0).

    They are a pure function of the config and seed, as the pool is, and cached in ``cache``.
    """
    if config.val_heads == 0:
        return []
    tables = LabelTables.load(config.labels)
    _, val = split_label_maps(discover_label_maps(config.labels), config.val_maps, seed)
    images, affines = generate_pool(
        val,
        tables,
        config.head,
        config.val_heads,
        seed + VALIDATION_SEED_OFFSET,
        cache=cache,
        **_guide_options(config),
    )
    names = [f"synthetic {val[i % len(val)].subject} #{i}" for i in range(config.val_heads)]
    return [
        (name, normalise_head(image), affine)
        for name, image, affine in zip(names, images, affines, strict=True)
    ]


class MixedDataset(Dataset):
    """Items of ``primary``, each replaced by a random item of ``secondary`` with probability
    ``ratio``.

    The choice for item ``i`` comes from a generator seeded by ``(seed, epoch, i)``, so the mix,
    like the pairs, is a pure function of the index and a resumed run sees the same batches.
    Its length is the primary's: an epoch of ``samples_per_epoch`` draws keeps its meaning.
    """

    def __init__(self, primary: Dataset, secondary: Dataset, ratio: float, seed: int) -> None:
        if not 0.0 <= ratio <= 1.0:
            raise TransMRSRError(f"mixing ratio must be in [0, 1], got {ratio}")
        self.primary, self.secondary = primary, secondary
        self.ratio, self.seed, self.epoch = float(ratio), int(seed), 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        self.primary.set_epoch(epoch)
        self.secondary.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.primary)

    def source(self, i: int) -> tuple[str, int]:
        """``("primary", i)`` or ``("secondary", j)``: where item ``i`` comes from."""
        rng = np.random.default_rng((self.seed, self.epoch, i, 5))
        if rng.random() < self.ratio:
            return "secondary", int(rng.integers(len(self.secondary)))
        return "primary", i

    def __getitem__(self, i: int):
        which, j = self.source(i)
        return (self.secondary if which == "secondary" else self.primary)[j]


def training_heads(
    config: SyntheticConfig, seed: int, out: Path, ctx: DistContext
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """A run's synthetic heads, normalised like its real volumes, and their affines.

    The pool is cached in ``out/synthetic``: rank 0 makes it first while the other ranks wait,
    then they read it; ``out/synthetic.json`` records which anatomies made it and which were
    kept out.
    """
    cache = out / "synthetic"
    if ctx.is_main:
        images, affines, split = build_pool(config, seed, cache=cache)
        with atomic_path(out / "synthetic.json", suffix=".json") as tmp, open(tmp, "w") as handle:
            json.dump({"labels": config.labels, **split}, handle, indent=2)
    barrier(ctx)
    if not ctx.is_main:
        images, affines, _ = build_pool(config, seed, cache=cache)
    log.info(
        "%d synthetic heads (%s contrast), %.0f%% of the samples",
        len(images),
        config.head.contrast,
        100 * config.ratio,
    )
    return [normalise_head(image) for image in images], affines
