"""Image-quality metrics: the paper's slice protocol and brain-masked volume metrics.

Everything here is a pure array function (numpy or torch in, numbers out, no file I/O) so that
the ``evaluate`` command, training validation and the benchmark compute a metric in exactly one
way (SPEC section 6).

Conventions shared by all functions:

* **8-bit scale.** Before PSNR/SSIM both volumes are mapped onto 0..255 with the *reference's*
  intensity range (:func:`to_8bit_scale`), so a number does not depend on the scanner's units
  and the prediction cannot improve its score by changing its own range.
* **SSIM** is Wang et al. (2004) with an 11-tap Gaussian window (sigma 1.5, truncated at 3.5
  sigma as in scipy/scikit-image), K1 = 0.01, K2 = 0.03 and *population* covariance. With
  ``border="valid"`` the mean is taken over the SSIM map cropped by the window radius (5), which
  is exactly what ``skimage.metrics.structural_similarity(..., gaussian_weights=True, sigma=1.5,
  use_sample_covariance=False)`` averages; with ``border="same"`` the map has the image's size
  (edges filled by half-sample symmetric reflection, scipy's ``mode="reflect"``, as in
  scikit-image's full map) so it can be indexed by a mask.
* **Precision.** Computation is in float64 by default: on 0..255 data the local variance
  ``E[x^2] - E[x]^2`` cancels badly in float32 (measured: up to 5e-4 on single SSIM-map values
  in flat bright regions, about 1e-6 on a slice's mean SSIM). Pass ``dtype=torch.float32``
  where speed matters more than the last digits (e.g. validation on a GPU).
* **Perfect images.** :func:`psnr` and :func:`psnr_batch` return ``inf`` for identical inputs
  (the mathematically right answer). Anything that *averages* PSNR (the dataclasses below) caps
  each value at :data:`PSNR_CAP_DB` first and counts the perfect images, so one perfect slice
  cannot silently turn a mean into ``inf``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from scipy import ndimage
from skimage.filters import threshold_otsu

from transmrsr.errors import TransMRSRError

ArrayLike = np.ndarray | torch.Tensor
Border = Literal["valid", "same"]

#: SSIM constants of Wang et al. (2004) and the paper.
SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03
_RADIUS = (SSIM_WINDOW - 1) // 2

#: Upper bound applied to each PSNR value before it is averaged or reported in a dataclass.
#: 100 dB on the 8-bit scale is an MSE of 6.5e-6 grey levels squared: indistinguishable from a
#: perfect copy, and far above any real restoration (the paper's best is under 40 dB).
PSNR_CAP_DB = 100.0

#: A reference slice is "empty" (skipped by the paper protocol) when none of its voxels exceeds
#: this many grey levels on the 8-bit scale: background plus a little noise or interpolation
#: ringing, but no tissue.
EMPTY_SLICE_GREY_LEVELS = 1.0

#: Elements per filtered quantity processed at once on a CPU. The separable filter is memory
#: bound; blocks that stay in the cache are several times faster than one pass over a volume.
_CPU_BLOCK_ELEMENTS = 1 << 20
_GPU_BLOCK_ELEMENTS = 1 << 24

_NUMPY_DTYPES = {
    torch.float64: np.float64,
    torch.float32: np.float32,
    torch.float16: np.float16,
}


# ----------------------------------------------------------------------------- input handling


def _as_tensor(x: ArrayLike, name: str, dtype: torch.dtype) -> torch.Tensor:
    """A torch tensor of ``dtype`` on the input's device (numpy arrays go to the CPU)."""
    if isinstance(x, torch.Tensor):
        if x.is_complex():
            raise TransMRSRError(f"{name} must be real-valued")
        return x.detach().to(dtype)
    if not isinstance(x, np.ndarray):
        raise TransMRSRError(f"{name} must be a numpy array or a torch tensor, not {type(x)}")
    if x.dtype.kind not in "biuf":
        raise TransMRSRError(f"{name} must hold real numbers, not {x.dtype}")
    # Converting in numpy first also handles dtypes and byte orders torch cannot wrap (the
    # big-endian arrays nibabel returns for some files).
    if dtype == torch.bool:
        return torch.from_numpy(np.ascontiguousarray(x != 0))
    converted = np.ascontiguousarray(x, dtype=_NUMPY_DTYPES.get(dtype, np.float64))
    return torch.from_numpy(converted).to(dtype)


