"""DICOM series in: find the series in a folder, refuse what cannot be restored, and stack the
image planes into a :class:`~transmrsr.io.Volume` with the acquired slice thickness from the
tags.

Read with pydicom, with the geometry computed here from the standard's image plane tags
(PS3.3 C.7.6.2: ImagePositionPatient, ImageOrientationPatient, PixelSpacing), rather than by
running dcm2niix or through nibabel's DICOM readers (which nibabel itself calls experimental
and meant for Siemens time series). Every refusal below needs the tags anyway: dcm2niix
converts localizers, 4-D series and series with missing slices with a warning, where a restore
must stop. docs/clinical.md records the comparison.

Three kinds of series are read: classic single-frame MR images (one file per slice), enhanced
MR images and legacy-converted enhanced MR images (multi-frame: one or several files per
series, each frame placed by its functional groups, PS3.3 C.7.6.16). Both kinds become one list
of image planes (:class:`_Plane`) before any check, so that a frame is refused exactly where a
file would be. The enhanced geometry is a handful of functional-group tags (plane orientation,
plane position, pixel measures, pixel value transformation, frame content), so they are read
here with pydicom too, not with highdicom: its volume reader would add a dependency and a
second set of checks that can disagree with the classic reader's.

Compressed pixel data is decoded by pydicom's plugins. pydicom decodes RLE Lossless and
Deflated Explicit VR Little Endian itself. The JPEG family (JPEG lossless, JPEG-LS, JPEG 2000)
is decoded by GDCM (``python-gdcm``): BSD licensed, wheels for every platform, and one package
for all three, where pylibjpeg needs one plugin per codec and its JPEG/JPEG-LS plugin
(pylibjpeg-libjpeg) is GPLv3. pydicom 3 finds GDCM without configuration and tries it first for
every JPEG syntax.

Array axes of the volume: 0 along the rows of a slice (increasing column index), 1 down its
columns (increasing row index), 2 across the slices, in the scanner's order: the InstanceNumber
of classic files, the InStackPositionNumber (else the frame order) of enhanced frames, and the
source InstanceNumber that a legacy-converted frame keeps (so that it reads as the series it
was converted from); by position where the numbers say nothing. A volume made from a NIfTI
file slice by slice therefore reads back as that file's array.
"""

from __future__ import annotations

import functools
import itertools
import logging
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom import uid
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels import get_decoder

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


def _positive_float(value: object) -> float | None:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) and number > 0 else None


def _signed_float(value: object, default: float) -> float:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return default
    return number if math.isfinite(number) else default


def _int(value: object) -> int | None:
    try:
        return None if value is None or value == "" else int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return None


def _reason(exc: BaseException) -> str:
    """An exception's message on one line (pydicom's decoders list one line per plugin)."""
    text = " ".join(str(exc).split())
    if not text:
        return type(exc).__name__
    return text if len(text) <= 240 else text[:237] + "..."


#: The tags :func:`_why_4d` reads, by their classic keywords.
_FOUR_D_KEYWORDS = (
    "EchoNumbers",
    "EchoTime",
    "ImageType",
    "DiffusionBValue",
    "TemporalPositionIdentifier",
    "AcquisitionNumber",
)
#: Where a multi-frame file keeps them: (functional group sequence, attribute, classic keyword).
_FRAME_FOUR_D_TAGS = (
    ("MREchoSequence", "EffectiveEchoTime", "EchoTime"),
    ("MRImageFrameTypeSequence", "FrameType", "ImageType"),
    ("MRDiffusionSequence", "DiffusionBValue", "DiffusionBValue"),
    ("FrameContentSequence", "TemporalPositionIndex", "TemporalPositionIdentifier"),
    ("FrameContentSequence", "FrameAcquisitionNumber", "AcquisitionNumber"),
)


class SeriesKindError(TransMRSRError):
    """A series that is no 3-D scan to restore (4-D, several stacks), told apart from a
    broken one: a study folder restored with ``--out-dir`` skips it with its reason, as it
    skips localizers, where a broken series counts as failed."""


