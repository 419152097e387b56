"""DICOM series in: find the series in a folder, refuse what cannot be restored, and stack the
slices into a :class:`~transmrsr.io.Volume` with the acquired slice thickness from the tags.

Read with pydicom, with the geometry computed here from the standard's image plane tags
(PS3.3 C.7.6.2: ImagePositionPatient, ImageOrientationPatient, PixelSpacing), rather than by
running dcm2niix or through nibabel's DICOM readers (which nibabel itself calls experimental
and meant for Siemens time series). Every refusal below needs the tags anyway: dcm2niix
converts localizers, 4-D series and series with missing slices with a warning, where a restore
must stop. docs/clinical.md records the comparison.

Array axes of the volume: 0 along the rows of a slice (increasing column index), 1 down its
columns (increasing row index), 2 across the slices, in the order of their InstanceNumber (the
scanner's order; by position where the numbers say nothing). A volume made from a NIfTI file
slice by slice therefore reads back as that file's array.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from transmrsr.errors import TransMRSRError
from transmrsr.volume import Volume, volume_from_array

log = logging.getLogger(__name__)

#: File name endings read as DICOM even without the 128-byte preamble and ``DICM`` marker.
DICOM_SUFFIXES: tuple[str, ...] = (".dcm", ".dicom", ".ima")
#: Words in SeriesDescription/ProtocolName that mark a localizer (planning) series.
LOCALIZER_WORDS = re.compile(
    r"locali[sz]er|scout|survey|\bloc\b|3.?plane|tri.?pilot|aahead_scout|planning|pilot",
    re.IGNORECASE,
)
#: SOP classes of files that hold no image (DICOMDIR, presentation states, reports...):
#: a series export often carries them, and they are not "unreadable files".
_MEDIA_DIRECTORY = "1.2.840.10008.1.3.10"
#: Two slice positions closer than this (mm) are the same position (4-D series).
POSITION_TOLERANCE = 0.01
#: Relative tolerance on slice spacing and orientation: a series whose positions vary more is
#: missing slices (or is several acquisitions), and restoring it would misplace anatomy.
SPACING_TOLERANCE = 0.01
#: A SliceThickness within this fraction of the spacing is no gap (rounding in the tags).
THICKNESS_TOLERANCE = 0.01


@dataclass
class DicomSeries:
    """The files of one series (one SeriesInstanceUID), with their headers (no pixel data).

    Attributes:
        uid: SeriesInstanceUID.
        files: the files, sorted by name.
        headers: their datasets, read without pixel data, in the order of ``files``.
        folder: the folder that was searched (the series may lie in a folder under it).
    """

    uid: str
    files: list[Path]
    headers: list[Dataset]
    folder: Path

    @property
    def first(self) -> Dataset:
        return self.headers[0]

    @property
    def number(self) -> int | None:
        value = self.first.get("SeriesNumber")
        try:
            return None if value in (None, "") else int(value)
        except (TypeError, ValueError):
            return None

    @property
    def description(self) -> str:
        return str(self.first.get("SeriesDescription", "") or self.first.get("ProtocolName", ""))

    @property
    def modality(self) -> str:
        return str(self.first.get("Modality", "") or "")

    @property
    def location(self) -> Path:
        """The folder that holds its files (their common parent)."""
        parents = {path.parent for path in self.files}
        return parents.pop() if len(parents) == 1 else Path(os.path.commonpath(self.files))

    @property
    def label(self) -> str:
        """How messages name the series: its folder, number and description."""
        parts = [str(self.location)]
        if self.number is not None:
            parts.append(f"series {self.number}")
        if self.description:
            parts.append(f"'{self.description}'")
        return " ".join(parts)

    @property
    def name(self) -> str:
        """A file name stem for its output, from SeriesDescription and SeriesNumber:
        ``T1_AX_5mm_s003``; the UID's end where the series has neither."""
        words = re.sub(r"[^A-Za-z0-9]+", "_", self.description).strip("_")
        number = f"s{self.number:03d}" if self.number is not None else ""
        stem = "_".join(p for p in (words, number) if p)
        return stem or f"series_{self.uid.rsplit('.', 1)[-1]}"


def is_dicom_file(path: Path) -> bool:
    """A DICOM file by its name ending, or by the ``DICM`` marker after the 128-byte preamble
    (what most files have, whatever their name: PACS exports often have none)."""
    if path.name.lower().endswith(DICOM_SUFFIXES):
        return True
    try:
        with open(path, "rb") as handle:
            head = handle.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:] == b"DICM"