def _check_pair(pred: torch.Tensor, ref: torch.Tensor) -> None:
    """Same shape, non-empty and finite: the preconditions of every comparison."""
    if tuple(pred.shape) != tuple(ref.shape):
        raise TransMRSRError(
            f"prediction and reference shapes differ: {tuple(pred.shape)} vs {tuple(ref.shape)}"
        )
    if pred.numel() == 0:
        raise TransMRSRError("cannot compare empty arrays")
    for name, t in (("prediction", pred), ("reference", ref)):
        if not _all_finite(t):
            raise TransMRSRError(f"the {name} contains NaN or infinite values")


def _all_finite(t: torch.Tensor) -> bool:
    """Whether every element is finite. The sum is finite exactly when no element is NaN or
    infinite, unless it overflows; only then is the slower element-wise test needed."""
    if bool(torch.isfinite(t.sum(dtype=torch.float64))):
        return True
    return bool(torch.isfinite(t).all())


def _pair(
    pred: ArrayLike, ref: ArrayLike, dtype: torch.dtype = torch.float64
) -> tuple[torch.Tensor, torch.Tensor]:
    p = _as_tensor(pred, "prediction", dtype)
    r = _as_tensor(ref, "reference", dtype).to(p.device)
    _check_pair(p, r)
    return p, r


def _check_data_range(data_range: float) -> float:
    value = float(data_range)
    if not math.isfinite(value) or value <= 0:
        raise TransMRSRError(f"data_range must be a positive finite number, got {data_range}")
    return value


# ----------------------------------------------------------------------------- 8-bit scale


def _reference_range(
    ref: torch.Tensor, ref_range: tuple[float, float] | None
) -> tuple[float, float]:
    if ref_range is None:
        lo, hi = float(ref.min()), float(ref.max())
        if not hi > lo:
            raise TransMRSRError(
                "the reference is constant: it has no intensity range to define the 8-bit scale"
            )
        return lo, hi
    try:
        lo, hi = (float(v) for v in ref_range)
    except (TypeError, ValueError) as exc:
        raise TransMRSRError(f"ref_range must be two numbers (lo, hi), got {ref_range!r}") from exc
    if not (math.isfinite(lo) and math.isfinite(hi) and hi > lo):
        raise TransMRSRError(f"ref_range must be finite with hi > lo, got ({lo}, {hi})")
    return lo, hi


def _scale_tensors(
    pred: torch.Tensor, ref: torch.Tensor, ref_range: tuple[float, float] | None
) -> tuple[torch.Tensor, torch.Tensor]:
    lo, hi = _reference_range(ref, ref_range)
    gain = 255.0 / (hi - lo)
    return ((pred - lo) * gain).clamp_(0.0, 255.0), ((ref - lo) * gain).clamp_(0.0, 255.0)


def to_8bit_scale(
    pred: ArrayLike, ref: ArrayLike, *, ref_range: tuple[float, float] | None = None
) -> tuple[ArrayLike, ArrayLike]:
    """Map both volumes onto the paper's 8-bit scale (0..255) of the *reference*.

    ``lo`` (the reference minimum, or ``ref_range[0]``) becomes 0 and ``hi`` (the reference
    maximum, or ``ref_range[1]``) becomes 255, with the same linear map applied to the
    prediction, then both are clipped to [0, 255]. Using the reference's range for both keeps
    the prediction's errors in range and intensity visible in the metrics; clipping bounds the
    scale so the PSNR peak of 255 holds.

    The result is float64 and deliberately **not rounded** to integers: rounding adds up to half
    a grey level of quantisation noise that would cap PSNR near 59 dB and differs between
    implementations. Numpy in gives numpy out; torch in gives torch out (on the same device).

    Raises:
        TransMRSRError: shapes differ, non-finite values, a constant reference, or a bad
            ``ref_range``.
    """
    p, r = _pair(pred, ref)
    p8, r8 = _scale_tensors(p, r, ref_range)
    if isinstance(pred, torch.Tensor):
        return p8, r8
    return p8.numpy(), r8.numpy()