@dataclass(frozen=True)
class _Plane:
    """One image plane of a series: a single-frame file, or one frame of a multi-frame file,
    with the tags that place it, scale it and tell a 4-D series. Both kinds of file become
    these before any check, so that a frame is refused exactly where a file would be."""

    path: Path
    frame: int | None  # index into the file's frames; None for a single-frame file
    orientation: np.ndarray | None  # ImageOrientationPatient: row, then column direction
    position: np.ndarray | None  # ImagePositionPatient of the first pixel
    pixel_spacing: np.ndarray | None  # PixelSpacing: between rows, between columns
    shape: tuple[int, int]  # Rows, Columns
    rank: tuple[int, ...] | None  # the scanner's order (see _frame_planes)
    slope: float  # RescaleSlope
    intercept: float  # RescaleIntercept
    thickness: float | None  # SliceThickness
    spacing_tag: float | None  # SpacingBetweenSlices
    stack: str | None  # StackID of a frame
    tags: dict[str, Any]  # what _why_4d reads, by classic keyword

    @property
    def name(self) -> str:
        """How messages name it: its file, and its frame (counted from 1, as the standard
        does) in a multi-frame file."""
        return str(self.path) if self.frame is None else f"{self.path} frame {self.frame + 1}"


def _shape(header: Dataset) -> tuple[int, int]:
    return (_int(header.get("Rows")) or 0, _int(header.get("Columns")) or 0)


def _is_multi_frame(header: Dataset) -> bool:
    return (
        "PerFrameFunctionalGroupsSequence" in header
        or "SharedFunctionalGroupsSequence" in header
        or (_int(header.get("NumberOfFrames")) or 1) > 1
    )


def _file_plane(path: Path, header: Dataset) -> _Plane:
    """A classic single-frame file as a plane: its image plane and pixel tags."""
    number = _int(header.get("InstanceNumber"))
    return _Plane(
        path=path,
        frame=None,
        orientation=_floats(header.get("ImageOrientationPatient"), 6),
        position=_floats(header.get("ImagePositionPatient"), 3),
        pixel_spacing=_floats(header.get("PixelSpacing"), 2),
        shape=_shape(header),
        rank=None if number is None else (number,),
        slope=_signed_float(header.get("RescaleSlope"), 1.0),
        intercept=_signed_float(header.get("RescaleIntercept"), 0.0),
        thickness=_positive_float(header.get("SliceThickness")),
        spacing_tag=_positive_float(header.get("SpacingBetweenSlices")),
        stack=None,
        tags={k: header.get(k) for k in _FOUR_D_KEYWORDS if header.get(k) is not None},
    )


def _group_value(groups: Sequence[Dataset], sequence: str, keyword: str) -> object:
    """An attribute of a functional group macro, from the first of ``groups`` that has it."""
    for group in groups:
        for item in group.get(sequence) or ():
            value = item.get(keyword)
            if value is not None and not (isinstance(value, str) and value == ""):
                return value
    return None


def _frame_4d_tags(own: list[Dataset], shared: list[Dataset], header: Dataset) -> dict[str, Any]:
    """The tags :func:`_why_4d` reads, for one frame, by their classic keywords: from the
    frame's macros (MR Echo, MR Image Frame Type, MR Diffusion, Frame Content), else from a
    legacy-converted file's unassigned attributes, else from the file's top level."""
    tags: dict[str, Any] = {}
    for keyword in _FOUR_D_KEYWORDS:
        found = None
        for sequence, attribute, classic in _FRAME_FOUR_D_TAGS:
            if classic == keyword and found is None:
                found = _group_value([*own, *shared], sequence, attribute)
        if found is None:
            found = _group_value(own, "UnassignedPerFrameConvertedAttributesSequence", keyword)
        if found is None:
            found = _group_value(shared, "UnassignedSharedConvertedAttributesSequence", keyword)
        if found is None:
            found = header.get(keyword)
        if found is not None:
            tags[keyword] = found
    return tags


