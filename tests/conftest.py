"""Shared fixtures: synthetic volumes in every orientation, and the real scans when present."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

# Two shared cores: spinning OpenMP threads waste them when anything else runs (up to 90x
# slower tests). Must be set before torch starts its thread pool.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import nibabel as nib
import numpy as np
import pytest
import torch

from transmrsr.models.registry import build_model, config_to_dict
from transmrsr.training.checkpoint import save_model

torch.set_num_threads(2)

#: The project's real development scans (never committed): ``../shared/data/mri``.
SHARED_MRI = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mri"

#: Real volumes with their orientation, one per orientation the manifest promises.
REAL_VOLUMES = {
    "colin27_t1.nii.gz": "RAS",
    "m2208_t2w.nii.gz": "LAS",
    "fs_norm_t1.mgz": "LIA",
    "ixi012_t1_2mm.nii.gz": "PSR",
}


@pytest.fixture
def one_torch_thread():
    """Run a test on one torch thread: tiny models are dominated by per-op overhead, and two
    OpenMP threads on a shared 2-core machine run them several times slower than one."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def n_params(module: torch.nn.Module) -> int:
    """Number of parameters of a module."""
    return sum(p.numel() for p in module.parameters())


def shared_file(name: str) -> Path:
    """Path of a shared real scan, skipping the test when the shared folder is absent."""
    path = SHARED_MRI / name
    if not path.exists():
        pytest.skip(f"real data not available: {path}")
    return path


def oriented_affine(codes: str, zooms=(1.0, 1.0, 1.0), origin=(-90.0, -110.0, -70.0)) -> np.ndarray:
    """An affine whose array axes run along the given orientation codes (e.g. 'LIA')."""
    directions = {
        "R": (1, 0, 0),
        "L": (-1, 0, 0),
        "A": (0, 1, 0),
        "P": (0, -1, 0),
        "S": (0, 0, 1),
        "I": (0, 0, -1),
    }
    affine = np.eye(4)
    for axis, code in enumerate(codes):
        affine[:3, axis] = np.asarray(directions[code], float) * zooms[axis]
    affine[:3, 3] = origin
    return affine


def oblique_affine(zooms=(1.0, 1.0, 1.0)) -> np.ndarray:
    """A rotated (oblique) grid: 20 degrees about z then 10 degrees about x."""
    a, b = np.deg2rad(20), np.deg2rad(10)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    affine = np.eye(4)
    affine[:3, :3] = rz @ rx @ np.diag(zooms)
    affine[:3, 3] = (-80.0, -100.0, -60.0)
    return affine


def phantom(shape=(40, 48, 36), seed: int = 0) -> np.ndarray:
    """A smooth head-like phantom with edges: ellipsoids of different intensity, plus noise."""
    rng = np.random.default_rng(seed)
    grid = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    r2 = sum(g**2 for g in grid)
    vol = np.where(r2 < 0.8, 100.0, 0.0)
    vol += np.where(r2 < 0.4, 60.0, 0.0)
    vol += 30.0 * np.sin(4 * grid[0]) * (r2 < 0.8)
    vol += rng.normal(0, 1.0, shape) * (r2 < 0.8)
    return vol.astype(np.float32)


@pytest.fixture
def write_nifti(tmp_path):
    """Write an array with an affine to a NIfTI file in tmp_path and return its path."""

    def _write(data, affine, name="vol.nii.gz"):
        path = tmp_path / name
        nib.save(nib.Nifti1Image(np.asarray(data), affine), path)
        return path

    return _write


@pytest.fixture
def phantom_data(tmp_path) -> Path:
    """Four small T1 phantoms with IXI names, on PSR and LAS grids (a training folder)."""
    folder = tmp_path / "data"
    folder.mkdir()
    for i in range(4):
        affine = oriented_affine("PSR" if i % 2 else "LAS")
        nib.save(
            nib.Nifti1Image(phantom((36, 40, 30), seed=i), affine),
            folder / f"IXI00{i}-Guys-0000-T1.nii.gz",
        )
    return folder