def dicom_files(folder: Path) -> list[Path]:
    """The DICOM files under ``folder`` (recursively; hidden files and folders skipped)."""
    found = []
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder).parts
        if any(part.startswith(".") for part in relative) or not path.is_file():
            continue
        if is_dicom_file(path):
            found.append(path)
    return found


def _read_header(path: Path) -> Dataset | None:
    """The dataset of one file without its pixel data; ``None`` for a file that holds no image
    (a DICOMDIR). Anything pydicom cannot parse is refused: a truncated or foreign file in a
    series folder means the series may be incomplete."""
    try:
        dataset = pydicom.dcmread(path, stop_before_pixels=True, force=True)
    except (InvalidDicomError, OSError, EOFError, ValueError, KeyError, TypeError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise TransMRSRError(f"{path}: not readable as DICOM ({reason})") from None
    sop_class = str(
        dataset.get("SOPClassUID", "") or dataset.file_meta.get("MediaStorageSOPClassUID", "")
    )
    if sop_class == _MEDIA_DIRECTORY:
        return None
    if "SeriesInstanceUID" not in dataset:
        raise TransMRSRError(f"{path}: not readable as DICOM (no SeriesInstanceUID)")
    return dataset


def find_series(folder: str | Path) -> list[DicomSeries]:
    """Every series under ``folder``, by SeriesNumber, then description and UID.

    Raises:
        TransMRSRError: for a file that is not readable as DICOM.
    """
    folder = Path(folder)
    groups: dict[str, DicomSeries] = {}
    for path in dicom_files(folder):
        header = _read_header(path)
        if header is None:
            continue
        uid = str(header.SeriesInstanceUID)
        series = groups.setdefault(uid, DicomSeries(uid, [], [], folder))
        series.files.append(path)
        series.headers.append(header)
    return sorted(
        groups.values(),
        key=lambda s: (s.number if s.number is not None else math.inf, s.description, s.uid),
    )


def _floats(value: object, count: int) -> np.ndarray | None:
    try:
        numbers = np.array([float(v) for v in value], dtype=np.float64)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        return None
    return numbers if numbers.shape == (count,) and np.all(np.isfinite(numbers)) else None


def _tag_float(dataset: Dataset, keyword: str) -> float | None:
    value = dataset.get(keyword)
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) and number > 0 else None


def _why_4d(headers: Sequence[Dataset]) -> str:
    """What makes several images share a slice position: echoes, b-values, time points."""

    def distinct(keyword: str) -> int:
        return len({str(h.get(keyword)) for h in headers if h.get(keyword) is not None})

    if distinct("EchoNumbers") > 1 or distinct("EchoTime") > 1:
        return f"multi-echo, {max(distinct('EchoNumbers'), distinct('EchoTime'))} echoes"
    diffusion = any("DIFFUSION" in (h.get("ImageType") or []) for h in headers)
    if diffusion or distinct("DiffusionBValue") > 1 or "DiffusionBValue" in headers[0]:
        return "diffusion-weighted"
    if distinct("TemporalPositionIdentifier") > 1 or distinct("AcquisitionNumber") > 1:
        return "a time series"
    return "several images at each slice position"


def check_series_kind(series: DicomSeries) -> None:
    """Refuse a series that is not a scan to restore: not MR, a localizer, multi-frame or not
    greyscale. Separate from :func:`load_series`'s geometry checks because a cohort skips
    such series (a study export holds localizers) where it counts a broken one as failed.

    Raises:
        TransMRSRError: naming the series and what it is.
    """
    first = series.first
    if series.modality != "MR":
        kind = series.modality or "no Modality"
        raise TransMRSRError(
            f"{series.label}: is not an MR series ({kind}); transmrsr restores MR images"
        )
    image_type = [str(v).upper() for v in (first.get("ImageType") or [])]
    text = f"{series.description} {first.get('ProtocolName', '')}"
    if "LOCALIZER" in image_type or LOCALIZER_WORDS.search(text):
        raise TransMRSRError(f"{series.label}: is a localizer/scout series, not a scan to restore")
    if any(int(h.get("NumberOfFrames", 1) or 1) > 1 for h in series.headers):
        raise TransMRSRError(
            f"{series.label}: is an enhanced multi-frame DICOM, which transmrsr does not read; "
            "convert it with dcm2niix and restore the NIfTI"
        )
    if int(first.get("SamplesPerPixel", 1) or 1) != 1:
        raise TransMRSRError(f"{series.label}: holds colour images, not MR magnitude images")


