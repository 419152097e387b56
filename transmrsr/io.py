"""Volume input and output: NIfTI and FreeSurfer MGZ in, NIfTI out, geometry kept exact.

Everything the tool reads goes through :func:`load_volume`, which returns one 3-D float32 array
with its voxel-to-world affine (a :class:`~transmrsr.volume.Volume`; a folder is read as one
DICOM series, :mod:`transmrsr.dicom`, which builds its volume from :mod:`transmrsr.volume`
too, so that the arrow runs one way: io -> dicom -> volume),
and everything it writes goes through :func:`save_volume` or :func:`write_text`, which write
atomically (a temporary file in the target folder, then a rename) so that a killed run never
leaves a half-written output behind. Bad input of any kind is reported as a
:class:`~transmrsr.errors.TransMRSRError` with one clear line, and an output that cannot be
written (read-only file system, full disk, no permission) as an
:class:`~transmrsr.errors.OutputError`, with nothing left behind.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import tempfile
import zlib
from collections.abc import Iterator
from pathlib import Path

import nibabel as nib
import numpy as np

from transmrsr.errors import OutputError, TransMRSRError
from transmrsr.volume import Volume, check_affine, volume_from_array, voxel_sizes

#: Re-exported: every module and user reads images through ``transmrsr.io``.
__all__ = [
    "OUTPUT_DTYPES",
    "READABLE_SUFFIXES",
    "WRITABLE_SUFFIXES",
    "Volume",
    "atomic_path",
    "check_affine",
    "check_output_path",
    "check_writable_folder",
    "load_volume",
    "save_volume",
    "sidecar_path",
    "sidecar_slice_thickness",
    "to_nifti",
    "volume_from_array",
    "voxel_sizes",
    "write_text",
]

log = logging.getLogger(__name__)

#: File name endings the tool reads.
READABLE_SUFFIXES: tuple[str, ...] = (".nii", ".nii.gz", ".mgz", ".mgh")
#: File name endings the tool writes.
WRITABLE_SUFFIXES: tuple[str, ...] = (".nii", ".nii.gz")
#: Output data types accepted by ``--dtype``.
OUTPUT_DTYPES: tuple[str, ...] = ("float32", "float64", "int16", "uint16", "uint8", "int32")


def _suffix(path: Path) -> str:
    name = path.name.lower()
    for suffix in sorted(READABLE_SUFFIXES, key=len, reverse=True):
        if name.endswith(suffix):
            return suffix
    return path.suffix.lower()


def load_volume(path: str | os.PathLike[str], *, require_signal: bool = True) -> Volume:
    """Read one 3-D volume from a NIfTI (.nii, .nii.gz) or FreeSurfer (.mgz, .mgh) file, or
    from a folder holding one DICOM series.

    A 4-D file with a single volume is accepted (its last axis is dropped). Anything that is
    not one 3-D volume, a file that is missing, truncated or not an image, non-finite voxels or
    an affine that is not a valid grid are refused with a :class:`TransMRSRError`. A folder is
    read by :func:`transmrsr.dicom.load_dicom_folder` (imported only then, so that NIfTI users
    never load pydicom), which refuses what is not one restorable MR series.

    Args:
        path: the file or DICOM folder to read.
        require_signal: refuse a volume whose voxels are all equal (all zero, typically): no
            command of the tool can do anything meaningful with it.
    """
    path = Path(path)
    if not path.exists():
        raise TransMRSRError(f"{path}: no such file")
    if path.is_dir():
        from transmrsr.dicom import load_dicom_folder

        return load_dicom_folder(path, require_signal=require_signal)
    if _suffix(path) not in READABLE_SUFFIXES:
        raise TransMRSRError(
            f"{path}: unsupported file type; expected one of {', '.join(READABLE_SUFFIXES)}"
        )
    try:
        image = nib.load(path)
        raw = np.asanyarray(image.dataobj)
    except (OSError, EOFError, zlib.error, ValueError, nib.filebasedimages.ImageFileError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise TransMRSRError(f"{path}: cannot read as an image ({reason})") from None
    header = image.header if isinstance(image.header, nib.Nifti1Header) else None
    return volume_from_array(
        raw, image.affine, header=header, path=path, source=str(path), require_signal=require_signal
    )


def sidecar_path(path: str | os.PathLike[str]) -> Path:
    """The JSON sidecar that BIDS and dcm2niix write beside an image: ``scan.nii.gz`` ->
    ``scan.json``."""
    path = Path(path)
    return path.with_name(path.name[: len(path.name) - len(_suffix(path))] + ".json")


def sidecar_slice_thickness(path: str | os.PathLike[str]) -> float | None:
    """``SliceThickness`` (mm) from the image's JSON sidecar, or None when there is none.

    NIfTI stores the distance between slices but not their thickness; dcm2niix copies the
    DICOM's into the sidecar, which is how a slice gap (5 mm slices every 6.5 mm) reaches a
    NIfTI workflow. A sidecar that cannot be read or holds no usable value is logged and
    ignored: it is optional metadata, and the image itself is still valid.
    """
    sidecar = sidecar_path(path)
    if not sidecar.is_file():
        return None
    try:
        with open(sidecar, encoding="utf-8") as handle:
            meta = json.load(handle)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        log.warning("%s: not readable as JSON (%s); its slice thickness is not used", sidecar, exc)
        return None
    value = meta.get("SliceThickness") if isinstance(meta, dict) else None
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        log.warning("%s: SliceThickness %r is not a number; not used", sidecar, value)
        return None
    if not math.isfinite(value) or value <= 0:
        log.warning("%s: SliceThickness %r is not a positive length; not used", sidecar, value)
        return None
    return float(value)


def check_output_path(
    output: str | os.PathLike[str], *inputs: str | os.PathLike[str], overwrite: bool = True
) -> Path:
    """Validate an output path before any work is done, so that errors come early.

    Refuses a file type the tool cannot write, a missing or unwritable folder, an existing
    output when ``overwrite`` is false, and an output that is one of the inputs (inputs are
    never overwritten). The folder is tried with a real file (:func:`check_writable_folder`):
    permission bits do not tell about a read-only mount or ``/proc``, nor anything to root.
    """
    out = Path(output)
    if _suffix(out) not in WRITABLE_SUFFIXES:
        raise TransMRSRError(f"{out}: output must end in {' or '.join(WRITABLE_SUFFIXES)}")
    folder = out.parent if str(out.parent) else Path(".")
    if not folder.is_dir():
        raise TransMRSRError(f"{out}: output folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise TransMRSRError(f"{out}: output folder {folder} is not writable")
    check_writable_folder(folder, what=f"{out}: output folder")
    if out.is_dir():
        raise TransMRSRError(f"{out}: is a folder, expected a file name")
    for src in inputs:
        src_path = Path(src)
        same = out.resolve() == src_path.resolve()
        if not same and out.exists() and src_path.exists():
            same = os.path.samefile(out, src_path)
        if same:
            raise TransMRSRError(
                f"{out}: output is the same file as input {src}; inputs are never overwritten"
            )
    if not overwrite and out.exists():
        raise TransMRSRError(f"{out}: exists already (use --overwrite to replace it)")
    return out


def _reason(exc: OSError) -> str:
    """What the system said, e.g. ``Read-only file system``, ``No space left on device``."""
    return exc.strerror or str(exc) or type(exc).__name__


def check_writable_folder(folder: str | os.PathLike[str], *, what: str | None = None) -> Path:
    """Create and remove an empty file in ``folder``, or raise :class:`OutputError`.

    The only test that answers for every reason a write fails at the end of a long run: a
    read-only mount, a pseudo file system such as ``/proc``, a quota, an ACL, or permission
    bits that root ignores. Done before any work, it turns a crash after minutes into one line
    at once.
    """
    folder = Path(folder)
    label = what or str(folder)
    try:
        fd, probe = tempfile.mkstemp(prefix=".transmrsr-write-test.", dir=folder)
    except OSError as exc:
        raise OutputError(f"{label} {folder} is not writable ({_reason(exc)})") from None
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(probe)
    return folder


def _new_file_mode() -> int:
    """``0o666`` less the process umask (read without changing it for long)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str], *, suffix: str = "") -> Iterator[str]:
    """A temporary file name next to ``target`` that becomes ``target`` only on success.

    Write to the yielded name; when the block ends normally the file is renamed over
    ``target`` (atomic on one file system), and when it raises the temporary file is removed,
    so a killed or failed run never leaves a half-written output. ``suffix`` keeps the file
    type recognisable to writers that choose a format by extension. The file gets the
    permissions of a newly created file (``0o666`` less the umask), not the owner-only ones of
    the temporary file, so that outputs on a shared server are readable as usual.

    An :class:`OSError` while writing (a full disk, a read-only file system, no permission)
    becomes an :class:`OutputError` naming ``target`` and the reason, in one line, once the
    temporary file is gone.
    """
    out = Path(target)
    try:
        fd, tmp_name = tempfile.mkstemp(
            prefix=f".{out.name}.", suffix=f".tmp{suffix}", dir=out.parent
        )
    except OSError as exc:
        raise OutputError(f"{out}: cannot write ({_reason(exc)})") from None
    os.close(fd)
    try:
        yield tmp_name
        os.chmod(tmp_name, _new_file_mode())
        os.replace(tmp_name, out)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
        if isinstance(exc, OSError):
            raise OutputError(
                f"{out}: cannot write ({_reason(exc)}); nothing was written"
            ) from None
        raise


