"""Enhanced and compressed DICOM in: enhanced MR and legacy-converted enhanced MR objects
(multi-frame, placed by their functional groups) must read as the classic series they hold,
every compressed transfer syntax must decode out of the box (GDCM for the JPEG family), every
series must match dcm2niix's conversion in world space, and what cannot be restored is still
one line.

The variants are made here: synthetic series (``write_dicom_series``, and an enhanced MR
writer below), and the real scanner exports of ``../shared/data/dicom`` when present, converted
with highdicom (legacy-converted enhanced), pydicom's ``Dataset.compress`` (JPEG-LS, JPEG 2000,
RLE), GDCM (JPEG lossless, which pydicom cannot encode) and a deflated write.
"""

from __future__ import annotations

import itertools
import subprocess
import sys
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from conftest import SHARED_MRI, oblique_affine, oriented_affine, phantom, write_dicom_series
from pydicom import uid
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.pixels import get_decoder

import transmrsr
from transmrsr import dicom
from transmrsr.cli.main import main
from transmrsr.errors import TransMRSRError
from transmrsr.io import load_volume

#: The real scanner exports (never committed): ``../shared/data/dicom``, beside the MRI scans.
SHARED_DICOM = SHARED_MRI.parent / "dicom"
#: dcm2niix's executable, installed by its pip package beside the interpreter.
DCM2NIIX = Path(sys.executable).parent / "dcm2niix"
#: Philips MPRAGE slices used for its variants: a contiguous block of 20 of its 170 (sagittal,
#: through the middle of the head), so that each variant takes well under a second.
PHILIPS_SUBSET = slice(75, 95)
#: Philips' private "number of slices" tag, which dcm2niix checks against the frame count of a
#: multi-frame file: the subset says 20, as a 20-slice export would.
PHILIPS_SLICES_TAG = (0x2001, 0x1018)

ENHANCED_MR = "1.2.840.10008.5.1.4.1.1.4.1"
SYNTAX = {
    "jpeg-lossless": uid.JPEGLossless,  # .57
    "jpeg-lossless-sv1": uid.JPEGLosslessSV1,  # .70
    "jpeg-ls": uid.JPEGLSLossless,  # .80
    "jpeg-ls-near": uid.JPEGLSNearLossless,  # .81, NEAR 2: every value within 2
    "jpeg2000-lossless": uid.JPEG2000Lossless,  # .90
    "jpeg2000": uid.JPEG2000,  # .91, lossy (90 dB PSNR)
    "rle": uid.RLELossless,
    "deflate": uid.DeflatedExplicitVRLittleEndian,
}
#: Largest stored-value error of each lossy variant (JPEG 2000's is bounded by the tests'
#: correlation instead).
LOSSY = {"jpeg-ls-near": 2, "jpeg2000": None}
JPEG_FAMILY = [k for k in SYNTAX if k.startswith("jpeg")]
#: Every variant made of a source: its classic files, their legacy-converted enhanced file,
#: and each compressed kind of both (all of them for the classic files, one of each codec for
#: the multi-frame file).
VARIANTS = [
    "classic",
    "legacy",
    *SYNTAX,
    "legacy-jpeg-lossless",
    "legacy-jpeg-ls",
    "legacy-jpeg2000-lossless",
    "legacy-rle",
]


def scan(shape=(32, 32, 8), seed=0) -> np.ndarray:
    """Integer voxels, as DICOM stores them (non-negative, as magnitude images are)."""
    return np.rint(phantom(shape, seed=seed) * 10).astype(np.int16)


# --- enhanced MR, written here -------------------------------------------------------------


def _ds(values) -> list[str]:
    return [f"{float(v):.10g}"[:16] for v in values]


def _item(**tags) -> list[Dataset]:
    """A one-item sequence (a functional group macro)."""
    item = Dataset()
    for keyword, value in tags.items():
        setattr(item, keyword, value)
    return [item]