@dataclass(frozen=True)
class _Geometry:
    order: list[int]  # indices into the series' files, slice by slice
    affine: np.ndarray  # RAS+ voxel-to-world
    spacing: float  # mm between slice centres


def _geometry(series: DicomSeries) -> _Geometry:
    """Slice order and voxel-to-world affine from the image plane tags, with the checks that
    the slices form one regular grid (else: 4-D, mixed acquisitions, missing slices)."""
    label = series.label
    orientations, positions, spacings, shapes = [], [], [], set()
    for path, header in zip(series.files, series.headers, strict=True):
        orientation = _floats(header.get("ImageOrientationPatient"), 6)
        position = _floats(header.get("ImagePositionPatient"), 3)
        pixel = _floats(header.get("PixelSpacing"), 2)
        for keyword, value in (
            ("ImageOrientationPatient", orientation),
            ("ImagePositionPatient", position),
            ("PixelSpacing", pixel),
        ):
            if value is None:
                raise TransMRSRError(f"{path}: no valid {keyword}; cannot place the slice")
        orientations.append(orientation)
        positions.append(position)
        spacings.append(pixel)
        shapes.add((int(header.get("Rows", 0)), int(header.get("Columns", 0))))
    orientation, pixel = orientations[0], spacings[0]
    if any(np.abs(o - orientation).max() > 1e-4 for o in orientations) or any(
        np.abs(p - pixel).max() > SPACING_TOLERANCE * pixel.min() for p in spacings
    ):
        raise TransMRSRError(
            f"{label}: its slices differ in orientation or pixel spacing (several "
            "acquisitions in one series); give one 3-D series"
        )
    if len(shapes) != 1:
        raise TransMRSRError(f"{label}: its slices differ in size {sorted(shapes)}")
    row, col = orientation[:3], orientation[3:]
    normal = np.cross(row, col)
    if abs(np.linalg.norm(normal) - 1.0) > 1e-3 or abs(float(row @ col)) > 1e-3:
        raise TransMRSRError(f"{label}: ImageOrientationPatient is not two orthogonal unit vectors")
    along = np.array([float(p @ normal) for p in positions])
    by_position = np.argsort(along, kind="stable")
    sorted_along = along[by_position]
    if len(series.files) < 2:
        raise TransMRSRError(f"{label}: has a single slice; a volume needs several")
    steps = np.diff(sorted_along)
    if np.any(steps < POSITION_TOLERANCE):
        same = [series.headers[i] for i in by_position]
        raise TransMRSRError(
            f"{label}: is 4-D ({_why_4d(same)}: {len(series.files)} images at "
            f"{len(np.unique(np.round(along / POSITION_TOLERANCE)))} slice positions); give "
            "one 3-D series"
        )
    spacing = float(np.median(steps))
    irregular = np.abs(steps - spacing) > SPACING_TOLERANCE * spacing
    if np.any(irregular):
        worst = float(steps[np.argmax(np.abs(steps - spacing))])
        raise TransMRSRError(
            f"{label}: slice positions are not evenly spaced ({worst:.4g} mm between two "
            f"slices, {spacing:.4g} mm between the others): missing slices?"
        )
    order = [int(i) for i in by_position]
    numbers = [series.headers[i].get("InstanceNumber") for i in order]
    try:
        ranks = [int(n) for n in numbers]  # type: ignore[arg-type]
    except (TypeError, ValueError):
        ranks = []
    if len(set(ranks)) == len(order) and all(b < a for a, b in itertools.pairwise(ranks)):
        order.reverse()  # the scanner numbered them against the normal: keep its order
    first = positions[order[0]]
    step = (positions[order[-1]] - first) / (len(order) - 1)
    for index, slice_index in enumerate(order):
        offset = positions[slice_index] - (first + index * step)
        if np.linalg.norm(offset) > SPACING_TOLERANCE * spacing + POSITION_TOLERANCE:
            raise TransMRSRError(
                f"{label}: slice positions do not lie on one line ({np.linalg.norm(offset):.3g}"
                " mm off); give one 3-D series"
            )
    lps = np.eye(4)
    lps[:3, 0] = row * pixel[1]  # along a row: the column index grows, PixelSpacing[1] apart
    lps[:3, 1] = col * pixel[0]  # down a column: the row index grows, PixelSpacing[0] apart
    lps[:3, 2] = step
    lps[:3, 3] = first
    return _Geometry(order, np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps, spacing)


