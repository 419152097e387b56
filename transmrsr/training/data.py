"""Training data: find volumes, split by subject, cut planes, make LR/HR pairs on the fly.

The flow is the inference flow run backwards (SPEC section 8): read HR -> normalise -> cut into
planes that contain the chosen thick axis -> degrade each plane along that axis with the SMORE
model -> interpolate back -> (input, target) pair. Pairs are made on the fly, so one model can
learn a whole range of factors, and every random choice comes from a generator seeded by
(seed, epoch, index), so a resumed run sees exactly the batches the interrupted one would have.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import re
import tarfile
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from scipy import ndimage
from torch.utils.data import Dataset

from transmrsr.degradation import MAX_THICKNESS, MIN_THICKNESS, simulate_interpolated_lr
from transmrsr.errors import TransMRSRError
from transmrsr.geometry import ANATOMICAL_AXES
from transmrsr.intensity import IntensityScaler
from transmrsr.io import READABLE_SUFFIXES, Volume, atomic_path, load_volume

log = logging.getLogger(__name__)

#: IXI file names: ``IXI002-Guys-0828-T1.nii.gz`` -> subject IXI002, site Guys, contrast T1.
IXI_NAME = re.compile(r"^(IXI\d{3})-([A-Za-z]+)-(\d+)-(T1|T2|PD|MRA|DTI)", re.IGNORECASE)
#: Contrast words recognised in other file names (BIDS suffixes and common spellings).
CONTRAST_WORDS = {"t1": "T1", "t1w": "T1", "t2": "T2", "t2w": "T2", "flair": "FLAIR", "pd": "PD"}
#: A reference voxel above this fraction of the normalised range counts as signal; a plane
#: with less than MIN_SIGNAL_FRACTION of such voxels is "empty" and dropped.
SIGNAL_LEVEL = 0.05
MIN_SIGNAL_FRACTION = 0.02


@dataclass(frozen=True)
class VolumeRecord:
    """One training volume: where it is, whose it is and what contrast."""

    path: str
    subject: str
    contrast: str
    member: str | None = None  # file name inside a tar archive, when it comes from one

    @property
    def name(self) -> str:
        return self.member or Path(self.path).name


def _strip_suffix(name: str) -> str:
    for suffix in sorted(READABLE_SUFFIXES, key=len, reverse=True):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def parse_name(name: str, contrast: str | None = None) -> tuple[str, str]:
    """Subject and contrast from a file name (IXI layout, BIDS, or a plain name).

    IXI names give both; BIDS names give the subject from ``sub-XX`` and the contrast from the
    suffix (``_T1w``); otherwise the subject is the file stem and the contrast comes from a word
    in the name or the ``contrast`` argument (which also overrides the name).
    """
    stem = _strip_suffix(Path(name).name)
    match = IXI_NAME.match(stem)
    if match:
        subject, found = match.group(1).upper(), match.group(4).upper()
    else:
        bids = re.search(r"(sub-[A-Za-z0-9]+)", stem)
        subject = bids.group(1) if bids else stem
        words = re.split(r"[^A-Za-z0-9]+", stem.lower())
        found = next((CONTRAST_WORDS[w] for w in reversed(words) if w in CONTRAST_WORDS), "")
    chosen = contrast or found
    if not chosen:
        raise TransMRSRError(f"{name}: cannot tell the contrast from the name; give --contrast")
    return subject, chosen.upper()


def discover_volumes(
    sources: Sequence[str | os.PathLike[str]], *, contrast: str | None = None
) -> list[VolumeRecord]:
    """All readable volumes under the given files, folders and IXI tar archives, sorted."""
    records: list[VolumeRecord] = []
    for source in sources:
        path = Path(source)
        if not path.exists():
            raise TransMRSRError(f"{path}: no such file or folder")
        if path.is_dir():
            files: Iterable[Path] = sorted(p for p in path.rglob("*") if p.is_file())
        else:
            files = [path]
        for file in files:
            lower = file.name.lower()
            if lower.endswith((".tar", ".tar.gz", ".tgz")):
                with tarfile.open(file) as archive:
                    for member in archive.getmembers():
                        base = Path(member.name).name
                        if member.isfile() and base.lower().endswith(READABLE_SUFFIXES):
                            subject, found = parse_name(base, contrast)
                            records.append(VolumeRecord(str(file), subject, found, member.name))
            elif lower.endswith(READABLE_SUFFIXES):
                subject, found = parse_name(file.name, contrast)
                records.append(VolumeRecord(str(file), subject, found))
    if not records:
        raise TransMRSRError(f"no NIfTI/MGZ volumes found in {', '.join(map(str, sources))}")
    return sorted(records, key=lambda r: (r.subject, r.contrast, r.name))


def read_record(record: VolumeRecord) -> Volume:
    """Load a record's volume, from the file system or from inside its tar archive."""
    if record.member is None:
        return load_volume(record.path)
    with tarfile.open(record.path) as archive:
        handle = archive.extractfile(record.member)
        if handle is None:
            raise TransMRSRError(f"{record.path}: cannot read {record.member}")
        raw = handle.read()
    if record.member.lower().endswith(".gz"):
        raw = gzip.decompress(raw)
    try:
        image = nib.Nifti1Image.from_bytes(raw)
    except Exception as exc:  # nibabel raises several types for a bad header
        raise TransMRSRError(f"{record.path}:{record.member}: cannot read ({exc})") from None
    data = np.asarray(image.get_fdata(dtype=np.float32))
    return Volume(data=data, affine=np.asarray(image.affine, np.float64), header=image.header)