def write_enhanced_series(
    folder: Path,
    data: np.ndarray,
    affine: np.ndarray,
    *,
    frames: list[int] | None = None,
    files: int = 1,
    shared_macros: bool = True,
    slopes: list[float] | None = None,
    intercept: float = 0.0,
    thickness: float | None = None,
    numbers: list[int] | None = None,
    frame_extra: Callable[[int, Dataset], None] | None = None,
    image_type: tuple[str, ...] = ("ORIGINAL", "PRIMARY", "M", "NONE"),
    description: str = "T1 AX 4mm",
) -> list[Path]:
    """Write ``data`` (I, J, K) on ``affine`` (RAS+) as an Enhanced MR Image series: frame f
    shows slice ``frames[f]`` (default: every slice in order), numbered ``numbers[f]``
    (InStackPositionNumber; default ``frames[f] + 1``), split over ``files`` files. The plane
    orientation, pixel measures and pixel value transformation macros go in the shared group
    (``shared_macros``) or in every frame's; per-frame ``slopes`` put the transformation in
    every frame's. Stored values are ``(data - intercept) / slope``; ``frame_extra(f, group)``
    may change frame f's per-frame group. Reading it back must give exactly ``data``."""
    folder.mkdir(parents=True, exist_ok=True)
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ np.asarray(affine, np.float64)
    zooms = np.linalg.norm(lps[:3, :3], axis=0)
    row, col = lps[:3, 0] / zooms[0], lps[:3, 1] / zooms[1]
    frames = list(range(data.shape[2])) if frames is None else frames
    numbers = [s + 1 for s in frames] if numbers is None else numbers
    slopes_given = slopes is not None
    slopes = slopes if slopes is not None else [1.0] * len(frames)
    series, study, frame_of_reference = (uid.generate_uid() for _ in range(3))
    orientation = _item(ImageOrientationPatient=_ds([*row, *col]))
    measures = _item(
        PixelSpacing=_ds([zooms[1], zooms[0]]),
        SliceThickness=f"{thickness if thickness is not None else zooms[2]:.6g}",
    )

    def transformation(slope: float) -> list[Dataset]:
        return _item(RescaleSlope=f"{slope:.6g}", RescaleIntercept=f"{intercept:.6g}")

    groups, pixels = [], []
    for f, s in enumerate(frames):
        group = Dataset()
        group.FrameContentSequence = _item(StackID="1", InStackPositionNumber=numbers[f])
        group.PlanePositionSequence = _item(
            ImagePositionPatient=_ds((lps @ np.array([0.0, 0.0, s, 1.0]))[:3])
        )
        if not shared_macros:
            group.PlaneOrientationSequence = orientation
            group.PixelMeasuresSequence = measures
        if not shared_macros or slopes_given:
            group.PixelValueTransformationSequence = transformation(slopes[f])
        if frame_extra is not None:
            frame_extra(f, group)
        groups.append(group)
        stored = np.rint((data[:, :, s].astype(np.float64) - intercept) / slopes[f])
        pixels.append(stored.astype("<u2").T)
    shared = Dataset()
    if shared_macros:
        shared.PlaneOrientationSequence = orientation
        shared.PixelMeasuresSequence = measures
        if not slopes_given:
            shared.PixelValueTransformationSequence = transformation(1.0)
    shared.MRImageFrameTypeSequence = _item(FrameType=list(image_type))

    paths = []
    for part, chosen in enumerate(np.array_split(np.arange(len(frames)), files)):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = ENHANCED_MR
        meta.MediaStorageSOPInstanceUID = uid.generate_uid()
        meta.TransferSyntaxUID = uid.ExplicitVRLittleEndian
        path = folder / f"EN{part:03d}.dcm"
        ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID = ENHANCED_MR
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.FrameOfReferenceUID = frame_of_reference
        ds.Modality, ds.Manufacturer = "MR", "transmrsr tests"
        ds.PatientName, ds.PatientID = "Phantom^Enhanced", "P1"
        ds.SeriesNumber, ds.SeriesDescription, ds.InstanceNumber = 3, description, part + 1
        ds.ImageType = list(image_type)
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.Rows, ds.Columns = data.shape[1], data.shape[0]
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.NumberOfFrames = len(chosen)
        ds.SharedFunctionalGroupsSequence = [shared]
        ds.PerFrameFunctionalGroupsSequence = [groups[f] for f in chosen]
        ds.PixelData = np.stack([pixels[f] for f in chosen]).tobytes()
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def legacy_convert(sources: list[Path], folder: Path) -> Path:
    """The classic files as one legacy-converted enhanced MR file (highdicom)."""
    import highdicom.legacy

    datasets = [pydicom.dcmread(p) for p in sources]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # single-component patient names, no window tags
        converted = highdicom.legacy.LegacyConvertedEnhancedMRImage(
            datasets, datasets[0].SeriesInstanceUID, 99, uid.generate_uid(), 1
        )
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "legacy.dcm"
    converted.save_as(path, enforce_file_format=True)
    return path


