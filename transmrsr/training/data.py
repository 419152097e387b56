"""Training data: find volumes, split by subject, cut planes, make LR/HR pairs on the fly.

The flow is the inference flow run backwards (SPEC section 8): read HR -> normalise -> cut into
planes that contain the chosen thick axis -> degrade each plane along that axis with the SMORE
model -> interpolate back -> (input, target) pair (:func:`transmrsr.pairs.make_pair`, shared
with the adaptation to a scan at inference). Pairs are made on the fly, so one model can
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
from torch.utils.data import Dataset

from transmrsr.errors import TransMRSRError
from transmrsr.geometry import ANATOMICAL_AXES
from transmrsr.intensity import IntensityScaler
from transmrsr.io import READABLE_SUFFIXES, Volume, atomic_path, load_volume
from transmrsr.pairs import MIN_SIGNAL_FRACTION, SIGNAL_LEVEL, PairConfig, make_pair

log = logging.getLogger(__name__)

#: IXI file names: ``IXI002-Guys-0828-T1.nii.gz`` -> subject IXI002, site Guys, contrast T1.
IXI_NAME = re.compile(r"^(IXI\d{3})-([A-Za-z]+)-(\d+)-(T1|T2|PD|MRA|DTI)", re.IGNORECASE)
#: Contrast words recognised in other file names (BIDS suffixes and common spellings).
CONTRAST_WORDS = {"t1": "T1", "t1w": "T1", "t2": "T2", "t2w": "T2", "flair": "FLAIR", "pd": "PD"}
#: BIDS anatomical suffixes read as training contrasts; other BIDS files (bold, dwi, masks,
#: segmentations, ...) are not training volumes and are skipped.
BIDS_SUFFIXES = {"T1w": "T1", "T2w": "T2", "FLAIR": "FLAIR", "PDw": "PD", "T2starw": "T2STAR"}
#: A BIDS file name: ``sub-<label>[_<key>-<value>...]_<suffix>``.
BIDS_NAME = re.compile(r"^sub-[A-Za-z0-9]+(?:_[A-Za-z0-9]+-[A-Za-z0-9]+)*_([A-Za-z0-9]+)$")
#: Folders of a BIDS dataset that hold no raw training volumes.
BIDS_SKIPPED_FOLDERS = {"derivatives", "sourcedata", "code", "stimuli"}


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
        found = BIDS_SUFFIXES.get(bids_suffix(stem) or "", "") or next(
            (CONTRAST_WORDS[w] for w in reversed(words) if w in CONTRAST_WORDS), ""
        )
    chosen = contrast or found
    if not chosen:
        raise TransMRSRError(f"{name}: cannot tell the contrast from the name; give --contrast")
    return subject, chosen.upper()


def bids_suffix(name: str) -> str | None:
    """The suffix of a BIDS file name (``T1w`` of ``sub-01_ses-2_T1w.nii.gz``), else None."""
    match = BIDS_NAME.match(_strip_suffix(Path(name).name))
    return match.group(1) if match else None


def _in_skipped_folder(file: Path, root: Path) -> bool:
    parts = file.relative_to(root).parts[:-1]
    return any(p in BIDS_SKIPPED_FOLDERS or p.startswith(".") for p in parts)


def discover_volumes(
    sources: Sequence[str | os.PathLike[str]], *, contrast: str | None = None
) -> list[VolumeRecord]:
    """All readable volumes under the given files, folders and IXI tar archives, sorted.

    Folders are searched recursively. In a BIDS dataset only anatomical images count
    (:data:`BIDS_SUFFIXES`: functional, diffusion and derived files are skipped, and so are
    ``derivatives``, ``sourcedata``, ``code`` and hidden folders below the given one);
    sessions of one subject stay one subject, so the split keeps them together.
    """
    records: list[VolumeRecord] = []
    skipped: list[str] = []
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
                if path.is_dir() and _in_skipped_folder(file, path):
                    continue
                suffix = bids_suffix(file.name)
                if suffix is not None and suffix not in BIDS_SUFFIXES:
                    skipped.append(file.name)
                    continue
                subject, found = parse_name(file.name, contrast)
                records.append(VolumeRecord(str(file), subject, found))
    if skipped:
        log.info(
            "skipped %d BIDS files that are not anatomical images (e.g. %s)",
            len(skipped),
            skipped[0],
        )
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

    ``guides``: for a guided network, another contrast of each volume's head on its grid;
    each item's input then holds the guide's same plane as a second channel, ``lr`` is
    ``[2, patch, patch]`` (:func:`~transmrsr.pairs.make_pair`).
    """

    def __init__(
        self,
        volumes: Sequence[np.ndarray],
        affines: Sequence[np.ndarray],
        config: PairConfig,
        *,
        seed: int = 0,
        guides: Sequence[np.ndarray] | None = None,
    ) -> None:
        if not volumes:
            raise TransMRSRError("no volumes to make training pairs from")
        if guides is not None and (
            len(guides) != len(volumes)
            or any(g.shape != v.shape for g, v in zip(guides, volumes, strict=True))
        ):
            raise TransMRSRError("every training volume needs a guide of its own shape")
        self.config = config
        self.seed = seed
        self.epoch = 0
        self.guides = (
            None if guides is None else [np.ascontiguousarray(g, np.float32) for g in guides]
        )
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

    def plane(self, i: int, *, guide: bool = False) -> np.ndarray:
        """Item ``i``'s HR plane (or its guide's), the thick axis as rows."""
        p = self.planes[i]
        source = self.guides if guide else self.volumes
        if source is None:
            raise TransMRSRError("this dataset has no guides")
        plane = np.take(source[p.volume], p.index, axis=p.slice_axis)
        # The plane's axes keep the volume's order; rows must be the thick axis.
        return plane if p.thick_axis < 3 - p.thick_axis - p.slice_axis else plane.T

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, float]:
        guide = None if self.guides is None else self.plane(i, guide=True)
        return make_pair(self.plane(i), self.config, (self.seed, self.epoch, i), guide)


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