@dataclass(frozen=True)
class Split:
    """Subjects of each split; a subject is in exactly one split."""

    train: tuple[str, ...]
    val: tuple[str, ...]
    test: tuple[str, ...]
    seed: int

    def of(self, name: str) -> tuple[str, ...]:
        return getattr(self, name)

    def save(self, path: str | os.PathLike[str]) -> None:
        with atomic_path(path, suffix=".json") as tmp, open(tmp, "w") as handle:
            json.dump(asdict(self), handle, indent=2)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Split:
        with open(path) as handle:
            raw = json.load(handle)
        return cls(tuple(raw["train"]), tuple(raw["val"]), tuple(raw["test"]), int(raw["seed"]))


def split_subjects(
    records: Sequence[VolumeRecord],
    *,
    val: int | float = 0.1,
    test: int | float = 0.1,
    seed: int = 0,
) -> Split:
    """Split by subject, never by slice, deterministically for a seed.

    ``val`` and ``test`` are subject counts (int) or fractions (float). With a single subject
    everything goes to training; otherwise at least one subject is kept for validation when
    ``val`` asks for any.
    """
    subjects = sorted({r.subject for r in records})
    order = np.random.default_rng(seed).permutation(len(subjects))
    shuffled = [subjects[i] for i in order]

    def count(value: int | float) -> int:
        n = int(value) if isinstance(value, int) else round(value * len(subjects))
        return max(0, min(n, len(subjects) - 1))

    n_test = count(test)
    n_val = count(val)
    if val and len(subjects) > 1:
        n_val = max(1, n_val)
    if n_test + n_val >= len(subjects):
        raise TransMRSRError(
            f"{len(subjects)} subjects cannot give {n_val} validation and {n_test} test subjects "
            "and still leave one for training"
        )
    return Split(
        train=tuple(sorted(shuffled[n_val + n_test :])),
        val=tuple(sorted(shuffled[:n_val])),
        test=tuple(sorted(shuffled[n_val : n_val + n_test])),
        seed=seed,
    )


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

    def __post_init__(self) -> None:
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


@dataclass(frozen=True)
class _Plane:
    volume: int
    thick_axis: int
    slice_axis: int
    index: int


def thick_array_axis(affine: np.ndarray, thick_axis: str) -> int:
    codes = nib.aff2axcodes(affine)
    letters = ANATOMICAL_AXES[thick_axis.upper()]
    return next(i for i, c in enumerate(codes) if c in letters)