# ----------------------------------------------------------------------------- SSIM core


def _gaussian_taps() -> list[float]:
    """The normalised 11-tap Gaussian of scipy's ``gaussian_filter1d(sigma=1.5, truncate=3.5)``."""
    x = np.arange(-_RADIUS, _RADIUS + 1, dtype=np.float64)
    w = np.exp(-0.5 * (x / SSIM_SIGMA) ** 2)
    return [float(v) for v in w / w.sum()]


_TAPS = _gaussian_taps()


def _filter_valid(z: torch.Tensor, dim: int) -> torch.Tensor:
    """Gaussian-filter ``z`` along ``dim`` keeping only fully-covered positions (length - 10).

    The separable filter is written as a weighted sum of shifted views instead of ``conv1d``: for
    float64 on a CPU, PyTorch's convolutions take a slow generic path (measured 5-10x slower than
    this), and the sum of views runs unchanged on any device.
    """
    n = z.shape[dim] - 2 * _RADIUS
    out = z.narrow(dim, 0, n) * _TAPS[0]
    for k in range(1, SSIM_WINDOW):
        out.add_(z.narrow(dim, k, n), alpha=_TAPS[k])
    return out


def _reflect_index(n: int, pad: int, device: torch.device) -> torch.Tensor:
    """Indices of a length-``n`` axis extended by ``pad`` on both sides with half-sample
    symmetric reflection (``d c b a | a b c d | d c b a``), valid for any ``n`` >= 1."""
    i = torch.arange(-pad, n + pad, device=device) % (2 * n)
    return torch.where(i >= n, 2 * n - 1 - i, i)


def _ssim_from_blocks(
    x: torch.Tensor, y: torch.Tensor, dims: tuple[int, ...], c1: float, c2: float
) -> torch.Tensor:
    """SSIM map of a block whose ``dims`` are already extended by the window radius."""
    stack = torch.stack((x, y, x * x, y * y, x * y))
    for d in dims:
        stack = _filter_valid(stack, d + 1)
    ux, uy, uxx, uyy, uxy = stack.unbind(0)
    uxuy = ux * uy
    ux2 = ux * ux
    uy2 = uy * uy
    num = (2.0 * uxuy + c1) * (2.0 * (uxy - uxuy) + c2)
    den = (ux2 + uy2 + c1) * ((uxx - ux2) + (uyy - uy2) + c2)
    return num / den