def _frame_planes(path: Path, header: Dataset) -> list[_Plane]:
    """The frames of an enhanced or legacy-converted enhanced file as planes, from their
    functional groups (PS3.3 C.7.6.16). A macro may sit in the per-frame group (where frames
    differ) or in the shared group (where they do not): the per-frame group is read first.
    Legacy-converted files keep the classic tags that have no macro (EchoNumbers...) in their
    "unassigned converted attributes" sequences, which are read after the macros."""
    count = _int(header.get("NumberOfFrames")) or 1
    per_frame = list(header.get("PerFrameFunctionalGroupsSequence") or ())
    shared = list(header.get("SharedFunctionalGroupsSequence") or ())[:1]
    if not per_frame and not shared:
        raise TransMRSRError(
            f"{path}: holds {count} frames without functional groups (not an enhanced MR "
            "image), so its frames cannot be placed; convert it with dcm2niix"
        )
    if per_frame and len(per_frame) != count:
        raise TransMRSRError(
            f"{path}: NumberOfFrames says {count} but it has {len(per_frame)} per-frame "
            "functional groups; the file is damaged, export the series again"
        )
    file_number = _int(header.get("InstanceNumber")) or 0
    shape = _shape(header)
    planes = []
    for index in range(count):
        own = per_frame[index : index + 1]
        value = functools.partial(_group_value, [*own, *shared])
        # The scanner's order: a legacy-converted frame keeps its source file's InstanceNumber
        # (the converter numbers InStackPositionNumber by position, whichever way the scanner
        # went); an enhanced frame has its InStackPositionNumber; else the frame order.
        source = _int(
            _group_value(own, "UnassignedPerFrameConvertedAttributesSequence", "InstanceNumber")
        )
        in_stack = _int(value("FrameContentSequence", "InStackPositionNumber"))
        rank = next(((n,) for n in (source, in_stack) if n is not None), (file_number, index))
        stack = value("FrameContentSequence", "StackID")
        slope = value("PixelValueTransformationSequence", "RescaleSlope")
        intercept = value("PixelValueTransformationSequence", "RescaleIntercept")
        planes.append(
            _Plane(
                path=path,
                frame=index,
                orientation=_floats(
                    value("PlaneOrientationSequence", "ImageOrientationPatient"), 6
                ),
                position=_floats(value("PlanePositionSequence", "ImagePositionPatient"), 3),
                pixel_spacing=_floats(value("PixelMeasuresSequence", "PixelSpacing"), 2),
                shape=shape,
                rank=rank,
                slope=_signed_float(header.get("RescaleSlope") if slope is None else slope, 1.0),
                intercept=_signed_float(
                    header.get("RescaleIntercept") if intercept is None else intercept, 0.0
                ),
                thickness=_positive_float(value("PixelMeasuresSequence", "SliceThickness")),
                spacing_tag=_positive_float(value("PixelMeasuresSequence", "SpacingBetweenSlices")),
                stack=None if stack is None else str(stack),
                tags=_frame_4d_tags(own, shared, header),
            )
        )
    return planes


def _planes(series: DicomSeries) -> list[_Plane]:
    """Every image plane of the series: its single-frame files and the frames of its
    multi-frame files. Frames of several stacks (StackID) are refused here: each stack is a
    volume of its own (a multi-stack spine or a 3-plane scan), and one output holds one."""
    planes: list[_Plane] = []
    for path, header in zip(series.files, series.headers, strict=True):
        if _is_multi_frame(header):
            planes.extend(_frame_planes(path, header))
        else:
            planes.append(_file_plane(path, header))
    stacks = sorted({p.stack for p in planes if p.stack is not None})
    if len(stacks) > 1:
        named = ", ".join(stacks[:6]) + (", ..." if len(stacks) > 6 else "")
        raise SeriesKindError(
            f"{series.label}: holds {len(stacks)} stacks of frames (StackID {named}); "
            "transmrsr restores one stack per series: export each stack as a series of its own"
        )
    return planes


