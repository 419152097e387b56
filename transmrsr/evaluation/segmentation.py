"""Three-class tissue segmentation (CSF, GM, WM) with ANTs Atropos, and Dice between two.

The paper's Table 3 asks whether a restoration changes what downstream analysis sees: segment
the restored volume and the reference the same way and compare the label maps. We use a real,
widely used segmenter -- ANTs Atropos (k-means initialised 3-class EM with an MRF prior, as in
``antsAtroposN4``) through ANTsPy -- rather than a home-made one, so the numbers mean what
neuroimaging users expect.

ANTsPy is an optional extra (``pip install 'transmrsr[seg]'``) because it pins older numpy and
scipy releases; :func:`atropos_available` says whether it is installed and :data:`INSTALL_HINT`
how to install it.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from transmrsr.errors import TransMRSRError

log = logging.getLogger(__name__)

#: Atropos k-means classes sort by mean intensity: on T1 that is CSF < GM < WM (labels 1-3).
TISSUES: tuple[str, ...] = ("csf", "gm", "wm")
INSTALL_HINT = (
    "tissue Dice needs ANTsPy: pip install 'transmrsr[seg]' (antspyx; it pins numpy<2.4 and "
    "scipy<1.16, so a separate environment may suit you)"
)


def atropos_available() -> bool:
    """Whether ANTsPy (module ``ants``) can be imported."""
    return importlib.util.find_spec("ants") is not None


def _ants() -> Any:
    try:
        return importlib.import_module("ants")
    except ImportError:
        raise TransMRSRError(INSTALL_HINT) from None


def segment_tissues(
    data: np.ndarray,
    mask: np.ndarray,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    *,
    contrast: str = "T1",
    iterations: int = 5,
    mrf: float = 0.1,
) -> np.ndarray:
    """CSF/GM/WM labels (1/2/3, 0 outside ``mask``) of a brain volume.

    Args:
        data: the volume (any intensity scale; Atropos works on the masked voxels).
        mask: brain mask on the same grid (non-zero = brain).
        spacing: voxel sizes in mm (for the MRF neighbourhood).
        contrast: ``"T1"`` (CSF darkest) or ``"T2"`` (CSF brightest: classes are reversed).
        iterations: EM iterations; mrf: MRF smoothing weight.
    """
    if data.shape != mask.shape or data.ndim != 3:
        raise TransMRSRError(
            f"segmentation needs a 3-D volume and mask of one shape, got "
            f"{data.shape} and {mask.shape}"
        )
    if not np.any(mask):
        raise TransMRSRError("the brain mask is empty")
    ants = _ants()
    spacing = tuple(float(s) for s in spacing)
    image = ants.from_numpy(np.ascontiguousarray(data, dtype=np.float32), spacing=spacing)
    brain = ants.from_numpy((np.asarray(mask) > 0).astype(np.float32), spacing=spacing)
    neighbourhood = "x".join("1" for _ in spacing)
    result = ants.atropos(
        a=image, x=brain, i="kmeans[3]", m=f"[{mrf},{neighbourhood}]", c=f"[{iterations},0]"
    )
    labels = result["segmentation"].numpy().astype(np.int8)
    if contrast.upper() == "T2":
        labels = np.where(labels > 0, 4 - labels, 0).astype(np.int8)
    return labels


def tissue_dice(labels: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """Dice of each tissue (``TISSUES``, labels 1..3) between two label maps."""
    if labels.shape != reference.shape:
        raise TransMRSRError(f"label maps differ in shape: {labels.shape} vs {reference.shape}")
    scores = {}
    for value, name in enumerate(TISSUES, start=1):
        a, b = labels == value, reference == value
        total = int(a.sum()) + int(b.sum())
        scores[name] = float(2.0 * np.logical_and(a, b).sum() / total) if total else float("nan")
    return scores