def _gdcm_jpeg_lossless(source: Path, target: Path, syntax: uid.UID) -> None:
    """JPEG lossless (.57 or .70) by GDCM's own transcoder: pydicom has no encoder for it.
    Only GDCM's pixel data is kept: its writer also rewrites image plane tags (a single
    slice's SliceThickness, for one), which must stay those of the source."""
    import gdcm

    reader = gdcm.ImageReader()
    reader.SetFileName(str(source))
    assert reader.Read(), source
    change = gdcm.ImageChangeTransferSyntax()
    change.SetTransferSyntax(gdcm.TransferSyntax(gdcm.TransferSyntax.GetTSType(str(syntax))))
    change.SetInput(reader.GetImage())
    assert change.Change(), f"GDCM cannot encode {syntax.name}"
    writer = gdcm.ImageWriter()
    writer.SetFileName(str(target))
    writer.SetFile(reader.GetFile())
    writer.SetImage(change.GetOutput())
    assert writer.Write(), target
    encoded = pydicom.dcmread(target)
    assert encoded.file_meta.TransferSyntaxUID == syntax
    ds = pydicom.dcmread(source)
    ds.file_meta.TransferSyntaxUID = syntax
    ds.PixelData = encoded.PixelData
    ds["PixelData"].VR = "OB"
    ds.save_as(target, enforce_file_format=True)


def compress(sources: list[Path], folder: Path, kind: str) -> Path:
    """Every file in the transfer syntax of ``kind``, in a folder of its own."""
    syntax = SYNTAX[kind]
    folder.mkdir(parents=True, exist_ok=True)
    for source in sources:
        target = folder / source.name
        if kind.startswith("jpeg-lossless"):
            _gdcm_jpeg_lossless(source, target, syntax)
            continue
        ds = pydicom.dcmread(source)
        if kind == "deflate":  # pydicom deflates the dataset as it writes it
            ds.file_meta.TransferSyntaxUID = syntax
        elif kind == "jpeg-ls-near":
            ds.compress(syntax, jls_error=LOSSY[kind])
        elif kind == "jpeg2000":
            ds.compress(syntax, j2k_psnr=[90])
        else:
            ds.compress(syntax)
        ds.save_as(target, enforce_file_format=True)
    written = pydicom.dcmread(target, stop_before_pixels=True).file_meta.TransferSyntaxUID
    assert written == syntax, (kind, written)
    return folder


# --- sources and their variants, made once per test session ---------------------------------


def real_dicom(name: str) -> Path:
    """A real scanner export, skipping the test when the shared folder is absent."""
    path = SHARED_DICOM / name
    if not path.is_dir():
        pytest.skip(f"real DICOM not available: {path}")
    return path


def _source_files(source: str, folder: Path) -> list[Path]:
    """The classic files of a source, in a folder of their own."""
    if source == "synthetic":
        affine = oblique_affine((1.0, 1.0, 4.0))
        return write_dicom_series(folder, scan(), affine, thickness=3.0, slope=0.5, intercept=-8)
    if source == "siemens":
        return sorted(real_dicom("siemens_t1_2d_sag_gap").iterdir(), key=lambda p: p.name)
    files = sorted(real_dicom("philips_mprage_3d").glob("*.dcm"))[PHILIPS_SUBSET]
    folder.mkdir(parents=True)
    for path in files:
        ds = pydicom.dcmread(path)
        if PHILIPS_SLICES_TAG in ds:
            ds[PHILIPS_SLICES_TAG].value = len(files)
        ds.save_as(folder / path.name)
    return sorted(folder.iterdir())


class Variants:
    """The variants of each source, made when first asked for and kept for the session."""

    def __init__(self, root: Path):
        self.root = root
        self.made: dict[tuple[str, str], Path] = {}

    def classic_files(self, source: str) -> list[Path]:
        folder = self.folder(source, "classic")
        return sorted(p for p in folder.iterdir() if p.is_file())

    def folder(self, source: str, variant: str) -> Path:
        if (source, variant) in self.made:
            return self.made[source, variant]
        target = self.root / source / variant
        if variant == "classic":
            files = _source_files(source, target)
            folder = files[0].parent
        elif variant == "legacy":
            folder = legacy_convert(self.classic_files(source), target).parent
        elif variant.startswith("legacy-"):
            legacy = sorted(self.folder(source, "legacy").iterdir())
            folder = compress(legacy, target, variant.removeprefix("legacy-"))
        else:
            folder = compress(self.classic_files(source), target, variant)
        self.made[source, variant] = folder
        return folder