@pytest.fixture(scope="session")
def tiny_model_file(tmp_path_factory):
    """A tiny TransMRSR (random weights, random centroids) saved as a model file."""
    torch.manual_seed(0)
    model = build_model("transmrsr", "tiny")
    model.sdt.set_centroids(torch.randn(8, 32))
    path = tmp_path_factory.mktemp("model") / "tiny.safetensors"
    return save_model(path, model.state_dict(), config_to_dict(model.config), info={"test": 1})


def write_dicom_series(
    folder: Path,
    data: np.ndarray,
    affine: np.ndarray,
    *,
    thickness: float | None = None,
    spacing_tag: float | None = None,
    series_uid: str | None = None,
    series_number: int = 3,
    description: str = "T1 AX 4mm",
    modality: str = "MR",
    image_type: tuple[str, ...] = ("ORIGINAL", "PRIMARY", "M", "ND"),
    echo_number: int | None = None,
    slope: float = 1.0,
    intercept: float = 0.0,
    prefix: str = "IM",
    reverse_numbers: bool = False,
) -> list[Path]:
    """Write a 3-D integer array as a DICOM MR series, one file per slice along axis 2, so that
    reading it back must give exactly ``data`` on ``affine`` (RAS+). Stored values are
    ``(data - intercept) / slope``; ``thickness`` is the SliceThickness tag (default: the
    spacing), ``spacing_tag`` SpacingBetweenSlices (default: none written)."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ np.asarray(affine, np.float64)
    zooms = np.linalg.norm(lps[:3, :3], axis=0)
    row, col = lps[:3, 0] / zooms[0], lps[:3, 1] / zooms[1]
    uid = series_uid or generate_uid()
    study = generate_uid(prefix="1.2.826.0.1.3680043.8.498.1.")
    stored = np.rint((np.asarray(data, np.float64) - intercept) / slope).astype("<i2")
    n = data.shape[2]

    def ds_text(values) -> list[str]:
        return [f"{float(v):.10g}"[:16] for v in values]

    paths = []
    for k in range(n):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = MRImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        path = folder / f"{prefix}{k:04d}.dcm"
        ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID = MRImageStorage
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID = study
        ds.SeriesInstanceUID = uid
        ds.Modality = modality
        ds.SeriesNumber = series_number
        ds.SeriesDescription = description
        ds.InstanceNumber = (n - k) if reverse_numbers else (k + 1)
        ds.ImageType = list(image_type)
        ds.ImagePositionPatient = ds_text((lps @ np.array([0.0, 0.0, k, 1.0]))[:3])
        ds.ImageOrientationPatient = ds_text([*row, *col])
        ds.PixelSpacing = ds_text([zooms[1], zooms[0]])
        ds.SliceThickness = f"{thickness if thickness is not None else zooms[2]:.6g}"
        if spacing_tag is not None:
            ds.SpacingBetweenSlices = f"{spacing_tag:.6g}"
        if echo_number is not None:
            ds.EchoNumbers = echo_number
            ds.EchoTime = 10.0 * echo_number
        ds.RescaleSlope = f"{slope:.6g}"
        ds.RescaleIntercept = f"{intercept:.6g}"
        ds.Rows, ds.Columns = data.shape[1], data.shape[0]
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.PixelData = np.ascontiguousarray(stored[:, :, k].T).tobytes()
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def write_thick_scans(folder, count: int) -> None:
    """``count`` small thick-slice scans ``s0.nii.gz``... (x4 along SI) in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        data = phantom((24, 24, 6), seed=i)
        nib.save(nib.Nifti1Image(data, oriented_affine("RAS", (1, 1, 4))), folder / f"s{i}.nii.gz")


@contextlib.contextmanager
def benchmark_module(name: str) -> Iterator[ModuleType]:
    """A script of ``benchmarks/`` imported as a module (registered in ``sys.modules`` while
    in use, so that its dataclasses and worker processes find it)."""
    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(name, None)