def _ssim_blocks(
    pred: torch.Tensor,
    ref: torch.Tensor,
    *,
    n_spatial: int,
    data_range: float,
    border: Border,
) -> Iterator[tuple[int, int, torch.Tensor]]:
    """SSIM map in blocks along axis 0: yields ``(start, stop, map_block)``.

    For 2-D batches ([N, H, W], ``n_spatial`` = 2) a block is a few whole images; for a volume
    ([D, H, W], ``n_spatial`` = 3) it is a slab of output planes computed from the slab plus a
    halo of 5 planes each side. Blocks keep the memory bounded and the working set in the cache.
    """
    if border not in ("valid", "same"):
        raise TransMRSRError(f"border must be 'valid' or 'same', got {border!r}")
    shape = tuple(pred.shape)
    spatial = shape[-n_spatial:]
    if border == "valid" and min(spatial) < SSIM_WINDOW:
        raise TransMRSRError(
            f"SSIM needs every image dimension >= {SSIM_WINDOW} (the window), got {spatial}"
        )
    c1 = (SSIM_K1 * data_range) ** 2
    c2 = (SSIM_K2 * data_range) ** 2
    device = pred.device
    halo = 2 * _RADIUS if border == "same" else 0
    # Index vectors extending each in-plane axis (identity for 'valid').
    plane_index = [
        _reflect_index(n, _RADIUS, device) if border == "same" else None for n in shape[1:]
    ]
    n_out0 = shape[0] if (n_spatial == 2 or border == "same") else shape[0] - 2 * _RADIUS
    plane_elements = 5 * math.prod(n + halo for n in shape[1:])
    budget = _GPU_BLOCK_ELEMENTS if device.type == "cuda" else _CPU_BLOCK_ELEMENTS
    step = max(1, budget // plane_elements)
    if n_spatial == 3:
        # A slab needs 2 * radius extra planes, so do not let it get much thinner than that.
        step = max(step, 2 * _RADIUS)
    dims = tuple(range(3 - n_spatial, 3))
    for start in range(0, n_out0, step):
        stop = min(n_out0, start + step)
        if n_spatial == 2:
            xb, yb = pred[start:stop], ref[start:stop]
        elif border == "same":
            rows = _reflect_index(shape[0], _RADIUS, device)[start : stop + 2 * _RADIUS]
            xb, yb = pred.index_select(0, rows), ref.index_select(0, rows)
        else:
            xb, yb = pred[start : stop + 2 * _RADIUS], ref[start : stop + 2 * _RADIUS]
        for axis, index in enumerate(plane_index, start=1):
            if index is not None:
                xb = xb.index_select(axis, index)
                yb = yb.index_select(axis, index)
        # Contiguous blocks: the shifted-view sums are several times slower on strided memory.
        yield start, stop, _ssim_from_blocks(xb.contiguous(), yb.contiguous(), dims, c1, c2)


def _map_shape(shape: tuple[int, ...], n_spatial: int, border: Border) -> tuple[int, ...]:
    if border == "same":
        return shape
    return shape[: len(shape) - n_spatial] + tuple(n - 2 * _RADIUS for n in shape[-n_spatial:])


def _ssim_batch_tensor(
    p: torch.Tensor, r: torch.Tensor, rng: float, border: Border, return_map: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-image SSIM (and optionally the map) of validated tensors ``[N, H, W]``."""
    means = torch.empty(p.shape[0], dtype=p.dtype, device=p.device)
    full = None
    if return_map:
        full = torch.empty(_map_shape(tuple(p.shape), 2, border), dtype=p.dtype, device=p.device)
    for start, stop, block in _ssim_blocks(p, r, n_spatial=2, data_range=rng, border=border):
        means[start:stop] = block.mean(dim=(1, 2))
        if full is not None:
            full[start:stop] = block
    return means, full


def ssim_batch(
    pred: ArrayLike,
    ref: ArrayLike,
    *,
    data_range: float,
    border: Border = "valid",
    return_map: bool = False,
    dtype: torch.dtype = torch.float64,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Per-image SSIM of a batch of 2-D images ``[N, H, W]`` (or one image ``[H, W]``).

    With ``border="valid"`` each value equals scikit-image's ``structural_similarity`` with
    ``gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=data_range``
    (mean over the map cropped by 5 pixels). Returns a tensor ``[N]`` (a 0-d tensor for one
    image) on the input's device, and with ``return_map`` also the SSIM map (``[N, H-10, W-10]``
    for ``valid``, ``[N, H, W]`` for ``same``).
    """
    rng = _check_data_range(data_range)
    p, r = _pair(pred, ref, dtype)
    single = p.ndim == 2
    if single:
        p, r = p.unsqueeze(0), r.unsqueeze(0)
    if p.ndim != 3:
        raise TransMRSRError(f"ssim_batch expects [N, H, W] or [H, W], got {tuple(p.shape)}")
    means, full = _ssim_batch_tensor(p, r, rng, border, return_map)
    if single:
        means = means[0]
        full = None if full is None else full[0]
    return (means, full) if full is not None else means


def ssim3d(
    pred: ArrayLike,
    ref: ArrayLike,
    *,
    data_range: float,
    border: Border = "valid",
    return_map: bool = False,
    dtype: torch.dtype = torch.float64,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """SSIM of two 3-D volumes with a 3-D Gaussian window (11 x 11 x 11, sigma 1.5).

    ``border="valid"`` matches scikit-image's 3-D ``structural_similarity`` (same options as
    :func:`ssim_batch`); ``border="same"`` averages the whole, uncropped map. Returns a 0-d
    tensor, and with ``return_map`` also the map
    (``[D-10, H-10, W-10]`` for ``valid``, ``[D, H, W]`` for ``same``).
    """
    rng = _check_data_range(data_range)
    p, r = _pair(pred, ref, dtype)
    if p.ndim != 3:
        raise TransMRSRError(f"ssim3d expects a 3-D volume, got shape {tuple(p.shape)}")
    total = torch.zeros((), dtype=dtype, device=p.device)
    full = None
    if return_map:
        full = torch.empty(_map_shape(tuple(p.shape), 3, border), dtype=dtype, device=p.device)
    count = 0
    for start, stop, block in _ssim_blocks(p, r, n_spatial=3, data_range=rng, border=border):
        total += block.sum()
        count += block.numel()
        if full is not None:
            full[start:stop] = block
    mean = total / count
    return (mean, full) if full is not None else mean


# ----------------------------------------------------------------------------- PSNR


def _psnr_from_mse(mse: torch.Tensor, data_range: float) -> torch.Tensor:
    """10 log10(range^2 / MSE), with MSE = 0 giving +inf without a warning."""
    safe = torch.where(mse > 0, mse, torch.ones_like(mse))
    value = 10.0 * torch.log10(data_range**2 / safe)
    return torch.where(mse > 0, value, torch.full_like(value, math.inf))


def psnr(pred: ArrayLike, ref: ArrayLike, data_range: float) -> float:
    """PSNR in dB over all elements, as ``skimage.metrics.peak_signal_noise_ratio``.

    Identical inputs give ``inf`` (no warning). Computed in float64.
    """
    rng = _check_data_range(data_range)
    p, r = _pair(pred, ref)
    return float(_psnr_from_mse(torch.mean((p - r) ** 2), rng))


def psnr_batch(
    pred: ArrayLike, ref: ArrayLike, data_range: float, dtype: torch.dtype = torch.float64
) -> torch.Tensor:
    """Per-item PSNR in dB of a batch ``[N, ...]`` (MSE over all but the first axis).

    Returns a tensor ``[N]`` on the input's device; a perfect item gives ``inf``. Use
    :func:`cap_psnr` before averaging.
    """
    rng = _check_data_range(data_range)
    p, r = _pair(pred, ref, dtype)
    if p.ndim < 2:
        raise TransMRSRError(f"psnr_batch expects [N, ...] with N items, got {tuple(p.shape)}")
    return _psnr_batch_tensor(p, r, rng)


def _psnr_batch_tensor(p: torch.Tensor, r: torch.Tensor, rng: float) -> torch.Tensor:
    diff = (p - r).flatten(1)
    return _psnr_from_mse((diff * diff).mean(dim=1), rng)


def cap_psnr(values: ArrayLike, cap: float = PSNR_CAP_DB) -> np.ndarray:
    """PSNR values as a float64 numpy array with each value limited to ``cap`` dB (inf too)."""
    arr = values.detach().cpu().numpy() if isinstance(values, torch.Tensor) else values
    return np.minimum(np.asarray(arr, dtype=np.float64), cap)


# ----------------------------------------------------------------------------- paper protocol


@dataclass(frozen=True)
class SliceMetrics:
    """Result of :func:`paper_protocol`.

    Attributes:
        psnr: mean over the scored slices of the per-slice PSNR (each capped at
            :data:`PSNR_CAP_DB`), in dB on the 8-bit scale.
        ssim: mean per-slice SSIM.
        n_slices: number of slices scored (non-empty reference slices).
        n_perfect: slices whose prediction equals the reference exactly (PSNR capped from inf).
        slice_axis: the array axis the volume was sliced along.
        slice_indices: index along ``slice_axis`` of each scored slice.
        psnr_per_slice: capped PSNR of each scored slice.
        ssim_per_slice: SSIM of each scored slice.
    """

    psnr: float
    ssim: float
    n_slices: int
    n_perfect: int
    slice_axis: int
    slice_indices: np.ndarray
    psnr_per_slice: np.ndarray
    ssim_per_slice: np.ndarray


def _pad_centred(slices: torch.Tensor, size: int) -> torch.Tensor:
    """Zero-pad a stack ``[N, A, B]`` so each in-plane side is at least ``size``, centred (an odd
    remainder goes after); sides already ``size`` or larger are left as they are."""
    n, a, b = slices.shape
    ta, tb = max(a, size), max(b, size)
    if (ta, tb) == (a, b):
        return slices
    out = slices.new_zeros((n, ta, tb))
    oa, ob = (ta - a) // 2, (tb - b) // 2
    out[:, oa : oa + a, ob : ob + b] = slices
    return out


def paper_protocol(
    pred: ArrayLike,
    ref: ArrayLike,
    *,
    slice_axis: int,
    pad_to: int = 256,
    ref_range: tuple[float, float] | None = None,
) -> SliceMetrics:
    """PSNR and SSIM per 2-D slice as in the paper (SPEC section 6), averaged over slices.

    Steps: both volumes go to the reference's 8-bit scale (:func:`to_8bit_scale`); the volume
    is cut into the 2-D planes ``index i along slice_axis``; planes whose reference has no voxel
    above :data:`EMPTY_SLICE_GREY_LEVELS` (1 grey level) are skipped; each plane is zero-padded,
    centred, to ``pad_to`` x ``pad_to`` (sides already larger are kept); then PSNR (peak 255)
    and SSIM (``valid`` border, i.e. scikit-image's value) are computed per plane.

    The padding is part of the protocol: its zeros (= the reference minimum, the background) are
    identical in both images, so they raise SSIM and PSNR compared with unpadded slices. Numbers
    are comparable with the paper only with the same ``pad_to``.

    Raises:
        TransMRSRError: bad shapes or values, a bad ``slice_axis`` or ``pad_to``, or a reference
            with no non-empty slice.
    """
    p, r = _pair(pred, ref)
    if p.ndim != 3:
        raise TransMRSRError(f"the paper protocol needs 3-D volumes, got shape {tuple(p.shape)}")
    if not isinstance(slice_axis, (int, np.integer)) or not -3 <= int(slice_axis) <= 2:
        raise TransMRSRError(f"slice_axis must be 0, 1 or 2, got {slice_axis!r}")
    axis = int(slice_axis) % 3
    if not isinstance(pad_to, (int, np.integer)) or pad_to < 1:
        raise TransMRSRError(f"pad_to must be a positive integer, got {pad_to!r}")
    p8, r8 = _scale_tensors(p, r, ref_range)
    p8 = p8.movedim(axis, 0)
    r8 = r8.movedim(axis, 0)
    keep = r8.flatten(1).amax(dim=1) > EMPTY_SLICE_GREY_LEVELS
    indices = torch.nonzero(keep).flatten()
    if indices.numel() == 0:
        raise TransMRSRError(
            f"every reference slice along axis {axis} is empty (no voxel above "
            f"{EMPTY_SLICE_GREY_LEVELS:g} on the 8-bit scale): nothing to score"
        )
    ps = _pad_centred(p8.index_select(0, indices), int(pad_to))
    rs = _pad_centred(r8.index_select(0, indices), int(pad_to))
    raw_psnr = _psnr_batch_tensor(ps, rs, 255.0)
    ssim_values = _ssim_batch_tensor(ps, rs, 255.0, "valid", False)[0].cpu().numpy()
    capped = cap_psnr(raw_psnr)
    return SliceMetrics(
        psnr=float(capped.mean()),
        ssim=float(ssim_values.mean()),
        n_slices=int(indices.numel()),
        n_perfect=int(torch.isinf(raw_psnr).sum()),
        slice_axis=axis,
        slice_indices=indices.cpu().numpy(),
        psnr_per_slice=capped,
        ssim_per_slice=ssim_values,
    )


# ----------------------------------------------------------------------------- masked metrics


@dataclass(frozen=True)
class VolumeMetrics:
    """Result of :func:`masked_volume_metrics`; all numbers are over the mask voxels.

    Attributes:
        psnr: dB on the 8-bit scale, from the MSE over the mask (capped at :data:`PSNR_CAP_DB`).
        ssim: mean of the 3-D SSIM map over the mask.
        mae: mean absolute error in grey levels of the 8-bit scale.
        nrmse: ``||pred - ref|| / ||ref||`` over the mask (scikit-image's "euclidean"
            normalisation; scale-free, 0 is perfect).
        n_voxels: number of mask voxels.
        perfect: the prediction equals the reference on every mask voxel (PSNR was inf).
    """

    psnr: float
    ssim: float
    mae: float
    nrmse: float
    n_voxels: int
    perfect: bool


def masked_volume_metrics(
    pred: ArrayLike,
    ref: ArrayLike,
    mask: ArrayLike,
    *,
    ref_range: tuple[float, float] | None = None,
) -> VolumeMetrics:
    """Volume-level metrics inside a brain mask, on the reference's 8-bit scale.

    PSNR uses the MSE over the mask voxels only, so background does not inflate it. SSIM is the
    mean over the mask voxels of the 3-D Gaussian SSIM map computed on the whole volume with the
    ``same`` border (the map has the volume's shape; the 5 voxels nearest each face use
    symmetric reflection), so every mask voxel has a value while each value still sees the
    voxels around it, inside or outside the mask. The 8-bit scale uses the whole reference's
    range (or ``ref_range``), not the range inside the mask.

    Raises:
        TransMRSRError: shapes differ (volumes or mask), non-finite values, a constant
            reference, or an empty mask.
    """
    p, r = _pair(pred, ref)
    if p.ndim != 3:
        raise TransMRSRError(f"masked metrics need 3-D volumes, got shape {tuple(p.shape)}")
    m = _as_tensor(mask, "mask", torch.bool).to(p.device)
    if tuple(m.shape) != tuple(p.shape):
        raise TransMRSRError(
            f"mask shape {tuple(m.shape)} differs from the volumes' {tuple(p.shape)}"
        )
    n = int(m.sum())
    if n == 0:
        raise TransMRSRError("the mask is empty: no voxel to score")
    p8, r8 = _scale_tensors(p, r, ref_range)
    diff = (p8 - r8)[m]
    mse = torch.mean(diff * diff)
    ref_norm = torch.linalg.vector_norm(r8[m])
    err_norm = torch.linalg.vector_norm(diff)
    if float(ref_norm) > 0:
        nrmse = float(err_norm / ref_norm)
    else:
        nrmse = 0.0 if float(err_norm) == 0 else math.inf
    total = torch.zeros((), dtype=torch.float64, device=p.device)
    for start, stop, block in _ssim_blocks(p8, r8, n_spatial=3, data_range=255.0, border="same"):
        total += block[m[start:stop]].sum()
    raw = float(_psnr_from_mse(mse, 255.0))
    return VolumeMetrics(
        psnr=min(raw, PSNR_CAP_DB),
        ssim=float(total) / n,
        mae=float(diff.abs().mean()),
        nrmse=nrmse,
        n_voxels=n,
        perfect=math.isinf(raw),
    )


# ----------------------------------------------------------------------------- brain mask


def _largest_component(mask: np.ndarray) -> np.ndarray:
    labels, count = ndimage.label(mask, structure=np.ones((3, 3, 3), dtype=bool))
    if count <= 1:
        return labels > 0
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return labels == int(np.argmax(sizes))


def auto_brain_mask(ref: ArrayLike, *, smoothing_sigma: float = 1.0) -> np.ndarray:
    """A head/brain foreground mask of a reference volume, for when the user gives none.

    This is a *foreground* mask, not a skull strip: on a skull-stripped scan it is the brain, on
    a whole-head scan it is the head (scalp and skull included). It keeps the metrics off the
    air background, which would otherwise dominate a volume-level PSNR/SSIM.

    Steps: Gaussian smoothing (``smoothing_sigma`` voxels) against noise; Otsu threshold
    (``skimage.filters.threshold_otsu``) of the smoothed volume; a closing with a radius-2 ball to
    bridge thin dark gaps (sulci, the skull-scalp boundary); the largest 26-connected component;
    hole filling in 3-D and then per 2-D slice along each axis (ventricles, and cavities open
    to the outside in 3-D but closed within a slice).

    Returns:
        A boolean numpy array of the reference's shape.

    Raises:
        TransMRSRError: not 3-D, non-finite values, or a constant reference.
    """
    r = _as_tensor(ref, "reference", torch.float32).cpu()
    if r.ndim != 3:
        raise TransMRSRError(f"auto_brain_mask needs a 3-D volume, got shape {tuple(r.shape)}")
    if not bool(torch.isfinite(r).all()):
        raise TransMRSRError("the reference contains NaN or infinite values")
    vol = r.numpy()
    if not float(vol.max()) > float(vol.min()):
        raise TransMRSRError("the reference is constant: no foreground to find")
    smooth = ndimage.gaussian_filter(vol, smoothing_sigma) if smoothing_sigma > 0 else vol
    fg = smooth > threshold_otsu(smooth)
    radius = 2
    zz, yy, xx = np.mgrid[-radius : radius + 1, -radius : radius + 1, -radius : radius + 1]
    ball = zz**2 + yy**2 + xx**2 <= radius**2
    # Pad so that the closing's erosion does not eat foreground touching the volume's faces.
    padded = np.pad(fg, radius + 1)
    fg = ndimage.binary_closing(padded, structure=ball)[(slice(radius + 1, -(radius + 1)),) * 3]
    fg = _largest_component(fg)
    fg = ndimage.binary_fill_holes(fg)
    for axis in range(3):
        plane = np.zeros((3, 3, 3), dtype=bool)
        index: list[slice | int] = [slice(None)] * 3
        index[axis] = 1
        plane[tuple(index)] = ndimage.generate_binary_structure(2, 1)
        fg = ndimage.binary_fill_holes(fg, structure=plane)
    return fg


#: Median absolute deviation of a zero-mean Gaussian, in standard deviations.
MAD_PER_SIGMA = 0.6744897501960817


def noise_sigma(volume: ArrayLike, mask: ArrayLike | None = None, *, erode: int = 3) -> float:
    """The standard deviation of a volume's white noise, from its finest diagonal detail.

    The finest diagonal Haar detail of a 3-D image (each 2x2x2 block's checkerboard sum, over
    2^1.5) holds a white noise's full variance and almost none of a smooth anatomy's, so the
    median absolute deviation of those coefficients, divided by :data:`MAD_PER_SIGMA`, estimates
    the noise's sigma (Donoho and Johnstone's wavelet estimator, the one behind
    ``skimage.restoration.estimate_sigma``, here without PyWavelets). Only blocks wholly inside
    ``mask`` eroded by ``erode`` voxels count: tissue edges and the mask's own border are the
    detail that is not noise. Fine anatomy at the voxel scale adds to the estimate, so it
    errs high on sharp images.

    Why it matters: the reference's own noise cannot be predicted from a thick-slice input, so
    it caps any restoration's PSNR gain over interpolation at ``10 log10(MSE_cubic /
    sigma^2)`` (``benchmarks/noise_ceiling.py``), and explains why a gain is smaller on a noisy
    routine scan than on a clean one.

    Raises:
        TransMRSRError: not 3-D, non-finite values, a mask of another shape, or fewer than 100
            blocks inside the eroded mask.
    """
    v = _as_tensor(volume, "volume", torch.float64).cpu().numpy()
    if v.ndim != 3:
        raise TransMRSRError(f"noise_sigma needs a 3-D volume, got shape {v.shape}")
    if not np.isfinite(v).all():
        raise TransMRSRError("the volume contains NaN or infinite values")
    if mask is None:
        inside = np.ones(v.shape, dtype=bool)
    else:
        inside = _as_tensor(mask, "mask", torch.float32).cpu().numpy() > 0.5
        if inside.shape != v.shape:
            raise TransMRSRError(f"mask shape {inside.shape} differs from the volume's {v.shape}")
    if erode > 0:
        inside = ndimage.binary_erosion(inside, iterations=erode)
    half = [n // 2 for n in v.shape]
    crop = tuple(slice(0, 2 * h) for h in half)
    blocks = v[crop].reshape(half[0], 2, half[1], 2, half[2], 2)
    sign = np.array([1.0, -1.0])
    detail = np.einsum("aibjck,i,j,k->abc", blocks, sign, sign, sign) / 2**1.5
    whole = inside[crop].reshape(half[0], 2, half[1], 2, half[2], 2).all(axis=(1, 3, 5))
    if whole.sum() < 100:
        raise TransMRSRError("too few voxels inside the (eroded) mask to estimate the noise")
    d = detail[whole]
    return float(np.median(np.abs(d - np.median(d))) / MAD_PER_SIGMA)