class PairDataset(Dataset):
    """LR/HR plane pairs made on the fly from normalised HR volumes.

    Planes contain the thick axis (both such orientations), empty planes are dropped, each
    plane is centre-padded or randomly cropped to ``patch_size`` and arranged with the thick
    axis as rows; the LR input is the plane degraded along its rows and interpolated back.
    Items are ``(lr, hr, factor)`` with tensors of shape [1, patch, patch].
    """

    def __init__(
        self,
        volumes: Sequence[np.ndarray],
        affines: Sequence[np.ndarray],
        config: PairConfig,
        *,
        seed: int = 0,
    ) -> None:
        if not volumes:
            raise TransMRSRError("no volumes to make training pairs from")
        self.config = config
        self.seed = seed
        self.epoch = 0
        self.volumes: list[np.ndarray] = []
        self.planes: list[_Plane] = []
        for v, (data, affine) in enumerate(zip(volumes, affines, strict=True)):
            volume = np.ascontiguousarray(data, dtype=np.float32)
            self.volumes.append(volume)
            above = volume > SIGNAL_LEVEL
            thick_axes = (
                (0, 1, 2)
                if config.all_thick_axes
                else (thick_array_axis(affine, config.thick_axis),)
            )
            for thick in thick_axes:
                for slice_axis in (a for a in (0, 1, 2) if a != thick):
                    signal = above.mean(axis=tuple(a for a in (0, 1, 2) if a != slice_axis))
                    for index in np.flatnonzero(signal >= MIN_SIGNAL_FRACTION):
                        self.planes.append(_Plane(v, thick, slice_axis, int(index)))
        if not self.planes:
            raise TransMRSRError("every plane of the training volumes is empty")

    @classmethod
    def from_records(
        cls, records: Sequence[VolumeRecord], config: PairConfig, *, seed: int = 0
    ) -> PairDataset:
        volumes, affines = load_normalised(records)
        return cls(volumes, affines, config, seed=seed)

    def set_epoch(self, epoch: int) -> None:
        """Reseed the per-item randomness (factor, crop, augmentation) for an epoch."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.planes)

    def plane(self, i: int) -> np.ndarray:
        p = self.planes[i]
        plane = np.take(self.volumes[p.volume], p.index, axis=p.slice_axis)
        # The plane's axes keep the volume's order; rows must be the thick axis.
        return plane if p.thick_axis < 3 - p.thick_axis - p.slice_axis else plane.T

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, float]:
        return make_pair(self.plane(i), self.config, (self.seed, self.epoch, i))


def make_pair(
    plane: np.ndarray, config: PairConfig, key: tuple[int, ...]
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """One ``(lr, hr, factor)`` pair from a 2-D HR ``plane`` whose rows are to be made thick.

    The plane is centre-padded to ``config.patch_size``, warped, scaled and noised as the
    config says, degraded along its rows with a factor drawn in the range, then the same random
    crop of input and target is taken and flipped. Every random choice comes from generators
    seeded by ``key``, so a pair is a pure function of (plane, config, key). Tensors are
    ``[1, patch, patch]``.
    """
    rng = np.random.default_rng(key)
    size = config.patch_size
    extra = [max(0, size - n) for n in plane.shape]
    full = np.pad(plane, [(e // 2, e - e // 2) for e in extra])
    lo, hi = config.factor_range
    factor = float(lo if hi <= lo else rng.uniform(lo, hi))
    if config.warps:
        # Its own stream, as the gain's: the rest of the pair is that of the unwarped one.
        warp_rng = np.random.default_rng((*key, 3))
        angle = warp_rng.uniform(-1.0, 1.0) * config.rotate_degrees
        zoom = float(np.exp(warp_rng.uniform(*np.log(config.zoom_range))))
        full = warp_plane(full, angle, zoom)
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
    # Degrade the whole plane, then crop both: no crop border enters the slice profile.
    full_lr = simulate_interpolated_lr(full, 0, factor, method=config.interpolation, fwhm=fwhm)
    r0 = int(rng.integers(0, full.shape[0] - size + 1))
    c0 = int(rng.integers(0, full.shape[1] - size + 1))
    hr = full[r0 : r0 + size, c0 : c0 + size]
    lr = full_lr[r0 : r0 + size, c0 : c0 + size]
    if config.augment:
        if rng.random() < 0.5:
            hr, lr = hr[::-1], lr[::-1]
        if rng.random() < 0.5:
            hr, lr = hr[:, ::-1], lr[:, ::-1]
        if rng.random() < 0.5 and config.transpose:
            hr, lr = hr.T, lr.T
    as_tensor = lambda a: torch.from_numpy(np.ascontiguousarray(a, np.float32))[None]  # noqa: E731
    return as_tensor(lr), as_tensor(hr), factor


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


def load_normalised(records: Sequence[VolumeRecord]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Read volumes and scale each to the network range with :class:`IntensityScaler`."""
    volumes, affines = [], []
    for record in records:
        volume = read_record(record)
        volumes.append(IntensityScaler.fit(volume.data)(volume.data))
        affines.append(volume.affine)
    return volumes, affines


class SliceDataset(Dataset):
    """HR slices from all three planes, for the stage-1 GAN (SPEC section 4).

    Empty slices are dropped (same rule as :class:`PairDataset`); each slice is centre-padded
    to ``size`` and randomly cropped when larger, and flipped/transposed at random. Items are
    tensors ``[1, size, size]``; the randomness of item ``i`` is seeded by (seed, epoch, i).
    """

    def __init__(
        self,
        volumes: Sequence[np.ndarray],
        size: int,
        *,
        seed: int = 0,
        augment: bool = True,
    ) -> None:
        if not volumes:
            raise TransMRSRError("no volumes to take slices from")
        self.size = int(size)
        self.seed = seed
        self.augment = augment
        self.epoch = 0
        self.volumes = [np.ascontiguousarray(v, dtype=np.float32) for v in volumes]
        self.slices: list[tuple[int, int, int]] = []
        for v, data in enumerate(self.volumes):
            above = data > SIGNAL_LEVEL
            for axis in range(3):
                signal = above.mean(axis=tuple(a for a in range(3) if a != axis))
                for index in np.flatnonzero(signal >= MIN_SIGNAL_FRACTION):
                    self.slices.append((v, axis, int(index)))
        if not self.slices:
            raise TransMRSRError("every slice of the training volumes is empty")

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.slices)

    def __getitem__(self, i: int) -> torch.Tensor:
        rng = np.random.default_rng((self.seed, self.epoch, i))
        v, axis, index = self.slices[i]
        plane = np.take(self.volumes[v], index, axis=axis)
        extra = [max(0, self.size - n) for n in plane.shape]
        full = np.pad(plane, [(e // 2, e - e // 2) for e in extra])
        r0 = int(rng.integers(0, full.shape[0] - self.size + 1))
        c0 = int(rng.integers(0, full.shape[1] - self.size + 1))
        img = full[r0 : r0 + self.size, c0 : c0 + self.size]
        if self.augment:
            if rng.random() < 0.5:
                img = img[::-1]
            if rng.random() < 0.5:
                img = img[:, ::-1]
            if rng.random() < 0.5:
                img = img.T
        return torch.from_numpy(np.ascontiguousarray(img, np.float32))[None]