def write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write a text file (JSON sidecar, HTML report) atomically, as :func:`save_volume` does
    for volumes; an :class:`OutputError` when it cannot be written."""
    out = Path(path)
    with (
        atomic_path(out, suffix=out.suffix) as tmp_name,
        open(tmp_name, "w", encoding="utf-8") as f,
    ):
        f.write(text)
    return out


def _cast(data: np.ndarray, dtype: str) -> np.ndarray:
    if dtype not in OUTPUT_DTYPES:
        raise TransMRSRError(
            f"unknown output dtype {dtype!r}; choose from {', '.join(OUTPUT_DTYPES)}"
        )
    target = np.dtype(dtype)
    if target.kind == "f":
        return data.astype(target)
    info = np.iinfo(target)
    return np.clip(np.rint(data), info.min, info.max).astype(target)


#: Characters the NIfTI-1 ``descrip`` field holds (80 bytes, one kept for the terminator).
DESCRIP_LENGTH = 79


def to_nifti(
    volume: Volume,
    *,
    dtype: str = "float32",
    description: str | None = None,
    source: str = "output",
) -> nib.Nifti1Image:
    """The NIfTI image :func:`save_volume` writes, in memory: qform and sform equal to the
    volume's affine, the source header's codes and description kept, units millimetres.

    ``description`` replaces the header's ``descrip`` (what ``fslhd`` and ``mri_info`` show;
    cut to its 79 characters), so a derived image says what made it. The Python interface
    returns these images, and the commands write the same ones, so both give the same file.
    """
    check_affine(volume.affine, source=source)
    data = _cast(np.asarray(volume.data), dtype)
    header = nib.Nifti1Header()
    sform_code = qform_code = 1
    if volume.header is not None:
        sform_code = int(volume.header["sform_code"]) or 1
        qform_code = int(volume.header["qform_code"]) or sform_code
        header["descrip"] = volume.header["descrip"]
    if description is not None:
        header["descrip"] = description.encode("ascii", "replace")[:DESCRIP_LENGTH]
    image = nib.Nifti1Image(data, volume.affine, header=header)
    image.set_sform(volume.affine, code=sform_code)
    image.set_qform(volume.affine, code=qform_code)
    if not np.allclose(image.get_qform(), volume.affine, atol=1e-4):
        # A qform is a rotation plus zooms and cannot hold a shear; a sheared grid is then
        # described by the sform alone, as the NIfTI standard intends.
        image.set_qform(None, code=0)
    image.header.set_xyzt_units(xyz="mm", t="sec")
    image.header.set_data_dtype(data.dtype)
    return image


def save_volume(
    volume: Volume,
    path: str | os.PathLike[str],
    *,
    dtype: str = "float32",
    description: str | None = None,
) -> Path:
    """Write a volume as NIfTI, atomically, with qform and sform both equal to its affine.

    The file is first written to a hidden temporary file in the target folder and then renamed
    over the target, so readers never see a partial file and an interrupted run leaves nothing.
    When the source header was a NIfTI, its sform/qform codes (e.g. MNI vs scanner space) and
    description carry over; units are set to millimetres. ``description`` replaces the
    header's ``descrip`` (what ``fslhd`` and ``mri_info`` show; cut to its 79 characters), so
    a derived file says what made it.
    """
    out = check_output_path(path)
    image = to_nifti(volume, dtype=dtype, description=description, source=str(out))
    with atomic_path(out, suffix=_suffix(out)) as tmp_name:
        nib.save(image, tmp_name)
    log.debug("wrote %s: shape %s, %s", out, image.shape, image.get_data_dtype())
    return out