def _why_4d(tags: Sequence[dict[str, Any]]) -> str:
    """What makes several images share a slice position: echoes, b-values, time points."""

    def distinct(keyword: str) -> int:
        return len({str(t.get(keyword)) for t in tags if t.get(keyword) is not None})

    if distinct("EchoNumbers") > 1 or distinct("EchoTime") > 1:
        return f"multi-echo, {max(distinct('EchoNumbers'), distinct('EchoTime'))} echoes"
    diffusion = any("DIFFUSION" in (t.get("ImageType") or []) for t in tags)
    if diffusion or distinct("DiffusionBValue") > 1 or "DiffusionBValue" in tags[0]:
        return "diffusion-weighted"
    if distinct("TemporalPositionIdentifier") > 1 or distinct("AcquisitionNumber") > 1:
        return "a time series"
    return "several images at each slice position"


def check_series_kind(series: DicomSeries) -> None:
    """Refuse a series that is not a scan to restore: not MR, a localizer, not greyscale,
    4-D (diffusion, echoes, time points) or of several stacks (:class:`SeriesKindError`),
    from the headers alone. Separate from :func:`load_series`'s other checks because a cohort
    skips such series (a study export holds localizers and diffusion series beside the
    anatomy) where it counts a broken one as failed.

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
    if int(first.get("SamplesPerPixel", 1) or 1) != 1:
        raise TransMRSRError(f"{series.label}: holds colour images, not MR magnitude images")
    try:
        _geometry(series.label, _planes(series))
    except SeriesKindError:
        raise
    except TransMRSRError:
        pass  # a broken series: load_series says what is wrong, and a cohort counts it failed


@dataclass(frozen=True)
class _Geometry:
    order: list[int]  # indices into the planes, slice by slice
    affine: np.ndarray  # RAS+ voxel-to-world
    spacing: float  # mm between slice centres


def _placement(plane: _Plane) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A plane's ImageOrientationPatient, ImagePositionPatient and PixelSpacing; a plane
    without one of them cannot be placed."""
    orientation, position, pixel = plane.orientation, plane.position, plane.pixel_spacing
    if orientation is None or position is None or pixel is None:
        keyword = next(
            k
            for k, v in (
                ("ImageOrientationPatient", orientation),
                ("ImagePositionPatient", position),
                ("PixelSpacing", pixel),
            )
            if v is None
        )
        raise TransMRSRError(f"{plane.name}: no valid {keyword}; cannot place the slice")
    return orientation, position, pixel