def _pixels(path: Path, label: str) -> np.ndarray:
    """One slice's stored values with RescaleSlope/RescaleIntercept applied, as (columns,
    rows): the volume's axes 0 and 1."""
    try:
        dataset = pydicom.dcmread(path, force=True)
        array = np.asarray(dataset.pixel_array, dtype=np.float64)
    except (InvalidDicomError, OSError, EOFError, ValueError, KeyError, AttributeError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if "decoder" in reason.lower() or "plugin" in reason.lower():
            reason += "; pip install pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg, or convert "
            reason += "with dcm2niix"
        raise TransMRSRError(f"{path}: cannot read the pixel data of {label} ({reason})") from None
    if array.ndim != 2:
        raise TransMRSRError(f"{path}: pixel data of shape {array.shape} is not one slice")
    slope = _signed_float(dataset.get("RescaleSlope"), 1.0)
    intercept = _signed_float(dataset.get("RescaleIntercept"), 0.0)
    return (array * slope + intercept).T


def _signed_float(value: object, default: float) -> float:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return default
    return number if math.isfinite(number) else default


def load_series(series: DicomSeries, *, require_signal: bool = True) -> Volume:
    """The series as one 3-D volume, with its acquired slice thickness where it differs from
    the spacing (``Volume.slice_thickness``: 5 mm slices every 6.5 mm give 5.0).

    The spacing comes from ImagePositionPatient, which places every slice; SpacingBetweenSlices
    and SliceThickness are only what the scanner wrote, and a disagreement with the positions
    is logged.

    Raises:
        TransMRSRError: for a series that is not MR, a localizer, 4-D, missing slices, or has
            a file whose pixels cannot be read.
    """
    check_series_kind(series)
    geometry = _geometry(series)
    slices = [_pixels(series.files[i], series.label) for i in geometry.order]
    data = np.stack(slices, axis=2)
    first = series.first
    written = _tag_float(first, "SpacingBetweenSlices")
    if written is not None and abs(written - geometry.spacing) > SPACING_TOLERANCE * written:
        log.warning(
            "%s: SpacingBetweenSlices says %.4g mm but the slice positions are %.4g mm apart; "
            "using the positions",
            series.label,
            written,
            geometry.spacing,
        )
    thickness = _tag_float(first, "SliceThickness")
    gap = None
    if thickness is not None and abs(thickness - geometry.spacing) > (
        THICKNESS_TOLERANCE * geometry.spacing
    ):
        gap = thickness
        log.info(
            "%s: slices %.4g mm thick every %.4g mm (SliceThickness, ImagePositionPatient)",
            series.label,
            thickness,
            geometry.spacing,
        )
    volume = volume_from_array(
        data,
        geometry.affine,
        path=series.location,
        source=series.label,
        require_signal=require_signal,
    )
    volume.slice_thickness = gap
    log.debug("%s: %d slices, %s", series.label, len(slices), "".join(volume.axcodes))
    return volume


def load_dicom_folder(folder: str | Path, *, require_signal: bool = True) -> Volume:
    """The one DICOM series under ``folder`` as a volume (:func:`load_series`).

    Raises:
        TransMRSRError: for a folder without DICOM files, with several series (naming them),
            or a series that cannot be restored.
    """
    folder = Path(folder)
    series = find_series(folder)
    if not series:
        raise TransMRSRError(
            f"{folder}: is a folder without DICOM files; give a NIfTI/MGZ file or a DICOM "
            "series folder (a folder of NIfTI volumes: --out-dir DIR)"
        )
    if len(series) > 1:
        names = ", ".join(_short(s) for s in series[:6])
        more = f" and {len(series) - 6} more" if len(series) > 6 else ""
        raise TransMRSRError(
            f"{folder}: holds {len(series)} DICOM series ({names}{more}); give the folder of "
            "one series, or restore them all with --out-dir DIR"
        )
    return load_series(series[0], require_signal=require_signal)


def _short(series: DicomSeries) -> str:
    number = f"{series.number} " if series.number is not None else ""
    return f"{number}'{series.description}'" if series.description else number.strip() or "?"