@pytest.fixture(scope="session")
def variants(tmp_path_factory) -> Variants:
    return Variants(tmp_path_factory.mktemp("dicom_variants"))


def _lossy(variant: str) -> str | None:
    kind = variant.removeprefix("legacy-")
    return kind if kind in LOSSY else None


# --- reading: every variant is the classic series --------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS[1:])
@pytest.mark.parametrize("source", ["synthetic", "siemens", "philips"])
def test_every_variant_reads_as_the_classic_series(source, variant, variants):
    classic = load_volume(variants.folder(source, "classic"))
    volume = load_volume(variants.folder(source, variant))
    np.testing.assert_array_equal(volume.affine, classic.affine)
    assert volume.slice_thickness == classic.slice_thickness
    kind = _lossy(variant)
    if kind is None:
        np.testing.assert_array_equal(volume.data, classic.data)
    else:
        slope = {"synthetic": 0.5, "siemens": 1.0, "philips": 2.36166056166056}[source]
        error = np.abs(volume.data.astype(np.float64) - classic.data).max()
        if LOSSY[kind] is not None:
            assert error <= LOSSY[kind] * slope + 1e-3
        assert np.corrcoef(volume.data.ravel(), classic.data.ravel())[0, 1] > 0.9999
        assert 0 < error <= 0.02 * np.abs(classic.data).max()  # lossy, and not by much


def test_the_real_series_keep_their_geometry(variants):
    siemens = load_volume(variants.folder("siemens", "legacy"))
    assert siemens.shape == (256, 256, 35)
    assert siemens.slice_thickness == pytest.approx(4.0)  # 4 mm slices every 4.8 mm
    np.testing.assert_allclose(siemens.zooms, (1.015625, 1.015625, 4.8), atol=1e-5)
    assert siemens.axcodes == ("P", "I", "L")
    philips = load_volume(variants.folder("philips", "legacy"))
    assert philips.shape == (256, 256, 20)
    assert philips.slice_thickness is None
    np.testing.assert_allclose(philips.zooms, 1.0, atol=1e-5)
    assert philips.axcodes == ("P", "I", "R")  # the scanner's order, against the normal


@pytest.mark.slow
def test_the_whole_philips_series_reads_as_its_legacy_conversion(tmp_path):
    folder = real_dicom("philips_mprage_3d")
    classic = load_volume(folder)
    legacy = load_volume(legacy_convert(sorted(folder.glob("*.dcm")), tmp_path / "e").parent)
    assert classic.shape == (256, 256, 170)
    np.testing.assert_array_equal(legacy.affine, classic.affine)
    np.testing.assert_array_equal(legacy.data, classic.data)


@pytest.mark.parametrize(
    "layout", ["shared", "per-frame", "per-frame-rescale", "shuffled", "three-files"]
)
def test_an_enhanced_series_reads_back_as_the_volume_it_was_made_from(layout, tmp_path):
    data, affine = scan(), oblique_affine((1.0, 1.0, 4.0))
    options: dict = {"thickness": 3.0, "intercept": -8.0}
    if layout == "per-frame":
        options["shared_macros"] = False
    elif layout == "per-frame-rescale":
        options["slopes"] = [0.5 + 0.25 * (k % 3) for k in range(data.shape[2])]
        data = np.rint((data + 8.0) / 6.0) * 6.0 - 8.0  # values that every slope holds exactly
    elif layout == "shuffled":
        options["frames"] = [int(k) for k in np.random.default_rng(1).permutation(data.shape[2])]
    elif layout == "three-files":
        options["files"] = 3
    write_enhanced_series(tmp_path / "s", data, affine, **options)
    volume = load_volume(tmp_path / "s")
    np.testing.assert_array_equal(volume.data, data.astype(np.float32))
    np.testing.assert_allclose(volume.affine, affine, atol=1e-6)
    assert volume.slice_thickness == pytest.approx(3.0)