def _geometry(label: str, planes: Sequence[_Plane]) -> _Geometry:
    """Slice order and voxel-to-world affine from the image plane tags, with the checks that
    the planes form one regular grid (else: 4-D, mixed acquisitions, missing slices)."""
    placed = [_placement(plane) for plane in planes]
    orientations = [o for o, _, _ in placed]
    positions = [p for _, p, _ in placed]
    spacings = [s for _, _, s in placed]
    shapes = {p.shape for p in planes}
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
    if len(planes) < 2:
        raise TransMRSRError(f"{label}: has a single slice; a volume needs several")
    steps = np.diff(sorted_along)
    if np.any(steps < POSITION_TOLERANCE):
        same = [planes[i].tags for i in by_position]
        raise SeriesKindError(
            f"{label}: is 4-D ({_why_4d(same)}: {len(planes)} images at "
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
    ranks = [planes[i].rank for i in order]
    known = [r for r in ranks if r is not None]
    if len(set(known)) == len(order) and all(b < a for a, b in itertools.pairwise(known)):
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


#: High-throughput JPEG 2000: decoded by pylibjpeg-openjpeg, not by GDCM.
_HTJ2K = frozenset({uid.HTJ2KLossless, uid.HTJ2KLosslessRPCL, uid.HTJ2K})
_READ_ERRORS = (InvalidDicomError, OSError, EOFError, ValueError, KeyError, AttributeError)


def _missing_decoder(syntax: uid.UID) -> str | None:
    """What to do when no installed plugin decodes ``syntax``; ``None`` when one does (or it
    needs none)."""
    try:
        if not syntax.is_compressed:
            return None
        decoder = get_decoder(syntax)
    except (ValueError, NotImplementedError):
        return f"pydicom has no decoder for {syntax.name or syntax}; convert it with dcm2niix"
    if decoder.is_available:
        return None
    package = "pylibjpeg pylibjpeg-openjpeg" if syntax in _HTJ2K else "python-gdcm"
    return f"no decoder for {syntax.name} is installed; pip install {package}"


def _stored_values(path: Path, label: str) -> tuple[np.ndarray, Dataset]:
    """One file's stored values as pydicom decodes them, (rows, columns) for one frame and
    (frames, rows, columns) for several, with its dataset. Compressed data is decoded by the
    first installed plugin that can (GDCM for the JPEG family, see the module docstring)."""
    try:
        dataset = pydicom.dcmread(path, force=True)
    except _READ_ERRORS as exc:
        raise TransMRSRError(
            f"{path}: cannot read the pixel data of {label} ({_reason(exc)})"
        ) from None
    syntax = getattr(dataset, "file_meta", Dataset()).get("TransferSyntaxUID")
    advice = None if syntax is None else _missing_decoder(uid.UID(str(syntax)))
    if advice is not None:
        raise TransMRSRError(f"{path}: cannot decode the pixel data of {label}: {advice}")
    try:
        array = np.asarray(dataset.pixel_array)
    except (*_READ_ERRORS, RuntimeError, NotImplementedError) as exc:
        raise TransMRSRError(
            f"{path}: cannot read the pixel data of {label} ({_reason(exc)})"
        ) from None
    return array, dataset


def _plane_values(planes: Sequence[_Plane], label: str) -> np.ndarray:
    """The planes' values with RescaleSlope/RescaleIntercept applied, stacked along axis 2 as
    (columns, rows, planes): the volume's axes. A multi-frame file is decoded once, for all
    of its frames."""
    decoded: dict[Path, np.ndarray] = {}
    slices = []
    for plane in planes:
        if plane.frame is None:
            values, _ = _stored_values(plane.path, label)
            if values.ndim != 2:
                raise TransMRSRError(
                    f"{plane.path}: pixel data of shape {values.shape} is not one slice"
                )
        else:
            if plane.path not in decoded:
                frames, dataset = _stored_values(plane.path, label)
                count = _int(dataset.get("NumberOfFrames")) or 1
                if frames.ndim == 2 and count == 1:
                    frames = frames[np.newaxis]
                if frames.ndim != 3 or frames.shape[0] != count:
                    raise TransMRSRError(
                        f"{plane.path}: pixel data of shape {frames.shape} is not "
                        f"{count} frames (NumberOfFrames)"
                    )
                decoded[plane.path] = frames
            values = decoded[plane.path][plane.frame]
        if values.shape != plane.shape:
            raise TransMRSRError(
                f"{plane.name}: pixel data of shape {values.shape}, where Rows and Columns "
                f"say {plane.shape}"
            )
        slices.append((values.astype(np.float64) * plane.slope + plane.intercept).T)
    return np.stack(slices, axis=2)


def load_series(series: DicomSeries, *, require_signal: bool = True) -> Volume:
    """The series as one 3-D volume, with its acquired slice thickness where it differs from
    the spacing (``Volume.slice_thickness``: 5 mm slices every 6.5 mm give 5.0).

    The spacing comes from ImagePositionPatient, which places every slice; SpacingBetweenSlices
    and SliceThickness are only what the scanner wrote, and a disagreement with the positions
    is logged.

    Raises:
        TransMRSRError: for a series that is not MR, a localizer, of several stacks, 4-D,
            missing slices, or has a file whose pixels cannot be read.
    """
    check_series_kind(series)
    planes = _planes(series)
    geometry = _geometry(series.label, planes)
    ordered = [planes[i] for i in geometry.order]
    data = _plane_values(ordered, series.label)
    first = ordered[0]
    written = first.spacing_tag
    if written is not None and abs(written - geometry.spacing) > SPACING_TOLERANCE * written:
        log.warning(
            "%s: SpacingBetweenSlices says %.4g mm but the slice positions are %.4g mm apart; "
            "using the positions",
            series.label,
            written,
            geometry.spacing,
        )
    thickness = first.thickness
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
    log.debug("%s: %d slices, %s", series.label, len(ordered), "".join(volume.axcodes))
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