def test_frames_numbered_against_the_positions_keep_the_scanner_order(tmp_path):
    data, affine = scan(), oriented_affine("LIA", (1.0, 1.0, 4.0))
    n = data.shape[2]
    write_enhanced_series(tmp_path / "s", data, affine, numbers=[n - k for k in range(n)])
    volume = load_volume(tmp_path / "s")
    # As for classic InstanceNumbers: stacked in InStackPositionNumber order, which runs
    # against the positions, on a grid that puts every voxel where it was.
    np.testing.assert_array_equal(volume.data, data[:, :, ::-1].astype(np.float32))
    world = volume.affine @ np.array([5, 7, 0, 1.0])
    np.testing.assert_allclose(world, affine @ np.array([5, 7, n - 1, 1.0]), atol=1e-6)


@pytest.mark.parametrize("kind", ["jpeg-lossless-sv1", "jpeg-ls", "jpeg2000-lossless", "rle"])
def test_a_compressed_enhanced_file_reads_as_its_volume(kind, tmp_path):
    data, affine = scan(), oriented_affine("RAS", (1.0, 1.0, 4.0))
    files = write_enhanced_series(tmp_path / "s", data, affine)
    volume = load_volume(compress(files, tmp_path / kind, kind))
    np.testing.assert_array_equal(volume.data, data.astype(np.float32))
    np.testing.assert_allclose(volume.affine, affine, atol=1e-6)


# --- restored: every lossless variant restores to what the classic series restores to -------
# (the real series read as their classic files above, voxel for voxel, so they restore alike;
# restoring them here would cost minutes of CI for no more evidence)


@pytest.mark.parametrize(
    ("source", "variant"),
    [
        ("synthetic", "legacy"),
        ("synthetic", "jpeg-ls"),
        ("synthetic", "legacy-jpeg2000-lossless"),
        ("synthetic", "legacy-rle"),
        ("synthetic", "legacy-jpeg-lossless"),
    ],
)
def test_a_variant_restores_as_the_classic_series(
    source, variant, variants, tiny_model_file, tmp_path
):
    common = ["--model", str(tiny_model_file), "--adapt", "0", "--device", "cpu", "--no-progress"]
    classic, other = tmp_path / "classic.nii.gz", tmp_path / "variant.nii.gz"
    assert main(["restore", str(variants.folder(source, "classic")), str(classic), *common]) == 0
    assert main(["restore", str(variants.folder(source, variant)), str(other), *common]) == 0
    ours, theirs = nib.load(other), nib.load(classic)
    assert ours.shape == theirs.shape
    assert ours.shape[2] > load_volume(variants.folder(source, "classic")).shape[2]
    np.testing.assert_array_equal(ours.affine, theirs.affine)
    np.testing.assert_array_equal(np.asanyarray(ours.dataobj), np.asanyarray(theirs.dataobj))
    assert ours.header["descrip"] == theirs.header["descrip"]
    # The Python interface reads the same folder to the same restore.
    api = transmrsr.restore(
        variants.folder(source, variant),
        model=tiny_model_file,
        adapt=0,
        device="cpu",
        progress=False,
    )
    np.testing.assert_array_equal(np.asanyarray(api.dataobj), np.asanyarray(ours.dataobj))


# --- the decoders ---------------------------------------------------------------------------


def test_gdcm_is_installed_and_tried_first_for_every_jpeg_kind():
    for kind in JPEG_FAMILY:
        decoder = get_decoder(SYNTAX[kind])
        assert next(iter(decoder._validate_plugins())) == "gdcm", kind


@pytest.fixture
def only_gdcm(monkeypatch):
    """pydicom's JPEG decoders with every plugin but GDCM removed, as a user has them with
    transmrsr's dependencies alone (the tests' pyjpegls and pylibjpeg-openjpeg also decode)."""
    for kind in JPEG_FAMILY:
        decoder = get_decoder(SYNTAX[kind])
        kept = {k: v for k, v in decoder._available.items() if k == "gdcm"}
        monkeypatch.setattr(decoder, "_available", kept)


@pytest.mark.parametrize("kind", JPEG_FAMILY)
def test_gdcm_alone_decodes_every_jpeg_kind(kind, variants, only_gdcm):
    classic = load_volume(variants.folder("synthetic", "classic"))
    volume = load_volume(variants.folder("synthetic", kind))
    if _lossy(kind):
        assert np.corrcoef(volume.data.ravel(), classic.data.ravel())[0, 1] > 0.9999
    else:
        np.testing.assert_array_equal(volume.data, classic.data)


def test_a_missing_decoder_is_one_line_naming_the_package(
    variants, monkeypatch, tiny_model_file, capsys
):
    decoder = get_decoder(SYNTAX["jpeg-ls"])
    monkeypatch.setattr(decoder, "_available", {})
    monkeypatch.setattr(decoder, "_unavailable", {"gdcm": ("gdcm",)})
    folder = variants.folder("synthetic", "jpeg-ls")
    with pytest.raises(TransMRSRError) as caught:
        load_volume(folder)
    message = str(caught.value)
    assert "\n" not in message
    assert "JPEG-LS Lossless Image Compression is installed; pip install python-gdcm" in message
    out = folder.parent / "out.nii.gz"
    assert main(["restore", str(folder), str(out), "--model", str(tiny_model_file)]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


# --- checked against dcm2niix ---------------------------------------------------------------


def dcm2niix(folder: Path, out: Path) -> Path:
    """dcm2niix's conversion of the one series in ``folder`` (skips without the executable)."""
    if not DCM2NIIX.exists():
        pytest.skip(f"dcm2niix not installed: {DCM2NIIX}")
    out.mkdir(parents=True, exist_ok=True)
    command = [str(DCM2NIIX), "-z", "n", "-b", "n", "-f", "converted", "-o", str(out)]
    done = subprocess.run([*command, str(folder)], capture_output=True, text=True, timeout=120)
    converted = sorted(out.glob("*.nii"))
    assert done.returncode == 0 and len(converted) == 1, done.stdout + done.stderr
    return converted[0]


def compare_in_world(volume, nifti: Path) -> tuple[float, float, float]:
    """Where ``volume``'s voxel centres lie in ``nifti``'s grid, and its values there.

    dcm2niix may order and flip the axes differently: the two affines map ours onto a
    permutation of theirs. Gives the largest distance (mm) between a voxel centre of ours
    and the centre of the voxel of theirs it falls in (over the grid's corners, which bound
    it: both grids are affine), the correlation of the values, and the scale from ours to
    theirs (dcm2niix may apply Philips' private scaling)."""
    image = nib.load(nifti)
    theirs = np.asanyarray(image.dataobj).astype(np.float64)
    assert theirs.ndim == 3, theirs.shape
    ours_to_theirs = np.linalg.inv(image.affine) @ volume.affine
    mapping = np.rint(ours_to_theirs)
    rotation = mapping[:3, :3]
    assert np.all(np.abs(rotation).sum(axis=0) == 1) and np.all(np.abs(rotation).sum(axis=1) == 1)
    ends = [(0, n - 1) for n in volume.shape]
    corners = np.array([[*corner, 1.0] for corner in itertools.product(*ends)])
    distance = np.linalg.norm((volume.affine - image.affine @ mapping) @ corners.T, axis=0)
    # Their array on our grid: their axis axes[a] runs along our axis a, flipped where the
    # mapping runs backwards.
    axes = [int(np.argmax(np.abs(rotation[:, a]))) for a in range(3)]
    aligned = np.transpose(theirs, axes)
    for a in range(3):
        if rotation[axes[a], a] < 0:
            aligned = np.flip(aligned, a)
    assert aligned.shape == volume.shape
    for a in range(3):
        start = mapping[axes[a], 3]
        assert start == (0 if rotation[axes[a], a] > 0 else volume.shape[a] - 1)
    ours = volume.data.astype(np.float64).ravel()
    aligned = aligned.ravel()
    correlation = float(np.corrcoef(ours, aligned)[0, 1])
    scale = float(ours @ aligned / (ours @ ours))
    return float(distance.max()), correlation, scale


#: What dcm2niix converts instead of a variant it cannot read: Deflated Explicit VR Little
#: Endian ("Unsupported transfer syntax"; it advises inflating the files first).
NOT_READ_BY_DCM2NIIX = {"deflate": "classic"}
#: dcm2niix (v1.0.20260724) writes the slices of these multi-frame files in reverse order on
#: an unchanged affine, where the frames run one way along the normal (the Siemens and the
#: synthetic series, not the Philips one): it does so for RLE, JPEG-LS and JPEG 2000 frames,
#: not for uncompressed or JPEG lossless ones. transmrsr reads them as the classic series
#: (test_every_variant_reads_as_the_classic_series), which matches dcm2niix.
DCM2NIIX_REVERSES = {"legacy-rle", "legacy-jpeg-ls", "legacy-jpeg2000-lossless"}


def _dcm2niix_cases() -> Iterator:
    for source in ("synthetic", "siemens", "philips"):
        for variant in VARIANTS:
            marks = []
            if variant in DCM2NIIX_REVERSES and source != "philips":
                reason = "dcm2niix reverses the slices of this compressed multi-frame file"
                marks.append(pytest.mark.xfail(reason=reason, strict=False))
            yield pytest.param(source, variant, marks=marks, id=f"{source}-{variant}")


@pytest.mark.parametrize(("source", "variant"), list(_dcm2niix_cases()))
def test_every_variant_matches_dcm2niix_in_world_space(source, variant, variants, tmp_path):
    volume = load_volume(variants.folder(source, variant))
    converted = dcm2niix(
        variants.folder(source, NOT_READ_BY_DCM2NIIX.get(variant, variant)), tmp_path
    )
    distance, correlation, scale = compare_in_world(volume, converted)
    print(f"dcm2niix {source} {variant}: {distance:.2g} mm, r={correlation:.8f}, x{scale:.5g}")
    assert distance < 1e-3
    assert correlation > 0.9999
    if source != "philips":  # Philips: dcm2niix applies the private scale slope
        assert scale == pytest.approx(1.0, rel=1e-6 if _lossy(variant) is None else 1e-3)


@pytest.mark.parametrize(
    ("codes", "zooms", "thickness"),
    [("LIA", (1.0, 1.0, 4.0), None), ("RAS", (1.0, 1.0, 6.5), 5.0), ("PSR", (0.9, 1.1, 3), None)],
)
def test_synthetic_series_match_dcm2niix_in_every_orientation(codes, zooms, thickness, tmp_path):
    write_dicom_series(tmp_path / "c", scan(), oriented_affine(codes, zooms), thickness=thickness)
    write_enhanced_series(tmp_path / "e", scan(), oriented_affine(codes, zooms))
    for kind in ("c", "e"):
        volume = load_volume(tmp_path / kind)
        distance, correlation, scale = compare_in_world(
            volume, dcm2niix(tmp_path / kind, tmp_path / f"n{kind}")
        )
        assert distance < 1e-3 and correlation > 0.9999 and scale == pytest.approx(1.0)


def _off_the_positions(volume, folder: Path) -> float:
    """The largest distance (mm) between a slice's ImagePositionPatient and the volume's grid
    point where that slice's first pixel lies (the nearest one)."""
    worst = 0.0
    inverse = np.linalg.inv(volume.affine)
    for path in sorted(folder.iterdir()):
        lps = pydicom.dcmread(path, stop_before_pixels=True).ImagePositionPatient
        ras = np.array([-float(lps[0]), -float(lps[1]), float(lps[2]), 1.0])
        nearest = np.rint(inverse @ ras)
        worst = max(worst, float(np.linalg.norm((volume.affine @ nearest - ras)[:3])))
    return worst


@pytest.mark.parametrize(
    ("name", "tolerance"),
    [
        ("siemens_t1_2d_sag_gap", 1e-3),
        # dcm2niix takes the slice spacing from the first two positions (1.0000067 mm), where
        # transmrsr fits all 170 (0.9999992 mm): 1.3 micrometres apart at the last slice.
        ("philips_mprage_3d", 2e-3),
    ],
)
def test_the_whole_real_series_match_dcm2niix(name, tolerance, tmp_path):
    folder = real_dicom(name)
    volume = load_volume(folder)
    assert _off_the_positions(volume, folder) < 1e-4
    distance, correlation, scale = compare_in_world(volume, dcm2niix(folder, tmp_path))
    print(f"dcm2niix {name}: {distance:.2g} mm, r={correlation:.8f}, x{scale:.5g}")
    assert distance < tolerance and correlation > 0.9999


# --- refused, in one line ------------------------------------------------------------------


def _bad_enhanced(case: str, folder: Path) -> None:
    data, affine = scan(), oriented_affine("RAS", (1.0, 1.0, 4.0))
    n = data.shape[2]
    twice = {"frames": list(range(n)) * 2}

    def set_item(sequence: str, **tags) -> Callable[[int, Dataset], None]:
        def extra(f: int, group: Dataset) -> None:
            setattr(group, sequence, _item(**{k: v(f) for k, v in tags.items()}))

        return extra

    if case == "no-position":
        write_enhanced_series(
            folder,
            data,
            affine,
            frame_extra=lambda f, g: f == 2 and delattr(g, "PlanePositionSequence"),
        )
    elif case == "two-stacks":

        def stack(f: int, group: Dataset) -> None:
            group.FrameContentSequence[0].StackID = "1" if f < n // 2 else "2"

        write_enhanced_series(folder, data, affine, frame_extra=stack)
    elif case == "echoes":
        extra = set_item("MREchoSequence", EffectiveEchoTime=lambda f: 10.0 * (1 + f // n))
        write_enhanced_series(folder, data, affine, frame_extra=extra, **twice)
    elif case == "diffusion":
        extra = set_item("MRDiffusionSequence", DiffusionBValue=lambda f: 1000.0 * (f // n))
        write_enhanced_series(folder, data, affine, frame_extra=extra, **twice)
    elif case == "time":

        def time(f: int, group: Dataset) -> None:
            group.FrameContentSequence[0].TemporalPositionIndex = 1 + f // n

        write_enhanced_series(folder, data, affine, frame_extra=time, **twice)
    elif case == "legacy-echoes":  # EchoTime in the unassigned per-frame attributes
        source, series = folder.parent / "classic", "1.2.826.0.1.3680043.8.498.79"
        first = write_dicom_series(source, data, affine, series_uid=series, echo_number=1)
        second = write_dicom_series(
            source, data, affine, series_uid=series, echo_number=2, prefix="E2_"
        )
        study = pydicom.dcmread(first[0]).StudyInstanceUID
        for path in second:  # one study, as a scanner writes it
            ds = pydicom.dcmread(path)
            ds.StudyInstanceUID = study
            ds.save_as(path)
        legacy_convert(first + second, folder)
    elif case == "localizer":
        write_enhanced_series(
            folder, data, affine, image_type=("ORIGINAL", "PRIMARY", "LOCALIZER", "NONE")
        )
    elif case == "frames-without-groups":
        paths = write_enhanced_series(folder, data, affine)
        ds = pydicom.dcmread(paths[0])
        del ds.PerFrameFunctionalGroupsSequence, ds.SharedFunctionalGroupsSequence
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = uid.MRImageStorage
        ds.save_as(paths[0])
    elif case == "frames-missing":
        paths = write_enhanced_series(folder, data, affine)
        ds = pydicom.dcmread(paths[0])
        ds.NumberOfFrames = n + 1
        ds.save_as(paths[0])


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("no-position", "EN000.dcm frame 3: no valid ImagePositionPatient; cannot place the slice"),
        ("two-stacks", "holds 2 stacks of frames (StackID 1, 2); transmrsr restores one stack"),
        ("echoes", "is 4-D (multi-echo, 2 echoes: 16 images at 8 slice positions)"),
        ("diffusion", "is 4-D (diffusion-weighted: 16 images at 8 slice positions)"),
        ("time", "is 4-D (a time series: 16 images at 8 slice positions)"),
        ("legacy-echoes", "is 4-D (multi-echo, 2 echoes: 16 images at 8 slice positions)"),
        ("localizer", "is a localizer/scout series"),
        ("frames-without-groups", "holds 8 frames without functional groups"),
        ("frames-missing", "NumberOfFrames says 9 but it has 8 per-frame functional groups"),
    ],
)
def test_bad_enhanced_series_give_one_line_and_exit_2(
    case, message, tmp_path, tiny_model_file, capsys
):
    folder = tmp_path / "s"
    _bad_enhanced(case, folder)
    with pytest.raises(TransMRSRError) as caught:
        load_volume(folder)
    assert message in str(caught.value) and "\n" not in str(caught.value)
    out = tmp_path / "out.nii.gz"
    assert main(["restore", str(folder), str(out), "--model", str(tiny_model_file)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not out.exists()


def test_multi_frame_series_are_no_longer_refused_as_a_kind(tmp_path):
    write_enhanced_series(tmp_path / "s", scan(), oriented_affine("RAS", (1, 1, 4)))
    (series,) = dicom.find_series(tmp_path / "s")
    dicom.check_series_kind(series)  # no error: multi-frame is read
    series.headers[0].SamplesPerPixel = 3
    with pytest.raises(TransMRSRError, match="holds colour images"):
        dicom.check_series_kind(series)
